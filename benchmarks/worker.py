"""One measurement in its own process (so peak RSS is that pipeline's alone); prints one JSON line.

    python -m benchmarks.worker TASK --archive A.zip --tokenizer DIR [--pipeline thesis|suite] [...]
TASK: data (archive -> batch tensors), train (training steps), eval (eval loss + generation over the
validation split), check (same loss on the same batch), decode (codec vs lz4.frame.decompress), matmul
(FLOP/s of one large matmul).
"""

from __future__ import annotations

import argparse
import binascii
import itertools
import json
import sys
import time

import lz4.frame
import torch
from transformers import AutoTokenizer, get_linear_schedule_with_warmup

from assertdistill.codec.codec import decode_quantized
from assertdistill.data.archive import locate_inner_zip, open_jsonl_member
from assertdistill.data.dataset import ArchiveSpec, DistillationStream
from assertdistill.data.datastats import DataStats
from assertdistill.data.encoding import InputEncoder
from assertdistill.data.jsonline import loads_record_line
from assertdistill.distill.forward import batch_losses
from assertdistill.distill.loss import DistillationLoss
from assertdistill.distill.run import make_optimizer
from assertdistill.distill.training import make_loader, move_batch
from assertdistill.model.models import configure_training_kernels
from assertdistill.model.precision import Bf16Weights, inference_model
from assertdistill.runtime.allocator import keep_freed_memory
from benchmarks.data import INNER_ZIP_PATH, JSONL_NAME
from benchmarks.evaluation import evaluate_pipeline, warm_up
from benchmarks.measure import (
    make_model,
    matmul_flops,
    peak_memory_mb,
    peak_rss_mb,
    reset_peak_memory,
    reset_peak_rss,
    training_flops,
)
from benchmarks.thesis import ThesisDataset, thesis_loader, thesis_losses

TEMPERATURE, ALPHA = 2.0, 0.7
LEARNING_RATE, WEIGHT_DECAY, MAX_GRAD_NORM = 5e-5, 0.01, 1.0


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("task", choices=["data", "train", "eval", "check", "decode", "matmul", "deploy"])
    parser.add_argument("--archive", help="generated archive (benchmarks.data)")
    parser.add_argument("--tokenizer", help="tokenizer directory")
    parser.add_argument("--pipeline", choices=["thesis", "suite"], default="suite")
    parser.add_argument("--shape", default="tiny", help="model shape (benchmarks.measure.SHAPES)")
    parser.add_argument("--batch_size", type=int, default=4, help="records per batch")
    parser.add_argument("--steps", type=int, default=2, help="timed training steps (after one warm-up step)")
    parser.add_argument("--beams", type=int, nargs="+", default=[4, 1], help="eval: beam widths to time, in order")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (train, eval, check, matmul)")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                        help="the suite's --precision (CUDA: autocast; CPU: a bf16 copy of the weights where the CPU "
                             "has bf16 instructions); the thesis always runs fp32")
    parser.add_argument("--max_source", type=int, default=1024, help="source token budget (the thesis's 1024)")
    parser.add_argument("--max_target", type=int, default=512, help="target length = teacher positions T (512)")
    parser.add_argument("--vocab_size", type=int, default=32100, help="student and teacher vocabulary V")
    parser.add_argument("--compile", action="store_true", help="train a torch.compile'd student (suite only)")
    return parser.parse_args(argv)


def _stream(args, tokenizer, batch_size: int, split: str) -> DistillationStream:
    spec = ArchiveSpec(args.archive, INNER_ZIP_PATH.format(split=split), JSONL_NAME.format(split=split))
    return DistillationStream(spec, InputEncoder(tokenizer, args.max_source, args.max_target), batch_size, need_logits=True)


def _thesis(args, tokenizer, split: str) -> ThesisDataset:
    return ThesisDataset(args.archive, INNER_ZIP_PATH.format(split=split), JSONL_NAME.format(split=split),
                         tokenizer, args.max_source, args.max_target)


def _batches(args, tokenizer, batch_size: int, split: str = "training"):
    """The pipeline's batches (DataStats items of the suite's stream left out)."""
    if args.pipeline == "thesis":
        yield from thesis_loader(_thesis(args, tokenizer, split), batch_size)
        return
    stream = _stream(args, tokenizer, batch_size, split)
    try:
        for item in make_loader(stream, num_workers=0, pin_memory=args.device.startswith("cuda")):
            if not isinstance(item, DataStats):
                yield item
    finally:
        stream.close()


