"""Bad inputs and faults across the whole pipeline, through the command line a user types.

Every case ends in one of two ways: a short error naming the file and the fix (exit status
2, no traceback), or a clean recovery. Neither leaves a half-written file behind.
"""

from __future__ import annotations

import contextlib
import errno
import re
import shutil
import signal
import subprocess
import sys
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from radfusion.cli import app
from radfusion.errors import RadfusionError
from radfusion.imaging import preprocess
from radfusion.imaging.preprocess import PreprocessParams, build_cache, cohort_volumes
from radfusion.pipeline.benchmark import run_benchmark
from radfusion.pipeline.demo import DEMO_COHORT, prepare_demo_data
from radfusion.rundir import RunDir

from ..conftest import TINY, tiny_cli

runner = CliRunner()


def _fails_with(args, *fragments):
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    message = " ".join(result.output.split())  # rich wraps long lines
    for fragment in fragments:
        assert fragment in message, message
    return message


def _leftovers(root: Path) -> list[Path]:
    return [p for p in root.rglob(".tmp-*")]


def test_a_corrupt_volume(cohort_copy, tmp_path):
    victim = next(cohort_copy.rglob("*.npy"))
    victim.write_bytes(b"\x93NUMPY\x01\x00garbage")
    _fails_with(["validate", cohort_copy], victim.name)
    _fails_with(tiny_cli(cohort_copy, tmp_path / "run"), victim.name)
    assert not _leftovers(tmp_path)


