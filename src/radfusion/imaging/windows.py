"""Window datasets: 24-slice windows from the volume cache, as PENet sees them.

* :func:`normalize`: the paper's CTPA window (centre 400, width 1000: HU clipped to
  [-100, 900]), scaled to [0, 1], minus the training mean 0.15897.
* :class:`TrainWindows`: with probability ``abnormal_prob`` a positive study is drawn and the
  window centred on its annotated emboli (jittered); otherwise a random study and window. A
  window is positive when it holds at least ``min_abnormal_slices`` (4) annotated slices;
  positives without annotations take the study's label. As many random windows as abnormal
  ones are placed at the relative height of an annotated slice (of any positive study), so
  that a window's position in the scan does not give its label away: without that, a small
  network learns "windows at the level of the hila are positive" and nothing about emboli.
  Augmentation: horizontal flip, rotation within +-15 degrees (filling -1000 HU), random
  crop, slice jitter.
* :class:`EvalWindows`: every window of every study (non-overlapping by default), studies
  shorter than a window padded with air (-1000 HU), centre crop.

Randomness comes from a generator seeded by (seed, epoch, item), never the global one, so a
run is reproducible whatever the number of ``DataLoader`` workers; volumes are memory-mapped
per access (no file handle is shared between workers).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from radfusion.errors import RadfusionError
from radfusion.imaging.preprocess import AIR_HU

__all__ = ["EvalWindows", "TrainWindows", "normalize", "normalize_tensor", "window_starts"]

WINDOW_CENTER, WINDOW_WIDTH = 400.0, 1000.0
PIXEL_MEAN = 0.15897


def normalize(
    hu: np.ndarray,
    center: float = WINDOW_CENTER,
    width: float = WINDOW_WIDTH,
    mean: float = PIXEL_MEAN,
) -> np.ndarray:
    """HU -> the network's input: clip to the window, scale to [0, 1], subtract ``mean``."""
    lo = center - width / 2
    hu = np.asarray(hu)
    if np.issubdtype(hu.dtype, np.integer):  # clip in int16, then one fused float pass
        clipped = np.clip(hu, math.ceil(lo), math.floor(lo + width))
    else:
        clipped = np.clip(hu.astype(np.float32), lo, lo + width)
    out = np.multiply(clipped, np.float32(1 / width), dtype=np.float32)
    out += np.float32(-lo / width - mean)
    return out


def normalize_tensor(
    hu: torch.Tensor,
    center: float = WINDOW_CENTER,
    width: float = WINDOW_WIDTH,
    mean: float = PIXEL_MEAN,
) -> torch.Tensor:
    """:func:`normalize` for a tensor of HU (e.g. an int16 batch already on the GPU)."""
    lo = center - width / 2
    return hu.float().clamp(lo, lo + width).sub_(lo + mean * width).div_(width)


def window_starts(n_slices: int, window: int = 24, stride: int | None = None) -> list[int]:
    """First slice of every evaluation window; the last window ends at the last slice."""
    stride = stride or window
    if n_slices <= window:
        return [0]
    starts = list(range(0, n_slices - window + 1, stride))
    if starts[-1] + window < n_slices:
        starts.append(n_slices - window)
    return starts


def _read(vol: np.ndarray, start: int, window: int, rows: slice, cols: slice) -> np.ndarray:
    """Slices [start, start + window) of a crop, in HU, padded with air beyond the ends."""
    lo, hi = max(start, 0), min(start + window, vol.shape[0])
    if lo == start and hi == start + window:
        return vol[lo:hi, rows, cols]  # a view: normalising copies it once
    crop = vol[lo:hi, rows, cols]
    out = np.full((window, *crop.shape[1:]), AIR_HU, dtype=np.int16)
    if hi > lo:
        out[lo - start : hi - start] = crop
    return out


