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
from benchmarks.deploy import figure_lines
from assertdistill.model.precision import MATRIX_FEATURES
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
    val_records: int  # validation records: the eval timing evaluates them all
    eval_batch_size: int
    beams: tuple[int, ...] = (4, 1)  # eval timing's beam widths; the first is the headline (the thesis's 4)
    blocks: int = 4  # distinct teacher blocks in the archive
    vocab_size: int = 32100  # V of teacher blocks and students (CodeT5's)
    positions: int = 512  # T of teacher blocks = max target length (the thesis pads to 512)
    max_source: int = 1024  # source token budget
    compile_shapes: tuple[str, ...] = ()  # shapes also trained with script.py --compile (torch.compile)
    device: str = "cpu"  # cpu or cuda: where models train and generate (the data path is always CPU)
    precision: str = "fp32"  # bf16: the suite is also measured with --precision bf16 (the thesis runs fp32)

    def __post_init__(self):
        assert self.records >= (self.steps + 1) * self.batch_size, "too few records for the training steps"


PLANS = {
    "tiny-only": Plan(["tiny"], records=4, batch_size=2, steps=1, val_records=2, eval_batch_size=2, blocks=1,
                      vocab_size=2048, positions=128, max_source=256),  # a smoke test, not a measurement
    "short": Plan(["tiny", "codet5-small"], records=16, batch_size=4, steps=2, val_records=8, eval_batch_size=8),
    "default": Plan(["tiny", "codet5-small"], records=40, batch_size=8, steps=3, val_records=16, eval_batch_size=16,
                    compile_shapes=("codet5-small",)),
}
GPU_SHAPES = ["codet5-small", "codet5-base"]  # what --device cuda trains and evaluates
HEADLINE_SHAPE = "codet5-small"  # the shape of the last lines' figures


def run_worker(task: str, archive: str | None, tokenizer: str | None, **options) -> dict:
    """Run one benchmarks.worker task in a fresh process and return its JSON result.

    options: --name value; "" for a flag without a value, a list for several values.
    """
    command = [sys.executable, "-m", "benchmarks.worker", task]
    if archive:
        command += ["--archive", archive, "--tokenizer", tokenizer]
    for name, value in options.items():
        values = [str(item) for item in value] if isinstance(value, (list, tuple)) else [str(value)] if value != "" else []
        command += [f"--{name}"] + values
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
                                  num_val_records=plan.val_records, vocab_size=plan.vocab_size,
                                  positions=plan.positions)
    sizes = dict(vocab_size=plan.vocab_size, max_target=plan.positions, max_source=plan.max_source)
    log(f"archive: {plan.records} records, {archive.jsonl_bytes / 1e6:.0f} MB of JSONL, "
        f"{archive.compressed_bytes / 1e6:.0f} MB deflated ({time.perf_counter() - started:.0f} s)")
    results = {"plan": vars(plan), "machine": machine(), "flop_formula": FLOP_FORMULA,
               "archive": {"records": plan.records, "jsonl_bytes": archive.jsonl_bytes,
                           "compressed_bytes": archive.compressed_bytes}}
    device = dict(device=plan.device)
    peaks = run_worker("matmul", None, None, **device)
    results["matmul_flops_per_s"] = peaks["matmul_flops_per_s"]
    results["peak_flops_per_s"] = peaks["matmul_flops_per_s"]  # what MFU divides by
    results["peak_bf16_flops_per_s"] = peaks.get("matmul_bf16_flops_per_s")  # MFU of the bf16 runs
    log(f"matmul: {results['matmul_flops_per_s'] / 1e9:.1f} GFLOP/s float32, "
        f"{(results['peak_bf16_flops_per_s'] or 0) / 1e9:.1f} GFLOP/s bf16")
    if plan.device == "cpu":  # the data path and the codec run on the CPU whatever the device
        results["decode"] = run_worker("decode", archive_path, tokenizer_dir, **sizes)
        for pipeline in ("thesis", "suite"):
            results[f"data_{pipeline}"] = run_worker("data", archive_path, tokenizer_dir, pipeline=pipeline,
                                                     batch_size=plan.batch_size, **sizes)
            log(f"data {pipeline}: {results[f'data_{pipeline}']['seconds']:.1f} s")
    for shape in plan.shapes:
        results[f"check_{shape}"] = run_worker("check", archive_path, tokenizer_dir, shape=shape,
                                               batch_size=min(plan.batch_size, 2), **device, **sizes)
        runs = [("thesis", "fp32", ""), ("suite", "fp32", "")]
        if plan.precision == "bf16":
            runs.append(("suite", "bf16", "_bf16"))
        for pipeline, precision, suffix in runs:
            key = f"train_{shape}_{pipeline}{suffix}"
            results[key] = run_worker("train", archive_path, tokenizer_dir, pipeline=pipeline, shape=shape,
                                      batch_size=plan.batch_size, steps=plan.steps, precision=precision,
                                      **device, **sizes)
            log(f"train {shape} {pipeline}{suffix}: {results[key]['samples_per_s']:.3f} samples/s")
            key = f"eval_{shape}_{pipeline}{suffix}"
            results[key] = run_worker("eval", archive_path, tokenizer_dir, pipeline=pipeline, shape=shape,
                                      batch_size=plan.eval_batch_size, beams=list(plan.beams), precision=precision,
                                      **device, **sizes)
            log(f"eval {shape} {pipeline}{suffix}: " + ", ".join(
                f"beam {beams} {result['records'] / result['seconds']:.3f} records/s"
                for beams, result in results[key].items()))
        if plan.device == "cpu" and shape == plan.shapes[-1]:  # per-method latency, size, int8 (benchmarks/deploy.py)
            results["deploy"] = run_worker("deploy", archive_path, tokenizer_dir, shape=shape, beams=[1, 4], **sizes)
            results["deploy"]["shape"] = shape
            log(f"deploy {shape}: decoder {results['deploy']['beams']['4']['speedup_vs_generate']:.2f}x "
                f"model.generate at beam 4")
        if shape in plan.compile_shapes:
            key = f"train_{shape}_suite_compiled"
            results[key] = run_worker("train", archive_path, tokenizer_dir, pipeline="suite", shape=shape,
                                      batch_size=plan.batch_size, steps=plan.steps, compile="", **sizes)
            log(f"train {shape} suite --compile: {results[key]['samples_per_s']:.3f} samples/s")
    return results


