"""Run a teacher over an assertion dataset and package its logits in the published nested-ZIP layout."""

from __future__ import annotations

import datetime
import gzip
import json
import os
import random
import shutil
import tempfile
import zipfile
from dataclasses import dataclass, field, fields
from typing import Iterator

import torch
from tqdm import tqdm

from ..codec.codec import compress_logits, compress_topk, hex_size
from ..core.schema import T_VS_GT
from ..data.archive import DataError
from ..data.encoding import InputEncoder
from ..scoring.metrics import MetricAccumulator

SPLITS = ("training", "validation")
PROVENANCE_FIELDS = ("repo", "test_path", "focal_path", "test_class", "test_method")


@dataclass
class SplitReport:
    """What happened to one split: records written, skipped (by reason), bytes and teacher accuracy."""

    written: int = 0
    skipped: dict = field(default_factory=dict)
    float32_bytes: int = 0
    stored_bytes: int = 0
    teacher_metrics: dict = field(default_factory=dict)

    def skip(self, reason: str) -> None:
        """Count one skipped input line."""
        self.skipped[reason] = self.skipped.get(reason, 0) + 1


def read_assertion_dataset(path: str, report: SplitReport, max_assertions: int | None = None) -> Iterator[dict]:
    """Records of a make_dataset.py JSONL (or an existing distillation JSONL); bad or skipped lines counted."""
    opener = gzip.open if path.endswith(".gz") else open
    try:
        stream = opener(path, "rt", encoding="utf-8")
    except OSError as error:
        raise DataError(f"cannot read assertion dataset {path}: {error.strerror or error}") from None
    with stream:
        for line in stream:
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:
                report.skip("invalid_json")
                continue
            if not isinstance(record, dict):
                report.skip("not_an_object")
                continue
            if "header" in record:  # a distillation file's header line: not a record
                report.skip("header_line")
                continue
            assertions = record.get("assertions", record.get("original_target"))
            if isinstance(assertions, str):
                assertions = assertions.split("\n")
            if not isinstance(record.get("test_method_masked"), str) or not isinstance(assertions, list) \
                    or not assertions or not all(isinstance(item, str) for item in assertions):
                report.skip("missing_or_malformed_fields")
                continue
            if max_assertions is not None and len(assertions) > max_assertions:
                report.skip(f"more_than_{max_assertions}_assertions")
                continue
            record["assertions"] = assertions
            yield record


def sample_records(records: list[dict], limit: int | None, seed: int, shuffle: bool = False) -> list[dict]:
    """A seeded random subset of `limit` records (all when None), in input order unless shuffled."""
    rng = random.Random(seed)
    chosen = list(range(len(records)))
    if limit is not None and limit < len(records):
        chosen = sorted(rng.sample(chosen, limit))
    if shuffle:
        rng.shuffle(chosen)
    return [records[index] for index in chosen]


def focal_code_of(record: dict, focal_field: str) -> str:
    """The record's focal code: the focal_field, else focal_file, else none."""
    focal_code = record.get(focal_field) or record.get("focal_file") or ""
    return focal_code if isinstance(focal_code, str) else ""


def _output_record(record: dict, focal_field: str, trim_to: InputEncoder | None = None) -> dict:
    focal_code = focal_code_of(record, focal_field)
    if trim_to is not None:
        focal_code = trim_to.focal_prefix(focal_code, record["test_method_masked"])
    output = {"focal_file": focal_code,
              "test_method_masked": record["test_method_masked"],
              "original_target": "\n".join(record["assertions"])}
    output.update({name: record[name] for name in PROVENANCE_FIELDS if name in record})
    return output


