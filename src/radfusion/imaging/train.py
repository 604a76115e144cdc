"""Training and study-level inference for PENet, with PyTorch Lightning.

Lightning provides checkpoint/resume, multi-GPU/multi-node DDP, mixed precision, gradient
accumulation, progress bars and CSV logs; this module provides the LightningModule (binary
focal loss, SGD or AdamW with linear warm-up then cosine decay, validation AUROC at study
level), the data module over the volume cache, and inference over every window of a study.

Determinism: data order comes from per-item generators seeded by (seed, epoch, item), and the
global torch generator (stochastic depth) is reseeded at every epoch start from (seed, epoch),
so a run resumed from an epoch checkpoint ends with the same weights as one never stopped.
"""

from __future__ import annotations

import logging
import math
import os
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score
from torch.utils.data import DataLoader

from radfusion.data.findings import suggest
from radfusion.errors import RadfusionError
from radfusion.imaging.checkpoints import (
    AtomicCheckpointIO,
    best_checkpoint,
    read_checkpoint,
    usable,
)
from radfusion.imaging.penet import create_model
from radfusion.imaging.preprocess import PreprocessParams
from radfusion.imaging.windows import EvalWindows, TrainWindows
from radfusion.locks import exclusive

__all__ = [
    "Checkpoint",
    "PENetModule",
    "TrainConfig",
    "TrainingDiverged",
    "focal_loss",
    "load_checkpoint",
    "open_checkpoint",
    "predict_studies",
    "train_image",
    "training_windows",
]


@dataclass
class TrainConfig:
    """The paper's recipe as defaults (SGD 1e-2, momentum 0.9, weight decay 1e-3, focal
    gamma 2, abnormal windows 30%); sizes default to a CPU run."""

    model: str = "penet_tiny"
    model_args: dict = field(default_factory=dict)
    max_epochs: int = 10
    windows_per_epoch: int = 256
    batch_size: int = 4
    eval_batch_size: int = 1  # on CPU, windows one at a time are fastest (cache-resident)
    accumulate: int = 1  # gradient accumulation, to emulate the paper's batch on small memory
    optimizer: str = "sgd"  # sgd (the paper's) or adamw
    lr: float = 1e-2
    momentum: float = 0.9
    weight_decay: float = 1e-3
    warmup_fraction: float = 0.1
    loss: str = "focal"  # focal (the paper's) or bce
    focal_gamma: float = 2.0
    abnormal_prob: float = 0.3
    # A training window is positive when it holds this many annotated slices: the paper's 4
    # slices of 1.25 mm (5 mm of clot). Thick slices (a downsampled demo) need fewer.
    min_abnormal_slices: int = 4
    window: int = 24
    crop: int = 192
    # In-plane rotation of training windows, within +-this many degrees (the paper's 15).
    # Bilinear resampling blurs a structure one or two pixels wide: 0 turns it off.
    max_rotation: float = 15.0
    eval_stride: int | None = None
    aggregate: str = "max"  # study probability: max over windows (the paper's), mean, top3
    # The checkpoint that scores the studies: "best", the epoch with the highest validation
    # AUROC (the paper's), or "last", the final epoch, at the end of the cosine decay. On a
    # validation split of a few dozen studies the AUROC is noise enough to pick an untrained
    # epoch (README, item 10).
    select: str = "best"
    num_workers: int = 0
    seed: int = 0


SELECTIONS = ("best", "last")


class TrainingDiverged(RadfusionError):
    """The training loss became NaN or infinite."""


TRAIN_LOCK = ".train.lock"  # held while a training runs in its folder


def focal_loss(logits: torch.Tensor, targets: torch.Tensor, gamma: float = 2.0) -> torch.Tensor:
    """Binary focal loss (Lin et al.): BCE down-weighted by (1 - p_t) ** gamma, averaged."""
    bce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = torch.exp(-bce)
    return ((1 - p_t) ** gamma * bce).mean()


def aggregate(probs: np.ndarray, how: str) -> float:
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


