"""The thesis distillation loss: (1 - alpha) * CE + alpha * T^2 * KL(teacher || student)."""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F

from .codec import dequantize_codes
from .constants import IGNORE_INDEX

FUSED_CHUNK_VALUES = 1 << 22  # logits per chunk of the fused loss (16 MB of float32): few, cache-sized ops


def kl_per_position(student_rows: torch.Tensor, teacher_rows: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(softmax(teacher/T) || softmax(student/T)) summed over the vocabulary, one value per row.

    student_rows: (N, V) logits; teacher_rows: (N, V) logits; returns (N,) float32.
    """
    student_log_probs = F.log_softmax(student_rows.float() / temperature, dim=-1)  # (N, V)
    teacher_log_probs = F.log_softmax(teacher_rows.float() / temperature, dim=-1).detach()  # (N, V)
    return F.kl_div(student_log_probs, teacher_log_probs, reduction="none", log_target=True).sum(dim=-1)


class DistillationLoss(torch.nn.Module):
    """total = (1 - alpha) * CE(labels, ignore -100) + alpha * T^2 * mean over label positions of KL.

    KL(softmax(teacher / T) || softmax(student / T)) is summed over the vocabulary and averaged over
    the positions whose label is not -100. When sequence lengths or vocabulary sizes differ, both are
    cut to the smaller. The soft term is 0 when there are no teacher logits or alpha is 0 (as the thesis).
    forward returns (total, hard, soft).
    """

    def __init__(self, temperature: float, alpha: float):
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        self.temperature = float(temperature)
        self.alpha = float(alpha)
        self._warned_vocab_mismatch = False

    def hard_loss(self, student_logits: torch.Tensor, hard_labels: torch.Tensor) -> torch.Tensor:
        """Cross-entropy over label positions; student_logits (B, L, V), hard_labels (B, L)."""
        vocab_size = student_logits.size(-1)
        return F.cross_entropy(student_logits.reshape(-1, vocab_size).float(), hard_labels.reshape(-1),
                               ignore_index=IGNORE_INDEX)

    def _common_vocab(self, student_vocab: int, teacher_vocab: int) -> int:
        if student_vocab != teacher_vocab and not self._warned_vocab_mismatch:
            warnings.warn(f"student vocabulary ({student_vocab}) and teacher vocabulary ({teacher_vocab}) "
                          f"differ: the KL term uses the first {min(student_vocab, teacher_vocab)} entries",
                          stacklevel=3)
            self._warned_vocab_mismatch = True
        return min(student_vocab, teacher_vocab)

    def soft_loss_from_rows(self, student_rows: torch.Tensor, teacher_rows: torch.Tensor,
                            num_positions: int | torch.Tensor) -> torch.Tensor:
        """T^2 * sum of per-row KL / num_positions; rows (N, Vs) and (N, Vt) hold only counted positions."""
        vocab = self._common_vocab(student_rows.size(-1), teacher_rows.size(-1))
        kl_sum = kl_per_position(student_rows[:, :vocab], teacher_rows[:, :vocab], self.temperature).sum()
        if isinstance(num_positions, torch.Tensor):
            denominator = num_positions.to(kl_sum.dtype).clamp(min=1e-9)
        else:
            denominator = max(float(num_positions), 1e-9)
        return kl_sum / denominator * self.temperature ** 2

    def fused(self, student_logits: torch.Tensor, hard_labels: torch.Tensor, teacher_values: torch.Tensor | None,
              teacher_scale: torch.Tensor | None, teacher_zero_point: torch.Tensor | None,
              teacher_position_mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(total, hard, soft) as hard_loss + soft_loss_from_rows give them, in one chunked pass.

        student_logits (B, L, Vs); hard_labels (B, L); teacher_values (N, Vt) codes or floats at the N
        positions of teacher_position_mask (B, L), in row-major order, mapped by (q - zero_point) * scale
        with teacher_scale and teacher_zero_point (N,). Rows are read a chunk at a time, so neither a
        float32 copy of the logits nor their log-softmax is kept; the gradient of total is formed in the
        same pass. hard and soft are returned detached, for logging.
        """
        if teacher_values is not None and self.alpha > 0:
            self._common_vocab(student_logits.size(-1), teacher_values.size(-1))
        else:
            teacher_values = teacher_scale = teacher_zero_point = teacher_position_mask = None
        return _FusedDistillation.apply(student_logits, hard_labels, teacher_values, teacher_scale,
                                        teacher_zero_point, teacher_position_mask, self.temperature, self.alpha)

    def combine(self, hard: torch.Tensor, soft: torch.Tensor) -> torch.Tensor:
        """(1 - alpha) * hard + alpha * soft."""
        return (1.0 - self.alpha) * hard + self.alpha * soft

    def forward(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor | None,
                hard_labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The thesis's API (script.DistillationLoss) and, unfused, the tests' oracle for the fused path (fused).

        student_logits (B, L, Vs), teacher_logits (B, Lt, Vt) or (Lt, Vt) for B == 1 or None, hard_labels (B, L).
        """
        hard = self.hard_loss(student_logits, hard_labels)
        soft = torch.zeros((), device=student_logits.device, dtype=hard.dtype)
        if teacher_logits is not None and self.alpha > 0:
            if teacher_logits.dim() == 2:
                teacher_logits = teacher_logits.unsqueeze(0)  # (1, Lt, Vt)
            if teacher_logits.size(0) != student_logits.size(0):
                raise ValueError(f"teacher logits batch {tuple(teacher_logits.shape)} does not match "
                                 f"student logits {tuple(student_logits.shape)}")
            length = min(student_logits.size(1), teacher_logits.size(1))
            position_mask = hard_labels[:, :length] != IGNORE_INDEX  # (B, L')
            student_rows = student_logits[:, :length][position_mask]  # (N, Vs)
            teacher_rows = teacher_logits[:, :length][position_mask]  # (N, Vt)
            soft = self.soft_loss_from_rows(student_rows, teacher_rows, position_mask.sum())
        return self.combine(hard, soft), hard, soft


class _FusedDistillation(torch.autograd.Function):
    """CE and temperature-scaled KL over row chunks of the logits; the gradient is formed in forward."""

    @staticmethod
    def forward(ctx, student_logits, hard_labels, teacher_values, teacher_scale, teacher_zero_point,
                teacher_position_mask, temperature: float, alpha: float):
        vocab_size = student_logits.size(-1)
        logits = student_logits.reshape(-1, vocab_size)  # (R, Vs), a view
        labels = hard_labels.reshape(-1).to(logits.device)  # (R,)
        has_teacher = teacher_values is not None
        teacher_row = torch.full_like(labels, -1)  # (R,): row of teacher_values for each position, or -1
        if has_teacher:
            positions = teacher_position_mask.reshape(-1).nonzero().squeeze(1)
            teacher_row[positions] = torch.arange(positions.numel(), device=labels.device)
            kl_vocab = min(vocab_size, teacher_values.size(-1))
        ce_count = int((labels != IGNORE_INDEX).sum())
        kl_count = int((teacher_row >= 0).sum())
        ce_weight = (1.0 - alpha) / ce_count if ce_count else 0.0  # d total / d (sum of row CE)
        kl_weight = alpha * temperature ** 2 / max(kl_count, 1e-9)  # d total / d (sum of row KL)
        needs_grad = ctx.needs_input_grad[0]
        gradient = torch.zeros_like(logits) if needs_grad else None  # (R, Vs); rows without a loss stay 0
        ce_sum = logits.new_zeros((), dtype=torch.float32)
        kl_sum = logits.new_zeros((), dtype=torch.float32)
        chunk_rows = max(1, FUSED_CHUNK_VALUES // vocab_size)
        for start in range(0, logits.size(0), chunk_rows):  # contiguous row ranges: views, no gathers
            stop = min(start + chunk_rows, logits.size(0))
            row_labels, row_teacher = labels[start:stop], teacher_row[start:stop]  # (C,)
            labelled, taught = row_labels != IGNORE_INDEX, row_teacher >= 0
            any_labelled, any_taught = bool(labelled.any()), has_teacher and bool(taught.any())
            if not (any_labelled or any_taught):
                continue
            row_logits = logits[start:stop].float()  # (C, Vs); a view for float32 logits: never written
            row_gradient = gradient[start:stop].float() if needs_grad else None  # a view for float32
            if any_labelled:
                log_norm = torch.logsumexp(row_logits, dim=-1)  # (C,)
                targets = row_labels.clamp(min=0)[:, None]
                ce_sum += ((log_norm - row_logits.gather(1, targets)[:, 0]) * labelled).sum()
                if needs_grad:  # d CE / d logits = softmax - one_hot, on labelled rows
                    weight = (labelled * ce_weight).to(row_gradient.dtype)[:, None]  # (C, 1)
                    torch.sub(row_logits, log_norm[:, None], out=row_gradient)
                    row_gradient.exp_().mul_(weight)
                    row_gradient.scatter_add_(1, targets, -weight)
            if any_taught:
                every = bool(taught.all())
                teacher_index = row_teacher[taught]
                codes = teacher_values[teacher_index, :kl_vocab]  # (C', V)
                teacher_logits = dequantize_codes(codes, teacher_scale[teacher_index][:, None],
                                                  teacher_zero_point[teacher_index][:, None])
                teacher_log_probs = F.log_softmax(teacher_logits / temperature, dim=-1)  # (C', V)
                student_rows = row_logits[:, :kl_vocab] if every else row_logits[taught, :kl_vocab]
                student_log_probs = F.log_softmax(student_rows / temperature, dim=-1)
                teacher_probs = teacher_log_probs.exp()
                kl_sum += (teacher_probs * (teacher_log_probs - student_log_probs)).sum()
                if needs_grad:  # d (T^2 KL) / d logits = T (softmax(student / T) - teacher_probs)
                    student_log_probs.exp_().sub_(teacher_probs).mul_(kl_weight / temperature)
                    if every:
                        row_gradient[:, :kl_vocab] += student_log_probs
                    else:
                        row_gradient[taught, :kl_vocab] += student_log_probs
            if needs_grad and row_gradient.data_ptr() != gradient[start:stop].data_ptr():
                gradient[start:stop] = row_gradient  # a low-precision gradient: cast back once
        hard = ce_sum / ce_count if ce_count else ce_sum / 0.0  # nan with no label, as F.cross_entropy
        soft = kl_sum / max(kl_count, 1e-9) * temperature ** 2 if has_teacher else kl_sum
        total = (1.0 - alpha) * hard + alpha * soft
        ctx.mark_non_differentiable(hard, soft)
        if needs_grad:
            ctx.save_for_backward(gradient.view_as(student_logits))
        return total, hard, soft

    @staticmethod
    def backward(ctx, grad_total, grad_hard, grad_soft):
        (gradient,) = ctx.saved_tensors
        if grad_total.device.type == "cpu" and float(grad_total) == 1.0:
            return gradient, None, None, None, None, None, None, None  # the common case: no copy
        return gradient * grad_total, None, None, None, None, None, None, None
