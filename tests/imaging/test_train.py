"""PENet training with Lightning: the loss, learning, checkpoints and an exact resume."""

from __future__ import annotations

import warnings

import lightning as L
import numpy as np
import pytest
import torch
from pydantic import ValidationError

from radfusion.config import TrainConfig
from radfusion.imaging.inference import load_checkpoint, open_checkpoint
from radfusion.imaging.module import focal_loss
from radfusion.imaging.registry import create_model
from radfusion.imaging.trainer import train_image

warnings.filterwarnings("ignore", module="lightning")

QUIET = {"enable_progress_bar": False, "logger": False}


def test_focal_loss_by_hand():
    logits = torch.tensor([2.0, -1.0, 0.5])
    y = torch.tensor([1.0, 0.0, 0.0])
    p = torch.sigmoid(logits)
    p_t = torch.where(y == 1, p, 1 - p)
    expected = (-((1 - p_t) ** 2) * torch.log(p_t)).mean()
    torch.testing.assert_close(focal_loss(logits, y, 2.0), expected)


def test_a_few_steps_reduce_the_loss():
    torch.manual_seed(0)
    model = create_model("penet_tiny", min_survival=1.0)
    x = torch.randn(4, 1, 24, 32, 32)
    y = torch.tensor([1.0, 0.0, 1.0, 0.0])
    x[y == 1] += 0.5  # learnable
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(8):
        loss = focal_loss(model(x).squeeze(1), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


CFG = dict(
    model="penet_tiny",
    windows_per_epoch=8,
    batch_size=4,
    crop=16,
    optimizer="adamw",
    lr=1e-3,
    seed=5,
)


def _weights(path):
    model, _ = load_checkpoint(path)
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_train_writes_checkpoints_and_predictions(cached, tmp_path):
    cohort, folder = cached
    best, predictions = train_image(
        cohort, folder, tmp_path, TrainConfig(max_epochs=1, **CFG), trainer_args=QUIET
    )
    assert sorted(predictions["idx"]) == sorted(cohort.studies.index)
    assert predictions["prob"].between(0, 1).all()
    written = (tmp_path / "predictions.csv").read_text().splitlines()[0]
    assert written.startswith("idx,prob,split")
    model, config = load_checkpoint(best)  # the checkpoint describes itself
    assert config.model == "penet_tiny" and sum(p.numel() for p in model.parameters()) > 0


class _Crash(L.Callback):
    """Dies at the start of epoch ``at``, as a killed run would (last.ckpt is from before)."""

    def __init__(self, at: int):
        self.at = at

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == self.at:
            raise RuntimeError("simulated crash")


#: SliceNet trained through the same module: its dropout draws from the reseeded generator too.
SLICENET = {**CFG, "model": "slicenet", "model_args": {"width": 4}, "window": 5, "eval_stride": 1}


@pytest.mark.parametrize("design", [CFG, SLICENET], ids=["penet", "slicenet"])
def test_resume_gives_the_same_weights_as_an_uninterrupted_run(cached, tmp_path, design):
    cohort, folder = cached
    config = TrainConfig(max_epochs=3, **design)
    train_image(cohort, folder, tmp_path / "straight", config, trainer_args=QUIET)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train_image(
            cohort,
            folder,
            tmp_path / "resumed",
            config,
            trainer_args={**QUIET, "callbacks": [_Crash(at=2)]},
        )
    assert (tmp_path / "resumed" / "checkpoints" / "last.ckpt").exists()
    train_image(cohort, folder, tmp_path / "resumed", config, trainer_args=QUIET)  # resumes
    a = _weights(tmp_path / "straight" / "checkpoints" / "last.ckpt")
    b = _weights(tmp_path / "resumed" / "checkpoints" / "last.ckpt")
    # Equal up to float round-off (at most ~5e-7 here, on weights of order 0.1): after a
    # reload, oneDNN may pick kernels that sum in another order, and three epochs of SGD
    # carry that forward. Same data, same random draws, same schedule.
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=2e-6)
    pa = np.loadtxt(tmp_path / "straight" / "predictions.csv", delimiter=",", skiprows=1, usecols=1)
    pb = np.loadtxt(tmp_path / "resumed" / "predictions.csv", delimiter=",", skiprows=1, usecols=1)
    np.testing.assert_allclose(pa, pb, atol=1e-6)


def test_same_seed_same_run(cached, tmp_path):
    cohort, folder = cached
    config = TrainConfig(max_epochs=1, **CFG)
    train_image(cohort, folder, tmp_path / "a", config, trainer_args=QUIET)
    train_image(cohort, folder, tmp_path / "b", config, trainer_args=QUIET)
    a = _weights(tmp_path / "a" / "checkpoints" / "last.ckpt")
    b = _weights(tmp_path / "b" / "checkpoints" / "last.ckpt")
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)  # bit for bit


