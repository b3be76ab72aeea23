"""The evaluation timing: eval loss + generation over the validation split, thesis way and suite way.

A randomly initialized student almost never emits EOS, so left alone it would generate up to
max_length (512) tokens per record, which no trained model does. StopAtTargetLength plays a trained
model's EOS: every beam of a record must end exactly at the record's target length (20-60 tokens in
the bench archive's validation split). Both pipelines get the same processor and the same
generate settings (max_length 512, early_stopping=True, as the thesis and evaluate() call it).
"""

from __future__ import annotations

import time

import torch
from transformers import LogitsProcessor, LogitsProcessorList

from assertdistill.core.constants import IGNORE_INDEX
from assertdistill.distill.evaluation import evaluate_batch
from assertdistill.distill.training import move_batch
from assertdistill.model.decoding import DecodingSettings
from benchmarks.thesis import thesis_losses


class StopAtTargetLength(LogitsProcessor):
    """EOS is banned before each record's target length and forced at it (rows: records x beams)."""

    def __init__(self, lengths: torch.Tensor, num_beams: int, eos_token_id: int):
        self.lengths = lengths.repeat_interleave(num_beams)  # (B * beams,) tokens to generate, EOS included
        self.eos_token_id = eos_token_id

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        generated = input_ids.size(1)  # tokens so far, the decoder start token included
        at_end = (self.lengths.to(scores.device) == generated)[:, None]  # (rows, 1)
        is_eos = torch.zeros_like(scores, dtype=torch.bool)
        is_eos[:, self.eos_token_id] = True
        return scores.masked_fill(at_end != is_eos, -float("inf"))


def target_lengths(labels: torch.Tensor) -> torch.Tensor:
    """Tokens of each record's target, EOS included: (B,) from (B, L) labels."""
    return (labels != IGNORE_INDEX).sum(1).cpu()


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def evaluate_pipeline(pipeline: str, model, tokenizer, batches, num_beams: int, max_length: int,
                      loss_fn, temperature: float, alpha: float, device: torch.device, precision: str = "fp32") -> dict:
    """Time eval loss + generation per batch; returns seconds, generation seconds, texts and mean losses."""
    seconds = generation_seconds = 0.0
    texts, losses, generated_tokens = [], [], 0
    for batch in batches:
        batch = move_batch(batch, device) if pipeline == "suite" else {
            key: value.to(device) if isinstance(value, torch.Tensor) else value for key, value in batch.items()}
        stop = LogitsProcessorList([StopAtTargetLength(target_lengths(batch["labels"]), num_beams,
                                                       tokenizer.eos_token_id)])
        _synchronize(device)
        started = time.perf_counter()
        with torch.no_grad():
            if pipeline == "thesis":  # script.py's evaluate_student: model(labels=) + the KD loss, then generate
                total, hard, soft = thesis_losses(model, batch, temperature, alpha)
                losses.append([total.item(), hard.item(), soft.item()])
                generation_started = time.perf_counter()
                ids = model.generate(batch["input_ids"], attention_mask=batch["attention_mask"], max_length=max_length,
                                     num_beams=num_beams, early_stopping=True, logits_processor=stop)
                _synchronize(device)
                generation_seconds += time.perf_counter() - generation_started
            else:  # training.evaluate's step
                evaluated = evaluate_batch(model, batch, loss_fn, DecodingSettings(num_beams, max_length), precision,
                                           logits_processor=stop)
                ids, (total, hard, soft, _) = evaluated.generated_ids, evaluated.losses
                losses.append([total.item(), hard.item(), soft.item()])
                generation_seconds += evaluated.milliseconds * batch["input_ids"].size(0) / 1000
        _synchronize(device)
        seconds += time.perf_counter() - started
        texts += tokenizer.batch_decode(ids, skip_special_tokens=True)
        generated_tokens += int(target_lengths(batch["labels"]).sum())
    mean_losses = torch.tensor(losses).mean(0).tolist() if losses else []
    return {"seconds": seconds, "generation_seconds": generation_seconds, "records": len(texts), "texts": texts,
            "losses": mean_losses, "generated_tokens": generated_tokens}


def warm_up(model, batch: dict, device: torch.device, num_beams: int) -> None:
    """One short generate on one record: first-touch allocations and kernel selection, untimed."""
    with torch.no_grad():
        model.generate(batch["input_ids"][:1].to(device), attention_mask=batch["attention_mask"][:1].to(device),
                       max_new_tokens=2, min_new_tokens=2, num_beams=num_beams)
