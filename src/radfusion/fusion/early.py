"""Early fusion: a study embedding next to the EHR features, one model on both.

The embedding's columns join the EHR model's features; the EHR model's pipeline (ElasticNet or
HGB, :mod:`radfusion.ehr.model`) standardises them on the train split and is tuned on the
validation split, as the EHR model is. The embedding alone, through the elastic net, is the
linear probe that comes with it. Studies without an embedding do not enter the fit; they are
scored by the EHR model (the early design's fallback), and a study without EHR by the probe.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse

from radfusion.ehr.model import DENSE_LIMIT, tune
from radfusion.errors import RadfusionError

__all__ = ["EarlyFit", "fit_early", "fit_probe"]


@dataclass
class EarlyFit:
    """A fitted early fusion (or probe): the probability of every study that has its inputs
    (NaN elsewhere), the pipeline, its chosen parameters and validation AUROC."""

    prob: pd.Series
    model: object
    params: dict
    val_auroc: float
    columns: list[str]


def _split_masks(studies: pd.DataFrame, have: np.ndarray):
    split = studies["split"].to_numpy()
    return (split == "train") & have, (split == "val") & have


def _fit(name, x, studies, have, seed, grid, what, n_jobs=None):
    y = studies["label"].to_numpy()
    train, val = _split_masks(studies, have)
    for part, mask in (("train", train), ("val", val)):
        if len(np.unique(y[mask])) < 2:
            raise RadfusionError(
                f"{what}: the {part} studies with an embedding hold one class only; it "
                "learns on train and is tuned on validation"
            )
    result = tune(name, x[train], y[train], x[val], y[val], grid=grid, seed=seed, n_jobs=n_jobs)
    prob = np.full(len(studies), np.nan)
    rows = np.flatnonzero(have)
    prob[rows] = result.model.predict_proba(x[rows])[:, 1]
    return result.model, result.params, float(result.score), prob


def _embedding_rows(
    embedding: pd.DataFrame, studies: pd.DataFrame
) -> tuple[np.ndarray, np.ndarray]:
    """The embedding in ``studies`` order (zeros where absent) and which studies have one."""
    have = studies.index.isin(embedding.index)
    values = np.zeros((len(studies), embedding.shape[1]), dtype=np.float64)
    values[have] = embedding.reindex(studies.index[have]).to_numpy(np.float64)
    return values, have


def fit_probe(
    embedding: pd.DataFrame, studies, *, seed=0, grid=None, n_jobs=None, name="probe"
) -> EarlyFit:
    """The embedding's linear probe: the elastic net on the embedding alone (``grid``: the
    elastic net's, None for its full grid)."""
    values, have = _embedding_rows(embedding, studies)
    model, params, score, prob = _fit("elasticnet", values, studies, have, seed, grid, name, n_jobs)
    columns = [f"embedding:{c}" for c in embedding.columns]
    return EarlyFit(pd.Series(prob, index=studies.index), model, params, score, columns)


def fit_early(
    embedding: pd.DataFrame,
    ehr,
    ehr_names: list[str],
    studies: pd.DataFrame,
    *,
    model: str = "elasticnet",
    seed: int = 0,
    grid=None,
    n_jobs=None,
    name: str = "early",
    rows: np.ndarray | None = None,
) -> EarlyFit:
    """``model`` on the embedding's columns followed by the EHR features (``ehr``: a DataFrame
    or a scipy.sparse matrix, rows in ``studies`` order). ``rows`` (a mask) limits it to the
    studies with an EHR; the others, like those without an embedding, get NaN."""
    values, have = _embedding_rows(embedding, studies)
    if rows is not None:
        have = have & rows
    if scipy.sparse.issparse(ehr):
        x = scipy.sparse.hstack([scipy.sparse.csr_matrix(values), ehr], format="csr")
        if model != "elasticnet":
            if x.shape[1] > DENSE_LIMIT:
                raise RadfusionError(
                    f"fusion.early_model {model}: {x.shape[1]} columns, more than the "
                    f"{DENSE_LIMIT} a dense model takes; use elasticnet, or raise "
                    "ehr.min_frequency"
                )
            x = x.toarray()
    else:
        x = np.hstack([values, np.asarray(ehr, dtype=np.float64)])
    fitted, params, score, prob = _fit(model, x, studies, have, seed, grid, name, n_jobs)
    columns = [f"embedding:{c}" for c in embedding.columns] + [f"ehr:{c}" for c in ehr_names]
    return EarlyFit(pd.Series(prob, index=studies.index), fitted, params, score, columns)
