from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import lightning as L
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from radfusion.config import load_config
from radfusion.errors import RadfusionError
from radfusion.pipeline.benchmark import STAGES as DECLARED
from radfusion.pipeline.benchmark import Reporter, run_benchmark

from ..conftest import TINY, tiny_cli

FUSIONS_MEAN = {"fusion_mean", "fusion_slicenet_mean"}


STAGES = [stage.name for stage in DECLARED]
OFF = {"joint": "off"}  # the tiny config's fusion designs hold no joint fusion


def _every(status):
    return {**dict.fromkeys(STAGES, status), **OFF}


def _statuses(run):
    return {s: json.loads((run / "stages" / f"{s}.json").read_text())["status"] for s in STAGES}


def test_a_run_writes_every_stage_and_the_summary_matches_sklearn(benchmark_run):
    data, run, result = benchmark_run
    assert result.statuses == _every("ran")
    assert _statuses(run) == _every("done")
    names = {p.stem for p in (run / "predictions").glob("*.csv")}
    assert names == {
        "ehr",
        "image",
        "slicenet",
        "fusion_mean",
        "fusion_weighted",
        "fusion_slicenet_mean",
        "fusion_slicenet_weighted",
    }
    assert result.report.exists() and (run / "config.yaml").exists()
    assert "stage image: done" in (run / "benchmark.log").read_text()
    labels = pd.read_csv(data / "Labels.csv").set_index("idx")
    test = labels[labels["split"] == "test"]
    for row in result.summary.itertuples():
        pred = pd.read_csv(run / "predictions" / f"{row.model}.csv").set_index("idx")
        expected = roc_auc_score(test["label"], pred.loc[test.index, "prob"])
        assert row.all_value == pytest.approx(expected, abs=1e-6)
        assert row.all_ci_low <= row.all_value <= row.all_ci_high
    fused = pd.read_csv(run / "predictions" / "fusion_mean.csv").set_index("idx")["prob"]
    ehr = pd.read_csv(run / "predictions" / "ehr.csv").set_index("idx")["prob"]
    image = pd.read_csv(run / "predictions" / "image.csv").set_index("idx")["prob"]
    np.testing.assert_allclose(fused, (ehr + image.loc[ehr.index]) / 2, atol=1e-7)
    fused = pd.read_csv(run / "predictions" / "fusion_slicenet_mean.csv").set_index("idx")["prob"]
    slices = pd.read_csv(run / "predictions" / "slicenet.csv").set_index("idx")["prob"]
    np.testing.assert_allclose(fused, (ehr + slices.loc[ehr.index]) / 2, atol=1e-7)


def test_a_rerun_skips_every_stage(run_copy, tiny_config):
    data, run = run_copy
    before = (run / "eval" / "metrics.csv").read_bytes()
    result = run_benchmark(data, run, tiny_config)
    assert result.statuses == _every("skipped")
    assert (run / "eval" / "metrics.csv").read_bytes() == before


def test_a_changed_parameter_reruns_that_stage_and_what_follows(run_copy):
    data, run = run_copy
    image_ckpt = sorted((run / "image" / "checkpoints").glob("*.ckpt"))
    mtimes = {p: p.stat().st_mtime_ns for p in image_ckpt}
    config = load_config(None, [*TINY, "fusion.designs=[mean, max]"])
    result = run_benchmark(data, run, config)
    assert result.statuses == {
        **dict.fromkeys(
            ["validate", "preprocess", "ehr", "image", "slicenet", "selection"], "skipped"
        ),
        **dict.fromkeys(["fusion", "evaluate", "report"], "ran"),
        **OFF,
    }
    assert {p: p.stat().st_mtime_ns for p in image_ckpt} == mtimes  # PENet untouched
    names = {p.stem for p in (run / "predictions").glob("*.csv")}
    fusions = {"fusion_mean", "fusion_max", "fusion_slicenet_mean", "fusion_slicenet_max"}
    assert names == {"ehr", "image", "slicenet", *fusions}  # the old fusions are gone
    assert set(result.summary["model"]) == names


