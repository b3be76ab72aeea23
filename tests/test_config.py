"""RunConfig: script.py's flags as a dataclass; its asdict is vars() of the parsed arguments (summary, checkpoints)."""

import dataclasses

import pytest

import script
from assertdistill.checkpoint import RESUME_MUST_MATCH
from assertdistill.config import RunConfig
from assertdistill.layout import SplitMembers

# A thesis-style command line: the published archive's members given, the thesis's sweep flags, checkpoints.
THESIS_FLAGS = ["--distillation_data_path", "data/distillation_data.zip",
                "--train_outer_zip_internal_path", "codet5/distillation_data_training.jsonl.zip",
                "--train_inner_zip_jsonl_filename", "distillation_data_training.jsonl", "--train_jsonl_is_gzipped",
                "--val_outer_zip_internal_path", "codet5/distillation_data_validation.jsonl.zip",
                "--val_inner_zip_jsonl_filename", "distillation_data_validation.jsonl",
                "--alpha", "0.5", "--temperature", "4", "--epochs", "5", "--batch_size", "4",
                "--gradient_accumulation_steps", "4", "--learning_rate", "3e-5", "--save_best_model",
                "--best_model_metric", "avg_loss", "--save_steps", "500", "--output_dir", "runs/a0.5_t4"]
COMMAND_LINES = {"demo_defaults": [], "thesis_flags": THESIS_FLAGS}


@pytest.mark.parametrize("argv", COMMAND_LINES.values(), ids=COMMAND_LINES.keys())
def test_config_is_the_parsed_flags_in_their_order(argv):
    args = script.parse_args(argv)
    config = RunConfig.from_namespace(args)
    assert dataclasses.asdict(config) == config.as_flags() == vars(args)
    assert list(config.as_flags()) == list(vars(args))  # the summary's args keep the flags' order
    assert set(RESUME_MUST_MATCH) <= set(config.as_flags())


def test_data_members_round_trip_and_replace_only_the_members():
    config = RunConfig.from_namespace(script.parse_args(THESIS_FLAGS))
    assert config.data_members()["training"] == SplitMembers("codet5/distillation_data_training.jsonl.zip",
                                                             "distillation_data_training.jsonl", True)
    assert config.data_members()["validation"].gzipped is None  # not given: detected by resolve_data_members
    assert config.with_data_members(config.data_members()) == config
    picked = {"training": SplitMembers("a/t.zip", "t.jsonl", False),
              "validation": SplitMembers("a/v.zip", "v.jsonl.gz", True)}
    resolved = config.with_data_members(picked)
    assert resolved.data_members() == picked
    unchanged = {name: value for name, value in resolved.as_flags().items() if not name.startswith(("train_", "val_"))}
    assert unchanged == {name: value for name, value in config.as_flags().items()
                         if not name.startswith(("train_", "val_"))}