class PENetModule(L.LightningModule):
    def __init__(self, config: dict, preprocessing: dict | None = None):
        super().__init__()
        self.save_hyperparameters()  # config and preprocessing: plain data, in every checkpoint
        self.cfg = TrainConfig(**config)
        if self.cfg.loss not in ("focal", "bce"):
            raise RadfusionError(f"unknown loss {self.cfg.loss!r}; use focal or bce")
        self.model = create_model(self.cfg.model, **self.cfg.model_args)
        self.memory_format = memory_format(self.model)
        self.model.to(memory_format=self.memory_format)
        self._val: dict[int, list[float]] = {}
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
        logits = self.model(x.to(memory_format=self.memory_format)).squeeze(1)
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
                "with a lower learning rate (--lr)"
            )
        self.log("train_loss", loss, prog_bar=True, on_step=True, on_epoch=True)
        return loss

    def on_validation_epoch_start(self):
        self._val = {}

    def validation_step(self, batch, batch_idx):
        x, idx, _ = batch
        x = x.to(memory_format=self.memory_format)
        probs = torch.sigmoid(self.model(x).squeeze(1)).float().cpu().numpy()
        for i, p in zip(idx.tolist(), probs, strict=True):
            self._val.setdefault(int(i), []).append(float(p))

    def on_validation_epoch_end(self):
        ids = sorted(self._val)
        y = np.array([self.val_labels[i] for i in ids])
        p = np.array([aggregate(np.array(self._val[i]), self.cfg.aggregate) for i in ids])
        auroc = roc_auc_score(y, p) if len(np.unique(y)) == 2 else 0.5
        self.log("val_auroc", float(auroc), prog_bar=True, sync_dist=True)

    def configure_optimizers(self):
        params = self.model.parameters()
        if self.cfg.optimizer == "sgd":
            opt = torch.optim.SGD(
                params,
                lr=self.cfg.lr,
                momentum=self.cfg.momentum,
                weight_decay=self.cfg.weight_decay,
            )
        elif self.cfg.optimizer == "adamw":
            opt = torch.optim.AdamW(params, lr=self.cfg.lr, weight_decay=self.cfg.weight_decay)
        else:
            raise RadfusionError(f"unknown optimizer {self.cfg.optimizer!r}; use sgd or adamw")
        total = max(self.trainer.estimated_stepping_batches, 1)
        warmup = max(int(total * self.cfg.warmup_fraction), 1)

        def schedule(step):
            if step < warmup:
                return (step + 1) / warmup
            return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(total - warmup, 1)))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def _loader(data, cfg: TrainConfig, shuffle=False):
    return DataLoader(
        data,
        batch_size=cfg.batch_size,
        shuffle=shuffle,
        num_workers=cfg.num_workers,
        persistent_workers=False,
    )


def training_windows(cohort, cache_dir, config: TrainConfig) -> TrainWindows:
    """The train split's sampled, augmented windows, as ``config`` describes them."""
    return TrainWindows(
        cache_dir,
        cohort.split("train"),
        cohort.annotations,
        length=config.windows_per_epoch,
        window=config.window,
        crop=config.crop,
        abnormal_prob=config.abnormal_prob,
        min_abnormal_slices=config.min_abnormal_slices,
        max_rotation=config.max_rotation,
        seed=config.seed,
    )


def train_image(
    cohort,
    cache_dir,
    out_dir,
    config: TrainConfig,
    *,
    trainer_args=None,
    preprocessing: dict | None = None,
    pretrained=None,
):
    """Train on the cohort's train split; score every study with the checkpoint
    ``config.select`` names (by default the best validation AUROC); write checkpoints, logs
    and ``predictions/image.csv``. Resumes from ``out_dir/checkpoints/last.ckpt``. Returns
    the chosen checkpoint's path and the predictions. A second training in ``out_dir`` while
    one runs is refused (:mod:`radfusion.locks`)."""
    busy = f"{out_dir}: another training is running here; wait for it, or use another --out"
    with exclusive(Path(out_dir) / TRAIN_LOCK, busy):
        return _train_image(
            cohort,
            cache_dir,
            out_dir,
            config,
            trainer_args=trainer_args,
            preprocessing=preprocessing,
            pretrained=pretrained,
        )


