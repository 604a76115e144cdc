"""Study-level inference: a model rebuilt from its checkpoint alone, and every window of every
study scored, the study's probability aggregated over its windows."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

from radfusion.allocator import retain_freed_memory
from radfusion.config import TrainConfig
from radfusion.data.findings import suggest
from radfusion.devices import cpu_has_bf16
from radfusion.errors import RadfusionError
from radfusion.imaging.checkpoints import read_checkpoint
from radfusion.imaging.datamodule import loader_options
from radfusion.imaging.module import (
    aggregate,
    memory_format,
    window_probs,
    window_probs_and_features,
)
from radfusion.imaging.preprocess import PreprocessParams
from radfusion.imaging.registry import create_model
from radfusion.imaging.windows import EvalWindows

__all__ = [
    "Checkpoint",
    "StudyEmbeddings",
    "load_checkpoint",
    "open_checkpoint",
    "predict_and_embed",
    "predict_studies",
    "scoring_precision",
]


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
    known = set(TrainConfig.model_fields)
    unknown = sorted(set(hp["config"]) - known)
    if unknown:
        raise RadfusionError(
            f"{path}: the stored config has unknown key(s) {unknown[:3]}"
            f"{suggest(unknown[0], known)}; it was written by another version, or edited"
        )
    try:
        config = TrainConfig(**hp["config"])
        model = create_model(config.model, **config.model_args)
    except (TypeError, ValueError, RadfusionError) as exc:
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


def scoring_precision(config: TrainConfig, device: torch.device) -> torch.dtype | None:
    """The autocast dtype that ``config.eval_precision`` asks for on ``device`` (None: float32)."""
    if config.eval_precision == "bf16":
        return torch.bfloat16
    if config.eval_precision == "auto":
        native = torch.cuda.is_bf16_supported() if device.type == "cuda" else cpu_has_bf16()
        return torch.bfloat16 if native else None
    return None


@dataclass
class StudyEmbeddings:
    """Each study's embedding: its windows' pooled features, max then mean over the windows
    (rows in ``idx`` order; columns ``max0..``, ``mean0..``)."""

    idx: np.ndarray
    values: np.ndarray
    columns: list[str]

    def write(self, path: str | os.PathLike) -> Path:
        """As ``embeddings/<model>.parquet`` (:func:`radfusion.predictions.write_embeddings`)."""
        from radfusion.predictions import write_embeddings

        return write_embeddings(self.idx, self.values, path, columns=self.columns)


def _pooled(per_features: dict[int, list[np.ndarray]], ids) -> StudyEmbeddings:
    rows = []
    for i in ids:
        windows = np.stack(per_features[int(i)])
        rows.append(np.concatenate([windows.max(axis=0), windows.mean(axis=0)]))
    values = np.stack(rows).astype(np.float32)
    width = values.shape[1] // 2  # the features' width: max-pooled, then mean-pooled
    columns = [f"max{k}" for k in range(width)] + [f"mean{k}" for k in range(width)]
    return StudyEmbeddings(np.asarray([int(i) for i in ids]), values, columns)


def predict_studies(
    model,
    cache_dir,
    studies: pd.DataFrame,
    config: TrainConfig,
    batch_size: int | None = None,
    *,
    source: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
) -> pd.DataFrame:
    """Every window of every study, on ``device``; study probability = aggregate over windows;
    the best window's slice range is returned too. Windows stream from the memory-mapped cache
    (no study is ever held whole as float32); to a GPU they travel as int16 and are normalised
    there. A non-finite probability is an error naming the model and its checkpoint ``source``.
    """
    scores, _ = _score(model, cache_dir, studies, config, batch_size, source, device, False)
    return scores


def predict_and_embed(
    model,
    cache_dir,
    studies: pd.DataFrame,
    config: TrainConfig,
    batch_size: int | None = None,
    *,
    source: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
) -> tuple[pd.DataFrame, StudyEmbeddings]:
    """:func:`predict_studies`, and in the same pass each study's embedding (its windows'
    ``forward_features``, max- and mean-pooled), for the fusions that reuse it."""
    return _score(model, cache_dir, studies, config, batch_size, source, device, True)


@torch.inference_mode()
def _score(model, cache_dir, studies, config, batch_size, source, device, embed):
    device = torch.device(device)
    gpu = device.type == "cuda"
    data = EvalWindows(
        cache_dir,
        studies,
        window=config.window,
        crop=config.crop,
        stride=config.eval_stride,
        normalized=not gpu,
    )
    loader = DataLoader(
        data, batch_size=batch_size or config.eval_batch_size, **loader_options(config, gpu)
    )
    dtype = scoring_precision(config, device)
    model = model.eval().to(device, memory_format=memory_format(model))
    per: dict[int, list[tuple[float, int]]] = {}
    per_features: dict[int, list[np.ndarray]] = {}
    if not gpu:
        retain_freed_memory()  # 1.3x for a 3-D CNN on a CPU (radfusion.allocator)
    for x, idx, start in loader:
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            x = x.to(device, non_blocking=True)
            if embed:
                probs, features = window_probs_and_features(model, x)
                for i, f in zip(idx.tolist(), features, strict=True):
                    per_features.setdefault(int(i), []).append(f)
            else:
                probs = window_probs(model, x)
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
    scores = pd.DataFrame(rows, columns=["idx", "prob", "best_start", "best_end"])
    return scores, (_pooled(per_features, studies.index) if embed else None)
