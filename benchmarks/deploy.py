"""Per-method CPU latency, size on disk and int8 accuracy of a student, one method (batch 1) at a time.

Four ways of generating each method's assertions, at beam 1 and 4: model.generate on the student as
loaded (transformers' default attention), this suite's decoder (generation.generate, what script.py's
evaluation and generate_assertions.py run) on float32 weights, the same decoder on torch dynamic
int8 weights (saved_student.quantize_int8, oneDNN's engine where the CPU has VNNI/AMX) and on bf16
weights (generate_assertions.py --backend bf16; float32 where the CPU has no bf16 instructions).
Reported: p50 / p95 milliseconds per method (encoder included), the texts' agreement, size on disk,
and with --model_dir (a trained student on the demo's validation split) accuracy / similarity /
strict match of int8 and of bf16 against float32 with statistics.paired_test. Run as `python -m benchmarks.deploy --model_dir DIR` (see docs/PERFORMANCE.md).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import tempfile
import time

import numpy as np
import torch
from transformers import LogitsProcessorList

from assertdistill.core.schema import ACCURACY, S_VS_GT, S_VS_GT_SCRIPT1, SIMILARITY_AVG, record_key, strict_key
from assertdistill.data.dataset import ArchiveSpec, DistillationStream
from assertdistill.data.datastats import DataStats
from assertdistill.data.encoding import InputEncoder
from assertdistill.deploy.saved_student import INT8_WEIGHTS, export_int8, load_saved_student, quantize_int8
from assertdistill.model import generation
from assertdistill.model.models import configure_training_kernels
from assertdistill.model.precision import inference_model
from assertdistill.scoring.registry import record_metrics
from assertdistill.scoring.statistics import paired_test
from benchmarks.data import INNER_ZIP_PATH, JSONL_NAME
from benchmarks.evaluation import StopAtTargetLength, target_lengths
from benchmarks.measure import SHAPES, make_model

WAYS = ("generate", "suite", "int8", "bf16")  # model.generate fp32; the suite's decoder fp32, int8, bf16
LOW_PRECISION = ("int8", "bf16")  # compared with the suite's fp32 decoder
PAIRED = (("accuracy", record_key(ACCURACY, S_VS_GT_SCRIPT1), False),  # (label, per-record metric, 0/1 score)
          ("similarity", record_key(SIMILARITY_AVG, S_VS_GT_SCRIPT1), False),
          ("strict exact match", strict_key(S_VS_GT), True))


def models_for(model) -> dict:
    """The ways' models: the student as loaded, with the suite's attention, and that one in int8 and in bf16."""
    plain = model.eval()
    suite = copy.deepcopy(plain)
    configure_training_kernels(suite, "auto", torch.device("cpu"))
    return {"generate": plain, "suite": suite, "int8": quantize_int8(copy.deepcopy(suite)),
            "bf16": inference_model(suite, "bf16", torch.device("cpu"))}


def methods_of(stream: DistillationStream, limit: int | None) -> list[dict]:
    """The stream's records one by one: input ids (1, S), target length, and the texts the metrics compare."""
    methods = []
    for item in stream:
        if isinstance(item, DataStats):
            continue
        for row in range(item["input_ids"].size(0)):
            length = int(item["attention_mask"][row].sum())
            methods.append({"input_ids": item["input_ids"][row:row + 1, :length],
                            "target_length": int(target_lengths(item["labels"][row:row + 1])[0]),
                            "truth": item["ground_truth_texts"][row], "teacher": item["teacher_texts"][row],
                            "teacher_script1": item["teacher_texts_script1"][row]})
            if limit is not None and len(methods) >= limit:
                return methods
    return methods


@torch.no_grad()
def time_way(way: str, model, tokenizer, methods: list[dict], num_beams: int, max_length: int,
             stop_at_target: bool) -> dict:
    """Milliseconds per method and the texts of one way at one beam width (after one untimed method)."""
    milliseconds, texts = [], []
    for index, method in enumerate([methods[0]] + methods):
        input_ids = method["input_ids"]
        attention_mask = torch.ones_like(input_ids)
        options = {}
        if stop_at_target:  # a random model's EOS: every beam ends at the record's target length
            options["logits_processor"] = LogitsProcessorList([StopAtTargetLength(
                torch.tensor([method["target_length"]]), num_beams, tokenizer.eos_token_id)])
        started = time.perf_counter()
        if way == "generate":
            ids = model.generate(input_ids, attention_mask=attention_mask, max_length=max_length,
                                 num_beams=num_beams, early_stopping=num_beams > 1, **options)
        else:
            settings = generation.DecodingSettings(num_beams, max_length)
            ids = generation.generate(model, input_ids, attention_mask, settings, **options)
        elapsed = (time.perf_counter() - started) * 1000
        if index:  # the first pass warms up kernels and allocations
            milliseconds.append(elapsed)
            texts.append(tokenizer.decode(ids[0], skip_special_tokens=True))
    return {"p50_ms": float(np.percentile(milliseconds, 50)), "p95_ms": float(np.percentile(milliseconds, 95)),
            "mean_ms": float(np.mean(milliseconds)), "texts": texts}


