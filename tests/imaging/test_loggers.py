"""Training logs through Lightning's own loggers, and Lightning's chatter kept off the console."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest

from radfusion.config import ImageSection
from radfusion.errors import RadfusionError
from radfusion.imaging.trainer import train_image

TINY = dict(
    model="penet_tiny",
    max_epochs=1,
    windows_per_epoch=8,
    batch_size=4,
    crop=16,
    accelerator="cpu",
    devices="1",
)


def test_the_tensorboard_logger_writes_event_files(cached, tmp_path):
    cohort, folder = cached
    section = ImageSection(**TINY, logger="tensorboard")
    train_image(cohort, folder, tmp_path, section, trainer_args={"enable_progress_bar": False})
    events = list((tmp_path / "logs").rglob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0
    assert not (tmp_path / "logs" / "version_0" / "metrics.csv").exists()  # not the CSV one


def test_the_mlflow_logger_is_an_extra(cached, tmp_path):
    cohort, folder = cached
    section = ImageSection(**TINY, logger="mlflow")
    if importlib.util.find_spec("mlflow") is None:
        with pytest.raises(RadfusionError, match=r"pip install 'radfusion\[mlflow\]'") as caught:
            train_image(cohort, folder, tmp_path, section)
        assert "\n" not in str(caught.value)
        assert not (tmp_path / "checkpoints").exists()  # refused before training
    else:  # the extra is installed: a local store under the run, nothing sent anywhere
        train_image(cohort, folder, tmp_path, section, trainer_args={"enable_progress_bar": False})
        assert any((tmp_path / "mlruns").rglob("val_auroc"))


def test_lightnings_warnings_go_to_the_run_log_not_the_console(cached, tmp_path):
    """A resumed train-image makes Lightning warn that the checkpoint folder is not empty (and
    that the loaders have few workers): the run's log has it, the console does not."""
    cohort, folder = cached
    run = tmp_path / "run"
    cli = [sys.executable, "-c", "from radfusion.cli import main; main()"]
    sets = ["preprocess.size=16", *(f"image.{k}={v}" for k, v in TINY.items())]
    args = ["train-image", str(cohort.root), "--out", str(run), "--cache", str(folder.parent)]
    args += [arg for item in sets for arg in ("--set", item)]
    first = subprocess.run([*cli, *args], capture_output=True, text=True, check=True)
    again = [*args, "--set", "image.max_epochs=2"]  # more epochs: a resume, not a new run
    second = subprocess.run([*cli, *again], capture_output=True, text=True, check=True)
    log = (run / "benchmark.log").read_text()
    assert "exists and is not empty" in log
    for result in (first, second):
        console = result.stdout + result.stderr
        assert "exists and is not empty" not in console
        assert "Warning" not in console and "GPU available" not in console
        assert "chosen checkpoint" in console
