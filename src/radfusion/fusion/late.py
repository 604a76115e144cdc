"""Late fusion: combine models' probabilities into a new model's predictions.

One registry of strategies. ``mean`` is the paper's (the average of the probabilities; the
late design that won the earlier CT+EHR study). ``max`` takes the most suspicious model.
``weighted`` averages with the weight that maximises validation AUROC. ``stacked`` fits a
logistic regression on the models' logits on the validation split, with cross-fitting so that
its own validation predictions are out-of-fold (and the operating point chosen on them later is
not optimistic); ``stacked_logit`` is the same design under the name INSPECT's baseline uses.

A study missing a model's probability (NaN: no volume, no EHR, or hidden by
``fusion.drop_modality``) is scored by the models it has: the strategy applied to those
columns alone (one left: ``mean``, ``max``, ``weighted`` and ``fair`` take its probability,
``stacked`` its logistic recalibration fitted on validation).
"""

from __future__ import annotations

import itertools
import logging
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.special import logit
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold

from radfusion.data.findings import checked_ids
from radfusion.data.layout import GROUP_ATTRIBUTES
from radfusion.errors import RadfusionError
from radfusion.evaluation.metrics import tpr_gap, youden_threshold
from radfusion.io import quote, read_user_csv, write_csv, write_json
from radfusion.predictions import read_predictions

__all__ = [
    "OWN_MODELS",
    "STRATEGIES",
    "fuse",
    "fuse_files",
    "fusion_name",
    "output_name",
    "spreads",
    "study_frame",
]

Strategy = Callable[[pd.DataFrame, pd.DataFrame, int], pd.Series]
EPS = 1e-6
#: ``mean`` and ``max`` take the probabilities as they come: when one model's spread (5th to
#: 95th percentile on validation) is this many times narrower than another's, the wider one
#: decides the ranking (docs/experiments/penet-on-the-phantom.md, item 11), and the fusion says so.
SPREAD_RATIO = 3.0
log = logging.getLogger("radfusion")


def _mean(probs, studies, seed):
    return probs.mean(axis=1)


def _max(probs, studies, seed):
    return probs.max(axis=1)


def _validation(probs, studies):
    val = studies.index[studies["split"] == "val"].intersection(probs.index)
    y = studies.loc[val, "label"].to_numpy()
    if len(np.unique(y)) < 2:
        raise RadfusionError(
            "this fusion strategy learns on the validation split, which needs "
            "positive and negative studies"
        )
    return val, y


def _weighted(probs, studies, seed, step=0.05):
    val, y = _validation(probs, studies)
    k = probs.shape[1]
    ticks = np.round(np.arange(0, 1 + step / 2, step), 10)
    grid = [w for w in itertools.product(ticks, repeat=k - 1) if sum(w) <= 1 + 1e-9]
    weights = np.array([[*w, 1 - sum(w)] for w in grid])
    scores = np.array([roc_auc_score(y, probs.loc[val].to_numpy() @ w) for w in weights])
    # Ties: the weights closest to equal, so that a flat optimum stays the paper's mean.
    spread = np.abs(weights - 1 / k).sum(axis=1)
    best = np.lexsort((spread, -scores))[0]
    return pd.Series(probs.to_numpy() @ weights[best], index=probs.index)


def _stacked(probs, studies, seed, folds=5):
    val, y = _validation(probs, studies)
    x = logit(probs.clip(EPS, 1 - EPS))
    model = LogisticRegression(C=1.0)
    out = pd.Series(model.fit(x.loc[val], y).predict_proba(x)[:, 1], index=probs.index)
    n_folds = min(folds, int(np.bincount(y).min()))
    if n_folds >= 2:  # out-of-fold predictions for the validation studies themselves
        for fit, held in StratifiedKFold(n_folds, shuffle=True, random_state=seed).split(val, y):
            fold = LogisticRegression(C=1.0).fit(x.loc[val[fit]], y[fit])
            out.loc[val[held]] = fold.predict_proba(x.loc[val[held]])[:, 1]
    return out


#: The AUROC losses a fairness-aware weight is chosen under, for the trade-off it records.
FAIR_DELTAS = (0.0, 0.005, 0.01, 0.02, 0.05, 0.1)


