"""One measurement in its own process (so peak RSS is that pipeline's alone); prints one JSON line.

    python -m benchmarks.worker TASK --archive A.zip --tokenizer DIR [--pipeline thesis|suite] [...]
TASK: data (archive -> batch tensors), train (training steps, then eval generation), check (same loss
on the same batch), decode (codec vs lz4.frame.decompress), matmul (FLOP/s of one large matmul).
"""

from __future__ import annotations

import argparse
import binascii
import json
import sys
import time

import lz4.frame
import torch
from transformers import AutoTokenizer, get_linear_schedule_with_warmup

from assertdistill.archive import locate_inner_zip, open_jsonl_member
from assertdistill.allocator import keep_freed_memory
from assertdistill.codec import decode_quantized
from assertdistill.dataset import ArchiveSpec, DistillationStream
from assertdistill.loss import DistillationLoss
from assertdistill.models import configure_training_kernels
from assertdistill.records import DataStats, InputEncoder, loads_record_line
from assertdistill.run import make_optimizer
from assertdistill.training import batch_losses, make_loader, move_batch
from benchmarks.data import INNER_ZIP_PATH, JSONL_NAME
from benchmarks.measure import make_model, matmul_flops, peak_rss_mb, reset_peak_rss, training_flops
from benchmarks.thesis import ThesisDataset, thesis_loader, thesis_losses

TEMPERATURE, ALPHA = 2.0, 0.7
LEARNING_RATE, WEIGHT_DECAY, MAX_GRAD_NORM = 5e-5, 0.01, 1.0


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("task", choices=["data", "train", "check", "decode", "matmul"])
    parser.add_argument("--archive", help="generated archive (benchmarks.data)")
    parser.add_argument("--tokenizer", help="tokenizer directory")
    parser.add_argument("--pipeline", choices=["thesis", "suite"], default="suite")
    parser.add_argument("--shape", default="tiny", help="model shape (benchmarks.measure.SHAPES)")
    parser.add_argument("--batch_size", type=int, default=4, help="records per batch")
    parser.add_argument("--steps", type=int, default=2, help="timed training steps (after one warm-up step)")
    parser.add_argument("--new_tokens", type=int, default=8, help="tokens generated per sample in the eval timing")
    parser.add_argument("--max_source", type=int, default=1024, help="source token budget (the thesis's 1024)")
    parser.add_argument("--max_target", type=int, default=512, help="target length = teacher positions T (512)")
    parser.add_argument("--vocab_size", type=int, default=32100, help="student and teacher vocabulary V")
    parser.add_argument("--compile", action="store_true", help="train a torch.compile'd student (suite only)")
    return parser.parse_args(argv)


def _stream(args, tokenizer, batch_size: int) -> DistillationStream:
    spec = ArchiveSpec(args.archive, INNER_ZIP_PATH.format(split="training"), JSONL_NAME.format(split="training"))
    return DistillationStream(spec, InputEncoder(tokenizer, args.max_source, args.max_target), batch_size, need_logits=True)


def _thesis(args, tokenizer) -> ThesisDataset:
    return ThesisDataset(args.archive, INNER_ZIP_PATH.format(split="training"),
                         JSONL_NAME.format(split="training"), tokenizer, args.max_source, args.max_target)


def _batches(args, tokenizer, batch_size: int):
    """The pipeline's batches (DataStats items of the suite's stream left out)."""
    if args.pipeline == "thesis":
        yield from thesis_loader(_thesis(args, tokenizer), batch_size)
        return
    stream = _stream(args, tokenizer, batch_size)
    try:
        for item in make_loader(stream, num_workers=0, pin_memory=False):
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


def _step(args, model, batch, optimizer, scheduler, loss_fn, train_model) -> tuple[float, float]:
    """One training step on a batch; returns (loss, seconds of forward + backward + optimizer)."""
    started = time.perf_counter()
    if args.pipeline == "thesis":
        total, _, _ = thesis_losses(model, batch, TEMPERATURE, ALPHA)
    else:
        total, _, _ = batch_losses(train_model, move_batch(batch, torch.device("cpu")), loss_fn)
    total.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), MAX_GRAD_NORM)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return total.item(), time.perf_counter() - started