def _center(n: int, size: int) -> int:
    return max((n - size) // 2, 0)


class _CacheDataset(Dataset):
    def __init__(self, cache_dir, studies: pd.DataFrame, window: int, crop: int):
        self.cache = Path(cache_dir)
        missing = [int(i) for i in studies.index if not (self.cache / f"{i}.json").exists()]
        if missing:
            raise RadfusionError(
                f"{self.cache}: {len(missing)} stud(ies) not in the cache (idx {missing[:5]}); "
                "run radfusion preprocess first"
            )
        self.studies = studies
        self.window, self.crop = window, crop
        self._maps: dict[int, np.ndarray] = {}
        self._pid = os.getpid()
        self.shapes = {
            int(i): tuple(np.load(self.cache / f"{i}.npy", mmap_mode="r").shape)
            for i in studies.index
        }
        side = min(s[1] for s in self.shapes.values())
        if crop > side:
            raise RadfusionError(f"crop {crop} is larger than the cached slices ({side} px)")

    def volume(self, idx: int) -> np.ndarray:
        """The cached volume, memory-mapped once per process (a forked worker maps its own)."""
        if os.getpid() != self._pid:
            self._maps, self._pid = {}, os.getpid()
        if idx not in self._maps:
            self._maps[idx] = np.load(self.cache / f"{idx}.npy", mmap_mode="r", allow_pickle=False)
        return self._maps[idx]

    def __getstate__(self):  # workers started by spawn get no maps, only paths
        state = self.__dict__.copy()
        state["_maps"] = {}
        return state


class EvalWindows(_CacheDataset):
    """Every window of every study: items are ``(window, idx, start)``."""

    def __init__(
        self,
        cache_dir,
        studies: pd.DataFrame,
        *,
        window: int = 24,
        stride: int | None = None,
        crop: int = 192,
        normalized: bool = True,
    ):
        super().__init__(cache_dir, studies, window, crop)
        # normalized=False yields int16 HU (half the bytes, no float pass here): normalise on
        # the device with normalize_tensor, the fast path for a GPU.
        self.normalized = normalized
        self.items = [
            (int(i), s)
            for i in studies.index
            for s in window_starts(self.shapes[int(i)][0], window, stride)
        ]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, k):
        idx, start = self.items[k]
        _, h, w = self.shapes[idx]
        top, left = _center(h, self.crop), _center(w, self.crop)
        block = _read(
            self.volume(idx),
            start,
            self.window,
            slice(top, top + self.crop),
            slice(left, left + self.crop),
        )
        if not self.normalized:
            return torch.from_numpy(np.array(block)[None]), idx, start
        return torch.from_numpy(normalize(block)[None]), idx, start


