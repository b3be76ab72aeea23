"""Checkpoints: a run killed with SIGKILL mid-epoch and resumed ends like the uninterrupted run."""

import json
import os
import signal
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

import script
from assertdistill.checkpoint import checkpoints_in, resolve_checkpoint
from util import make_record, records_as_lines, save_tiny_model, tiny_run_flags, tiny_tokenizer, write_archive

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Runs script.py, but SIGKILLs itself once the optimizer reaches step KILL_AT_STEP (after the
# checkpoint at an earlier step was written): a crash in the middle of an epoch, mid-way through work.
KILLING_RUNNER = """
import os, signal, sys
sys.path[:0] = [{root!r}]
from assertdistill import training
step = training.Trainer._optimizer_step
def killing_step(self):
    step(self)
    if self.global_step == {kill_at}:
        os.kill(os.getpid(), signal.SIGKILL)
training.Trainer._optimizer_step = killing_step
import script
sys.exit(script.main(sys.argv[1:]))
"""


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    model_dir = save_tiny_model(str(root / "model"))
    vocab = len(tiny_tokenizer())
    flags = write_archive(str(root / "d.zip"), records_as_lines([make_record(i, vocab) for i in range(22)]),
                          records_as_lines([make_record(50 + i, vocab) for i in range(4)]))
    return root, model_dir, flags


def run_script(argv, kill_at=None):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": ROOT}
    code = (KILLING_RUNNER.format(root=ROOT, kill_at=kill_at) if kill_at
            else f"import sys; sys.path.insert(0, {ROOT!r}); import script; sys.exit(script.main(sys.argv[1:]))")
    return subprocess.run([sys.executable, "-c", code, *argv], env=env, capture_output=True, text=True, timeout=300)


def final_state(output_dir):
    summary = json.loads(open(os.path.join(output_dir, "distillation_summary.json")).read())
    metrics = dict(summary["final_evaluation_metrics"])
    metrics.pop("avg_inference_time_per_sample_ms")
    history = [{key: value for key, value in entry.items() if key != "elapsed_seconds"}
               for entry in summary["training_history"]]
    for entry in history:
        entry.get("eval", {}).pop("avg_inference_time_per_sample_ms", None)
    weights = load_file(os.path.join(output_dir, "final_student_model", "model.safetensors"))
    return metrics, history, weights


def test_killed_and_resumed_run_equals_uninterrupted_run(setup, tmp_path):
    _, model_dir, flags = setup
    common = {"--epochs": 2, "--batch_size": 4, "--learning_rate": 3e-3, "--num_beams": 1}
    plain = tiny_run_flags(tmp_path, model_dir, flags, **common, **{"--output_dir": str(tmp_path / "plain")})
    assert run_script(plain).returncode == 0

    out = str(tmp_path / "killed")
    argv = tiny_run_flags(tmp_path, model_dir, flags, **common, **{"--output_dir": out, "--save_steps": 2})
    killed = run_script(argv, kill_at=9)  # 6 steps per epoch: checkpoint-8 lies in epoch 2, killed at step 9
    assert killed.returncode == -signal.SIGKILL
    assert [step for step, _ in checkpoints_in(out)] == [6, 8]  # --save_total_limit 2
    assert not os.path.exists(os.path.join(out, "distillation_summary.json"))

    refused = run_script(argv)  # checkpoints present: never silently start over
    assert refused.returncode == 2 and "--resume_from_checkpoint" in refused.stderr

    resumed = run_script(argv + ["--resume_from_checkpoint", "latest"])
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "Resuming from" in resumed.stdout and "global step 8" in resumed.stdout

    plain_metrics, plain_history, plain_weights = final_state(str(tmp_path / "plain"))
    metrics, history, weights = final_state(out)
    assert metrics == plain_metrics
    assert history == plain_history
    assert all(torch.allclose(weights[name], plain_weights[name]) for name in plain_weights)
    lines = open(os.path.join(out, "metrics.jsonl")).read().splitlines()
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
