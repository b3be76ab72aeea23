"""Measure what each stored form of the teacher logits costs in bytes and in KL (compress.py report).

For every record block (T, V) and form (float16, 8-bit, 4-bit, top-k), encode, decode as training
does, and compare softmax(original / T) with softmax(stored / T) per position:
    KL_T = sum_v p_T(v) * (log p_T(v) - log q_T(v)),  p_T = softmax(original / T), q_T = softmax(stored / T).
The originals are synthetic teacher-like logits or the decoded records of an archive.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np

from ..codec.codec import compress_logits, compress_topk, decode_quantized, decompress_logits, hex_size
from ..codec.hexframes import CodecError
from .archive import (
    DEFAULT_MAX_RECORD_BYTES,
    DataError,
    OversizeLine,
    inner_location,
    is_header_line,
    iter_jsonl_lines,
    jsonl_members,
    list_inner_zips,
)

BODY_STD = 2.0  # logits: std of the gaussian body of a row
ROW_OFFSET_STD = 1.0  # logits: std of a per-position shift of the body (widens the record's min-max range)
RUNNERS_UP = 3  # spikes per row besides the top-1
RUNNER_UP_SHARE = 0.5  # share of the non-top-1 mass held by the runners-up; the body holds the rest
MISS_RANGE = (0.01, 0.5)  # 1 - p(top-1) at T = 1, drawn log-uniformly: top-1 prob in 0.5-0.99


@dataclass
class Form:
    """One stored form: a name and its encoder (logits (T, V) -> compressed_logits dict)."""

    name: str
    encode: Callable[[np.ndarray], dict]


def default_forms(ks=(16, 64, 256)) -> list[Form]:
    """float16, 8-bit and 4-bit (the published format) and top-k for each k."""
    forms = [Form(f"{bits}-bit", lambda logits, bits=bits: compress_logits(logits, bits=bits)) for bits in (16, 8, 4)]
    return forms + [Form(f"topk k={k}", lambda logits, k=k: compress_topk(logits, k)) for k in ks]


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def kl_per_position(original: np.ndarray, stored: np.ndarray, temperature: float) -> np.ndarray:
    """KL(softmax(original / T) || softmax(stored / T)) per position: (T, V), (T, V) -> (T,), float64."""
    log_p = _log_softmax(original.astype(np.float64) / temperature)
    log_q = _log_softmax(stored.astype(np.float64) / temperature)
    return np.maximum((np.exp(log_p) * (log_p - log_q)).sum(axis=-1), 0.0)  # clip float rounding below 0


def teacher_like_logits(positions: int, vocab: int, rng: np.random.Generator,
                        body_std: float = BODY_STD) -> np.ndarray:
    """(T, V) float32 logits of a confident fine-tuned teacher: a gaussian body plus a few spikes per row."""
    offsets = rng.normal(0.0, ROW_OFFSET_STD, (positions, 1))
    logits = rng.normal(0.0, body_std, (positions, vocab)) + offsets  # (T, V), float64
    spikes = min(1 + RUNNERS_UP, vocab)
    miss = np.exp(rng.uniform(*np.log(MISS_RANGE), positions))  # (T,) 1 - p(top-1)
    shares = rng.dirichlet(np.ones(RUNNERS_UP), positions) * RUNNER_UP_SHARE  # (T, RUNNERS_UP)
    masses = np.concatenate([(1 - miss)[:, None], miss[:, None] * shares], axis=1)[:, :spikes]  # (T, spikes)
    body_mass = miss * (1 - RUNNER_UP_SHARE)  # (T,)
    peak = logits.max(axis=1, keepdims=True)
    body_log_sum = peak[:, 0] + np.log(np.exp(logits - peak).sum(axis=1))  # (T,)
    for row in range(positions):
        ids = rng.choice(vocab, spikes, replace=False)
        logits[row, ids] = body_log_sum[row] + np.log(masses[row] / body_mass[row])
    return logits.astype(np.float32)


def synthetic_blocks(records: int, positions: int, vocab: int, seed: int,
                     body_std: float = BODY_STD) -> Iterator[np.ndarray]:
    """`records` teacher-like blocks (T, V)."""
    rng = np.random.default_rng(seed)
    for _ in range(records):
        yield teacher_like_logits(positions, vocab, rng, body_std)


def archive_blocks(path: str, inner_zip: str | None, positions: int, records: int, sources: Counter,
                   max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES) -> Iterator[np.ndarray]:
    """The first `records` decodable blocks (T', V) of an archive's first JSONL member; counts source formats."""
    inner_zip = inner_zip or list_inner_zips(path)[0]
    label = f"{path}:{inner_zip}"
    with inner_location(path, inner_zip) as location:
        name, gzipped = jsonl_members(location, label)[0]
        taken = 0
        lines = iter_jsonl_lines(location, name, gzipped, label, max_record_bytes=max_record_bytes)
        for index, (_, line) in enumerate(lines):
            if taken >= records:
                return
            if index == 0 and is_header_line(line) is not None:
                continue
            block = _decoded_block(line, positions, sources)
            if block is not None:
                taken += 1
                yield block


def lossy_source_note(sources: Counter) -> str | None:
    """A warning when archive records were already lossy (4/8-bit, top-k): KL is against those values."""
    lossy = sorted(kind for kind in sources if kind in ("4-bit", "8-bit") or kind.startswith("topk"))
    if not lossy:
        return None
    return (f"note: {', '.join(lossy)} records are not the teacher's original logits; "
            "KL is measured against their decoded values")


def _decoded_block(line: bytes | OversizeLine, positions: int, sources: Counter) -> np.ndarray | None:
    if isinstance(line, OversizeLine):
        sources["too_large"] += 1
        return None
    try:
        entry = json.loads(line)
    except RecursionError:
        sources["too_deeply_nested"] += 1
        return None
    except ValueError:  # UnicodeDecodeError too
        sources["invalid_json"] += 1
        return None
    compressed = entry.get("compressed_logits") if isinstance(entry, dict) else None
    try:
        quantized = decode_quantized(compressed, max_positions=positions)
    except CodecError:
        sources["undecodable_logits"] += 1
        return None
    kind = f"topk k={compressed['k']}" if compressed.get("format") == "topk" else f"{quantized.bits}-bit"
    sources[kind] += 1
    return quantized.dequantize().numpy()


@dataclass
class FormResult:
    """Bytes and KL of one form, accumulated over records."""

    name: str
    hex_bytes: list = field(default_factory=list)
    lz4_bytes: list = field(default_factory=list)
    steps: list = field(default_factory=list)  # quantization step s per record (4/8-bit)
    kl: dict = field(default_factory=dict)  # temperature -> list of per-position KL arrays

    def as_dict(self, positions: int) -> dict:
        """Means over records, KL mean and max over all positions."""
        kl = {str(t): {"mean": float(np.concatenate(v).mean()), "max": float(np.concatenate(v).max())}
              for t, v in self.kl.items()}
        return {"form": self.name, "hex_bytes_per_record": float(np.mean(self.hex_bytes)),
                "lz4_bytes_per_record": float(np.mean(self.lz4_bytes)),
                "lz4_bytes_per_position": float(np.mean(self.lz4_bytes)) / positions,
                "step": float(np.mean(self.steps)) if self.steps else None, "kl": kl}


def mass_outside_top(block: np.ndarray, k: int, temperature: float) -> np.ndarray:
    """Softmax(block / T) mass outside the k largest entries, per position: (T, V) -> (T,)."""
    probs = np.exp(_log_softmax(block.astype(np.float64) / temperature))
    k = min(k, block.shape[1])
    top_mass = np.partition(probs, probs.shape[1] - k, axis=1)[:, probs.shape[1] - k :].sum(axis=1)
    return np.maximum(1.0 - top_mass, 0.0)  # clip float rounding below 0


def measure(blocks, forms: list[Form], temperatures, ks=(16, 64, 256)) -> tuple[list[FormResult], dict]:
    """Encode every block (T, V) in every form: bytes, steps, per-position KL, and facts about the blocks."""
    results = [FormResult(form.name, kl={t: [] for t in temperatures}) for form in forms]
    top1, lengths = [], []
    outside = {k: {t: [] for t in temperatures} for k in ks}
    for block in blocks:
        lengths.append(block.shape[0])
        top1.append(np.exp(_log_softmax(block.astype(np.float64)).max(axis=1)))
        for k in ks:
            for temperature in temperatures:
                outside[k][temperature].append(mass_outside_top(block, k, temperature))
        for form, result in zip(forms, results):
            stored = form.encode(block)
            decoded = decompress_logits(stored).numpy()  # (T, V) float32, as training decodes it
            result.hex_bytes.append(hex_size(stored))
            result.lz4_bytes.append(stored["compression"]["final_size_bytes"])
            if "scale" in stored:
                result.steps.append(stored["scale"])
            for temperature in temperatures:
                result.kl[temperature].append(kl_per_position(block, decoded, temperature))
    if not lengths:
        raise DataError("no record with decodable logits to measure")
    top1 = np.concatenate(top1)
    positions = lengths[0] if len(set(lengths)) == 1 else float(np.mean(lengths))
    facts = {"records": len(lengths), "positions": positions, "vocab": int(block.shape[1]),
             "top1_prob_T1": {"p10": float(np.percentile(top1, 10)), "median": float(np.median(top1)),
                              "p90": float(np.percentile(top1, 90))},
             "mass_outside_topk": {str(k): {str(t): float(np.concatenate(masses).mean())
                                            for t, masses in by_t.items()} for k, by_t in outside.items()}}
    return results, facts


def format_table(results: list[FormResult], facts: dict, temperatures) -> str:
    """A text table: form, bytes per record (hex, LZ4), step, KL mean / max per temperature."""
    positions = facts["positions"]
    head = f"{'form':<11}{'hex B/rec':>12}{'LZ4 B/rec':>12}{'LZ4 B/pos':>10}{'step s':>8}"
    head += "".join(f"{f'KL T={t:g} mean / max':>26}" for t in temperatures)
    lines = [head, "-" * len(head)]
    for result in results:
        row = result.as_dict(positions)
        step = f"{row['step']:.3g}" if row["step"] is not None else "-"
        line = (f"{row['form']:<11}{row['hex_bytes_per_record']:>12,.0f}{row['lz4_bytes_per_record']:>12,.0f}"
                f"{row['lz4_bytes_per_position']:>10,.0f}{step:>8}")
        for t in temperatures:
            kl = row["kl"][str(t)]
            line += f"{_sci(kl['mean']):>15} / {_sci(kl['max']):>8}"
        lines.append(line)
    return "\n".join(lines)


def _sci(value: float) -> str:
    return "0" if value == 0 else f"{value:.2e}" if value < 0.01 or value >= 1000 else f"{value:.4f}"


def describe_blocks(facts: dict) -> str:
    """Two lines on what was measured."""
    top1 = facts["top1_prob_T1"]
    return (f"{facts['records']} record(s) of {facts['positions']} positions x V = {facts['vocab']}; "
            f"top-1 prob at T=1: p10 {top1['p10']:.2f}, median {top1['median']:.2f}, p90 {top1['p90']:.2f}; "
            f"float32 size {facts['positions'] * facts['vocab'] * 4:,} B/record\n"
            "softmax mass outside the top k (mean per position): "
            + "; ".join(f"k={k}: " + ", ".join(f"T={float(t):g} {mass:.3f}" for t, mass in by_t.items())
                        for k, by_t in facts["mass_outside_topk"].items()))
