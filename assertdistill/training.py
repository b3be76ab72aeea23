"""The training loop and the evaluation loop (loss, generation, thesis metrics)."""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from .dataset import DistillationStream
from .datastats import DataStats
from .forward import batch_losses
from .generation import evaluate_batch
from .loss import DistillationLoss
from .metrics import average_record_metrics, record_metrics
from .schema import (ACCURACY, AVG_HARD_LOSS, AVG_INFERENCE_TIME_PER_SAMPLE_MS, AVG_LOSS, AVG_SOFT_LOSS,
                     AVG_TEACHER_TEXT_LOSS,
                     NUM_EVAL_SAMPLES, ROW_GROUND_TRUTH, ROW_INDEX, ROW_LINE_NUMBER, ROW_STUDENT_PREDICTION,
                     ROW_TEACHER_PREDICTION, ROW_TEACHER_PREDICTION_SCRIPT1, S_VS_GT_SCRIPT1, S_VS_T_CORRECTED,
                     S_VS_T_SCRIPT1, SIMILARITY_AVG, STUDENT_SHARE_OF_TEACHER_ACCURACY, T_VS_GT_SCRIPT1, metric_key,
                     record_key)
from .rng import set_rng_state

TENSOR_KEYS = ("input_ids", "attention_mask", "labels", "teacher_values", "teacher_scale",
               "teacher_zero_point", "teacher_position_mask", "teacher_labels")
MAX_CONSECUTIVE_NONFINITE = 20  # stop the run when this many steps in a row give a non-finite loss


def uneven_inputs_context(model):
    """DDP's Join when the model is distributed (ranks may get different numbers of batches), else nothing."""
    if isinstance(model, torch.nn.parallel.DistributedDataParallel):
        from torch.distributed.algorithms.join import Join

        return Join([model])
    return contextlib.nullcontext()


class TrainingError(Exception):
    """Training cannot go on (e.g. the loss stays non-finite)."""


def make_loader(stream: DistillationStream, num_workers: int, pin_memory: bool) -> DataLoader:
    """A DataLoader over a stream that already yields whole batches."""
    return DataLoader(stream, batch_size=None, num_workers=num_workers, pin_memory=pin_memory,
                      persistent_workers=False)


def move_batch(batch: dict, device: torch.device) -> dict:
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
class EpochCounters:
    """Running totals of the epoch in progress (saved in checkpoints so a resumed epoch adds up the same)."""

    loss_sums: list = field(default_factory=lambda: [0.0, 0.0, 0.0, 0.0])  # total, hard, soft, teacher text
    batches_trained: int = 0
    batches_seen: int = 0  # batches taken from the loader, including skipped non-finite ones
    optimizer_steps: int = 0
    skipped_nonfinite: int = 0

    def __post_init__(self):
        self.loss_sums = list(self.loss_sums) + [0.0] * (4 - len(self.loss_sums))  # older checkpoints hold 3


