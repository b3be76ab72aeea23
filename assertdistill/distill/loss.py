"""The distillation loss: (1 - alpha) * CE + alpha * T^2 * D(teacher, student), D forward KL as the thesis."""

from __future__ import annotations

import inspect
import math
import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..codec.codec import dequantize_codes
from ..core.constants import IGNORE_INDEX
from .divergences import (
    DEFAULT_DIVERGENCE,
    DEFAULT_JSD_BETA,
    DEFAULT_SKEW_LAMBDA,
    DIVERGENCES,
    Divergence,
    divergence_parameter,
)

FUSED_CHUNK_VALUES = 1 << 22  # logits per chunk of the fused loss (16 MB of float32): few, cache-sized ops
_FP16_GRADIENT_TOP = 15  # float16 gradient rows are stored scaled so their largest entry lies in [2^14, 2^15)


def divergence_per_position(student_rows: torch.Tensor, teacher_rows: torch.Tensor, temperature: float,
                            divergence: Divergence = DIVERGENCES[DEFAULT_DIVERGENCE],
                            parameter: float = 0.0) -> torch.Tensor:
    """D(softmax(teacher/T), softmax(student/T)) summed over the vocabulary, one value per row.

    student_rows: (N, V) logits; teacher_rows: (N, V) logits; returns (N,) float32 (float64 for float64 rows).
    """
    dtype = torch.promote_types(student_rows.dtype, torch.float32)
    student_log_probs = F.log_softmax(student_rows.to(dtype) / temperature, dim=-1)  # (N, V)
    teacher_log_probs = F.log_softmax(teacher_rows.to(dtype) / temperature, dim=-1).detach()  # (N, V)
    terms, _ = divergence.evaluate(teacher_log_probs, teacher_log_probs.exp(), student_log_probs, parameter, False)
    return terms.sum(dim=-1)


TEMPERATURE_SCHEDULES = ("linear", "cosine")


@dataclass(frozen=True)
class TemperatureSchedule:
    """T at each optimizer step: initial at step 0 to final (None: constant) at step total_steps - 1 and after."""

    initial: float
    final: float | None = None
    kind: str = "linear"  # TEMPERATURE_SCHEDULES
    total_steps: int = 1

    def __post_init__(self):
        if self.kind not in TEMPERATURE_SCHEDULES:
            raise ValueError(f"unknown temperature schedule {self.kind!r}; choose linear or cosine")
        if self.initial <= 0 or (self.final is not None and self.final <= 0):
            raise ValueError(f"temperatures must be > 0, got {self.initial} and {self.final}")

    def at(self, step: int) -> float:
        """The temperature of optimizer step `step` (0-based), a pure function of the step: resumes restore it."""
        if self.final is None:
            return self.initial
        progress = min(max(step / max(self.total_steps - 1, 1), 0.0), 1.0)
        if self.kind == "cosine":
            progress = (1.0 - math.cos(math.pi * progress)) / 2.0
        return self.initial + (self.final - self.initial) * progress


