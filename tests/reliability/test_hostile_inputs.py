"""Hostile and unlucky inputs, each through the command line a user types.

Every case ends in one short line naming the file and the fix, with exit status 2 and no
traceback (or, where the issue asks for one, a warning), and with nothing lost, half-written
or executed.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from pydicom.data import get_testdata_file
from typer.testing import CliRunner

from radfusion.cli import app
from radfusion.config import ImageSection, TrainConfig
from radfusion.data import Cohort, validate_cohort
from radfusion.errors import RadfusionError
from radfusion.imaging import inference
from radfusion.imaging import module as train_module
from radfusion.imaging.module import TrainingDiverged
from radfusion.imaging.trainer import train_image
from radfusion.pipeline.predict import run_checkpoint
from radfusion.rundir import RunDir

runner = CliRunner()
DICOMDIR_TESTS = Path(get_testdata_file("DICOMDIR")).parent


def _fails(args, *fragments) -> str:
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    message = " ".join(result.output.split())
    for fragment in fragments:
        assert fragment in message, message
    return message


def _row(data, tmp_path, split="test"):
    cohort = Cohort.load(data)
    idx = int(cohort.split(split).index[0])
    row = tmp_path / "row.csv"
    cohort.features().loc[[idx]].to_csv(row, index=False)
    return cohort, idx, row


# --- 2. no silent wrong answers ----------------------------------------------------------


def _poison(checkpoint: Path) -> None:
    ckpt = torch.load(checkpoint, weights_only=True)
    for key, value in ckpt["state_dict"].items():
        if value.is_floating_point():
            ckpt["state_dict"][key] = torch.full_like(value, float("nan"))
    torch.save(ckpt, checkpoint)


def test_nan_weights_are_refused_by_predict_and_predict_image(run_copy, tmp_path):
    data, run = run_copy
    checkpoint = run_checkpoint(run, "image")
    _poison(checkpoint)
    cohort, idx, row = _row(data, tmp_path)
    volume = cohort.studies.loc[idx, "volume_path"]
    _fails(
        ["predict", "--run", run, "--volume", volume, "--ehr", row],
        checkpoint.name,
        "NaN or infinity",
    )
    out = tmp_path / "scores.csv"
    args = ["predict-image", checkpoint, data, "--cache", run / "cache", "--out", out]
    _fails(args, checkpoint.name, "NaN or infinity")
    assert not out.exists()


def test_a_non_finite_probability_is_an_error_naming_the_model(cached, tmp_path):
    cohort, folder = cached
    model = train_module.create_model("penet_tiny")
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(float("nan"))
    config = TrainConfig(model="penet_tiny", crop=16)
    with pytest.raises(RadfusionError, match=r"penet_tiny \(x\.ckpt\): a non-finite"):
        inference.predict_studies(model, folder, cohort.split("val"), config, source="x.ckpt")


def test_training_that_diverges_stops_in_one_line_and_keeps_the_good_epochs(
    cached, tmp_path, monkeypatch
):
    cohort, folder = cached
    real, calls = train_module.focal_loss, []

    def diverging(logits, targets, gamma=2.0):  # 2 batches an epoch: NaN from epoch 1 on
        calls.append(1)
        loss = real(logits, targets, gamma)
        return loss * float("nan") if len(calls) > 2 else loss

    monkeypatch.setattr(train_module, "focal_loss", diverging)
    config = TrainConfig(
        model="penet_tiny", max_epochs=3, windows_per_epoch=8, batch_size=4, crop=16
    )
    quiet = {"enable_progress_bar": False, "logger": False}
    with pytest.raises(TrainingDiverged, match=r"diverged at epoch 1, batch 0 \(loss nan\)"):
        train_image(cohort, folder, tmp_path / "run", config, trainer_args=quiet)
    kept = sorted(p.name for p in (tmp_path / "run" / "checkpoints").glob("*.ckpt"))
    assert "epoch-epoch=0.ckpt" in kept and "last.ckpt" in kept
    weights = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    assert all(v.isfinite().all() for v in weights["state_dict"].values() if v.is_floating_point())


# --- 3. confined writes ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ("ehr", "would overwrite the input ehr.csv"),
        ("image", "would overwrite the input image.csv"),
        ("slicenet", "the benchmark's own slicenet model"),
        ("../../x", "no folder"),
        ("/tmp/abs", "no folder"),
        ("a/b", "no folder"),
        ("..", "no folder"),
    ],
)
def test_fuse_name_is_a_plain_new_name(run_copy, name, fragment):
    _, run = run_copy
    pred = run / "predictions"
    before = {p.name: p.read_bytes() for p in pred.glob("*.csv")}
    mean = ["--set", "fusion.designs=[mean]"]
    _fails(["fuse", pred, "--models", "image,ehr", "--name", name, *mean], fragment)
    assert {p.name: p.read_bytes() for p in pred.glob("*.csv")} == before
    assert not (run.parent / "x.csv").exists() and not Path("/tmp/abs.csv").exists()


# --- 4. regular files only ---------------------------------------------------------------


def test_a_predictions_symlink_to_dev_zero_is_refused(small_cohort, tmp_path):
    link = tmp_path / "zero.csv"
    link.symlink_to("/dev/zero")
    args = ["evaluate", "--data", small_cohort, "--predictions", link, "--out", tmp_path / "e"]
    _fails(args, "zero.csv", "is a device, not a regular file")


def test_a_fifo_is_refused_not_waited_on(run_copy, cohort_copy, tmp_path):
    _, run = run_copy
    fifo = tmp_path / "3.npy"
    os.mkfifo(fifo)
    _fails(["predict", "--run", run, "--volume", fifo], "3.npy", "not a regular file")
    victim = next(cohort_copy.rglob("3.npy"))
    victim.unlink()
    os.mkfifo(victim)
    _fails(["validate", cohort_copy], "3.npy", "not a regular file")


# --- 5. no PHI in outputs ----------------------------------------------------------------


def test_import_outputs_carry_no_patient_folder_names(tmp_path):
    src = tmp_path / "export"
    shutil.copytree(DICOMDIR_TESTS / "98892001", src / "Doe^Archibald_19710123" / "98892001")
    shutil.copytree(DICOMDIR_TESTS / "77654033", src / "dicomdirtests" / "77654033")
    result = runner.invoke(app, ["import-dicom", str(src), str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert int(result.output.split("imported ")[1].split()[0]) >= 1
    report = pd.read_csv(tmp_path / "out" / "import_report.csv").fillna("")
    assert len(report) > 0  # the MR series and the 77654033 files are reported, by hash
    for path in (tmp_path / "out").glob("*.csv"):
        text = path.read_text()
        for secret in ("Doe", "Archibald", "19710123", "77654033", "98892001", str(src)):
            assert secret not in text, (path.name, secret)
    assert all(len(part) == 8 for p in report["path"] for part in Path(p).with_suffix("").parts)


def test_keep_paths_writes_them_and_warns(tmp_path):
    src = tmp_path / "export"
    shutil.copytree(DICOMDIR_TESTS / "77654033", src / "77654033")
    result = runner.invoke(app, ["import-dicom", str(src), str(tmp_path / "out"), "--keep-paths"])
    assert result.exit_code == 0, result.output
    assert "keep these outputs private" in " ".join(result.output.split())
    assert "77654033" in (tmp_path / "out" / "import_report.csv").read_text()


# --- 6. checkpoints ----------------------------------------------------------------------


def test_a_truncated_best_checkpoint_is_set_aside_never_chosen(run_copy):
    _, run = run_copy
    (run / "stages" / "image.json").unlink()  # no record: the folder is searched
    folder = run / "image" / "checkpoints"
    good = next(folder.glob("best-*.ckpt"))
    bad = folder / "best-epoch=99-val_auroc=1.0000.ckpt"
    bad.write_bytes(good.read_bytes()[:1000])  # what a full disk leaves
    assert run_checkpoint(run, "image") == good
    assert not bad.exists() and (folder / (bad.name + ".unreadable")).exists()


def test_a_truncated_last_checkpoint_resumes_from_the_epoch_before(cached, tmp_path):
    cohort, folder = cached
    quiet = {"enable_progress_bar": False, "logger": False}
    config = TrainConfig(model="penet_tiny", max_epochs=1, windows_per_epoch=8, crop=16)
    train_image(cohort, folder, tmp_path, config, trainer_args=quiet)
    checkpoints = tmp_path / "checkpoints"
    last = checkpoints / "last.ckpt"
    last.write_bytes(last.read_bytes()[:2000])  # a kill or a full disk half-way
    import lightning as L

    ran = []

    class Epochs(L.Callback):
        def on_train_epoch_start(self, trainer, module):
            ran.append(trainer.current_epoch)

    config.max_epochs = 2
    train_image(cohort, folder, tmp_path, config, trainer_args={**quiet, "callbacks": [Epochs()]})
    assert (checkpoints / "last.ckpt.unreadable").exists()
    assert ran == [1]  # resumed from epoch 0's checkpoint: epoch 0 was not redone


@pytest.mark.parametrize(
    ("damage", "fragment"),
    [
        ("empty", "the checkpoint is empty"),
        ("truncated", "not a readable checkpoint"),
        ("random", "not a readable checkpoint"),
        ("malicious", "not a readable checkpoint"),
        ("shape", "weights do not fit penet_tiny"),
        ("architecture", "weights do not fit penet_small"),
        ("unknown_key", "unknown key(s) ['max_epoch']"),
    ],
)
def test_a_damaged_checkpoint_is_named_in_one_line(run_copy, tmp_path, damage, fragment):
    data, run = run_copy
    good = run_checkpoint(run, "image")
    ckpt = tmp_path / "model.ckpt"
    if damage == "empty":
        ckpt.write_bytes(b"")
    elif damage == "truncated":
        ckpt.write_bytes(good.read_bytes()[:4096])
    elif damage == "random":
        ckpt.write_bytes(np.random.default_rng(0).bytes(50_000))
    elif damage == "malicious":

        class Boom:
            def __reduce__(self):
                return (os.system, (f"touch {tmp_path / 'witness'}",))

        torch.save({"state_dict": {}, "boom": Boom()}, ckpt)
    else:
        state = torch.load(good, weights_only=True)
        config = state["hyper_parameters"]["config"]
        if damage == "shape":
            key = next(k for k, v in state["state_dict"].items() if v.ndim == 5)
            state["state_dict"][key] = torch.zeros(1, 1, 1, 1, 1)
        elif damage == "architecture":
            config["model"] = "penet_small"
        else:
            config["max_epoch"] = config.pop("max_epochs")
        torch.save(state, ckpt)
    args = ["predict-image", ckpt, data, "--cache", run / "cache", "--out", tmp_path / "p.csv"]
    _fails(args, "model.ckpt", fragment)
    assert not (tmp_path / "witness").exists()
    assert not (tmp_path / "p.csv").exists()


# --- 7. one boundary for environmental errors --------------------------------------------


@pytest.mark.parametrize(
    ("code", "fix"),
    [
        (errno.ENOSPC, "free some space"),
        (errno.EROFS, "read-only"),
        (errno.EACCES, "permissions"),
    ],
)
def test_a_failed_write_is_one_line_and_leaves_the_inputs(run_copy, monkeypatch, code, fix):
    _, run = run_copy
    pred = run / "predictions"
    before = {p.name: p.read_bytes() for p in pred.glob("*.csv")}

    def refuse(self, path, *a, **k):
        raise OSError(code, os.strerror(code), str(path))

    monkeypatch.setattr(pd.DataFrame, "to_csv", refuse)
    args = ["fuse", pred, "--models", "image,ehr", "--name", "fusion_x"]
    message = _fails([*args, "--set", "fusion.designs=[mean]"], fix)
    assert os.strerror(code) in message
    assert {p.name: p.read_bytes() for p in pred.glob("*.csv")} == before
    assert not list(pred.glob(".tmp-*"))


def test_a_full_disk_while_writing_a_checkpoint_leaves_no_partial_file(
    cached, tmp_path, monkeypatch
):
    import builtins

    from radfusion.imaging import checkpoints

    cohort, folder = cached
    real_open = builtins.open

    class Full:
        def __init__(self, fh):
            self.fh = fh

        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device", self.fh.name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.fh.close()

    def full_open(path, mode="r", *a, **k):
        fh = real_open(path, mode, *a, **k)
        return Full(fh) if "w" in mode else fh

    monkeypatch.setattr(checkpoints, "open", full_open, raising=False)
    config = TrainConfig(model="penet_tiny", max_epochs=1, windows_per_epoch=8, crop=16)
    quiet = {"enable_progress_bar": False, "logger": False}
    with pytest.raises(OSError, match="No space left"):
        train_image(cohort, folder, tmp_path / "run", config, trainer_args=quiet)
    left = list((tmp_path / "run" / "checkpoints").iterdir())
    assert left == [], left  # no truncated best-*.ckpt, no temporary file


# --- 8. input edge cases -----------------------------------------------------------------


@pytest.mark.parametrize("bad", ["inf", "1e30", "2.7", "-3", "nan"])
def test_labels_ids_must_be_finite_whole_numbers(cohort_copy, tmp_path, bad):
    labels = cohort_copy / "Labels.csv"
    text = labels.read_text().splitlines()
    first = text[1].split(",")
    first[0] = bad
    text[1] = ",".join(first)
    labels.write_text("\n".join(text) + "\n")
    _fails(["validate", cohort_copy], "Labels.csv", "whole non-negative numbers", "line(s) 2")
    _fails(["train-ehr", cohort_copy, "--out", tmp_path / "r"], "whole non-negative")
    assert not (tmp_path / "r").exists()
    preds = tmp_path / "p"
    preds.mkdir()
    pd.DataFrame({"idx": [1, 2], "prob": [0.1, 0.2], "split": "test"}).to_csv(
        preds / "a.csv", index=False
    )
    shutil.copy(preds / "a.csv", preds / "b.csv")
    args = ["evaluate", "--data", cohort_copy, "--predictions", preds, "--out", tmp_path / "e"]
    _fails(args, "Labels.csv", "whole non-negative")
    _fails(["fuse", preds, "--models", "a,b", "--data", cohort_copy], "whole non-negative")
    assert sorted(p.name for p in preds.iterdir()) == ["a.csv", "b.csv"]


def test_an_ehr_idx_that_is_not_whole_is_refused(cohort_copy):
    table = pd.read_csv(cohort_copy / "LABS.csv")
    table["idx"] = table["idx"].astype(float)
    table.loc[0, "idx"] = table.loc[0, "idx"] + 0.7
    table.to_csv(cohort_copy / "LABS.csv", index=False)
    _fails(["validate", cohort_copy], "LABS.csv", "whole non-negative numbers")


def test_patient_ids_differing_by_whitespace_are_one_patient(cohort_copy):
    labels = pd.read_csv(cohort_copy / "Labels.csv")
    train = labels.index[labels["split"] == "train"][0]
    test = labels.index[labels["split"] == "test"][0]
    labels["patient_id"] = labels["patient_id"].astype(str)
    labels.loc[train, "patient_id"] = "P10067"
    labels.loc[test, "patient_id"] = "P10067 "
    labels.to_csv(cohort_copy / "Labels.csv", index=False)
    _fails(["validate", cohort_copy], "P10067", "more than one split")


def test_csvs_with_a_bom_are_read_and_utf16_is_named(cohort_copy, run_copy, tmp_path):
    labels = cohort_copy / "Labels.csv"
    labels.write_bytes(b"\xef\xbb\xbf" + labels.read_bytes())
    assert validate_cohort(cohort_copy).ok
    data, run = run_copy
    cohort, idx, row = _row(data, tmp_path)
    row.write_bytes(row.read_text().encode("utf-16"))
    volume = cohort.studies.loc[idx, "volume_path"]
    _fails(
        ["predict", "--run", run, "--volume", volume, "--ehr", row],
        "row.csv",
        "not UTF-8 (it looks like UTF-16); re-save it as UTF-8",
    )


def test_a_huge_field_is_cut_in_the_message(cohort_copy):
    labels = pd.read_csv(cohort_copy / "Labels.csv")
    labels["split"] = labels["split"].astype(object)
    labels.loc[0, "split"] = "x" * 1_000_000
    labels.to_csv(cohort_copy / "Labels.csv", index=False)
    message = _fails(["validate", cohort_copy], "chars)")
    assert len(message) < 2000


def test_missing_demographics_and_feature_columns_are_warned(cohort_copy):
    demo = pd.read_csv(cohort_copy / "Demographics.csv")
    demo.loc[:2, ["Female", "Male"]] = 0
    demo.loc[3, "White"] = np.nan
    demo.to_csv(cohort_copy / "Demographics.csv", index=False)
    labs = pd.read_csv(cohort_copy / "LABS.csv")
    dropped = next(c for c in labs.columns if c.endswith(":Value"))
    labs.drop(columns=[dropped]).to_csv(cohort_copy / "LABS.csv", index=False)
    report = validate_cohort(cohort_copy)
    assert report.ok
    text = " ".join(report.warnings)
    assert "3 stud(ies) with neither Female nor Male set" in text
    assert "gender group 'Unknown'" in text
    assert "1 stud(ies) with no White value" in text and "race group 'Others'" in text
    assert "1 feature column(s) of the release missing" in text and dropped in text


def test_a_contradicting_split_column_is_warned(small_cohort, tmp_path):
    labels = pd.read_csv(small_cohort / "Labels.csv")
    frame = labels.assign(prob=0.5)[["idx", "prob", "split"]]
    frame.loc[frame["split"] == "test", "split"] = "train"
    path = tmp_path / "mine.csv"
    frame.to_csv(path, index=False)
    args = ["evaluate", "--data", small_cohort, "--predictions", path, "--out", tmp_path / "e"]
    args += ["--set", "evaluation.n_boot=100"]
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    assert "split column contradicts Labels.csv" in " ".join(result.output.split())


def _npy(path: Path, header: str) -> None:
    raw = header.encode("latin1")
    raw += b" " * (63 - (10 + len(raw)) % 64) + b"\n"
    path.write_bytes(b"\x93NUMPY\x01\x00" + len(raw).to_bytes(2, "little") + raw)


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ("empty", "the file is empty"),
        ("zero_slices", "no voxels"),
        ("overflow", "truncated"),
        ("bool", "has dtype bool"),
        ("flat", "must be 3-D"),
        ("garbage", "not a readable .npy file"),
    ],
)
def test_a_bad_volume_is_named_by_validate_and_predict(
    cohort_copy, run_copy, tmp_path, content, fragment
):
    victim = next(cohort_copy.rglob("3.npy"))
    if content == "empty":
        victim.write_bytes(b"")
    elif content == "zero_slices":
        np.save(victim, np.zeros((0, 16, 16), np.int16))
    elif content == "overflow":
        n = 2**40  # 2**120 voxels: the product overflows a 64-bit integer
        _npy(victim, f"{{'descr': '<i2', 'fortran_order': False, 'shape': ({n}, {n}, {n}), }}")
    elif content == "bool":
        np.save(victim, np.zeros((30, 16, 16), bool))
    elif content == "flat":
        np.save(victim, np.zeros((16, 16), np.int16))
    else:
        victim.write_bytes(b"not a volume at all" * 10)
    message = _fails(["validate", cohort_copy, "--deep"], "3.npy", fragment)
    assert "allow_pickle" not in message
    _, run = run_copy
    message = _fails(["predict", "--run", run, "--volume", victim], "3.npy", fragment)
    assert "allow_pickle" not in message and "Aborted" not in message


# --- 9. leftovers --------------------------------------------------------------------------


def test_a_synth_stopped_half_way_can_be_overwritten(tmp_path, monkeypatch):
    from radfusion.synthetic import writer

    out = tmp_path / "cohort"
    args = ["synth", str(out), "--studies", "60", "--size", "8", "--slices", "24:26"]

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", str(out / "Labels.csv"))

    with monkeypatch.context() as m:
        m.setattr(writer, "write_csv", full)
        result = runner.invoke(app, [*args, "--workers", "1"])
    assert result.exit_code == 2 and "free some space" in " ".join(result.output.split())
    _fails([*args, "--workers", "1"], "stopped half-way", "--overwrite")
    result = runner.invoke(app, [*args, "--workers", "1", "--overwrite"])
    assert result.exit_code == 0, result.output
    assert validate_cohort(out).ok


def test_a_failed_start_does_not_block_the_corrected_rerun(cached, tmp_path):
    cohort, folder = cached
    quiet = {"enable_progress_bar": False, "logger": False}
    small = dict(model="penet_tiny", max_epochs=1, windows_per_epoch=8, crop=16)
    bad = ImageSection(**small, accelerator="cpu", devices="1", pretrained=str(tmp_path / "x"))
    with pytest.raises(RadfusionError):
        train_image(cohort, folder, tmp_path, bad, trainer_args=quiet)
    assert (tmp_path / "train_config.json").exists()
    good = TrainConfig(model="penet_tiny", max_epochs=1, windows_per_epoch=8, crop=16, lr=1e-3)
    train_image(cohort, folder, tmp_path, good, trainer_args=quiet)
    assert json.loads((tmp_path / "train_config.json").read_text())["lr"] == 1e-3


def test_a_benchmark_start_that_failed_does_not_claim_its_folder(tmp_path):
    from radfusion.pipeline.benchmark import _claim
    from radfusion.pipeline.stages import StageBook

    run = tmp_path / "run"
    run.mkdir()
    run = RunDir(run)
    _claim(run, tmp_path / "wrong")  # then the cohort was refused: no stage finished
    _claim(run, tmp_path / "right")
    StageBook(run.root).finish("validate", "fp", 0.1)
    with pytest.raises(RadfusionError, match="holds a benchmark of"):
        _claim(run, tmp_path / "other")


WORKER_PARENT = textwrap.dedent(
    """
    import os, sys, time
    from concurrent.futures import ProcessPoolExecutor
    from joblib import Parallel, delayed
    from radfusion.workers import die_with_parent, loky_args

    def pid(_):
        return os.getpid()

    if __name__ == "__main__":
        with ProcessPoolExecutor(2, initializer=die_with_parent) as pool:
            pids = set(pool.map(pid, range(4)))
            loky = set(Parallel(n_jobs=2, **loky_args())(delayed(pid)(i) for i in range(4)))
            print(" ".join(map(str, pids | loky)), flush=True)
            time.sleep(120)
    """
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_workers_die_with_a_killed_parent(tmp_path):
    script = tmp_path / "parent.py"
    script.write_text(WORKER_PARENT)
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    workers = [int(p) for p in parent.stdout.readline().split()]
    assert len(workers) >= 2
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 10
    alive = workers
    while alive and time.monotonic() < deadline:
        alive = [p for p in workers if _alive(p)]
        time.sleep(0.1)
    assert not alive, f"workers {alive} outlived their parent"


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state != "Z"
