"""The thesis distillation loss: (1 - alpha) * CE + alpha * T^2 * KL(teacher || student)."""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100


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

    def combine(self, hard: torch.Tensor, soft: torch.Tensor) -> torch.Tensor:
        """(1 - alpha) * hard + alpha * soft."""
        return (1.0 - self.alpha) * hard + self.alpha * soft

    def forward(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor | None,
                hard_labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """student_logits (B, L, Vs), teacher_logits (B, Lt, Vt) or (Lt, Vt) for B == 1 or None, hard_labels (B, L)."""
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
