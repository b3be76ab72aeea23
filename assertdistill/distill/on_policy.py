"""Distillation from the online teacher: its logits per batch, on-policy steps on the student's samples, hidden states.

One training batch's loss with `--teacher_source online`:

    total = (1 - alpha) CE(ground truth) + alpha T^2 D(teacher || student on targets y) (+ w_text CE(teacher text))
            (+ w_hidden hidden-state distance, distill/hidden_states.py)

On an off-policy step y is the ground truth (the thesis's loss, with the teacher's logits computed now
instead of read from the archive). On an on-policy step (a share --lmbda of the optimizer steps, as
GKD's lmbda) y is the student's own sample, drawn at --student_sampling_temperature, at most
--student_max_tgt_length tokens; the teacher scores that sequence and D is taken per generated token.
The hard CE term stays on the ground truth on both kinds of step (there is no ground truth for a
sample), so alpha keeps its meaning; with --divergence jsd --jsd_beta b and alpha 1 this is GKD's loss.

Whether a step is on-policy and what a record samples are pure functions of (seed, optimizer step,
rank, batch): every process decides the same, a resumed run draws the same samples, and the global
random streams (dropout) are not touched.
"""

from __future__ import annotations

import random

import torch
from transformers.modeling_outputs import BaseModelOutput

from ..core.constants import IGNORE_INDEX
from ..model.generation import DecodingSettings, generate
from ..model.precision import autocast_context
from ..teacher.online import (
    OnlineTeacher,
    as_labels,
    sequence_targets,
    stored_vs_online_kl,
    teacher_rows,
)
from .config import SettingError
from .forward import BatchLosses, student_logits_for
from .hidden_states import StudentWithProjection, hidden_state_loss
from .loss import DistillationLoss

_SEED_MIX = (1_000_003, 10_007, 101)  # distinct odd multipliers of step, rank and batch in the derived seeds


def is_on_policy_step(seed: int, step: int, lmbda: float) -> bool:
    """Whether optimizer step `step` trains on the student's samples: a seeded draw < lmbda, the same on every rank."""
    if lmbda <= 0:
        return False
    return lmbda >= 1 or random.Random(seed * _SEED_MIX[0] + step).random() < lmbda


def sampling_seed(seed: int, step: int, rank: int, batch_index: int) -> int:
    """The seed of one batch's samples on one process, at one optimizer step."""
    return (seed * _SEED_MIX[0] + step * _SEED_MIX[1] + rank * _SEED_MIX[2] + batch_index) % (2 ** 63)


class SampleFromLogits:
    """A logits processor that turns greedy decoding into sampling: the drawn token gets 0, every other -inf.

    Draws from softmax(scores / temperature) with its own torch.Generator, so decoding.decode's fast
    greedy loop (and model.generate's greedy search) return samples.
    """

    def __init__(self, temperature: float, seed: int, device: torch.device):
        self.temperature = temperature
        self.generator = torch.Generator(device=device).manual_seed(seed)

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        probabilities = torch.softmax(scores.float() / self.temperature, dim=-1)  # (rows, V)
        drawn = torch.multinomial(probabilities, 1, generator=self.generator)  # (rows, 1)
        chosen = torch.full_like(scores, float("-inf"))
        return chosen.scatter_(1, drawn, 0.0)


@torch.no_grad()
def sample_targets(student: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                   max_length: int, temperature: float, seed: int, precision: str = "fp32") -> torch.Tensor:
    """The student's sampled targets as labels (B, L) (eos kept, -100 after it), drawn in eval mode (no dropout)."""
    was_training = student.training
    student.eval()
    try:
        with autocast_context(input_ids.device, precision):
            generated = generate(student, input_ids, attention_mask, DecodingSettings(1, max_length),
                                 logits_processor=SampleFromLogits(temperature, seed, input_ids.device))
    finally:
        student.train(was_training)
    return as_labels(sequence_targets(generated, student.config.eos_token_id), input_ids.device)