@torch.no_grad()
def teacher_outputs(model, tokenizer, encoder: InputEncoder, batch: list[dict], bits: int, num_beams: int,
                    pad_to_max_length: bool, device: torch.device, topk: int | None = None,
                    focal_field: str = "focal_file", retrieved=None) -> list[tuple[dict, list[str]]]:
    """(compressed_logits, predicted lines) per record: logits teacher-forced on the ground truth.

    The teacher's input is built from the record's focal_field (see focal_code_of) and masked test method,
    plus the record's retrieved examples (retrieved: one list of (test method, assertion) per record) when the
    encoder takes examples. Logits are stored in the published `bits` format, or as sparse top-`topk`.
    """
    retrieved = retrieved or [()] * len(batch)
    sources = [encoder.encode_source(focal_code_of(r, focal_field), r["test_method_masked"], examples)
               for r, examples in zip(batch, retrieved)]
    targets = [encoder.encode_target("\n".join(r["assertions"])) for r in batch]
    source_length = max(map(len, sources))
    target_length = encoder.max_target_length if pad_to_max_length else max(map(len, targets))
    pad_id = tokenizer.pad_token_id
    input_ids = torch.full((len(batch), source_length), pad_id, dtype=torch.long)  # (B, S)
    labels = torch.full((len(batch), target_length), -100, dtype=torch.long)  # (B, L)
    for row, (source, target) in enumerate(zip(sources, targets)):
        input_ids[row, : len(source)] = torch.tensor(source)
        labels[row, : len(target)] = torch.tensor(target)
    input_ids, labels = input_ids.to(device), labels.to(device)
    attention_mask = (input_ids != pad_id).long()
    decoder_input_ids = model.prepare_decoder_input_ids_from_labels(labels=labels)
    logits = model(input_ids=input_ids, attention_mask=attention_mask, decoder_input_ids=decoder_input_ids,
                   use_cache=False).logits.float().cpu()  # (B, L, V)
    generated = model.generate(input_ids=input_ids, attention_mask=attention_mask, num_beams=num_beams,
                               max_length=encoder.max_target_length, early_stopping=num_beams > 1)
    texts = tokenizer.batch_decode(generated, skip_special_tokens=True)
    results = []
    for row, target in enumerate(targets):
        positions = target_length if pad_to_max_length else len(target)
        block = logits[row : row + 1, :positions]  # (1, T, V)
        compressed = compress_topk(block, topk) if topk else compress_logits(block, bits=bits)
        results.append((compressed, [line for line in texts[row].split("\n") if line.strip()]))
    return results


@dataclass(frozen=True)
class TeacherOptions:
    """How make_teacher_logits.py runs the teacher and stores its logits, and its flags for the headers."""

    batch_size: int  # records per teacher batch
    num_beams: int  # beam width of the validation split's predictions
    train_num_beams: int  # beam width of the training split's predictions
    bits: int  # 4, 8, 16 or 32: the published format's storage bits
    topk: int | None  # store the sparse top-k format instead of `bits`
    pad_to_max_length: bool  # store max_tgt_length positions per record, as the thesis generator did
    max_tgt_length: int  # tokens
    trim_focal: bool  # store only the focal prefix that fits next to the test method
    focal_field: str  # input field holding the focal code
    flags: dict  # every flag of the command, copied (plain values) into each header's args
    retrieval_augment: int = 0  # K retrieved examples in the teacher's input (script.py --retrieval_augment)

    @classmethod
    def from_flags(cls, flags: dict) -> TeacherOptions:
        """The options among a command's {flag: value}, and the flags themselves."""
        names = [option.name for option in fields(cls) if option.name != "flags" and option.name in flags]
        return cls(**{name: flags[name] for name in names}, flags=dict(flags))


