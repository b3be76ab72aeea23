"""--report_to tensorboard: a run's losses, learning rate, temperature and evaluations as TensorBoard scalars."""

from __future__ import annotations

import dataclasses
import math
import os

from ..core.schema import (
    HISTORY_EVAL,
    HISTORY_TRAIN,
    TENSORBOARD_DIRNAME,
    TRAIN_HARD_LOSS,
    TRAIN_LEARNING_RATE,
    TRAIN_LOSS,
    TRAIN_SOFT_LOSS,
    TRAIN_TEACHER_TEXT_LOSS,
)
from .training import EpochCounters, LossSums

REPORT_TO_CHOICES = ("none", "tensorboard")
TEMPERATURE_TAG = "temperature"


def tag(section: str, name: str) -> str:
    """A scalar's TensorBoard tag: train/loss, eval/avg_loss, ..."""
    return f"{section}/{name}"


class ScalarLog:
    """The scalars of one run, written by the main process only; a no-op with --report_to none.

    Per optimizer step (x = the global step): the mean losses of the batches trained since the previous step (this
    process's batches: under torchrun the main process's share), the learning rate after the step (as
    Hugging Face's Trainer logs it) and the temperature the step used. Per evaluation: every numeric metric.
    """

    def __init__(self, writer=None, with_teacher_text: bool = False):
        self.writer = writer
        self.with_teacher_text = with_teacher_text
        self._sums, self._batches = LossSums(), 0

    @classmethod
    def open(cls, report_to: str, output_dir: str, is_main: bool, with_teacher_text: bool = False,
             resumed_step: int = 0) -> ScalarLog:
        """The run's log: event files in OUTPUT_DIR/tensorboard/; a run resumed from the checkpoint of global step
        resumed_step hides the events a killed run wrote after that step."""
        if report_to == "none" or not is_main:
            return cls(None)
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(os.path.join(output_dir, TENSORBOARD_DIRNAME),
                               purge_step=resumed_step + 1 if resumed_step else None)
        return cls(writer, with_teacher_text)

    def start_from(self, counters: EpochCounters) -> None:
        """Count the next step's losses from these epoch counters on (those a resumed epoch starts with)."""
        self._sums, self._batches = dataclasses.replace(counters.loss_sums), counters.batches_trained

    def training_step(self, step: int, counters: EpochCounters, learning_rate: float, temperature: float) -> None:
        """The step's mean losses (the counters' growth since the last call), learning rate and temperature."""
        if self.writer is None:
            return
        if counters.batches_trained < self._batches:  # a new epoch restarted the counters
            self._sums, self._batches = LossSums(), 0
        batches = counters.batches_trained - self._batches
        if batches > 0:
            means = counters.loss_sums.minus(self._sums).mean(batches)
            losses = {TRAIN_LOSS: means.total, TRAIN_HARD_LOSS: means.hard, TRAIN_SOFT_LOSS: means.soft}
            if self.with_teacher_text:
                losses[TRAIN_TEACHER_TEXT_LOSS] = means.teacher_text
            for name, value in losses.items():
                self.writer.add_scalar(tag(HISTORY_TRAIN, name), value, step)
        self.writer.add_scalar(tag(HISTORY_TRAIN, TRAIN_LEARNING_RATE), learning_rate, step)
        self.writer.add_scalar(tag(HISTORY_TRAIN, TEMPERATURE_TAG), temperature, step)
        self.start_from(counters)

    def evaluation(self, step: int, metrics: dict) -> None:
        """Every numeric metric of one evaluation, at the global step it followed."""
        if self.writer is None:
            return
        for name, value in metrics.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                self.writer.add_scalar(tag(HISTORY_EVAL, name), value, step)
        self.writer.flush()

    def flush(self) -> None:
        """Write the pending events (before a checkpoint: a run killed after it keeps every step up to it)."""
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        """Flush and close the event file."""
        if self.writer is not None:
            self.writer.close()
            self.writer = None
