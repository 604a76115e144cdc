"""The LightningDataModule over the volume cache: the train split's sampled, augmented windows
and every window of the validation split's studies."""

from __future__ import annotations

import lightning as L
from torch.utils.data import DataLoader

from radfusion.config import TrainConfig
from radfusion.errors import RadfusionError
from radfusion.imaging.windows import EvalWindows, TrainWindows

__all__ = ["WindowDataModule", "training_windows"]


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


class WindowDataModule(L.LightningDataModule):
    """Train windows of ``cohort``'s train split, validation windows of its val split."""

    def __init__(self, cohort, cache_dir, config: TrainConfig):
        super().__init__()
        for split in ("train", "val"):
            if cohort.split(split).empty:
                raise RadfusionError(
                    f"the {split} split is empty: an imaging model needs train and val studies"
                )
        self.config = config
        self.train = training_windows(cohort, cache_dir, config)
        self.val = EvalWindows(
            cache_dir,
            cohort.split("val"),
            window=config.window,
            crop=config.crop,
            stride=config.eval_stride,
        )
        self.val_labels = cohort.split("val")["label"].astype(int).to_dict()

    def _loader(self, data) -> DataLoader:
        return DataLoader(
            data,
            batch_size=self.config.batch_size,
            shuffle=False,  # TrainWindows draws its own order from (seed, epoch, item)
            num_workers=self.config.num_workers,
            persistent_workers=False,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val)
