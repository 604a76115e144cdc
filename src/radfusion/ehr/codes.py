"""EHR features from any MEDS dataset, whatever its vocabulary: one sparse matrix of per-code
counts, presence flags and latest values, with age and the static demographics.

Per study, at its prediction time ``t`` (events at or after ``t`` are never used; times are
compared in whole seconds, rounded down on both sides, so an event in the same second as ``t``
is left out):

* ``<code>:count_<w>d``: the number of the code's events in ``[t - w days, t)``, one column per
  window of ``windows_days`` (365 by default, the paper's);
* ``<code>:present``: any event of the code in the lookback (``lookback_days``; None: the whole
  history before ``t``);
* ``<code>:latest``: the latest numeric value of the code in the lookback, for codes that carry
  values (labs, vitals); 0 where none, which ``:present`` tells apart; ties at one time go to the
  largest value;
* ``age_years`` (whole years from ``MEDS_BIRTH`` to ``t``, 0 with ``age_years:missing`` set when
  there is no birth event) and ``<code>:static`` for every demographic code (gender, race,
  ethnicity: the code's first part, before ``/``, names which) and every other static code of
  the training subjects: the code's numeric value where it has one (a static height), else 1.

Which codes get columns is learnt on the training studies only (:meth:`CodeFeaturiser.fit`):
a code enters when it is present for at least ``min_frequency`` of them (the paper's 1% rule,
applied to every code rather than to diagnosis groups only), so validation and test studies,
and another cohort scored with the same featuriser, get exactly the training columns.

Everything is array work over :class:`~radfusion.data.meds.EventArrays`: the events of each
study's window are found by binary search on (subject, time), and the counts go straight into a
``scipy.sparse`` matrix, never a dense frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from radfusion.data.meds import (
    BIRTH_CODE,
    SECONDS_PER_DAY,
    EventArrays,
    age_years,
    demographic_kind,
    study_arrays,
)
from radfusion.errors import RadfusionError

__all__ = ["CodeFeatures", "CodeFeaturiser"]


@dataclass(frozen=True)
class CodeFeatures:
    """A feature matrix: ``matrix`` (CSR, float64) with one row per ``index`` entry (the
    studies' idx) and one column per ``names`` entry."""

    matrix: sp.csr_matrix
    names: list[str]
    index: pd.Index

    @property
    def shape(self) -> tuple[int, int]:
        return self.matrix.shape


class _TimeIndex:
    """Each study's place in the events' (subject, time) key."""

    def __init__(self, events: EventArrays, studies: pd.DataFrame):
        _, self.rank, self.cut = study_arrays(events, studies)
        self.events = events
        self.base = np.maximum(self.rank, 0) * events.span

    def _offset(self, seconds):
        return np.clip(seconds - self.events.start + 1, 1, self.events.span)

    def ranges(self, days: int | None):
        """Per study, the slice ``[lo, hi)`` of the events in ``[t - days, t)`` (days None:
        every timed event before ``t``)."""
        upper = self.base + self._offset(self.cut)
        if days is None:
            lower = self.base + 1  # past the static events
        else:
            lower = self.base + self._offset(self.cut - days * SECONDS_PER_DAY)
        lo = np.searchsorted(self.events.key, lower, side="left")
        hi = np.searchsorted(self.events.key, upper, side="left")
        return lo, np.where(self.rank < 0, lo, np.maximum(hi, lo))


class CodeFeaturiser:
    """Learn the columns on training studies, then featurise any studies of any cohort with
    the same MEDS vocabulary.

    Parameters
    ----------
    windows_days : the count windows, in days before the prediction time.
    lookback_days : how far back ``:present`` and ``:latest`` look; None: the whole history.
    min_frequency : the fraction of training studies a code must be present for.
    """

    def __init__(
        self,
        windows_days: tuple[int, ...] = (365,),
        lookback_days: int | None = None,
        min_frequency: float = 0.01,
    ):
        self.windows_days = tuple(windows_days)
        self.lookback_days = lookback_days
        self.min_frequency = min_frequency

    # --- the window search ------------------------------------------------------------------
    @staticmethod
    def _pairs(lo, hi):
        """(study row, event index) for every event of every study's range."""
        lengths = hi - lo
        rows = np.repeat(np.arange(len(lo)), lengths)
        starts = np.repeat(lo - np.concatenate(([0], np.cumsum(lengths)[:-1])), lengths)
        return rows, np.arange(int(lengths.sum())) + starts

    # --- fit / transform --------------------------------------------------------------------
    def fit(self, events: EventArrays, studies: pd.DataFrame) -> CodeFeaturiser:
        """Choose the columns from the training ``studies`` (``subject_id``,
        ``prediction_time``)."""
        if len(studies) == 0:
            raise RadfusionError("no training studies to learn the EHR code columns from")
        rows, ev = self._pairs(*_TimeIndex(events, studies).ranges(self.lookback_days))
        codes = events.code[ev]
        n_codes = len(events.codes)
        timed_ok = _countable(events)[codes]
        # Studies with each code: the (study, code) matrix, duplicates summed, has one entry
        # per pair present.
        present = _coo(
            rows[timed_ok], codes[timed_ok], np.ones(int(timed_ok.sum())), len(studies), n_codes
        )
        per_code = np.bincount(present.indices, minlength=n_codes)
        enough = (per_code >= self.min_frequency * len(studies)) & (per_code > 0)
        numeric = np.zeros(n_codes, dtype=bool)
        numeric[codes[timed_ok & ~np.isnan(events.value[ev])]] = True
        self.codes_ = [str(c) for c in events.codes[enough]]
        self.numeric_ = [str(c) for c in events.codes[enough & numeric]]
        self.static_ = self._static_codes(events, studies)
        self.n_train_ = len(studies)
        return self

    @staticmethod
    def _static_codes(events, studies) -> list[str]:
        """Demographic codes and static codes of the training studies' subjects, sorted."""
        _, rank, _ = study_arrays(events, studies)
        wanted = np.zeros(len(events.subjects), dtype=bool)
        wanted[rank[rank >= 0]] = True
        static = (events.seconds == EventArrays.STATIC) | ~_countable(events)[events.code]
        picked = wanted[events.rank] & static & (events.codes != BIRTH_CODE)[events.code]
        return sorted(str(c) for c in events.codes[np.unique(events.code[picked])])

    def to_dict(self) -> dict:
        """What rebuilds this fitted featuriser (:meth:`from_dict`): plain JSON, no pickle."""
        self._check_fitted()
        return {
            "windows_days": list(self.windows_days),
            "lookback_days": self.lookback_days,
            "min_frequency": self.min_frequency,
            "codes": self.codes_,
            "numeric": self.numeric_,
            "static": self.static_,
        }

    @classmethod
    def from_dict(cls, spec: dict) -> CodeFeaturiser:
        try:
            out = cls(tuple(spec["windows_days"]), spec["lookback_days"], spec["min_frequency"])
            out.codes_ = [str(c) for c in spec["codes"]]
            out.numeric_ = [str(c) for c in spec["numeric"]]
            out.static_ = [str(c) for c in spec["static"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise RadfusionError(f"not a code featuriser's description ({exc})") from exc
        return out

    @property
    def names_(self) -> list[str]:
        self._check_fitted()
        names = [f"{c}:count_{w}d" for w in self.windows_days for c in self.codes_]
        names += [f"{c}:present" for c in self.codes_]
        names += [f"{c}:latest" for c in self.numeric_]
        names += ["age_years", "age_years:missing"]
        return names + [f"{c}:static" for c in self.static_]

    def _check_fitted(self):
        if not hasattr(self, "codes_"):
            raise RadfusionError("the code featuriser is not fitted; call fit on train studies")

    def _columns(self, events: EventArrays, names: list[str]) -> np.ndarray:
        """Event code id -> column in ``names`` order (-1: no column)."""
        where = {c: i for i, c in enumerate(names)}
        return np.array([where.get(str(c), -1) for c in events.codes], dtype=np.int64)

    def transform(self, events: EventArrays, studies: pd.DataFrame) -> CodeFeatures:
        """The feature matrix of ``studies`` (rows in their order)."""
        self._check_fitted()
        n = len(studies)
        blocks = []
        count_col = self._columns(events, self.codes_)
        width = len(self.codes_)
        index = _TimeIndex(events, studies)
        for days in self.windows_days:
            rows, ev = self._pairs(*index.ranges(days))
            col = count_col[events.code[ev]]
            keep = col >= 0
            blocks.append(_coo(rows[keep], col[keep], np.ones(int(keep.sum())), n, width))
        rows, ev = self._pairs(*index.ranges(self.lookback_days))
        col = count_col[events.code[ev]]
        keep = col >= 0
        present = _coo(rows[keep], col[keep], np.ones(int(keep.sum())), n, width)
        present.data[:] = 1.0
        blocks.append(present)
        blocks.append(self._latest(events, rows, ev, n))
        blocks.append(self._demographics(events, studies))
        matrix = sp.hstack(blocks, format="csr", dtype=np.float64)
        return CodeFeatures(matrix, self.names_, pd.Index(studies.index, name="idx"))

    def _latest(self, events, rows, ev, n) -> sp.csr_matrix:
        col = self._columns(events, self.numeric_)[events.code[ev]]
        value = events.value[ev]
        keep = (col >= 0) & ~np.isnan(value)
        rows, col, value, ev = rows[keep], col[keep], value[keep], ev[keep]
        key = rows * max(len(self.numeric_), 1) + col
        # Stable: within a key, the events' time order; the last run of one time is the
        # latest, and its largest value wins a tie.
        order = np.argsort(key, kind="stable")
        key, rows, col, value = key[order], rows[order], col[order], value[order]
        seconds = events.seconds[ev[order]]
        if not len(key):
            return _coo(rows, col, value, n, len(self.numeric_))
        run_start = np.r_[True, (key[1:] != key[:-1]) | (seconds[1:] != seconds[:-1])]
        starts = np.flatnonzero(run_start)
        best = np.maximum.reduceat(value, starts)
        last = np.r_[key[starts[1:]] != key[starts[:-1]], True]  # each key's last run
        first = starts[last]
        return _coo(rows[first], col[first], best[last], n, len(self.numeric_))

    def _demographics(self, events, studies) -> sp.csr_matrix:
        subjects, rank, _ = study_arrays(events, studies)
        age = age_years(events, studies)
        missing = np.isnan(age)
        static_col = self._columns(events, self.static_)
        is_static = static_col[events.code] >= 0
        sub = events.rank[is_static]
        col = static_col[events.code[is_static]]
        value = events.value[is_static]
        # One entry per (subject, code), its last value: a static height, else 1.
        _, last = np.unique((sub * len(self.static_) + col)[::-1], return_index=True)
        last = len(sub) - 1 - last
        value = np.where(np.isnan(value[last]), 1.0, value[last])
        have = _coo(sub[last], col[last], value, len(subjects), len(self.static_))
        linked = np.flatnonzero(rank >= 0)
        pick = _coo(linked, rank[linked], np.ones(len(linked)), len(rank), len(subjects))
        ages = sp.csr_matrix(np.c_[np.where(missing, 0.0, age), missing.astype(float)])
        return sp.hstack([ages, pick @ have], format="csr")


def _countable(events: EventArrays) -> np.ndarray:
    """Per code: counted per window (not a demographic code, not the birth)."""
    return np.array(
        [demographic_kind(str(c)) is None and c != BIRTH_CODE for c in events.codes], dtype=bool
    )


def _coo(rows, cols, values, n_rows, n_cols) -> sp.csr_matrix:
    """Duplicates summed: the counts."""
    return sp.coo_matrix((values, (rows, cols)), shape=(n_rows, n_cols)).tocsr()
