"""The online teacher: a frozen seq2seq model whose logits, hidden states and texts are computed per batch.

`--teacher_source online` reads the teacher from `--teacher_model_name` instead of the archive's
`compressed_logits`, so an archive without logits can be distilled from and the teacher can score
sequences the archive never held (the student's own samples, docs/LOSSES.md).
"""

from __future__ import annotations

import os
from typing import NamedTuple

import torch
import torch.nn.functional as F
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

from ..codec.codec import dequantize_codes
from ..core.constants import IGNORE_INDEX
from ..core.errors import ModelLoadError
from ..model.generation import DecodingSettings, generate
from ..model.models import from_pretrained_local_first

TEACHER_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}  # --precision on a GPU; fp32 otherwise


class TeacherOutputs(NamedTuple):
    """A teacher-forced teacher pass: logits (B, L, V) and its last encoder / decoder states (B, S, d), (B, L, d)."""

    logits: torch.Tensor
    encoder_states: torch.Tensor | None
    decoder_states: torch.Tensor | None


def teacher_dtype(device: torch.device, precision: str) -> torch.dtype:
    """bf16 / fp16 weights on a GPU when --precision says so; float32 everywhere else."""
    return TEACHER_DTYPES.get(precision, torch.float32) if device.type == "cuda" else torch.float32


def check_vocabulary(teacher_name: str, teacher_vocab_size: int, student_vocab_size: int, tokenizer) -> None:
    """Refuse, in one line, a teacher whose vocabulary is not the student tokenizer's (ids would mean other tokens)."""
    if teacher_vocab_size != student_vocab_size:
        raise ModelLoadError(f"teacher '{teacher_name}' has a vocabulary of {teacher_vocab_size} tokens and the "
                             f"student {student_vocab_size}: an online teacher must share the student's tokenizer")
    if not os.path.isdir(teacher_name):
        return
    try:
        teacher_tokenizer = AutoTokenizer.from_pretrained(teacher_name, local_files_only=True)
    except (OSError, ValueError):
        return  # a directory without a tokenizer: the sizes agree, nothing more to compare
    if teacher_tokenizer.get_vocab() != tokenizer.get_vocab():
        raise ModelLoadError(f"teacher '{teacher_name}' has another tokenizer than the student's (same size, other "
                             f"tokens): an online teacher must share the student's tokenizer")


class OnlineTeacher:
    """A frozen teacher in eval mode on the run's device; every call runs without gradients."""

    def __init__(self, model: torch.nn.Module, device: torch.device, precision: str = "fp32"):
        self.model = model.to(device=device, dtype=teacher_dtype(device, precision)).eval()
        self.model.requires_grad_(False)
        self.device = device
        self.text_cache: dict[tuple, list[int]] = {}  # (split, line number) -> generated ids; the teacher is frozen

    @classmethod
    def load(cls, name: str, device: torch.device, precision: str, student_vocab_size: int,
             tokenizer) -> OnlineTeacher:
        """The teacher of --teacher_model_name (Hugging Face id or directory); its vocabulary checked."""
        model = from_pretrained_local_first(AutoModelForSeq2SeqLM.from_pretrained, name, "teacher model",
                                            dtype=torch.float32)
        check_vocabulary(name, model.config.vocab_size, student_vocab_size, tokenizer)
        return cls(model, device, precision)

    @property
    def width(self) -> int:
        """d_model of the teacher's hidden states."""
        return self.model.config.d_model

    @torch.no_grad()
    def score(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor,
              hidden_states: bool = False) -> TeacherOutputs:
        """Teacher-forced logits (B, L, V) for targets labels (B, L) (-100 = padding); float32."""
        decoder_input_ids = self.model.prepare_decoder_input_ids_from_labels(labels=labels)  # (B, L)
        outputs = self.model(input_ids=input_ids, attention_mask=attention_mask, decoder_input_ids=decoder_input_ids,
                             use_cache=False, output_hidden_states=hidden_states)
        if not hidden_states:
            return TeacherOutputs(outputs.logits.float(), None, None)
        return TeacherOutputs(outputs.logits.float(), outputs.encoder_last_hidden_state.float(),
                              outputs.decoder_hidden_states[-1].float())

    @torch.no_grad()
    def texts(self, batch: dict, split: str, num_beams: int, max_length: int) -> list[list[int]]:
        """The teacher's generated target ids per record (start token and padding removed, eos kept), cached."""
        keys = [(split, line) for line in batch["line_numbers"]]
        missing = [index for index, key in enumerate(keys) if key not in self.text_cache]
        if missing:
            rows = torch.tensor(missing, device=batch["input_ids"].device)
            ids = generate(self.model, batch["input_ids"][rows], batch["attention_mask"][rows],
                           DecodingSettings(num_beams, max_length))
            for index, sequence in zip(missing, sequence_targets(ids, self.model.config.eos_token_id)):
                self.text_cache[keys[index]] = sequence
        return [self.text_cache[key] for key in keys]


