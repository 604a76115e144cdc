"""The benchmark on an INSPECT-layout cohort, one code path past the reader: two tasks in one
run (censored studies out of each), their summary page, and external validation both ways
(a RadFusion run scoring INSPECT studies; an INSPECT run scoring another INSPECT cohort)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from radfusion.config import load_config
from radfusion.pipeline.benchmark import run_benchmark
from radfusion.pipeline.external import external_validation
from radfusion.rundir import RunDir
from radfusion.synthetic.inspect_writer import write_inspect_cohort
from tests.conftest import TINY

TASKS = "PE,6_month_readmission"
QUICK = [
    *[item for item in TINY if not item.startswith("slicenet")],
    "image.max_epochs=1",
    "image.windows_per_epoch=8",
    "fusion.designs=[mean, weighted]",
]


def task_labels(root, task):
    labels = pd.read_csv(root / "Final_labels.csv", dtype=str)
    labels = labels.set_index(labels["impression_id"].astype(int))[task]
    return (labels[labels != "Censored"] == "True").astype(int)


@pytest.fixture(scope="module")
def task_run(inspect_cohort, tmp_path_factory):
    run = tmp_path_factory.mktemp("inspect_run") / "run"
    config = load_config(None, [*QUICK, f"data.task={TASKS}"])
    result = run_benchmark(inspect_cohort, run, config)
    return inspect_cohort, RunDir(run), result


def test_each_task_is_trained_and_scored_on_its_own_labels(task_run):
    data, run, result = task_run
    assert set(result.summary["task"]) == {"PE", "6_month_readmission"}
    for task in TASKS.split(","):
        folder = RunDir(run.tasks / task)
        labels = task_labels(data, task)
        outcomes = pd.read_csv(folder.eval.outcomes).set_index("idx")
        assert set(outcomes.index) == set(labels.index)  # censored studies are out
        assert outcomes["label"].equals(labels.loc[outcomes.index].rename("label"))
        metrics = pd.read_csv(folder.eval.metrics)
        test = outcomes[outcomes["split"] == "test"]
        for model in ("ehr", "image"):
            prob = pd.read_csv(folder.prediction(model)).set_index("idx")["prob"]
            row = metrics[
                (metrics["model"] == model)
                & (metrics["attribute"] == "overall")
                & (metrics["subset"] == "all")
                & (metrics["metric"] == "auroc")
            ]
            expect = roc_auc_score(test["label"], prob.loc[test.index])
            assert float(row["value"].iloc[0]) == pytest.approx(expect, abs=1e-5)  # %.6g
        assert "auprc" in set(metrics["metric"])
        # the cohort's own groups: ethnicity from the MEDS codes, its EOD by hand
        fairness = pd.read_csv(folder.eval.fairness)
        eod = fairness[
            (fairness["model"] == "ehr")
            & (fairness["subset"] == "all")
            & (fairness["attribute"] == "ethnicity")
            & (fairness["metric"] == "eod")
        ]["value"].iloc[0]
        threshold = pd.read_csv(folder.eval.thresholds).set_index("model").loc["ehr", "threshold"]
        prob = pd.read_csv(folder.prediction("ehr")).set_index("idx")["prob"]
        positive = test[test["label"] == 1]
        tpr = {
            g: (prob.loc[positive.index[positive["ethnicity"] == g]] >= threshold).mean()
            for g in ("Hispanic", "Not Hispanic")
        }
        if all(np.isfinite(list(tpr.values()))):
            assert eod == pytest.approx(abs(tpr["Hispanic"] - tpr["Not Hispanic"]), abs=1e-5)
        model = json.loads((folder.ehr_meta).read_text())
        assert model["features"]["source"] == "codes"  # auto for the INSPECT layout
    # one CT cache for both tasks
    assert (run.root / "cache").is_dir() and not (run.tasks / "PE" / "cache").exists()
    page = run.report_page.read_text()
    assert "6_month_readmission" in page and "tasks/PE/report/report.html" in page
    table = pd.read_csv(run.root / "tasks.csv")
    assert set(table["task"]) == {"PE", "6_month_readmission"}


def test_a_radfusion_run_scores_inspect_studies_where_it_can(
    benchmark_run, inspect_cohort, tmp_path
):
    _, run_a, _ = benchmark_run
    result = external_validation(run_a, inspect_cohort, tmp_path / "ext", n_boot=200)
    assert "image" in result.models
    assert "ehr" in result.not_transferred and "release features" in result.not_transferred["ehr"]
    assert "fusion_mean" in result.not_transferred
    out = RunDir(tmp_path / "ext")
    thresholds = pd.read_csv(out.eval.thresholds).set_index("model")["threshold"]
    own = pd.read_csv(RunDir(run_a).eval.thresholds).set_index("model")["threshold"]
    assert thresholds["image"] == pytest.approx(own["image"])
    prob = pd.read_csv(out.prediction("image")).set_index("idx")["prob"]
    labels = task_labels(inspect_cohort, "PE")
    assert set(prob.index) == set(labels.index)  # every study of B is scored
    table = pd.read_csv(out.root / "external.csv").set_index(["model", "metric"])
    assert table.loc[("image", "auroc"), "external_value"] == pytest.approx(  # %.6g
        roc_auc_score(labels.loc[prob.index], prob), abs=1e-5
    )
    predicted = prob >= own["image"]
    sensitivity = predicted[labels.loc[prob.index] == 1].mean()
    assert table.loc[("image", "sensitivity"), "external_value"] == pytest.approx(
        sensitivity, abs=1e-5
    )
    assert np.isfinite(table.loc[("image", "auroc"), "internal_value"])
    assert out.report_page.exists()


def test_an_inspect_run_transfers_its_ehr_model_to_another_inspect_cohort(task_run, tmp_path):
    _, run, _ = task_run
    other = tmp_path / "other"
    write_inspect_cohort(other, 60, seed=11, size=16, slice_range=(24, 32))
    lost = sorted(other.rglob("*.nii.gz"))[0]  # a study of B without a volume
    lost.unlink()
    result = external_validation(run.tasks / "PE", other, tmp_path / "ext", n_boot=200)
    assert {"image", "ehr", "fusion_mean"} <= set(result.models)
    assert "fusion_weighted" in result.not_transferred
    out = RunDir(tmp_path / "ext")
    prob = pd.read_csv(out.prediction("ehr")).set_index("idx")["prob"]
    labels = task_labels(other, "PE").loc[prob.index]
    table = pd.read_csv(out.root / "external.csv").set_index(["model", "metric"])
    assert table.loc[("ehr", "auroc"), "external_value"] == pytest.approx(
        roc_auc_score(labels, prob), abs=1e-5
    )
    image = pd.read_csv(out.prediction("image")).set_index("idx")["prob"]
    mean = pd.read_csv(out.prediction("fusion_mean")).set_index("idx")["prob"]
    meta = pd.read_csv(other / "Final_metadata.csv").set_index("image_id")
    unimaged = meta.loc[lost.name, "impression_id"]
    assert unimaged not in image.index and len(image) == len(prob) - 1
    assert mean.loc[unimaged] == pytest.approx(prob.loc[unimaged])  # the EHR model alone
    both = image.index
    np.testing.assert_allclose(mean.loc[both], (image + prob.loc[both]) / 2)
    shift = pd.read_csv(out.root / "calibration_shift.csv")
    assert set(shift["cohort"]) == {"internal", "external"}
    ehr = shift[(shift["model"] == "ehr") & (shift["cohort"] == "external")].iloc[0]
    assert ehr["observed_rate"] == pytest.approx(labels.mean(), abs=1e-5)
    assert ehr["mean_probability"] == pytest.approx(prob.clip(1e-6, 1 - 1e-6).mean(), abs=1e-5)
    with pytest.raises(Exception, match="several tasks"):
        external_validation(run.root, other, tmp_path / "ext2", n_boot=200)


def test_task_all_on_a_radfusion_cohort_is_its_one_task(small_cohort, tmp_path):
    config = load_config(None, [*QUICK, "data.task=all", "fusion.designs=[mean]"])
    result = run_benchmark(small_cohort, tmp_path / "run", config)
    run = RunDir(tmp_path / "run")
    assert set(result.summary["task"]) == {"PE"}
    outcomes = pd.read_csv(RunDir(run.tasks / "PE").eval.outcomes)
    labels = pd.read_csv(small_cohort / "Labels.csv")
    assert sorted(outcomes["idx"]) == sorted(labels["idx"])
    assert run.report_page.exists() and (run.root / "tasks.csv").exists()
    with pytest.raises(Exception, match="the one task PE"):
        run_benchmark(small_cohort, tmp_path / "run2", load_config(None, ["data.task=12_month_PH"]))