def write_split_jsonl(records: list[dict], path: str, model, tokenizer, encoder: InputEncoder,
                      options: TeacherOptions, split: str, report: SplitReport, device: torch.device,
                      retriever=None) -> None:
    """Write header + one distillation record per input record to `path` (plain JSONL).

    retriever(position, record) -> [(test method, assertion), ...]: the examples of an augmented input.
    """
    body_path = path + ".body"
    truth_vs_teacher = MetricAccumulator(T_VS_GT)
    with open(body_path, "w", encoding="utf-8") as body:
        action = "Teacher on" if model is not None else "Packaging"
        progress = tqdm(total=len(records), desc=f"{action} {split}", unit="record", dynamic_ncols=True)
        num_beams = options.train_num_beams if split == "training" else options.num_beams
        trim_to = encoder if options.trim_focal else None
        for start in range(0, len(records), options.batch_size):
            batch = records[start : start + options.batch_size]
            retrieved = [retriever(start + offset, record) for offset, record in enumerate(batch)] \
                if retriever is not None and model is not None else None
            outputs = teacher_outputs(model, tokenizer, encoder, batch, options.bits, num_beams,
                                      options.pad_to_max_length, device, options.topk, options.focal_field,
                                      retrieved) if model is not None else [None] * len(batch)
            for record, output in zip(batch, outputs):
                line = _output_record(record, options.focal_field, trim_to)
                if output is not None:
                    compressed, predicted = output
                    line["predicted_assertions"] = predicted
                    line["compressed_logits"] = compressed
                    report.float32_bytes += compressed["compression"]["original_size_bytes"]
                    report.stored_bytes += hex_size(compressed)
                    truth_vs_teacher.add("\n".join(predicted), line["original_target"])
                body.write(json.dumps(line) + "\n")
                report.written += 1
            progress.update(len(batch))
        progress.close()
    if model is not None:
        report.teacher_metrics = truth_vs_teacher.averages()
    header = {"header": {
        "dataset_type": split, "item_count": report.written,
        "compression": _compression_header(options, report, with_logits=model is not None),
        "created_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "teacher_metrics": report.teacher_metrics, "skipped": report.skipped,
        "args": _args_header(options, with_logits=model is not None),
    }}
    with open(path, "w", encoding="utf-8") as output, open(body_path, encoding="utf-8") as body:
        output.write(json.dumps(header) + "\n")
        shutil.copyfileobj(body, output, length=1 << 20)
    os.unlink(body_path)


def _compression_header(options: TeacherOptions, report: SplitReport, with_logits: bool) -> dict:
    """The header's compression block: the stored format (lz4 at `bits`, or topk with k), sizes, positions."""
    if not with_logits:
        return {"format": None, "bits": None, "k": None}
    topk = options.topk
    return {"format": "topk" if topk else "lz4", "bits": 16 if topk else options.bits, "k": topk,
            "format_counts": {"topk" if topk else "lz4": report.written},
            "positions": (f"max_tgt_length ({options.max_tgt_length}), padded" if options.pad_to_max_length
                          else "the target's length"),
            "original_size_bytes": report.float32_bytes, "final_size_bytes": report.stored_bytes,
            "compression_ratio": report.float32_bytes / report.stored_bytes if report.stored_bytes else None}


def _args_header(options: TeacherOptions, with_logits: bool) -> dict:
    """The command's plain arguments; bits says what the logits are stored as (float16 values for top-k)."""
    values = {key: value for key, value in options.flags.items() if isinstance(value, (str, int, float, bool))}
    values.pop("topk", None)
    if not with_logits:
        values["bits"] = None
    elif options.topk:  # as compress.py convert --to topk writes it
        values.update({"bits": 16, "logits_format": "topk", "topk_k": options.topk})
    return values


def package_nested_zip(jsonl_paths: dict[str, str], output_path: str, name: str, gzipped: bool) -> dict:
    """Outer ZIP with <name>/distillation_data_<split>.jsonl.zip members (stored), each holding the JSONL."""
    members = {}
    work_dir = tempfile.mkdtemp(prefix="package_")
    try:
        temporary_output = output_path + ".tmp"
        with zipfile.ZipFile(temporary_output, "w", compression=zipfile.ZIP_STORED) as outer:
            for split, jsonl_path in jsonl_paths.items():
                jsonl_name = f"distillation_data_{split}.jsonl"
                inner_path = os.path.join(work_dir, jsonl_name + ".zip")
                with zipfile.ZipFile(inner_path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as inner:
                    with open(jsonl_path, "rb") as source, inner.open(jsonl_name, "w", force_zip64=True) as member:
                        if gzipped:
                            with gzip.GzipFile(fileobj=member, mode="wb", compresslevel=6) as compressed:
                                shutil.copyfileobj(source, compressed, length=1 << 20)
                        else:
                            shutil.copyfileobj(source, member, length=1 << 20)
                member_name = f"{name}/{jsonl_name}.zip"
                outer.write(inner_path, member_name)
                members[split] = {"inner_zip": member_name, "jsonl": jsonl_name}
        os.replace(temporary_output, output_path)
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
    return members
