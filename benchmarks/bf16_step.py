"""One CodeT5-small training step in fp32, as --precision bf16 runs it on the CPU (a bf16 weight copy), and under autocast.

    python -m benchmarks.bf16_step [--steps 3] [--ways fp32 bf16 autocast]

Batch 4 x 512 source x 64 target tokens, V 32100, 8-bit teacher codes at every target position; the
suite's kernels (chunked attention, fast dropout), its fused loss and AdamW; each way is warmed up
once, then timed `--steps` times (the best is reported). Prints one line per way and
`bf16_step_speedup=<fp32 best / bf16 best>`. See docs/PERFORMANCE.md.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from assertdistill.distill.forward import student_logits_for
from assertdistill.distill.loss import DistillationLoss
from assertdistill.model.models import configure_training_kernels
from assertdistill.model.precision import Bf16Weights, cpu_has_bf16, cpu_matrix_features
from benchmarks.measure import SHAPES

WAYS = ("fp32", "bf16", "autocast")  # float32; the bf16 weight copy (--precision bf16); torch.autocast bf16
BATCH, SOURCE, TARGET, VOCAB = 4, 512, 64, 32100


def make_step(way: str, seed: int = 0):
    """A function running one training step of `way` on a fixed random batch; returns its seconds."""
    from transformers import T5Config, T5ForConditionalGeneration

    torch.manual_seed(seed)
    config = T5Config(vocab_size=VOCAB, pad_token_id=0, eos_token_id=2, decoder_start_token_id=0,
                      **SHAPES["codet5-small"])
    model = T5ForConditionalGeneration(config).train()
    configure_training_kernels(model, "auto", torch.device("cpu"))
    batch = {"input_ids": torch.randint(3, VOCAB, (BATCH, SOURCE)),
             "attention_mask": torch.ones(BATCH, SOURCE, dtype=torch.long),
             "labels": torch.randint(3, VOCAB, (BATCH, TARGET))}
    rows = BATCH * TARGET
    teacher = (torch.randint(0, 256, (rows, VOCAB), dtype=torch.uint8), torch.full((rows,), 0.1),
               torch.full((rows,), 128.0), torch.ones(BATCH, TARGET, dtype=torch.bool))
    loss_fn = DistillationLoss(2.0, 0.7)
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-5, fused=True)
    copy = Bf16Weights(model) if way == "bf16" else None
    if copy is not None:
        copy.train()

    def step() -> float:
        started = time.perf_counter()
        if way == "autocast":
            with torch.autocast("cpu", dtype=torch.bfloat16):
                logits = student_logits_for(model, batch)
        else:
            logits = student_logits_for(copy.model if copy else model, batch)  # (B, L, V)
        total = loss_fn.fused(logits, batch["labels"], *teacher)[0]
        total.backward()
        if copy is not None:
            copy.collect_gradients()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if copy is not None:
            copy.refresh()
        return time.perf_counter() - started

    return step


def parse_args(argv=None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=3, help="timed steps per way (after one warm-up step)")
    parser.add_argument("--ways", nargs="+", choices=WAYS, default=list(WAYS), help="which ways, in order")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    """Time each way; print its best and all step times, then the bf16 / fp32 step speedup."""
    args = parse_args(argv)
    features = ",".join(cpu_matrix_features()) or "none"
    print(f"matrix features: {features}; oneDNN bf16 {'native' if cpu_has_bf16() else 'emulated'}; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    best = {}
    for way in args.ways:
        step = make_step(way)
        step()  # warm-up: first-touch allocations, optimizer state
        seconds = [step() for _ in range(args.steps)]
        best[way] = min(seconds)
        print(f"{way}: best {best[way]:.2f} s, steps {', '.join(f'{s:.2f}' for s in seconds)}", flush=True)
    if "fp32" in best and "bf16" in best:
        print(f"bf16_step_speedup={best['fp32'] / best['bf16']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