def _fair(probs, studies, seed, *, attribute="gender", delta=0.02, step=0.05):
    """The weight of two models whose fusion has the smallest validation TPR gap between the
    attribute's two groups, among the weights whose validation AUROC is within ``delta`` of the
    best weight's. The sweep over weights and the choice at each of :data:`FAIR_DELTAS` are
    kept in the result's ``attrs["sweep"]``, for the trade-off the report draws."""
    if probs.shape[1] != 2:
        raise RadfusionError("the fair fusion weighs exactly two models, e.g. image,ehr")
    if attribute not in GROUP_ATTRIBUTES:
        raise RadfusionError(f"fusion.fair_attribute {attribute!r}: use {list(GROUP_ATTRIBUTES)}")
    column, pair = GROUP_ATTRIBUTES[attribute]
    if column not in studies.columns:
        raise RadfusionError(f"the fair fusion needs the cohort's {column}: pass --data DATA_DIR")
    val, y = _validation(probs, studies)
    known = studies.loc[val, column].isin(pair).to_numpy()
    groups = studies.loc[val, column].to_numpy()[known]
    x = probs.loc[val].to_numpy()
    weights = np.round(np.arange(0, 1 + step / 2, step), 10)
    aurocs, gaps = [], []
    for w in weights:
        score = x @ np.array([w, 1 - w])
        aurocs.append(float(roc_auc_score(y, score)))
        threshold, _, _ = youden_threshold(y[known], score[known])  # the gap at Youden's point
        gaps.append(float(tpr_gap(y[known], score[known] >= threshold, groups, pair)))
    aurocs, gaps = np.array(aurocs), np.nan_to_num(np.array(gaps), nan=np.inf)

    def choose(d: float) -> int:
        ok = np.flatnonzero(aurocs >= aurocs.max() - d - 1e-12)
        return int(ok[np.lexsort((-aurocs[ok], gaps[ok]))[0]])  # smallest gap, then AUROC

    chosen = choose(delta)
    fused = pd.Series(probs.to_numpy() @ np.array([weights[chosen], 1 - weights[chosen]]))
    fused.index = probs.index
    fused.attrs["sweep"] = {
        "attribute": attribute,
        "models": list(probs.columns),
        "delta": delta,
        "weight": float(weights[chosen]),
        "weights": weights.tolist(),
        "val_auroc": aurocs.tolist(),
        "val_tpr_gap": [None if not np.isfinite(g) else g for g in gaps],
        "choices": {str(d): float(weights[choose(d)]) for d in FAIR_DELTAS},
    }
    return fused


STRATEGIES: dict[str, Strategy] = {
    "mean": _mean,
    "weighted": _weighted,
    "stacked": _stacked,
    "stacked_logit": _stacked,
    "max": _max,
    "fair": _fair,
}
NEEDS_LABELS = {"weighted", "stacked", "stacked_logit", "fair"}


def fusion_name(image_model: str, strategy: str) -> str:
    """The name of an imaging model's fusion with the EHR model: ``fusion_<strategy>`` for PENet
    (``image``, the paper's), ``fusion_<model>_<strategy>`` for another (``slicenet``)."""
    return f"fusion_{strategy}" if image_model == "image" else f"fusion_{image_model}_{strategy}"


def fuse(
    probs: pd.DataFrame,
    strategy: str = "mean",
    studies: pd.DataFrame | None = None,
    seed: int = 0,
    **options,
) -> pd.Series:
    """Fuse the columns of ``probs`` (one per model, indexed by idx) into one probability;
    ``options`` reach the strategy (``fair``: ``attribute``, ``delta``)."""
    if strategy not in STRATEGIES:
        raise RadfusionError(f"unknown fusion strategy {strategy!r}; known: {list(STRATEGIES)}")
    if probs.shape[1] < 2:
        raise RadfusionError("fusion needs at least two models")
    if strategy in NEEDS_LABELS and studies is None:
        raise RadfusionError(
            f"fusion strategy {strategy!r} learns on validation labels; "
            "pass the cohort (--data DATA_DIR)"
        )
    partial = options.pop("partial", False)  # NaN marks a missing input, scored by fallback
    values = probs.to_numpy(float)
    if np.isinf(values).any() or (np.isnan(values).any() and not partial):
        not_finite = ~np.isfinite(values)
        rows, cols = np.nonzero(not_finite)
        raise RadfusionError(
            f"fusion: model {probs.columns[cols[0]]!r} gave a non-finite probability "
            f"({probs.iat[rows[0], cols[0]]}) for idx {probs.index[rows[0]]}; "
            "its predictions are not usable"
        )
    complete = probs.notna().all(axis=1)
    if not complete.all():
        return _by_available(probs, strategy, studies, seed, options)
    if strategy not in NEEDS_LABELS:
        _warn_on_spreads(probs, studies, strategy)
    fused = STRATEGIES[strategy](probs, studies, seed, **options)
    attrs = dict(fused.attrs)
    fused = fused.clip(0.0, 1.0)
    fused.attrs.update(attrs)
    return fused


def _by_available(probs, strategy, studies, seed, options) -> pd.Series:
    """Each pattern of available models scored by the strategy on those models alone, learnt
    (where it learns) on the validation studies that have them."""
    present = probs.notna()
    if not present.any(axis=1).all():
        none = probs.index[~present.any(axis=1)]
        raise RadfusionError(
            f"fusion: {len(none)} stud(ies) have no model's probability (idx {list(none[:5])})"
        )
    out = pd.Series(np.nan, index=probs.index)
    for pattern, rows in present.groupby(list(probs.columns)).groups.items():
        columns = [c for c, on in zip(probs.columns, np.atleast_1d(pattern), strict=True) if on]
        have = probs.index[present[columns].all(axis=1)]
        part = probs.loc[have, columns]
        if len(columns) >= 2:
            fused = fuse(part, strategy, studies, seed, **options)
        elif strategy in ("stacked", "stacked_logit"):
            fused = _stacked(part, studies, seed)
        else:
            fused = part[columns[0]]
        out.loc[rows] = fused.loc[rows].clip(0.0, 1.0).to_numpy()
    return out


