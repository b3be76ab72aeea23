"""torchrun with 2 CPU processes (gloo): uneven shards with accumulation, a non-finite step, resume; every rank
ends with the same parameters and the gathered evaluation equals one process's."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.distributed as dist
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer
from util import (
    check_predictions_match_summary,
    make_record,
    records_as_lines,
    save_tiny_model,
    tiny_run_flags,
    tiny_tokenizer,
    write_archive,
)

from assertdistill.codec.codec import compress_logits
from assertdistill.core import schema
from assertdistill.data.dataset import ArchiveSpec, DistillationStream
from assertdistill.data.encoding import InputEncoder
from assertdistill.distill.evaluation import evaluate
from assertdistill.distill.loss import DistillationLoss
from assertdistill.distill.training import make_loader
from assertdistill.model.decoding import DecodingSettings
from assertdistill.runtime.distributed import uses_cuda

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="no gloo backend")
# script.py, but every process saves its student's parameters to rank<r>.pt when the run reaches its final report.
RUNNER = """
import os, sys, torch
sys.path[:0] = [{root!r}]
from assertdistill.distill import run
report = run.final_report
def saving_report(state):
    torch.save(state.student.state_dict(), os.path.join({dump!r}, f"rank{{state.context.rank}}.pt"))
    return report(state)
run.final_report = saving_report
import script
sys.exit(script.main(sys.argv[1:]))
"""
VAL_RECORDS = 7


def torchrun(tmp_path, argv, dump) -> subprocess.CompletedProcess:
    """Two gloo processes on the CPU (CUDA hidden: on a 1-GPU machine too) running script.py's flags `argv`."""
    os.makedirs(dump, exist_ok=True)
    runner = tmp_path / "runner.py"
    runner.write_text(RUNNER.format(root=ROOT, dump=str(dump)))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": ROOT, "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(runner), *argv], env=env, capture_output=True, text=True, timeout=300, cwd=str(tmp_path))


def check_replicas_identical(dump):
    rank0, rank1 = (torch.load(os.path.join(dump, f"rank{rank}.pt"), weights_only=True) for rank in (0, 1))
    assert rank0.keys() == rank1.keys()
    assert all(torch.equal(rank0[name], rank1[name]) for name in rank0)


def single_process_metrics(out, archive, flags, temperature, alpha) -> dict:
    """The saved final model evaluated in this one process over the validation data."""
    torch.set_num_threads(1)
    tokenizer = AutoTokenizer.from_pretrained(out / schema.FINAL_MODEL_DIRNAME)
    model = AutoModelForSeq2SeqLM.from_pretrained(out / schema.FINAL_MODEL_DIRNAME)
    stream = DistillationStream(ArchiveSpec(archive, flags["--val_outer_zip_internal_path"],
                                            flags["--val_inner_zip_jsonl_filename"]),
                                InputEncoder(tokenizer, 64, 32), batch_size=2, need_logits=True)
    return evaluate(model, tokenizer, make_loader(stream, 0, False), len(stream), DistillationLoss(temperature, alpha),
                    torch.device("cpu"), DecodingSettings(num_beams=1, max_length=32), show_example=False).metrics


def check_metrics_equal(gathered: dict, single: dict):
    gathered, single = dict(gathered), dict(single)
    gathered.pop(schema.AVG_INFERENCE_TIME_PER_SAMPLE_MS), single.pop(schema.AVG_INFERENCE_TIME_PER_SAMPLE_MS)
    for key, value in single.items():
        if key in (schema.AVG_LOSS, schema.AVG_HARD_LOSS, schema.AVG_SOFT_LOSS):
            assert gathered[key] == pytest.approx(value, rel=1e-5), key
        else:
            assert gathered[key] == value, key


@pytest.fixture(scope="module")
def uneven(tmp_path_factory):
    """A 2-epoch run whose shards differ by a batch, with accumulation 2 and a checkpoint after every step."""
    root = tmp_path_factory.mktemp("uneven")
    model_dir = save_tiny_model(str(root / "model"))
    vocab = len(tiny_tokenizer())
    # 17 training records in groups of 4 dealt out in turn: rank 0 gets 3 batches (4, 4, 1), rank 1 gets 2.
    # With 2 accumulation steps both take one full step and one partial step (rank 1 adding zeros) per epoch.
    train = records_as_lines([make_record(i, vocab) for i in range(17)]) + ["{broken"]
    val = records_as_lines([make_record(100 + i, vocab) for i in range(VAL_RECORDS)]) + ["{broken"]
    flags = write_archive(str(root / "d.zip"), train, val)
    argv = tiny_run_flags(root, model_dir, flags, **{"--epochs": 2, "--eval_batch_size": 2, "--num_beams": 1,
                                                     "--alpha": 0.5, "--gradient_accumulation_steps": 2,
                                                     "--save_steps": 1, "--save_total_limit": 0})
    proc = torchrun(root, argv, root / "dump")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root, flags, argv, proc


