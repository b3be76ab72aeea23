"""Regenerate tests/data/cli_golden.json: vars(script.parse_args(argv)) for the command lines below, and --help's groups.

    python tests/make_cli_golden.py

Recorded from the hand-written argparse parser before script.py's parser was built from RunConfig;
tests/test_config.py checks that today's parser gives the same dests, values and order for each,
and that every option string --help listed stays in its group.
Regenerate only for a deliberate change of a flag's default or spelling. The demo's paths are stored
as <DEMO.name> so the file does not depend on the directory the tests run from.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import script  # noqa: E402  (after the path fix-up)
from assertdistill.core.paths import DEMO  # noqa: E402

OUTPUT = os.path.join(ROOT, "tests", "data", "cli_golden.json")
THESIS = ["--distillation_data_path", "data/distillation_data.zip",
          "--train_outer_zip_internal_path", "codet5/distillation_data_training.jsonl.zip",
          "--train_inner_zip_jsonl_filename", "distillation_data_training.jsonl", "--train_jsonl_is_gzipped",
          "--val_outer_zip_internal_path", "codet5/distillation_data_validation.jsonl.zip",
          "--val_inner_zip_jsonl_filename", "distillation_data_validation.jsonl",
          "--teacher_model_name", "Salesforce/codet5-base", "--student_model_name", "Salesforce/codet5-small",
          "--output_dir", "results/alpha_0.5", "--alpha", "0.5", "--temperature", "2.0", "--save_best_model"]
COMMAND_LINES = {
    "demo_no_flags": [],
    "thesis_readme_command": THESIS,
    "user_archive_only": ["--distillation_data_path", "codet5.zip"],
    "alias_alpha": ["--alpha", "0.3"],
    "long_alpha": ["--alpha_kl_loss_weight", "0.3", "--distillation_data_path", "codet5.zip"],
    "abbreviated_temperature": ["--temp", "4"],
    "demo_overrides": ["--epochs", "1", "--learning_rate", "1e-3", "--student_model_name", "my/student",
                       "--max_train_samples", "10", "--max_eval_samples", "5", "--eval_batch_size", "8"],
    "every_switch": ["--distillation_data_path", "a.zip", "--train_jsonl_is_gzipped", "--val_jsonl_is_gzipped",
                     "--strict_data", "--allow_records_without_teacher", "--student_from_scratch",
                     "--overwrite_output_dir", "--gradient_checkpointing", "--compile", "--save_best_model"],
    "choices_and_numbers": ["--precision", "bf16", "--attention", "eager", "--best_model_metric", "avg_loss",
                            "--seed", "7", "--save_steps", "500", "--save_total_limit", "0",
                            "--resume_from_checkpoint", "latest", "--num_beams", "2", "--shuffle_buffer_size", "64",
                            "--num_dataloader_workers", "2", "--max_record_bytes", "1000", "--tokenizer_name", "tok",
                            "--focal_content_field_name", "focal_method", "--warmup_steps_ratio", "0",
                            "--weight_decay", "0", "--max_grad_norm", "0.5", "--log_steps", "1",
                            "--gradient_accumulation_steps", "3", "--batch_size", "2"],
}


def placeholders(namespace: dict) -> dict:
    """The namespace with the demo's paths written as <DEMO.name>."""
    demo = {value: f"<DEMO.{name}>" for name, value in dataclasses.asdict(DEMO).items()}
    return {name: demo.get(value, value) if isinstance(value, str) else value for name, value in namespace.items()}


def help_groups() -> dict[str, list[str]]:
    """{--help group title: its option strings in order} of script.py's parser."""
    shown = io.StringIO()
    with contextlib.redirect_stdout(shown), contextlib.suppress(SystemExit):
        script.parse_args(["--help"])
    groups, title = {}, None
    for line in shown.getvalue().splitlines():
        if re.match(r"^\S.*:$", line):
            title = line[:-1]
            groups[title] = []
        elif title and (options := re.match(r"^  (-\S.*?)(?:\s{2,}|$)", line)):
            groups[title] += [option.split()[0] for option in options.group(1).split(", ")]
    return {title: options for title, options in groups.items() if options}  # not a wrapped line ending in ':'


def main() -> int:
    """Write the fixture; returns the exit code."""
    cases = {name: {"argv": argv, "namespace": placeholders(vars(script.parse_args(argv)))}
             for name, argv in COMMAND_LINES.items()}
    cases = {"help_groups": help_groups(), "command_lines": cases}
    with open(OUTPUT, "w", encoding="utf-8") as stream:
        json.dump(cases, stream, indent=1)
        stream.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
