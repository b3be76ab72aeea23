"""sweep.sh against a stub script.py: cells, directory names, resume, failures, usage errors."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SWEEP_SH = Path(__file__).resolve().parents[1] / "sweep.sh"

# Records its argv, then fails, exits 0 without a summary, or writes one, as the environment asks.
STUB = '''
import argparse, json, os, sys
with open(os.environ["STUB_CALLS"], "a") as f:
    f.write(json.dumps(sys.argv[1:]) + "\\n")
parser = argparse.ArgumentParser()
for flag in ("--seed", "--output_dir"):
    parser.add_argument(flag, required=True)
parser.add_argument("--alpha_kl_loss_weight", default="0.5")
parser.add_argument("--temperature", default="2.0")
args, extra = parser.parse_known_args()
assert not os.path.exists(os.path.join(args.output_dir, "distillation_summary.json"))
with open(os.path.join(args.output_dir, "metrics.jsonl"), "a") as f:
    f.write(json.dumps({"epoch": 1}) + "\\n")
if args.alpha_kl_loss_weight == os.environ.get("STUB_FAIL_ALPHA"):
    sys.exit("boom: stub told to fail")
if args.alpha_kl_loss_weight == os.environ.get("STUB_NO_SUMMARY_ALPHA"):
    sys.exit(0)
print("training", args.output_dir)
with open(os.path.join(args.output_dir, "distillation_summary.json"), "w") as f:
    json.dump({"args": {**vars(args), "extra": extra}}, f)
'''


@pytest.fixture
def sweep(tmp_path):
    """Run sweep.sh with the stub as script.py; returns run(mode, *options, **env) -> CompletedProcess."""
    stub = tmp_path / "stub_script.py"
    stub.write_text(STUB)

    def run(mode, *options, **env):
        full_env = {**os.environ, "PYTHON": sys.executable, "SCRIPT_PY": str(stub),
                    "STUB_CALLS": str(tmp_path / "calls.jsonl"), **env}
        for name in ("ALPHAS", "TEMPS", "SEEDS"):
            if name not in env:
                full_env.pop(name, None)
        argv = [mode, *options] if mode else list(options)
        return subprocess.run(["bash", str(SWEEP_SH), *argv], cwd=tmp_path, env=full_env,
                              capture_output=True, text=True, timeout=60)

    return run


def calls(tmp_path) -> list[list[str]]:
    """The argv of every stub call so far."""
    path = tmp_path / "calls.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def cell_args(alpha, temp, seed, run_dir) -> list[str]:
    """The argv sweep.sh passes to script.py for one cell."""
    return ["--alpha_kl_loss_weight", alpha, "--temperature", temp, "--seed", seed, "--output_dir", run_dir]


# (id, mode, options, environment, expected (alpha, temp, seed) cells in run order, as canonical strings)
GRIDS = [
    ("alpha", "alpha", ["--alphas", "0.0 0.5", "--temps", "2.0", "--seeds", "1 2"], {},
     [("0.0", "2.0", "1"), ("0.0", "2.0", "2"), ("0.5", "2.0", "1"), ("0.5", "2.0", "2")]),
    ("temp", "temp", ["--temps", "0.5 1", "--alphas", "0.25", "--seeds", "3"], {},
     [("0.25", "0.5", "3"), ("0.25", "1.0", "3")]),
    ("canonical_numbers", "alpha", ["--alphas", "1 1.0 1.00 .50", "--seeds=05"], {},
     [("1.0", "2.0", "5"), ("0.5", "2.0", "5")]),
    ("grid_from_env", "temp", [], {"TEMPS": "4", "SEEDS": "9 8", "ALPHAS": "0 1"},
     [("0.0", "4.0", "9"), ("0.0", "4.0", "8"), ("1.0", "4.0", "9"), ("1.0", "4.0", "8")]),
]


@pytest.mark.parametrize("mode,options,env,cells", [g[1:] for g in GRIDS], ids=[g[0] for g in GRIDS])
def test_runs_every_cell_in_its_own_dir(tmp_path, sweep, mode, options, env, cells):
    results_dir = tmp_path / "results"
    proc = sweep(mode, *options, "--results_dir", str(results_dir), **env)
    assert proc.returncode == 0, proc.stderr
    run_dirs = [str(results_dir / f"alpha_{a}_temp_{t}_seed_{s}") for a, t, s in cells]
    assert calls(tmp_path) == [cell_args(*cell, run_dir) for cell, run_dir in zip(cells, run_dirs)]
    assert sorted(str(p) for p in results_dir.iterdir()) == sorted(run_dirs)
    for run_dir in map(Path, run_dirs):
        assert (run_dir / "distillation_summary.json").is_file()
        assert f"training {run_dir}" in (run_dir / "run.log").read_text()
    a, t, s = cells[0]
    assert f"[1/{len(cells)}] alpha={a} temp={t} seed={s}" in proc.stdout
    assert f"{len(cells)} done, 0 skipped, 0 failed of {len(cells)} in 0:00:" in proc.stdout.splitlines()[-1]


def test_rerun_skips_finished_cells(tmp_path, sweep):
    options = ["alpha", "--alphas", "0.0 0.5", "--temps", "2.0", "--seeds", "1 2", "--results_dir", "res"]
    assert sweep(*options).returncode == 0
    assert len(calls(tmp_path)) == 4
    proc = sweep(*options)
    assert proc.returncode == 0
    assert len(calls(tmp_path)) == 4
    assert proc.stdout.count(" skip alpha=") == 4
    assert "0 done, 4 skipped, 0 failed of 4" in proc.stdout


@pytest.mark.parametrize("env", [{"STUB_FAIL_ALPHA": "0.5"}, {"STUB_NO_SUMMARY_ALPHA": "0.5"}],
                         ids=["exit_1", "exit_0_without_summary"])
def test_failed_cell_is_counted_and_the_sweep_goes_on(tmp_path, sweep, env):
    options = ["alpha", "--alphas", "0.0 0.5 1.0", "--temps", "2.0", "--seeds", "1 2", "--results_dir", "res"]
    proc = sweep(*options, **env)
    assert proc.returncode == 1
    assert len(calls(tmp_path)) == 6
    finished = sorted(p.parent.name for p in (tmp_path / "res").glob("*/distillation_summary.json"))
    assert finished == [f"alpha_{a}_temp_2.0_seed_{s}" for a in ("0.0", "1.0") for s in (1, 2)]
    assert "4 done, 0 skipped, 2 failed of 6" in proc.stdout
    assert "failed runs:\n  alpha=0.5 temp=2.0 seed=1" in proc.stderr
    assert "alpha=0.5 temp=2.0 seed=2" in proc.stderr
    # the fixed cells are the only ones rerun
    proc = sweep(*options)
    assert proc.returncode == 0, proc.stderr
    assert [c[1] for c in calls(tmp_path)[6:]] == ["0.5", "0.5"]
    assert "2 done, 4 skipped, 0 failed of 6" in proc.stdout
    log = (tmp_path / "res" / "alpha_0.5_temp_2.0_seed_1" / "run.log").read_text()
    assert log.count("=== ") == 2  # both attempts kept in the log
    run_dir = tmp_path / "res" / "alpha_0.5_temp_2.0_seed_1"
    assert (run_dir / "metrics.jsonl").read_text().count("epoch") == 1  # the retry's own log only
    assert len(list(run_dir.glob("metrics.jsonl.failed-*"))) == 1


def test_extra_args_are_forwarded(tmp_path, sweep):
    proc = sweep("temp", "--temps", "2", "--seeds", "1", "--results_dir", "r", "--", "--epochs", "1", "--note", "a b")
    assert proc.returncode == 0, proc.stderr
    assert calls(tmp_path) == [cell_args("0.5", "2.0", "1", "r/alpha_0.5_temp_2.0_seed_1")
                               + ["--epochs", "1", "--note", "a b"]]


@pytest.mark.parametrize("mode,count", [("alpha", 7 * 3), ("temp", 5 * 3)])
def test_dry_run_shows_default_grid_and_starts_nothing(tmp_path, sweep, mode, count):
    proc = sweep(mode, "--dry_run")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count(" would run: ") == count
    assert calls(tmp_path) == [] and not (tmp_path / f"results_{mode}").exists()


# (id, argv after "bash sweep.sh", expected message on stderr)
USAGE_ERRORS = [
    ("no_mode", [], "first argument must be 'alpha' or 'temp'"),
    ("bad_mode", ["beta"], "first argument must be 'alpha' or 'temp'"),
    ("bad_number", ["alpha", "--alphas", "0.5 abc"], "not a plain non-negative decimal number: 'abc'"),
    ("bad_seed", ["temp", "--seeds", "1.5"], "not a non-negative integer seed: '1.5'"),
    ("empty_grid", ["temp", "--temps", " "], "temps is empty"),
    ("missing_value", ["alpha", "--seeds"], "--seeds needs a value"),
    ("unknown_option", ["alpha", "--epochs", "3"], "unknown option '--epochs'"),
    ("reserved_extra", ["alpha", "--", "--output_dir", "x"], "'--output_dir' is set per cell by sweep.sh"),
    ("values_without_axis", ["alpha", "--values", "a b"], "--values must follow --axis NAME"),
    ("axis_without_values", ["--axis", "student_model_name"], "--axis student_model_name needs --values"),
    ("axis_at_the_end", ["alpha", "--axis"], "--axis needs a value"),
    ("axis_then_other_option", ["--axis", "student_model_name", "--seeds", "1"],
     "--axis student_model_name needs --values"),
    ("bad_axis_name", ["--axis", "a-b", "--values", "1"], "--axis 'a-b' is not a flag name of script.py"),
    ("axis_twice", ["--axis", "x", "--values", "1", "--axis", "x", "--values", "2"], "--axis x given twice"),
    ("no_axis_without_mode", ["--seeds", "1"], "without 'alpha' or 'temp' first, name the swept setting"),
    ("reserved_axis_extra", ["--axis", "epochs", "--values", "1 2", "--", "--epochs=3"],
     "'--epochs=3' is set per cell by sweep.sh (--axis epochs)"),
    ("empty_axis_values", ["--axis", "epochs", "--values", " "], "epochs is empty"),
]


@pytest.mark.parametrize("argv,message", [u[1:] for u in USAGE_ERRORS], ids=[u[0] for u in USAGE_ERRORS])
def test_usage_errors_exit_2_before_running(tmp_path, argv, message):
    env = {k: v for k, v in os.environ.items() if k not in ("ALPHAS", "TEMPS", "SEEDS")}
    proc = subprocess.run(["bash", str(SWEEP_SH), *argv], cwd=tmp_path, capture_output=True, text=True,
                          env={**env, "SCRIPT_PY": "/nonexistent"}, timeout=60)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_cell_with_checkpoints_is_resumed(tmp_path, sweep):
    run_dir = tmp_path / "r" / "alpha_0.5_temp_2.0_seed_1"
    (run_dir / "checkpoints" / "checkpoint-8").mkdir(parents=True)
    (run_dir / "checkpoints" / "checkpoint-8" / "state.pt").write_bytes(b"x")
    proc = sweep("temp", "--temps", "2", "--seeds", "1", "--results_dir", "r")
    assert proc.returncode == 0, proc.stderr
    assert calls(tmp_path)[0][-2:] == ["--resume_from_checkpoint", "latest"]


@pytest.mark.parametrize("extra", [[], ["--", "--epochs", "1"]], ids=["no_extra_args", "extra_args"])
def test_slurm_array_task_runs_its_own_cell(tmp_path, sweep, extra):
    proc = sweep("temp", "--temps", "1 4", "--seeds", "7 8", "--results_dir", "res", "--slurm", "--partition", "gpu",
                 "--time", "01:00:00", *extra)
    assert proc.returncode == 0, proc.stderr
    batch_file = tmp_path / "res" / "sweep_temp.sbatch"
    text = batch_file.read_text()
    assert "#SBATCH --array=0-3" in text and "#SBATCH --partition=gpu" in text and "#SBATCH --time=01:00:00" in text
    assert calls(tmp_path) == []  # writing the array starts nothing
    env = {**os.environ, "SLURM_ARRAY_TASK_ID": "2", "STUB_CALLS": str(tmp_path / "calls.jsonl")}
    task = subprocess.run(["bash", str(batch_file)], env=env, capture_output=True, text=True, timeout=60)
    assert task.returncode == 0, task.stderr
    run_dir = str(tmp_path / "res" / "alpha_0.5_temp_4.0_seed_7")
    assert calls(tmp_path) == [cell_args("0.5", "4.0", "7", run_dir) + extra[1:]]
    rerun = subprocess.run(["bash", str(batch_file)], env=env, capture_output=True, text=True, timeout=60)
    assert rerun.returncode == 0 and " skip alpha=0.5 temp=4.0 seed=7" in rerun.stdout  # skip-if-done kept


def test_any_setting_is_an_axis(tmp_path, sweep):
    proc = sweep(None, "--axis", "student_model_name", "--values", "demo/student dir2 dir2", "--seeds", "1")
    assert proc.returncode == 0, proc.stderr
    results_dir = "results_student_model_name"
    assert calls(tmp_path) == [
        ["--student_model_name", "demo/student", "--seed", "1", "--output_dir",
         f"{results_dir}/student_model_name_demo%2Fstudent_seed_1"],
        ["--student_model_name", "dir2", "--seed", "1", "--output_dir", f"{results_dir}/student_model_name_dir2_seed_1"]]
    assert "[1/2] student_model_name=demo/student seed=1 -> " in proc.stdout
    assert "sweep student_model_name: 2 done, 0 skipped, 0 failed of 2" in proc.stdout


def test_an_axis_beside_the_alpha_mode_and_a_new_value_runs_only_the_new_cells(tmp_path, sweep):
    options = ["--alphas", "0 1", "--seeds", "1", "--results_dir", "r"]
    assert sweep("alpha", *options, "--axis", "epochs", "--values", "2").returncode == 0
    assert [call[-1] for call in calls(tmp_path)] == ["r/alpha_0.0_temp_2.0_epochs_2_seed_1",
                                                      "r/alpha_1.0_temp_2.0_epochs_2_seed_1"]
    assert calls(tmp_path)[0] == ["--alpha_kl_loss_weight", "0.0", "--temperature", "2.0", "--epochs", "2",
                                  "--seed", "1", "--output_dir", "r/alpha_0.0_temp_2.0_epochs_2_seed_1"]
    proc = sweep("alpha", *options, "--axis", "epochs", "--values", "2 3")
    assert proc.returncode == 0, proc.stderr
    assert [call[-1] for call in calls(tmp_path)[2:]] == ["r/alpha_0.0_temp_2.0_epochs_3_seed_1",
                                                          "r/alpha_1.0_temp_2.0_epochs_3_seed_1"]
    assert "2 done, 2 skipped, 0 failed of 4" in proc.stdout


@pytest.mark.parametrize("axis,values,shorthand", [("alpha", "0 .5", ["--alphas", "0 .5"]),
                                                   ("temp", "4", ["--temps", "4"]),
                                                   ("seed", "7 8", ["--seeds", "7 8"])])
def test_the_declared_axes_as_axis_are_their_shorthands(tmp_path, sweep, axis, values, shorthand):
    dry = sweep("temp", "--axis", axis, "--values", values, "--dry_run").stdout.splitlines()
    assert dry[:-1] == sweep("temp", *shorthand, "--dry_run").stdout.splitlines()[:-1]  # the last: elapsed time
    assert len(dry) > 2


def test_run_directories_are_named_by_the_declared_axes():
    from assertdistill.analysis import axes

    proc = subprocess.run(["bash", str(SWEEP_SH), "alpha", "--alphas", "0.5", "--temps", "2", "--seeds", "3",
                           "--axis", "student_model_name", "--values", "s", "--dry_run"], capture_output=True,
                          text=True, timeout=60, env={**os.environ, "SCRIPT_PY": "/nonexistent"})
    alpha, temperature, seed = axes.SWEPT
    name = f"{alpha.dir_prefix}_0.5_{temperature.dir_prefix}_2.0_student_model_name_s_{seed.dir_prefix}_3"
    assert f"--output_dir results_alpha/{name}" in proc.stdout, proc.stdout


def test_slurm_array_with_an_axis_runs_its_own_cell(tmp_path, sweep):
    proc = sweep(None, "--axis", "student_model_name", "--values", "a b/c", "--seeds", "7", "--results_dir", "res",
                 "--slurm")
    assert proc.returncode == 0, proc.stderr
    batch_file = tmp_path / "res" / "sweep_student_model_name.sbatch"
    assert "#SBATCH --array=0-1" in batch_file.read_text()
    env = {**os.environ, "SLURM_ARRAY_TASK_ID": "1", "STUB_CALLS": str(tmp_path / "calls.jsonl")}
    task = subprocess.run(["bash", str(batch_file)], env=env, capture_output=True, text=True, timeout=60)
    assert task.returncode == 0, task.stderr
    assert calls(tmp_path) == [["--student_model_name", "b/c", "--seed", "7", "--output_dir",
                                str(tmp_path / "res" / "student_model_name_b%2Fc_seed_7")]]
