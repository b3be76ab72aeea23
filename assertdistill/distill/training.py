"""The training loop: batches to the device, lock-step micro-steps over processes, optimizer steps."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import astuple, dataclass, field

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from ..data.batch import TENSOR_KEYS, Batch
from ..data.dataset import DistillationStream
from ..data.datastats import DataStats
from ..model.precision import Bf16Weights
from ..runtime.distributed import DistributedContext
from ..runtime.rng import set_rng_state
from .forward import BatchLosses, batch_losses
from .loss import DistillationLoss

MAX_CONSECUTIVE_NONFINITE = 20  # stop the run when this many steps in a row give a non-finite loss


class TrainingError(Exception):
    """Training cannot go on (e.g. the loss stays non-finite)."""


def make_loader(stream: DistillationStream, num_workers: int, pin_memory: bool) -> DataLoader:
    """A DataLoader over a stream that already yields whole batches."""
    return DataLoader(stream, batch_size=None, num_workers=num_workers, pin_memory=pin_memory,
                      persistent_workers=False)


def move_batch(batch: Batch, device: torch.device) -> Batch:
    """Tensors of a batch on the device (non-blocking from pinned memory)."""
    non_blocking = device.type == "cuda"
    return {key: (value.to(device, non_blocking=non_blocking) if key in TENSOR_KEYS and value is not None
                  else value) for key, value in batch.items()}


@dataclass
class EpochResult:
    """Averages of one training epoch."""

    loss: float
    hard_loss: float
    soft_loss: float
    learning_rate: float
    optimizer_steps: int
    skipped_nonfinite_steps: int
    data: DataStats = field(default_factory=DataStats)
    teacher_text_loss: float = 0.0


@dataclass
class LossSums:
    """Sums of batches' losses (forward.BatchLosses's fields), or their means."""

    total: float = 0.0
    hard: float = 0.0
    soft: float = 0.0
    teacher_text: float = 0.0

    def add(self, losses: BatchLosses) -> None:
        """Add one batch's losses."""
        for name, value in losses._asdict().items():
            setattr(self, name, getattr(self, name) + value.item())

    def minus(self, other: LossSums) -> LossSums:
        """The sums since `other` was taken."""
        return LossSums(*(mine - theirs for mine, theirs in zip(astuple(self), astuple(other))))

    def mean(self, batches: int) -> LossSums:
        """The means over `batches` batches (zeros for none)."""
        return LossSums(*(value / max(batches, 1) for value in astuple(self)))

    def as_list(self) -> list[float]:
        """[total, hard, soft, teacher_text], as checkpoints store them (weights_only loads no classes)."""
        return list(astuple(self))


@dataclass
class EpochCounters:
    """Running totals of the epoch in progress (saved in checkpoints so a resumed epoch adds up the same)."""

    loss_sums: LossSums = field(default_factory=LossSums)
    batches_trained: int = 0
    batches_seen: int = 0  # batches taken from the loader, including skipped non-finite ones
    optimizer_steps: int = 0
    skipped_nonfinite: int = 0

    def __post_init__(self):
        if not isinstance(self.loss_sums, LossSums):  # a checkpoint's list (older checkpoints hold 3 sums)
            self.loss_sums = LossSums(*self.loss_sums)

    def saved(self) -> dict:
        """The counters as a checkpoint stores them (plain values)."""
        return {**vars(self), "loss_sums": self.loss_sums.as_list()}


