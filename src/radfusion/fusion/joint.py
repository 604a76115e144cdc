"""Joint fusion: the image encoder and an EHR MLP trained end to end, the loss reaching both.

Two variants, as in the earlier CT+EHR study:

* ``all``: the window's image features and the EHR MLP's features into one linear head;
* ``heads``: an image head and an EHR head, their two logits combined by a learned linear mix.

Both train on PENet's windows and window labels (a window is positive where it holds enough
annotated slices), each window carrying its study's standardised EHR row; a study's
probability is the windows' aggregate (the max, as PENet's). The encoder starts from the run's
trained PENet checkpoint: the EHR side starts at zero, so training begins at PENet's own
scores and the EHR enters as the loss pulls it in. Each checkpoint holds its recipe, the EHR
columns' standardisation, and the weights (plain data; read with ``weights_only``).
"""

from __future__ import annotations

import logging
import math
import warnings
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from radfusion.config import TrainConfig
from radfusion.devices import on_gpu
from radfusion.errors import RadfusionError
from radfusion.imaging.checkpoints import AtomicCheckpointIO, read_checkpoint, usable
from radfusion.imaging.datamodule import loader_options, training_windows
from radfusion.imaging.module import aggregate, focal_loss, model_input
from radfusion.imaging.registry import create_model
from radfusion.imaging.windows import EvalWindows

__all__ = ["JOINT_VARIANTS", "JointModule", "score_joint", "train_joint"]

JOINT_VARIANTS = ("all", "heads")
CONSTANT_SCALE = 1e12  # the sd given to an EHR column constant on the train split
log = logging.getLogger("radfusion")


