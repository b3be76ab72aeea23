"""Regenerate tests/data/published_codec_cases.json with the published generator's own codec.

    python tests/make_published_codec_cases.py PATH/TO/published/compress.py

The published compress.py (gdimitrovdev/LLMDistillation data_generation/compress.py; the thesis repo
holds the same file) is imported from the path given, run on seeded logits of every rank 1-4 at 4, 8,
16 and 32 bits, and its compress_logits output is stored with what its decompress_logits returns.
tests/test_codec.py checks that this suite decodes every stored dict to exactly that array. Nothing of
the published code is kept; only its outputs are.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys

import numpy as np
import torch

OUTPUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "published_codec_cases.json")
# Ranks 1-4, batch rows > 1, odd value counts (4-bit padding) and a constant block (scale 1).
SHAPES = [(11,), (3, 7), (1, 3, 7), (2, 5, 7), (3, 1, 5), (2, 2, 3, 5), (1, 1, 4, 6)]
BITS = (4, 8, 16, 32)


def logits_for(shape: tuple[int, ...], seed: int) -> np.ndarray:
    """Seeded gaussian logits with a peak per position, float32."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0.0, 2.0, shape).astype(np.float32)
    rows = logits.reshape(-1, shape[-1])  # (R * T, V) view
    rows[np.arange(len(rows)), rng.integers(0, shape[-1], len(rows))] += 9.0
    return logits


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("published_compress", help="path of the published compress.py")
    parser.add_argument("--output", default=OUTPUT, help="fixture file to write")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Write the fixture; returns the exit code."""
    args = parse_args(argv)
    spec = importlib.util.spec_from_file_location("published_compress", args.published_compress)
    published = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(published)
    cases = []
    inputs = [(shape, logits_for(shape, seed)) for seed, shape in enumerate(SHAPES)]
    inputs.append(((2, 3, 4), np.full((2, 3, 4), -2.75, dtype=np.float32)))
    for shape, logits in inputs:
        for bits in BITS:
            compressed = published.compress_logits(torch.from_numpy(logits.copy()), bits)
            decoded = published.decompress_logits(compressed)
            assert decoded is not None and tuple(decoded.shape) == shape, (shape, bits)
            cases.append({"shape": list(shape), "bits": bits, "compressed": compressed,
                          "decoded": decoded.to(torch.float32).numpy().ravel().tolist()})
    with open(args.output, "w", encoding="utf-8") as stream:
        json.dump({"generated_by": "published compress.py (compress_logits, decompress_logits)",
                   "cases": cases}, stream, separators=(",", ":"))
        stream.write("\n")
    print(f"wrote {len(cases)} cases to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