def test_the_selection_table_matches_the_evaluations_gaps(benchmark_run):
    """The checkpoint each model scored the studies with (PENet: the best on validation,
    SliceNet: the last epoch, in the tiny config) gives, in selection.csv, the TPR gaps that
    the evaluation computed from the predictions files."""
    _, run, _ = benchmark_run
    table = pd.read_csv(run / "selection.csv")
    fairness = pd.read_csv(run / "eval" / "fairness.csv")
    for model, selection in (("image", "best validation AUROC"), ("slicenet", "last epoch")):
        for attribute in ("gender", "race", "age"):
            row = table[
                (table["model"] == model)
                & (table["selection"] == selection)
                & (table["attribute"] == attribute)
            ].iloc[0]
            eod = fairness[
                (fairness["model"] == model)
                & (fairness["subset"] == "all")
                & (fairness["attribute"] == attribute)
                & (fairness["metric"] == "eod")
            ]["value"].iloc[0]
            assert row["test_tpr_gap"] == pytest.approx(eod, abs=1e-6), (model, attribute)
    last = table[(table["model"] == "image") & (table["selection"] == "last epoch")]
    assert last["checkpoint"].str.startswith("epoch-").all()
    fairest = table[table["selection"] == "smallest validation TPR gap"]
    others = table[table["selection"] != "smallest validation TPR gap"]
    for row in fairest.itertuples():
        rivals = others[(others["model"] == row.model) & (others["attribute"] == row.attribute)]
        assert row.val_tpr_gap == rivals["val_tpr_gap"].min()


def test_slicenet_switched_off_leaves_nothing_behind(run_copy):
    data, run = run_copy
    result = run_benchmark(data, run, load_config(None, [*TINY, "slicenet.enabled=false"]))
    assert result.statuses["slicenet"] == "off" and result.statuses["image"] == "skipped"
    assert result.statuses["fusion"] == "ran"
    assert _statuses(run)["slicenet"] == "off"
    assert not (run / "slicenet").exists()
    names = {p.stem for p in (run / "predictions").glob("*.csv")}
    assert names == {"ehr", "image", "fusion_mean", "fusion_weighted"}
    assert set(result.summary["model"]) == names


def test_trainer_callbacks_join_the_progress_display(run_copy):
    """A caller's Lightning callbacks run alongside the epoch progress, not instead of it."""
    data, run = run_copy

    class Epochs(L.Callback):
        seen = 0

        def on_train_epoch_end(self, trainer, pl_module):
            Epochs.seen += 1

    class Progress(Reporter):
        current, image_steps = "", 0

        def stage(self, name, status, seconds=0.0):
            Progress.current = name

        def advance(self, n=1):
            Progress.image_steps += n if Progress.current == "image" else 0

    config = load_config(None, [*TINY, "image.max_epochs=2"])
    result = run_benchmark(
        data, run, config, reporter=Progress(), trainer_args={"callbacks": [Epochs()]}
    )
    assert result.statuses["image"] == "ran"
    assert Epochs.seen == 2
    assert Progress.image_steps == 2


def test_extra_predictions_join_the_evaluation(run_copy, tiny_config, tmp_path):
    data, run = run_copy
    labels = pd.read_csv(data / "Labels.csv")
    rng = np.random.default_rng(0)
    mine = tmp_path / "my_model.csv"
    labels.assign(prob=rng.random(len(labels)))[["idx", "prob"]].to_csv(mine, index=False)
    result = run_benchmark(data, run, tiny_config, extra_predictions=[mine])
    assert result.statuses["image"] == "skipped" and result.statuses["evaluate"] == "ran"
    assert "my_model" in set(result.summary["model"])
    assert "my_model" in result.report.read_text()
    clash = tmp_path / "ehr.csv"
    clash.write_text(mine.read_text())
    with pytest.raises(RadfusionError, match="is the benchmark's own model; rename the file"):
        run_benchmark(data, run, tiny_config, extra_predictions=[clash])