class JointModule(L.LightningModule):
    """An imaging model's encoder and an EHR MLP, fused by ``variant``."""

    def __init__(self, config: dict, variant: str, ehr_width: int, hidden: int = 64, lr=3e-4):
        super().__init__()
        if variant not in JOINT_VARIANTS:
            raise RadfusionError(f"unknown joint variant {variant!r}; known: {JOINT_VARIANTS}")
        self.save_hyperparameters()
        self.cfg = TrainConfig(**config)
        self.image = create_model(self.cfg.model, **self.cfg.model_args)
        self.ehr = nn.Sequential(
            nn.Linear(ehr_width, hidden), nn.ReLU(), nn.Dropout(0.2), nn.Linear(hidden, hidden)
        )
        self.register_buffer("ehr_mean", torch.zeros(ehr_width))
        self.register_buffer("ehr_scale", torch.ones(ehr_width))
        width = self.image.num_features
        if variant == "all":
            self.head = nn.Linear(width + hidden, 1)
        else:
            self.ehr_head = nn.Linear(hidden, 1)
            self.mix = nn.Linear(2, 1)
        self.rows: torch.Tensor | None = None  # the cohort's standardised EHR rows, by position
        self.position: dict[int, int] = {}
        self.val_labels: dict[int, int] = {}
        self._val: dict[int, list[float]] = {}

    def start_from(self, image: nn.Module) -> None:
        """The encoder's weights from a trained image model; the EHR side silent at first."""
        self.image.load_state_dict(image.state_dict())
        head = image.head
        with torch.no_grad():
            if self.hparams.variant == "all":
                width = self.image.num_features
                self.head.weight.zero_()
                self.head.weight[:, :width] = head.weight
                self.head.bias.copy_(head.bias)
            else:
                self.ehr_head.weight.zero_()
                self.ehr_head.bias.zero_()
                self.mix.weight.fill_(1.0)
                self.mix.bias.zero_()

    def set_ehr(self, matrix: np.ndarray, idx, train: np.ndarray) -> None:
        """The cohort's EHR rows (``idx`` order), standardised by the train rows' mean and sd."""
        x = np.asarray(matrix, dtype=np.float64)
        with warnings.catch_warnings():  # a column empty on train: mean 0, scale 1
            warnings.simplefilter("ignore", RuntimeWarning)
            mean = np.nan_to_num(np.nanmean(x[train], axis=0), nan=0.0)
            scale = np.nan_to_num(np.nanstd(x[train], axis=0), nan=1.0)
        # A column constant on train carries nothing the MLP could have learnt: its scale is
        # made so large that another cohort's values in it (a code train never saw) weigh
        # nothing, instead of being multiplied a millionfold by a near-zero sd.
        scale = np.where(scale > 1e-6, scale, CONSTANT_SCALE)
        self.ehr_mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        self.ehr_scale.copy_(torch.as_tensor(scale, dtype=torch.float32))
        # A missing value (an empty cell) is the train mean's: 0 once standardised.
        x = np.where(np.isnan(x), self.ehr_mean.numpy()[None, :], x)
        self.rows = torch.as_tensor(x, dtype=torch.float32)
        self.position = {int(i): k for k, i in enumerate(idx)}

    def _ehr_rows(self, idx: torch.Tensor) -> torch.Tensor:
        rows = self.rows[[self.position[int(i)] for i in idx.tolist()]].to(self.device)
        return (rows - self.ehr_mean) / self.ehr_scale

    def forward(self, x: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        features = self.image.forward_features(model_input(x, self.image))
        h = F.relu(self.ehr(e))
        if self.hparams.variant == "all":
            return self.head(torch.cat([features, h], dim=1)).squeeze(1)
        logits = torch.stack(
            [self.image.forward_head(features).squeeze(1), self.ehr_head(h).squeeze(1)], dim=1
        )
        return self.mix(logits).squeeze(1)

    def training_step(self, batch, batch_idx):
        torch.manual_seed(hash((self.cfg.seed, self.current_epoch, batch_idx)) % 2**63)
        x, y, idx = batch
        logits = self(x, self._ehr_rows(idx))
        if self.cfg.loss == "bce":
            loss = F.binary_cross_entropy_with_logits(logits, y.float())
        else:
            loss = focal_loss(logits, y.float(), self.cfg.focal_gamma)
        if not torch.isfinite(loss):
            raise RadfusionError(
                f"joint fusion diverged at epoch {self.current_epoch} (loss {loss.item()}); "
                "lower fusion.joint_lr"
            )
        self.log("train_loss", loss, on_step=True, on_epoch=True)
        return loss

    def on_validation_epoch_start(self):
        self._val = {}

    def validation_step(self, batch, batch_idx):
        x, idx, _ = batch
        prob = torch.sigmoid(self(x, self._ehr_rows(idx))).float().cpu().numpy()
        for i, p in zip(idx.tolist(), prob, strict=True):
            self._val.setdefault(int(i), []).append(float(p))

    def on_validation_epoch_end(self):
        from sklearn.metrics import roc_auc_score

        ids = sorted(self._val)
        y = np.array([self.val_labels[i] for i in ids])
        p = np.array([aggregate(np.array(self._val[i]), self.cfg.aggregate) for i in ids])
        self.log("val_auroc", float(roc_auc_score(y, p)) if len(set(y)) == 2 else 0.5)

    def on_train_epoch_start(self):
        self.trainer.train_dataloader.dataset.set_epoch(self.current_epoch)

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=1e-4)
        total = max(self.trainer.estimated_stepping_batches, 1)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda step: 0.5 * (1 + math.cos(math.pi * min(step / total, 1.0)))
        )
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


class _StudyWindows(torch.utils.data.Dataset):
    """Training windows that also name their study (for its EHR row)."""

    def __init__(self, windows):
        self.windows = windows

    def set_epoch(self, epoch: int) -> None:
        self.windows.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, k):
        x, label = self.windows[k]
        rng = np.random.default_rng([self.windows.seed, self.windows.epoch, k])
        idx, _ = self.windows.sample(k, rng)  # the draw __getitem__ made, made again
        return x, label, idx


