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

DistiLLM's adaptive off-policy replay (--replay_buffer_size N, --lmbda_schedule adaptive): each process keeps
its last N sampled (source, sample) records; an on-policy step samples afresh while the buffer fills and
then with probability (1 - training progress), and otherwise takes the soft term on records drawn from
the buffer (no sampling: the cheap step). With --lmbda_schedule adaptive the on-policy share starts at
--lmbda and rises by 0.1 after each evaluation whose held-out CE is --adaptive_lmbda_eps above the last
reference. The step kinds are decided in step order from state every process holds alike (StepPlan), and
checkpoints keep the kinds, the share and every process's buffer, so a resume continues exactly.
"""

from __future__ import annotations

import random

import torch
from transformers.modeling_outputs import BaseModelOutput

from ..core.constants import IGNORE_INDEX
from ..data.replay_buffer import ReplayBuffer
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
from .forward import BatchLosses, batch_losses, student_logits_for
from .hidden_states import StudentWithProjection, hidden_state_loss
from .loss import DistillationLoss

_SEED_MIX = (1_000_003, 10_007, 101)  # distinct odd multipliers of step, rank and batch in the derived seeds


TRUTH, SAMPLE, REPLAY = "t", "s", "r"  # a step's soft term on: the ground truth, fresh samples, replayed samples
ADAPTIVE_LMBDA_STEP = 0.1  # DistiLLM's rise of the on-policy share after a held-out loss rise


def _step_draw(seed: int, step: int) -> float:
    """The uniform draw that decides optimizer step `step`'s kind (the same on every rank)."""
    return random.Random(seed * _SEED_MIX[0] + step).random()


def is_on_policy_step(seed: int, step: int, lmbda: float) -> bool:
    """Whether optimizer step `step` trains on the student's samples: a seeded draw < lmbda, the same on every rank."""
    if lmbda <= 0:
        return False
    return lmbda >= 1 or _step_draw(seed, step) < lmbda


