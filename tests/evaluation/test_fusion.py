"""Late fusion strategies."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from radfusion.errors import RadfusionError
from radfusion.fusion import fuse, fuse_files


def _setup(n=120, seed=0):
    rng = np.random.default_rng(seed)
    y = np.tile([0, 1], n // 2)
    studies = pd.DataFrame(
        {"label": y, "split": np.where(np.arange(n) < n // 2, "val", "test")},
        index=pd.Index(np.arange(n), name="idx"),
    )
    probs = pd.DataFrame(
        {"good": np.clip(0.5 * y + rng.uniform(0, 0.5, n), 0, 1), "noise": rng.uniform(0, 1, n)},
        index=studies.index,
    )
    return studies, probs


def test_mean_and_max():
    _studies, probs = _setup()
    np.testing.assert_allclose(fuse(probs, "mean"), probs.mean(axis=1))
    np.testing.assert_allclose(fuse(probs, "max"), probs.max(axis=1))


def test_weighted_chooses_by_validation_auroc():
    studies, probs = _setup()
    fused = fuse(probs, "weighted", studies)
    val = studies["split"] == "val"
    # "good" separates val perfectly: any weight >= its share gives AUROC 1; ties go to the
    # weights closest to equal. Check against a direct scan.
    best = max(
        (
            roc_auc_score(
                studies.loc[val, "label"],
                w * probs.loc[val, "good"] + (1 - w) * probs.loc[val, "noise"],
            ),
            -abs(w - 0.5),
            w,
        )
        for w in np.round(np.arange(0, 1.0001, 0.05), 10)
    )
    np.testing.assert_allclose(fused, best[2] * probs["good"] + (1 - best[2]) * probs["noise"])


def test_stacked_validation_predictions_are_out_of_fold():
    studies, probs = _setup()
    fused = fuse(probs, "stacked", studies, seed=0)
    val = (studies["split"] == "val").to_numpy()
    x = np.log(probs.clip(1e-6, 1 - 1e-6) / (1 - probs.clip(1e-6, 1 - 1e-6)))
    in_sample = LogisticRegression().fit(x[val], studies["label"][val]).predict_proba(x)[:, 1]
    np.testing.assert_allclose(fused[~val], in_sample[~val])  # test: the model fit on all val
    assert not np.allclose(fused[val], in_sample[val])  # val: cross-fitted, not in-sample


def test_learned_strategies_need_labels_and_two_models():
    _studies, probs = _setup()
    with pytest.raises(RadfusionError, match="learns on validation labels"):
        fuse(probs, "stacked")
    with pytest.raises(RadfusionError, match="at least two models"):
        fuse(probs[["good"]], "mean")
    with pytest.raises(RadfusionError, match="unknown fusion strategy"):
        fuse(probs, "median")


def test_fuse_files_requires_the_same_studies(tmp_path):
    studies, probs = _setup()
    for name in probs:
        probs[name].rename("prob").reset_index().to_csv(tmp_path / f"{name}.csv", index=False)
    out = fuse_files(tmp_path, ["good", "noise"], "mean", studies)
    written = pd.read_csv(out)
    assert out.name == "fusion_mean.csv" and list(written.columns) == ["idx", "prob", "split"]
    np.testing.assert_allclose(written["prob"], probs.mean(axis=1), atol=1e-8)
    probs["noise"].iloc[:-1].rename("prob").reset_index().to_csv(
        tmp_path / "noise.csv", index=False
    )
    with pytest.raises(RadfusionError, match="cover different studies"):
        fuse_files(tmp_path, ["good", "noise"], "mean", studies)


def test_the_command_line_names_the_fused_model(tmp_path):
    from typer.testing import CliRunner

    from radfusion.cli import app

    rng = np.random.default_rng(3)
    idx = np.arange(1, 21)
    for model in ("slicenet", "ehr"):
        frame = pd.DataFrame({"idx": idx, "prob": rng.random(20), "split": "test"})
        frame.to_csv(tmp_path / f"{model}.csv", index=False)
    args = ["fuse", str(tmp_path), "--models", "slicenet,ehr", "--name", "fusion_slicenet_mean"]
    args += ["--set", "fusion.designs=[mean]"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "fusion_mean.csv").exists()
    fused = pd.read_csv(tmp_path / "fusion_slicenet_mean.csv").set_index("idx")["prob"]
    a, b = (
        pd.read_csv(tmp_path / f"{m}.csv").set_index("idx")["prob"] for m in ("slicenet", "ehr")
    )
    np.testing.assert_allclose(fused, (a + b) / 2, atol=1e-7)


def test_fusions_are_named_after_their_imaging_model():
    from radfusion.fusion import fusion_name

    assert fusion_name("image", "mean") == "fusion_mean"  # PENet's: the paper's names
    assert fusion_name("slicenet", "stacked") == "fusion_slicenet_stacked"


def test_the_mean_says_when_one_model_decides_the_ranking(caplog):
    """A well-ranking model on a narrow scale (probabilities 0.45-0.55) leaves the mean to the
    other model: its AUROC falls to that model's, and the fusion warns, naming both spreads."""
    studies, probs = _setup(n=400)
    y = studies["label"].to_numpy()
    rng = np.random.default_rng(1)
    strong = 1 / (1 + np.exp(-(3 * y - 1.5 + rng.normal(0, 1, len(y)))))
    probs = pd.DataFrame({"image": probs["noise"], "ehr": 0.45 + 0.1 * strong}, index=probs.index)
    test = studies["split"] == "test"
    assert roc_auc_score(y[test], probs.loc[test, "ehr"]) > 0.85

    with caplog.at_level("WARNING", logger="radfusion"):
        fused = fuse(probs, "mean", studies)
    assert roc_auc_score(y[test], fused[test]) < 0.7  # the noise decides
    (record,) = caplog.records
    val = probs[studies["split"] == "val"]
    lo, hi = np.percentile(val["ehr"], [5, 95])
    assert f"ehr's probabilities span {lo:.2f}-{hi:.2f}" in record.getMessage()
    assert "image decides the ranking" in record.getMessage()

    caplog.clear()
    with caplog.at_level("WARNING", logger="radfusion"):
        fuse(probs.assign(ehr=strong), "mean", studies)  # the same ranking on a full scale
        fuse(probs, "weighted", studies)  # learns the balance: no warning
    assert caplog.records == []
