"""Test helpers: a tiny tokenizer and T5, and generated nested-ZIP distillation archives."""

from __future__ import annotations

import functools
import gzip
import io
import json
import os
import zipfile

import numpy as np
import pytest
import torch
from transformers import T5ForConditionalGeneration

from assertdistill.codec.codec import compress_logits
from assertdistill.core import schema
from assertdistill.scoring.registry import record_metric_keys
from assertdistill.model.tokenizer import t5_config_for, train_bpe_tokenizer
from assertdistill.scoring.statistics import BOOTSTRAP_METHOD

JAVA_SNIPPETS = [
    "public class Calculator {\n    public int add(int a, int b) { return a + b; }\n}\n",
    "public class Stack<T> {\n    private final java.util.List<T> items = new java.util.ArrayList<>();\n"
    "    public void push(T item) { items.add(item); }\n    public boolean isEmpty() { return items.isEmpty(); }\n}\n",
    "@Test\npublic void testAdd() {\n    Calculator calculator = new Calculator();\n    // <ASSERTION_PLACEHOLDER>\n}\n",
    "assertEquals(3, calculator.add(1, 2));\nassertTrue(stack.isEmpty());\nassertNull(map.get(\"key\"));\n",
    "assertThat(list).hasSize(2).contains(\"a\");\nassertFalse(set.contains(4));\nassertNotNull(result);\n",
]


@functools.lru_cache(maxsize=1)
def tiny_tokenizer():
    """A byte-level BPE tokenizer (~300 tokens) trained on a few Java snippets."""
    return train_bpe_tokenizer(JAVA_SNIPPETS * 20, vocab_size=320, min_frequency=2)


def tiny_t5(tokenizer=None, seed: int = 0, **dimensions) -> T5ForConditionalGeneration:
    """A randomly initialized T5 of a few thousand parameters matching the tokenizer."""
    tokenizer = tokenizer or tiny_tokenizer()
    sizes = dict(d_model=32, d_ff=64, d_kv=8, num_heads=2, num_layers=1, num_decoder_layers=1,
                 relative_attention_num_buckets=8, relative_attention_max_distance=32)
    sizes.update(dimensions)
    torch.manual_seed(seed)
    return T5ForConditionalGeneration(t5_config_for(tokenizer, **sizes))


def save_tiny_model(directory: str, with_weights: bool = True, **dimensions) -> str:
    """Save a tiny T5 (or only its config) with the tiny tokenizer into `directory`."""
    tokenizer = tiny_tokenizer()
    model = tiny_t5(tokenizer, **dimensions)
    if with_weights:
        model.save_pretrained(directory)
    else:
        model.config.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def make_record(index: int, vocab_size: int, bits: int = 8, target_field: str = "original_target",
                teacher_field: str = "predicted_assertions", padded_length: int | None = None,
                with_logits: bool = True) -> dict:
    """A record in the published format, with random peaked teacher logits of shape (1, T, V)."""
    rng = np.random.default_rng(index)
    assertions = [f"assertEquals({index}, calculator.add({index}, 0));", "assertTrue(stack.isEmpty());"]
    record = {
        "focal_file": JAVA_SNIPPETS[index % 2],
        "test_method_masked": JAVA_SNIPPETS[2],
        target_field: assertions if target_field == "assertions" else "\n".join(assertions),
        teacher_field: assertions[:1] if teacher_field == "predicted_assertions" else assertions[0],
        "model_type": "codet5",
    }
    if with_logits:
        length = padded_length or 24
        logits = rng.normal(0.0, 1.0, size=(1, length, vocab_size)).astype(np.float32)
        logits[0, np.arange(length), rng.integers(0, vocab_size, size=length)] += 8.0  # peaked rows
        record["compressed_logits"] = compress_logits(logits, bits=bits)
    return record


def write_archive(path: str, train_lines: list[str], val_lines: list[str], gzipped: bool = False,
                  header: bool = True, inner_compression: int = zipfile.ZIP_STORED,
                  prefix: str = "codet5") -> dict:
    """Write an outer ZIP with training and validation inner ZIPs; returns the script.py flags."""
    flags = {"--distillation_data_path": path}
    with zipfile.ZipFile(path, "w", compression=inner_compression) as outer:
        for split, lines in (("training", train_lines), ("validation", val_lines)):
            jsonl_name = f"distillation_data_{split}.jsonl"
            inner_path = f"{prefix}/{jsonl_name}.zip"
            body = []
            if header:
                body.append(json.dumps({"header": {"dataset_type": split, "item_count": len(lines)}}))
            payload = ("\n".join(body + list(lines)) + "\n").encode()
            if gzipped:
                payload = gzip.compress(payload)
            inner_buffer = io.BytesIO()
            with zipfile.ZipFile(inner_buffer, "w", compression=zipfile.ZIP_DEFLATED) as inner:
                inner.writestr(jsonl_name, payload)
            outer.writestr(inner_path, inner_buffer.getvalue())
            short = "train" if split == "training" else "val"
            flags[f"--{short}_outer_zip_internal_path"] = inner_path
            flags[f"--{short}_inner_zip_jsonl_filename"] = jsonl_name
    return flags


