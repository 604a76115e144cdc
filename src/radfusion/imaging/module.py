"""The LightningModule that trains an imaging model on windows: the loss (binary focal, the
paper's, or BCE), SGD or AdamW with linear warm-up then cosine decay, study-level validation
AUROC, and ``predict_step`` for window probabilities.

Determinism: the global torch generator (stochastic depth) is reseeded at every step from
(seed, rank, epoch, batch), so a run resumed from an epoch checkpoint ends with the same weights
as one never stopped.
"""

from __future__ import annotations

import math

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score

from radfusion.config import TrainConfig
from radfusion.errors import RadfusionError
from radfusion.imaging.registry import create_model
from radfusion.imaging.windows import normalize_tensor

__all__ = [
    "PENetModule",
    "TrainingDiverged",
    "aggregate",
    "focal_loss",
    "memory_format",
    "model_input",
    "window_probs",
]


class TrainingDiverged(RadfusionError):
    """The training loss became NaN or infinite."""


def focal_loss(logits: torch.Tensor, targets: torch.Tensor, gamma: float = 2.0) -> torch.Tensor:
    """Binary focal loss (Lin et al.): BCE down-weighted by (1 - p_t) ** gamma, averaged."""
    bce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = torch.exp(-bce)
    return ((1 - p_t) ** gamma * bce).mean()


def aggregate(probs: np.ndarray, how: str) -> float:
    """A study's probability from its windows': max (the paper's), mean, or topK's mean."""
    if how == "max":
        return float(np.max(probs))
    if how == "mean":
        return float(np.mean(probs))
    if how.startswith("top"):
        k = int(how[3:] or 3)
        return float(np.mean(np.sort(probs)[-k:]))
    raise RadfusionError(f"unknown aggregation {how!r}; use max, mean or topK (e.g. top3)")


def memory_format(model: torch.nn.Module) -> torch.memory_format:
    """The layout a model's inputs and weights take: channels_last_3d (1.3-2x faster 3-D
    convolutions on CPU and cuDNN) unless the model names its own."""
    return getattr(model, "memory_format", torch.channels_last_3d)


def model_input(x: torch.Tensor, model: torch.nn.Module) -> torch.Tensor:
    """A batch of windows as the model takes it: int16 HU (as windows travel to a GPU)
    normalised where they now are, in the model's memory format."""
    if not x.is_floating_point():
        x = normalize_tensor(x)
    return x.to(memory_format=memory_format(model))


def window_probs(model: torch.nn.Module, x: torch.Tensor) -> np.ndarray:
    """The model's probability for each window of a batch, as float32."""
    return torch.sigmoid(model(model_input(x, model)).squeeze(1)).float().cpu().numpy()


def window_probs_and_features(model: torch.nn.Module, x: torch.Tensor):
    """Each window's probability and pooled features (``forward_features``, the input of the
    model's ``forward_head``), both as float32 arrays: one forward pass."""
    features = model.forward_features(model_input(x, model))
    logits = model.forward_head(features).squeeze(1)
    return torch.sigmoid(logits).float().cpu().numpy(), features.float().cpu().numpy()


class PENetModule(L.LightningModule):
    """Any registered imaging model (PENet, SliceNet) trained on windows."""

    def __init__(self, config: dict, preprocessing: dict | None = None):
        super().__init__()
        self.save_hyperparameters()  # config and preprocessing: plain data, in every checkpoint
        self.cfg = TrainConfig(**config)
        self.model = create_model(self.cfg.model, **self.cfg.model_args)
        self.memory_format = memory_format(self.model)
        self.model.to(memory_format=self.memory_format)
        self._val: list[tuple[int, int, float]] = []  # (study, window start, probability)
        self.val_labels: dict[int, int] = {}

    def forward(self, x):
        return self.model(x)

    def on_train_epoch_start(self):
        data = self.trainer.train_dataloader.dataset
        if hasattr(data, "set_epoch"):
            data.set_epoch(self.current_epoch)

    def training_step(self, batch, batch_idx):
        # Stochastic depth draws from the global generator: seed it per step (and per DDP
        # rank), so a resumed run - a new process, whatever it consumed on the way - makes
        # the same draws.
        step = (self.cfg.seed, self.global_rank, self.current_epoch, batch_idx)
        torch.manual_seed(hash(step) % 2**63)
        x, y = batch
        logits = self.model(model_input(x, self.model)).squeeze(1)
        if self.cfg.loss == "bce":
            loss = F.binary_cross_entropy_with_logits(logits, y.float())
        else:
            loss = focal_loss(logits, y.float(), self.cfg.focal_gamma)
        if not torch.isfinite(loss):
            # Raised before the step: the weights stay those of the last finite loss, and no
            # checkpoint of a diverged model is ever written.
            raise TrainingDiverged(
                f"training diverged at epoch {self.current_epoch}, batch {batch_idx} (loss "
                f"{loss.item()}); the checkpoints of the epochs before are kept in "
                f"{self.trainer.default_root_dir}/checkpoints; train again in a new --out "
                "with a lower learning rate (--set image.lr=...)"
            )
        self.log("train_loss", loss, prog_bar=True, on_step=True, on_epoch=True)
        return loss

    def predict_step(self, batch, batch_idx):
        """``(study idx, window start, probability)`` for each window of the batch."""
        x, idx, start = batch
        return idx.numpy(), start.numpy(), window_probs(self.model, x)

    def on_validation_epoch_start(self):
        self._val = []

    def validation_step(self, batch, batch_idx):
        x, idx, start = batch
        probs = window_probs(self.model, x)
        for i, s, p in zip(idx.tolist(), start.tolist(), probs, strict=True):
            self._val.append((int(i), int(s), float(p)))

    def _gathered_windows(self) -> dict[tuple[int, int], float]:
        """Every rank's validation windows (under DDP each rank scores a share of them; the
        sampler pads the shares to one length with repeated windows, which the keys merge)."""
        rows = self._val
        if self.trainer.world_size > 1:
            local = torch.tensor(rows, dtype=torch.float64, device=self.device).reshape(-1, 3)
            rows = self.all_gather(local).reshape(-1, 3).cpu().tolist()
        return {(int(i), int(s)): float(p) for i, s, p in rows}

    def on_validation_epoch_end(self):
        per: dict[int, list[float]] = {}
        for (i, _), p in sorted(self._gathered_windows().items()):
            per.setdefault(i, []).append(p)
        ids = sorted(per)
        y = np.array([self.val_labels[i] for i in ids])
        p = np.array([aggregate(np.array(per[i]), self.cfg.aggregate) for i in ids])
        auroc = roc_auc_score(y, p) if len(np.unique(y)) == 2 else 0.5
        # Every rank computed it from every window: the same value, nothing to reduce.
        self.log("val_auroc", float(auroc), prog_bar=True)

    def configure_optimizers(self):
        params = self.model.parameters()
        if self.cfg.optimizer == "sgd":
            opt = torch.optim.SGD(
                params,
                lr=self.cfg.lr,
                momentum=self.cfg.momentum,
                weight_decay=self.cfg.weight_decay,
            )
        else:
            opt = torch.optim.AdamW(params, lr=self.cfg.lr, weight_decay=self.cfg.weight_decay)
        total = max(self.trainer.estimated_stepping_batches, 1)
        warmup = max(int(total * self.cfg.warmup_fraction), 1)

        def schedule(step):
            if step < warmup:
                return (step + 1) / warmup
            return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(total - warmup, 1)))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