def _ratio(suite: float, thesis: float) -> str:
    return f"{suite / thesis:.2f}x" if thesis else "n/a"


def _rate(result: dict) -> float:
    """Records per second of an eval result."""
    return result["records"] / result["seconds"]


def _same_texts(results: dict, shape: str, beams: str, suite: str = "suite") -> tuple[int, int]:
    """(records whose generated text is the same in both pipelines, records) at a beam width."""
    thesis, suite = (results[f"eval_{shape}_{name}"][beams]["texts"] for name in ("thesis", suite))
    return sum(a == b for a, b in zip(thesis, suite)), len(thesis)


def format_table(results: dict) -> str:
    """The human-readable report (everything but the final figure lines)."""
    plan, info = results["plan"], results["machine"]
    peak = results["peak_flops_per_s"]
    on_gpu = plan["device"] != "cpu"
    lines = [f"machine: {info['cpu']} ({info['cpu_capability']}), {info['cores']} cores, torch {info['torch']} "
             f"({info['torch_threads']} threads)" + (f"; GPU {info.get('gpu')}" if on_gpu else "")
             + f"; one 4096^3 float32 matmul on {plan['device']}: {peak / 1e9:.1f} GFLOP/s"
             + (f" (bf16: {results['peak_bf16_flops_per_s'] / 1e9:.1f})" if results.get("peak_bf16_flops_per_s") else ""),
             f"CPU matrix features: {_features(info)}",
             f"data: {plan['records']} training + {plan['val_records']} validation records, T={plan['positions']} x "
             f"V={plan['vocab_size']} 8-bit teacher blocks, {plan['max_source']}-token sources, 20-80-token "
             f"training and 20-60-token validation targets; {results['archive']['jsonl_bytes'] / 1e6:.0f} MB "
             f"training JSONL in a {results['archive']['compressed_bytes'] / 1e6:.0f} MB deflated inner ZIP; "
             f"batch {plan['batch_size']}, eval batch {plan['eval_batch_size']}"
             + ("; the suite also with --precision bf16" if plan["precision"] == "bf16" else ""),
             "", f"{'':50}{'thesis':>12}{'suite':>12}{'suite/thesis':>14}"]

    def row(name: str, thesis: float | None, suite: float | None, digits: int = 2, ratio: bool = True) -> None:
        if thesis is None or suite is None:
            return
        lines.append(f"{name:50}{thesis:>12.{digits}f}{suite:>12.{digits}f}"
                     f"{_ratio(suite, thesis) if ratio else '':>14}")

    if "data_thesis" in results:
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
        row("  peak GPU memory (MB)", train["thesis"]["peak_device_mb"], train["suite"]["peak_device_mb"], digits=0,
            ratio=False)
        flops = train["suite"]["model_flops_per_s"]
        lines.append(f"  suite model FLOP/s {flops / 1e9:.1f} G = MFU {flops / peak:.1%} of the matmul peak")
        lines.extend(_work_lines(train, peak))
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
        evaluation = {name: results[f"eval_{shape}_{name}"] for name in ("thesis", "suite")}
        lines.append(f"evaluation, {shape} (eval loss + generation of the {plan['val_records']} validation records, "
                     f"max_length {plan['positions']}, each stopped at its target's length)")
        for beams in evaluation["suite"]:
            thesis, suite = evaluation["thesis"][beams], evaluation["suite"][beams]
            row(f"  beam {beams}: records/s", _rate(thesis), _rate(suite), digits=3)
            row(f"  beam {beams}: generation only, records/s", thesis["records"] / thesis["generation_seconds"],
                suite["records"] / suite["generation_seconds"], digits=3)
            memory = "peak_device_mb" if on_gpu else "peak_rss_mb"
            row(f"  beam {beams}: peak {'GPU memory' if on_gpu else 'RSS'} (MB)", thesis[memory], suite[memory],
                digits=0, ratio=False)
            same, total = _same_texts(results, shape, beams)
            differences = [abs(s - t) / max(abs(t), 1e-12) for s, t in zip(suite["losses"], thesis["losses"])]
            lines.append(f"  beam {beams}: same generated text for {same}/{total} records "
                         f"({'OK' if same == total else 'MISMATCH'}); {suite['generated_tokens'] / total:.0f} tokens "
                         f"per record; eval loss thesis {thesis['losses'][0]:.6f}, suite {suite['losses'][0]:.6f} "
                         f"(max relative difference {max(differences):.1e})")
        lines += _bf16_lines(results, shape)
    if "decode" in results:
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
                  f"for lz4 on the whole block"]
    figures = results["figures"]
    lines += [f"end to end, {figures['shape']}: one epoch of the {plan['records']} training records + one evaluation "
              f"of the {plan['val_records']} validation records at beam {plan['beams'][0]}, from the rates above: "
              f"thesis {figures['end_to_end_seconds']['thesis']:.0f} s, suite {figures['end_to_end_seconds']['suite']:.0f} s",
              f"model FLOPs: {results['flop_formula']}"]
    return "\n".join(lines)


