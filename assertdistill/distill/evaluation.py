"""The evaluation loop: eval losses, generation and the thesis's per-record metrics, gathered over processes."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from ..core.schema import (
    ACCURACY,
    AVG_HARD_LOSS,
    AVG_INFERENCE_TIME_PER_SAMPLE_MS,
    AVG_LOSS,
    AVG_SOFT_LOSS,
    AVG_TEACHER_TEXT_LOSS,
    NUM_EVAL_SAMPLES,
    ROW_GROUND_TRUTH,
    ROW_INDEX,
    ROW_LINE_NUMBER,
    ROW_RETRIEVAL_PREDICTION,
    ROW_STUDENT_PREDICTION,
    ROW_TEACHER_PREDICTION,
    ROW_TEACHER_PREDICTION_SCRIPT1,
    S_VS_GT_SCRIPT1,
    S_VS_T_CORRECTED,
    S_VS_T_SCRIPT1,
    SIMILARITY_AVG,
    STUDENT_SHARE_OF_TEACHER_ACCURACY,
    T_VS_GT_SCRIPT1,
    metric_key,
    record_key,
)
from ..data.batch import Batch
from ..data.datastats import DataStats
from ..model.generation import DecodingSettings, encode, generate
from ..model.precision import autocast_context, inference_model
from ..scoring.registry import average_record_metrics, record_metrics
from .forward import BatchLosses, batch_losses
from .loss import DistillationLoss
from .report import telling_record
from .training import move_batch


@dataclass
class ScoredBatch:
    """One evaluated batch: its place in the data, losses, generation time and one row per record."""

    batch_index: int
    loss: float
    hard_loss: float
    soft_loss: float
    milliseconds: float  # generation time per sample
    rows: list[dict]
    teacher_text_loss: float = 0.0  # CE on the teacher's text (--teacher_text_weight > 0)


@dataclass
class Evaluation:
    """One evaluation pass: averaged metrics, data counts, and one row per evaluated record in file order."""

    metrics: dict
    data: DataStats
    records: list[dict]  # index, line_number, location, the texts and every per-record metric (scoring/registry.py)


@dataclass
class EvaluatedBatch:
    """What evaluate_batch gives for one batch."""

    losses: BatchLosses
    generated_ids: torch.Tensor  # (B, L)
    milliseconds: float  # generation time per sample, the encoder included


@torch.no_grad()
def evaluate_batch(model, batch: Batch, loss_fn, decoding: DecodingSettings, precision: str = "fp32",
                   **generate_kwargs) -> EvaluatedBatch:
    """The losses, generated ids and generation milliseconds per sample of one eval batch.

    The encoder runs once: the losses are forward.batch_losses's on the batch and the ids model.generate's.
    The generation time counts the encoder, as it did when generate ran it.
    """
    device = batch["input_ids"].device
    started = time.perf_counter()
    with autocast_context(device, precision):
        encoder_outputs = encode(model, batch["input_ids"], batch["attention_mask"])
    _synchronize(device)
    encoder_seconds = time.perf_counter() - started
    losses = batch_losses(model, dict(batch, encoder_outputs=encoder_outputs), loss_fn, precision)
    started = time.perf_counter()
    with autocast_context(device, precision):
        generated_ids = generate(model, batch["input_ids"], batch["attention_mask"], decoding,
                                 encoder_outputs=encoder_outputs, **generate_kwargs)
    _synchronize(device)
    seconds = encoder_seconds + time.perf_counter() - started
    return EvaluatedBatch(losses, generated_ids, seconds * 1000 / batch["input_ids"].size(0))


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def evaluate(model, tokenizer, loader: DataLoader, total_records: int, loss_fn: DistillationLoss,
             device: torch.device, decoding: DecodingSettings, precision: str = "fp32",
             show_example: bool = True, gather=None) -> Evaluation:
    """Eval loss, generation and per-record metrics (student vs teacher and vs ground truth; teacher vs ground truth).

    gather(list) -> one list per process, for distributed evaluation: each process scores its own
    batches and the metrics are computed over all of them in batch order, as in one process.
    """
    model.eval()
    model = inference_model(model, precision, device)  # CPU bf16: a bf16 copy of the weights
    batch_results: list[ScoredBatch] = []
    data = DataStats()
    progress = tqdm(total=total_records, desc="Evaluating", unit="sample", dynamic_ncols=True,
                    disable=not show_example)
    for item in loader:
        if isinstance(item, DataStats):
            data.merge(item)
            continue
        result = score_batch(model, tokenizer, move_batch(item, device), loss_fn, decoding, precision)
        batch_results.append(result)
        progress.update(len(result.rows))
    progress.close()
    if gather is not None:
        batch_results = [entry for results in gather(batch_results) for entry in results]
    batch_results.sort(key=lambda entry: entry.batch_index)
    records = [row for entry in batch_results for row in entry.rows]
    for index, row in enumerate(records):
        row[ROW_INDEX] = index
    if show_example and records:
        print(example_text(telling_record(records)))
    return Evaluation(evaluation_metrics(batch_results, loss_fn.teacher_text_weight > 0), data, records)


def score_batch(model, tokenizer, batch: Batch, loss_fn: DistillationLoss, decoding: DecodingSettings,
                precision: str) -> ScoredBatch:
    """One batch on the device: its losses, generation time and record rows."""
    evaluated = evaluate_batch(model, batch, loss_fn, decoding, precision)
    losses, milliseconds = evaluated.losses, evaluated.milliseconds
    generated_texts = tokenizer.batch_decode(evaluated.generated_ids, skip_special_tokens=True)
    retrieved = batch.get("retrieved_texts") or [None] * len(generated_texts)
    rows = [record_row(*texts) for texts in zip(batch["line_numbers"], generated_texts, batch["ground_truth_texts"],
                                               batch["teacher_texts"], batch["teacher_texts_script1"],
                                               batch["locations"], retrieved)]
    return ScoredBatch(batch["batch_index"], losses.total.item(), losses.hard.item(), losses.soft.item(), milliseconds,
                       rows, losses.teacher_text.item())


def example_text(row: dict) -> str:
    """One evaluated record's texts and scores, shown once per evaluation."""
    return (f"Sample (record {row[ROW_INDEX]}, line {row[ROW_LINE_NUMBER]}):\n"
            f"GT:      {row[ROW_GROUND_TRUTH][:200]}\n"
            f"Teacher: {row[ROW_TEACHER_PREDICTION][:200]}\n"
            f"Student: {row[ROW_STUDENT_PREDICTION][:200]}\n"
            f"  accuracy / similarity vs teacher {_accuracy_similarity(row, S_VS_T_SCRIPT1)} (thesis), "
            f"{_accuracy_similarity(row, S_VS_T_CORRECTED)} (corrected); "
            f"vs truth {_accuracy_similarity(row, S_VS_GT_SCRIPT1)}")


