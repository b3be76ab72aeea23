"""Hugging Face model cards (README.md with YAML metadata) for the students a run saves."""

from __future__ import annotations

import json
import os

from ..core.schema import (
    ACCURACY,
    ARGS,
    BEST_MODEL_DIRNAME,
    CONFIDENCE_INTERVALS,
    DATA_COUNTS,
    EVAL_RESULTS_BEST_FILENAME,
    F1,
    FINAL_EVALUATION_METRICS,
    FINAL_MODEL_DIRNAME,
    MODEL_CARD_FILENAME,
    NUM_EVAL_SAMPLES,
    S_VS_GT,
    S_VS_GT_SCRIPT1,
    S_VS_T,
    S_VS_T_CORRECTED,
    SIMILARITY_AVG,
    STUDENT_MODEL_NAME,
    STUDENT_MODEL_SIZE_MB,
    T_VS_GT,
    T_VS_GT_SCRIPT1,
    TEACHER_MODEL_NAME,
    TEACHER_MODEL_SIZE_MB,
    TRAINING_RECORDS_IN_FILE,
    VALIDATION_RECORDS_IN_FILE,
    avg,
    metric_key,
    strict_key,
)
from .summary import write_text_atomic

TAGS = ("t5", "knowledge-distillation", "code", "java", "junit", "assertion-generation")
CARD_FLAGS = ("distillation_data_path", "epochs", "batch_size", "learning_rate", "alpha_kl_loss_weight", "temperature",
              "student_max_src_length", "student_max_tgt_length", "num_beams", "seed", "precision", "divergence",
              "teacher_source", "lmbda", "student_sampling_temperature", "hidden_state_weight")
# (label, student-vs-truth key, teacher-vs-truth key, student-vs-teacher key)
ROWS = [(name, metric_key(metric, S_VS_GT_SCRIPT1), metric_key(metric, T_VS_GT_SCRIPT1),
         metric_key(metric, S_VS_T_CORRECTED)) for name, metric in
        (("accuracy", ACCURACY), ("F1", F1), ("similarity", SIMILARITY_AVG))]
ROWS.append(("strict exact match", avg(strict_key(S_VS_GT)), avg(strict_key(T_VS_GT)), avg(strict_key(S_VS_T))))


def _hub_id(name) -> str | None:
    """A Hugging Face id ('owner/name'), None for a local path or nothing."""
    if not isinstance(name, str) or os.path.exists(name) or name.count("/") != 1 or name.startswith((".", "/")):
        return None
    return name


def _value(metrics: dict, intervals: dict | None, key: str) -> str:
    """'0.4123 [0.3871, 0.4390]' (the value and its 95% interval when known), or 'n/a'."""
    value = metrics.get(key)
    if not isinstance(value, (int, float)):
        return "n/a"
    interval = (intervals or {}).get(key)
    return f"{value:.4f} [{interval[0]:.4f}, {interval[1]:.4f}]" if interval else f"{value:.4f}"


def model_card(summary: dict, metrics: dict, which: str, with_intervals: bool) -> str:
    """The README.md of a saved student: YAML metadata, data, flags, metrics with intervals beside the teacher's."""
    flags = summary.get(ARGS, {})
    intervals = summary.get(CONFIDENCE_INTERVALS) if with_intervals else None
    base = _hub_id(summary.get(STUDENT_MODEL_NAME))
    yaml = ["---", "library_name: transformers"] + ([f"base_model: {base}"] if base else [])
    yaml += ["pipeline_tag: text2text-generation", "tags:"] + [f"- {tag}" for tag in TAGS]
    yaml += ["metrics:", "- accuracy", "- f1", "model-index:", f"- name: {which}", "  results:",
             "  - task:", "      type: text2text-generation", "      name: JUnit assertion generation",
             "    dataset:", f"      name: {json.dumps(os.path.basename(str(flags.get('distillation_data_path', ''))))}",
             "      type: custom", "    metrics:"]
    for label, student_key, _, _ in ROWS:
        if isinstance(metrics.get(student_key), (int, float)):
            yaml += [f"    - type: {label.replace(' ', '_').lower()}", f"      value: {metrics[student_key]:.4f}",
                     f"      name: {label} (student vs ground truth)"]
    yaml.append("---")
    counts = summary.get(DATA_COUNTS, {})
    lines = [f"# {which}: a distilled assertion-generation student", "",
             "A T5 student distilled from a teacher's precomputed logits with assertdistill "
             "(the thesis \"Tiny but Mighty\"). It writes the JUnit assertions of a test method whose assertion "
             "lines are `// <ASSERTION_PLACEHOLDER>`, given the focal class; use it with", "",
             "```", f"python generate_assertions.py --model_dir {which} path/to/FooTest.java", "```", "",
             "## Models", "", f"- student: `{summary.get(STUDENT_MODEL_NAME)}` ({summary.get(STUDENT_MODEL_SIZE_MB)} MB)",
             f"- teacher: `{summary.get(TEACHER_MODEL_NAME)}` ({summary.get(TEACHER_MODEL_SIZE_MB)} MB)", "",
             "## Data", "", f"- archive: `{flags.get('distillation_data_path')}`",
             f"- records: {counts.get(TRAINING_RECORDS_IN_FILE, 'n/a')} training, "
             f"{counts.get(VALIDATION_RECORDS_IN_FILE, 'n/a')} validation; evaluated on "
             f"{metrics.get(NUM_EVAL_SAMPLES, 'n/a')}", "", "## Flags", "", "| flag | value |", "|---|---|"]
    lines += [f"| `--{name}` | `{flags[name]}` |" for name in CARD_FLAGS if name in flags]
    lines += ["", "## Metrics", "",
              ("Values with their 95% percentile-bootstrap interval over records. " if intervals else
               "Intervals are in the run's distillation_summary.json for the final evaluation only. ")
              + "Accuracy, F1 and similarity are the thesis's scores; the teacher's are its own predictions "
                "against the same ground truth.", "",
              "| metric | student vs ground truth | teacher vs ground truth | student vs teacher |", "|---|---|---|---|"]
    for label, student_key, teacher_key, pair_key in ROWS:
        lines.append(f"| {label} | {_value(metrics, intervals, student_key)} | {_value(metrics, intervals, teacher_key)}"
                     f" | {_value(metrics, intervals, pair_key)} |")
    return "\n".join(yaml + [""] + lines) + "\n"


def write_model_cards(output_dir: str, summary: dict) -> list[str]:
    """README.md into final_student_model/ and (when saved) best_student_model/; returns the paths written."""
    written = []
    final_dir = os.path.join(output_dir, FINAL_MODEL_DIRNAME)
    if os.path.isdir(final_dir):
        path = os.path.join(final_dir, MODEL_CARD_FILENAME)
        write_text_atomic(path, model_card(summary, summary.get(FINAL_EVALUATION_METRICS) or {}, FINAL_MODEL_DIRNAME,
                                           True))
        written.append(path)
    best_dir = os.path.join(output_dir, BEST_MODEL_DIRNAME)
    results_path = os.path.join(best_dir, EVAL_RESULTS_BEST_FILENAME)
    if os.path.isfile(results_path):
        with open(results_path, encoding="utf-8") as stream:
            best = json.load(stream)
        same = best == summary.get(FINAL_EVALUATION_METRICS)  # the best epoch is the last: its intervals apply
        path = os.path.join(best_dir, MODEL_CARD_FILENAME)
        write_text_atomic(path, model_card(summary, best, BEST_MODEL_DIRNAME, same))
        written.append(path)
    return written