def _features(info: dict) -> str:
    """The machine's matrix flags and whether oneDNN runs bf16 natively (results of older benches: unknown)."""
    if "matrix_features" not in info:
        return "not recorded"
    flags = ", ".join(info["matrix_features"]) or "none of " + ", ".join(MATRIX_FEATURES)
    return f"{flags}; oneDNN bf16 {'native' if info['mkldnn_bf16'] else 'emulated (no bf16 instructions)'}"


def _bf16_lines(results: dict, shape: str) -> list[str]:
    """The suite with --precision bf16 (CPU: a bf16 weight copy; CUDA: autocast), against fp32 suite and thesis."""
    train, evaluation = results.get(f"train_{shape}_suite_bf16"), results.get(f"eval_{shape}_suite_bf16")
    if not train:
        return []
    on_gpu = results["plan"]["device"] != "cpu"
    memory, memory_name = ("peak_device_mb", "peak GPU memory") if on_gpu else ("peak_rss_mb", "peak RSS")
    thesis_train, thesis_eval = results[f"train_{shape}_thesis"], results[f"eval_{shape}_thesis"]
    suite_train, suite_eval = results[f"train_{shape}_suite"], results[f"eval_{shape}_suite"]
    lines = [f"  suite with --precision bf16: training {train['samples_per_s']:.3f} samples/s "
             f"({_ratio(train['samples_per_s'], suite_train['samples_per_s'])} the fp32 suite, "
             f"{_ratio(train['samples_per_s'], thesis_train['samples_per_s'])} the thesis), "
             f"MFU {train['model_flops_per_s'] / results['peak_bf16_flops_per_s']:.1%} of the bf16 matmul peak "
             f"(fp32 suite: {suite_train['model_flops_per_s'] / results['peak_flops_per_s']:.1%} of the fp32 peak), "
             f"{memory_name} {train[memory]:.0f} MB"]
    for beams, result in evaluation.items():
        same, total = _same_texts(results, shape, beams, "suite_bf16")
        lines.append(f"  suite with --precision bf16, beam {beams}: {_rate(result):.3f} eval records/s "
                     f"({_ratio(_rate(result), _rate(suite_eval[beams]))} the fp32 suite, "
                     f"{_ratio(_rate(result), _rate(thesis_eval[beams]))} the thesis), {memory_name} "
                     f"{result[memory]:.0f} MB, same text as the float32 thesis for {same}/{total} "
                     f"records (bf16 rounding may change a few)")
    return lines


def _work_lines(train: dict, peak: float) -> list[str]:
    """Where the training speedup comes from: less computed work (padding) x busier arithmetic units."""
    if "executed_flops_per_sample" not in train["thesis"]:  # results of an older bench
        return []
    per_sample = {name: train[name]["executed_flops_per_sample"] for name in train}
    busy = {name: per_sample[name] * train[name]["samples_per_s"] / peak for name in train}  # batch loading included
    return [f"  computed work per sample (padding included): thesis {per_sample['thesis'] / 1e9:.0f} GFLOP, suite "
            f"{per_sample['suite'] / 1e9:.0f} GFLOP ({_ratio(per_sample['thesis'], per_sample['suite'])} less); "
            f"computed FLOP/s (batch loading included): thesis {busy['thesis']:.1%}, suite {busy['suite']:.1%} of the "
            f"matmul peak "
            f"({_ratio(busy['suite'], busy['thesis'])}); speedup = the product"]