def sizes_on_disk(model, tokenizer, workdir: str) -> dict:
    """Bytes of the float32 weights (save_pretrained's safetensors) and of the int8 export's state_dict."""
    from assertdistill.deploy.saved_student import SavedStudent

    fp32_dir, int8_dir = os.path.join(workdir, "fp32"), os.path.join(workdir, "int8")
    model.save_pretrained(fp32_dir)
    fp32 = sum(os.path.getsize(os.path.join(fp32_dir, name)) for name in os.listdir(fp32_dir)
               if name.endswith(".safetensors"))
    export_int8(SavedStudent(model, tokenizer, {}, None, "torch"), int8_dir)
    return {"fp32_bytes": fp32, "int8_bytes": os.path.getsize(os.path.join(int8_dir, INT8_WEIGHTS))}


def measure(model, tokenizer, methods: list[dict], beams: tuple[int, ...], max_length: int,
            stop_at_target: bool) -> dict:
    """Every way at every beam width, sizes, agreements and (with real targets) int8 vs float32 paired tests."""
    torch.manual_seed(0)
    models = models_for(model)
    results = {"methods": len(methods), "beams": {}}
    with tempfile.TemporaryDirectory(prefix="assertdistill_deploy_") as workdir:
        results.update(sizes_on_disk(models["generate"], tokenizer, workdir))
    for num_beams in beams:
        ways = {way: time_way(way, models[way], tokenizer, methods, num_beams, max_length, stop_at_target)
                for way in WAYS}
        entry = {way: {key: value for key, value in ways[way].items() if key != "texts"} for way in WAYS}
        texts = {way: ways[way]["texts"] for way in WAYS}
        entry["suite_same_text_as_generate"] = sum(a == b for a, b in zip(texts["suite"], texts["generate"]))
        entry["speedup_vs_generate"] = ways["generate"]["mean_ms"] / ways["suite"]["mean_ms"]
        for way in LOW_PRECISION:
            entry[f"{way}_same_text_as_fp32"] = sum(a == b for a, b in zip(texts[way], texts["suite"]))
            entry[f"{way}_speedup_vs_fp32"] = ways["suite"]["mean_ms"] / ways[way]["mean_ms"]
            if not stop_at_target:
                entry[f"{way}_vs_fp32"] = paired_against_fp32(methods, texts["suite"], texts[way])
        results["beams"][str(num_beams)] = entry
    return results


def paired_against_fp32(methods: list[dict], fp32_texts: list[str], other_texts: list[str]) -> dict:
    """int8 or bf16 minus float32 on the same records (statistics.paired_test): means, difference, 95% interval, p."""
    rows = {name: [record_metrics(text, m["truth"], m["teacher"], m["teacher_script1"]) for m, text in
                   zip(methods, texts)] for name, texts in (("fp32", fp32_texts), ("other", other_texts))}
    tests = {}
    for label, key, binary in PAIRED:
        fp32, other = (np.array([row[key] for row in rows[name]], dtype=np.float64) for name in ("fp32", "other"))
        result = paired_test(other, fp32, binary=binary)
        tests[label] = {"fp32": float(fp32.mean()), "other": float(other.mean()), "difference": result.difference,
                        "ci": [result.ci_low, result.ci_high], "p_value": result.p_value, "test": result.test}
    return tests


def task_deploy(args, tokenizer, model) -> dict:
    """benchmarks.worker's deploy task: a random model of a bench shape on the bench archive's validation split."""
    spec = ArchiveSpec(args.archive, INNER_ZIP_PATH.format(split="validation"), JSONL_NAME.format(split="validation"))
    stream = DistillationStream(spec, InputEncoder(tokenizer, args.max_source, args.max_target), 1, need_logits=False)
    try:
        methods = methods_of(stream, None)
    finally:
        stream.close()
    return measure(model, tokenizer, methods, tuple(args.beams), args.max_target, stop_at_target=True)


