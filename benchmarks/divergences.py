"""Training-step cost of every --divergence against forward_kl's, at a benchmark model shape (CodeT5-small by default).

One synthetic batch (8-bit teacher codes at every label position, V = 32100), one AdamW step per
divergence per round, rounds interleaved so drift hits every divergence alike; the median of the
timed rounds is reported, with the fused loss's own forward + backward timed apart. The last line is
`divergence_step_ratio_max=<x>` (issue 23 asks for at most 1.3).

    python -m benchmarks.divergences                                   # CodeT5-small, B 4, S 512, L 64
    python -m benchmarks.divergences --shape tiny --vocab_size 2000 --rounds 1   # smoke check
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

from assertdistill.distill.divergences import CHOICES
from assertdistill.distill.forward import batch_losses, student_logits_for
from assertdistill.distill.loss import DistillationLoss
from assertdistill.distill.run import make_optimizer
from assertdistill.model.models import configure_training_kernels
from benchmarks.data import bench_tokenizer
from benchmarks.measure import SHAPES, make_model

TEMPERATURE, ALPHA, LIMIT = 2.0, 0.7, 1.3


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", default="codet5-small", choices=sorted(SHAPES), help="model shape")
    parser.add_argument("--vocab_size", type=int, default=32100, help="student and teacher vocabulary V")
    parser.add_argument("--batch_size", type=int, default=4, help="records per batch")
    parser.add_argument("--source_length", type=int, default=512, help="source tokens per record")
    parser.add_argument("--target_length", type=int, default=64, help="target tokens per record (all taught)")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds (after one warm-up round)")
    return parser.parse_args(argv)


def synthetic_batch(args, seed: int = 0) -> dict:
    """A collated-looking batch: random ids, the last quarter of record 0's targets padding, 8-bit teacher codes."""
    generator = torch.Generator().manual_seed(seed)
    batch, source, target, vocab = args.batch_size, args.source_length, args.target_length, args.vocab_size
    labels = torch.randint(5, vocab, (batch, target), generator=generator)  # (B, L)
    labels[0, target * 3 // 4:] = -100
    mask = labels != -100
    count = int(mask.sum())
    return {"input_ids": torch.randint(5, vocab, (batch, source), generator=generator),
            "attention_mask": torch.ones(batch, source, dtype=torch.long), "labels": labels,
            "teacher_values": torch.randint(0, 256, (count, vocab), generator=generator, dtype=torch.uint8),
            "teacher_scale": torch.full((count,), 0.08), "teacher_zero_point": torch.full((count,), 160.0),
            "teacher_position_mask": mask}


def _seconds(function) -> float:
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    """Time each divergence's training step and fused loss; print the ratios to forward_kl."""
    args = parse_args(argv)
    torch.manual_seed(0)
    model = make_model(args.shape, bench_tokenizer(), vocab_size=args.vocab_size).train()
    configure_training_kernels(model, "auto", torch.device("cpu"))
    optimizer = make_optimizer(model, 0.0, 0.0, torch.device("cpu"))  # lr 0: every round trains the same model
    batch = synthetic_batch(args)
    losses = {name: DistillationLoss(TEMPERATURE, ALPHA, divergence=name) for name in CHOICES}
    with torch.no_grad():
        logits = student_logits_for(model, batch).detach()  # (B, L, V) for the loss-only timing
    teacher = [batch[key] for key in ("teacher_values", "teacher_scale", "teacher_zero_point",
                                      "teacher_position_mask")]

    def step(loss_fn) -> None:
        batch_losses(model, batch, loss_fn).total.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def loss_only(loss_fn) -> None:
        student = logits.clone().requires_grad_()
        loss_fn.fused(student, batch["labels"], *teacher)[0].backward()

    steps = {name: [] for name in CHOICES}
    fused = {name: [] for name in CHOICES}
    for round_index in range(args.rounds + 1):  # round 0 warms up
        for name in CHOICES:
            step_seconds, loss_seconds = _seconds(lambda: step(losses[name])), _seconds(lambda: loss_only(losses[name]))
            if round_index:
                steps[name].append(step_seconds)
                fused[name].append(loss_seconds)
    print(f"shape {args.shape}, V {args.vocab_size}, batch {args.batch_size} x source {args.source_length} x "
          f"target {args.target_length}, median of {args.rounds} round(s)")
    print(f"{'divergence':<16} {'step s':>8} {'x fwd_kl':>9} {'loss s':>8} {'x fwd_kl':>9}")
    base_step, base_loss = statistics.median(steps["forward_kl"]), statistics.median(fused["forward_kl"])
    worst = 0.0
    for name in CHOICES:
        step_seconds, loss_seconds = statistics.median(steps[name]), statistics.median(fused[name])
        worst = max(worst, step_seconds / base_step)
        print(f"{name:<16} {step_seconds:8.3f} {step_seconds / base_step:9.2f} {loss_seconds:8.3f} "
              f"{loss_seconds / base_loss:9.2f}")
    print(f"limit {LIMIT}: {'met' if worst <= LIMIT else 'NOT met'}")
    print(f"divergence_step_ratio_max={worst:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
