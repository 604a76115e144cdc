"""Cohorts: the RadFusion release layout, its loader and validator, its EHR tables and MEDS
events. Nothing here imports a model package."""

from __future__ import annotations

from radfusion.data.cohort import Cohort, ValidationReport, validate_cohort

__all__ = ["Cohort", "ValidationReport", "validate_cohort"]
