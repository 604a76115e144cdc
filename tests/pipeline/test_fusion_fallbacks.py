"""The fusion designs: fallbacks for a missing modality, stacked_logit against scikit-learn,
the ablation and Shapley shares against hand-worked values, and no design learning from the
test labels."""

from __future__ import annotations

import dataclasses
import shutil

import numpy as np
import pandas as pd
import pytest
from scipy.special import logit
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from radfusion.config import load_config
from radfusion.data.cohort import Cohort
from radfusion.fusion import fuse
from radfusion.fusion.ablation import ablation_tables, shapley_values
from radfusion.fusion.designs import fuse_run
from radfusion.fusion.inputs import hidden_studies, parse_drop
from radfusion.pipeline import steps
from radfusion.rundir import RunDir

from ..conftest import TINY


def _frame(n=40, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    split = np.array(["train"] * (n // 2) + ["val"] * (n // 4) + ["test"] * (n - n // 2 - n // 4))
    studies = pd.DataFrame({"label": y, "split": split}, index=pd.Index(range(n), name="idx"))
    probs = pd.DataFrame(
        {
            "image": np.clip(0.5 + 0.2 * (y - 0.5) + rng.normal(0, 0.15, n), 0.01, 0.99),
            "ehr": np.clip(0.5 + 0.3 * (y - 0.5) + rng.normal(0, 0.15, n), 0.01, 0.99),
        },
        index=studies.index,
    )
    return probs, studies


def test_a_study_missing_a_model_is_scored_by_the_other():
    probs, studies = _frame()
    gone = [3, 25, 33]
    partial = probs.copy()
    partial.loc[gone, "image"] = np.nan
    for strategy in ("mean", "max", "weighted"):
        fused = fuse(partial, strategy, studies, partial=True)
        np.testing.assert_allclose(fused.loc[gone], probs.loc[gone, "ehr"])
    mean = fuse(partial, "mean", studies, partial=True)
    rest = probs.index.difference(gone)
    np.testing.assert_allclose(mean.loc[rest], probs.loc[rest].mean(axis=1))
    with pytest.raises(Exception, match="non-finite"):
        fuse(partial, "mean", studies)  # NaN from a user's file is never silently filled


def test_stacked_logit_is_a_logistic_regression_on_validation_logits():
    probs, studies = _frame(80, seed=3)
    fused = fuse(probs, "stacked_logit", studies)
    val = studies.index[studies["split"] == "val"]
    test = studies.index[studies["split"] == "test"]
    x = logit(probs.clip(1e-6, 1 - 1e-6))
    model = LogisticRegression(C=1.0).fit(x.loc[val], studies.loc[val, "label"])
    np.testing.assert_allclose(fused.loc[test], model.predict_proba(x.loc[test])[:, 1], atol=1e-9)
    # One model missing: a logistic recalibration of the other, fitted on validation.
    alone = fuse(probs.assign(image=np.nan), "stacked_logit", studies, partial=True)
    one = LogisticRegression(C=1.0).fit(x.loc[val, ["ehr"]], studies.loc[val, "label"])
    np.testing.assert_allclose(
        alone.loc[test], one.predict_proba(x.loc[test, ["ehr"]])[:, 1], atol=1e-9
    )


def test_shapley_values_by_hand():
    a, b = frozenset("a"), frozenset("b")
    value = {frozenset(): 0.5, a: 0.7, b: 0.6, a | b: 0.8}
    phi = shapley_values(value, ["a", "b"])
    # a: ((0.7 - 0.5) + (0.8 - 0.6)) / 2 = 0.2; b: ((0.6 - 0.5) + (0.8 - 0.7)) / 2 = 0.1
    assert phi["a"] == pytest.approx(0.2) and phi["b"] == pytest.approx(0.1)
    three = {frozenset(s): len(s) * 0.1 + 0.5 for s in ["", "x", "y", "z", "xy", "xz", "yz", "xyz"]}
    assert sum(shapley_values(three, list("xyz")).values()) == pytest.approx(0.3)


def test_the_ablation_table_matches_sklearn_and_the_shares_sum_to_one():
    probs, studies = _frame(120, seed=5)
    both, image, ehr = frozenset({"image", "ehr"}), frozenset({"image"}), frozenset({"ehr"})
    full = probs.mean(axis=1)
    ablation, shapley = ablation_tables(
        {"fusion_mean": {both: full, image: probs["image"], ehr: probs["ehr"]}},
        studies,
        n_boot=300,
    )
    test = studies["split"] == "test"
    y = studies.loc[test, "label"]
    by = ablation.set_index("removed")
    assert by.loc["none", "auroc"] == pytest.approx(roc_auc_score(y, full[test]))
    assert by.loc["ehr", "auroc"] == pytest.approx(roc_auc_score(y, probs.loc[test, "image"]))
    assert by.loc["image", "auroc"] == pytest.approx(roc_auc_score(y, probs.loc[test, "ehr"]))
    assert (ablation["ci_low"] <= ablation["auroc"]).all()
    assert shapley["share"].sum() == pytest.approx(1.0)
    v = {r: by.loc[r, "auroc"] for r in ("none", "ehr", "image")}
    phi_image = ((v["ehr"] - 0.5) + (v["none"] - v["image"])) / 2
    assert shapley.set_index("modality").loc["image", "shapley"] == pytest.approx(phi_image)


def test_drop_modality_hides_a_share_of_the_test_studies():
    _, studies = _frame(80)
    hidden = hidden_studies(studies, "image:0.3", seed=1)["image"]
    test = studies.index[studies["split"] == "test"]
    assert len(hidden) == round(0.3 * len(test)) and hidden.isin(test).all()
    assert hidden.equals(hidden_studies(studies, "image:0.3", seed=1)["image"])
    assert parse_drop(None) is None
    with pytest.raises(Exception, match="MODALITY:FRACTION"):
        parse_drop("volume:0.3")


def _fuse_into(run_src, target, cohort, config, features):
    shutil.copytree(run_src, target)
    run = RunDir(target)
    for old in [*run.predictions.glob("fusion_*"), *run.predictions.glob("probe_*")]:
        old.unlink()
    fuse_run(cohort, run, config, ["image", "slicenet"], lambda: features)
    return run


def test_no_design_learns_from_the_test_labels(benchmark_run, tmp_path):
    """Every design fitted twice, once with the test labels flipped: the predictions are the
    same, to the last digit (joint included: it trains on the train windows only)."""
    from radfusion.fusion.joint import score_joint, train_joint
    from radfusion.imaging.preprocess import cache_folder
    from radfusion.pipeline.predict import run_checkpoint

    data, run_src, _ = benchmark_run
    config = load_config(
        None, [*TINY, "fusion.designs=[mean, weighted, stacked_logit, fair, early]"]
    )
    cohort = Cohort.load(data)
    flipped = cohort.studies.copy()
    test = flipped["split"] == "test"
    flipped.loc[test, "label"] = 1 - flipped.loc[test, "label"]
    other = dataclasses.replace(cohort, studies=flipped)
    features = steps.ehr_features(cohort, config.ehr)
    a = _fuse_into(run_src, tmp_path / "a", cohort, config, features)
    b = _fuse_into(run_src, tmp_path / "b", other, config, features)
    written = sorted(p.name for p in a.predictions.glob("*.csv"))
    assert {"fusion_early.csv", "probe_image.csv", "fusion_stacked_logit.csv"} <= set(written)
    for name in written:
        pd.testing.assert_frame_equal(
            pd.read_csv(a.predictions / name), pd.read_csv(b.predictions / name), obj=name
        )
    dense, _ = steps.dense_ehr(cohort, config.ehr)
    folder = cache_folder(run_src / "cache", steps.cache_params(config.preprocess))
    scores = []
    for which, c in (("a", cohort), ("b", other)):
        last = train_joint(
            c,
            folder,
            tmp_path / f"joint-{which}",
            run_checkpoint(run_src, "image"),
            dense,
            variant="heads",
            epochs=1,
            lr=1e-3,
            hidden=8,
            seed=0,
        )
        scores.append(score_joint(last, folder, cohort.studies, dense))
    pd.testing.assert_series_equal(scores[0], scores[1])
    assert scores[0].between(0, 1).all() and scores[0].nunique() > 1


def test_a_hidden_image_is_scored_by_each_designs_fallback(run_copy):
    data, run_dir = run_copy
    config = load_config(
        None,
        [*TINY, "fusion.designs=[mean, stacked_logit, early]", "fusion.drop_modality=image:0.5"],
    )
    cohort = Cohort.load(data)
    run = RunDir(run_dir)
    fuse_run(cohort, run, config, ["image"], lambda: steps.ehr_features(cohort, config.ehr))
    hidden = hidden_studies(cohort.studies, "image:0.5", config.seed)["image"]
    read = lambda name: pd.read_csv(run.prediction(name)).set_index("idx")["prob"]  # noqa: E731
    ehr, image = read("ehr"), read("image")
    shown = cohort.studies.index.difference(hidden)
    np.testing.assert_allclose(read("fusion_mean").loc[hidden], ehr.loc[hidden], atol=1e-8)
    np.testing.assert_allclose(read("fusion_early").loc[hidden], ehr.loc[hidden], atol=1e-8)
    np.testing.assert_allclose(
        read("fusion_mean").loc[shown], (ehr.loc[shown] + image.loc[shown]) / 2, atol=1e-8
    )
    missing = pd.read_csv(run.fusion / "missing.csv").set_index(["split", "input"])
    assert missing.loc[("test", "image"), "hidden"] == len(hidden)
    assert missing.loc[("test", "ehr"), "scored_without"] == 0
    assert missing.loc[("train", "image"), "hidden"] == 0


def test_a_column_constant_on_train_weighs_nothing_in_the_joint_fusion():
    """A code no train study has (0 throughout) but a test study does: standardised to
    (almost) zero, not to value / 1e-6."""
    from radfusion.fusion.joint import JointModule

    module = JointModule({"model": "penet_tiny"}, "heads", ehr_width=2, hidden=4)
    x = np.array([[1.0, 0.0], [2.0, 0.0], [3.0, 0.0], [2.0, 5.0]])
    module.set_ehr(x, [10, 11, 12, 13], np.array([True, True, True, False]))
    import torch

    rows = module._ehr_rows(torch.tensor([13, 10]))
    sd = np.std([1.0, 2.0, 3.0])
    np.testing.assert_allclose(rows[:, 0].numpy(), [0.0, -1.0 / sd], atol=1e-6)
    assert abs(float(rows[0, 1])) < 1e-9