def test_a_truncated_dicom_file_skips_its_series_with_the_file_named(tmp_path):
    import pydicom
    from pydicom.data import get_testdata_file
    from pydicom.uid import generate_uid

    series = tmp_path / "series"
    series.mkdir()
    template, uid = pydicom.dcmread(get_testdata_file("693_UNCR.dcm")), generate_uid()
    for s in range(6):
        template.SOPInstanceUID, template.SeriesInstanceUID = generate_uid(), uid
        template.InstanceNumber, template.ImagePositionPatient = s + 1, [0.0, 0.0, -2.5 * s]
        template.save_as(series / f"{s:02d}.dcm")
    victim = series / "05.dcm"
    victim.write_bytes(victim.read_bytes()[:3000])
    args = ["import-dicom", str(series), str(tmp_path / "out"), "--keep-paths"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    # A series with an undecodable slice is not imported with a hole in it: it is skipped,
    # and the report names the file and why.
    report = pd.read_csv(tmp_path / "out" / "import_report.csv")
    assert report["action"].tolist() == ["skipped"]
    reason = report["reason"][0]
    assert "05.dcm" in reason
    assert re.search(r"truncated: its pixel data holds \d+ of 524288 bytes", reason)
    assert "re-copy or re-export the file" in reason
    assert pd.read_csv(tmp_path / "out" / "series.csv").empty
    assert not list((tmp_path / "out").glob("*.npy"))
    assert not _leftovers(tmp_path / "out")


def test_infinite_ehr_values_are_refused_and_nan_imputed(cohort_copy, tmp_path):
    labs = cohort_copy / "LABS.csv"
    table = pd.read_csv(labs)
    column = table.columns[3]
    table[column] = table[column].astype(float)
    table.loc[0, column] = np.inf
    table.to_csv(labs, index=False)
    _fails_with(["train-ehr", cohort_copy, "--out", tmp_path / "inf"], "inf")
    table.loc[0, column] = np.nan
    table.loc[5:9, column] = np.nan
    table.to_csv(labs, index=False)
    result = runner.invoke(app, ["train-ehr", str(cohort_copy), "--out", str(tmp_path / "nan")])
    assert result.exit_code == 0, result.output
    assert np.isfinite(pd.read_csv(tmp_path / "nan" / "predictions" / "ehr.csv")["prob"]).all()


def test_a_missing_table(cohort_copy, tmp_path):
    (cohort_copy / "Vitals.csv").unlink()
    _fails_with(["validate", cohort_copy], "Vitals")
    _fails_with(tiny_cli(cohort_copy, tmp_path / "run"), "Vitals")


def test_predictions_with_an_unknown_idx(small_cohort, tmp_path):
    labels = pd.read_csv(small_cohort / "Labels.csv")
    frame = labels.assign(prob=0.5)[["idx", "prob"]]
    frame.loc[0, "idx"] = 999_999
    path = tmp_path / "mine.csv"
    frame.to_csv(path, index=False)
    args = ["evaluate", "--data", small_cohort, "--predictions", path, "--out", tmp_path / "eval"]
    _fails_with(args, "mine.csv", "999999")
    assert not (tmp_path / "eval" / "metrics.csv").exists()


class _FullDisk:
    """A file whose writes stop with ENOSPC after ``room`` bytes, as on a full disk."""

    def __init__(self, fh, room):
        self.fh, self.room = fh, room

    def write(self, data):
        if len(memoryview(data).cast("B")) > self.room:
            raise OSError(errno.ENOSPC, "No space left on device")
        self.room -= len(memoryview(data).cast("B"))
        return self.fh.write(data)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.fh.close()


def test_a_full_disk_while_caching_then_a_clean_rerun(small_cohort, tmp_path, monkeypatch):
    from radfusion.data import Cohort

    volumes = cohort_volumes(Cohort.load(small_cohort))
    params = PreprocessParams(size=16)

    def full_disk(path, mode):
        return _FullDisk(open(path, mode), room=200)

    monkeypatch.setattr(preprocess, "open", full_disk, raising=False)
    summary = build_cache(volumes, tmp_path / "cache", params)
    assert len(summary.failed) == len(volumes)
    assert "No space left on device" in next(iter(summary.failed.values()))
    folder = summary.folder
    assert not list(folder.glob("*.npy")) and not _leftovers(folder)  # nothing half-written
    monkeypatch.undo()  # space freed
    again = build_cache(volumes, tmp_path / "cache", params)
    assert not again.failed and len(again.built) == len(volumes)


def test_a_changed_config_never_mixes_with_the_old_run(benchmark_run, tmp_path):
    """PENet with another learning rate in the same folder: trained from scratch (not resumed
    from the old checkpoint), and the old checkpoints are gone."""
    data, run, _ = benchmark_run
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    from radfusion.config import load_config

    result = run_benchmark(data, copy, load_config(None, [*TINY, "image.lr=0.05"]))
    assert result.statuses["image"] == "ran" and result.statuses["ehr"] == "skipped"
    assert len(list((copy / "image" / "logs").iterdir())) == 1  # one training, not two
    assert (copy / "image" / "checkpoints" / "last.ckpt").exists()
    assert "lr: 0.05" in (copy / "config.yaml").read_text()


@contextlib.contextmanager
def _held(lock_file: Path):
    """Another process holding ``lock_file`` for the block, as a running benchmark, demo or
    training holds it; SIGKILLed at the end, which frees the lock as a killed run would."""
    code = (
        "import sys, time; from filelock import FileLock; "
        "lock = FileLock(sys.argv[1]); lock.acquire(); print('held', flush=True); time.sleep(600)"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(lock_file)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout.readline().strip() == "held"
        yield
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()


def test_a_second_benchmark_in_a_busy_run_folder_is_refused(run_copy, tmp_path):
    """Two benchmarks in one folder would interleave their stages' files: the second is
    refused in one line and changes nothing; once the first process is gone (killed here,
    so the lock dies with it) the same command runs."""
    data, run = run_copy
    before = {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file()}
    with _held(RunDir(run).lock):
        _fails_with(
            tiny_cli(data, run),
            f"{run}: another radfusion benchmark is running here",
            "or use another --out",
        )
        assert {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file()} == before
    result = runner.invoke(app, tiny_cli(data, run))
    assert result.exit_code == 0, result.output
    assert "unchanged, skipped" in result.output


def test_the_other_ranks_of_a_distributed_run_go_through_their_rank_0s_lock(run_copy, monkeypatch):
    """Lightning relaunches the command for ranks 1..N-1 while rank 0 holds the folder: they
    must join it, not be refused."""
    from lightning.pytorch.utilities import rank_zero_only

    data, run = run_copy
    with _held(RunDir(run).lock):  # rank 0
        monkeypatch.setattr(rank_zero_only, "rank", 1)
        result = runner.invoke(app, tiny_cli(data, run))
        assert result.exit_code == 0, result.output
        monkeypatch.setattr(rank_zero_only, "rank", 0)
        _fails_with(tiny_cli(data, run), "another radfusion benchmark is running")


def test_a_second_demo_is_refused_before_it_spoils_the_first(tmp_path):
    """A demo generating its cohort holds the folder: a second one is refused before it
    can discard the first one's half-written cohort."""
    folder = tmp_path / "data"
    partial = tmp_path / ".data.partial"
    partial.mkdir()
    (partial / "Labels.csv").write_text("idx,label\n")  # the first demo's work so far
    with _held(tmp_path / ".data.lock"):
        with pytest.raises(RadfusionError, match="another radfusion demo is writing it"):
            prepare_demo_data(folder, DEMO_COHORT)
        assert (partial / "Labels.csv").read_text() == "idx,label\n"
        assert not folder.exists()


def test_a_second_training_in_a_busy_folder_is_refused(small_cohort, tmp_path):
    """``train-image`` and ``train-ehr`` run alone hold their --out folder as the benchmark
    does: a second training there is refused before it writes anything."""
    from radfusion.config import TrainConfig
    from radfusion.data import Cohort
    from radfusion.ehr.train import TRAIN_LOCK as EHR_LOCK
    from radfusion.ehr.train import train_ehr
    from radfusion.imaging.trainer import TRAIN_LOCK, train_image

    cohort = Cohort.load(small_cohort)
    out = tmp_path / "run"
    image = partial(train_image, cohort, tmp_path / "cache", out, TrainConfig())
    ehr = partial(train_ehr, cohort, out)
    for lock, train, what in [(TRAIN_LOCK, image, "training"), (EHR_LOCK, ehr, "EHR training")]:
        with _held(out / lock):
            with pytest.raises(RadfusionError, match=f"another {what} is running here"):
                train()
            assert {p.name for p in out.iterdir()} <= {TRAIN_LOCK, EHR_LOCK}  # nothing else
