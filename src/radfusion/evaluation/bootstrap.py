"""A vectorised, stratified bootstrap: one count matrix for every metric, group and gap.

A resample is a row of counts ``C[b, i]`` (how often study ``i`` was drawn), drawn within each
label stratum so every resample keeps the test set's positives and negatives. Any metric of a
group is then a few matrix products over ``C`` restricted to the group's columns, so 2000
resamples of six metrics over seven groups cost milliseconds, not a Python loop per resample.
"""

from __future__ import annotations

import numpy as np

from radfusion.evaluation import metrics

__all__ = ["Resamples", "interval", "stratified_counts"]


def stratified_counts(y_true, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """``(n_boot, n)`` draw counts; each row resamples positives and negatives separately."""
    y_true = np.asarray(y_true).astype(bool)
    counts = np.zeros((n_boot, len(y_true)), dtype=np.int32)
    for stratum in (y_true, ~y_true):
        members = np.flatnonzero(stratum)
        if len(members):
            counts[:, members] = rng.multinomial(
                len(members), np.full(len(members), 1 / len(members)), size=n_boot
            )
    return counts


def interval(replicates: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """The percentile interval of a metric's replicates; NaN when most resamples leave the
    metric undefined (a group without positives, say)."""
    replicates = np.asarray(replicates, dtype=float)
    defined = replicates[np.isfinite(replicates)]
    if len(defined) < 0.5 * len(replicates) or not len(defined):
        return np.nan, np.nan
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(defined, [tail, 100 - tail])
    return float(low), float(high)


class Resamples:
    """Bootstrap replicates of metrics for one model's scores on one set of studies: the
    metric functions of :mod:`radfusion.evaluation.metrics`, weighted by the draw counts."""

    def __init__(self, counts: np.ndarray, y_true, y_score, threshold: float):
        self.counts = counts.astype(np.float64)
        self.y = np.asarray(y_true).astype(bool)
        self.score = np.asarray(y_score, dtype=float)
        self.pred = self.score >= threshold

    def metrics(self, members) -> dict[str, np.ndarray]:
        """Each metric's replicates (NaN where a resample leaves it undefined)."""
        w = self.counts[:, members]
        y, pred, score = self.y[members], self.pred[members], self.score[members]
        cells = metrics.confusion(y, pred, w)
        return {
            **{name: fn(*cells) for name, fn in metrics.FROM_COUNTS.items()},
            "auroc": metrics.auroc(y, score, w),
            "auprc": metrics.auprc(y, score, w),
            "brier": metrics.brier(y, score, w),
            "ece": metrics.ece(y, score, weights=w),
        }