def _train_image(
    cohort, cache_dir, out_dir, config: TrainConfig, *, trainer_args, preprocessing, pretrained
):
    out = Path(out_dir)
    if config.select not in SELECTIONS:
        raise RadfusionError(f"unknown checkpoint selection {config.select!r}; use best or last")
    _claim_run_dir(out, config)
    for split in ("train", "val"):
        if cohort.split(split).empty:
            raise RadfusionError(f"the {split} split is empty: PENet needs train and val studies")
    L.seed_everything(config.seed, workers=True, verbose=False)
    train = training_windows(cohort, cache_dir, config)
    val = EvalWindows(
        cache_dir,
        cohort.split("val"),
        window=config.window,
        crop=config.crop,
        stride=config.eval_stride,
    )
    module = PENetModule(asdict(config), preprocessing)
    module.val_labels = cohort.split("val")["label"].astype(int).to_dict()
    resume = _resume_from(out / "checkpoints")
    if pretrained is not None and resume is None:  # a resume keeps its own weights
        from radfusion.imaging.pretrained import load_pretrained

        report = load_pretrained(module.model, pretrained)
        for line in report.lines():
            logging.getLogger("radfusion").warning("pretrained %s: %s", pretrained, line)
    checkpoints = L.pytorch.callbacks.ModelCheckpoint(
        dirpath=out / "checkpoints",
        filename="best-{epoch}-{val_auroc:.4f}",
        monitor="val_auroc",
        mode="max",
        save_top_k=1,
    )
    # A second checkpoint, written after every epoch whatever the metric, is what a resume
    # starts from (save_last on the monitored one only fires when the best improves).
    latest = L.pytorch.callbacks.ModelCheckpoint(
        dirpath=out / "checkpoints",
        filename="epoch-{epoch}",
        save_top_k=1,
        save_last=True,
        every_n_epochs=1,
    )
    args = {
        "accelerator": "cpu",
        "devices": 1,
        "enable_model_summary": False,
        "logger": L.pytorch.loggers.CSVLogger(out, name="logs"),
        **(trainer_args or {}),
    }
    extra_callbacks = args.pop("callbacks", [])
    plugins = [AtomicCheckpointIO(), *args.pop("plugins", [])]
    trainer = L.Trainer(
        plugins=plugins,
        default_root_dir=out,
        max_epochs=config.max_epochs,
        callbacks=[checkpoints, latest, *extra_callbacks],
        # Some CUDA kernels (3-D max-pool backward among them) have no deterministic version:
        # there, warn instead of refusing to train. CPU runs stay bit-reproducible.
        deterministic=True if args["accelerator"] == "cpu" else "warn",
        accumulate_grad_batches=config.accumulate,
        num_sanity_val_steps=0,
        **args,
    )
    with warnings.catch_warnings():
        # Lightning 2.6 on torch 2.13 warns about its own use of a deprecated pytree name.
        warnings.filterwarnings("ignore", message=".*LeafSpec.*", category=FutureWarning)
        try:
            trainer.fit(
                module,
                _loader(train, config),
                _loader(val, config),
                ckpt_path=str(resume) if resume is not None else None,
            )
        except SystemExit:
            if trainer.interrupted:  # Lightning turns Ctrl-C into exit(1) after its shutdown
                raise KeyboardInterrupt from None
            raise
    # latest's "best" is its only checkpoint: the final epoch's, under a name with its number.
    last = out / "checkpoints" / "last.ckpt"
    chosen = (checkpoints if config.select == "best" else latest).best_model_path or str(last)
    model, _ = load_checkpoint(chosen)
    predictions = predict_studies(model, cache_dir, cohort.studies, config, source=chosen)
    predictions["split"] = cohort.studies.loc[predictions["idx"], "split"].to_numpy()
    from radfusion.io import write_csv

    write_csv(
        predictions[["idx", "prob", "split", "best_start", "best_end"]],
        out / "predictions" / "image.csv",
        float_format="%.8f",
    )
    return chosen, predictions


#: Config fields a rerun may change without making it another run.
RESUMABLE_CHANGES = {"max_epochs", "num_workers", "select"}


def _resume_from(folder: Path) -> Path | None:
    """The checkpoint a rerun resumes from: ``last.ckpt``, or the newest epoch checkpoint when
    it does not load (set aside, with a warning); None to start afresh."""
    last = folder / "last.ckpt"
    if last.exists() and usable(last):
        return last
    return best_checkpoint(folder, "epoch-*.ckpt") if folder.is_dir() else None


def _claim_run_dir(out: Path, config: TrainConfig) -> None:
    """Refuse to mix two runs in one folder: a rerun must have the same config (it may only
    train for more epochs). A folder without checkpoints holds no run yet (a start that
    failed before training): its record is replaced."""
    import json

    from radfusion.io import write_json

    record = out / "train_config.json"
    mine = json.loads(json.dumps(asdict(config)))  # tuples -> lists, as stored
    started = any((out / "checkpoints").glob("*.ckpt"))
    if record.exists() and started:
        theirs = json.loads(record.read_text())
        differ = sorted(
            k
            for k in set(mine) | set(theirs)
            if k not in RESUMABLE_CHANGES and mine.get(k) != theirs.get(k)
        )
        if differ:
            raise RadfusionError(
                f"{out}: holds a run with a different configuration ({', '.join(differ)}); "
                "use a new --out folder, or delete this one to start over"
            )
    write_json(mine, record)