def task_data(args, tokenizer) -> dict:
    """One pass over the training split: dataset construction (and counting) + every batch."""
    reset_peak_rss()
    started = time.perf_counter()
    records = sum(batch["input_ids"].size(0) for batch in _batches(args, tokenizer, args.batch_size))
    seconds = time.perf_counter() - started
    return {"records": records, "seconds": seconds, "peak_rss_mb": peak_rss_mb()}


def _to_device(args, batch: dict) -> dict:
    """A batch on the run's device: script.py's move_batch for the suite, .to(device) per tensor for the thesis."""
    device = torch.device(args.device)
    if args.pipeline == "suite":
        return move_batch(batch, device)
    return {key: value.to(device) if isinstance(value, torch.Tensor) else value for key, value in batch.items()}


def _step(args, model, batch, optimizer, scheduler, loss_fn, train_model, bf16=None) -> tuple[float, float]:
    """One training step on a batch; returns (loss, seconds of forward + backward + optimizer).

    bf16: the CPU bf16 run's Bf16Weights (train_model is its copy), as training.Trainer uses it.
    """
    started = time.perf_counter()
    batch = _to_device(args, batch)
    if args.pipeline == "thesis":
        total, _, _ = thesis_losses(model, batch, TEMPERATURE, ALPHA)
    else:
        total = batch_losses(train_model, batch, loss_fn, args.precision).total
    total.backward()
    if bf16 is not None:
        bf16.collect_gradients()
    torch.nn.utils.clip_grad_norm_(model.parameters(), MAX_GRAD_NORM)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    if bf16 is not None:
        bf16.refresh()
    loss = total.item()
    if total.is_cuda:
        torch.cuda.synchronize()  # the optimizer's kernels too
    return loss, time.perf_counter() - started


def task_train(args, tokenizer) -> dict:
    """One warm-up step, then `steps` timed steps end to end (batch loading included)."""
    device = torch.device(args.device)
    model = make_model(args.shape, tokenizer, vocab_size=args.vocab_size).to(device)
    model.train()
    if args.pipeline == "suite":  # script.py's --attention auto; the thesis keeps transformers' default
        configure_training_kernels(model, "auto", device, compiling=args.compile)
    if args.pipeline == "thesis":  # the thesis's optimizer: PyTorch's default AdamW
        optimizer = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE, weight_decay=WEIGHT_DECAY)
    else:
        optimizer = make_optimizer(model, LEARNING_RATE, WEIGHT_DECAY, device)
    scheduler = get_linear_schedule_with_warmup(optimizer, 0, args.steps + 1)
    loss_fn = DistillationLoss(TEMPERATURE, ALPHA)
    train_model = torch.compile(model, dynamic=True) if args.compile else model  # as script.py --compile
    bf16 = Bf16Weights.for_run(train_model, args.precision, device) if args.pipeline == "suite" else None
    if bf16 is not None:
        bf16.train()
        train_model = bf16.model
    batches = _batches(args, tokenizer, args.batch_size)
    reset_peak_rss()
    reset_peak_memory(device)
    losses, step_seconds, end_to_end, flops = [], [], [], []
    for step in range(args.steps + 1):
        started = time.perf_counter()
        batch = next(batches)
        loss, seconds = _step(args, model, batch, optimizer, scheduler, loss_fn, train_model, bf16)
        losses.append(loss)
        if step == 0:
            warm_up_seconds = seconds
            continue  # warm-up: first-touch allocations, optimizer state
        step_seconds.append(seconds)
        end_to_end.append(time.perf_counter() - started)
        flops.append(_real_and_executed_flops(model, batch))
    batches.close()
    result = {"losses": losses, "step_seconds": step_seconds, "end_to_end_seconds": end_to_end,
              "samples_per_s": args.batch_size * len(end_to_end) / sum(end_to_end),
              "peak_rss_mb": peak_rss_mb(), "peak_device_mb": peak_memory_mb(device),
              "warm_up_seconds": warm_up_seconds, "num_parameters": sum(p.numel() for p in model.parameters())}
    result["model_flops_per_s"] = sum(real for real, _ in flops) / sum(step_seconds)
    result["executed_flops_per_sample"] = sum(executed for _, executed in flops) / (args.batch_size * len(flops))
    return result


def _real_and_executed_flops(model, batch: dict) -> tuple[float, float]:
    """Model FLOPs of a step on its real tokens, and on the padded shapes the step actually computes."""
    batch_size, source_length = batch["input_ids"].shape  # (B, S)
    target_length = batch["labels"].size(1)  # (B, L)
    real = training_flops(model, batch["attention_mask"].sum(1).tolist(), (batch["labels"] != -100).sum(1).tolist())
    executed = training_flops(model, [source_length] * batch_size, [target_length] * batch_size)
    return real, executed


