"""The EHR-only models: scikit-learn pipelines chosen by name, tuned on the validation split.

``elasticnet`` is the paper's model: training-split medians fill missing values (with a
missing-indicator column for every feature that had missing values in training), training
means and deviations standardise, then ``LogisticRegression`` with an elastic-net penalty
(``saga``). ``hgb`` is a stronger tabular model beside it: scikit-learn's histogram gradient
boosting, which handles missing values natively.

Every pipeline is fitted on the training split only, so no statistic of validation or test
data leaks into it. Hyper-parameters are chosen by validation AUROC (or by k-fold
cross-validation on train) over a grid; fits that stop before converging are reported.
"""

from __future__ import annotations

import copy
import itertools
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse
from joblib import Parallel, delayed
from sklearn.base import clone
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from radfusion.errors import RadfusionError
from radfusion.workers import loky_args

__all__ = [
    "EHR_MODELS",
    "TuningResult",
    "check_features",
    "create_ehr_model",
    "linear_importance",
    "tune",
]


def _elasticnet(
    *,
    C: float = 1.0,
    l1_ratio: float = 0.5,
    class_weight: str | None = None,
    max_iter: int = 1000,
    tol: float = 1e-3,
    seed: int = 0,
    sparse: bool = False,
) -> Pipeline:
    # A sparse matrix (MEDS code features) has no missing values to fill and is scaled
    # without centring, which would make it dense.
    prepare = (
        [("scale", StandardScaler(with_mean=False))]
        if sparse
        else [
            (
                "impute",
                SimpleImputer(strategy="median", add_indicator=True, keep_empty_features=True),
            ),
            ("scale", StandardScaler()),
        ]
    )
    return Pipeline(
        [
            *prepare,
            # l1_ratio in (0, 1) with saga is the elastic net (scikit-learn >= 1.8 spelling).
            (
                "model",
                LogisticRegression(
                    C=C,
                    l1_ratio=l1_ratio,
                    solver="saga",
                    class_weight=class_weight,
                    max_iter=max_iter,
                    tol=tol,
                    random_state=seed,
                ),
            ),
        ]
    )


def _hgb(
    *,
    learning_rate: float = 0.1,
    max_leaf_nodes: int = 15,
    l2_regularization: float = 1.0,
    max_iter: int = 200,
    class_weight: str | None = None,
    seed: int = 0,
    sparse: bool = False,
) -> Pipeline:
    del sparse  # tune() hands it a dense matrix
    return Pipeline(
        [
            (
                "model",
                HistGradientBoostingClassifier(
                    learning_rate=learning_rate,
                    max_leaf_nodes=max_leaf_nodes,
                    l2_regularization=l2_regularization,
                    max_iter=max_iter,
                    class_weight=class_weight,
                    early_stopping=False,
                    random_state=seed,
                ),
            ),
        ]
    )


@dataclass(frozen=True)
class ModelSpec:
    factory: Callable[..., Pipeline]
    grid: dict[str, list]
    description: str


EHR_MODELS: dict[str, ModelSpec] = {
    "elasticnet": ModelSpec(
        _elasticnet,
        # The grid of the earlier CT+EHR fusion study (Huang et al. 2020).
        {
            "C": [1e-3, 1e-1, 1, 10, 1000],
            "l1_ratio": [0.01, 0.1, 0.3, 0.5, 0.9, 0.99],
            "class_weight": ["balanced", None],
        },
        "the paper's: standardised features, elastic-net logistic regression",
    ),
    "hgb": ModelSpec(
        _hgb,
        {
            "learning_rate": [0.03, 0.1],
            "max_leaf_nodes": [7, 15],
            "l2_regularization": [0.0, 1.0],
            "class_weight": ["balanced", None],
        },
        "histogram gradient boosting (missing values handled natively)",
    ),
}


#: The widest sparse matrix a dense-only model (hgb) is given, made dense.
DENSE_LIMIT = 5000


