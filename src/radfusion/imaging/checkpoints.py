"""Checkpoint files: written atomically, read without pickle, verified before they are chosen.

Lightning writes a checkpoint in place; a full disk or a kill half-way leaves a truncated
``best-*.ckpt`` that a later "the best one in the folder" would pick. :class:`AtomicCheckpointIO`
writes each one to a temporary name and renames it, so a checkpoint file is whole or absent.
Files from elsewhere (an older version, a copied run) are still verified: one that does not
load is renamed ``*.unreadable``, named in a warning, and never chosen.
"""

from __future__ import annotations

import io
import logging
import os
import re
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from radfusion.errors import RadfusionError
from radfusion.io import atomic_path, regular_file

__all__ = ["AtomicCheckpointIO", "best_checkpoint", "read_checkpoint", "usable"]

log = logging.getLogger("radfusion")
_METRIC = re.compile(r"val_auroc=([0-9.]+)")
_EPOCH = re.compile(r"epoch=(\d+)")


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer, writing to a temporary name then renaming."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | os.PathLike, storage_options=None
    ) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO takes no storage_options")
        # Serialised in memory first, then written as plain bytes: a full disk is then an
        # OSError naming the file (torch.save would raise a RuntimeError without the errno).
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            fh.write(buffer.getbuffer())


def read_checkpoint(path: str | os.PathLike) -> dict:
    """A checkpoint's contents, read with ``weights_only`` (no pickle runs); a file that is
    missing, special, empty, truncated, foreign or crafted is a one-line error naming it."""
    path = regular_file(path, "checkpoint", "checkpoint")
    if path.stat().st_size == 0:
        raise RadfusionError(f"{path}: the checkpoint is empty (a write that never finished?)")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # EOFError, a bad zip, an unpickling refusal, ...
        text = str(exc).strip()
        why = type(exc).__name__ + (f": {text.splitlines()[0][:160]}" if text else "")
        raise RadfusionError(
            f"{path}: not a readable checkpoint ({why}); it may be truncated or not a "
            "PyTorch file: train again, or use another"
        ) from None
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("state_dict"), dict):
        raise RadfusionError(f"{path}: not a Lightning checkpoint (no state_dict inside)")
    return ckpt


def usable(path: Path) -> bool:
    """Whether ``path`` loads; one that does not is set aside as ``*.unreadable`` with a
    warning naming it."""
    try:
        read_checkpoint(path)
        return True
    except RadfusionError as exc:
        aside = path.with_name(path.name + ".unreadable")
        try:
            path.replace(aside)
            where = f"set aside as {aside.name}"
        except OSError:
            where = "left in place"
        log.warning("%s; %s, never chosen", exc, where)
        return False


def _rank(path: Path) -> tuple[float, int]:
    metric, epoch = _METRIC.search(path.name), _EPOCH.search(path.name)
    return (
        float(metric.group(1).rstrip(".")) if metric else float("-inf"),
        int(epoch.group(1)) if epoch else -1,
    )


def best_checkpoint(folder: Path, pattern: str = "best-*.ckpt") -> Path | None:
    """The loadable checkpoint in ``folder`` with the highest validation AUROC in its name
    (then the latest epoch): by value, not by file name (``epoch=10`` sorts before ``epoch=9``)."""
    for path in sorted(folder.glob(pattern), key=_rank, reverse=True):
        if usable(path):
            return path
    return None