def train_joint(
    cohort,
    cache_dir: Path,
    out: Path,
    image_checkpoint: Path,
    ehr_matrix: np.ndarray,
    *,
    variant: str,
    epochs: int,
    lr: float,
    hidden: int,
    seed: int,
    trainer_args: dict | None = None,
) -> Path:
    """Train one joint variant into ``out`` (resuming from ``out/last.ckpt``); return the
    checkpoint of the epoch with the best validation AUROC."""
    from radfusion.imaging.inference import open_checkpoint

    image = open_checkpoint(image_checkpoint)
    config = image.config.model_copy(update={"seed": seed})
    args = {"accelerator": "cpu", "enable_progress_bar": False, **(trainer_args or {})}
    gpu = on_gpu(args["accelerator"])
    L.seed_everything(seed, workers=True, verbose=False)  # the EHR MLP's first weights too
    module = JointModule(config.model_dump(), variant, ehr_matrix.shape[1], hidden, lr)
    module.start_from(image.model)
    train = (cohort.studies["split"] == "train").to_numpy()
    module.set_ehr(ehr_matrix, cohort.studies.index, train)
    module.val_labels = cohort.split("val")["label"].astype(int).to_dict()
    data = _StudyWindows(training_windows(cohort, cache_dir, config, normalized=not gpu))
    loader = DataLoader(data, batch_size=config.batch_size, **loader_options(config, gpu))
    val = EvalWindows(
        cache_dir,
        cohort.split("val"),
        window=config.window,
        crop=config.crop,
        stride=config.eval_stride,
        normalized=not gpu,
    )
    val_loader = DataLoader(val, batch_size=config.batch_size, **loader_options(config, gpu))
    # The epoch that scores the studies: the best validation AUROC (the EHR MLP overfits the
    # train split's few hundred EHR rows within a few epochs); the last, to resume from.
    best = L.pytorch.callbacks.ModelCheckpoint(
        dirpath=out, filename="best-{epoch}-{val_auroc:.4f}", monitor="val_auroc", mode="max"
    )
    checkpoint = L.pytorch.callbacks.ModelCheckpoint(
        dirpath=out, filename="joint-{epoch}", save_top_k=1, save_last=True, every_n_epochs=1
    )
    callbacks = args.pop("callbacks", [])
    trainer = L.Trainer(
        default_root_dir=out,
        max_epochs=epochs,
        callbacks=[best, checkpoint, *callbacks],
        plugins=[AtomicCheckpointIO()],
        logger=L.pytorch.loggers.CSVLogger(out, name="logs"),
        num_sanity_val_steps=0,
        enable_model_summary=False,
        deterministic=not gpu,
        **{"devices": 1, **{k: v for k, v in args.items() if k not in ("strategy", "num_nodes")}},
    )
    last = out / "last.ckpt"
    resume = last if last.exists() and usable(last) else None
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*LeafSpec.*", category=FutureWarning)
        trainer.fit(module, loader, val_loader, ckpt_path=str(resume) if resume else None)
    chosen = best.best_model_path or _best_in(out)
    return Path(chosen) if chosen else last


def _best_in(folder: Path) -> str | None:
    """A resumed run's best checkpoint (the callback of a finished run knows none)."""
    from radfusion.imaging.checkpoints import best_checkpoint

    found = best_checkpoint(folder)
    return str(found) if found is not None else None


def load_joint(path: Path) -> JointModule:
    """A joint checkpoint rebuilt from its own hyper-parameters and weights (no pickle)."""
    ckpt = read_checkpoint(path)
    hp = ckpt.get("hyper_parameters") or {}
    try:
        module = JointModule(**hp)
        module.load_state_dict(ckpt["state_dict"])
    except (TypeError, KeyError, RuntimeError, RadfusionError) as exc:
        detail = str(exc).strip().splitlines()[-1][:160] if str(exc).strip() else type(exc)
        raise RadfusionError(
            f"{path}: not a radfusion joint-fusion checkpoint ({detail})"
        ) from None
    return module.eval()


@torch.inference_mode()
def score_joint(
    path: Path, cache_dir: Path, studies: pd.DataFrame, ehr_matrix: np.ndarray, device="cpu"
) -> pd.Series:
    """Every window of every study through the joint model at ``path``; a study's probability
    is its windows' aggregate (the recipe's, PENet's max)."""
    module = load_joint(path)
    mean = module.ehr_mean.numpy()[None, :]  # the training standardisation, not this cohort's
    x = np.asarray(ehr_matrix, dtype=np.float64)
    module.rows = torch.as_tensor(np.where(np.isnan(x), mean, x), dtype=torch.float32)
    module.position = {int(i): k for k, i in enumerate(studies.index)}
    device = torch.device(device)
    module = module.to(device)
    cfg = module.cfg
    data = EvalWindows(
        cache_dir,
        studies,
        window=cfg.window,
        crop=cfg.crop,
        stride=cfg.eval_stride,
        normalized=device.type != "cuda",
    )
    loader = DataLoader(data, batch_size=cfg.eval_batch_size, **loader_options(cfg, False))
    per: dict[int, list[float]] = {}
    for x, idx, _ in loader:
        prob = torch.sigmoid(module(x.to(device), module._ehr_rows(idx))).float().cpu().numpy()
        for i, p in zip(idx.tolist(), prob, strict=True):
            per.setdefault(int(i), []).append(float(p))
    values = [aggregate(np.array(per[int(i)]), cfg.aggregate) for i in studies.index]
    return pd.Series(values, index=studies.index, dtype=float)