def sequence_targets(generated: torch.Tensor, eos_token_id: int) -> list[list[int]]:
    """Generated ids (B, 1 + L) -> per row the target ids: the start token dropped, cut after the first eos."""
    targets = []
    for row in generated[:, 1:].tolist():
        targets.append(row[: row.index(eos_token_id) + 1] if eos_token_id in row else row)
    return targets


def as_labels(targets: list[list[int]], device: torch.device) -> torch.Tensor:
    """Target id lists -> labels (B, L) padded with IGNORE_INDEX (L >= 1)."""
    length = max(1, max((len(target) for target in targets), default=1))
    labels = torch.full((len(targets), length), IGNORE_INDEX, dtype=torch.long, device=device)
    for index, target in enumerate(targets):
        if target:
            labels[index, : len(target)] = torch.tensor(target, device=device)
    return labels


def teacher_rows(logits: torch.Tensor, labels: torch.Tensor) -> dict:
    """The batch keys the fused loss reads, from teacher logits (B, L, V) at the label positions of labels (B, L).

    The rows are float32 logits with scale 1 and zero point 0, so dequantizing them is the identity.
    """
    mask = labels != IGNORE_INDEX  # (B, L)
    rows = logits[mask]  # (N, V)
    ones = torch.ones(rows.size(0), device=rows.device)
    return {"teacher_values": rows, "teacher_scale": ones, "teacher_zero_point": torch.zeros_like(ones),
            "teacher_position_mask": mask}


@torch.no_grad()
def stored_vs_online_kl(batch: dict, online_logits: torch.Tensor, temperature: float) -> tuple[float, int]:
    """(sum over positions of KL(stored || online) at T, positions) for a batch that carries archive logits.

    batch: its teacher_values / scale / zero point (N, V) at teacher_position_mask (B, L); online_logits (B, L, V).
    The stored distribution may hold zeros (top-k archives): their terms are 0.
    """
    if batch.get("teacher_values") is None:
        return 0.0, 0
    stored = dequantize_codes(batch["teacher_values"], batch["teacher_scale"][:, None],
                              batch["teacher_zero_point"][:, None])  # (N, Vs)
    mask = batch["teacher_position_mask"][:, : online_logits.size(1)]
    online = online_logits[mask]  # (N, V)
    vocab = min(stored.size(-1), online.size(-1))
    stored_log_probs = F.log_softmax(stored[:, :vocab] / temperature, dim=-1)
    online_log_probs = F.log_softmax(online[:, :vocab] / temperature, dim=-1)
    stored_probs = stored_log_probs.exp()
    terms = torch.where(stored_probs > 0, stored_probs * (stored_log_probs - online_log_probs),
                        torch.zeros_like(stored_probs))
    return float(terms.sum()), int(stored.size(0))