class Trainer:
    """Owns one run's optimizer, scheduler, scaler and counters; trains epochs with warmup, accumulation, clipping.

    Under torchrun every process takes the same micro-steps in lock step: a process whose shard has run out
    adds zeros to the gradient mean, a non-finite loss on any process skips the step on all of them, and
    gradients are averaged over processes before each optimizer step, so every replica stays identical.
    """

    def __init__(self, model, loss_fn: DistillationLoss, optimizer, scheduler, device: torch.device,
                 gradient_accumulation_steps: int = 1, max_grad_norm: float = 1.0, precision: str = "fp32",
                 log_steps: int = 50, context: DistributedContext | None = None, losses=None, record_losses=None):
        self.model = model
        self.losses = losses  # (model, batch, loss_fn, precision) -> BatchLosses; None: forward.batch_losses
        # the same without side effects (no sampling), to name the records of a non-finite loss one by one; None:
        # forward.batch_losses
        self.record_losses = record_losses
        self.loss_fn = loss_fn
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.device = device
        self.gradient_accumulation_steps = gradient_accumulation_steps
        self.max_grad_norm = max_grad_norm
        self.precision = precision
        self.log_steps = log_steps
        self.context = context or DistributedContext()
        self.global_step = 0
        self.counters = EpochCounters()
        self.epoch_result: EpochResult | None = None  # the last finished epoch's averages, over every process
        self.scaler = torch.amp.GradScaler("cuda", enabled=precision == "fp16" and device.type == "cuda")
        self.bf16 = Bf16Weights.for_run(model, precision, device)  # CPU bf16: a bf16 copy runs forward/backward
        self.forward_model = self.bf16.model if self.bf16 else model

    def state_dict(self) -> dict:
        """Optimizer, scheduler, scaler, step and every process's epoch counters (a collective under torchrun)."""
        return {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict(), "global_step": self.global_step,
                "counters": self.context.gather(self.counters.saved())}

    def load_state_dict(self, state: dict) -> None:
        """Restore what state_dict() gave; this process takes its own rank's counters."""
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.global_step = state["global_step"]
        self.counters = EpochCounters(**state["counters"][self.context.rank])

    def _optimizer_step(self) -> None:
        self.context.average_gradients(self.model.parameters())
        self.scaler.unscale_(self.optimizer)
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.max_grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.bf16:
            self.bf16.refresh()
        self.global_step += 1
        self.counters.optimizer_steps += 1

    def train_epoch(self, loader, total_records: int, description: str, resume: bool = False,
                    rng_after_skip: dict | None = None) -> Iterator[int]:
        """One pass over the loader, yielding the global step after every optimizer step; then sets epoch_result.

        resume: continue the epoch of the counters load_state_dict() restored: their batches are read again
        but not trained on, then rng_after_skip is restored.
        """
        self.model.train()
        if self.bf16:  # the master weights may have been loaded (resume) or evaluated since the last refresh
            self.bf16.train()
            self.bf16.refresh()
        if not resume:
            self.counters = EpochCounters()
        data = DataStats()
        progress = tqdm(total=total_records, desc=description, unit="sample", dynamic_ncols=True)
        self.optimizer.zero_grad(set_to_none=True)
        batches = _batches_of(loader, data)
        for _ in range(self.counters.batches_seen):  # trained on before the checkpoint this run resumed from
            item = next(batches, None)
            if item is not None:
                progress.update(item["input_ids"].size(0))
        if rng_after_skip is not None:  # the random state at the checkpoint, once its batches are read again
            set_rng_state(rng_after_skip)
        pending_micro_steps = consecutive_nonfinite = 0
        while True:
            item = next(batches, None)
            outcome = self._micro_step(item, progress)
            if outcome is None:  # every process's shard is done
                break
            if not outcome:  # a non-finite loss somewhere: every process dropped its accumulated gradients
                consecutive_nonfinite += 1
                pending_micro_steps = 0
                if consecutive_nonfinite >= MAX_CONSECUTIVE_NONFINITE:
                    raise TrainingError(f"the loss was non-finite for {consecutive_nonfinite} batches in a row; "
                                        f"lower the learning rate or check the teacher logits")
                continue
            consecutive_nonfinite = 0
            pending_micro_steps += 1
            if pending_micro_steps == self.gradient_accumulation_steps:
                pending_micro_steps = 0
                self._optimizer_step()
                self._show_losses(progress)
                yield self.global_step
        if pending_micro_steps:  # the epoch's last, partial accumulation still updates the model
            self._optimizer_step()
            yield self.global_step
        progress.close()
        self.epoch_result = self._merged_result(data)

    def _micro_step(self, item: dict | None, progress) -> bool | None:
        """Forward and backward on this process's batch (if any), decided with every process.

        True: trained; False: a loss was non-finite on some process, every process dropped its gradients;
        None: no process had a batch left.
        """
        counters = self.counters
        finite, batch = True, None
        if item is not None:
            counters.batches_seen += 1
            batch = move_batch(item, self.device)
            self.loss_fn.at_step(self.global_step)  # --temperature_final's schedule
            losses = (self.losses or batch_losses)(self.forward_model, batch, self.loss_fn, self.precision)
            total = losses.total
            progress.update(batch["input_ids"].size(0))
            finite = bool(torch.isfinite(total))
        with_batches, nonfinite = self.context.sum_counts([item is not None, not finite])
        if not with_batches:
            return None
        if nonfinite:
            self._report_nonfinite(None if finite else batch, progress)
            counters.skipped_nonfinite += 1
            self.optimizer.zero_grad(set_to_none=True)
            return False
        if batch is not None:
            self.scaler.scale(total / self.gradient_accumulation_steps).backward()
            if self.bf16:
                self.bf16.collect_gradients()
            counters.loss_sums.add(losses)
            counters.batches_trained += 1
        return True

    def _report_nonfinite(self, batch: Batch | None, progress) -> None:
        """Name the training records whose loss is non-finite (every process's), on the main process's log."""
        lines = (nonfinite_records(self.forward_model, batch, self.loss_fn, self.precision, self.record_losses)
                 if batch is not None else [])
        everywhere = sorted(line for lines_of_rank in self.context.gather(lines) for line in lines_of_rank)
        if self.context.is_main:
            progress.write(f"step skipped on every process: non-finite loss from the training record(s) at "
                           f"line(s) {', '.join(map(str, everywhere))}")

    def _merged_result(self, data: DataStats) -> EpochResult:
        """The epoch's averages and data counts over every process (skips and steps are the same on each)."""
        counters = self.counters
        merged = self.context.gather(EpochTotals(counters.loss_sums, counters.batches_trained, data))
        batches = sum(entry.batches_trained for entry in merged)
        means = LossSums(*np.sum([entry.loss_sums.as_list() for entry in merged], axis=0)).mean(batches)
        all_data = DataStats()
        for entry in merged:
            all_data.merge(entry.data)
        return EpochResult(float(means.total), float(means.hard), float(means.soft), self.scheduler.get_last_lr()[0],
                           counters.optimizer_steps, counters.skipped_nonfinite, all_data, float(means.teacher_text))

    def _show_losses(self, progress) -> None:
        """The running losses and learning rate on the progress bar, every log_steps optimizer steps and the first."""
        counters = self.counters
        if counters.batches_trained and (self.global_step % max(1, self.log_steps) == 0
                                         or counters.optimizer_steps == 1):
            means = counters.loss_sums.mean(counters.batches_trained)
            progress.set_postfix(LR=f"{self.scheduler.get_last_lr()[0]:.2e}", L=f"{means.total:.3f}",
                                 hL=f"{means.hard:.3f}", sL=f"{means.soft:.3f}")


