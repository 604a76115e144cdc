"""The EHR-only models: training-only statistics, selection on validation, reproducibility,
safe persistence, and bad input that must never become a silent NaN probability."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from radfusion.ehr.model import (
    check_features,
    create_ehr_model,
    linear_importance,
    tune,
)
from radfusion.ehr.persistence import load_model, save_model
from radfusion.errors import RadfusionError


def _data(n=300, p=12, seed=0, shift=0.8):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    x = rng.normal(size=(n, p)) + shift * y[:, None] * (np.arange(p) < 3)
    x[rng.random((n, p)) < 0.1] = np.nan
    frame = pd.DataFrame(x, columns=[f"f{i}" for i in range(p)])
    split = np.where(np.arange(n) < 200, "train", "val")
    return frame, y, split


def test_standardises_with_training_statistics_only():
    x, y, split = _data()
    train = split == "train"
    model = create_ehr_model("elasticnet", C=1.0, l1_ratio=0.5).fit(x[train], y[train])
    medians = np.nanmedian(x[train].to_numpy(), axis=0)
    filled = np.where(np.isnan(x[train].to_numpy()), medians, x[train].to_numpy())
    scaler = model.named_steps["scale"]
    np.testing.assert_allclose(scaler.mean_[: x.shape[1]], filled.mean(axis=0))
    np.testing.assert_allclose(scaler.scale_[: x.shape[1]], filled.std(axis=0))
    # One missing-indicator column per feature with missing values in training.
    assert len(scaler.mean_) == 2 * x.shape[1]


def test_is_a_scikit_learn_estimator():
    model = create_ehr_model("elasticnet", C=0.1)
    copy = clone(model)
    assert copy.get_params()["model__C"] == 0.1
    with pytest.raises(Exception, match="not fitted"):
        copy.predict_proba(np.zeros((1, 3)))


def test_unknown_model_name_suggests():
    with pytest.raises(RadfusionError, match="did you mean 'elasticnet'"):
        create_ehr_model("elasticnett")


def _by_hand(x, y, train, val, grid):
    """Every grid point refitted from zero and scored with scikit-learn."""
    out = []
    for c in grid["C"]:
        for l1 in grid["l1_ratio"]:
            m = create_ehr_model("elasticnet", C=c, l1_ratio=l1).fit(x[train], y[train])
            out.append(((c, l1), roc_auc_score(y[val], m.predict_proba(x[val])[:, 1])))
    return out


GRID = {"C": [1e-3, 0.1, 10.0], "l1_ratio": [0.1, 0.9], "class_weight": [None]}


def test_cold_grid_chooses_the_point_with_the_best_validation_auroc():
    x, y, split = _data()
    train, val = split == "train", split == "val"
    result = tune(
        "elasticnet", x[train], y[train], x[val], y[val], grid=GRID, n_jobs=1, warm_start=False
    )
    by_hand = _by_hand(x, y, train, val, GRID)
    best = max(by_hand, key=lambda item: item[1])
    assert (result.params["C"], result.params["l1_ratio"]) == best[0]
    assert result.score == pytest.approx(best[1])
    np.testing.assert_allclose(result.scores["score"], [s for _, s in by_hand])


def test_warm_paths_score_every_point_as_cold_fits_do_within_the_solvers_tolerance():
    x, y, split = _data()
    train, val = split == "train", split == "val"
    result = tune("elasticnet", x[train], y[train], x[val], y[val], grid=GRID, n_jobs=1)
    by_hand = _by_hand(x, y, train, val, GRID)
    # saga stops at tol 1e-3 from where it started: a path's fits end near, not on, the cold
    # fits' points; their validation AUROCs agree to a few ranks in a thousand.
    np.testing.assert_allclose(result.scores["score"], [s for _, s in by_hand], atol=0.005)
    assert result.score >= max(s for _, s in by_hand) - 0.005
    # The returned model is the chosen point's, fitted on train: it scores val as recorded.
    val_auroc = roc_auc_score(y[val], result.model.predict_proba(x[val])[:, 1])
    assert val_auroc == pytest.approx(result.score)
    assert result.params["C"] == result.model[-1].C and not result.model[-1].warm_start


def test_cross_validation_on_train_never_looks_at_val():
    x, y, split = _data()
    train = split == "train"
    y_val_scrambled = np.zeros(int((~train).sum()), int)
    grid = {"C": [0.1], "l1_ratio": [0.5], "class_weight": [None]}
    result = tune("elasticnet", x[train], y[train], x[~train], y_val_scrambled, grid=grid, cv=3)
    assert 0.5 < result.score <= 1.0


def test_same_seed_same_predictions():
    x, y, split = _data()
    train, val = split == "train", split == "val"
    grid = {"C": [0.1, 1.0], "l1_ratio": [0.5], "class_weight": [None]}
    a = tune("elasticnet", x[train], y[train], x[val], y[val], grid=grid, seed=3)
    b = tune("elasticnet", x[train], y[train], x[val], y[val], grid=grid, seed=3)
    np.testing.assert_array_equal(a.model.predict_proba(x), b.model.predict_proba(x))


def test_convergence_problems_are_surfaced():
    x, y, split = _data()
    train, val = split == "train", split == "val"
    grid = {
        "C": [1000.0],
        "l1_ratio": [0.5],
        "class_weight": [None],
        "max_iter": [1],
        "tol": [1e-12],
    }
    with pytest.warns(ConvergenceWarning, match="did not converge"):
        result = tune("elasticnet", x[train], y[train], x[val], y[val], grid=grid)
    assert any("iteration limit" in note for note in result.notes)


def test_hgb_handles_missing_values():
    x, y, split = _data(shift=1.5)
    train, val = split == "train", split == "val"
    grid = {"learning_rate": [0.03], "max_leaf_nodes": [7], "max_iter": [100]}
    result = tune("hgb", x[train], y[train], x[val], y[val], grid=grid)
    prob = result.model.predict_proba(x)[:, 1]
    assert np.isfinite(prob).all() and result.score > 0.6


def test_all_missing_and_constant_columns_give_finite_probabilities():
    x, y, split = _data()
    x["empty"] = np.nan
    x["constant"] = 1.0
    train = split == "train"
    model = create_ehr_model("elasticnet", C=1.0).fit(x[train], y[train])
    assert np.isfinite(model.predict_proba(x)[:, 1]).all()


def test_importance_names_are_readable_and_ranked():
    x, y, split = _data()
    train = split == "train"
    model = create_ehr_model("elasticnet", C=1.0, l1_ratio=0.5).fit(x[train], y[train])
    imp = linear_importance(model, {c: "T" for c in x.columns})
    assert set(imp["feature"][:3]) == {"f0", "f1", "f2"}  # the informative ones
    assert "f5:missing" in set(imp["feature"])
    # Same numbers as a plain scikit-learn fit on the same standardised matrix.
    z = model[:-1].transform(x[train])
    ref = LogisticRegression(
        C=1.0, l1_ratio=0.5, solver="saga", max_iter=1000, tol=1e-3, random_state=0
    ).fit(z, y[train])
    coef = dict(zip(imp["feature"], imp["coefficient"], strict=True))
    assert coef["f0"] == pytest.approx(ref.coef_[0, 0], rel=1e-6)


def test_save_and_load_roundtrip(tmp_path):
    x, y, _ = _data()
    model = create_ehr_model("hgb").fit(x, y)
    save_model(model, tmp_path / "m.skops")
    loaded = load_model(tmp_path / "m.skops")
    np.testing.assert_array_equal(loaded.predict_proba(x), model.predict_proba(x))


def test_load_refuses_a_pickle(tmp_path):
    import pickle

    (tmp_path / "m.skops").write_bytes(pickle.dumps({"evil": 1}))
    with pytest.raises(RadfusionError, match="not a readable skops model"):
        load_model(tmp_path / "m.skops")


def test_check_features():
    x = pd.DataFrame({"a": [1.0, 2.0], "b": [0.0, np.inf]}, index=[10, 11])
    with pytest.raises(RadfusionError, match=r"infinite value in column 'b' \(idx 11\)"):
        check_features(x)
    ok = pd.DataFrame({"b": [1.0], "a": [2.0]})
    assert list(check_features(ok, ["a", "b"]).columns) == ["a", "b"]
    with pytest.raises(RadfusionError, match="1 missing"):
        check_features(ok, ["a", "b", "c"])
    with pytest.raises(RadfusionError, match="non-numeric"):
        check_features(pd.DataFrame({"a": ["x"]}))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_features(ok)
