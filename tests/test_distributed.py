"""torchrun with 2 CPU processes (gloo): sharded training, gathered evaluation equal to one process."""

import json
import os
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

from assertdistill import schema
from assertdistill.dataset import ArchiveSpec, DistillationStream
from assertdistill.loss import DistillationLoss
from assertdistill.encoding import InputEncoder
from assertdistill.training import evaluate, make_loader
from util import (check_predictions_match_summary, make_record, records_as_lines, save_tiny_model, tiny_run_flags,
                  tiny_tokenizer, write_archive)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="no gloo backend")


def test_two_process_run_matches_a_single_process_evaluation(tmp_path):
    model_dir = save_tiny_model(str(tmp_path / "model"))
    vocab = len(tiny_tokenizer())
    # 17 training records: the two ranks get 9 and 8, i.e. 3 and 2 batches of 4 (uneven inputs).
    train = records_as_lines([make_record(i, vocab) for i in range(17)]) + ["{broken"]
    val = records_as_lines([make_record(100 + i, vocab) for i in range(7)]) + ["{broken"]
    flags = write_archive(str(tmp_path / "d.zip"), train, val)
    argv = tiny_run_flags(tmp_path, model_dir, flags, **{"--epochs": 2, "--eval_batch_size": 2, "--num_beams": 1,
                                                         "--alpha": 0.5})
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": ROOT}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           os.path.join(ROOT, "script.py"), *argv], env=env, capture_output=True, text=True,
                          timeout=600, cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "x 2 processes: 8 records per step" in proc.stdout
    out = tmp_path / "out"
    summary = json.loads((out / schema.SUMMARY_FILENAME).read_text())
    metrics = summary[schema.FINAL_EVALUATION_METRICS]
    assert metrics["num_eval_samples"] == 7
    assert summary[schema.DATA_COUNTS][schema.DATA_COUNTS_TRAINING]["records_used"] == 17
    assert summary[schema.DATA_COUNTS][schema.DATA_COUNTS_TRAINING]["skipped_by_reason"] == {"invalid_json": 1}
    assert len((out / schema.METRICS_FILENAME).read_text().splitlines()) == 2  # written once, by rank 0
    # predictions.jsonl: every validation record once, in file order, averaging to the summary's values.
    check_predictions_match_summary(out, [make_record(100 + i, vocab)["original_target"] for i in range(7)])
    assert not [name for name in os.listdir(out) if name.startswith(".tmp_")]

    # The saved model evaluated in this one process gives the same metrics.
    torch.set_num_threads(1)
    tokenizer = AutoTokenizer.from_pretrained(out / schema.FINAL_MODEL_DIRNAME)
    model = AutoModelForSeq2SeqLM.from_pretrained(out / schema.FINAL_MODEL_DIRNAME)
    stream = DistillationStream(ArchiveSpec(str(tmp_path / "d.zip"), flags["--val_outer_zip_internal_path"],
                                            flags["--val_inner_zip_jsonl_filename"]),
                                InputEncoder(tokenizer, 64, 32), batch_size=2, need_logits=True)
    single = evaluate(model, tokenizer, make_loader(stream, 0, False), len(stream), DistillationLoss(2.0, 0.5),
                      torch.device("cpu"), num_beams=1, max_target_length=32, show_example=False).metrics
    for key in ("avg_inference_time_per_sample_ms",):
        single.pop(key), metrics.pop(key)
    for key, value in single.items():
        if key in ("avg_loss", "avg_hard_loss", "avg_soft_loss"):
            assert metrics[key] == pytest.approx(value, rel=1e-5), key
        else:
            assert metrics[key] == value, key
