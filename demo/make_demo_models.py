"""Build the demo's tokenizer and its teacher and student configs from the mined training split.

Writes <out>/student/ (config + tokenizer, no weights: script.py initializes it randomly) and
<out>/teacher_init/ (the same for the teacher, to be fine-tuned with script.py --alpha 0).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from assertdistill.model.tokenizer import t5_config_for, train_bpe_tokenizer  # noqa: E402

# Roughly CodeT5-base : CodeT5-small (220M : 60M) at demo scale.
TEACHER_DIMENSIONS = dict(d_model=256, d_ff=768, d_kv=64, num_heads=4, num_layers=2, num_decoder_layers=2)
STUDENT_DIMENSIONS = dict(d_model=128, d_ff=512, d_kv=32, num_heads=4, num_layers=2, num_decoder_layers=2)
FOCAL_CHARS_FOR_TOKENIZER = 6000  # the model only ever sees the start of a focal file


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train_file", required=True, help="make_dataset.py training split (JSONL)")
    parser.add_argument("--out", default=os.path.dirname(os.path.abspath(__file__)), help="demo directory")
    parser.add_argument("--vocab_size", type=int, default=2048, help="BPE vocabulary size")
    parser.add_argument("--tokenizer_records", type=int, default=4000, help="records sampled to train the BPE")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed")
    return parser.parse_args(argv)


def tokenizer_texts(path: str, count: int, seed: int) -> list[str]:
    """Focal starts, masked test methods and assertions of a random sample of records."""
    with open(path, encoding="utf-8") as stream:
        lines = stream.readlines()
    texts = []
    for line in random.Random(seed).sample(lines, min(count, len(lines))):
        record = json.loads(line)
        texts += [record["focal_file"][:FOCAL_CHARS_FOR_TOKENIZER], record["test_method_masked"],
                  "\n".join(record["assertions"])]
    return texts


def main(argv: list[str] | None = None) -> int:
    """Train the tokenizer and write both model directories."""
    args = parse_args(argv)
    tokenizer = train_bpe_tokenizer(tokenizer_texts(args.train_file, args.tokenizer_records, args.seed),
                                    vocab_size=args.vocab_size)
    for name, dimensions in (("student", STUDENT_DIMENSIONS), ("teacher_init", TEACHER_DIMENSIONS)):
        directory = os.path.join(args.out, name)
        os.makedirs(directory, exist_ok=True)
        t5_config_for(tokenizer, **dimensions).save_pretrained(directory)
        tokenizer.save_pretrained(directory)
        print(f"wrote {directory} (vocabulary {len(tokenizer)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