def _stacked(batch: dict, label_sets: list[torch.Tensor]) -> dict:
    """The batch once per label set (B, L_i), the labels padded to one length: (kB, L')."""
    length = max(labels.size(1) for labels in label_sets)
    padded = [torch.nn.functional.pad(labels, (0, length - labels.size(1)), value=IGNORE_INDEX)
              for labels in label_sets]
    copies = len(label_sets)
    stacked = dict(batch, input_ids=batch["input_ids"].repeat(copies, 1),
                   attention_mask=batch["attention_mask"].repeat(copies, 1), labels=torch.cat(padded))
    if batch.get("encoder_outputs") is not None:
        states = batch["encoder_outputs"].last_hidden_state  # (B, S, d)
        stacked["encoder_outputs"] = BaseModelOutput(last_hidden_state=states.repeat(copies, 1, 1))
    return stacked


def check_online_settings(config) -> None:
    """Refuse --lmbda or --hidden_state_weight without --teacher_source online, in one line."""
    if config.teacher_source != "online" and (config.lmbda > 0 or config.hidden_state_weight > 0):
        raise SettingError("--lmbda and --hidden_state_weight need --teacher_source online (the archive holds no "
                           "teacher scores of the student's samples, nor hidden states)")


def load_online_teacher(config, student: torch.nn.Module, tokenizer, device: torch.device) -> OnlineTeacher:
    """--teacher_model_name as an online teacher on the device, refused when its vocabulary is not the student's."""
    return OnlineTeacher.load(config.teacher_model_name, device, config.precision, student.config.vocab_size,
                              tokenizer)


