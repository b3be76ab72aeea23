"""RunConfig: every flag of script.py declared once; the parser, checks, resume rule and docs/USAGE.md follow it."""

import dataclasses
import json
import re
from pathlib import Path

import make_cli_golden
import pytest

import script
from assertdistill.core.paths import DEMO
from assertdistill.data.layout import SplitMembers
from assertdistill.distill import config, usage_doc
from assertdistill.distill.checkpoint import RESUME_MUST_MATCH, CheckpointError, checkpoint_to_resume, save_checkpoint
from assertdistill.distill.config import SETTINGS, RunConfig, SettingError

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


# --- the one declaration: parser, checks, resumes, docs and demo defaults all read RunConfig's fields ---

GOLDEN = json.loads((Path(__file__).parent / "data" / "cli_golden.json").read_text())
COMMAND_LINE_CASES = GOLDEN["command_lines"]


def with_demo_paths(namespace: dict) -> dict:
    """A golden namespace with its <DEMO.name> placeholders replaced by this run's demo paths."""
    demo = {f"<DEMO.{name}>": value for name, value in dataclasses.asdict(DEMO).items()}
    return {name: demo.get(value, value) if isinstance(value, str) else value for name, value in namespace.items()}


@pytest.mark.parametrize("case", COMMAND_LINE_CASES.values(), ids=COMMAND_LINE_CASES.keys())
def test_parse_args_gives_the_hand_written_parsers_namespace(case):
    """Same dests, values, types and order as the argparse calls script.py held before (tests/make_cli_golden.py)."""
    parsed = vars(script.parse_args(case["argv"]))
    expected = with_demo_paths(case["namespace"])
    assert list(parsed) == [spec.name for spec in SETTINGS]
    assert [name for name in parsed if name in expected] == list(expected)  # settings added later may go between
    assert {name: (value, type(value)) for name, value in parsed.items() if name in expected} == \
        {name: (value, type(value)) for name, value in expected.items()}


def test_every_option_string_stays_in_its_help_group():
    """The thesis's spellings (aliases too) keep their --help group and order; new flags may go between."""
    groups = make_cli_golden.help_groups()
    assert list(groups)[:len(GOLDEN["help_groups"])] == list(GOLDEN["help_groups"])
    for title, options in GOLDEN["help_groups"].items():
        assert [option for option in groups[title] if option in options] == options, title


def test_the_declared_defaults_are_the_parsers_off_the_demo():
    args = script.parse_args(["--distillation_data_path", "codet5.zip"])
    assert RunConfig.from_namespace(args) == RunConfig(distillation_data_path="codet5.zip")
    assert (RunConfig().student_model_name, RunConfig().teacher_model_name) == (script.THESIS_STUDENT,
                                                                                script.THESIS_TEACHER)


def test_help_lists_every_flag_with_its_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        script.parse_args(["--help"])
    assert exit_info.value.code == 0
    shown = " ".join(capsys.readouterr().out.split())
    for spec in SETTINGS:
        assert all(re.search(rf"{re.escape(flag)}(?!\w)", shown) for flag in spec.flags), spec.name  # not a prefix
        assert " ".join(spec.help.split()) in shown, spec.name
        assert spec.group in shown


BOUNDED = [spec for spec in SETTINGS if {spec.minimum, spec.maximum, spec.above, spec.below} != {None}]


@pytest.mark.parametrize("spec", BOUNDED, ids=[spec.name for spec in BOUNDED])
def test_a_value_out_of_range_is_one_line_and_exit_2(spec, capsys):
    low = spec.above if spec.above is not None else spec.minimum
    outside = [low - 1] if low is not None else []
    outside += [spec.maximum + 1] if spec.maximum is not None else []
    outside += [spec.below, spec.below + 1] if spec.below is not None else []
    for value in outside:
        with pytest.raises(SystemExit) as exit_info:
            script.parse_args([spec.flags[0], str(spec.kind(value))])
        assert exit_info.value.code == 2
        errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
        assert len(errors) == 1 and f"error: {spec.flags[0]} must " in errors[0]
    inside = spec.maximum if spec.maximum is not None else (low + spec.below) / 2 if spec.below is not None \
        else (low + 1)
    assert getattr(script.parse_args([spec.flags[0], str(spec.kind(inside))]), spec.name) == spec.kind(inside)


