"""Atomic JSON writing, the thesis summary, the per-epoch metrics log and the per-record predictions."""

from __future__ import annotations

import json
import os
import platform
import tempfile
from typing import Any

import numpy as np

from ..core.schema import (
    ARGS,
    BEST_MODEL_METRIC_VALUE,
    CI_CONFIDENCE,
    CI_METHOD,
    CI_RESAMPLES,
    CI_SEED,
    COMPRESSION_RATIO_MODEL_SIZE,
    CONFIDENCE_INTERVALS,
    DATA_COUNTS,
    DATA_COUNTS_TRAINING,
    DATA_COUNTS_VALIDATION,
    ENVIRONMENT,
    EPOCHS_TRAINED,
    FINAL_EVALUATION_METRICS,
    HISTORY_EPOCH,
    HISTORY_GLOBAL_STEP,
    HISTORY_TRAIN,
    METRICS_FILENAME,
    NOT_AVAILABLE,
    PREDICTIONS_FILENAME,
    STUDENT_MODEL_NAME,
    STUDENT_MODEL_SIZE_MB,
    T_VS_GT,
    TEACHER_MODEL_NAME,
    TEACHER_MODEL_SIZE_MB,
    TEACHER_VS_GROUND_TRUTH_METRICS,
    TRAIN_HARD_LOSS,
    TRAIN_LEARNING_RATE,
    TRAIN_LOSS,
    TRAIN_OPTIMIZER_STEPS,
    TRAIN_SKIPPED_NONFINITE_STEPS,
    TRAIN_SOFT_LOSS,
    TRAINING_DURATION_SECONDS,
    TRAINING_HISTORY,
    TRAINING_RECORDS_IN_FILE,
    VALIDATION_RECORDS_IN_FILE,
    avg,
)
from ..scoring.registry import record_metric_keys
from ..scoring.statistics import BOOTSTRAP_METHOD, DEFAULT_CONFIDENCE, DEFAULT_RESAMPLES, score_mean_ci


