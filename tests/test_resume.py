"""Checkpoints: a run killed with SIGKILL (mid-epoch, at an epoch end, after training) and resumed ends like the
uninterrupted run."""

import json
import os
import pickle
import signal
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file
from util import assert_same_numbers, tiny_model_and_archive, tiny_run_flags

import script
from assertdistill.core import schema
from assertdistill.distill.checkpoint import checkpoints_in, resolve_checkpoint
from assertdistill.runtime.rng import rng_state, set_rng_state

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Runs script.py, but SIGKILLs itself at a given point: "step:N" once the optimizer reaches step N (after
# the checkpoints of earlier steps were written), "final_save" when the finished run starts saving its
# final model (after the last epoch-end checkpoint, before the summary).
KILLING_RUNNER = """
import os, signal, sys
sys.path[:0] = [{root!r}]
from assertdistill.distill import run
from assertdistill.distill import training
kill = {kill!r}
if kill.startswith("step:"):
    step = training.Trainer._optimizer_step
    def killing_step(self):
        step(self)
        if self.global_step == int(kill[5:]):
            os.kill(os.getpid(), signal.SIGKILL)
    training.Trainer._optimizer_step = killing_step
else:
    run.save_model_atomic = lambda *args: os.kill(os.getpid(), signal.SIGKILL)
import script
sys.exit(script.main(sys.argv[1:]))
"""
COMMON = {"--epochs": 2, "--batch_size": 4, "--learning_rate": 3e-3, "--num_beams": 1}
# 22 records, batch 4: 6 optimizer steps per epoch, a checkpoint every 2 steps and at each epoch end.
# Each chain: the points where successive runs are killed, each with the checkpoints it leaves
# (--save_total_limit 2) and where the next run resumes.
KILL_CHAINS = {
    "mid_epoch": [("step:9", [6, 8], "epoch 2 in progress, global step 8")],
    "epoch_end_then_after_training": [
        ("step:7", [4, 6], "epoch 1 finished, global step 6"),  # epoch 2 starts afresh, and that run is
        ("final_save", [10, 12], "epoch 2 finished, global step 12"),  # killed after the last epoch: reports only
    ],
}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    model_dir, flags = tiny_model_and_archive(root, num_train=22, num_val=4)
    return root, model_dir, flags


@pytest.fixture(scope="module")
def uninterrupted(setup):
    root, model_dir, flags = setup
    assert run_script(tiny_run_flags(root, model_dir, flags, **COMMON, **{"--output_dir": str(root / "plain")})) \
        .returncode == 0
    return final_state(str(root / "plain"))


def run_script(argv, kill=None) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": ROOT, "PYTHONUNBUFFERED": "1"}
    code = (KILLING_RUNNER.format(root=ROOT, kill=kill) if kill
            else f"import sys; sys.path.insert(0, {ROOT!r}); import script; sys.exit(script.main(sys.argv[1:]))")
    return subprocess.run([sys.executable, "-c", code, *argv], env=env, capture_output=True, text=True, timeout=300)


def final_state(output_dir):
    summary = json.loads(open(os.path.join(output_dir, schema.SUMMARY_FILENAME)).read())
    metrics = dict(summary[schema.FINAL_EVALUATION_METRICS])
    metrics.pop(schema.AVG_INFERENCE_TIME_PER_SAMPLE_MS)
    history = [{key: value for key, value in entry.items() if key != schema.HISTORY_ELAPSED_SECONDS}
               for entry in summary[schema.TRAINING_HISTORY]]
    for entry in history:
        entry.get(schema.HISTORY_EVAL, {}).pop(schema.AVG_INFERENCE_TIME_PER_SAMPLE_MS, None)
    weights = load_file(os.path.join(output_dir, schema.FINAL_MODEL_DIRNAME, "model.safetensors"))
    predictions = open(os.path.join(output_dir, schema.PREDICTIONS_FILENAME)).read()
    return metrics, history, weights, predictions, summary[schema.CONFIDENCE_INTERVALS]


@pytest.mark.parametrize("chain", KILL_CHAINS.values(), ids=KILL_CHAINS.keys())
def test_killed_and_resumed_run_equals_uninterrupted_run(setup, uninterrupted, tmp_path, capsys, chain):
    _, model_dir, flags = setup
    out = str(tmp_path / "killed")
    argv = tiny_run_flags(tmp_path, model_dir, flags, **COMMON, **{"--output_dir": out, "--save_steps": 2})
    resume, resumed_at = [], None
    for kill, checkpoints_left, next_resume in chain:
        killed = run_script(argv + resume, kill=kill)
        assert killed.returncode == -signal.SIGKILL
        assert not resume or f"({resumed_at})" in killed.stdout
        assert [step for step, _ in checkpoints_in(out)] == checkpoints_left
        assert not os.path.exists(os.path.join(out, schema.SUMMARY_FILENAME))
        resume, resumed_at = ["--resume_from_checkpoint", "latest"], next_resume

    assert script.main(argv) == 2  # checkpoints present: never silently start over (refused before any work)
    assert "--resume_from_checkpoint" in capsys.readouterr().err

    resumed = run_script(argv + resume)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "Resuming from" in resumed.stdout and f"({resumed_at})" in resumed.stdout

    plain_metrics, plain_history, plain_weights, plain_predictions, plain_intervals = uninterrupted
    metrics, history, weights, predictions, intervals = final_state(out)
    assert_same_numbers(metrics, plain_metrics)
    assert_same_numbers(history, plain_history)
    assert all(torch.allclose(weights[name], plain_weights[name]) for name in plain_weights)
    assert_same_numbers([json.loads(line) for line in predictions.splitlines()],
                        [json.loads(line) for line in plain_predictions.splitlines()])
    assert_same_numbers(intervals, plain_intervals)
    lines = open(os.path.join(out, schema.METRICS_FILENAME)).read().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2]


