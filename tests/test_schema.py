"""schema.py is the one place that spells output file names and summary keys, and it spells them as the thesis."""

import ast
import re
from pathlib import Path

import pytest

from assertdistill.core import schema

ROOT = Path(__file__).resolve().parents[1]
# The package and the top-level scripts; the tests may spell names (thesis-compatibility tests must).
SCANNED = sorted([*ROOT.glob("assertdistill/**/*.py"), *ROOT.glob("*.py"), *ROOT.glob("benchmarks/*.py")])
FILE_NAMES = (schema.SUMMARY_FILENAME, schema.METRICS_FILENAME, schema.PREDICTIONS_FILENAME,
              schema.FINAL_MODEL_DIRNAME, schema.TRAINING_ARGS_FINAL_FILENAME, schema.BEST_MODEL_DIRNAME,
              schema.EVAL_RESULTS_BEST_FILENAME, schema.TRAINING_ARGS_BEST_FILENAME, schema.CHECKPOINTS_DIRNAME,
              schema.LOCK_FILENAME, schema.SWEEP_CSV_FILENAME, schema.SWEEP_MARKDOWN_FILENAME,
              schema.COMPARISONS_FILENAME)
# Spellings that also name something else, so a literal of them elsewhere is not a second definition.
SHARED = {
    schema.ARGS: "also the teacher-logits header's and a checkpoint's record of the flags",
    schema.STUDENT_MODEL_NAME: "also a flag's name (argparse dest)",
    schema.TEACHER_MODEL_NAME: "also a flag's name (argparse dest)",
}
ALLOWED = {("config.py", schema.CHECKPOINTS_DIRNAME): "the title of the --help group of the checkpoint flags"}


