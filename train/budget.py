"""A wall-clock budget for training: save and stop once ``trainer.max_minutes`` have passed."""

from __future__ import annotations

import logging
import time

import lightning as L
import torch

log = logging.getLogger("horse.train")


class TimeBudget(L.Callback):
    def __init__(self, max_minutes: float | None, checkpointer):
        self.max_seconds = None if not max_minutes else float(max_minutes) * 60
        self.checkpointer = checkpointer
        self.start: float | None = None

    def on_train_start(self, trainer, pl_module) -> None:
        self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.max_seconds is None or self.start is None:
            return
        over = torch.tensor([1 if time.perf_counter() - self.start > self.max_seconds else 0])
        if trainer.world_size > 1:
            over = trainer.strategy.reduce(over, reduce_op="max")
        if over.item():
            log.info("time budget of %.1f min reached at step %d: saving and stopping",
                     self.max_seconds / 60, trainer.global_step)
            self.checkpointer.save(trainer, pl_module, trainer.global_step)
            trainer.should_stop = True
