"""Settings from a file (--config), the evaluation schedule (--eval_strategy) and TensorBoard scalars (--report_to)."""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from util import tiny_model_and_archive, tiny_run_flags

import script
from assertdistill.core import schema
from assertdistill.core.paths import DEMO
from assertdistill.distill import config

ROOT = Path(__file__).resolve().parents[1]


def parse_error(argv, capsys) -> str:
    """The one error line of a command line script.py refuses (exit 2)."""
    with pytest.raises(SystemExit) as exit_info:
        script.parse_args(argv)
    assert exit_info.value.code == 2
    return capsys.readouterr().err.strip().splitlines()[-1]


@pytest.mark.parametrize("suffix, text", [
    (".yaml", "learning_rate: 5e-4  # PyYAML reads this as text\nepochs: 4\ndivergence: jsd\nsave_best_model: true\n"),
    (".json", '{"learning_rate": 5e-4, "epochs": 4, "divergence": "jsd", "save_best_model": true, "_note": "x"}'),
])
def test_a_settings_file_gives_values_and_the_command_line_overrides_it(tmp_path, suffix, text):
    path = tmp_path / f"settings{suffix}"
    path.write_text(text)
    args = script.parse_args(["--config", str(path), "--distillation_data_path", "x.zip", "--epochs", "2"])
    assert (args.learning_rate, args.epochs, args.divergence, args.save_best_model) == (5e-4, 2, "jsd", True)
    assert type(args.learning_rate) is float and "config" not in vars(args)  # the namespace holds settings only
    assert args.temperature == 2.0  # not in the file: the declared default


@pytest.mark.parametrize("settings, message", [
    ({"learning_rat": 0.001, "alpha": 0.5}, "learning_rat is not a setting of script.py (did you mean learning_rate?); "
                                            "alpha is not a setting of script.py (did you mean alpha_kl_loss_weight?)"),
    ({"epochs": "three"}, "epochs must be an integer, got 'three'"),
    ({"save_best_model": "yes"}, "save_best_model must be true or false"),
    ({"temperature": 0}, "--temperature must be > 0"),
    ({"eval_strategy": "steps"}, "--eval_strategy must be one of epoch, no"),
])
def test_a_bad_settings_file_is_refused_by_name(tmp_path, capsys, settings, message):
    path = tmp_path / "settings.json"
    path.write_text(json.dumps(settings))
    assert message in parse_error(["--config", str(path), "--distillation_data_path", "x.zip"], capsys)


def test_an_unreadable_settings_file_is_one_line(tmp_path, capsys):
    assert "--config" in parse_error(["--config", str(tmp_path / "none.yaml")], capsys)
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    assert "expected setting names and their values, got a list" in parse_error(
        ["--config", str(tmp_path / "list.yaml")], capsys)


def test_the_demo_settings_file_runs_on_another_archive():
    demo_file = json.loads(Path(DEMO.run_defaults).read_text())
    args = script.parse_args(["--config", DEMO.run_defaults, "--distillation_data_path", "other.zip"])
    for name, value in demo_file.items():
        if not name.startswith("_"):
            assert getattr(args, name) == value, name
    assert args.student_model_name == "demo/student" and args.distillation_data_path == "other.zip"
    assert args.train_outer_zip_internal_path is None  # the other archive's members: from its layout


def test_a_settings_file_without_an_archive_changes_the_demo(tmp_path):
    path = tmp_path / "settings.yaml"
    path.write_text("epochs: 5\n")
    args = script.parse_args(["--config", str(path)])
    assert args.distillation_data_path == DEMO.archive and args.epochs == 5 and args.num_beams == 1


