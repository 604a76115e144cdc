"""SliceNet: the 2.5-D slice model, its training through PENet's module, and its inference."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import roc_auc_score

from radfusion.config import TrainConfig
from radfusion.errors import RadfusionError
from radfusion.imaging.inference import open_checkpoint
from radfusion.imaging.registry import create_model
from radfusion.imaging.trainer import train_image
from radfusion.imaging.windows import normalize

warnings.filterwarnings("ignore", module="lightning")


def test_it_is_registered_and_refuses_unknown_arguments_and_wrong_windows():
    model = create_model("slicenet", slices=3, width=4)
    assert model(torch.zeros(2, 1, 3, 16, 16)).shape == (2, 1)
    with pytest.raises(RadfusionError, match=r"unknown SliceNet argument\(s\) \['depth'\]"):
        create_model("slicenet", depth=3)
    with pytest.raises(RadfusionError, match=r"expects windows shaped \[batch, 1, 3, H, W\]"):
        model(torch.zeros(2, 1, 24, 16, 16))


def test_the_head_starts_at_its_prior():
    model = create_model("slicenet", width=4, prior=0.2).eval()
    with torch.no_grad():
        model.head.weight.zero_()
        p = torch.sigmoid(model(torch.randn(3, 1, 5, 16, 16)))
    torch.testing.assert_close(p, torch.full((3, 1), 0.2))


def _dots(n, rng):
    """Windows of noise, half with a 3x3 bright dot in one slice at a random place."""
    x = rng.normal(0, 1, (n, 1, 5, 24, 24)).astype(np.float32)
    y = np.arange(n) % 2
    for k in np.flatnonzero(y):
        s, r, c = rng.integers(0, 5), rng.integers(0, 21), rng.integers(0, 21)
        x[k, 0, s, r : r + 3, c : c + 3] += 2.0
    return torch.from_numpy(x), torch.from_numpy(y.astype(np.float32))


def test_it_finds_a_small_finding_anywhere_in_the_window():
    """A 3x3 dot (2 SD above the noise) in one of 5 slices of 24x24 noise, anywhere: found
    after 400 steps (AUROC 0.94 on new windows)."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    model = create_model("slicenet", width=8, dropout=0.0)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(400):
        x, y = _dots(32, rng)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x).squeeze(1), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    x, y = _dots(200, rng)
    with torch.no_grad():
        p = model.eval()(x).squeeze(1).numpy()
    assert roc_auc_score(y.numpy(), p) > 0.9


def test_trained_through_penets_module_a_study_scores_its_best_slice_window(cached, tmp_path):
    cohort, cache = cached
    config = TrainConfig(
        model="slicenet",
        model_args={"width": 4},
        window=5,
        eval_stride=1,
        crop=16,
        windows_per_epoch=16,
        batch_size=8,
        max_epochs=2,
        optimizer="adamw",
        lr=1e-3,
        loss="bce",
        min_abnormal_slices=1,
    )
    best, predictions = train_image(
        cohort, cache, tmp_path, config, trainer_args={"enable_progress_bar": False}
    )
    ckpt = open_checkpoint(best)
    assert type(ckpt.model).__name__ == "SliceNet" and ckpt.config.window == 5
    # Independently: every 5-slice window of the study, cut with NumPy, through the model.
    for idx in cohort.studies.index[:3]:
        volume = normalize(np.load(cache / f"{idx}.npy"))
        windows = np.stack([volume[s : s + 5] for s in range(len(volume) - 4)])[:, None]
        with torch.no_grad():
            probs = torch.sigmoid(ckpt.model(torch.from_numpy(windows))).squeeze(1).numpy()
        row = predictions.set_index("idx").loc[idx]
        assert row["prob"] == pytest.approx(probs.max(), abs=1e-5)
        assert row["best_start"] == int(np.argmax(probs))
        assert row["best_end"] == row["best_start"] + 4


def test_the_command_line_trains_it(cached, tmp_path):
    from typer.testing import CliRunner

    from radfusion.cli import app

    cohort, cache = cached
    args = ["train-image", str(cohort.root), "--cache", str(cache.parent), "--out", str(tmp_path)]
    args += ["--section", "slicenet", "--set", "preprocess.size=16"]
    for key in ("max_rotation=0", "crop=16", "max_epochs=1", "windows_per_epoch=8"):
        args += ["--set", f"slicenet.{key}"]
    args += ["--set", "slicenet.accelerator=cpu", "--set", "slicenet.devices=1"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    ckpt = open_checkpoint(next((tmp_path / "slicenet" / "checkpoints").glob("best-*.ckpt")))
    assert type(ckpt.model).__name__ == "SliceNet"
    assert (ckpt.config.window, ckpt.config.eval_stride, ckpt.config.max_rotation) == (5, 1, 0.0)
    predictions = pd.read_csv(tmp_path / "predictions" / "slicenet.csv")
    assert len(predictions) == len(cohort.studies)
    assert (predictions["best_end"] - predictions["best_start"] == 4).all()
