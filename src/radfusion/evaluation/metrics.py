"""The paper's six metrics, its operating point, and calibration.

Metrics are plain functions ``(y_true, y_pred_or_score) -> float``; an undefined value (a zero
denominator, AUROC with one class) is NaN, and :func:`why_undefined` says why. Given
``weights``, a bootstrap's ``(b, n)`` matrix of draw counts, the same function returns the ``b``
replicates: each metric has one definition, for the point value and its interval alike.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata
from sklearn.metrics import roc_curve

__all__ = [
    "FROM_COUNTS",
    "METRICS",
    "THRESHOLD_METRICS",
    "accuracy",
    "auroc",
    "brier",
    "confusion",
    "ece",
    "fpr",
    "npv",
    "ppv",
    "sensitivity",
    "specificity",
    "tpr_gap",
    "why_undefined",
    "youden_threshold",
]


def confusion(y_true, y_pred, weights=None):
    """``(tp, tn, fp, fn)``: counts, or with ``weights`` of shape ``(n,)`` or ``(b, n)`` (a
    bootstrap's draw counts), their weighted sums, one per row."""
    y, p = np.asarray(y_true).astype(bool), np.asarray(y_pred).astype(bool)
    cells = np.stack([y & p, ~y & ~p, ~y & p, y & ~p]).astype(float)  # (4, n)
    if weights is None:
        return tuple(int(c) for c in cells.sum(axis=1))
    sums = np.asarray(weights, dtype=float) @ cells.T  # (4,) or (b, 4)
    return tuple(sums[..., k] for k in range(4))


def _ratio(num, den):
    """``num / den``, NaN where ``den`` is 0; a float for scalars, an array for arrays."""
    if np.ndim(num) == 0 and np.ndim(den) == 0:
        return num / den if den else float("nan")
    num, den = np.asarray(num, float), np.asarray(den, float)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


#: Each threshold metric from the confusion counts: the one definition behind the point value
#: and every bootstrap replicate.
FROM_COUNTS = {
    "accuracy": lambda tp, tn, fp, fn: _ratio(tp + tn, tp + tn + fp + fn),
    "specificity": lambda tp, tn, fp, fn: _ratio(tn, tn + fp),
    "sensitivity": lambda tp, tn, fp, fn: _ratio(tp, tp + fn),
    "ppv": lambda tp, tn, fp, fn: _ratio(tp, tp + fp),
    "npv": lambda tp, tn, fp, fn: _ratio(tn, tn + fn),
    "fpr": lambda tp, tn, fp, fn: _ratio(fp, tn + fp),
}


def sensitivity(y_true, y_pred, weights=None):
    return FROM_COUNTS["sensitivity"](*confusion(y_true, y_pred, weights))


def specificity(y_true, y_pred, weights=None):
    return FROM_COUNTS["specificity"](*confusion(y_true, y_pred, weights))


def ppv(y_true, y_pred, weights=None):
    return FROM_COUNTS["ppv"](*confusion(y_true, y_pred, weights))


def npv(y_true, y_pred, weights=None):
    return FROM_COUNTS["npv"](*confusion(y_true, y_pred, weights))


def accuracy(y_true, y_pred, weights=None):
    return FROM_COUNTS["accuracy"](*confusion(y_true, y_pred, weights))


def fpr(y_true, y_pred, weights=None):
    return FROM_COUNTS["fpr"](*confusion(y_true, y_pred, weights))


def tpr_gap(y_true, y_pred, groups, pair) -> float:
    """|TPR(a) - TPR(b)| between the two groups ``pair`` of ``groups`` (others left out)."""
    y, p, g = np.asarray(y_true), np.asarray(y_pred), np.asarray(groups)
    a, b = (sensitivity(y[g == group], p[g == group]) for group in pair)
    return abs(a - b)


def auroc(y_true, y_score, weights=None):
    """The Mann-Whitney AUROC: over (positive, negative) pairs, 1 when the positive scores
    higher, 1/2 for a tie. With ``weights`` (a bootstrap's ``(b, n)`` draw counts), each pair
    counts the product of its two weights, one AUROC per row; NaN without both classes."""
    y = np.asarray(y_true).astype(bool)
    score = np.asarray(y_score, dtype=float)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if weights is None:
        if not n_pos or not n_neg:
            return float("nan")
        ranks = rankdata(score)  # mid-ranks: a tie counts a half
        return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
    weights = np.atleast_2d(np.asarray(weights, dtype=float))
    if not n_pos or not n_neg:
        return np.full(len(weights), np.nan)
    s_pos, s_neg = score[y][:, None], score[~y][None, :]
    kernel = (s_pos > s_neg) + 0.5 * (s_pos == s_neg)
    w_pos, w_neg = weights[:, y], weights[:, ~y]
    wins = np.einsum("bp,pn,bn->b", w_pos, kernel, w_neg, optimize=True)
    return _ratio(wins, w_pos.sum(axis=1) * w_neg.sum(axis=1))


#: Metrics on thresholded predictions, in the paper's table order after AUROC.
THRESHOLD_METRICS = {
    "accuracy": accuracy,
    "specificity": specificity,
    "sensitivity": sensitivity,
    "ppv": ppv,
    "npv": npv,
}
#: All six, in the paper's row order (Tables 3-10: accuracy first, then AUROC).
METRICS = ("accuracy", "auroc", "specificity", "sensitivity", "ppv", "npv")


def why_undefined(metric: str, y_true, y_pred) -> str:
    """A reason for a NaN metric, in words a reader of the table understands."""
    y_true, y_pred = np.asarray(y_true).astype(bool), np.asarray(y_pred).astype(bool)
    reasons = {
        "auroc": "needs positives and negatives",
        "sensitivity": "no positives",
        "specificity": "no negatives",
        "ppv": "no positive predictions",
        "npv": "no negative predictions",
        "accuracy": "no studies",
    }
    if metric == "auroc" and len(y_true) and len(np.unique(y_true)) == 1:
        return "only " + ("positives" if y_true[0] else "negatives")
    return reasons.get(metric, "undefined")


def youden_threshold(y_true, y_score) -> tuple[float, float, float]:
    """The threshold maximising sensitivity + specificity - 1 (Youden's J).

    Predict positive when ``score >= threshold``. Among thresholds with equal J, the highest
    is taken (the most specific operating point). Returns (threshold, sensitivity,
    specificity) on the data it was chosen on.
    """
    y_true = np.asarray(y_true)
    if len(np.unique(y_true)) < 2:
        raise ValueError("Youden's threshold needs positives and negatives")
    fpr, tpr, thresholds = roc_curve(y_true, y_score, drop_intermediate=False)
    j = tpr - fpr
    finite = np.isfinite(thresholds)
    best = np.flatnonzero(finite & (j >= j[finite].max() - 1e-12))  # ties despite round-off
    k = best[np.argmax(thresholds[best])]
    return float(thresholds[k]), float(tpr[k]), float(1 - fpr[k])


def auprc(y_true, y_score, weights=None):
    """Average precision, the area under the precision-recall curve as a step function
    (scikit-learn's ``average_precision_score``: tied scores are one threshold); per row of
    ``weights`` (bootstrap draw counts) when given. NaN without positives."""
    y = np.asarray(y_true, dtype=float)
    score = np.asarray(y_score, dtype=float)
    order = np.argsort(-score, kind="stable")
    y, score = y[order], score[order]
    last = np.r_[score[1:] != score[:-1], True] if len(score) else np.zeros(0, bool)
    w = np.ones((1, len(y))) if weights is None else np.atleast_2d(np.asarray(weights, float))
    w = w[:, order]
    tp = np.cumsum(w * y, axis=1)[:, last]
    seen = np.cumsum(w, axis=1)[:, last]
    positives = tp[:, -1:] if tp.shape[1] else np.zeros((len(w), 1))
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(seen > 0, tp / np.where(seen > 0, seen, 1), 0.0)
        recall = tp / positives
        gain = np.diff(np.concatenate([np.zeros((len(w), 1)), recall], axis=1), axis=1)
        result = np.where(positives[:, 0] > 0, (gain * precision).sum(axis=1), np.nan)
    return float(result[0]) if weights is None else result


def brier(y_true, y_score, weights=None):
    """The mean squared difference between probability and outcome (weighted per row)."""
    y, score = np.asarray(y_true, float), np.asarray(y_score, float)
    if weights is None:
        return float(np.mean((score - y) ** 2)) if len(y) else float("nan")
    weights = np.asarray(weights, dtype=float)
    return _ratio(weights @ (score - y) ** 2, weights.sum(axis=-1))


def ece(y_true, y_score, n_bins: int = 10, weights=None):
    """Expected calibration error: the count-weighted mean |observed rate - mean score| over
    ``n_bins`` equal-width probability bins (the top bin includes 1.0); per row of
    ``weights`` when given."""
    y, score = np.asarray(y_true, float), np.asarray(y_score, float)
    w = np.ones(len(y)) if weights is None else np.asarray(weights, dtype=float)
    if not len(y):
        return float("nan") if weights is None else np.full(len(w), np.nan)
    bins = np.minimum((score * n_bins).astype(int), n_bins - 1)
    total = np.zeros(w.shape[:-1])
    for b in np.unique(bins):
        inside = bins == b
        total = total + np.abs(w[..., inside] @ (y[inside] - score[inside]))
    result = _ratio(total, w.sum(axis=-1))
    return float(result) if weights is None else result
