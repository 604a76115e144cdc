"""``radfusion train-ehr``: fit the EHR-only model and write its predictions and its files.

Writes, under the run directory:

* ``predictions/ehr.csv``: ``idx``, ``prob``, ``split`` for every study of every split;
* ``ehr/model.skops``: the fitted pipeline (skops, loaded with an allow-list: no pickle);
* ``ehr/model.json``: model name, chosen hyper-parameters, seed, feature source and names,
  validation AUROC, notes (e.g. fits that did not converge);
* ``ehr/grid.csv``: every grid point's score;
* ``ehr/importance.csv``: standardised coefficients by readable feature name (linear models).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from radfusion import __version__
from radfusion.data.cohort import Cohort
from radfusion.data.layout import EHR_TABLES
from radfusion.ehr.model import check_features, linear_importance, tune
from radfusion.ehr.persistence import save_model
from radfusion.errors import RadfusionError
from radfusion.io import write_csv, write_json
from radfusion.locks import exclusive
from radfusion.rundir import RunDir

__all__ = ["FEATURE_SOURCES", "EHRRun", "feature_matrix", "train_ehr"]

FEATURE_SOURCES = ("release", "meds")
TRAIN_LOCK = ".train-ehr.lock"  # held while an EHR training runs in its folder


def feature_matrix(
    cohort: Cohort, source: str = "release", meds_dir: str | os.PathLike | None = None
) -> tuple[pd.DataFrame, dict[str, str]]:
    """The EHR matrix (rows in ``cohort.studies`` order) and each feature's source table.

    ``release`` reads the cohort's six tables; ``meds`` rebuilds them from raw MEDS events
    (``meds_dir``, by default ``<cohort>/raw``) with the paper's feature engineering, counting
    the 1% diagnosis-group rule over the cohort's training split.
    """
    if source == "release":
        tables = cohort.ehr
    elif source == "meds":
        from radfusion.data.meds import read_meds, read_raw_studies
        from radfusion.ehr.features import build_features

        raw = Path(meds_dir) if meds_dir is not None else cohort.root / "raw"
        studies = read_raw_studies(raw)
        missing = cohort.studies.index.difference(studies["idx"])
        if len(missing):
            raise RadfusionError(
                f"{raw}: the study table has no row for {len(missing)} labelled stud(ies) "
                f"(idx {list(missing[:5])}); each needs its subject, CT time and encounter"
            )
        studies = studies[studies["idx"].isin(cohort.studies.index)]
        tables = build_features(read_meds(raw), studies, train_idx=cohort.split("train").index)
    else:
        raise RadfusionError(f"unknown feature source {source!r}; choose from {FEATURE_SOURCES}")
    x = pd.concat([tables[name] for name in EHR_TABLES], axis=1).reindex(cohort.studies.index)
    owner = {col: name for name in EHR_TABLES for col in tables[name].columns}
    return check_features(x, what=f"EHR features ({source})"), owner


@dataclass
class EHRRun:
    predictions: pd.DataFrame
    val_auroc: float
    params: dict
    notes: list[str]


def train_ehr(
    cohort: Cohort,
    out_dir: str | os.PathLike,
    *,
    model: str = "elasticnet",
    features: str = "release",
    meds_dir: str | os.PathLike | None = None,
    seed: int = 0,
    cv: int | None = None,
    grid: dict[str, list] | None = None,
    n_jobs: int | None = None,
) -> EHRRun:
    """Tune and fit the EHR model on ``cohort``'s train split; write the run's files. A second
    EHR training in ``out_dir`` while one runs is refused (:mod:`radfusion.locks`)."""
    busy = f"{out_dir}: another EHR training is running here; wait for it, or use another --out"
    with exclusive(Path(out_dir) / TRAIN_LOCK, busy):
        return _train_ehr(cohort, out_dir, model, features, meds_dir, seed, cv, grid, n_jobs)


def _train_ehr(cohort, out_dir, model, features, meds_dir, seed, cv, grid, n_jobs) -> EHRRun:
    run = RunDir(out_dir)
    x, owner = feature_matrix(cohort, features, meds_dir)
    y = cohort.studies["label"].to_numpy()
    split = cohort.studies["split"].to_numpy()
    train, val = split == "train", split == "val"
    result = tune(
        model, x[train], y[train], x[val], y[val], grid=grid, cv=cv, seed=seed, n_jobs=n_jobs
    )
    prob = result.model.predict_proba(x)[:, 1]
    if not np.isfinite(prob).all():  # a pipeline bug, never the user's: keep the traceback
        raise AssertionError("the EHR model produced non-finite probabilities")
    predictions = pd.DataFrame({"idx": cohort.studies.index, "prob": prob, "split": split})
    val_auroc = float(roc_auc_score(y[val], prob[val]))

    write_csv(predictions, run.prediction("ehr"), float_format="%.8f")
    save_model(result.model, run.ehr_model)
    write_csv(result.scores, run.ehr_grid)
    if model == "elasticnet":
        write_csv(linear_importance(result.model, owner), run.ehr_importance)
    write_json(
        {
            "model": model,
            "params": result.params,
            "selection": f"{cv}-fold CV AUROC on train" if cv else "validation AUROC",
            "selection_score": result.score,
            "val_auroc": val_auroc,
            "seed": seed,
            "features": {"source": features, "names": list(x.columns)},
            "notes": result.notes,
            "radfusion_version": __version__,
        },
        run.ehr_meta,
    )
    return EHRRun(predictions, val_auroc, result.params, result.notes)