def task_eval(args, tokenizer) -> dict:
    """Eval loss + generation over the validation split at each --beams width (after an untimed warm-up)."""
    device = torch.device(args.device)
    model = make_model(args.shape, tokenizer, vocab_size=args.vocab_size).to(device)
    if args.pipeline == "suite":  # the student as script.py leaves it after training
        configure_training_kernels(model, "auto", device)
    model.eval()
    if args.pipeline == "suite":
        model = inference_model(model, args.precision, device)  # CPU bf16: evaluate()'s bf16 copy
    loss_fn = DistillationLoss(TEMPERATURE, ALPHA)
    results = {}
    for beams in args.beams:
        batches = _batches(args, tokenizer, args.batch_size, split="validation")
        first = next(batches)
        warm_up(model, first, device, beams)
        reset_peak_rss()
        reset_peak_memory(device)
        result = evaluate_pipeline(args.pipeline, model, tokenizer, itertools.chain([first], batches), beams,
                                   args.max_target, loss_fn, TEMPERATURE, ALPHA, device, args.precision)
        batches.close()
        results[str(beams)] = dict(result, peak_rss_mb=peak_rss_mb(), peak_device_mb=peak_memory_mb(device))
    return results


def task_check(args, tokenizer) -> dict:
    """Both pipelines' (total, hard, soft) on the same first batch and the same model, dropout off."""
    device = torch.device(args.device)
    model = make_model(args.shape, tokenizer, vocab_size=args.vocab_size).to(device).eval()
    results = {}
    with torch.no_grad():
        for pipeline in ("thesis", "suite"):
            args.pipeline = pipeline
            batches = _batches(args, tokenizer, args.batch_size)
            batch = _to_device(args, next(batches))
            batches.close()
            if pipeline == "thesis":
                losses = thesis_losses(model, batch, TEMPERATURE, ALPHA)
            else:
                configure_training_kernels(model, "auto", device)
                losses = batch_losses(model, batch, DistillationLoss(TEMPERATURE, ALPHA))[:3]
            results[pipeline] = [float(value) for value in losses]
    results["max_relative_difference"] = max(abs(s - t) / max(abs(t), 1e-12)
                                             for s, t in zip(results["suite"], results["thesis"]))
    return results


def task_decode(args, tokenizer) -> dict:
    """Decode times of one full-size record: lz4.frame.decompress of its frame vs the codec."""
    location = locate_inner_zip(args.archive, INNER_ZIP_PATH.format(split="training"))
    with open_jsonl_member(location, JSONL_NAME.format(split="training"), False, args.archive) as lines:
        lines.readline()  # the header
        compressed = loads_record_line(lines.readline())["compressed_logits"]
    hex_data = compressed["data_encoded"]["data"]
    frame = binascii.a2b_hex(hex_data)
    positions = 64  # a typical target: 20-80 tokens

    def best(function, repeats: int = 5) -> float:
        function()
        return min(_timed(function) for _ in range(repeats))

    raw_size = compressed["data_encoded"]["original_size"]
    return {"block_bytes": raw_size, "frame_bytes": len(frame),
            "lz4_frame_decompress_s": best(lambda: lz4.frame.decompress(frame)),
            "hex_decode_s": best(lambda: binascii.a2b_hex(hex_data)),
            "codec_full_s": best(lambda: decode_quantized(compressed)),
            "codec_prefix_s": best(lambda: decode_quantized(compressed, max_positions=positions)),
            "prefix_positions": positions, "positions": compressed["shape"][-2]}


def _timed(function) -> float:
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.task == "matmul":
        device = torch.device(args.device)
        peaks = {"matmul_flops_per_s": matmul_flops(device=device),
                 "matmul_bf16_flops_per_s": matmul_flops(device=device, dtype=torch.bfloat16)}
        print(json.dumps(peaks))
        return 0
    if args.task == "decode" or args.pipeline == "suite":
        keep_freed_memory()  # what script.py does at start; the thesis pipeline runs with malloc's defaults
    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    if args.task == "deploy":  # per-method latency, size and int8 (benchmarks/deploy.py)
        from benchmarks.deploy import task_deploy

        print(json.dumps(task_deploy(args, tokenizer, make_model(args.shape, tokenizer, vocab_size=args.vocab_size))))
        return 0
    task = {"data": task_data, "train": task_train, "eval": task_eval, "check": task_check,
            "decode": task_decode}[args.task]
    print(json.dumps(task(args, tokenizer)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