def to_json_compatible(value: Any) -> Any:
    """Numpy scalars/arrays and other non-JSON values turned into plain JSON values."""
    if isinstance(value, dict):
        return {str(key): to_json_compatible(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json_compatible(item) for item in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def new_file_mode() -> int:
    """The mode open() gives a new file: 0o666 less the process's umask (mkstemp's files are 0o600)."""
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


def write_text_atomic(path: str, text: str) -> None:
    """Write to a temporary file beside `path`, fsync, then rename into place (readable as open() would make it)."""
    directory = os.path.dirname(os.path.abspath(path))
    handle, temporary = tempfile.mkstemp(prefix=".tmp_", dir=directory)
    try:
        os.fchmod(handle, new_file_mode())
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException as error:
        if os.path.exists(temporary):
            os.unlink(temporary)
        if isinstance(error, OSError):  # e.g. disk full: name the file; the previous version stays in place
            raise OSError(error.errno, f"cannot write {path}: {error.strerror or error}") from None
        raise


def write_json_atomic(path: str, data: Any) -> None:
    """Atomically write `data` as indented JSON."""
    write_text_atomic(path, json.dumps(to_json_compatible(data), indent=2) + "\n")


def append_metrics_line(output_dir: str, entry: dict) -> None:
    """Append one JSON line to metrics.jsonl (the whole file is rewritten atomically)."""
    path = os.path.join(output_dir, METRICS_FILENAME)
    existing = ""
    if os.path.exists(path):
        with open(path, encoding="utf-8") as stream:
            existing = stream.read()
    write_text_atomic(path, existing + json.dumps(to_json_compatible(entry)) + "\n")


def history_entry(epoch: int, global_step: int, result, extras: dict | None = None) -> dict:
    """An epoch's metrics.jsonl entry, train part, from its training.EpochResult (epoch counted from 0).

    extras: more train keys (the optional losses' values).
    """
    return {HISTORY_EPOCH: epoch + 1, HISTORY_GLOBAL_STEP: global_step,
            HISTORY_TRAIN: {TRAIN_LOSS: result.loss, TRAIN_HARD_LOSS: result.hard_loss,
                            TRAIN_SOFT_LOSS: result.soft_loss, TRAIN_LEARNING_RATE: result.learning_rate,
                            TRAIN_OPTIMIZER_STEPS: result.optimizer_steps,
                            TRAIN_SKIPPED_NONFINITE_STEPS: result.skipped_nonfinite_steps, **(extras or {})}}


def write_predictions(output_dir: str, records: list[dict]) -> str:
    """Atomically write predictions.jsonl: one JSON object per evaluated record, in file order; returns its path."""
    path = os.path.join(output_dir, PREDICTIONS_FILENAME)
    write_text_atomic(path, "".join(json.dumps(to_json_compatible(record)) + "\n" for record in records))
    return path


def confidence_intervals(records: list[dict], names: list[str], seed: int = 0) -> dict | None:
    """Intervals of the means of per-record scores (statistics.score_mean_ci): {avg_<name>: [low, high]}, the method.

    None without records.
    """
    if not records:
        return None
    matrix = np.array([[record[name] for name in names] for record in records], dtype=np.float64)  # (N, M)
    low, high = score_mean_ci(matrix, DEFAULT_RESAMPLES, DEFAULT_CONFIDENCE, seed)
    return {CI_METHOD: BOOTSTRAP_METHOD, CI_CONFIDENCE: DEFAULT_CONFIDENCE, CI_RESAMPLES: DEFAULT_RESAMPLES,
            CI_SEED: seed, **{avg(name): [float(lo), float(hi)] for name, lo, hi in zip(names, low, high)}}


def cpu_name(cpuinfo_path: str = "/proc/cpuinfo") -> str:
    """The CPU's model name with its family and model numbers ("AMD EPYC (family 26, model 2)").

    The name alone can cover several generations (float results differ between them), the numbers tell them
    apart. Without the file (not Linux) or a model name in it: platform.processor(), else "unknown".
    """
    fields: dict[str, str] = {}
    try:
        with open(cpuinfo_path) as cpuinfo:
            for line in cpuinfo:
                if not line.strip():
                    break  # the first processor's block is enough
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        fields = {}  # no cpuinfo to read: the platform's name below
    name = fields.get("model name") or platform.processor() or "unknown"
    numbers = [f"{label} {fields[key]}" for key, label in (("cpu family", "family"), ("model", "model"))
               if key in fields]
    return f"{name} ({', '.join(numbers)})" if numbers else name


def environment_info(device: str) -> dict:
    """Device, CPU and library versions for the summary."""
    import torch
    import transformers

    return {"device": device, "python": platform.python_version(), "platform": platform.platform(),
            "torch": torch.__version__, "transformers": transformers.__version__, "numpy": np.__version__,
            "cpu": cpu_name(), "cpu_threads": torch.get_num_threads()}


def build_summary(args_dict: dict, final_metrics: dict, epochs_trained: int, training_seconds: float,
                  student_size_mb: float, teacher_size_mb: float | None, extras: dict) -> dict:
    """The thesis's summary keys, then what this suite adds (history, data counts, environment)."""
    has_teacher_size = teacher_size_mb is not None and teacher_size_mb > 0
    summary = {
        ARGS: args_dict,
        EPOCHS_TRAINED: epochs_trained,
        TRAINING_DURATION_SECONDS: round(training_seconds, 2),
        STUDENT_MODEL_NAME: args_dict.get(STUDENT_MODEL_NAME),  # the flag of the same name
        STUDENT_MODEL_SIZE_MB: round(student_size_mb, 2),
        TEACHER_MODEL_NAME: args_dict.get(TEACHER_MODEL_NAME),
        TEACHER_MODEL_SIZE_MB: round(teacher_size_mb, 2) if has_teacher_size else NOT_AVAILABLE,
        COMPRESSION_RATIO_MODEL_SIZE: (round(student_size_mb / teacher_size_mb, 4)
                                       if has_teacher_size and student_size_mb > 0 else NOT_AVAILABLE),
        FINAL_EVALUATION_METRICS: final_metrics,
    }
    summary.update(extras)
    return summary


def run_summary(state, training_seconds: float) -> dict:
    """A run's distillation_summary.json from its run.RunState: the thesis's layout, then history, data counts,
    intervals and environment."""
    config, final_results = state.config, state.final_results
    extras = {
        TRAINING_HISTORY: state.history,
        DATA_COUNTS: {DATA_COUNTS_TRAINING: state.train_data.as_dict(), DATA_COUNTS_VALIDATION: state.eval_data.as_dict(),
                      TRAINING_RECORDS_IN_FILE: len(state.train_stream), VALIDATION_RECORDS_IN_FILE: len(state.val_stream)},
        TEACHER_VS_GROUND_TRUTH_METRICS: {key: value for key, value in final_results.items() if T_VS_GT in key},
        BEST_MODEL_METRIC_VALUE: state.best_value,
        CONFIDENCE_INTERVALS: confidence_intervals(state.final_records, record_metric_keys(state.final_records)),
        ENVIRONMENT: environment_info(str(state.device)),
    }
    return build_summary(to_json_compatible(config.as_flags()), final_results, config.epochs, training_seconds,
                         state.student_size, state.teacher_size, extras)