class Trainer:
    """Runs epochs of distillation over a stream with AdamW, warmup, accumulation and clipping."""

    def __init__(self, model, loss_fn: DistillationLoss, optimizer, scheduler, device: torch.device,
                 gradient_accumulation_steps: int = 1, max_grad_norm: float = 1.0, precision: str = "fp32",
                 log_steps: int = 50):
        self.model = model
        self.loss_fn = loss_fn
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.device = device
        self.gradient_accumulation_steps = gradient_accumulation_steps
        self.max_grad_norm = max_grad_norm
        self.precision = precision
        self.log_steps = log_steps
        self.global_step = 0
        self.counters = EpochCounters()
        self.scaler = torch.amp.GradScaler("cuda", enabled=precision == "fp16" and device.type == "cuda")

    def _optimizer_step(self) -> None:
        self.scaler.unscale_(self.optimizer)
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.max_grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.global_step += 1
        self.counters.optimizer_steps += 1

    def train_epoch(self, loader: DataLoader, total_records: int, description: str, resume_counters=None,
                    rng_after_skip: dict | None = None, on_step=None) -> EpochResult:
        """One pass over the loader; returns average losses and the pass's data counts.

        resume_counters: the counters of a checkpoint taken mid-epoch; that many batches are read again
        but not trained on, then rng_after_skip is restored. on_step(trainer) runs after every
        optimizer step (e.g. to save a checkpoint).
        """
        self.model.train()
        self.counters = resume_counters or EpochCounters()
        counters, skip = self.counters, self.counters.batches_seen
        data = DataStats()
        progress = tqdm(total=total_records, desc=description, unit="sample", dynamic_ncols=True)
        self.optimizer.zero_grad(set_to_none=True)
        with uneven_inputs_context(self.model):
            pending_micro_steps = self._run_batches(loader, progress, data, skip, rng_after_skip, on_step)
        if pending_micro_steps:  # the epoch's last, partial accumulation still updates the model
            self._optimizer_step()
        progress.close()
        loss, hard_loss, soft_loss, text_loss = np.asarray(counters.loss_sums) / max(counters.batches_trained, 1)
        return EpochResult(float(loss), float(hard_loss), float(soft_loss), self.scheduler.get_last_lr()[0],
                           counters.optimizer_steps, counters.skipped_nonfinite, data, float(text_loss))

    def _run_batches(self, loader, progress, data: DataStats, skip: int, rng_after_skip, on_step) -> int:
        """Train on the loader's batches; returns the micro-steps still waiting for an optimizer step."""
        pending_micro_steps = consecutive_nonfinite = seen = 0
        for item in loader:
            if isinstance(item, DataStats):
                data.merge(item)
                continue
            seen += 1
            if seen <= skip:  # trained on before the checkpoint this run resumed from
                progress.update(item["input_ids"].size(0))
                if seen == skip and rng_after_skip is not None:
                    set_rng_state(rng_after_skip)
                continue
            if not self._train_on(item, progress):  # non-finite loss: the accumulated gradients were dropped
                consecutive_nonfinite += 1
                pending_micro_steps = 0
                if consecutive_nonfinite >= MAX_CONSECUTIVE_NONFINITE:
                    raise TrainingError(f"the loss was non-finite for {consecutive_nonfinite} batches in a row "
                                        f"(last at line {item['line_numbers'][0]}); lower the learning rate "
                                        f"or check the teacher logits")
                continue
            consecutive_nonfinite = 0
            pending_micro_steps += 1
            if pending_micro_steps == self.gradient_accumulation_steps:
                self._optimizer_step()
                pending_micro_steps = 0
                self._show_losses(progress)
                if on_step is not None:
                    on_step(self)
        return pending_micro_steps

    def _train_on(self, item: dict, progress) -> bool:
        """Forward and backward on one batch, losses counted; False (gradients dropped) if the loss is non-finite."""
        counters = self.counters
        counters.batches_seen += 1
        batch = move_batch(item, self.device)
        self.loss_fn.at_step(self.global_step)  # --temperature_final's schedule
        losses = batch_losses(self.model, batch, self.loss_fn, self.precision)
        total = losses.total
        progress.update(batch["input_ids"].size(0))
        if not torch.isfinite(total):
            counters.skipped_nonfinite += 1
            self.optimizer.zero_grad(set_to_none=True)
            return False
        self.scaler.scale(total / self.gradient_accumulation_steps).backward()
        for index, value in enumerate(losses):
            counters.loss_sums[index] += value.item()
        counters.batches_trained += 1
        return True

    def _show_losses(self, progress) -> None:
        """The running losses and learning rate on the progress bar, every log_steps optimizer steps and the first."""
        counters = self.counters
        if self.global_step % max(1, self.log_steps) == 0 or counters.optimizer_steps == 1:
            loss, hard_loss, soft_loss = np.asarray(counters.loss_sums[:3]) / counters.batches_trained
            progress.set_postfix(LR=f"{self.scheduler.get_last_lr()[0]:.2e}", L=f"{loss:.3f}",
                                 hL=f"{hard_loss:.3f}", sL=f"{soft_loss:.3f}")


@dataclass
class Evaluation:
    """One evaluation pass: averaged metrics, data counts, and one row per evaluated record in file order."""

    metrics: dict
    data: DataStats
    records: list[dict]  # index, line_number, the four texts and every RECORD_METRICS value


@torch.no_grad()
def evaluate(model, tokenizer, loader: DataLoader, total_records: int, loss_fn: DistillationLoss,
             device: torch.device, num_beams: int, max_target_length: int, precision: str = "fp32",
             show_example: bool = True, gather=None) -> Evaluation:
    """Eval loss, generation and per-record metrics (student vs teacher and vs ground truth; teacher vs ground truth).

    gather(list) -> one list per process, for distributed evaluation: each process scores its own
    batches and the metrics are computed over all of them in batch order, as in one process.
    """
    model.eval()
    batch_results = []  # (batch index, (total, hard, soft), ms per sample, [record row])
    data = DataStats()
    progress = tqdm(total=total_records, desc="Evaluating", unit="sample", dynamic_ncols=True,
                    disable=not show_example)
    for item in loader:
        if isinstance(item, DataStats):
            data.merge(item)
            continue
        result = score_batch(model, tokenizer, move_batch(item, device), loss_fn, num_beams, max_target_length,
                             precision)
        batch_results.append(result)
        rows = result[3]
        if show_example and len(batch_results) == 1:
            progress.write(example_text(rows[0]))
        progress.update(len(rows))
    progress.close()
    if gather is not None:
        batch_results = [entry for results in gather(batch_results) for entry in results]
    batch_results.sort(key=lambda entry: entry[0])
    records = [row for entry in batch_results for row in entry[3]]
    for index, row in enumerate(records):
        row[ROW_INDEX] = index
    return Evaluation(evaluation_metrics(batch_results, loss_fn.teacher_text_weight > 0), data, records)


