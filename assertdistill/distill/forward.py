"""The student's teacher-forced forward pass and one batch's distillation losses (training and evaluation)."""

from __future__ import annotations

from typing import NamedTuple

import torch
from transformers.modeling_outputs import BaseModelOutput

from ..core.constants import IGNORE_INDEX
from ..data.batch import Batch
from ..model.precision import autocast_context
from .loss import DistillationLoss


def student_logits_for(model: torch.nn.Module, batch: Batch) -> torch.Tensor:
    """Teacher-forced student logits (B, L, V) on the batch's targets, without the model's own loss."""
    plain_model = getattr(model, "module", model)  # DistributedDataParallel wraps the model
    decoder_input_ids = plain_model.prepare_decoder_input_ids_from_labels(labels=batch["labels"])  # (B, L)
    outputs = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                    decoder_input_ids=decoder_input_ids, encoder_outputs=batch.get("encoder_outputs"), use_cache=False)
    return outputs.logits


class BatchLosses(NamedTuple):
    """One batch's losses: total carries the gradient; the others are detached, for logging."""

    total: torch.Tensor  # (1 - alpha) hard + alpha soft + teacher_text_weight teacher_text
    hard: torch.Tensor  # CE on the ground truth
    soft: torch.Tensor  # T^2 x the divergence
    teacher_text: torch.Tensor  # CE on the teacher's text (0 unless --teacher_text_weight > 0)


def _pad_columns(tensor: torch.Tensor, length: int, value) -> torch.Tensor:
    """(B, L) -> (B, length) padded on the right with value."""
    return torch.nn.functional.pad(tensor, (0, length - tensor.size(1)), value=value)


def _with_teacher_text(batch: Batch) -> Batch:
    """The batch twice over: first its targets, then the teacher's text as targets, both padded to one length."""
    labels, teacher_labels = batch["labels"], batch["teacher_labels"]  # (B, L), (B, Lt)
    length = max(labels.size(1), teacher_labels.size(1))
    doubled = dict(batch, input_ids=batch["input_ids"].repeat(2, 1), attention_mask=batch["attention_mask"].repeat(2, 1),
                   labels=torch.cat([_pad_columns(labels, length, IGNORE_INDEX),
                                     _pad_columns(teacher_labels, length, IGNORE_INDEX)]))  # (2B, L')
    if batch.get("encoder_outputs") is not None:
        states = batch["encoder_outputs"].last_hidden_state  # (B, S, d)
        doubled["encoder_outputs"] = BaseModelOutput(last_hidden_state=states.repeat(2, 1, 1))
    return doubled


def batch_losses(model: torch.nn.Module, batch: Batch, loss_fn: DistillationLoss,
                 precision: str = "fp32") -> BatchLosses:
    """One batch's losses; teacher codes are dequantized only at label positions, chunk by chunk.

    With loss_fn.teacher_text_weight > 0 and the batch's teacher_labels (B, Lt), one student forward runs
    on the batch twice over (ground-truth targets, then the teacher's text as targets).
    """
    text_labels = batch.get("teacher_labels") if loss_fn.teacher_text_weight > 0 else None
    labels, mask = batch["labels"], batch["teacher_position_mask"]  # (B, L)
    with autocast_context(batch["input_ids"].device, precision):
        if text_labels is None:
            student_logits = student_logits_for(model, batch)  # (B, L, V)
        else:
            doubled = _with_teacher_text(batch)
            both_logits = student_logits_for(model, doubled)  # (2B, L', V)
    if text_labels is None:
        total, hard, soft = loss_fn.fused(student_logits, labels, batch["teacher_values"], batch["teacher_scale"],
                                          batch["teacher_zero_point"], mask)
        return BatchLosses(total, hard, soft, torch.zeros_like(hard))
    size, length = labels.size(0), doubled["labels"].size(1)
    total, hard, soft = loss_fn.fused(both_logits[:size], doubled["labels"][:size], batch["teacher_values"],
                                      batch["teacher_scale"], batch["teacher_zero_point"],
                                      None if mask is None else _pad_columns(mask, length, False))
    text = loss_fn.text_loss(both_logits[size:], doubled["labels"][size:])
    return BatchLosses(total + loss_fn.teacher_text_weight * text, hard, soft, text.detach())
