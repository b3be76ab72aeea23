"""Export a saved student with int8 weights (torch dynamic quantization) for generate_assertions.py.

Every Linear layer (attention, feed-forward, lm_head) keeps int8 weights with a float scale per tensor
and quantizes its input per call; embeddings and layer norms stay float32. The export directory holds
the config, the tokenizer, int8_state_dict.pt and int8_export.json (how it was made, the run's flags).
Example:
    python export_int8.py --model_dir out/final_student_model --output_dir out/final_student_model_int8
    python generate_assertions.py --model_dir out/final_student_model_int8 FooTest.java
"""

from __future__ import annotations

import argparse
import os
import sys

from assertdistill.core.cli import reports_user_errors


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse and validate the command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model_dir", required=True, help="a saved student (final_student_model/, best_student_model/)")
    parser.add_argument("--output_dir", required=True, help="where the int8 export is written (created)")
    return parser.parse_args(argv)


@reports_user_errors(OSError)
def main(argv: list[str] | None = None) -> int:
    """Quantize and write the export; a bad model directory is one line and exit 2."""
    args = parse_args(argv)
    from assertdistill.deploy.saved_student import SavedStudentError, export_int8, load_saved_student

    try:
        weights = export_int8(load_saved_student(args.model_dir), args.output_dir)
    except SavedStudentError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"int8 export: {args.output_dir} ({os.path.getsize(weights) / 2 ** 20:.1f} MiB of weights)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