def create_ehr_model(name: str, *, seed: int = 0, sparse: bool = False, **params: Any) -> Pipeline:
    """A fresh, unfitted pipeline for model ``name`` with the given hyper-parameters;
    ``sparse`` for a ``scipy.sparse`` feature matrix."""
    if name not in EHR_MODELS:
        import difflib

        close = difflib.get_close_matches(name, list(EHR_MODELS), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise RadfusionError(f"unknown EHR model {name!r}{hint}; known: {sorted(EHR_MODELS)}")
    return EHR_MODELS[name].factory(seed=seed, sparse=sparse, **params)


def check_features(x: pd.DataFrame, expected: list[str] | None = None, *, what: str = "features"):
    """Refuse what would give a silent NaN or a wrong column: infinities, non-numeric columns,
    duplicated names, and (given ``expected``) a different column set. Returns ``x`` with its
    columns in the expected order."""
    if x.columns.duplicated().any():
        raise RadfusionError(
            f"{what}: duplicated feature name(s) {list(x.columns[x.columns.duplicated()])[:5]}"
        )
    bad = [c for c in x.columns if not pd.api.types.is_numeric_dtype(x[c])]
    if bad:
        raise RadfusionError(f"{what}: non-numeric feature column(s) {bad[:5]}")
    values = x.to_numpy(dtype=float)
    if np.isinf(values).any():
        rows, cols = np.nonzero(np.isinf(values))
        raise RadfusionError(
            f"{what}: infinite value in column {x.columns[cols[0]]!r} (idx {x.index[rows[0]]}); "
            "write missing values as empty cells"
        )
    if expected is not None:
        missing = [c for c in expected if c not in x.columns]
        extra = [c for c in x.columns if c not in set(expected)]
        if missing or extra:
            raise RadfusionError(
                f"{what}: the columns differ from the model's: {len(missing)} missing "
                f"({missing[:3]}), {len(extra)} unexpected ({extra[:3]}); build the features "
                "the way the model was trained (same ehr.features source and vocabulary)"
            )
        x = x[expected]
    return x


def _rows(x, positions):
    """Rows by position of a frame or a (sparse) matrix."""
    return x.iloc[positions] if isinstance(x, pd.DataFrame) else x[positions]


def _fit_one(template: Pipeline, params: dict, x: pd.DataFrame, y: np.ndarray):
    model = clone(template).set_params(**{f"model__{k}": v for k, v in params.items()})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        model.fit(x, y)
    converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
    return model, converged


def _score(template, params, x_tr, y_tr, x_val, y_val, cv, seed):
    if cv:
        folds = StratifiedKFold(n_splits=cv, shuffle=True, random_state=seed)
        scores, converged = [], True
        for fit_idx, val_idx in folds.split(x_tr, y_tr):
            model, ok = _fit_one(template, params, _rows(x_tr, fit_idx), y_tr[fit_idx])
            scores.append(
                roc_auc_score(y_tr[val_idx], model.predict_proba(_rows(x_tr, val_idx))[:, 1])
            )
            converged &= ok
        return float(np.mean(scores)), converged, None
    model, converged = _fit_one(template, params, x_tr, y_tr)
    return roc_auc_score(y_val, model.predict_proba(x_val)[:, 1]), converged, model


def _path(template: Pipeline, points: list[dict], x_tr, y_tr, x_val, y_val) -> list:
    """One regularisation path: the grid points that differ only in ``C``, fitted from the
    strongest penalty to the weakest, each starting from the previous solution (saga's warm
    start). The imputer and scaler do not depend on ``C``: fitted once."""
    prep = clone(template[:-1]).fit(x_tr, y_tr)
    xt_tr, xt_val = prep.transform(x_tr), prep.transform(x_val)
    estimator = clone(template[-1]).set_params(warm_start=True)
    out = {}
    for i in sorted(range(len(points)), key=lambda i: points[i]["C"]):
        estimator.set_params(**points[i])
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            estimator.fit(xt_tr, y_tr)
        converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
        fitted = copy.deepcopy(estimator).set_params(warm_start=False)
        model = Pipeline([*prep.steps, (template.steps[-1][0], fitted)])
        score = roc_auc_score(y_val, fitted.predict_proba(xt_val)[:, 1])
        out[i] = (score, converged, model)
    return [out[i] for i in range(len(points))]


def _regularisation_paths(template, points, x_tr, y_tr, x_val, y_val, n_jobs) -> list:
    """:func:`_score` for every grid point of the elastic net, one warm-started path per
    (l1_ratio, class_weight): the grid's 60 fits in about a third of the time of 60 cold ones
    (docs/experiments/demo.md), at the same validation AUROC to within saga's tolerance."""
    paths: dict[str, list[int]] = {}
    for i, p in enumerate(points):
        paths.setdefault(repr(sorted((k, v) for k, v in p.items() if k != "C")), []).append(i)
    groups = list(paths.values())
    jobs = n_jobs or min(os.cpu_count() or 1, len(groups))
    fitted = Parallel(n_jobs=jobs, **loky_args())(
        delayed(_path)(template, [points[i] for i in g], x_tr, y_tr, x_val, y_val) for g in groups
    )
    results: list = [None] * len(points)
    for group, group_results in zip(groups, fitted, strict=True):
        for i, r in zip(group, group_results, strict=True):
            results[i] = r
    return results


@dataclass
class TuningResult:
    name: str
    params: dict[str, Any]
    model: Pipeline
    score: float  # validation AUROC (or mean CV AUROC) of the chosen parameters
    scores: pd.DataFrame  # one row per grid point: its parameters, score, converged
    notes: list[str] = field(default_factory=list)


def tune(
    name: str,
    x_train: pd.DataFrame,
    y_train,
    x_val: pd.DataFrame,
    y_val,
    *,
    grid: dict[str, list] | None = None,
    cv: int | None = None,
    seed: int = 0,
    n_jobs: int | None = None,
    warm_start: bool = True,
) -> TuningResult:
    """Choose hyper-parameters by validation AUROC (or ``cv``-fold CV AUROC on train), then
    return the pipeline fitted on the training split with them. Ties go to the earlier grid
    point, so the result is deterministic. ``warm_start`` fits the elastic net's grid as
    regularisation paths (:func:`_regularisation_paths`); ``False`` fits every point cold."""
    sparse = scipy.sparse.issparse(x_train)
    if sparse and name == "hgb":
        if x_train.shape[1] > DENSE_LIMIT:
            raise RadfusionError(
                f"EHR model hgb: {x_train.shape[1]} sparse features are too many to make dense "
                f"(limit {DENSE_LIMIT}); use elasticnet, or raise ehr.min_frequency"
            )
        x_train, x_val, sparse = x_train.toarray(), x_val.toarray(), False
    template = create_ehr_model(name, seed=seed, sparse=sparse)
    grid = EHR_MODELS[name].grid if grid is None else grid
    points = [dict(zip(grid, values, strict=True)) for values in itertools.product(*grid.values())]
    y_train, y_val = np.asarray(y_train), np.asarray(y_val)
    if len(np.unique(y_train)) < 2 or (not cv and len(np.unique(y_val)) < 2):
        raise RadfusionError("EHR model: train and val each need positive and negative studies")
    if warm_start and name == "elasticnet" and not cv and "C" in grid:
        results = _regularisation_paths(template, points, x_train, y_train, x_val, y_val, n_jobs)
    else:
        jobs = n_jobs or min(os.cpu_count() or 1, len(points))
        results = Parallel(n_jobs=jobs, **loky_args())(
            delayed(_score)(template, p, x_train, y_train, x_val, y_val, cv, seed) for p in points
        )
    scores = pd.DataFrame(points)
    scores["score"] = [r[0] for r in results]
    scores["converged"] = [r[1] for r in results]
    best = int(np.argmax(scores["score"].to_numpy()))
    params = points[best]
    model = results[best][2]
    notes = []
    if model is None:  # chosen by CV: refit on the whole training split
        model, converged = _fit_one(template, params, x_train, y_train)
        scores.loc[best, "converged"] = converged
    not_converged = int((~scores["converged"]).sum())
    if not_converged:
        notes.append(
            f"{not_converged} of {len(points)} fits stopped at the iteration limit before "
            f"converging (e.g. {points[int(np.flatnonzero(~scores['converged'])[0])]})"
        )
        if not scores.loc[best, "converged"]:
            message = f"the chosen EHR model {params} did not converge; raise max_iter or tol"
            notes.append(message)
            warnings.warn(message, ConvergenceWarning, stacklevel=2)
    return TuningResult(name, params, model, float(scores.loc[best, "score"]), scores, notes)


def linear_importance(
    model: Pipeline, tables: dict[str, str] | None = None, names: list[str] | None = None
) -> pd.DataFrame:
    """Standardised coefficients of a linear pipeline, by readable feature name, largest first.

    Missing-indicator columns are named ``<feature>:missing``. ``names`` are the input's
    columns where the pipeline was fitted on a matrix without names (a sparse one)."""
    estimator = model.named_steps["model"]
    if not hasattr(estimator, "coef_"):
        raise RadfusionError("feature importances by coefficient need a linear model")
    names = names or [
        n.removeprefix("missingindicator_") + ":missing" if n.startswith("missingindicator_") else n
        for n in model[:-1].get_feature_names_out()
    ]
    coef = estimator.coef_.ravel()
    frame = pd.DataFrame({"feature": names, "coefficient": coef, "abs_coefficient": np.abs(coef)})
    if tables is not None:
        base = frame["feature"].str.removesuffix(":missing")
        frame.insert(1, "table", base.map(tables))
    return frame.sort_values("abs_coefficient", ascending=False, kind="stable").reset_index(
        drop=True
    )
