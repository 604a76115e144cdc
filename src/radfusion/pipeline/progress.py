"""Training progress for a front end: one step per epoch, a resumed run starting part-way."""

from __future__ import annotations

import lightning as L

from radfusion.pipeline.stages import StageReporter

__all__ = ["EpochProgress"]


class EpochProgress(L.Callback):
    def __init__(self, reporter: StageReporter):
        self.reporter = reporter

    def on_fit_start(self, trainer, pl_module):
        self.reporter.total(trainer.max_epochs)
        for _ in range(trainer.current_epoch):
            self.reporter.advance()

    def on_train_epoch_end(self, trainer, pl_module):
        self.reporter.advance()
