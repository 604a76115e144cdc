"""The small cohort's 16-pixel volume cache, built once for the imaging tests."""

from __future__ import annotations

import pytest

from radfusion.data import Cohort
from radfusion.imaging.preprocess import PreprocessParams, build_cache, cohort_volumes


@pytest.fixture(scope="session")
def cached(small_cohort, tmp_path_factory):
    """(cohort, cache folder) at 16 x 16; never modify it."""
    cohort = Cohort.load(small_cohort)
    summary = build_cache(
        cohort_volumes(cohort), tmp_path_factory.mktemp("cache"), PreprocessParams(size=16)
    )
    return cohort, summary.folder
