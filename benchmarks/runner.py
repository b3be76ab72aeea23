"""Run every measurement in its own subprocess on one generated archive, then print the table."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

from benchmarks.data import bench_tokenizer, write_bench_archive
from benchmarks.measure import FLOP_FORMULA, SHAPES, machine

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LOSS_TOLERANCE = 1e-4  # relative difference allowed between the two pipelines' losses


@dataclass
class Plan:
    """What one bench run measures."""

    shapes: list[str]
    records: int  # training records in the archive (the data pass reads them all)
    batch_size: int
    steps: int  # timed training steps per pipeline and shape (after one warm-up step)
    new_tokens: int  # generated per sample in the eval timing
    blocks: int = 4  # distinct teacher blocks in the archive
    vocab_size: int = 32100  # V of teacher blocks and students (CodeT5's)
    positions: int = 512  # T of teacher blocks = max target length (the thesis pads to 512)
    max_source: int = 1024  # source token budget
    compile_shapes: tuple[str, ...] = ()  # shapes also trained with script.py --compile (torch.compile)

    def __post_init__(self):
        assert self.records >= (self.steps + 1) * self.batch_size, "too few records for the training steps"


PLANS = {
    "tiny-only": Plan(["tiny"], records=4, batch_size=2, steps=1, new_tokens=4, blocks=1, vocab_size=2048,
                      positions=128, max_source=256),  # a smoke test, not a measurement
    "short": Plan(["tiny", "codet5-small"], records=16, batch_size=4, steps=2, new_tokens=8),
    "default": Plan(["tiny", "codet5-small"], records=40, batch_size=8, steps=3, new_tokens=32,
                    compile_shapes=("codet5-small",)),
}


def run_worker(task: str, archive: str | None, tokenizer: str | None, **options) -> dict:
    """Run one benchmarks.worker task in a fresh process and return its JSON result."""
    command = [sys.executable, "-m", "benchmarks.worker", task]
    if archive:
        command += ["--archive", archive, "--tokenizer", tokenizer]
    for name, value in options.items():
        command += [f"--{name}"] + ([str(value)] if value != "" else [])  # "": a flag without a value
    environment = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
                       TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1")
    completed = subprocess.run(command, cwd=ROOT, env=environment, capture_output=True, text=True)
    if completed.returncode != 0:
        raise RuntimeError(f"{' '.join(command[2:])} failed:\n{completed.stderr[-3000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def measure(plan: Plan, workdir: str, log=print) -> dict:
    """All measurements of a plan; returns the results dict the table is made from."""
    tokenizer_dir = os.path.join(workdir, "tokenizer")
    bench_tokenizer().save_pretrained(tokenizer_dir)
    archive_path = os.path.join(workdir, "bench.zip")
    started = time.perf_counter()
    archive = write_bench_archive(archive_path, bench_tokenizer(), plan.records, plan.blocks,
                                  vocab_size=plan.vocab_size, positions=plan.positions)
    sizes = dict(vocab_size=plan.vocab_size, max_target=plan.positions, max_source=plan.max_source)
    log(f"archive: {plan.records} records, {archive.jsonl_bytes / 1e6:.0f} MB of JSONL, "
        f"{archive.compressed_bytes / 1e6:.0f} MB deflated ({time.perf_counter() - started:.0f} s)")
    results = {"plan": vars(plan), "machine": machine(), "flop_formula": FLOP_FORMULA,
               "archive": {"records": plan.records, "jsonl_bytes": archive.jsonl_bytes,
                           "compressed_bytes": archive.compressed_bytes}}
    results["matmul_flops_per_s"] = run_worker("matmul", None, None)["matmul_flops_per_s"]
    log(f"matmul: {results['matmul_flops_per_s'] / 1e9:.1f} GFLOP/s")
    results["decode"] = run_worker("decode", archive_path, tokenizer_dir, **sizes)
    for pipeline in ("thesis", "suite"):
        results[f"data_{pipeline}"] = run_worker("data", archive_path, tokenizer_dir, pipeline=pipeline,
                                                 batch_size=plan.batch_size, **sizes)
        log(f"data {pipeline}: {results[f'data_{pipeline}']['seconds']:.1f} s")
    for shape in plan.shapes:
        results[f"check_{shape}"] = run_worker("check", archive_path, tokenizer_dir, shape=shape,
                                               batch_size=min(plan.batch_size, 2), **sizes)
        for pipeline in ("thesis", "suite"):
            key = f"train_{shape}_{pipeline}"
            results[key] = run_worker("train", archive_path, tokenizer_dir, pipeline=pipeline, shape=shape,
                                      batch_size=plan.batch_size, steps=plan.steps, new_tokens=plan.new_tokens,
                                      **sizes)
            log(f"train {shape} {pipeline}: {results[key]['samples_per_s']:.3f} samples/s")
        if shape in plan.compile_shapes:
            key = f"train_{shape}_suite_compiled"
            results[key] = run_worker("train", archive_path, tokenizer_dir, pipeline="suite", shape=shape,
                                      batch_size=plan.batch_size, steps=plan.steps, new_tokens=plan.new_tokens,
                                      compile="", **sizes)
            log(f"train {shape} suite --compile: {results[key]['samples_per_s']:.3f} samples/s")
    return results


def _ratio(suite: float, thesis: float) -> str:
    return f"{suite / thesis:.2f}x" if thesis else "n/a"


def format_table(results: dict) -> str:
    """The human-readable report (everything but the final speedup line)."""
    plan, info = results["plan"], results["machine"]
    peak = results["matmul_flops_per_s"]
    lines = [f"machine: {info['cpu']}, {info['cores']} cores, torch {info['torch']} "
             f"({info['torch_threads']} threads); one 4096^3 float32 matmul: {peak / 1e9:.1f} GFLOP/s",
             f"data: {plan['records']} records, T={plan['positions']} x V={plan['vocab_size']} 8-bit teacher blocks, "
             f"{plan['max_source']}-token sources, "
             f"20-80-token targets; {results['archive']['jsonl_bytes'] / 1e6:.0f} MB JSONL in a "
             f"{results['archive']['compressed_bytes'] / 1e6:.0f} MB deflated inner ZIP; batch {plan['batch_size']}",
             "", f"{'':46}{'thesis':>12}{'suite':>12}{'suite/thesis':>14}"]

    def row(name: str, thesis: float, suite: float, digits: int = 2, ratio: bool = True) -> None:
        lines.append(f"{name:46}{thesis:>12.{digits}f}{suite:>12.{digits}f}"
                     f"{_ratio(suite, thesis) if ratio else '':>14}")

    jsonl_mb = results["archive"]["jsonl_bytes"] / 1e6
    data = {name: results[f"data_{name}"] for name in ("thesis", "suite")}
    lines.append("data pipeline (archive -> batch tensors, model excluded)")
    row("  records/s", *(plan["records"] / data[n]["seconds"] for n in ("thesis", "suite")))
    row("  MB/s of JSONL", *(jsonl_mb / data[n]["seconds"] for n in ("thesis", "suite")), digits=1)
    row("  peak RSS (MB)", data["thesis"]["peak_rss_mb"], data["suite"]["peak_rss_mb"], digits=0, ratio=False)
    for shape in plan["shapes"]:
        train = {name: results[f"train_{shape}_{name}"] for name in ("thesis", "suite")}
        millions = train["suite"]["num_parameters"] / 1e6
        lines.append(f"training, {shape} ({millions:.1f}M parameters; forward + backward + AdamW step, "
                     f"batch loading included)")
        row("  samples/s", train["thesis"]["samples_per_s"], train["suite"]["samples_per_s"], digits=3)
        row("  peak RSS (MB)", train["thesis"]["peak_rss_mb"], train["suite"]["peak_rss_mb"], digits=0, ratio=False)
        row(f"  eval generation samples/s ({plan['new_tokens']} new tokens)", train["thesis"]["eval_samples_per_s"],
            train["suite"]["eval_samples_per_s"], digits=3)
        flops = train["suite"]["model_flops_per_s"]
        lines.append(f"  suite model FLOP/s {flops / 1e9:.1f} G = MFU {flops / peak:.1%} of the matmul peak")
        compiled = results.get(f"train_{shape}_suite_compiled")
        if compiled:
            lines.append(f"  suite with --compile (torch.compile): {compiled['samples_per_s']:.3f} samples/s "
                         f"({_ratio(compiled['samples_per_s'], train['thesis']['samples_per_s'])} the thesis), "
                         f"MFU {compiled['model_flops_per_s'] / peak:.1%}, peak RSS {compiled['peak_rss_mb']:.0f} MB; "
                         f"compiling took {compiled['warm_up_seconds']:.0f} s (the warm-up step)")
        check = results[f"check_{shape}"]
        verdict = "OK" if check["max_relative_difference"] <= LOSS_TOLERANCE else "MISMATCH"
        lines.append(f"  same batch, dropout off: thesis loss {check['thesis'][0]:.6f}, suite {check['suite'][0]:.6f}"
                     f" (max relative difference of total/hard/soft {check['max_relative_difference']:.1e}: {verdict})")
    decode = results["decode"]
    lz4_speed = decode["block_bytes"] / decode["lz4_frame_decompress_s"]
    lines += [f"decoding one full record ({decode['block_bytes'] / 1e6:.1f} MB of 8-bit codes; output MB/s)",
              f"  lz4.frame.decompress of the frame bytes: {lz4_speed / 1e6:.0f} MB/s",
              f"  codec, whole block from hex: {decode['block_bytes'] / decode['codec_full_s'] / 1e6:.0f} MB/s "
              f"({decode['lz4_frame_decompress_s'] / decode['codec_full_s']:.0%} of lz4; hex decoding alone takes "
              f"{decode['hex_decode_s'] / decode['lz4_frame_decompress_s']:.1f}x the lz4 time, so a2b_hex + lz4 "
              f"reach at most {decode['lz4_frame_decompress_s'] / (decode['hex_decode_s'] + decode['lz4_frame_decompress_s']):.0%})",
              f"  codec, first {decode['prefix_positions']} positions (what training reads): "
              f"{decode['codec_prefix_s'] * 1e3:.1f} ms per record vs {decode['lz4_frame_decompress_s'] * 1e3:.1f} ms "
              f"for lz4 on the whole block",
              f"model FLOPs: {results['flop_formula']}"]
    return "\n".join(lines)


def speedup(results: dict) -> float:
    """Training throughput at CodeT5-small shape (or the largest shape run), suite / thesis."""
    shape = "codet5-small" if "codet5-small" in results["plan"]["shapes"] else results["plan"]["shapes"][-1]
    return results[f"train_{shape}_suite"]["samples_per_s"] / results[f"train_{shape}_thesis"]["samples_per_s"]


def run(mode: str, workdir: str | None = None, json_path: str | None = None, log=print,
        compile_model: bool = False) -> dict:
    """Measure a plan in a (temporary) work directory, print the table and the speedup line last."""
    plan = PLANS[mode]
    if compile_model and not plan.compile_shapes:
        plan = Plan(**{**vars(plan), "compile_shapes": (plan.shapes[-1],)})
    with tempfile.TemporaryDirectory(prefix="assertdistill_bench_", dir=workdir) as scratch:
        results = measure(plan, scratch, log=log)
    results["speedup_vs_thesis"] = speedup(results)
    if json_path:
        with open(json_path, "w", encoding="utf-8") as stream:
            json.dump(results, stream, indent=2)
    print(format_table(results))
    print(f"speedup_vs_thesis={results['speedup_vs_thesis']:.2f}", flush=True)
    return results


__all__ = ["PLANS", "SHAPES", "run", "format_table", "speedup"]