class OnlineDistillation:
    """The losses of a run with --teacher_source online: Trainer's `losses` and the evaluation's teacher rows."""

    def __init__(self, teacher: OnlineTeacher, student: torch.nn.Module, tokenizer, config, rank: int = 0):
        self.teacher = teacher
        self.student = student  # the plain module: sampling uses it
        self.tokenizer = tokenizer
        self.config = config
        self.rank = rank
        self.stored_kl: float | None = None  # KL(stored || online) per position, when the archive holds logits
        self.step_source = lambda: 0  # the Trainer's optimizer step (set by the run once the Trainer exists)

    @property
    def hidden_states(self) -> bool:
        return self.config.hidden_state_weight > 0

    def wrap(self, training_model: torch.nn.Module) -> torch.nn.Module:
        """The model the Trainer steps: with --hidden_state_weight, the student with its projection."""
        if not self.hidden_states:
            return training_model
        return StudentWithProjection(training_model, self.student.config.d_model, self.teacher.width)

    def teacher_text_labels(self, batch: dict, split: str, num_beams: int = 1) -> torch.Tensor:
        """The archive's teacher-text targets, each record without one filled with the teacher's generation
        (greedy in training, as the archives' training predictions; cached: the teacher is frozen)."""
        labels = batch.get("teacher_labels")
        empty = [index for index in range(batch["input_ids"].size(0))
                 if labels is None or not bool((labels[index] != IGNORE_INDEX).any())]
        if not empty:
            return labels
        generated = self.teacher.texts(batch, split, num_beams, self.config.student_max_tgt_length)
        targets = [generated[index] if index in empty else
                   [token for token in labels[index].tolist() if token != IGNORE_INDEX]
                   for index in range(batch["input_ids"].size(0))]
        return as_labels(targets, batch["input_ids"].device)

    def __call__(self, model, batch: dict, loss_fn: DistillationLoss, precision: str = "fp32") -> BatchLosses:
        """One training batch's losses (the module docstring's formula); the graph runs through `model`."""
        config = self.config
        labels = batch["labels"]  # (B, L) ground truth
        size = labels.size(0)
        step = self.step_source()
        on_policy = is_on_policy_step(config.seed, step, config.lmbda)
        label_sets = [labels]
        if on_policy:
            seed = sampling_seed(config.seed, step, self.rank, int(batch.get("batch_index", 0)))
            label_sets.append(sample_targets(self.student, batch["input_ids"], batch["attention_mask"],
                                             config.student_max_tgt_length, config.student_sampling_temperature,
                                             seed, precision))
        text_weight = loss_fn.teacher_text_weight
        if text_weight > 0:
            label_sets.append(self.teacher_text_labels(batch, "training"))
        soft_labels = label_sets[1] if on_policy else labels  # the targets the teacher scores
        with autocast_context(batch["input_ids"].device, precision):
            scored = self.teacher.score(batch["input_ids"], batch["attention_mask"], soft_labels,
                                        self.hidden_states and not on_policy)
            truth_states = (self.teacher.score(batch["input_ids"], batch["attention_mask"], labels, True)
                            if self.hidden_states and on_policy else scored)
            stacked = _stacked(batch, label_sets)
            student_logits = student_logits_for(model, stacked)  # (kB, L', V)
        rows = teacher_rows(scored.logits, soft_labels)
        length = stacked["labels"].size(1)
        mask = torch.nn.functional.pad(rows["teacher_position_mask"], (0, length - soft_labels.size(1)), value=False)
        if on_policy:  # CE on the truth; the soft term alone on the samples
            total, hard, _ = loss_fn.fused(student_logits[:size], stacked["labels"][:size], None, None, None, None)
            soft_total, _, soft = loss_fn.fused(student_logits[size:2 * size], stacked["labels"][size:2 * size],
                                                rows["teacher_values"], rows["teacher_scale"],
                                                rows["teacher_zero_point"], mask, alpha=1.0)
            total = total + loss_fn.alpha * soft_total
        else:
            total, hard, soft = loss_fn.fused(student_logits[:size], stacked["labels"][:size], rows["teacher_values"],
                                              rows["teacher_scale"], rows["teacher_zero_point"], mask)
        text = torch.zeros_like(hard)
        if text_weight > 0:
            text = loss_fn.text_loss(student_logits[-size:], stacked["labels"][-size:])
            total = total + text_weight * text
            text = text.detach()
        if self.hidden_states:
            total = total + config.hidden_state_weight * hidden_state_loss(
                model, size, truth_states.encoder_states, truth_states.decoder_states, batch["attention_mask"],
                labels, config.hidden_state_loss, config.hidden_state_layers)
        return BatchLosses(total, hard, soft, text)

    def measure_stored_kl(self, loader, temperature: float, context) -> None:
        """Set stored_kl: KL(stored || online) per position over every process's share (None: no stored logits)."""
        shares = context.gather(stored_vs_online(self.teacher, loader, temperature))
        total, positions = sum(share[0] for share in shares), sum(share[1] for share in shares)
        self.stored_kl = total / positions if positions else None
        if self.stored_kl is not None:
            print(f"Archive vs online teacher: KL(stored || online) {self.stored_kl:.4f} per position at T "
                  f"{temperature} over {positions} validation positions")

    def evaluation_batches(self, loader):
        """The loader's batches with the teacher's rows at the targets (for the eval soft loss) and, for records
        whose archive holds no teacher text, the teacher's own beam-search prediction (evaluation scores it)."""
        for item in loader:
            if not isinstance(item, dict):
                yield item
                continue
            batch = {key: (value.to(self.teacher.device) if isinstance(value, torch.Tensor) else value)
                     for key, value in item.items()}
            scored = self.teacher.score(batch["input_ids"], batch["attention_mask"], batch["labels"])
            empty = [index for index, text in enumerate(batch["teacher_texts"]) if not text]
            if empty:
                generated = self.teacher.texts(batch, "validation", self.config.num_beams,
                                               self.config.student_max_tgt_length)
                for index in empty:
                    text = self.tokenizer.decode(generated[index], skip_special_tokens=True)
                    batch["teacher_texts"][index] = batch["teacher_texts_script1"][index] = text
                if "teacher_labels" in batch:
                    batch["teacher_labels"] = self.teacher_text_labels(batch, "validation", self.config.num_beams)
            batch.update(teacher_rows(scored.logits, batch["labels"]))
            yield batch


def stored_vs_online(teacher: OnlineTeacher, loader, temperature: float) -> tuple[float, int]:
    """(sum over positions of KL(stored || online teacher) at T, positions) over a loader's batches (archive logits)."""
    total, positions = 0.0, 0
    for item in loader:
        if not isinstance(item, dict):
            continue
        batch = {key: (value.to(teacher.device) if isinstance(value, torch.Tensor) else value)
                 for key, value in item.items()}
        scored = teacher.score(batch["input_ids"], batch["attention_mask"], batch["labels"])
        value, count = stored_vs_online_kl(batch, scored.logits, temperature)
        total, positions = total + value, positions + count
    return total, positions
