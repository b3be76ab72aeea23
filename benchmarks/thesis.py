"""A faithful re-creation of the thesis pipeline, kept only as the benchmark's baseline.

What the thesis did, and what this module does on purpose:
- the dataset reads the whole inner ZIP into memory (outer.read(inner) into a BytesIO);
- it counts records before training by json-parsing every line once;
- it pads every source to max_source_length (1024) and every target to max_target_length (512);
- it decompresses the FULL teacher block (512 x 32100) to float32 for every record, and the
  default collate stacks those blocks into a (B, 512, V) float32 batch;
- the model runs with labels=, so it also computes its own CE (the hard loss);
- the loss is (1 - alpha) * CE + alpha * T^2 * KL, with F.kl_div over all 512 positions,
  masked by labels != -100.
"""

from __future__ import annotations

import io
import json
import zipfile

import lz4.frame
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, IterableDataset

from assertdistill.data.encoding import FOCAL_PREFIX, TEST_PREFIX


def thesis_decompress(compressed: dict) -> torch.Tensor:
    """The whole block as float32 (T, V): hex -> LZ4 -> 8-bit codes -> (q - z) * s."""
    raw = lz4.frame.decompress(bytes.fromhex(compressed["data_encoded"]["data"]))
    codes = np.frombuffer(raw, dtype=np.uint8)
    values = (codes.astype(np.float32) - np.float32(compressed["zero_point"])) * np.float32(compressed["scale"])
    return torch.from_numpy(values.reshape(compressed["shape"][-2:]))  # (T, V)


def thesis_source_text(tokenizer, focal_code: str, test_method: str, max_source_length: int) -> str:
    """FOCAL CODE + the focal file cut to the tokens the test method leaves, then TEST METHOD."""
    test_text = f"{TEST_PREFIX}{test_method}"
    if not focal_code.strip():
        return test_text
    overhead = len(tokenizer(f"{FOCAL_PREFIX}\n\n{TEST_PREFIX}", add_special_tokens=False)["input_ids"]) + 1
    test_length = len(tokenizer(test_text, add_special_tokens=True)["input_ids"])
    focal_budget = max_source_length - test_length - overhead
    if test_length >= max_source_length - overhead - 10 or focal_budget <= 0:
        return test_text
    focal_ids = tokenizer(focal_code, add_special_tokens=False, truncation=True, max_length=focal_budget)["input_ids"]
    return f"{FOCAL_PREFIX}{tokenizer.decode(focal_ids, skip_special_tokens=True)}\n\n{test_text}"


class ThesisDataset(IterableDataset):
    """The thesis's dataset: inner ZIP in memory, records counted up front, everything padded to the maximum."""

    def __init__(self, outer_path: str, inner_zip_path: str, jsonl_name: str, tokenizer,
                 max_source_length: int = 1024, max_target_length: int = 512):
        super().__init__()
        with zipfile.ZipFile(outer_path) as outer:
            self.inner_bytes = outer.read(inner_zip_path)
        self.jsonl_name = jsonl_name
        self.tokenizer = tokenizer
        self.max_source_length = max_source_length
        self.max_target_length = max_target_length
        self.num_records = sum(1 for _ in self._entries())

    def __len__(self) -> int:
        return self.num_records

    def _entries(self):
        with zipfile.ZipFile(io.BytesIO(self.inner_bytes)) as inner, inner.open(self.jsonl_name) as lines:
            for line in lines:
                if not line.strip():
                    continue
                entry = json.loads(line)
                if "header" not in entry:
                    yield entry

    def __iter__(self):
        for entry in self._entries():
            source = thesis_source_text(self.tokenizer, entry.get("focal_file", ""), entry["test_method_masked"],
                                        self.max_source_length)
            inputs = self.tokenizer(source, max_length=self.max_source_length, padding="max_length",
                                    truncation=True, return_tensors="pt")
            target = self.tokenizer(entry["original_target"], max_length=self.max_target_length,
                                    padding="max_length", truncation=True, return_tensors="pt")
            labels = target["input_ids"].squeeze(0)  # (512,)
            labels[labels == self.tokenizer.pad_token_id] = -100
            yield {"input_ids": inputs["input_ids"].squeeze(0), "attention_mask": inputs["attention_mask"].squeeze(0),
                   "labels": labels, "teacher_logits": thesis_decompress(entry["compressed_logits"])}


def thesis_loader(dataset: ThesisDataset, batch_size: int) -> DataLoader:
    """The default collate stacks the full float32 blocks: (B, 512, V)."""
    return DataLoader(dataset, batch_size=batch_size, num_workers=0)


def thesis_losses(model, batch: dict, temperature: float, alpha: float):
    """(total, hard, soft) the thesis way: model CE via labels=, KL over all positions, masked."""
    outputs = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"])
    student_logits, teacher_logits = outputs.logits, batch["teacher_logits"]  # (B, 512, V) each
    vocab = min(student_logits.size(-1), teacher_logits.size(-1))
    student_log_probs = F.log_softmax(student_logits[..., :vocab] / temperature, dim=-1)
    teacher_probs = F.softmax(teacher_logits[..., :vocab] / temperature, dim=-1)
    kl = F.kl_div(student_log_probs, teacher_probs, reduction="none").sum(-1)  # (B, 512)
    mask = (batch["labels"] != -100).float()  # (B, 512)
    soft = (kl * mask).sum() / mask.sum() * temperature ** 2
    hard = outputs.loss
    return (1 - alpha) * hard + alpha * soft, hard, soft
