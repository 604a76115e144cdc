"""The paper's six metrics, its operating point, and calibration.

Metrics are plain functions ``(y_true, y_pred_or_score) -> float``; an undefined value (a zero
denominator, AUROC with one class) is NaN, and :func:`why_undefined` says why.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve

__all__ = [
    "METRICS",
    "THRESHOLD_METRICS",
    "accuracy",
    "auroc",
    "brier",
    "ece",
    "npv",
    "ppv",
    "sensitivity",
    "specificity",
    "why_undefined",
    "youden_threshold",
]


def _counts(y_true, y_pred):
    y_true, y_pred = np.asarray(y_true).astype(bool), np.asarray(y_pred).astype(bool)
    tp = int(np.sum(y_true & y_pred))
    tn = int(np.sum(~y_true & ~y_pred))
    fp = int(np.sum(~y_true & y_pred))
    fn = int(np.sum(y_true & ~y_pred))
    return tp, tn, fp, fn


def _ratio(num, den):
    return num / den if den else float("nan")


def sensitivity(y_true, y_pred) -> float:
    tp, _, _, fn = _counts(y_true, y_pred)
    return _ratio(tp, tp + fn)


def specificity(y_true, y_pred) -> float:
    _, tn, fp, _ = _counts(y_true, y_pred)
    return _ratio(tn, tn + fp)


def ppv(y_true, y_pred) -> float:
    tp, _, fp, _ = _counts(y_true, y_pred)
    return _ratio(tp, tp + fp)


def npv(y_true, y_pred) -> float:
    _, tn, _, fn = _counts(y_true, y_pred)
    return _ratio(tn, tn + fn)


def accuracy(y_true, y_pred) -> float:
    tp, tn, fp, fn = _counts(y_true, y_pred)
    return _ratio(tp + tn, tp + tn + fp + fn)


def auroc(y_true, y_score) -> float:
    y_true = np.asarray(y_true)
    if len(np.unique(y_true)) < 2:
        return float("nan")
    return float(roc_auc_score(y_true, y_score))


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


def brier(y_true, y_score) -> float:
    y_true, y_score = np.asarray(y_true, float), np.asarray(y_score, float)
    return float(np.mean((y_score - y_true) ** 2)) if len(y_true) else float("nan")


def ece(y_true, y_score, n_bins: int = 10) -> float:
    """Expected calibration error: the count-weighted mean |observed rate - mean score| over
    ``n_bins`` equal-width probability bins (the top bin includes 1.0)."""
    y_true, y_score = np.asarray(y_true, float), np.asarray(y_score, float)
    if not len(y_true):
        return float("nan")
    bins = np.minimum((y_score * n_bins).astype(int), n_bins - 1)
    total = 0.0
    for b in np.unique(bins):
        members = bins == b
        total += members.sum() * abs(y_true[members].mean() - y_score[members].mean())
    return float(total / len(y_true))
