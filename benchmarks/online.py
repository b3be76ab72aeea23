"""Training-step cost of the online teacher against the archive's, and of an on-policy step (sampling included).

CodeT5-small student and CodeT5-base teacher shapes (random weights, V = 32100), one synthetic batch.
Modes, each timed as one AdamW step (median of the timed rounds after one warm-up), with the peak
resident memory of the process while it runs (the teacher's weights count from the online modes on):

    archive     8-bit teacher codes from the batch (script.py's default)
    online      --teacher_source online: the teacher's forward on the ground truth, then the same loss
    hidden      online with --hidden_state_weight 1 (encoder and decoder states, projection 512 -> 768)
    on_policy   online with --lmbda 1: the student samples up to L tokens (random weights never stop early,
                so every sample has the full L), the teacher scores them, the student runs on truth + samples
    replay      on_policy with --replay_buffer_size B: a replayed step (the buffer filled by one sampled
                step first): no sampling; the teacher scores the buffer's records, the student runs on
                the truth and on them

    python -m benchmarks.online                      # B 4, S 256, L 64
    python -m benchmarks.online --student tiny --teacher tiny --vocab_size 2000 --rounds 1   # smoke check

The last lines are `online_step_ratio=<x>`, `on_policy_step_ratio=<x>` and `replay_step_ratio=<x>` (each
against archive).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

from assertdistill.distill.config import RunConfig
from assertdistill.distill.forward import batch_losses
from assertdistill.distill.loss import DistillationLoss
from assertdistill.distill.on_policy import REPLAY, OnlineDistillation
from assertdistill.distill.run import make_optimizer
from assertdistill.model.models import configure_training_kernels
from assertdistill.teacher.online import OnlineTeacher
from benchmarks.data import bench_tokenizer
from benchmarks.divergences import synthetic_batch
from benchmarks.measure import SHAPES, make_model, peak_rss_mb, reset_peak_rss

MODES = ("archive", "online", "hidden", "on_policy", "replay")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--student", default="codet5-small", choices=sorted(SHAPES), help="student shape")
    parser.add_argument("--teacher", default="codet5-base", choices=sorted(SHAPES), help="teacher shape")
    parser.add_argument("--vocab_size", type=int, default=32100, help="student and teacher vocabulary V")
    parser.add_argument("--batch_size", type=int, default=4, help="records per batch")
    parser.add_argument("--source_length", type=int, default=256, help="source tokens per record")
    parser.add_argument("--target_length", type=int, default=64,
                        help="target tokens per record, and the samples' length bound (--student_max_tgt_length)")
    parser.add_argument("--rounds", type=int, default=3, help="timed steps per mode (after one warm-up step)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Time one training step per mode; print seconds, peak memory and the ratios to archive."""
    args = parse_args(argv)
    torch.manual_seed(0)
    device = torch.device("cpu")
    tokenizer = bench_tokenizer()
    student = make_model(args.student, tokenizer, vocab_size=args.vocab_size).train()
    configure_training_kernels(student, "auto", device)
    batch = synthetic_batch(args)
    loss_fn = DistillationLoss(2.0, 0.7)
    results = {}
    teacher = None
    for mode in MODES:
        if mode != "archive" and teacher is None:  # loaded only now: archive's peak holds no teacher
            teacher = OnlineTeacher(make_model(args.teacher, tokenizer, seed=1, vocab_size=args.vocab_size), device)
        config = RunConfig(teacher_source="archive" if mode == "archive" else "online",
                           lmbda=1.0 if mode in ("on_policy", "replay") else 0.0,
                           replay_buffer_size=args.batch_size if mode == "replay" else 0,
                           hidden_state_weight=1.0 if mode == "hidden" else 0.0,
                           student_max_tgt_length=args.target_length)
        model, losses = student, batch_losses
        if mode != "archive":
            losses = OnlineDistillation(teacher, student, tokenizer, config)
            model = losses.wrap(student)
        optimizer = make_optimizer(model, 0.0, 0.0, device)  # lr 0: every step trains the same model
        step_batch = batch if mode == "archive" else {key: value for key, value in batch.items()
                                                      if not key.startswith("teacher_")}

        def step() -> float:
            started = time.perf_counter()
            losses(model, step_batch, loss_fn).total.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            return time.perf_counter() - started

        step()  # warm-up (in replay mode a sampled step: it fills the buffer)
        if mode == "replay":
            losses.plan.kinds = [REPLAY]  # step 0, the step every timed round takes, replays from now on
        reset_peak_rss()
        seconds = statistics.median(step() for _ in range(args.rounds))
        results[mode] = (seconds, peak_rss_mb())
    print(f"student {args.student}, teacher {args.teacher}, V {args.vocab_size}, batch {args.batch_size} x source "
          f"{args.source_length} x target {args.target_length}, CPU, {torch.get_num_threads()} threads, median of "
          f"{args.rounds} step(s)")
    print(f"{'mode':<10} {'step s':>8} {'x archive':>10} {'peak RSS MiB':>13}")
    base = results["archive"][0]
    for mode, (seconds, peak) in results.items():
        print(f"{mode:<10} {seconds:8.3f} {seconds / base:10.2f} {peak:13.0f}")
    print(f"online_step_ratio={results['online'][0] / base:.3f}")
    print(f"on_policy_step_ratio={results['on_policy'][0] / base:.3f}")
    print(f"replay_step_ratio={results['replay'][0] / base:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