def task_train(args, tokenizer) -> dict:
    """One warm-up step, `steps` timed steps end to end (batch loading included), then eval generation."""
    model = make_model(args.shape, tokenizer, vocab_size=args.vocab_size)
    model.train()
    if args.pipeline == "suite":  # script.py's --attention auto; the thesis keeps transformers' default
        configure_training_kernels(model, "auto", torch.device("cpu"), compiling=args.compile)
    if args.pipeline == "thesis":  # the thesis's optimizer: PyTorch's default AdamW
        optimizer = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE, weight_decay=WEIGHT_DECAY)
    else:
        optimizer = make_optimizer(model, LEARNING_RATE, WEIGHT_DECAY, torch.device("cpu"))
    scheduler = get_linear_schedule_with_warmup(optimizer, 0, args.steps + 1)
    loss_fn = DistillationLoss(TEMPERATURE, ALPHA)
    train_model = torch.compile(model, dynamic=True) if args.compile else model  # as script.py --compile
    batches = _batches(args, tokenizer, args.batch_size)
    reset_peak_rss()
    losses, step_seconds, end_to_end, flops = [], [], [], []
    for step in range(args.steps + 1):
        started = time.perf_counter()
        batch = next(batches)
        loss, seconds = _step(args, model, batch, optimizer, scheduler, loss_fn, train_model)
        losses.append(loss)
        if step == 0:
            warm_up_seconds = seconds
            continue  # warm-up: first-touch allocations, optimizer state
        step_seconds.append(seconds)
        end_to_end.append(time.perf_counter() - started)
        if args.pipeline == "suite":
            flops.append(training_flops(model, batch["attention_mask"].sum(1).tolist(),
                                        (batch["labels"] != -100).sum(1).tolist()))
    batches.close()
    train_peak = peak_rss_mb()
    result = {"losses": losses, "step_seconds": step_seconds, "end_to_end_seconds": end_to_end,
              "samples_per_s": args.batch_size * len(end_to_end) / sum(end_to_end),
              "peak_rss_mb": train_peak, "warm_up_seconds": warm_up_seconds, "num_parameters": sum(p.numel() for p in model.parameters())}
    if flops:
        result["model_flops_per_s"] = sum(flops) / sum(step_seconds)
    result.update(_generation(args, model, tokenizer))
    return result


def _generation(args, model, tokenizer) -> dict:
    """Greedy generation of exactly new_tokens tokens for one batch (sources as the pipeline pads them)."""
    batches = _batches(args, tokenizer, args.batch_size)
    batch = next(batches)
    batches.close()
    model.eval()
    with torch.no_grad():
        model.generate(input_ids=batch["input_ids"][:1], attention_mask=batch["attention_mask"][:1],
                       max_new_tokens=2, min_new_tokens=2, num_beams=1, do_sample=False)  # warm up
        started = time.perf_counter()
        model.generate(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                       max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, num_beams=1, do_sample=False)
        seconds = time.perf_counter() - started
    return {"eval_samples_per_s": batch["input_ids"].size(0) / seconds}


def task_check(args, tokenizer) -> dict:
    """Both pipelines' (total, hard, soft) on the same first batch and the same model, dropout off."""
    model = make_model(args.shape, tokenizer, vocab_size=args.vocab_size).eval()
    results = {}
    with torch.no_grad():
        for pipeline in ("thesis", "suite"):
            args.pipeline = pipeline
            batches = _batches(args, tokenizer, args.batch_size)
            batch = next(batches)
            batches.close()
            if pipeline == "thesis":
                losses = thesis_losses(model, batch, TEMPERATURE, ALPHA)
            else:
                configure_training_kernels(model, "auto", torch.device("cpu"))
                losses = batch_losses(model, batch, DistillationLoss(TEMPERATURE, ALPHA))
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
        print(json.dumps({"matmul_flops_per_s": matmul_flops()}))
        return 0
    if args.task == "decode" or args.pipeline == "suite":
        keep_freed_memory()  # what script.py does at start; the thesis pipeline runs with malloc's defaults
    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    task = {"data": task_data, "train": task_train, "check": task_check, "decode": task_decode}[args.task]
    print(json.dumps(task(args, tokenizer)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