class StepPlan:
    """Each optimizer step's kind (TRUTH, SAMPLE or REPLAY), decided in step order; the same on every process.

    Without a replay buffer a step is on-policy (SAMPLE) when is_on_policy_step says so. With one, an
    on-policy step samples while the buffer fills (sampled steps x records per step < capacity) or when its
    draw is below lmbda x (1 - step / total_steps), DistiLLM's decreasing share of fresh samples, and
    replays otherwise. lmbda moves only in after_evaluation (the adaptive schedule).
    """

    def __init__(self, seed: int, lmbda: float, capacity: int, total_steps: int, records_per_step: int,
                 schedule: str = "constant", eps: float = 0.1):
        self.seed, self.lmbda, self.capacity = seed, lmbda, capacity
        self.total_steps, self.records_per_step = max(1, total_steps), records_per_step
        self.schedule, self.eps = schedule, eps
        self.kinds: list[str] = []  # kinds[s]: optimizer step s's kind, for every step decided so far
        self.sampled_steps = 0
        self.reference_loss: float | None = None  # the adaptive schedule's last reference held-out CE

    def kind(self, step: int) -> str:
        """Optimizer step `step`'s kind, deciding every earlier step first."""
        while len(self.kinds) <= step:
            decided = self._decide(len(self.kinds))
            self.sampled_steps += decided == SAMPLE
            self.kinds.append(decided)
        return self.kinds[step]

    def _decide(self, step: int) -> str:
        if not is_on_policy_step(self.seed, step, self.lmbda):
            return TRUTH
        if not self.capacity:
            return SAMPLE
        filling = self.sampled_steps * self.records_per_step < self.capacity
        fresh = _step_draw(self.seed, step) < self.lmbda * (1 - step / self.total_steps)  # the same draw
        return SAMPLE if filling or fresh else REPLAY

    def counts(self, start: int, end: int) -> tuple[int, int]:
        """(on-policy steps, of which replayed) among optimizer steps start .. end - 1."""
        kinds = "".join(self.kind(step) for step in range(start, end))
        return len(kinds) - kinds.count(TRUTH), kinds.count(REPLAY)

    def after_evaluation(self, held_out_ce: float) -> None:
        """The adaptive schedule: lmbda += 0.1 (at most 1) when held_out_ce >= reference + eps; the first sets it."""
        if self.schedule != "adaptive":
            return
        if self.reference_loss is None:
            self.reference_loss = held_out_ce
        elif held_out_ce >= self.reference_loss + self.eps:
            self.lmbda = min(1.0, round(self.lmbda + ADAPTIVE_LMBDA_STEP, 10))
            self.reference_loss = held_out_ce

    def state_dict(self) -> dict:
        """The plan as JSON values."""
        return {"kinds": "".join(self.kinds), "lmbda": self.lmbda, "reference_loss": self.reference_loss}

    def load_state_dict(self, state: dict) -> None:
        """Restore what state_dict() gave."""
        self.kinds, self.lmbda, self.reference_loss = list(state["kinds"]), state["lmbda"], state["reference_loss"]
        self.sampled_steps = self.kinds.count(SAMPLE)


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
    """Refuse the online teacher's settings without --teacher_source online, and a replay buffer with no
    on-policy steps to fill it, in one line."""
    adaptive = config.lmbda_schedule == "adaptive"
    if config.teacher_source != "online" and (config.lmbda > 0 or config.hidden_state_weight > 0 or adaptive
                                              or config.replay_buffer_size > 0):
        raise SettingError("--lmbda, --lmbda_schedule adaptive, --replay_buffer_size and --hidden_state_weight need "
                           "--teacher_source online (the archive holds no teacher scores of the student's samples, "
                           "nor hidden states)")
    if config.replay_buffer_size > 0 and config.lmbda <= 0 and not adaptive:
        raise SettingError("--replay_buffer_size needs on-policy steps to fill it: --lmbda above 0 or "
                           "--lmbda_schedule adaptive")


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
        self.plan = StepPlan(config.seed, config.lmbda, config.replay_buffer_size, 1, 1, config.lmbda_schedule,
                             config.adaptive_lmbda_eps)
        self.buffer = ReplayBuffer(config.replay_buffer_size) if config.replay_buffer_size > 0 else None

    def set_schedule(self, total_steps: int, records_per_step: int) -> None:
        """The run's optimizer steps and this process's records per step (the replay's fresh share and fill)."""
        self.plan.total_steps, self.plan.records_per_step = max(1, total_steps), records_per_step

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
        kind = self.plan.kind(step)
        seed = sampling_seed(config.seed, step, self.rank, int(batch.get("batch_index", 0)))
        if kind == REPLAY and not len(self.buffer):  # this process has had no batch on a sampled step yet
            kind = SAMPLE
        label_sets = [labels]
        if kind == SAMPLE:
            samples = sample_targets(self.student, batch["input_ids"], batch["attention_mask"],
                                     config.student_max_tgt_length, config.student_sampling_temperature, seed, precision)
            label_sets.append(samples)
            if self.buffer is not None:
                self.buffer.add(batch["input_ids"], batch["attention_mask"], samples)
        text_weight = loss_fn.teacher_text_weight
        if text_weight > 0:
            label_sets.append(self.teacher_text_labels(batch, "training"))
        soft_batch = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"],
                      "labels": label_sets[1] if kind == SAMPLE else labels}  # what the teacher scores
        if kind == REPLAY:
            soft_batch = self.buffer.draw(size, seed, self.student.config.pad_token_id, labels.device)
        with autocast_context(batch["input_ids"].device, precision):
            scored = self.teacher.score(soft_batch["input_ids"], soft_batch["attention_mask"], soft_batch["labels"],
                                        self.hidden_states and kind == TRUTH)
            truth_states = (self.teacher.score(batch["input_ids"], batch["attention_mask"], labels, True)
                            if self.hidden_states and kind != TRUTH else scored)
            # the replayed records first: the hidden-state loss reads the model's last forward, the batch's
            replayed_logits = student_logits_for(model, soft_batch) if kind == REPLAY else None  # (B', L'', V)
            stacked = _stacked(batch, label_sets)
            student_logits = student_logits_for(model, stacked)  # (kB, L', V)
        rows = teacher_rows(scored.logits, soft_batch["labels"])
        if kind == TRUTH:
            length = stacked["labels"].size(1)
            mask = torch.nn.functional.pad(rows["teacher_position_mask"], (0, length - labels.size(1)), value=False)
            total, hard, soft = loss_fn.fused(student_logits[:size], stacked["labels"][:size], rows["teacher_values"],
                                              rows["teacher_scale"], rows["teacher_zero_point"], mask)
        else:  # CE on the truth; the soft term alone on the samples (fresh or replayed)
            total, hard, _ = loss_fn.fused(student_logits[:size], stacked["labels"][:size], None, None, None, None)
            if kind == SAMPLE:
                soft_logits, soft_labels = student_logits[size:2 * size], stacked["labels"][size:2 * size]
            else:
                soft_logits, soft_labels = replayed_logits, soft_batch["labels"]
            mask = torch.nn.functional.pad(rows["teacher_position_mask"],
                                           (0, soft_labels.size(1) - soft_batch["labels"].size(1)), value=False)
            soft_total, _, soft = loss_fn.fused(soft_logits, soft_labels, rows["teacher_values"], rows["teacher_scale"],
                                                rows["teacher_zero_point"], mask, alpha=1.0)
            total = total + loss_fn.alpha * soft_total
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

    def truth_losses(self, model, batch: dict, loss_fn: DistillationLoss, precision: str = "fp32") -> BatchLosses:
        """The off-policy losses of a batch (the teacher scores its ground truth): no sampling, the buffer untouched
        (Trainer's diagnosis of a non-finite loss, record by record)."""
        with autocast_context(batch["input_ids"].device, precision):
            scored = self.teacher.score(batch["input_ids"], batch["attention_mask"], batch["labels"])
        return batch_losses(model, dict(batch, **teacher_rows(scored.logits, batch["labels"])), loss_fn, precision)

    def state_dict(self, context) -> tuple[dict, list | None]:
        """(the step plan as JSON values, every process's replay buffer or None), gathered: a collective."""
        buffers = context.gather(self.buffer.state_dict()) if self.buffer is not None else None
        return self.plan.state_dict(), buffers

    def load_state_dict(self, plan: dict, buffers: list | None, rank: int) -> None:
        """Restore the plan and this process's buffer from what state_dict() gave."""
        self.plan.load_state_dict(plan)
        if self.buffer is not None and buffers is not None:
            self.buffer.load_state_dict(buffers[rank])

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