def test_a_run_folder_holds_one_cohort(run_copy, tiny_config, cohort_copy):
    _, run = run_copy
    with pytest.raises(RadfusionError, match=r"holds a benchmark of .*use a new --out folder"):
        run_benchmark(cohort_copy, run, tiny_config)


def _started_until_first_checkpoint(cmd, run, output):
    """Start the CLI and return once PENet has written its first checkpoint (mid-training);
    ``output`` (PIPE or DEVNULL) takes its stdout and stderr."""
    # A shell's background job (`cmd &`) starts with SIGINT ignored, and an ignored signal
    # stays ignored across exec: the child starts from the default, as under a terminal.
    inherited = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        proc = subprocess.Popen(cmd, stdout=output, stderr=output, text=True)
    finally:
        signal.signal(signal.SIGINT, inherited)
    last = run / "image" / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 240
    while not last.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before it could be interrupted"
    return proc


def test_killed_at_any_moment_it_resumes_to_the_same_numbers(benchmark_run, tmp_path):
    """SIGKILL the CLI while PENet trains (after its first epoch's checkpoint), rerun the
    same command: finished stages are skipped, training resumes, the numbers are those of
    the uninterrupted run (the session's ``benchmark_run``, same config and seed)."""
    data, straight, _ = benchmark_run
    run = tmp_path / "killed"
    cmd = [sys.executable, "-m", "radfusion.cli", *tiny_cli(data, run)]
    proc = _started_until_first_checkpoint(cmd, run, subprocess.DEVNULL)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert json.loads((run / "stages" / "image.json").read_text())["status"] == "running"
    assert not (run / "eval").exists()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "unchanged, skipped" in done.stdout
    assert _statuses(run) == _every("done")
    log = (run / "benchmark.log").read_text()
    assert "stage image: resumed" in log and "stage ehr: unchanged, skipped" in log
    a = pd.read_csv(straight / "eval" / "metrics.csv")
    b = pd.read_csv(run / "eval" / "metrics.csv")
    pd.testing.assert_frame_equal(a.drop(columns="note"), b.drop(columns="note"), atol=1e-6)


def test_the_benchmark_runs_on_a_cohort_with_every_release_quirk(quirky_cohort, tmp_path):
    from radfusion.config import load_config

    config = load_config(None, [*TINY, "fusion.designs=[mean]"])
    result = run_benchmark(quirky_cohort, tmp_path / "run", config)
    assert set(result.summary["model"]) == {"ehr", "image", "slicenet", *FUSIONS_MEAN}
    assert result.summary["all_value"].between(0, 1).all()
    log = (tmp_path / "run" / "benchmark.log").read_text()
    assert "WARNING" in log  # the quirks are reported, not silently absorbed


def test_a_run_folder_inside_the_data_folder_does_not_invalidate_itself(cohort_copy, tiny_config):
    run = cohort_copy / "runs" / "r1"
    run_benchmark(cohort_copy, run, tiny_config)
    again = run_benchmark(cohort_copy, run, tiny_config)
    assert again.statuses == _every("skipped")


def test_ctrl_c_says_how_to_resume_and_the_rerun_resumes(small_cohort, tmp_path):
    run = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "radfusion.cli",
        *tiny_cli(small_cohort, run, "image.max_epochs=40"),
    ]
    proc = _started_until_first_checkpoint(cmd, run, subprocess.PIPE)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted; finished work is kept: rerun the same command to resume" in err
    assert "Traceback" not in err
    assert json.loads((run / "stages" / "image.json").read_text())["status"] == "running"
    config = load_config(None, [*TINY, "image.max_epochs=40"])
    result = run_benchmark(small_cohort, run, config)
    assert result.statuses["image"] == "resumed" and result.statuses["ehr"] == "skipped"


def test_slicenet_without_annotated_slices_is_refused_before_it_trains(cohort_copy, tmp_path):
    (cohort_copy / "annotations.csv").unlink()
    config = load_config(None, TINY)
    with pytest.raises(RadfusionError, match=r"no annotated slices .* slicenet.enabled=false"):
        run_benchmark(cohort_copy, tmp_path / "run", config)
    assert not (tmp_path / "run" / "slicenet").exists()