@dataclass
class Checkpoint:
    model: torch.nn.Module
    config: TrainConfig
    preprocessing: PreprocessParams  # how the cache it was trained on was built


def open_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Rebuild a model, its training config and its preprocessing from a checkpoint alone
    (read once, with weights_only: no pickle). A file that is truncated, foreign, of another
    architecture or shape, with an unknown config key, or with non-finite weights is a
    one-line error naming it."""
    path = Path(path)
    ckpt = read_checkpoint(path)
    hp = ckpt.get("hyper_parameters") or {}
    if not isinstance(hp.get("config"), dict):
        raise RadfusionError(f"{path}: not a radfusion PENet checkpoint (no config inside)")
    known = set(TrainConfig.__dataclass_fields__)
    unknown = sorted(set(hp["config"]) - known)
    if unknown:
        raise RadfusionError(
            f"{path}: the stored config has unknown key(s) {unknown[:3]}"
            f"{suggest(unknown[0], known)}; it was written by another version, or edited"
        )
    try:
        config = TrainConfig(**hp["config"])
        model = create_model(config.model, **config.model_args)
    except (TypeError, ValueError) as exc:
        raise RadfusionError(f"{path}: the stored model does not build ({exc})") from None
    state = {k.removeprefix("model."): v for k, v in ckpt["state_dict"].items()}
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shapes that differ
        detail = str(exc).strip().splitlines()[-1].strip()[:160]
        raise RadfusionError(f"{path}: weights do not fit {config.model} ({detail})") from None
    if missing or unexpected:
        raise RadfusionError(
            f"{path}: weights do not fit {config.model} "
            f"(missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    bad = [
        k for k, v in model.state_dict().items() if v.is_floating_point() and not v.isfinite().all()
    ]
    if bad:
        raise RadfusionError(
            f"{path}: {len(bad)} weight tensor(s) hold NaN or infinity (e.g. {bad[0]}); "
            "this checkpoint cannot score a study: use another, or train again"
        )
    fields = set(PreprocessParams.__dataclass_fields__)
    prep = {k: v for k, v in (hp.get("preprocessing") or {}).items() if k in fields}
    return Checkpoint(model.eval(), config, PreprocessParams(**prep))


def load_checkpoint(path: str | os.PathLike):
    """``(model, config)`` from a checkpoint; see :func:`open_checkpoint`."""
    ckpt = open_checkpoint(path)
    return ckpt.model, ckpt.config


@torch.inference_mode()
def predict_studies(
    model,
    cache_dir,
    studies: pd.DataFrame,
    config: TrainConfig,
    batch_size: int | None = None,
    *,
    source: str | os.PathLike | None = None,
) -> pd.DataFrame:
    """Every window of every study; study probability = aggregate over windows; the best
    window's slice range is returned too. A non-finite probability is an error naming the
    model and its checkpoint ``source``."""
    data = EvalWindows(
        cache_dir, studies, window=config.window, crop=config.crop, stride=config.eval_stride
    )
    loader = DataLoader(
        data, batch_size=batch_size or config.eval_batch_size, num_workers=config.num_workers
    )
    per: dict[int, list[tuple[float, int]]] = {}
    fmt = memory_format(model)
    model = model.eval().to(memory_format=fmt)
    for x, idx, start in loader:
        x = x.to(memory_format=fmt)
        probs = torch.sigmoid(model(x).squeeze(1)).float().numpy()
        if not np.isfinite(probs).all():
            where = f" ({source})" if source is not None else ""
            raise RadfusionError(
                f"{config.model}{where}: a non-finite probability for study "
                f"{int(idx[~np.isfinite(probs)][0])}; the model's weights or input are broken, "
                "so no score is written"
            )
        for i, s, p in zip(idx.tolist(), start.tolist(), probs, strict=True):
            per.setdefault(int(i), []).append((float(p), int(s)))
    rows = []
    for i in studies.index:
        values = per[int(i)]
        probs = np.array([p for p, _ in values])
        best = values[int(np.argmax(probs))][1]
        rows.append((int(i), aggregate(probs, config.aggregate), best, best + config.window - 1))
    return pd.DataFrame(rows, columns=["idx", "prob", "best_start", "best_end"])