def record_row(line_number: int, student: str, truth: str, teacher: str, teacher_script1: str,
               location: dict | None = None, retrieved: str | None = None) -> dict:
    """One evaluated record: where it is (line, and repo/test_path/... when the record has them), its texts (the
    retrieval baseline's when the run has one) and its per-record metrics (index is set later)."""
    row = {ROW_INDEX: None, ROW_LINE_NUMBER: line_number, **(location or {}), ROW_GROUND_TRUTH: truth,
           ROW_TEACHER_PREDICTION: teacher, ROW_TEACHER_PREDICTION_SCRIPT1: teacher_script1,
           ROW_STUDENT_PREDICTION: student}
    if retrieved is not None:
        row[ROW_RETRIEVAL_PREDICTION] = retrieved
    return {**row, **record_metrics(student, truth, teacher, teacher_script1, retrieved)}


def _accuracy_similarity(row: dict, suffix: str) -> str:
    """'<accuracy> / <similarity>' of one record row for one comparison, for the example printed."""
    return f"{row[record_key(ACCURACY, suffix)]:.3f} / {row[record_key(SIMILARITY_AVG, suffix)]:.3f}"


def evaluation_metrics(batch_results: list[ScoredBatch], with_teacher_text: bool = False) -> dict:
    """Average losses (per batch, as the thesis), per-record metrics (per record, in order) and inference time.

    with_teacher_text: also the teacher-text CE (--teacher_text_weight > 0).
    """
    rows = [row for entry in batch_results for row in entry.rows]
    losses = np.asarray([(entry.loss, entry.hard_loss, entry.soft_loss, entry.teacher_text_loss)
                         for entry in batch_results]).reshape(-1, 4)
    loss, hard_loss, soft_loss, text_loss = losses.mean(axis=0) if len(losses) else (0.0,) * 4
    results = {AVG_LOSS: float(loss), AVG_HARD_LOSS: float(hard_loss), AVG_SOFT_LOSS: float(soft_loss)}
    if with_teacher_text:
        results[AVG_TEACHER_TEXT_LOSS] = float(text_loss)
    results.update(average_record_metrics(rows))
    results[AVG_INFERENCE_TIME_PER_SAMPLE_MS] = (float(np.mean([entry.milliseconds for entry in batch_results]))
                                                 if batch_results else 0.0)
    results[NUM_EVAL_SAMPLES] = len(rows)
    teacher_accuracy = results[metric_key(ACCURACY, T_VS_GT_SCRIPT1)]
    results[STUDENT_SHARE_OF_TEACHER_ACCURACY] = (
        results[metric_key(ACCURACY, S_VS_GT_SCRIPT1)] / teacher_accuracy if teacher_accuracy else None)
    return results