class DistillationLoss(torch.nn.Module):
    """total = (1 - alpha) * CE(labels, ignore -100) + alpha * T^2 * mean over label positions of D.

    D(softmax(teacher / T), softmax(student / T)) is summed over the vocabulary and averaged over the
    positions whose label is not -100; D is forward KL (the thesis) unless `divergence` names another
    of divergences.CHOICES (jsd reads jsd_beta, skew_kl and skew_reverse_kl read skew_lambda). When
    sequence lengths or vocabulary sizes differ, both are cut to the smaller. The soft term is 0 when
    there are no teacher logits or alpha is 0 (as the thesis). forward returns (total, hard, soft).
    teacher_text_weight (the CE on the teacher's text) is applied by forward.batch_losses, which runs
    the student on that text too; docs/LOSSES.md.
    """

    def __init__(self, temperature: float, alpha: float, divergence: str = DEFAULT_DIVERGENCE,
                 jsd_beta: float = DEFAULT_JSD_BETA, skew_lambda: float = DEFAULT_SKEW_LAMBDA,
                 teacher_text_weight: float = 0.0):
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        if teacher_text_weight < 0:
            raise ValueError(f"teacher_text_weight must be >= 0, got {teacher_text_weight}")
        self.teacher_text_weight = float(teacher_text_weight)  # read by forward.batch_losses
        self.parameter = divergence_parameter(divergence, jsd_beta, skew_lambda)
        self.divergence = DIVERGENCES[divergence]
        self.temperature = float(temperature)
        self.schedule = TemperatureSchedule(self.temperature)  # run.py sets --temperature_final's schedule
        self.alpha = float(alpha)
        self._warned_vocab_mismatch = False

    @classmethod
    def from_config(cls, config) -> "DistillationLoss":
        """The loss of a run: every keyword of __init__ taken from the run setting of the same name.

        So a new loss setting is one RunConfig field plus the keyword that uses it, nothing in between.
        """
        names = inspect.signature(cls.__init__).parameters
        settings = {name: getattr(config, name) for name in names if name != "self" and hasattr(config, name)}
        return cls(alpha=config.alpha_kl_loss_weight, **settings)

    def at_step(self, step: int) -> float:
        """Set and return the temperature of optimizer step `step` under self.schedule."""
        self.temperature = float(self.schedule.at(step))
        return self.temperature

    def hard_loss(self, student_logits: torch.Tensor, hard_labels: torch.Tensor) -> torch.Tensor:
        """Cross-entropy over label positions; student_logits (B, L, V), hard_labels (B, L)."""
        vocab_size = student_logits.size(-1)
        return F.cross_entropy(student_logits.reshape(-1, vocab_size).float(), hard_labels.reshape(-1),
                               ignore_index=IGNORE_INDEX)

    def _common_vocab(self, student_vocab: int, teacher_vocab: int) -> int:
        if student_vocab != teacher_vocab and not self._warned_vocab_mismatch:
            warnings.warn(f"student vocabulary ({student_vocab}) and teacher vocabulary ({teacher_vocab}) "
                          f"differ: the soft term uses the first {min(student_vocab, teacher_vocab)} entries",
                          stacklevel=3)
            self._warned_vocab_mismatch = True
        return min(student_vocab, teacher_vocab)

    def soft_loss_from_rows(self, student_rows: torch.Tensor, teacher_rows: torch.Tensor,
                            num_positions: int | torch.Tensor) -> torch.Tensor:
        """T^2 * sum of per-row D / num_positions; rows (N, Vs) and (N, Vt) hold only counted positions."""
        vocab = self._common_vocab(student_rows.size(-1), teacher_rows.size(-1))
        value_sum = divergence_per_position(student_rows[:, :vocab], teacher_rows[:, :vocab], self.temperature,
                                            self.divergence, self.parameter).sum()
        if isinstance(num_positions, torch.Tensor):
            denominator = num_positions.to(value_sum.dtype).clamp(min=1e-9)
        else:
            denominator = max(float(num_positions), 1e-9)
        return value_sum / denominator * self.temperature ** 2

    def fused(self, student_logits: torch.Tensor, hard_labels: torch.Tensor, teacher_values: torch.Tensor | None,
              teacher_scale: torch.Tensor | None, teacher_zero_point: torch.Tensor | None,
              teacher_position_mask: torch.Tensor | None,
              alpha: float | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(total, hard, soft) as hard_loss + soft_loss_from_rows give them, in one chunked pass.

        student_logits (B, L, Vs); hard_labels (B, L); teacher_values (N, Vt) codes or floats at the N
        positions of teacher_position_mask (B, L), in row-major order, mapped by (q - zero_point) * scale
        with teacher_scale and teacher_zero_point (N,). Rows are read a chunk at a time, so neither a
        float32 copy of the logits nor their log-softmax is kept; the gradient of total is formed in the
        same pass (its backward runs once). hard and soft are returned detached, for logging.
        alpha overrides self.alpha for this call (on_policy: 1.0, the soft term alone).
        """
        alpha = self.alpha if alpha is None else alpha
        if teacher_values is not None and alpha > 0:
            self._common_vocab(student_logits.size(-1), teacher_values.size(-1))
            teacher = (teacher_values, teacher_scale, teacher_zero_point, teacher_position_mask)
        else:
            teacher = None
        return _FusedDistillation.apply(student_logits, hard_labels, teacher, self.temperature, alpha,
                                        self.divergence, self.parameter)

    def text_loss(self, student_logits: torch.Tensor, text_labels: torch.Tensor) -> torch.Tensor:
        """CE of student_logits (B, L, V) on other targets (B, L) (the teacher's text), through the fused path."""
        return _FusedDistillation.apply(student_logits, text_labels, None, self.temperature, 0.0, self.divergence,
                                        self.parameter)[0]

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


def _chunk_plan(labels: torch.Tensor, teacher_position_mask: torch.Tensor | None, chunk_rows: int):
    """Host-side plan of the chunk loop, read with one copy per mask instead of syncs inside the loop.

    Returns (CE row count, teacher row count, teacher row positions (N,) on labels' device or None,
    [(start, stop, any labelled, teacher rows first, teacher rows stop)]).
    """
    labelled = (labels != IGNORE_INDEX).cpu()  # (R,)
    rows = labels.numel()
    starts = torch.arange(0, rows, chunk_rows)
    bounds = torch.zeros(len(starts) + 1, dtype=torch.long)
    positions = None
    if teacher_position_mask is not None:
        positions_host = teacher_position_mask.reshape(-1).cpu().nonzero().squeeze(1)  # (N,) ascending
        bounds = torch.searchsorted(positions_host, torch.cat([starts, torch.tensor([rows])]))
        positions = positions_host.to(labels.device, non_blocking=True)
    cumulative = torch.cat([torch.zeros(1, dtype=torch.long), labelled.cumsum(0)])  # labelled rows before r
    stops = torch.clamp(starts + chunk_rows, max=rows)
    labelled_in = (cumulative[stops] - cumulative[starts]).tolist()
    plan = [(start, stop, labelled_in[i] > 0, first, last)
            for i, (start, stop, first, last) in enumerate(zip(starts.tolist(), stops.tolist(),
                                                               bounds[:-1].tolist(), bounds[1:].tolist()))]
    return int(cumulative[-1]), int(bounds[-1] - bounds[0]), positions, plan


def _store_rows(gradient: torch.Tensor, row_scale: torch.Tensor | None, start: int, stop: int,
                row_gradient: torch.Tensor) -> None:
    """Write a float32 chunk gradient (C, V) into the buffer; float16 rows are scaled by a power of two first.

    Unscaled, most entries of a float16 gradient would be below float16's smallest normal and flush to
    zero before backward multiplies by a GradScaler's factor; row_scale (R,) holds each row's undo factor.
    """
    if row_scale is not None:
        largest = row_gradient.abs().amax(dim=-1)  # (C,)
        exponent = torch.frexp(largest).exponent.clamp(-100, 100)  # largest = m * 2^exponent, 0.5 <= m < 1
        factor = torch.ldexp(torch.ones_like(largest), _FP16_GRADIENT_TOP - exponent)  # (C,) powers of two
        row_gradient.mul_(factor[:, None])
        row_scale[start:stop] = factor.reciprocal_()
    if row_gradient.data_ptr() != gradient[start:stop].data_ptr():
        gradient[start:stop] = row_gradient  # a low-precision gradient: cast back once


class _FusedDistillation(torch.autograd.Function):
    """CE and temperature-scaled divergence over row chunks of the logits; the gradient is formed in forward."""

    @staticmethod
    def forward(ctx, student_logits, hard_labels, teacher, temperature: float, alpha: float,
                divergence: Divergence, parameter: float):
        vocab_size = student_logits.size(-1)
        logits = student_logits.reshape(-1, vocab_size)  # (R, Vs), a view
        labels = hard_labels.reshape(-1).to(logits.device)  # (R,)
        teacher_values, teacher_scale, teacher_zero_point, teacher_mask = teacher or (None,) * 4
        has_teacher = teacher is not None
        kl_vocab = min(vocab_size, teacher_values.size(-1)) if has_teacher else 0
        chunk_rows = max(1, FUSED_CHUNK_VALUES // vocab_size)
        ce_count, kl_count, positions, plan = _chunk_plan(labels, teacher_mask, chunk_rows)
        ce_weight = (1.0 - alpha) / ce_count if ce_count else 0.0  # d total / d (sum of row CE)
        kl_weight = alpha * temperature ** 2 / max(kl_count, 1e-9)  # d total / d (sum of row D)
        needs_grad = ctx.needs_input_grad[0]
        gradient = torch.zeros_like(logits) if needs_grad else None  # (R, Vs); rows without a loss stay 0
        row_scale = torch.ones(logits.size(0), device=logits.device) \
            if needs_grad and logits.dtype == torch.float16 else None  # (R,)
        ce_sum = logits.new_zeros((), dtype=torch.float32)
        kl_sum = logits.new_zeros((), dtype=torch.float32)
        for start, stop, any_labelled, first, last in plan:  # contiguous row ranges: views, no gathers
            if not (any_labelled or last > first):
                continue
            row_labels = labels[start:stop]  # (C,)
            row_logits = logits[start:stop].float()  # (C, Vs); a view for float32 logits: never written
            row_gradient = None
            if needs_grad:
                row_gradient = gradient[start:stop] if gradient.dtype == torch.float32 else \
                    torch.zeros_like(row_logits)  # (C, Vs) float32
            if any_labelled:
                labelled = row_labels != IGNORE_INDEX  # (C,)
                log_norm = torch.logsumexp(row_logits, dim=-1)  # (C,)
                targets = row_labels.clamp(min=0)[:, None]
                ce_sum += ((log_norm - row_logits.gather(1, targets)[:, 0]) * labelled).sum()
                if needs_grad:  # d CE / d logits = softmax - one_hot, on labelled rows
                    weight = (labelled * ce_weight).to(row_gradient.dtype)[:, None]  # (C, 1)
                    torch.sub(row_logits, log_norm[:, None], out=row_gradient)
                    row_gradient.exp_().mul_(weight)
                    row_gradient.scatter_add_(1, targets, -weight)
            if last > first:  # teacher rows first..last belong to this chunk, in row order
                every = last - first == stop - start
                local = None if every else positions[first:last] - start  # (C',) rows of this chunk
                teacher_logits = dequantize_codes(teacher_values[first:last, :kl_vocab],
                                                  teacher_scale[first:last, None],
                                                  teacher_zero_point[first:last, None])  # (C', V)
                teacher_log_probs = F.log_softmax(teacher_logits / temperature, dim=-1)  # (C', V)
                student_rows = row_logits[:, :kl_vocab] if every else row_logits[:, :kl_vocab].index_select(0, local)
                student_log_probs = F.log_softmax(student_rows / temperature, dim=-1)
                teacher_probs = teacher_log_probs.exp()
                terms, row_soft = divergence.evaluate(teacher_log_probs, teacher_probs, student_log_probs, parameter,
                                                      needs_grad)  # (C', V) each; row_soft = dD/ds
                kl_sum += terms.sum()
                if needs_grad:  # d (T^2 D) / d logits = T dD/ds, s = logits / T
                    row_soft.mul_(kl_weight / temperature)
                    if every:
                        row_gradient[:, :kl_vocab] += row_soft
                    else:
                        row_gradient[:, :kl_vocab].index_add_(0, local, row_soft)
            if needs_grad:
                _store_rows(gradient, row_scale, start, stop, row_gradient)
        hard = ce_sum / ce_count if ce_count else ce_sum / 0.0  # nan with no label, as F.cross_entropy
        soft = kl_sum / max(kl_count, 1e-9) * temperature ** 2 if has_teacher else kl_sum
        total = (1.0 - alpha) * hard + alpha * soft
        ctx.mark_non_differentiable(hard, soft)
        if needs_grad:
            ctx.save_for_backward(gradient.view_as(student_logits), row_scale)
        ctx.backward_done = False
        return total, hard, soft

    @staticmethod
    def backward(ctx, grad_total, grad_hard, grad_soft):
        if ctx.backward_done:
            raise RuntimeError("the fused distillation loss's backward runs once (its gradient is scaled in "
                               "place); compute the loss again instead of retain_graph")
        ctx.backward_done = True
        gradient, row_scale = ctx.saved_tensors  # (B, L, V), (R,) or None
        factor = grad_total.reshape(1).float()  # 1-D: the product is formed in float32 for every gradient dtype
        if row_scale is not None:
            gradient.view(-1, gradient.size(-1)).mul_(row_scale[:, None] * factor)  # one rounding to float16
        elif grad_total.device.type != "cpu" or float(grad_total) != 1.0:  # the common CPU case: untouched
            gradient.mul_(factor)  # in place: no second (B, L, V) tensor
        return gradient, None, None, None, None, None, None
