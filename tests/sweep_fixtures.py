"""Generated results folders for the graph-script tests: summaries, epoch logs, in-process CLI runs."""

import contextlib
import io
import json
from pathlib import Path

from assertdistill.analysis import results
from assertdistill.core import schema

THESIS_METRICS = [m.key for m in results.METRICS if m.required and m.key != schema.TRAINING_DURATION_SECONDS]
CORRECTED_METRICS = [m.key for m in results.METRICS if m.key.endswith("_corrected")]
TEACHER_ACCURACY = 0.8
THESIS_FIGURES = ("combined_metrics", "similarity", "loss", "inference_time")


def metric_values(alpha, temperature, seed, extras=True) -> dict:
    """Known, distinct final metrics for one run; extras are the non-thesis keys."""
    values = {key: 0.1 + 0.01 * i + 0.2 * alpha + 0.01 * temperature + 0.003 * seed ** 2
              for i, key in enumerate(THESIS_METRICS)}
    values["num_eval_samples"] = 100
    if extras:
        values["avg_accuracy_t_vs_gt_script1"] = TEACHER_ACCURACY
        values["avg_strict_exact_match_s_vs_gt"] = 0.05 * alpha + 0.001 * seed
        values["avg_strict_exact_match_s_vs_t"] = 0.07 * alpha + 0.002 * seed
        values["avg_strict_exact_match_t_vs_gt"] = 0.5
        values[schema.STUDENT_SHARE_OF_TEACHER_ACCURACY] = values["avg_accuracy_s_vs_gt_script1"] / TEACHER_ACCURACY
        values.update({key: 0.3 + 0.02 * i + 0.1 * alpha + 0.004 * seed for i, key in enumerate(CORRECTED_METRICS)})
        values["avg_parses_as_java_student"] = 0.6 + 0.1 * alpha
        values["avg_parses_as_java_teacher"] = 0.95
        values["avg_accuracy_r_vs_gt_script1"] = 0.11  # the retrieval baseline: a reference line
    return values


def summary(alpha, temperature, seed, extras=True, **args) -> dict:
    """A distillation_summary.json body with the thesis keys (plus our extras when asked, more args as given)."""
    return {
        schema.ARGS: {"alpha_kl_loss_weight": alpha, "temperature": temperature, "seed": seed, "epochs": 2, **args},
        schema.EPOCHS_TRAINED: 2, schema.TRAINING_DURATION_SECONDS: 100.0 + 10 * alpha + seed,
        schema.STUDENT_MODEL_NAME: "student", schema.STUDENT_MODEL_SIZE_MB: 230.1, schema.TEACHER_MODEL_NAME: "teacher",
        schema.TEACHER_MODEL_SIZE_MB: "N/A", schema.COMPRESSION_RATIO_MODEL_SIZE: "N/A",
        schema.FINAL_EVALUATION_METRICS: metric_values(alpha, temperature, seed, extras),
    }


def write_run(root: Path, name: str, body, epoch_log=None) -> Path:
    """Write <root>/<name>/distillation_summary.json (a dict as JSON, a str verbatim) and metrics.jsonl."""
    run_dir = root / name
    run_dir.mkdir(parents=True)
    text = body if isinstance(body, str) else json.dumps(body)
    (run_dir / schema.SUMMARY_FILENAME).write_text(text)
    if epoch_log is not None:
        (run_dir / schema.METRICS_FILENAME).write_text(epoch_log)
    return run_dir


def epoch_log(alpha, epochs=2) -> str:
    """A metrics.jsonl with one record per epoch, plus one broken line."""
    lines = [json.dumps({"epoch": e, "global_step": 10 * e, "train": {"loss": 2.0 / e},
                         "eval": {"avg_accuracy_s_vs_gt_script1": 0.2 * e + alpha}, "elapsed_seconds": e})
             for e in range(1, epochs + 1)]
    return "\n".join(lines + ["{broken"]) + "\n"


def write_flat(root: Path, name: str, body) -> Path:
    """Write <root>/<name> (any file name), a summary kept as a flat file as the thesis did."""
    root.mkdir(parents=True, exist_ok=True)
    (root / name).write_text(body if isinstance(body, str) else json.dumps(body))
    return root / name


def run_cli(module, argv):
    """Call module.main(argv) in-process; return (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = module.main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()