def test_cli_train_image_then_predict_image(small_cohort, tmp_path):
    import pandas as pd
    from typer.testing import CliRunner

    from radfusion.cli import app

    runner = CliRunner()
    cache = tmp_path / "cache"
    assert (
        runner.invoke(
            app,
            [
                "preprocess",
                str(small_cohort),
                "--cache",
                str(cache),
                "--set",
                "preprocess.size=16",
                "--set",
                "preprocess.workers=1",
            ],
        ).exit_code
        == 0
    )
    result = runner.invoke(
        app,
        [
            "train-image",
            str(small_cohort),
            "--cache",
            str(cache),
            "--out",
            str(tmp_path / "run"),
            *_sets(
                "preprocess.size=16",
                "image.model=penet_tiny",
                "image.crop=16",
                "image.max_epochs=1",
                "image.windows_per_epoch=8",
                "image.optimizer=adamw",
                "image.lr=1e-3",
                "image.model_args={norm: batch, shortcut: maxpool, prior: 0.5}",
                "image.min_abnormal_slices=1",
                "image.accelerator=cpu",
                "image.devices=1",
            ),
        ],
    )
    assert result.exit_code == 0, result.output
    trained = pd.read_csv(tmp_path / "run" / "predictions" / "image.csv")
    best = next((tmp_path / "run" / "image" / "checkpoints").glob("best-*.ckpt"))
    ckpt = open_checkpoint(best)  # the design options reach the model and the checkpoint
    assert ckpt.config.model_args == {"norm": "batch", "shortcut": "maxpool", "prior": 0.5}
    assert ckpt.config.min_abnormal_slices == 1
    assert any(isinstance(m, torch.nn.BatchNorm3d) for m in ckpt.model.modules())
    result = runner.invoke(
        app,
        [
            "predict-image",
            str(best),
            str(small_cohort),
            "--cache",
            str(cache),
            "--out",
            str(tmp_path / "again.csv"),
        ],
    )
    assert result.exit_code == 0, result.output
    again = pd.read_csv(tmp_path / "again.csv")
    np.testing.assert_allclose(again["prob"], trained["prob"], atol=1e-7)
    assert (again["best_end"] - again["best_start"] == 23).all()

    missing = runner.invoke(
        app,
        [
            "train-image",
            str(small_cohort),
            "--cache",
            str(cache),
            "--out",
            str(tmp_path / "x"),
            "--set",
            "preprocess.size=32",
        ],
    )
    assert missing.exit_code == 2 and "run radfusion preprocess" in missing.output


def _sets(*items: str) -> list[str]:
    return [arg for item in items for arg in ("--set", item)]


def test_a_run_directory_holds_one_run(cached, tmp_path):
    from radfusion.errors import RadfusionError

    cohort, folder = cached
    train_image(cohort, folder, tmp_path, TrainConfig(max_epochs=1, **CFG), trainer_args=QUIET)
    other = TrainConfig(max_epochs=1, **{**CFG, "lr": 0.5})
    with pytest.raises(RadfusionError, match=r"different configuration \(lr\)"):
        train_image(cohort, folder, tmp_path, other, trainer_args=QUIET)


def test_select_names_the_checkpoint_that_scores_the_studies(cached, tmp_path):
    import csv

    from radfusion.imaging.inference import predict_studies

    cohort, folder = cached
    config = TrainConfig(max_epochs=4, select="last", **CFG)
    logged = {"enable_progress_bar": False}  # the CSV log keeps each epoch's validation AUROC
    chosen, predictions = train_image(cohort, folder, tmp_path, config, trainer_args=logged)
    # "last": the final epoch's weights, the same as the resume checkpoint's, score the studies.
    assert chosen.name.endswith("epoch=3.ckpt")
    last = tmp_path / "checkpoints" / "last.ckpt"
    a, b = _weights(chosen), _weights(last)
    assert all(torch.equal(a[k], b[k]) for k in a)
    model, cfg = load_checkpoint(last)
    again = predict_studies(model, folder, cohort.studies, cfg)
    np.testing.assert_allclose(predictions["prob"], again["prob"], atol=1e-6)
    # "best", on the same run (a change that needs no retraining): the logged epoch with the
    # highest validation AUROC.
    with open(tmp_path / "logs" / "version_0" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    aurocs = {int(r["epoch"]): float(r["val_auroc"]) for r in rows if r.get("val_auroc")}
    assert sorted(aurocs) == [0, 1, 2, 3]
    best_epoch = max(aurocs, key=lambda e: (aurocs[e], -e))  # ties: the first epoch stays best
    chosen, _ = train_image(
        cohort, folder, tmp_path, TrainConfig(max_epochs=4, **CFG), trainer_args=QUIET
    )
    assert f"best-epoch={best_epoch}-" in chosen.name
    with pytest.raises(ValidationError, match="'best' or 'last'"):
        TrainConfig(select="median", **CFG)


def test_loss_choice_is_checked():
    from radfusion.imaging.module import PENetModule

    PENetModule(TrainConfig(loss="bce", model="penet_tiny").model_dump())
    with pytest.raises(ValidationError, match="'focal' or 'bce'"):
        TrainConfig(loss="mse")
    with pytest.raises(ValidationError, match="'focal' or 'bce'"):
        PENetModule({**TrainConfig().model_dump(), "loss": "mse"})


@pytest.mark.parametrize("threshold", [1, 4])
def test_the_positive_window_threshold_reaches_the_sampler(cached, threshold):
    """``min_abnormal_slices`` decides a window's label: counted here from the annotations."""
    from radfusion.imaging.datamodule import training_windows

    cohort, folder = cached
    config = TrainConfig(crop=12, windows_per_epoch=300, min_abnormal_slices=threshold)
    data = training_windows(cohort, folder, config)
    ann = cohort.annotations
    labels_by_count = {}
    for k in range(300):
        idx, start = data.sample(k, np.random.default_rng([config.seed, 0, k]))
        slices = ann.loc[ann["idx"] == idx, "slice"].to_numpy()
        if len(slices):
            inside = int(((slices >= start) & (slices < start + config.window)).sum())
            labels_by_count.setdefault(inside, set()).add(data.label(idx, start))
    assert all(labels == {float(n >= threshold)} for n, labels in labels_by_count.items())
    assert any(0 < n < 4 for n in labels_by_count)  # the thresholds disagree on some windows
