"""Hidden-state distillation: the student's last encoder / decoder states against the online teacher's.

loss = mean over positions of  mse: mean_d (P s - t)^2   or   cosine: 1 - cos(P s, t),
with P a learned linear map from the student's width to the teacher's (the identity, and no
parameters, when the widths agree). Encoder positions are the source's (attention mask), decoder
positions the target's (labels != -100). P trains with the student, is saved in checkpoints, and is
not part of the saved student (docs/LOSSES.md).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..core.constants import IGNORE_INDEX

HIDDEN_STATE_LOSSES = ("mse", "cosine")
HIDDEN_STATE_LAYERS = ("encoder", "decoder", "both")


def state_distance(student_states: torch.Tensor, teacher_states: torch.Tensor, mask: torch.Tensor,
                   kind: str) -> torch.Tensor:
    """Mean over the mask's positions of the per-position distance; states (B, L, d), mask (B, L) bool."""
    student_rows = student_states[mask].float()  # (N, d)
    teacher_rows = teacher_states[mask].float()  # (N, d)
    if student_rows.size(0) == 0:
        return student_states.new_zeros((), dtype=torch.float32)
    if kind == "mse":
        return (student_rows - teacher_rows).pow(2).mean()
    if kind == "cosine":
        return (1.0 - F.cosine_similarity(student_rows, teacher_rows, dim=-1)).mean()
    raise ValueError(f"unknown hidden-state loss {kind!r}; choose one of {', '.join(HIDDEN_STATE_LOSSES)}")


class StudentWithProjection(torch.nn.Module):
    """The training student plus the projection P; each forward keeps its last encoder and decoder states.

    `module` is the student (forward.student_logits_for reads it as it reads DistributedDataParallel's),
    so the Trainer's parameters, gradient averaging and clipping cover P too.
    """

    def __init__(self, student: torch.nn.Module, student_width: int, teacher_width: int):
        super().__init__()
        self.module = student
        self.projection = torch.nn.Linear(student_width, teacher_width) if student_width != teacher_width \
            else torch.nn.Identity()
        self.last_states: tuple[torch.Tensor, torch.Tensor] | None = None  # (B, S, d_s), (B, L, d_s)

    def forward(self, **inputs):
        outputs = self.module(**inputs, output_hidden_states=True)
        self.last_states = (outputs.encoder_last_hidden_state, outputs.decoder_hidden_states[-1])
        return outputs

    def projection_state(self) -> dict:
        """P's tensors, for checkpoints ({} for the identity)."""
        return self.projection.state_dict()


def hidden_state_loss(model: StudentWithProjection, rows: int, teacher_encoder: torch.Tensor | None,
                      teacher_decoder: torch.Tensor | None, attention_mask: torch.Tensor, labels: torch.Tensor,
                      kind: str, layers: str) -> torch.Tensor:
    """The distance of the first `rows` records of the model's last forward to the teacher's states.

    teacher_encoder (B, S, d_t), teacher_decoder (B, L, d_t); attention_mask (B, S); labels (B, L).
    Both layers: the mean of the two distances. States are compared in float32 (outside autocast).
    """
    student_encoder, student_decoder = model.last_states
    model.last_states = None  # the graph is the loss's now
    terms = []
    if layers in ("encoder", "both") and student_encoder is not None:
        terms.append(state_distance(model.projection(student_encoder[:rows].float()), teacher_encoder,
                                    attention_mask.bool(), kind))
    if layers in ("decoder", "both"):
        length = labels.size(1)
        projected = model.projection(student_decoder[:rows, :length].float())  # (B, L, d_t)
        terms.append(state_distance(projected, teacher_decoder[:, :length], labels != IGNORE_INDEX, kind))
    return torch.stack(terms).mean()
