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
from radfusion.evaluation.metrics import auroc, sensitivity, youden_threshold
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


def _gap(y, pred, groups, pair) -> float:
    rates = [sensitivity(y[groups == g], pred[groups == g]) for g in pair]
    return abs(rates[0] - rates[1])


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

    studies = cohort.studies
    scored = studies[studies["split"].isin(["val", "test"])]
    rows = []
    for model in models:
        kept = _kept(ModelDir(run.model(model)).checkpoints)
        results = {}
        for selection, path in kept.items():
            ckpt = open_checkpoint(path)
            probs = predict_studies(ckpt.model, cache_folder, scored, ckpt.config, source=path)
            prob = probs.set_index("idx")["prob"].reindex(scored.index).to_numpy()
            val = (scored["split"] == "val").to_numpy()
            y = scored["label"].to_numpy().astype(bool)
            threshold, _, _ = youden_threshold(y[val], prob[val])
            pred = prob >= threshold
            results[selection] = (path, y, prob, pred, val)
        for attribute, (column, pair) in GROUP_ATTRIBUTES.items():
            groups = scored[column].to_numpy()
            gaps = {}
            for selection, (_, y, prob, pred, val) in results.items():
                test = ~val
                gaps[selection] = (
                    _gap(y[val], pred[val], groups[val], pair),
                    _gap(y[test], pred[test], groups[test], pair),
                    auroc(y[test], prob[test]),
                    sensitivity(y[test], pred[test]),
                )
            defined = {s: g for s, g in gaps.items() if np.isfinite(g[0])}
            if defined:
                fairest = min(defined, key=lambda s: defined[s][0])
                gaps = {**gaps, "smallest validation TPR gap": gaps[fairest]}
                results_of = {**results, "smallest validation TPR gap": results[fairest]}
            else:
                results_of = results
            for selection, values in gaps.items():
                path = results_of[selection][0]
                rows.append((model, selection, path.name, attribute, *values))
    table = pd.DataFrame(rows, columns=COLUMNS)
    write_csv(table, run.selection, float_format="%.6g")
    return table
