"""Checkpoint selection and fairness: how the image model's TPR gaps move when the checkpoint
that scores the studies is chosen by validation AUROC, by the last epoch, or by the smallest
validation TPR gap, among the checkpoints a run keeps (the best on validation AUROC and the
final epoch's). Each kept checkpoint scores the validation and test studies; its operating
point is chosen on validation, as the evaluation's is."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from radfusion.data.layout import GROUP_ATTRIBUTES
from radfusion.evaluation.metrics import auroc, sensitivity, tpr_gap, youden_threshold
from radfusion.imaging.checkpoints import best_checkpoint, usable
from radfusion.io import write_csv
from radfusion.rundir import ModelDir, RunDir

__all__ = ["COLUMNS", "selection_table"]

COLUMNS = [
    "model",
    "selection",
    "checkpoint",
    "attribute",
    "val_tpr_gap",
    "test_tpr_gap",
    "test_auroc",
    "test_sensitivity",
]


def _kept(folder: Path) -> dict[str, Path]:
    """The checkpoints a run keeps: the best on validation AUROC, and the final epoch's."""
    kept = {}
    best = best_checkpoint(folder)
    if best is not None:
        kept["best validation AUROC"] = best
    last = sorted(folder.glob("epoch-*.ckpt"))
    last = [p for p in last if usable(p)]
    if last:
        kept["last epoch"] = last[-1]
    return kept


def selection_table(cohort, cache_folder: Path, run: RunDir, models: list[str]) -> pd.DataFrame:
    """The table for each trained imaging model, written to ``run.selection``."""
    from radfusion.imaging.inference import open_checkpoint, predict_studies

    studies = cohort.imaged().studies
    scored = studies[studies["split"].isin(["val", "test"])]
    y = scored["label"].to_numpy().astype(bool)
    val = (scored["split"] == "val").to_numpy()
    rows = []
    for model in models:
        results = {}  # selection -> (checkpoint, probabilities, decisions)
        for selection, path in _kept(ModelDir(run.model(model)).checkpoints).items():
            ckpt = open_checkpoint(path)
            probs = predict_studies(ckpt.model, cache_folder, scored, ckpt.config, source=path)
            prob = probs.set_index("idx")["prob"].reindex(scored.index).to_numpy()
            threshold, _, _ = youden_threshold(y[val], prob[val])
            results[selection] = (path, prob, prob >= threshold)
        for attribute, (column, pair) in GROUP_ATTRIBUTES.items():
            groups = scored[column].to_numpy()
            found = {
                selection: (
                    path.name,
                    tpr_gap(y[val], pred[val], groups[val], pair),
                    tpr_gap(y[~val], pred[~val], groups[~val], pair),
                    auroc(y[~val], prob[~val]),
                    sensitivity(y[~val], pred[~val]),
                )
                for selection, (path, prob, pred) in results.items()
            }
            defined = [s for s, values in found.items() if np.isfinite(values[1])]
            if defined:
                fairest = min(defined, key=lambda s: found[s][1])
                found["smallest validation TPR gap"] = found[fairest]
            rows.extend((model, s, name, attribute, *rest) for s, (name, *rest) in found.items())
    table = pd.DataFrame(rows, columns=COLUMNS)
    write_csv(table, run.selection, float_format="%.6g")
    return table
