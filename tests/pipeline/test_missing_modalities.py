"""Studies without a volume (``data.without_volume=ehr``): kept by either layout, left out of
the image models, scored by the EHR model and each fusion's fallback, and evaluated by each
model on the studies it could score."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from radfusion.config import load_config
from radfusion.data.cohort import validate_cohort
from radfusion.pipeline.benchmark import run_benchmark

from ..conftest import TINY

KEEP = "data.without_volume=ehr"


def _remove_volumes(root, per_split: dict[str, int]) -> pd.Index:
    labels = pd.read_csv(root / "Labels.csv").set_index("idx")
    gone = []
    for split, count in per_split.items():
        for idx in labels.index[labels["split"] == split][:count]:
            next(root.glob(f"*/{idx}.npy")).unlink()
            gone.append(int(idx))
    return pd.Index(sorted(gone), name="idx")


def test_a_release_study_without_a_volume_is_an_error_unless_kept(cohort_copy):
    gone = _remove_volumes(cohort_copy, {"train": 1, "test": 2})
    report = validate_cohort(cohort_copy)
    assert report.cohort is None
    (error,) = report.errors
    assert "3 labelled stud(ies) without a volume" in error
    assert "--set data.without_volume=ehr" in error
    kept = validate_cohort(cohort_copy, data=load_config(None, [KEEP]).data)
    assert kept.ok, kept.errors
    cohort = kept.cohort
    assert any("3 labelled stud(ies) without a volume" in w for w in kept.warnings)
    assert list(cohort.studies.index[~cohort.has_volume]) == list(gone)
    imaged = cohort.imaged()
    assert len(imaged.studies) == len(cohort.studies) - 3
    assert not imaged.studies.index.isin(gone).any()


def test_an_inspect_study_without_a_volume_is_kept_unless_refused(inspect_cohort, tmp_path):
    root = tmp_path / "inspect"
    shutil.copytree(inspect_cohort, root)
    meta = pd.read_csv(root / "Final_metadata.csv")
    name = meta["image_id"].iloc[0]  # the file's name, as the release spells it
    next(root.rglob(name)).unlink()
    image_id = name.removesuffix(".nii.gz")
    report = validate_cohort(root)
    assert report.ok, report.errors
    cohort = report.cohort
    missing = cohort.studies.index[~cohort.has_volume]
    assert list(cohort.studies.loc[missing, "image_id"]) == [image_id]
    assert any("1 labelled stud(ies) without a volume" in w for w in report.warnings)
    refused = validate_cohort(root, data=load_config(None, ["data.without_volume=error"]).data)
    assert not refused.ok and "without a NIfTI volume" in "\n".join(refused.errors)


@pytest.fixture(scope="module")
def partial_run(small_cohort, tmp_path_factory):
    root = tmp_path_factory.mktemp("partial")
    data = root / "cohort"
    shutil.copytree(small_cohort, data)
    gone = _remove_volumes(data, {"train": 2, "val": 1, "test": 3})
    config = load_config(
        None,
        [
            *TINY,
            KEEP,
            "fusion.designs=[mean, stacked_logit, early, joint]",
            "fusion.joint_variants=[heads]",
            "fusion.joint_epochs=1",
            "slicenet.enabled=false",
            "image.max_epochs=2",
        ],
    )
    run = root / "run"
    run_benchmark(data, run, config)
    return data, run, gone


def _prob(run, name) -> pd.Series:
    return pd.read_csv(run / "predictions" / f"{name}.csv").set_index("idx")["prob"]


def test_the_image_model_leaves_them_out_and_every_fusion_scores_them(partial_run):
    data, run, gone = partial_run
    labels = pd.read_csv(data / "Labels.csv").set_index("idx")
    image, ehr = _prob(run, "image"), _prob(run, "ehr")
    assert not image.index.isin(gone).any()
    assert len(image) == len(labels) - len(gone)
    assert ehr.index.equals(labels.index.sort_values())
    for name in ("fusion_mean", "fusion_early", "fusion_joint_heads"):
        fused = _prob(run, name)
        assert fused.index.equals(ehr.index), name
        # Each design's fallback without an image: the EHR model's probability.
        np.testing.assert_allclose(fused.loc[gone], ehr.loc[gone], atol=1e-7, err_msg=name)
    stacked = _prob(run, "fusion_stacked_logit")
    assert stacked.loc[gone].between(0, 1).all()
    # Its fallback is a monotone recalibration of the EHR model: the same order.
    order = ehr.loc[gone].sort_values().index
    assert stacked.loc[order].is_monotonic_increasing
    scored = [p.stem for p in (run / "embeddings").glob("*.parquet")]
    assert scored == ["image"]
    embedded = pd.read_parquet(run / "embeddings" / "image.parquet")
    assert not embedded["idx"].isin(gone).any()
    missing = pd.read_csv(run / "fusion" / "missing.csv").set_index(["split", "input"])
    assert missing.loc[("test", "image"), "absent"] == 3
    assert missing.loc[("val", "image"), "absent"] == 1
    assert missing.loc[("train", "image"), "absent"] == 2
    assert missing.loc[("test", "ehr"), "absent"] == 0


def test_each_model_is_evaluated_on_the_studies_it_scored(partial_run):
    data, run, gone = partial_run
    labels = pd.read_csv(data / "Labels.csv").set_index("idx")
    test = labels.index[labels["split"] == "test"]
    metrics = pd.read_csv(run / "eval" / "metrics.csv")
    overall = metrics.query("attribute == 'overall' and subset == 'all' and metric == 'auroc'")
    by = overall.set_index("model")
    image = _prob(run, "image")
    have = test.difference(gone)
    assert by.loc["image", "n"] == len(have)
    assert by.loc["image", "value"] == pytest.approx(
        roc_auc_score(labels.loc[have, "label"], image.loc[have])
    )
    mean = _prob(run, "fusion_mean")
    assert by.loc["fusion_mean", "n"] == len(test)
    assert by.loc["fusion_mean", "value"] == pytest.approx(
        roc_auc_score(labels.loc[test, "label"], mean.loc[test])
    )
    page = (run / "report" / "report.html").read_text()
    assert f"image.csv: 3 of {len(test)} test studies have no prediction" in page
    assert "(no volume to score)" in page


@pytest.fixture(scope="module")
def inspect_partial(inspect_cohort, tmp_path_factory):
    """An INSPECT cohort with one test study's volume gone and two test patients missing from
    the MEDS data (their studies have no EHR), benchmarked with every design."""
    root = tmp_path_factory.mktemp("inspect_partial") / "cohort"
    shutil.copytree(inspect_cohort, root)
    meta = pd.read_csv(root / "Final_metadata.csv").set_index("impression_id")
    splits = pd.read_csv(root / "Final_splits.csv").set_index("impression_id")["split"]
    labels = pd.read_csv(root / "Final_labels.csv", dtype=str)
    labels = labels.set_index(labels["impression_id"].astype(int))["PE"]
    test = [i for i in splits.index[splits == "test"] if labels.loc[i] != "Censored"]
    subject = meta["image_id"].str.split("_").str[0].astype(int)
    lost_volume = test[0]
    next(root.rglob(meta.loc[lost_volume, "image_id"])).unlink()
    others = [i for i in test if subject[i] != subject[lost_volume]]
    gone = {int(subject[others[0]]), int(subject[others[-1]])}
    for shard in (root / "meds" / "data").glob("*.parquet"):
        events = pd.read_parquet(shard)
        events[~events["subject_id"].isin(gone)].to_parquet(shard, index=False)
    no_ehr = pd.Index(sorted(i for i in meta.index if subject[i] in gone and i in labels.index))
    no_ehr = no_ehr[labels.loc[no_ehr] != "Censored"]
    config = load_config(
        None,
        [
            *[item for item in TINY if not item.startswith("slicenet")],
            "slicenet.enabled=false",
            "image.max_epochs=1",
            "fusion.designs=[mean, stacked_logit, early, joint]",
            "fusion.joint_variants=[heads]",
            "fusion.joint_epochs=1",
        ],
    )
    run = root.parent / "run"
    run_benchmark(root, run, config)
    return run, lost_volume, no_ehr, test


def test_an_inspect_study_without_an_ehr_is_scored_by_its_volume(inspect_partial):
    run, lost_volume, no_ehr, test = inspect_partial
    assert len(no_ehr) >= 2
    image, ehr = _prob(run, "image"), _prob(run, "ehr")
    assert lost_volume not in image.index and lost_volume in ehr.index
    assert not ehr.index.isin(no_ehr).any() and no_ehr.isin(image.index).all()
    for name in ("fusion_mean", "fusion_joint_heads"):
        fused = _prob(run, name)
        np.testing.assert_allclose(fused.loc[no_ehr], image.loc[no_ehr], atol=1e-7, err_msg=name)
        assert fused.loc[lost_volume] == pytest.approx(ehr.loc[lost_volume], abs=1e-7), name
    early, probe = _prob(run, "fusion_early"), _prob(run, "probe_image")
    np.testing.assert_allclose(early.loc[no_ehr], probe.loc[no_ehr], atol=1e-7)
    assert early.loc[lost_volume] == pytest.approx(ehr.loc[lost_volume], abs=1e-7)
    metrics = pd.read_csv(run / "eval" / "metrics.csv")
    n = metrics.query("attribute == 'overall' and subset == 'all' and metric == 'auroc'")
    n = n.set_index("model")["n"]
    assert n["ehr"] == len(test) - len(no_ehr)
    assert n["image"] == len(test) - 1
    assert n["fusion_mean"] == len(test)
    missing = pd.read_csv(run / "fusion" / "missing.csv").set_index(["split", "input"])
    assert missing.loc[("test", "ehr"), "absent"] == len(no_ehr)
    assert missing.loc[("test", "image"), "absent"] == 1
    notes = "\n".join(json.loads((run / "eval" / "evaluation.json").read_text())["notes"])
    assert re.search(r"ehr\.csv: \d+ of \d+ test studies .*\(no EHR to score\)", notes)
    assert re.search(r"image\.csv: 1 of \d+ test studies .*\(no volume to score\)", notes)


def test_the_evaluate_command_alone_evaluates_each_model_on_what_it_scored(partial_run, tmp_path):
    """`radfusion evaluate` on the run's predictions, outside the benchmark, gives the same
    metrics (the image model without the studies that have no volume)."""
    from typer.testing import CliRunner

    from radfusion.cli import app

    data, run, _ = partial_run
    out = tmp_path / "eval"
    sets = [arg for item in ["evaluation.n_boot=200"] for arg in ("--set", item)]
    args = ["evaluate", "--data", str(data), "--predictions", str(run / "predictions")]
    result = CliRunner().invoke(app, [*args, "--out", str(out), *sets])
    assert result.exit_code == 0, result.output
    ours = pd.read_csv(out / "metrics.csv").set_index(["model", "subset", "attribute", "metric"])
    theirs = pd.read_csv(run / "eval" / "metrics.csv").set_index(
        ["model", "subset", "attribute", "metric"]
    )
    key = ("image", "all", "overall", "auroc")
    assert ours.loc[key, "n"] == theirs.loc[key, "n"]
    assert ours.loc[key, "value"] == pytest.approx(theirs.loc[key, "value"])
