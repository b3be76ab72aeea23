"""The student's teacher-forced forward pass and one batch's distillation losses (training and evaluation)."""

from __future__ import annotations

import contextlib

import torch

from .loss import DistillationLoss


def autocast_context(device: torch.device, precision: str):
    """bf16/fp16 autocast on GPU; a no-op for fp32 or on CPU."""
    if precision == "fp32" or device.type != "cuda":
        return contextlib.nullcontext()
    return torch.autocast(device_type="cuda", dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


def student_logits_for(model: torch.nn.Module, batch: dict) -> torch.Tensor:
    """Teacher-forced student logits (B, L, V) on the batch's targets, without the model's own loss."""
    plain_model = getattr(model, "module", model)  # DistributedDataParallel wraps the model
    decoder_input_ids = plain_model.prepare_decoder_input_ids_from_labels(labels=batch["labels"])  # (B, L)
    outputs = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                    decoder_input_ids=decoder_input_ids, encoder_outputs=batch.get("encoder_outputs"), use_cache=False)
    return outputs.logits


def batch_losses(model: torch.nn.Module, batch: dict, loss_fn: DistillationLoss,
                 precision: str = "fp32") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(total, hard, soft) for one batch; teacher codes are dequantized only at label positions, chunk by chunk.

    hard and soft are detached (for logging); total carries the gradient.
    """
    with autocast_context(batch["input_ids"].device, precision):
        student_logits = student_logits_for(model, batch)  # (B, L, V)
    return loss_fn.fused(student_logits, batch["labels"], batch["teacher_values"], batch["teacher_scale"],
                         batch["teacher_zero_point"], batch["teacher_position_mask"])