def figures(results: dict) -> dict:
    """The last lines' figures, at CodeT5-small shape (or the largest shape run).

    speedup_vs_thesis: training samples/s, suite / thesis; eval_speedup: eval records/s (loss + generation)
    at the first beam width; end_to_end_speedup: one epoch + one evaluation, thesis time / suite time;
    mfu: the suite's training step, model FLOP/s / matmul FLOP/s.
    """
    plan = results["plan"]
    shape = HEADLINE_SHAPE if HEADLINE_SHAPE in plan["shapes"] else plan["shapes"][-1]
    beams = str(plan["beams"][0])
    train = {name: results[f"train_{shape}_{name}"] for name in ("thesis", "suite")}
    evaluation = {name: results[f"eval_{shape}_{name}"][beams] for name in ("thesis", "suite")}
    seconds = {name: plan["records"] / train[name]["samples_per_s"] + plan["val_records"] / _rate(evaluation[name])
               for name in ("thesis", "suite")}
    result = {"shape": shape,
              "speedup_vs_thesis": train["suite"]["samples_per_s"] / train["thesis"]["samples_per_s"],
              "eval_speedup": _rate(evaluation["suite"]) / _rate(evaluation["thesis"]),
              "end_to_end_speedup": seconds["thesis"] / seconds["suite"], "end_to_end_seconds": seconds,
              "mfu": train["suite"]["model_flops_per_s"] / results["peak_flops_per_s"]}
    bf16 = results.get(f"train_{shape}_suite_bf16")
    if bf16:  # bf16_train_speedup: the bf16 step against the fp32 step of the same run
        result.update(bf16_train_speedup=bf16["samples_per_s"] / train["suite"]["samples_per_s"],
                      bf16_speedup_vs_thesis=bf16["samples_per_s"] / train["thesis"]["samples_per_s"],
                      bf16_mfu=bf16["model_flops_per_s"] / results["peak_bf16_flops_per_s"],
                      bf16_eval_speedup=_rate(results[f"eval_{shape}_suite_bf16"][beams]) / _rate(evaluation["suite"]))
    return result


def speedup(results: dict) -> float:
    """Training throughput at CodeT5-small shape (or the largest shape run), suite / thesis."""
    return figures(results)["speedup_vs_thesis"]


def run(mode: str, workdir: str | None = None, json_path: str | None = None, log=print,
        compile_model: bool = False, device: str = "cpu", precision: str = "fp32") -> dict:
    """Measure a plan in a (temporary) work directory, print the table, then the figures, speedup_vs_thesis last."""
    plan = PLANS[mode]
    changes = {}
    if compile_model and not plan.compile_shapes:
        changes["compile_shapes"] = (plan.shapes[-1],)
    if device != "cpu":
        changes.update(device=device, compile_shapes=(), shapes=plan.shapes if mode == "tiny-only" else GPU_SHAPES)
    changes["precision"] = precision
    plan = Plan(**{**vars(plan), **changes})
    with tempfile.TemporaryDirectory(prefix="assertdistill_bench_", dir=workdir) as scratch:
        results = measure(plan, scratch, log=log)
    results["figures"] = figures(results)
    results["speedup_vs_thesis"] = results["figures"]["speedup_vs_thesis"]
    if json_path:
        with open(json_path, "w", encoding="utf-8") as stream:
            json.dump(results, stream, indent=2)
    print(format_table(results))
    if "deploy" in results:
        print("\n".join(figure_lines(results["deploy"], results["deploy"]["shape"])))
    figures_found = results["figures"]
    print(f"matrix_features={','.join(results['machine']['matrix_features']) or 'none'}")
    for name in ("bf16_train_speedup", "bf16_speedup_vs_thesis", "bf16_eval_speedup", "bf16_mfu"):
        if name in figures_found:
            print(f"{name}={figures_found[name]:.{3 if name == 'bf16_mfu' else 2}f}")
    print(f"eval_speedup={results['figures']['eval_speedup']:.2f}")
    print(f"end_to_end_speedup={results['figures']['end_to_end_speedup']:.2f}")
    print(f"mfu={results['figures']['mfu']:.3f}")
    print(f"speedup_vs_thesis={results['speedup_vs_thesis']:.2f}", flush=True)
    return results


__all__ = ["PLANS", "SHAPES", "run", "format_table", "figures", "speedup"]