# The hand-written parser's checks, one value just outside each.
REFUSED = [["--alpha", "1.5"], ["--alpha", "-0.1"], ["--temperature", "0"], ["--epochs", "0"], ["--batch_size", "0"],
           ["--eval_batch_size", "0"], ["--gradient_accumulation_steps", "0"], ["--warmup_steps_ratio", "1.01"],
           ["--student_max_src_length", "7"], ["--student_max_tgt_length", "1"], ["--num_beams", "0"],
           ["--num_dataloader_workers", "-1"], ["--shuffle_buffer_size", "-1"], ["--save_steps", "-1"],
           ["--save_total_limit", "-1"], ["--max_record_bytes", "0"]]


@pytest.mark.parametrize("argv", REFUSED, ids=[" ".join(argv) for argv in REFUSED])
def test_the_old_checks_still_refuse(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        script.parse_args(argv)
    assert exit_info.value.code == 2 and "must be" in capsys.readouterr().err.splitlines()[-1]


def test_the_config_refuses_what_the_parser_would():
    with pytest.raises(SettingError, match="--temperature must be > 0"):
        RunConfig(temperature=0.0)
    with pytest.raises(SettingError, match="--precision must be one of fp32, bf16, fp16, got 'fp8'"):
        dataclasses.replace(RunConfig(), precision="fp8")


def test_demo_defaults_apply_only_to_flags_not_given(monkeypatch, tmp_path):
    defaults_file = tmp_path / "run_defaults.json"
    defaults_file.write_text(json.dumps({"learning_rate": 0.001, "epochs": 5}))
    monkeypatch.setattr(config, "DEMO", dataclasses.replace(config.DEMO, run_defaults=str(defaults_file)))
    args = script.parse_args(["--epochs", "2"])
    assert args.learning_rate == 0.001 and args.epochs == 2
    args = script.parse_args(["--distillation_data_path", "other.zip"])
    assert args.learning_rate == 5e-5 and args.epochs == 3  # the thesis defaults off the demo


@pytest.mark.parametrize("defaults, message", [({"learning_rat": 0.001},
                                                "learning_rat is not a setting of script.py (did you mean learning_rate?)"),
                                               ({"num_beams": 0}, "--num_beams must be >= 1"),
                                               ({"precision": "fp8"}, "--precision must be one of")])
def test_bad_demo_defaults_are_one_line_and_exit_2(defaults, message, monkeypatch, tmp_path, capsys):
    defaults_file = tmp_path / "run_defaults.json"
    defaults_file.write_text(json.dumps(defaults))
    monkeypatch.setattr(config, "DEMO", dataclasses.replace(config.DEMO, run_defaults=str(defaults_file)))
    with pytest.raises(SystemExit) as exit_info:
        script.parse_args([])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err.splitlines()[-1]


def changed(value):
    """Another value of the same kind."""
    if isinstance(value, bool) or value is None:
        return 1 if value is None else not value
    return value + ("x" if isinstance(value, str) else 1)


@pytest.mark.parametrize("name", RESUME_MUST_MATCH)
def test_a_resume_with_a_changed_must_match_setting_is_refused_by_name(name, tmp_path):
    flags = RunConfig.from_namespace(script.parse_args(THESIS_FLAGS)).as_flags()
    path = save_checkpoint(str(tmp_path), 3, {}, {"args": flags}, save_total_limit=None)
    assert checkpoint_to_resume("latest", str(tmp_path), flags)[0] == path
    with pytest.raises(CheckpointError, match=f"other values of --{name};"):
        checkpoint_to_resume("latest", str(tmp_path), {**flags, name: changed(flags[name])})


def test_must_match_is_the_declared_metadata_and_other_settings_may_change(tmp_path):
    assert RESUME_MUST_MATCH == tuple(spec.name for spec in SETTINGS if spec.resume_must_match)
    assert {"alpha_kl_loss_weight", "temperature", "seed", "batch_size"} <= set(RESUME_MUST_MATCH)
    flags = RunConfig.from_namespace(script.parse_args(THESIS_FLAGS)).as_flags()
    save_checkpoint(str(tmp_path), 3, {}, {"args": flags}, save_total_limit=None)
    free = {name: changed(value) for name, value in flags.items() if name not in RESUME_MUST_MATCH}
    assert checkpoint_to_resume("latest", str(tmp_path), {**flags, **free})[1]["run"]["args"] == flags


def test_docs_usage_is_current():
    written = Path(usage_doc.USAGE_PATH).read_text(encoding="utf-8")
    assert written == usage_doc.render(), "docs/USAGE.md is stale: run python -m assertdistill.distill.usage_doc --write"
    assert all(f"`{spec.flags[0]}`" in written for spec in SETTINGS)
