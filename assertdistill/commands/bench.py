"""Benchmark the suite's data pipeline, training step and evaluation against a faithful re-creation of the thesis pipeline.

Every pipeline runs in its own subprocess on the same generated archive (full-size 8-bit teacher
blocks) and the same model shapes (CodeT5-small and a tiny T5; on a GPU CodeT5-small and -base).
The last lines printed are, at CodeT5-small shape, `eval_speedup=<x>` (eval loss + generation,
beam 4), `end_to_end_speedup=<x>` (one epoch + one evaluation), `mfu=<fraction>` (the suite's
training step) and, last, `speedup_vs_thesis=<x>` (training samples/s, suite / thesis). On a CPU
with bf16 instructions (AVX512-BF16, AMX) the suite is also measured with --precision bf16, and
`matrix_features=`, `bf16_train_speedup=<x>` (bf16 step / fp32 step, same run),
`bf16_speedup_vs_thesis=<x>`, `bf16_eval_speedup=` and `bf16_mfu=` come before those lines (the
matrix features also without bf16). See docs/PERFORMANCE.md.
benchmarks/ is part of a checkout, not of the installed package: `assertdistill bench` runs from the
root of a checkout (as `python bench.py` does).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys

from assertdistill.core.cli import reports_user_errors


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse and validate the command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.rsplit("\n\n", 1)[1])
    modes = parser.add_mutually_exclusive_group()
    modes.add_argument("--short", action="store_true",
                       help="16 records, batch 4, 2 timed steps per pipeline and shape (under 10 minutes on 2 cores)")
    modes.add_argument("--tiny-only", action="store_true",
                       help="smoke mode: 6 records, the tiny shape only, 1 timed step (seconds to a minute)")
    parser.add_argument("--compile", action="store_true",
                        help="also train the suite with torch.compile (script.py --compile) at the largest shape; "
                             "the default mode always does (compiling takes minutes on 2 cores)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                        help="where the models train and generate; cuda: CodeT5-small and -base shapes, peak GPU memory "
                             "(the data pass and the codec, CPU work, are measured only with cpu)")
    parser.add_argument("--bf16", action="store_true",
                        help="with --device cuda: the suite also trains and generates under bf16 autocast "
                             "(script.py --precision bf16); on the CPU it always is where the CPU has bf16 "
                             "instructions; the thesis runs float32, as its script does")
    parser.add_argument("--workdir", default=None,
                        help="directory for the temporary archive (about 40 MB per record); default: the system's")
    parser.add_argument("--json", default=None, help="also write all measurements to this JSON file")
    args = parser.parse_args(argv)
    if args.bf16 and args.device != "cuda":
        parser.error("--bf16 is for --device cuda; on the CPU bf16 is measured whenever the CPU has bf16 "
                     "instructions")
    if args.device == "cuda" and args.compile:
        parser.error("--compile is measured on CPU only")
    return args


def benchmarks_runner():
    """benchmarks.runner: importable from a checkout (its root on sys.path, or the current directory)."""
    if importlib.util.find_spec("benchmarks") is None and os.path.isfile(os.path.join("benchmarks", "runner.py")):
        sys.path.insert(0, os.getcwd())  # `assertdistill bench` from a checkout's root
    try:
        from benchmarks import runner
    except ModuleNotFoundError as error:
        raise FileNotFoundError("the benchmarks are part of a checkout, not of the installed package: run "
                                "`assertdistill bench` (or `python bench.py`) from the root of a checkout") from error
    return runner


@reports_user_errors(OSError)
def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; the default mode is 40 records, batch 8, 3 timed steps."""
    args = parse_args(argv)
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            print("bench.py --device cuda: no CUDA device is available", file=sys.stderr)
            return 2
    run = benchmarks_runner().run

    from assertdistill.model.precision import cpu_has_bf16

    mode = "short" if args.short else "tiny-only" if args.tiny_only else "default"
    bf16 = args.bf16 or (args.device == "cpu" and cpu_has_bf16())
    run(mode, workdir=args.workdir, json_path=args.json, compile_model=args.compile, device=args.device,
        precision="bf16" if bf16 else "fp32", log=lambda text: print(text, file=sys.stderr, flush=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
