"""A vectorised, stratified bootstrap: one count matrix for every metric, group and gap.

A resample is a row of counts ``C[b, i]`` (how often study ``i`` was drawn), drawn within each
label stratum so every resample keeps the test set's positives and negatives. Any metric of a
group is then a few matrix products over ``C`` restricted to the group's columns, so 2000
resamples of six metrics over seven groups cost milliseconds, not a Python loop per resample.
"""

from __future__ import annotations

import numpy as np

__all__ = ["Resamples", "stratified_counts"]


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


def _ratio(num, den):
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


class Resamples:
    """Bootstrap replicates of metrics for one model's scores on one set of studies."""

    def __init__(self, counts: np.ndarray, y_true, y_score, threshold: float):
        self.counts = counts.astype(np.float64)
        self.y = np.asarray(y_true).astype(bool)
        self.score = np.asarray(y_score, dtype=float)
        self.pred = self.score >= threshold

    def confusion(self, members):
        w = self.counts[:, members]
        y, p = self.y[members], self.pred[members]
        tp = w @ (y & p).astype(float)
        tn = w @ (~y & ~p).astype(float)
        fp = w @ (~y & p).astype(float)
        fn = w @ (y & ~p).astype(float)
        return tp, tn, fp, fn

    def metrics(self, members) -> dict[str, np.ndarray]:
        """Each metric's replicates (NaN where a resample leaves it undefined)."""
        tp, tn, fp, fn = self.confusion(members)
        return {
            "accuracy": _ratio(tp + tn, tp + tn + fp + fn),
            "auroc": self.auroc(members),
            "specificity": _ratio(tn, tn + fp),
            "sensitivity": _ratio(tp, tp + fn),
            "ppv": _ratio(tp, tp + fp),
            "npv": _ratio(tn, tn + fn),
            "fpr": _ratio(fp, tn + fp),
            "brier": _ratio(
                self.counts[:, members] @ (self.score[members] - self.y[members]) ** 2,
                self.counts[:, members].sum(axis=1),
            ),
        }

    def auroc(self, members) -> np.ndarray:
        """Mann-Whitney AUROC per resample: sum over (positive, negative) pairs of the pair's
        weight times 1 (positive scored higher), 1/2 (tie) or 0."""
        members = np.asarray(members)
        if members.dtype == bool:
            members = np.flatnonzero(members)
        pos = members[self.y[members]]
        neg = members[~self.y[members]]
        if not len(pos) or not len(neg):
            return np.full(len(self.counts), np.nan)
        s_pos, s_neg = self.score[pos][:, None], self.score[neg][None, :]
        kernel = (s_pos > s_neg) + 0.5 * (s_pos == s_neg)
        w_pos, w_neg = self.counts[:, pos], self.counts[:, neg]
        wins = np.einsum("bp,pn,bn->b", w_pos, kernel, w_neg, optimize=True)
        return _ratio(wins, w_pos.sum(axis=1) * w_neg.sum(axis=1))