class TrainWindows(_CacheDataset):
    """Randomly sampled, augmented training windows: items are ``(window, label)``.

    ``studies`` needs ``label``; ``annotations`` has ``idx`` and ``slice`` (0-based).
    ``length`` is the number of windows in an epoch; call :meth:`set_epoch` between epochs.
    """

    def __init__(
        self,
        cache_dir,
        studies: pd.DataFrame,
        annotations: pd.DataFrame,
        *,
        length: int,
        window: int = 24,
        crop: int = 192,
        abnormal_prob: float = 0.3,
        min_abnormal_slices: int = 4,
        augment: bool = True,
        max_rotation: float = 15.0,
        slice_jitter: int = 2,
        matched_positions: bool = True,
        seed: int = 0,
        normalized: bool = True,
    ):
        super().__init__(cache_dir, studies, window, crop)
        self.normalized = normalized  # False: int16 HU (rounded), normalised on the device
        self.length, self.abnormal_prob = length, abnormal_prob
        self.min_abnormal_slices, self.augment = min_abnormal_slices, augment
        self.max_rotation, self.slice_jitter, self.seed = max_rotation, slice_jitter, seed
        self.epoch = 0
        # The share of random windows placed like abnormal ones: as many as abnormal draws.
        self.matched = min(abnormal_prob / (1 - abnormal_prob), 1.0) if matched_positions else 0.0
        ann = annotations[annotations["idx"].isin(studies.index)]
        self.annotated = {int(i): np.sort(g["slice"].to_numpy()) for i, g in ann.groupby("idx")}
        self.ids = np.array([int(i) for i in studies.index])
        self.abnormal = np.array([i for i in self.ids if i in self.annotated], dtype=int)
        self.labels = studies["label"].astype(int).to_dict()

    def __len__(self) -> int:
        return self.length

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def sample(self, k: int, rng: np.random.Generator) -> tuple[int, int]:
        """Choose (idx, start) for item ``k``."""
        if len(self.abnormal) and rng.random() < self.abnormal_prob:
            idx = int(rng.choice(self.abnormal))
            centre = int(rng.choice(self.annotated[idx]))
            start = (
                centre
                - self.window // 2
                + int(rng.integers(-self.window // 4, self.window // 4 + 1))
            )
        else:
            idx = int(rng.choice(self.ids))
            n = self.shapes[idx][0]
            if self.matched and len(self.abnormal) and rng.random() < self.matched:
                # At the relative height of an annotated slice of some positive study:
                # abnormal windows sit where emboli do, and so must windows of any label.
                other = int(rng.choice(self.abnormal))
                height = rng.choice(self.annotated[other]) / max(self.shapes[other][0], 1)
                start = round(height * n) - self.window // 2
            else:
                start = int(rng.integers(0, max(n - self.window, 0) + 1))
        if self.augment and self.slice_jitter:
            start += int(rng.integers(-self.slice_jitter, self.slice_jitter + 1))
        n = self.shapes[idx][0]
        start = min(max(start, 0), max(n - self.window, 0))
        return idx, start

    def label(self, idx: int, start: int) -> float:
        if idx in self.annotated:
            slices = self.annotated[idx]
            inside = np.sum((slices >= start) & (slices < start + self.window))
            return float(inside >= self.min_abnormal_slices)
        return float(self.labels[idx])

    def __getitem__(self, k):
        rng = np.random.default_rng([self.seed, self.epoch, k])
        idx, start = self.sample(k, rng)
        block = _read(self.volume(idx), start, self.window, slice(None), slice(None))
        _, h, w = block.shape
        if self.augment:
            top, left = (
                int(rng.integers(0, h - self.crop + 1)),
                int(rng.integers(0, w - self.crop + 1)),
            )
        else:
            top, left = _center(h, self.crop), _center(w, self.crop)
        x = torch.from_numpy(block.astype(np.float32))
        if self.augment:
            if rng.random() < 0.5:
                x = torch.flip(x, dims=(2,))
            angle = float(rng.uniform(-self.max_rotation, self.max_rotation))
            x = _rotate(x, angle)
        x = x[:, top : top + self.crop, left : left + self.crop].numpy()
        label = torch.tensor(self.label(idx, start))
        if not self.normalized:
            hu = np.clip(np.rint(x), -32768, 32767).astype(np.int16)
            return torch.from_numpy(hu[None]), label
        return torch.from_numpy(normalize(x)[None]), label


def _rotate(x: torch.Tensor, degrees: float) -> torch.Tensor:
    """Rotate every slice of a (slices, H, W) HU block in-plane, filling with air."""
    import torch.nn.functional as F

    if not degrees:
        return x
    theta = math.radians(degrees)
    c, s = math.cos(theta), math.sin(theta)
    matrix = torch.tensor([[[c, -s, 0.0], [s, c, 0.0]]], dtype=torch.float32)
    grid = F.affine_grid(matrix, [1, *x.shape], align_corners=False)
    # grid_sample pads with 0: shift so that 0 is air, rotate, shift back.
    out = F.grid_sample(
        (x - AIR_HU)[None], grid, mode="bilinear", padding_mode="zeros", align_corners=False
    )[0]
    return out + AIR_HU