def tiny_model_and_archive(root, num_train: int, num_val: int, val_start: int = 50,
                           archive_name: str = "d.zip") -> tuple[str, dict]:
    """A saved tiny model and an archive of num_train training and num_val validation records (indices from
    val_start) under `root`; returns (model dir, script.py's data flags)."""
    model_dir = save_tiny_model(os.path.join(str(root), "model"))
    vocab = len(tiny_tokenizer())
    flags = write_archive(os.path.join(str(root), archive_name),
                          records_as_lines([make_record(i, vocab) for i in range(num_train)]),
                          records_as_lines([make_record(val_start + i, vocab) for i in range(num_val)]))
    return model_dir, flags


def records_as_lines(records: list[dict]) -> list[str]:
    """JSON lines of records."""
    return [json.dumps(record) for record in records]


def flag_list(flags: dict) -> list[str]:
    """{'--a': 1, '--b': True} -> ['--a', '1', '--b']."""
    argv = []
    for name, value in flags.items():
        if value is True:
            argv.append(name)
        elif value is not False and value is not None:
            argv.extend([name, str(value)])
    return argv


def tiny_run_flags(tmp_path, model_dir: str, archive_flags: dict, **overrides) -> list[str]:
    """script.py flags for a fast run on a tiny model."""
    flags = {**archive_flags, "--student_model_name": model_dir, "--teacher_model_name": model_dir,
             "--output_dir": os.path.join(str(tmp_path), "out"), "--epochs": 1, "--batch_size": 4,
             "--eval_batch_size": 4, "--num_beams": 2, "--student_max_src_length": 64,
             "--student_max_tgt_length": 32, "--learning_rate": 1e-3}
    flags.update(overrides)
    return flag_list(flags)


def read_predictions(output_dir) -> list[dict]:
    """The rows of output_dir/predictions.jsonl."""
    return [json.loads(line) for line in (output_dir / schema.PREDICTIONS_FILENAME).read_text().splitlines()]


def check_predictions_match_summary(output_dir, expected_truths):
    """predictions.jsonl holds the evaluated records in file order and its column means are the summary's."""
    summary = json.loads((output_dir / schema.SUMMARY_FILENAME).read_text())
    metrics, rows = summary[schema.FINAL_EVALUATION_METRICS], read_predictions(output_dir)
    assert [row["ground_truth"] for row in rows] == expected_truths
    assert [row["index"] for row in rows] == list(range(len(rows))) == list(range(metrics["num_eval_samples"]))
    lines = [row["line_number"] for row in rows]
    assert all(earlier < later for earlier, later in zip(lines, lines[1:]))  # file order, no record twice
    names = record_metric_keys(rows)
    for name in names:
        assert float(np.mean([row[name] for row in rows])) == metrics[f"avg_{name}"], name
    intervals = summary[schema.CONFIDENCE_INTERVALS]
    assert intervals["method"] == BOOTSTRAP_METHOD and intervals["resamples"] >= 1000
    assert intervals["confidence"] == 0.95
    for name in names:
        low, high = intervals[f"avg_{name}"]
        assert low <= metrics[f"avg_{name}"] <= high, name
    return rows


def assert_same_numbers(actual, expected, where: str = "") -> None:
    """actual == expected; when the run could use CUDA (its kernels are not bit-exact run to run), floats within
    1e-4 relative, nested dicts and lists compared item by item."""
    if not torch.cuda.is_available():
        assert actual == expected, where
    elif isinstance(expected, dict):
        assert isinstance(actual, dict) and actual.keys() == expected.keys(), where
        for key, value in expected.items():
            assert_same_numbers(actual[key], value, f"{where}.{key}")
    elif isinstance(expected, (list, tuple)):
        assert isinstance(actual, (list, tuple)) and len(actual) == len(expected), where
        for index, (got, value) in enumerate(zip(actual, expected)):
            assert_same_numbers(got, value, f"{where}[{index}]")
    elif isinstance(expected, float) and not isinstance(actual, bool):
        assert actual == pytest.approx(expected, rel=1e-4, abs=1e-6, nan_ok=True), where
    else:
        assert actual == expected, where


def java_and_sandbox_or_skip() -> None:
    """Skip the test unless a JDK, the JUnit jars and bubblewrap are here (evaluate_execution.py's needs)."""
    from assertdistill.execution.jvm import JavaUnavailable, find_java_tools, junit_jars
    from assertdistill.execution.sandbox import Sandbox, SandboxLimits, SandboxUnavailable

    try:
        find_java_tools()
        junit_jars()
        Sandbox(SandboxLimits()).check()
    except (JavaUnavailable, SandboxUnavailable) as error:
        pytest.skip(f"no JDK / JUnit / bubblewrap here: {error}")