def test_uneven_shards_with_accumulation_keep_replicas_identical(uneven):
    root, flags, _, proc = uneven
    assert "x 2 processes: 16 records per step" in proc.stdout
    out = root / "out"
    summary = json.loads((out / schema.SUMMARY_FILENAME).read_text())
    assert [entry[schema.HISTORY_TRAIN][schema.TRAIN_OPTIMIZER_STEPS] for entry in summary[schema.TRAINING_HISTORY]] \
        == [2, 2]
    # The linear schedule reaches 0 at the last step: it was sized for the ranks' (largest) shard, not all records.
    assert summary[schema.TRAINING_HISTORY][-1][schema.HISTORY_TRAIN][schema.TRAIN_LEARNING_RATE] == 0.0
    metrics = summary[schema.FINAL_EVALUATION_METRICS]
    assert metrics["num_eval_samples"] == VAL_RECORDS
    assert summary[schema.DATA_COUNTS][schema.DATA_COUNTS_TRAINING]["records_used"] == 17
    assert summary[schema.DATA_COUNTS][schema.DATA_COUNTS_TRAINING]["skipped_by_reason"] == {"invalid_json": 1}
    assert len((out / schema.METRICS_FILENAME).read_text().splitlines()) == 2  # written once, by rank 0
    # predictions.jsonl: every validation record once, in file order, averaging to the summary's values.
    vocab = len(tiny_tokenizer())
    check_predictions_match_summary(out, [make_record(100 + i, vocab)["original_target"] for i in range(VAL_RECORDS)])
    assert not [name for name in os.listdir(out) if name.startswith(".tmp_")]
    check_replicas_identical(root / "dump")
    check_metrics_equal(metrics, single_process_metrics(out, str(root / "d.zip"), flags, 2.0, 0.5))


def test_resume_under_torchrun_restores_each_ranks_own_counters(uneven, tmp_path):
    root, _, argv, _ = uneven
    plain = json.loads((root / "out" / schema.SUMMARY_FILENAME).read_text())
    # checkpoint-3: one step into epoch 2, where rank 0 has trained on 2 batches and rank 1 on both of its own.
    resumed_out = tmp_path / "resumed"
    shutil.copytree(root / "out" / schema.CHECKPOINTS_DIRNAME / "checkpoint-3",
                    resumed_out / schema.CHECKPOINTS_DIRNAME / "checkpoint-3")
    argv = [*argv, "--output_dir", str(resumed_out), "--resume_from_checkpoint", "latest"]
    proc = torchrun(tmp_path, argv, tmp_path / "dump")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "(epoch 2 in progress, global step 3)" in proc.stdout
    resumed = json.loads((resumed_out / schema.SUMMARY_FILENAME).read_text())

    def without_times(summary):
        return [{key: value for key, value in entry.items() if key != schema.HISTORY_ELAPSED_SECONDS}
                for entry in summary[schema.TRAINING_HISTORY]]

    history, plain_history = without_times(resumed), without_times(plain)
    for entry in history + plain_history:
        entry[schema.HISTORY_EVAL].pop(schema.AVG_INFERENCE_TIME_PER_SAMPLE_MS)
    assert history[1][schema.HISTORY_TRAIN] == plain_history[1][schema.HISTORY_TRAIN]  # both ranks' loss sums once
    assert history == plain_history
    check_replicas_identical(tmp_path / "dump")


def hostile_record(index: int, vocab: int) -> dict:
    """Finite teacher logits (|x| up to ~1e38) that overflow float32 once divided by T = 0.1."""
    record = make_record(index, vocab)
    logits = np.random.default_rng(index).normal(0.0, 1.0, size=(1, 24, vocab)).astype(np.float32) * np.float32(3e37)
    record["compressed_logits"] = compress_logits(logits, bits=8)
    return record


def test_a_non_finite_loss_on_one_rank_skips_the_step_on_both(tmp_path):
    model_dir = save_tiny_model(str(tmp_path / "model"))
    vocab = len(tiny_tokenizer())
    # 16 records, batches of 4 dealt out in turn; record 5 (in rank 1's first batch, file line 7) is hostile.
    train = [hostile_record(i, vocab) if i == 5 else make_record(i, vocab) for i in range(16)]
    flags = write_archive(str(tmp_path / "d.zip"), records_as_lines(train),
                          records_as_lines([make_record(100 + i, vocab) for i in range(4)]))
    argv = tiny_run_flags(tmp_path, model_dir, flags, **{"--num_beams": 1, "--alpha": 0.5, "--temperature": 0.1})
    proc = torchrun(tmp_path, argv, tmp_path / "dump")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "step skipped on every process: non-finite loss from the training record(s) at line(s) 7\n" in proc.stdout
    summary = json.loads((tmp_path / "out" / schema.SUMMARY_FILENAME).read_text())
    train_entry = summary[schema.TRAINING_HISTORY][0][schema.HISTORY_TRAIN]
    assert train_entry[schema.TRAIN_SKIPPED_NONFINITE_STEPS] == 1  # decided jointly, counted once
    assert train_entry[schema.TRAIN_OPTIMIZER_STEPS] == 1
    check_replicas_identical(tmp_path / "dump")


@pytest.mark.parametrize("on_node, devices, expected", [(2, 1, False), (2, 2, True), (1, 1, True), (2, 0, False)])
def test_processes_use_cuda_only_with_a_device_each(on_node, devices, expected):
    assert uses_cuda(on_node, devices) is expected