@dataclass
class EpochTotals:
    """One process's sums of an epoch, gathered to average over every process."""

    loss_sums: LossSums
    batches_trained: int
    data: DataStats


def _batches_of(loader, data: DataStats) -> Iterator[dict]:
    """The loader's batches; its DataStats items are added to `data`."""
    for item in loader:
        if isinstance(item, DataStats):
            data.merge(item)
        else:
            yield item


def record_batch(batch: Batch, index: int) -> Batch:
    """Record `index` of a batch as a batch of one (teacher rows are those of its label positions)."""
    mask = batch.get("teacher_position_mask")
    rows = None
    if mask is not None and batch.get("teacher_values") is not None:
        counts = mask.sum(dim=1).tolist()  # (B,) teacher rows per record
        start = int(sum(counts[:index]))
        rows = slice(start, start + int(counts[index]))
    single = {}
    for key, value in batch.items():
        if key in ("teacher_values", "teacher_scale", "teacher_zero_point"):
            single[key] = value[rows] if value is not None and rows is not None else value
        elif isinstance(value, (torch.Tensor, list)):
            single[key] = value[index:index + 1]
        else:
            single[key] = value
    return single


@torch.no_grad()
def nonfinite_records(model, batch: Batch, loss_fn: DistillationLoss, precision: str,
                      losses=None) -> list[int]:
    """Line numbers of the batch's records whose own loss (by `losses`, default forward.batch_losses) is non-finite
    (all of them if none alone is)."""
    losses = losses or batch_losses
    was_training = model.training
    model.eval()  # no dropout: the diagnosis draws no random numbers
    try:
        lines = [line for index, line in enumerate(batch["line_numbers"])
                 if not torch.isfinite(losses(model, record_batch(batch, index), loss_fn, precision).total)]
    finally:
        model.train(was_training)
    return lines or list(batch["line_numbers"])


def steps_per_epoch(num_records: int, batch_size: int, gradient_accumulation_steps: int) -> int:
    """Optimizer steps in one epoch (the last partial accumulation counts as a step)."""
    return max(1, math.ceil(math.ceil(num_records / batch_size) / gradient_accumulation_steps))