def test_without_an_archive_or_the_demo_the_error_names_the_flag(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(config, "DEMO", dataclasses.replace(config.DEMO, run_defaults=str(tmp_path / "none.json")))
    assert "give --distillation_data_path ARCHIVE" in parse_error([], capsys)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_model_and_archive(tmp_path_factory.mktemp("settings"), num_train=12, num_val=4)


def test_eval_strategy_no_and_tensorboard_scalars(tiny, tmp_path):
    """Two epochs, only the final evaluation; the event files hold each step's losses and that evaluation."""
    model_dir, flags = tiny
    settings = tmp_path / "settings.yaml"
    settings.write_text("report_to: tensorboard\nepochs: 2\n")
    argv = tiny_run_flags(tmp_path, model_dir, flags, **{"--epochs": None, "--num_beams": 1}) + [
        "--config", str(settings), "--eval_strategy", "no"]
    assert script.main(argv) == 0
    out = tmp_path / "out"
    history = [json.loads(line) for line in (out / schema.METRICS_FILENAME).read_text().splitlines()]
    assert [schema.HISTORY_EVAL in entry for entry in history] == [False, True]
    summary = json.loads((out / schema.SUMMARY_FILENAME).read_text())
    final = summary[schema.FINAL_EVALUATION_METRICS]

    events = EventAccumulator(str(out / schema.TENSORBOARD_DIRNAME))
    events.Reload()
    losses = events.Scalars("train/loss")
    steps = history[-1][schema.HISTORY_GLOBAL_STEP]
    assert [event.step for event in losses] == list(range(1, steps + 1))  # the run's loss curve, step by step
    first_epoch = [event.value for event in losses[:history[0][schema.HISTORY_GLOBAL_STEP]]]
    assert np.mean(first_epoch) == pytest.approx(history[0][schema.HISTORY_TRAIN][schema.TRAIN_LOSS], rel=1e-5)
    assert {"train/hard_loss", "train/soft_loss", "train/learning_rate", "train/temperature"} <= set(
        events.Tags()["scalars"])
    assert {event.value for event in events.Scalars("train/temperature")} == {2.0}
    (evaluation,) = events.Scalars(f"eval/{schema.AVG_LOSS}")  # one evaluation: the final one
    assert evaluation.step == steps and evaluation.value == pytest.approx(final[schema.AVG_LOSS], rel=1e-6)


def test_eval_strategy_epoch_evaluates_every_epoch_and_none_writes_no_events(tiny, tmp_path):
    model_dir, flags = tiny
    assert script.main(tiny_run_flags(tmp_path, model_dir, flags, **{"--epochs": 2, "--num_beams": 1})) == 0
    history = (tmp_path / "out" / schema.METRICS_FILENAME).read_text().splitlines()
    assert [schema.HISTORY_EVAL in json.loads(line) for line in history] == [True, True]
    assert not (tmp_path / "out" / schema.TENSORBOARD_DIRNAME).exists()


def test_a_killed_and_resumed_run_keeps_one_tensorboard_curve(tiny, tmp_path):
    """Killed after step 5 (last checkpoint at step 4) and resumed: each step's loss once, as in an unbroken run."""
    from test_resume import run_script

    model_dir, flags = tiny
    common = {"--epochs": 2, "--batch_size": 4, "--num_beams": 1, "--report_to": "tensorboard"}
    curves = {}
    for name, kill in (("plain", None), ("killed", "step:5")):
        argv = tiny_run_flags(tmp_path / name, model_dir, flags, **common, **{"--save_steps": 2})
        if kill:
            assert run_script(argv, kill=kill).returncode != 0
            argv += ["--resume_from_checkpoint", "latest"]
        finished = run_script(argv)
        assert finished.returncode == 0, finished.stderr[-2000:]
        events = EventAccumulator(str(tmp_path / name / "out" / schema.TENSORBOARD_DIRNAME))
        events.Reload()
        curves[name] = [(event.step, event.value) for event in events.Scalars("train/loss")]
    assert [step for step, _ in curves["killed"]] == list(range(1, 7))  # 12 records, batch 4, 2 epochs
    assert [step for step, _ in curves["plain"]] == list(range(1, 7))
    assert np.allclose([value for _, value in curves["killed"]], [value for _, value in curves["plain"]], rtol=1e-5)


def test_a_switch_a_settings_file_turns_on_is_turned_off_by_its_no_flag(tmp_path):
    path = tmp_path / "settings.yaml"
    path.write_text("save_best_model: true\ncompile: true\n")
    base = ["--config", str(path), "--distillation_data_path", "x.zip"]
    args = script.parse_args(base + ["--no_save_best_model"])
    assert (args.save_best_model, args.compile) == (False, True)
    assert script.parse_args(base).save_best_model is True
    assert script.parse_args(["--distillation_data_path", "x.zip"]).save_best_model is config.DEFAULTS["save_best_model"]
    gzipped = script.parse_args(["--distillation_data_path", "x.zip", "--no_train_jsonl_is_gzipped"])
    assert gzipped.train_jsonl_is_gzipped is False  # False, unlike not given (None: from the member's name)