def score_batch(model, tokenizer, batch: dict, loss_fn: DistillationLoss, num_beams: int, max_target_length: int,
                precision: str) -> tuple:
    """(batch index, (total, hard, soft, teacher text), ms per sample, [record row]) of one batch on the device."""
    losses, generated_ids, milliseconds = evaluate_batch(model, batch, loss_fn, num_beams, max_target_length,
                                                         precision)
    generated_texts = tokenizer.batch_decode(generated_ids, skip_special_tokens=True)
    rows = [record_row(*texts) for texts in zip(batch["line_numbers"], generated_texts, batch["ground_truth_texts"],
                                               batch["teacher_texts"], batch["teacher_texts_script1"])]
    return batch["batch_index"], tuple(value.item() for value in losses), milliseconds, rows


def example_text(row: dict) -> str:
    """The first evaluated record's texts and scores, shown once per evaluation."""
    return (f"\nGT:      {row[ROW_GROUND_TRUTH][:200]}\n"
            f"Teacher: {row[ROW_TEACHER_PREDICTION][:200]}\n"
            f"Student: {row[ROW_STUDENT_PREDICTION][:200]}\n"
            f"  accuracy / similarity vs teacher {_accuracy_similarity(row, S_VS_T_SCRIPT1)} (thesis), "
            f"{_accuracy_similarity(row, S_VS_T_CORRECTED)} (corrected); "
            f"vs truth {_accuracy_similarity(row, S_VS_GT_SCRIPT1)}")


def record_row(line_number: int, student: str, truth: str, teacher: str, teacher_script1: str) -> dict:
    """One evaluated record: where it is, its texts and its per-record metrics (index is set later)."""
    return {ROW_INDEX: None, ROW_LINE_NUMBER: line_number, ROW_GROUND_TRUTH: truth, ROW_TEACHER_PREDICTION: teacher,
            ROW_TEACHER_PREDICTION_SCRIPT1: teacher_script1, ROW_STUDENT_PREDICTION: student,
            **record_metrics(student, truth, teacher, teacher_script1)}


def _accuracy_similarity(row: dict, suffix: str) -> str:
    """'<accuracy> / <similarity>' of one record row for one comparison, for the example printed."""
    return f"{row[record_key(ACCURACY, suffix)]:.3f} / {row[record_key(SIMILARITY_AVG, suffix)]:.3f}"


def evaluation_metrics(batch_results: list, with_teacher_text: bool = False) -> dict:
    """Average losses (per batch, as the thesis), per-record metrics (per record, in order) and inference time.

    with_teacher_text: also the teacher-text CE (--teacher_text_weight > 0).
    """
    rows = [row for entry in batch_results for row in entry[3]]
    losses = np.asarray([entry[1] for entry in batch_results]).reshape(-1, 4)
    loss, hard_loss, soft_loss, text_loss = losses.mean(axis=0) if len(losses) else (0.0,) * 4
    results = {AVG_LOSS: float(loss), AVG_HARD_LOSS: float(hard_loss), AVG_SOFT_LOSS: float(soft_loss)}
    if with_teacher_text:
        results[AVG_TEACHER_TEXT_LOSS] = float(text_loss)
    results.update(average_record_metrics(rows))
    results[AVG_INFERENCE_TIME_PER_SAMPLE_MS] = (float(np.mean([entry[2] for entry in batch_results]))
                                                 if batch_results else 0.0)
    results[NUM_EVAL_SAMPLES] = len(rows)
    teacher_accuracy = results[metric_key(ACCURACY, T_VS_GT_SCRIPT1)]
    results[STUDENT_SHARE_OF_TEACHER_ACCURACY] = (
        results[metric_key(ACCURACY, S_VS_GT_SCRIPT1)] / teacher_accuracy if teacher_accuracy else None)
    return results


def steps_per_epoch(num_records: int, batch_size: int, gradient_accumulation_steps: int) -> int:
    """Optimizer steps in one epoch (the last partial accumulation counts as a step)."""
    return max(1, math.ceil(math.ceil(num_records / batch_size) / gradient_accumulation_steps))