#: The models whose predictions the benchmark writes itself: never a fusion's output name.
OWN_MODELS = ("image", "ehr", "slicenet")
_PLAIN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


def output_name(name: str, inputs: list[str]) -> str:
    """``name`` if it is a plain model name (letters, digits, ``_.-``; no path separator)
    that replaces neither an input nor one of the benchmark's own models; else a one-line
    error."""
    if not _PLAIN_NAME.match(name) or name in (".", ".."):
        raise RadfusionError(
            f"--name {quote(name)}: a model name is letters, digits, '_', '.' or '-' (no "
            "folder); it names PRED_DIR/<name>.csv, e.g. fusion_mean"
        )
    if name in inputs:
        raise RadfusionError(
            f"--name {name}: would overwrite the input {name}.csv with the fusion; "
            "choose another name"
        )
    if name in OWN_MODELS:
        raise RadfusionError(
            f"--name {name}: {name}.csv holds the benchmark's own {name} model; "
            "choose another name, e.g. fusion_mean"
        )
    return name


def study_frame(pred_dir: str | Path, model: str) -> pd.DataFrame:
    """The studies (indexed by idx, with ``split`` and an unknown ``label`` of -1) of a
    model's predictions file, for the fusions that need no labels."""
    path = Path(pred_dir) / f"{model}.csv"
    frame = read_user_csv(path, f"predictions file of model {model!r}", "predictions")
    if "split" not in frame.columns or "idx" not in frame.columns:
        raise RadfusionError(f"{path}: needs idx and split columns, or pass --data DATA_DIR")
    idx = checked_ids(frame, path)
    split = frame["split"].astype(str).str.strip().str.lower()
    return pd.DataFrame({"split": split.to_numpy(), "label": -1}, index=pd.Index(idx, name="idx"))


def spreads(probs: pd.DataFrame, studies: pd.DataFrame | None = None) -> pd.DataFrame:
    """Each model's 5th and 95th percentile, on the validation split when ``studies`` names
    one, else on every row."""
    return _spreads(probs, studies)[0]


def _spreads(probs, studies) -> tuple[pd.DataFrame, str]:
    rows, where = probs, "all studies"
    if studies is not None and "split" in studies.columns:
        val = studies.index[studies["split"] == "val"].intersection(probs.index)
        if len(val):
            rows, where = probs.loc[val], "validation"
    return rows.quantile([0.05, 0.95]).T.set_axis(["p05", "p95"], axis=1), where


def _warn_on_spreads(probs, studies, strategy):
    s, where = _spreads(probs, studies)
    width = s["p95"] - s["p05"]
    narrow, wide = width.idxmin(), width.idxmax()
    if width[narrow] * SPREAD_RATIO < width[wide]:
        log.warning(
            "fusion %s: %s's probabilities span %.2f-%.2f (5th-95th percentile on %s), "
            "%s's %.2f-%.2f, so %s decides the ranking; the weighted and stacked fusions learn "
            "the balance on validation",
            strategy,
            narrow,
            *s.loc[narrow],
            where,
            wide,
            *s.loc[wide],
            wide,
        )


def fuse_files(
    pred_dir: str | Path,
    models: list[str],
    strategy: str,
    studies: pd.DataFrame,
    seed: int = 0,
    name: str | None = None,
    **options,
) -> Path:
    """Read ``PRED_DIR/<model>.csv`` for each model, fuse, write ``<name>.csv`` (by default
    ``fusion_<strategy>.csv``), and, for a fusion that records how it chose (``fair``), its
    sweep as ``<name>.sweep.json`` beside it."""
    pred_dir = Path(pred_dir)
    out = pred_dir / f"{output_name(name or f'fusion_{strategy}', models)}.csv"
    columns = {}
    for model in models:
        path = pred_dir / f"{model}.csv"
        if not path.exists():
            known = sorted(p.stem for p in pred_dir.glob("*.csv"))
            raise RadfusionError(f"{path}: no predictions for model {model!r}; found {known}")
        columns[model], _ = read_predictions(path, studies, allow_missing=True)
    index = columns[models[0]].index
    for model in models[1:]:
        if not columns[model].index.equals(index):
            diff = columns[model].index.symmetric_difference(index)
            raise RadfusionError(
                f"{pred_dir}: {models[0]}.csv and {model}.csv cover different studies "
                f"({len(diff)} idx differ, e.g. {list(diff[:5])}); fusion needs the same studies"
            )
    probs = pd.DataFrame(columns)
    fused = fuse(probs, strategy, studies, seed, **options)
    if "sweep" in fused.attrs:
        write_json(fused.attrs["sweep"], out.with_suffix(".sweep.json"))
    frame = pd.DataFrame(
        {
            "idx": fused.index,
            "prob": fused.to_numpy(),
            "split": studies.loc[fused.index, "split"].to_numpy(),
        }
    )
    write_csv(frame, out, float_format="%.8f")
    return out