def test_latest_ignores_half_written_checkpoints(tmp_path):
    complete = tmp_path / "checkpoints" / "checkpoint-4"
    complete.mkdir(parents=True)
    (complete / "state.pt").write_bytes(b"x")
    (tmp_path / "checkpoints" / "checkpoint-6.tmp").mkdir()  # killed while writing
    (tmp_path / "checkpoints" / "checkpoint-8").mkdir()  # no state file
    assert resolve_checkpoint("latest", str(tmp_path)) == str(complete)


def test_resume_errors_are_one_line(setup, tmp_path, capsys):
    _, model_dir, flags = setup
    argv = tiny_run_flags(tmp_path, model_dir, flags, **{"--resume_from_checkpoint": "latest"})
    assert script.main(argv) == 2
    assert "no complete checkpoint" in capsys.readouterr().err


class OpensAFile:
    """Unpickled by a full unpickler, it calls open(path, "w"): the file appearing shows that code ran."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return open, (self.path, "w")


@pytest.mark.parametrize("writer", ["pickle", "torch.save"])
def test_a_crafted_checkpoint_runs_no_code_and_is_refused_in_one_line(setup, tmp_path, capsys, writer):
    _, model_dir, flags = setup
    marker, crafted = tmp_path / "code_ran", tmp_path / "crafted"
    crafted.mkdir()
    payload = {"run": "{}", "format": 2, "model": OpensAFile(str(marker))}
    with open(crafted / "state.pt", "wb") as stream:
        pickle.dump(payload, stream) if writer == "pickle" else torch.save(payload, stream)
    argv = tiny_run_flags(tmp_path, model_dir, flags, **{"--resume_from_checkpoint": str(crafted)})
    assert script.main(argv) == 2
    err = capsys.readouterr().err
    assert not marker.exists()
    assert "refusing checkpoint" in err and "could run code" in err and len(err.strip().splitlines()) == 1


@pytest.mark.cuda
def test_cuda_random_states_survive_a_weights_only_checkpoint(tmp_path):
    torch.cuda.manual_seed_all(3)
    state = rng_state()
    expected = torch.rand(4, device="cuda")
    torch.save(state, tmp_path / "rng.pt")
    set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    assert torch.equal(torch.rand(4, device="cuda"), expected)