def figure_lines(results: dict, label: str) -> list[str]:
    """The human-readable lines, then one `name=value` line per figure."""
    lines = [f"{label}: {results['methods']} methods, one at a time; size on disk fp32 "
             f"{results['fp32_bytes'] / 2 ** 20:.1f} MiB, int8 {results['int8_bytes'] / 2 ** 20:.1f} MiB"]
    for beams, entry in results["beams"].items():
        timing = ", ".join(f"{way} p50 {entry[way]['p50_ms']:.1f} / p95 {entry[way]['p95_ms']:.1f} ms"
                           for way in WAYS)
        lines.append(f"  beam {beams}: {timing}; suite = generate's text for {entry['suite_same_text_as_generate']}"
                     f"/{results['methods']}, int8 = fp32's for {entry['int8_same_text_as_fp32']}/{results['methods']}"
                     f", bf16 = fp32's for {entry['bf16_same_text_as_fp32']}/{results['methods']}; latency fp32 / "
                     f"bf16 {entry['bf16_speedup_vs_fp32']:.2f}x, fp32 / int8 {entry['int8_speedup_vs_fp32']:.2f}x")
        for way in LOW_PRECISION:
            for name, test in entry.get(f"{way}_vs_fp32", {}).items():
                lines.append(f"    {name}: fp32 {test['fp32']:.4f}, {way} {test['other']:.4f}, difference "
                             f"{test['difference']:+.4f} [{test['ci'][0]:+.4f}, {test['ci'][1]:+.4f}], "
                             f"p {test['p_value']:.3f} ({test['test']})")
    key = label.replace(" ", "_").replace("-", "_")
    for beams, entry in results["beams"].items():
        lines.append(f"{key}_decoder_speedup_beam{beams}={entry['speedup_vs_generate']:.2f}")
        lines.append(f"{key}_int8_p50_ms_beam{beams}={entry['int8']['p50_ms']:.2f}")
        lines.append(f"{key}_bf16_latency_speedup_beam{beams}={entry['bf16_speedup_vs_fp32']:.2f}")
    lines.append(f"{key}_int8_size_ratio={results['int8_bytes'] / results['fp32_bytes']:.3f}")
    return lines


def parse_args(argv=None) -> argparse.Namespace:
    """Parse the command line."""
    from assertdistill.core.paths import DEMO

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model_dir", help="a saved student (e.g. a demo run's final_student_model)")
    source.add_argument("--shape", choices=sorted(SHAPES),
                        help="instead: a random T5 of this bench shape (vocabulary 32100) on the records' real inputs "
                             "(the demo tokenizer, 1024 source tokens), each beam stopped at its record's target length")
    parser.add_argument("--archive", default=DEMO.archive, help="outer ZIP of the validation records (the demo's)")
    parser.add_argument("--inner_zip", default=DEMO.val_inner_zip, help="validation inner ZIP inside the archive")
    parser.add_argument("--jsonl", default=DEMO.val_jsonl, help="validation JSONL inside the inner ZIP")
    parser.add_argument("--limit", type=int, default=None, help="only the first N validation records")
    parser.add_argument("--beams", type=int, nargs="+", default=[1, 4], help="beam widths")
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    """A saved student on a validation split: the ways' latencies, sizes, int8 and bf16 vs fp32 paired tests."""
    args = parse_args(argv)
    from transformers import AutoModelForSeq2SeqLM

    from assertdistill.core.paths import DEMO
    from assertdistill.model.models import load_tokenizer

    if args.shape:
        tokenizer, max_source, max_target = load_tokenizer(DEMO.student), 1024, 512
        model = make_model(args.shape, tokenizer)
    else:
        student = load_saved_student(args.model_dir)
        tokenizer = student.tokenizer
        max_source = int(student.setting("student_max_src_length", 1024))
        max_target = int(student.setting("student_max_tgt_length", 512))
        model = AutoModelForSeq2SeqLM.from_pretrained(args.model_dir, local_files_only=True, dtype=torch.float32)
    stream = DistillationStream(ArchiveSpec(args.archive, args.inner_zip, args.jsonl),
                                InputEncoder(tokenizer, max_source, max_target), 1, need_logits=False)
    try:
        methods = methods_of(stream, args.limit)
    finally:
        stream.close()
    results = measure(model, tokenizer, methods, tuple(args.beams), max_target, stop_at_target=bool(args.shape))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as stream:
            json.dump(results, stream, indent=2)
    print("\n".join(figure_lines(results, args.shape or "demo student")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
