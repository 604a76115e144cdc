"""The LightningDataModule over the volume cache: the train split's sampled, augmented windows
and every window of the validation split's studies, and the loader settings for a CPU or a GPU.

On a CPU the windows are normalised to float32 where they are read, in the main process (workers
would take the cores the model computes on). Feeding a GPU, windows travel as int16 HU, half
the bytes, from worker processes into pinned memory, and the model normalises them on the device
(:func:`radfusion.imaging.windows.normalize_tensor`).
"""

from __future__ import annotations

import os

import lightning as L
from torch.utils.data import DataLoader

from radfusion.config import TrainConfig
from radfusion.errors import RadfusionError
from radfusion.imaging.windows import EvalWindows, TrainWindows

__all__ = ["WindowDataModule", "loader_options", "training_windows"]

#: Batches each worker keeps ready feeding a GPU. A PENet-50 training step of batch 8 on a
#: current GPU takes about as long as one worker takes to read, augment and crop 8 windows
#: of int16 (benchmarks/penet_gpu.py measures both), so with all but one core as workers and
#: 4 batches each, a slow read of one volume (a cold page cache) never stalls the GPU.
PREFETCH_BATCHES = 4


def loader_options(config: TrainConfig, gpu: bool) -> dict:
    """DataLoader keywords: ``config.num_workers`` (None: 0 on a CPU, all cores but one, at
    most 8, for a GPU), and feeding a GPU pinned memory, persistent workers and
    :data:`PREFETCH_BATCHES` batches ready per worker."""
    workers = config.num_workers
    if workers is None:
        workers = min(max((os.cpu_count() or 1) - 1, 1), 8) if gpu else 0
    options = {"num_workers": workers, "pin_memory": gpu}
    if workers:
        options |= {"persistent_workers": True, "prefetch_factor": PREFETCH_BATCHES}
    return options


def training_windows(cohort, cache_dir, config: TrainConfig, normalized: bool = True):
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
        normalized=normalized,
    )


class WindowDataModule(L.LightningDataModule):
    """Train windows of ``cohort``'s train split, validation windows of its val split; with
    ``gpu``, as int16 from workers into pinned memory (:func:`loader_options`)."""

    def __init__(self, cohort, cache_dir, config: TrainConfig, gpu: bool = False):
        super().__init__()
        for split in ("train", "val"):
            if cohort.split(split).empty:
                raise RadfusionError(
                    f"the {split} split is empty: an imaging model needs train and val studies"
                )
        self.config, self.gpu = config, gpu
        self.train = training_windows(cohort, cache_dir, config, normalized=not gpu)
        self.val = EvalWindows(
            cache_dir,
            cohort.split("val"),
            window=config.window,
            crop=config.crop,
            stride=config.eval_stride,
            normalized=not gpu,
        )
        self.val_labels = cohort.split("val")["label"].astype(int).to_dict()

    def _loader(self, data) -> DataLoader:
        return DataLoader(
            data,
            batch_size=self.config.batch_size,
            shuffle=False,  # TrainWindows draws its own order from (seed, epoch, item)
            **loader_options(self.config, self.gpu),
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val)
