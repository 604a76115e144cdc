"""``radfusion train-ehr``: fit the EHR-only model and write its predictions and its files.

Writes, under the run directory:

* ``predictions/ehr.csv``: ``idx``, ``prob``, ``split`` for every study of every split that
  has an EHR;
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
from radfusion.ehr.model import DENSE_LIMIT, check_features, linear_importance, tune
from radfusion.ehr.persistence import save_model
from radfusion.errors import RadfusionError
from radfusion.io import write_csv, write_json
from radfusion.locks import exclusive
from radfusion.rundir import RunDir

__all__ = [
    "FEATURE_SOURCES",
    "EHRFeatures",
    "EHRRun",
    "feature_matrix",
    "study_features",
    "train_ehr",
]

FEATURE_SOURCES = ("auto", "release", "meds", "codes")
TRAIN_LOCK = ".train-ehr.lock"  # held while an EHR training runs in its folder


def resolve_source(cohort: Cohort, source: str) -> str:
    """``auto``: ``codes`` for an INSPECT cohort, ``release`` for a RadFusion one."""
    if source == "auto":
        return "codes" if cohort.layout == "inspect" else "release"
    if cohort.layout == "inspect" and source in ("release", "meds"):
        raise RadfusionError(
            f"ehr.features {source}: the INSPECT layout has no RadFusion EHR tables; use "
            "--set ehr.features=codes (or auto)"
        )
    return source


def code_studies(cohort: Cohort, meds_dir=None) -> tuple[pd.DataFrame, Path]:
    """Each study's MEDS subject and prediction time, and the MEDS root: the cohort's own
    (INSPECT), or a RadFusion cohort's ``raw/`` events, predicting a day before the CT: the
    paper's rule dropping diagnosis codes of the 24 hours before the CT, applied to every
    code (the generic features know no encounter)."""
    if cohort.layout == "inspect" and meds_dir is None:
        if cohort.meds_root is None:
            raise RadfusionError(f"{cohort.root}: no MEDS EHR; name it with --set data.meds=DIR")
        return cohort.studies[["subject_id", "prediction_time"]], cohort.meds_root
    from radfusion.data.meds import read_raw_studies

    raw = Path(meds_dir) if meds_dir is not None else cohort.root / "raw"
    table = read_raw_studies(raw).set_index("idx")
    missing = cohort.studies.index.difference(table.index)
    if len(missing):
        raise RadfusionError(
            f"{raw}: the study table has no row for {len(missing)} labelled stud(ies) "
            f"(idx {list(missing[:5])}); each needs its subject and CT time"
        )
    from radfusion.data.inspect import PREDICTION_OFFSET

    table = table.loc[cohort.studies.index]
    when = table["ct_time"] - PREDICTION_OFFSET
    return table[["subject_id"]].assign(prediction_time=when), raw


def code_features(cohort: Cohort, meds_dir=None, *, windows_days=(365,), min_frequency=0.01):
    """The MEDS code features (:mod:`radfusion.ehr.codes`) of every study, their columns
    learnt on the train split; returns the features and the fitted featuriser."""
    from radfusion.data.meds import read_event_arrays
    from radfusion.ehr.codes import CodeFeaturiser

    studies, root = code_studies(cohort, meds_dir)
    events = (
        cohort.meds_events()
        if root == cohort.meds_root and cohort.meds_root is not None
        else read_event_arrays(root)
    )
    featuriser = CodeFeaturiser(windows_days=tuple(windows_days), min_frequency=min_frequency)
    featuriser.fit(events, studies[(cohort.studies["split"] == "train").to_numpy()])
    return featuriser.transform(events, studies), featuriser


def feature_matrix(
    cohort: Cohort, source: str = "release", meds_dir: str | os.PathLike | None = None
) -> tuple[pd.DataFrame, dict[str, str]]:
    """The EHR matrix (rows in ``cohort.studies`` order) and each feature's source table.

    ``release`` reads the cohort's six tables; ``meds`` rebuilds them from raw MEDS events
    (``meds_dir``, by default ``<cohort>/raw``) with the paper's feature engineering, counting
    the 1% diagnosis-group rule over the cohort's training split. (``codes``, the sparse
    per-code features of any MEDS dataset, is :func:`code_features`.)
    """
    source = resolve_source(cohort, source)
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
class EHRFeatures:
    """A cohort's EHR features, rows in ``cohort.studies`` order: a DataFrame (the release's
    tables, or those rebuilt from MEDS) or a scipy.sparse CSR matrix (per-code features)."""

    matrix: object
    names: list[str]
    source: str
    featuriser: object | None = None  # codes: the fitted CodeFeaturiser
    owner: dict[str, str] | None = None  # release/meds: each column's table


def study_features(
    cohort: Cohort,
    features: str = "auto",
    meds_dir: str | os.PathLike | None = None,
    *,
    windows_days: tuple[int, ...] = (365,),
    min_frequency: float = 0.01,
) -> EHRFeatures:
    """The EHR features the EHR model learns from (and the early and joint fusions reuse)."""
    source = resolve_source(cohort, features)
    if source == "codes":
        built, featuriser = code_features(
            cohort, meds_dir, windows_days=windows_days, min_frequency=min_frequency
        )
        if not np.isfinite(built.matrix.data).all():  # a pipeline bug, never the user's
            raise AssertionError("the code features hold non-finite values")
        return EHRFeatures(built.matrix, built.names, source, featuriser=featuriser)
    frame, owner = feature_matrix(cohort, source, meds_dir)
    return EHRFeatures(frame, list(frame.columns), source, owner=owner)


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
    features: str = "auto",
    meds_dir: str | os.PathLike | None = None,
    seed: int = 0,
    cv: int | None = None,
    grid: dict[str, list] | None = None,
    n_jobs: int | None = None,
    windows_days: tuple[int, ...] = (365,),
    min_frequency: float = 0.01,
) -> EHRRun:
    """Tune and fit the EHR model on ``cohort``'s train split; write the run's files. A second
    EHR training in ``out_dir`` while one runs is refused (:mod:`radfusion.locks`)."""
    busy = f"{out_dir}: another EHR training is running here; wait for it, or use another --out"
    codes = {"windows_days": tuple(windows_days), "min_frequency": min_frequency}
    with exclusive(Path(out_dir) / TRAIN_LOCK, busy):
        return _train_ehr(cohort, out_dir, model, features, meds_dir, seed, cv, grid, n_jobs, codes)


def _train_ehr(cohort, out_dir, model, features, meds_dir, seed, cv, grid, n_jobs, codes):
    run = RunDir(out_dir)
    built = study_features(cohort, features, meds_dir, **codes)
    x, names, owner, featuriser = built.matrix, built.names, built.owner, built.featuriser
    features = built.source
    if featuriser is not None and model != "elasticnet" and x.shape[1] <= DENSE_LIMIT:
        x = x.toarray()  # hgb takes dense input; tune() refuses a wider matrix
    # A study without an EHR (no MEDS subject) is neither learnt from nor scored: the image
    # models and the fusions' fallbacks score it.
    rows = np.flatnonzero(cohort.has_ehr.to_numpy())
    if len(rows) < len(cohort.studies):
        x = x.iloc[rows] if isinstance(x, pd.DataFrame) else x[rows]
    y = cohort.studies["label"].to_numpy()[rows]
    split = cohort.studies["split"].to_numpy()[rows]
    train, val = split == "train", split == "val"
    result = tune(
        model, x[train], y[train], x[val], y[val], grid=grid, cv=cv, seed=seed, n_jobs=n_jobs
    )
    prob = result.model.predict_proba(x)[:, 1]
    if not np.isfinite(prob).all():  # a pipeline bug, never the user's: keep the traceback
        raise AssertionError("the EHR model produced non-finite probabilities")
    idx = cohort.studies.index[rows]
    predictions = pd.DataFrame({"idx": idx, "prob": prob, "split": split})
    val_auroc = float(roc_auc_score(y[val], prob[val]))

    write_csv(predictions, run.prediction("ehr"), float_format="%.8f")
    save_model(result.model, run.ehr_model)
    write_csv(result.scores, run.ehr_grid)
    if model == "elasticnet":
        sparse_names = names if featuriser is not None else None
        write_csv(linear_importance(result.model, owner, sparse_names), run.ehr_importance)
    write_json(
        {
            "model": model,
            "params": result.params,
            "selection": f"{cv}-fold CV AUROC on train" if cv else "validation AUROC",
            "selection_score": result.score,
            "val_auroc": val_auroc,
            "seed": seed,
            "features": {
                "source": features,
                "names": names,
                **({"featuriser": featuriser.to_dict()} if featuriser is not None else {}),
            },
            "notes": result.notes,
            "radfusion_version": __version__,
        },
        run.ehr_meta,
    )
    return EHRRun(predictions, val_auroc, result.params, result.notes)