def string_literals(path: Path):
    """(line, text, inside an f-string) of every string constant in a file except docstrings."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                docstrings.add(id(first.value))
    in_fstring = {id(part) for node in ast.walk(tree) if isinstance(node, ast.JoinedStr) for part in node.values}
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            yield node.lineno, node.value, id(node) in in_fstring


def test_names_are_spelled_only_in_schema():
    """A summary key or output file name written as a literal outside schema.py is a second definition."""
    names = [key for key in schema.SUMMARY_KEYS if key not in SHARED] + list(FILE_NAMES)
    found = []
    for path in SCANNED:
        if path.name == "schema.py":
            continue
        for line, text, in_fstring in string_literals(path):
            for name in names:
                spelled = text == name or (in_fstring and any(mark in name for mark in "._")  # not a plain word
                                           and re.search(rf"(?<![\w.]){re.escape(name)}(?!\w)", text))
                if spelled and (path.name, name) not in ALLOWED:
                    found.append(f"{path.relative_to(ROOT)}:{line}: {name!r}")
    assert found == [], "use the assertdistill.core.schema name instead:\n" + "\n".join(found)


def test_the_scan_finds_a_literal(tmp_path):
    """The scan above sees plain literals and f-string parts, and skips docstrings."""
    source = tmp_path / "example.py"
    source.write_text('"""Writes distillation_summary.json."""\nA = "training_duration_seconds"\n'
                      'B = f"{A}/metrics.jsonl"\nC = "see metrics.jsonl"\n')
    literals = list(string_literals(source))
    assert (2, "training_duration_seconds", False) in literals and (3, "/metrics.jsonl", True) in literals
    assert all("distillation_summary" not in text for _, text, _ in literals)


# The on-disk spellings: users' summaries, the thesis's graph scripts and sweep.sh depend on them.
THESIS_SPELLINGS = {
    "SUMMARY_FILENAME": "distillation_summary.json", "METRICS_FILENAME": "metrics.jsonl",
    "PREDICTIONS_FILENAME": "predictions.jsonl", "FINAL_MODEL_DIRNAME": "final_student_model",
    "BEST_MODEL_DIRNAME": "best_student_model", "TRAINING_ARGS_FINAL_FILENAME": "training_args_final.json",
    "EVAL_RESULTS_BEST_FILENAME": "eval_results_best.json", "TRAINING_ARGS_BEST_FILENAME": "training_args_best.json",
    "CHECKPOINTS_DIRNAME": "checkpoints", "LOCK_FILENAME": ".run.lock",
    "SUMMARY_KEYS": ("args", "epochs_trained", "training_duration_seconds", "student_model_name",
                     "student_model_size_mb", "teacher_model_name", "teacher_model_size_mb",
                     "compression_ratio_model_size", "final_evaluation_metrics", "training_history", "data_counts",
                     "teacher_vs_ground_truth_metrics", "best_model_metric_value", "confidence_intervals",
                     "environment"),
    "ARG_ALPHA": "alpha_kl_loss_weight", "ARG_TEMPERATURE": "temperature", "ARG_SEED": "seed",
    "AVG_LOSS": "avg_loss", "AVG_HARD_LOSS": "avg_hard_loss", "AVG_SOFT_LOSS": "avg_soft_loss",
    "AVG_INFERENCE_TIME_PER_SAMPLE_MS": "avg_inference_time_per_sample_ms", "NUM_EVAL_SAMPLES": "num_eval_samples",
    "NUM_EVAL_SAMPLES_WITH_TEACHER_PREDICTION": "num_eval_samples_with_teacher_prediction",
    "STUDENT_SHARE_OF_TEACHER_ACCURACY": "student_share_of_teacher_accuracy",
    "ROW_KEYS": ("index", "line_number", "ground_truth", "teacher_prediction", "teacher_prediction_script1",
                 "student_prediction"),
    "RECORD_METRICS": [f"{metric}_{suffix}" for suffix in ("s_vs_t_script1", "s_vs_gt_script1", "s_vs_t_corrected",
                                                          "t_vs_gt_script1")
                       for metric in ("precision", "recall", "f1", "accuracy", "similarity_avg")]
                      + ["strict_exact_match_s_vs_gt", "strict_exact_match_s_vs_t", "strict_exact_match_t_vs_gt"],
    "BEST_MODEL_METRICS": ["avg_f1_s_vs_t_script1", "avg_accuracy_s_vs_t_script1", "avg_similarity_avg_s_vs_t_script1",
                           "avg_f1_s_vs_gt_script1", "avg_accuracy_s_vs_gt_script1",
                           "avg_similarity_avg_s_vs_gt_script1", "avg_loss", "avg_precision_s_vs_t_corrected",
                           "avg_recall_s_vs_t_corrected", "avg_f1_s_vs_t_corrected", "avg_accuracy_s_vs_t_corrected",
                           "avg_similarity_avg_s_vs_t_corrected", "avg_strict_exact_match_s_vs_gt",
                           "avg_strict_exact_match_s_vs_t"],
    "DEFAULT_BEST_MODEL_METRIC": "avg_f1_s_vs_gt_script1",
    "HISTORY_EPOCH": "epoch", "HISTORY_GLOBAL_STEP": "global_step", "HISTORY_TRAIN": "train", "HISTORY_EVAL": "eval",
    "HISTORY_ELAPSED_SECONDS": "elapsed_seconds", "TRAIN_LOSS": "loss",
}


@pytest.mark.parametrize("name", sorted(THESIS_SPELLINGS))
def test_spelled_as_the_thesis(name):
    assert getattr(schema, name) == THESIS_SPELLINGS[name]


def test_composed_names():
    assert schema.metric_key(schema.F1, schema.S_VS_GT_SCRIPT1) == "avg_f1_s_vs_gt_script1"
    assert schema.avg(schema.strict_key(schema.T_VS_GT)) == "avg_strict_exact_match_t_vs_gt"
    assert schema.unaveraged("avg_f1_s_vs_gt_script1") == "f1_s_vs_gt_script1"
    assert schema.thesis_figure_filename("alpha", schema.THESIS_FIGURES[2], "png") == "alpha_vs_loss.png"
    assert schema.heatmap_filename("avg_loss", "pdf") == "heatmap_avg_loss.pdf"
