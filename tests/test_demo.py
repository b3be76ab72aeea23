"""The embedded demo: `python script.py` with no data flags reads demo/ (shortened here)."""

import json
import os

import pytest

import script
from assertdistill.core import schema
from assertdistill.core.paths import DEMO

pytestmark = pytest.mark.skipif(not os.path.exists(DEMO.archive), reason="demo archive not built")


def test_demo_defaults_point_at_the_demo_and_a_short_run_works(tmp_path):
    args = script.parse_args([])
    assert args.distillation_data_path == DEMO.archive and args.student_model_name == DEMO.student
    assert args.teacher_model_name == DEMO.teacher  # the demo's models wherever script.py runs from
    with open(DEMO.run_defaults) as stream:
        for name, value in json.load(stream).items():
            if not name.startswith("_") and not name.endswith("_model_name"):  # _: a note
                assert getattr(args, name) == value
    argv = ["--output_dir", str(tmp_path / "out"), "--epochs", "1", "--max_train_samples", "16",
            "--max_eval_samples", "8", "--num_beams", "1"]
    assert script.main(argv) == 0
    summary = json.loads((tmp_path / "out" / schema.SUMMARY_FILENAME).read_text())
    metrics = summary[schema.FINAL_EVALUATION_METRICS]
    assert metrics["num_eval_samples"] == 8 and metrics["avg_soft_loss"] > 0
    assert metrics["avg_accuracy_t_vs_gt_script1"] is not None  # the demo carries teacher predictions
    assert summary[schema.TEACHER_MODEL_SIZE_MB] > summary[schema.STUDENT_MODEL_SIZE_MB]
