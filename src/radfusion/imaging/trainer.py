"""Training an imaging model with Lightning: the trainer factory (checkpoints, logger, devices),
the run folder's claim and resume, and the scoring of every study with the chosen checkpoint.

Lightning provides checkpoint/resume, multi-GPU/multi-node DDP, mixed precision, gradient
accumulation, progress bars and the CSV, TensorBoard and MLflow loggers.
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import lightning as L
import pandas as pd

from radfusion.allocator import retain_freed_memory
from radfusion.config import ImageSection, TrainConfig
from radfusion.devices import is_rank_zero, on_gpu
from radfusion.errors import RadfusionError
from radfusion.imaging.checkpoints import AtomicCheckpointIO, best_checkpoint, usable
from radfusion.imaging.datamodule import WindowDataModule
from radfusion.imaging.inference import load_checkpoint, predict_and_embed
from radfusion.imaging.module import PENetModule
from radfusion.io import write_csv, write_json
from radfusion.locks import exclusive
from radfusion.rundir import ModelDir

__all__ = ["RESUMABLE_CHANGES", "TRAIN_LOCK", "make_logger", "make_trainer", "train_image"]

TRAIN_LOCK = ModelDir(Path()).lock.name  # held while a training runs in its folder
#: Config fields a rerun may change without making it another run.
RESUMABLE_CHANGES = {"max_epochs", "num_workers", "select", "eval_precision"}
#: The optional packages a logger can write with (any one); the extra is named after it.
LOGGER_PACKAGES = {"tensorboard": ("tensorboard", "tensorboardX"), "mlflow": ("mlflow",)}
log = logging.getLogger("radfusion")


def make_logger(kind: str, out: Path):
    """Lightning's own logger of ``kind`` (csv, tensorboard, mlflow), writing under ``out``;
    a missing optional package is one line telling how to install it."""
    if kind == "csv":
        return L.pytorch.loggers.CSVLogger(out, name=ModelDir.logs)
    if kind not in LOGGER_PACKAGES:
        raise RadfusionError(f"unknown logger {kind!r}; use csv, tensorboard or mlflow")
    import importlib.util

    if not any(importlib.util.find_spec(p) for p in LOGGER_PACKAGES[kind]):
        raise RadfusionError(
            f"logger {kind}: the {LOGGER_PACKAGES[kind][0]} package is not installed; "
            f"pip install 'radfusion[{kind}]', or --set image.logger=csv"
        )
    if kind == "tensorboard":
        return L.pytorch.loggers.TensorBoardLogger(out, name=ModelDir.logs)
    # A local file store under the run: nothing leaves the machine.
    return L.pytorch.loggers.MLFlowLogger(
        experiment_name="radfusion", tracking_uri=(out / "mlruns").resolve().as_uri()
    )


def make_trainer(out: Path, config: TrainConfig, logger, trainer_args: dict) -> tuple:
    """The Lightning ``Trainer`` of one training, with its two checkpoint callbacks: the best
    validation AUROC, and the latest epoch (what a resume starts from)."""
    checkpoints = L.pytorch.callbacks.ModelCheckpoint(
        dirpath=ModelDir(out).checkpoints,
        filename="best-{epoch}-{val_auroc:.4f}",
        monitor="val_auroc",
        mode="max",
        save_top_k=1,
    )
    # save_last on the monitored checkpoint only fires when the best improves: a second one,
    # written after every epoch whatever the metric, is what a resume starts from.
    latest = L.pytorch.callbacks.ModelCheckpoint(
        dirpath=ModelDir(out).checkpoints,
        filename="epoch-{epoch}",
        save_top_k=1,
        save_last=True,
        every_n_epochs=1,
    )
    args = {
        "accelerator": "cpu",
        "devices": 1,
        "enable_model_summary": False,
        "logger": logger,
        **trainer_args,
    }
    callbacks = args.pop("callbacks", [])
    plugins = [AtomicCheckpointIO(), *args.pop("plugins", [])]
    gpu = on_gpu(args["accelerator"])
    trainer = L.Trainer(
        plugins=plugins,
        default_root_dir=out,
        max_epochs=config.max_epochs,
        callbacks=[checkpoints, latest, *callbacks],
        # CPU runs are bit-reproducible. On a GPU, cuDNN's autotuner picks the fastest 3-D
        # convolutions, which are not deterministic (nor is 3-D max-pool's backward): a GPU
        # run is reproducible to within their rounding, not bit for bit.
        deterministic=not gpu,
        benchmark=gpu,
        accumulate_grad_batches=config.accumulate,
        num_sanity_val_steps=0,
        **args,
    )
    return trainer, checkpoints, latest


def train_image(
    cohort,
    cache_dir,
    out_dir,
    section: ImageSection | TrainConfig,
    *,
    seed: int = 0,
    predictions: Path | None = None,
    embeddings: Path | None = None,
    preprocessing: dict | None = None,
    trainer_args: dict | None = None,
) -> tuple[Path, pd.DataFrame]:
    """Train on the cohort's train split into ``out_dir`` (checkpoints, logs), score every
    study with the checkpoint ``section.select`` names, and write ``predictions`` (default
    ``out_dir/predictions.csv``) and, given ``embeddings``, each study's pooled features there
    (:class:`radfusion.imaging.inference.StudyEmbeddings`). Rerun, it resumes from
    ``out_dir/checkpoints/last.ckpt``.

    Studies without a volume (``data.without_volume=ehr``) are neither trained on nor scored.

    ``section`` is the config's ``image`` or ``slicenet`` section: its recipe, seeded by its
    own seed or ``seed``, and its devices, logger and pretrained weights; ``trainer_args`` adds
    to Lightning's. Returns the chosen checkpoint and the predictions. A second training in
    ``out_dir`` while one runs is refused (:mod:`radfusion.locks`).

    Under DDP (``strategy: ddp``), every rank trains its share of each epoch's windows and
    the validation AUROC is computed from all ranks' windows; rank 0 alone writes the
    checkpoints, the record and the predictions. The other ranks return ``(None, None)``."""
    out = Path(out_dir)
    cohort = cohort.imaged()  # a study without a volume is scored by the other modalities
    if isinstance(section, ImageSection):
        config = section.train_config(seed)
        args, pretrained, logger = section.trainer_args(), section.pretrained, section.logger
    else:  # a bare recipe: CPU, the CSV logger, no pretrained weights
        config, args, pretrained, logger = section, {}, None, "csv"
    args.update(trainer_args or {})
    if "logger" not in args:
        args["logger"] = make_logger(logger, out)
    target = predictions if predictions is not None else ModelDir(out).predictions
    busy = f"{out}: another training is running here; wait for it, or use another --out"
    with exclusive(ModelDir(out).lock, busy):
        return _train(
            cohort, cache_dir, out, config, args, preprocessing, pretrained, target, embeddings
        )


def _train(cohort, cache_dir, out, config, args, preprocessing, pretrained, target, embeddings):
    leader = is_rank_zero()
    if leader:  # the other ranks of a distributed run write nothing of their own
        _claim_run_dir(out, config)
    gpu = on_gpu(args.get("accelerator", "cpu"))
    if not gpu:
        retain_freed_memory()  # a training step of PENet-50 on a CPU: radfusion.allocator
    data = WindowDataModule(cohort, cache_dir, config, gpu=gpu)
    L.seed_everything(config.seed, workers=True, verbose=False)
    module = PENetModule(config.model_dump(), preprocessing)
    module.val_labels = data.val_labels
    resume = _resume_from(ModelDir(out).checkpoints)
    if pretrained is not None and resume is None:  # a resume keeps its own weights
        from radfusion.imaging.pretrained import load_pretrained

        report = load_pretrained(module.model, pretrained)
        for line in report.lines():
            log.warning("pretrained %s: %s", pretrained, line)
    trainer, best, latest = make_trainer(out, config, args.pop("logger"), args)
    if not leader and trainer.world_size == 1:
        # A rank Lightning started for another training, which this one does not share.
        return None, None
    with warnings.catch_warnings():
        # Lightning 2.6 on torch 2.13 warns about its own use of a deprecated pytree name.
        warnings.filterwarnings("ignore", message=".*LeafSpec.*", category=FutureWarning)
        try:
            trainer.fit(
                module, datamodule=data, ckpt_path=str(resume) if resume is not None else None
            )
        except SystemExit:
            if trainer.interrupted:  # Lightning turns Ctrl-C into exit(1) after its shutdown
                raise KeyboardInterrupt from None
            raise
    if not leader:  # rank 0 alone scores the studies with the chosen checkpoint
        return None, None
    # latest's "best" is its only checkpoint: the final epoch's, under a name with its number.
    last = ModelDir(out).last
    chosen = Path((best if config.select == "best" else latest).best_model_path or last)
    model, _ = load_checkpoint(chosen)
    device = trainer.strategy.root_device if gpu else "cpu"
    scores, embedded = predict_and_embed(
        model, cache_dir, cohort.studies, config, source=chosen, device=device
    )
    if embeddings is not None:
        embedded.write(embeddings)
    scores["split"] = cohort.studies.loc[scores["idx"], "split"].to_numpy()
    columns = ["idx", "prob", "split", "best_start", "best_end"]
    write_csv(scores[columns], target, float_format="%.8f")
    return chosen, scores


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
    record = ModelDir(out).record
    mine = json.loads(json.dumps(config.model_dump()))  # tuples -> lists, as stored
    started = any(ModelDir(out).checkpoints.glob("*.ckpt"))
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
