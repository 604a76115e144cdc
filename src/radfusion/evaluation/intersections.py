"""Intersectional groups: gender x race x age band cells of the test set, each cell's size and its
TPR and FPR at the model's operating point, with bootstrap CIs; and the gap between the best
and the worst cell.

A cell smaller than ``min_cell_size`` positives (for TPR) or negatives (for FPR) is shown, with
its interval, but left out of the gap's max - min: a TPR over two positives is 0, 0.5 or 1 by
chance alone. A study whose gender or age is unknown belongs to no cell.
"""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pandas as pd

from radfusion.data.layout import GROUP_ATTRIBUTES
from radfusion.evaluation.bootstrap import Resamples, interval
from radfusion.evaluation.metrics import fpr, sensitivity

__all__ = ["CELL_ATTRIBUTES", "COLUMNS", "GAP_CELL", "intersections"]

#: The attributes crossed, with their groups (the paper's), as the studies table names them.
CELL_ATTRIBUTES = dict(GROUP_ATTRIBUTES.values())  # studies column -> its two groups
COLUMNS = [
    "model",
    "cell",
    "gender",
    "race",
    "age_group",
    "n",
    "n_positive",
    "n_negative",
    "metric",
    "value",
    "ci_low",
    "ci_high",
    "in_gap",
]
GAP_CELL = "max - min"


def intersections(
    model: str,
    test: pd.DataFrame,
    res: Resamples,
    covered: np.ndarray,
    *,
    min_cell_size: int,
    level: float = 0.95,
) -> list[tuple]:
    """One row per cell and metric (``tpr``, ``fpr``), then the ``max - min`` gap of each
    metric over the cells large enough. ``res`` holds the model's replicates on ``test``;
    ``covered`` marks the test studies the model scored."""
    rows = []
    replicates: dict[str, list[np.ndarray]] = {"tpr": [], "fpr": []}
    values: dict[str, list[float]] = {"tpr": [], "fpr": []}
    label = test["label"].to_numpy().astype(bool)
    for cell in itertools.product(*CELL_ATTRIBUTES.values()):
        members = covered.copy()
        for column, group in zip(CELL_ATTRIBUTES, cell, strict=True):
            members &= test[column].to_numpy() == group
        n_pos, n_neg = int((members & label).sum()), int((members & ~label).sum())
        reps = res.metrics(members)
        y, pred = res.y[members], res.pred[members]
        for metric, fn, key, size in (
            ("tpr", sensitivity, "sensitivity", n_pos),
            ("fpr", fpr, "fpr", n_neg),
        ):
            value = float(fn(y, pred))
            low, high = interval(reps[key], level) if np.isfinite(value) else (np.nan, np.nan)
            in_gap = size >= min_cell_size and np.isfinite(value)
            if in_gap:
                values[metric].append(value)
                replicates[metric].append(reps[key])
            rows.append(
                (
                    model,
                    " / ".join(cell),
                    *cell,
                    int(members.sum()),
                    n_pos,
                    n_neg,
                    metric,
                    value,
                    low,
                    high,
                    bool(in_gap),
                )
            )
    for metric in ("tpr", "fpr"):
        if len(values[metric]) >= 2:
            value = max(values[metric]) - min(values[metric])
            stacked = np.vstack(replicates[metric])
            with warnings.catch_warnings():  # a resample may leave every cell undefined
                warnings.simplefilter("ignore", RuntimeWarning)
                gaps = np.nanmax(stacked, axis=0) - np.nanmin(stacked, axis=0)
            low, high = interval(gaps, level)
        else:  # fewer than two cells large enough: no gap to speak of
            value, low, high = np.nan, np.nan, np.nan
        n = len(values[metric])
        rows.append((model, GAP_CELL, "", "", "", n, 0, 0, metric, value, low, high, True))
    return rows
