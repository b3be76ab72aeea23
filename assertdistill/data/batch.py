"""The batch: every key a collated batch holds, declared once (dataset.collate builds it; training and evaluation
read it)."""

from __future__ import annotations

from typing import Any, TypedDict

import torch


class Batch(TypedDict, total=False):
    """One batch of B records: sources S and targets L tokens long (padded to the longest), and the teacher's
    logit rows at the N label positions it covers. Keys marked optional are absent or None when unused."""

    input_ids: torch.Tensor  # (B, S) source token ids
    attention_mask: torch.Tensor  # (B, S) 1 on source tokens, 0 on padding
    labels: torch.Tensor  # (B, L) ground-truth target ids, IGNORE_INDEX on padding
    teacher_position_mask: torch.Tensor  # (B, L) label positions that have a teacher row
    teacher_values: torch.Tensor | None  # (N, V) stored teacher logits (quantized or float); None without logits
    teacher_scale: torch.Tensor | None  # (N,) dequantization scale per row
    teacher_zero_point: torch.Tensor | None  # (N,) dequantization zero point per row
    teacher_labels: torch.Tensor  # optional (B, Lt): the teacher's text as targets (--teacher_text_weight > 0)
    ground_truth_texts: list[str]  # the records' assertions, as the metrics compare them
    teacher_texts: list[str]  # the teacher's lines joined
    teacher_texts_script1: list[str]  # the teacher's text as the thesis read it (str() of its list of lines)
    line_numbers: list[int]  # each record's line in its JSONL file
    retrieved_texts: list[str | None]  # the retrieval baseline's assertion per record (None: no training records)
    locations: list[dict[str, str]]  # each record's place in its repository (the row location keys it carries)
    batch_index: int  # the batch's place in the pass, to put gathered batches back in order
    encoder_outputs: Any  # optional: the encoder's output when already computed (evaluation)


TENSOR_KEYS = ("input_ids", "attention_mask", "labels", "teacher_values", "teacher_scale",
               "teacher_zero_point", "teacher_position_mask", "teacher_labels")  # moved to the device
