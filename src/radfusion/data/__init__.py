"""Cohorts: the RadFusion release layout, its loader and validator, and a synthetic generator."""

from __future__ import annotations

from typing import TYPE_CHECKING

__all__ = ["Cohort", "ValidationReport", "validate_cohort"]

if TYPE_CHECKING:
    from radfusion.data.cohort import Cohort, ValidationReport, validate_cohort


def __getattr__(name: str):
    # Lazy, so that radfusion.ehr can use radfusion.data.layout without an import cycle.
    if name in __all__:
        from radfusion.data import cohort

        return getattr(cohort, name)
    raise AttributeError(f"module 'radfusion.data' has no attribute {name!r}")
