"""One distillation run, from parsed arguments to distillation_summary.json."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import random
import shutil
import time

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from transformers import get_linear_schedule_with_warmup

from .allocator import keep_freed_memory
from .archive import DataError
from .checkpoint import (CHECKPOINTS_DIRNAME, CheckpointError, checkpoints_in, load_checkpoint, resolve_checkpoint,
                         rng_state, save_checkpoint, set_rng_state)
from .codec import CodecError
from .dataset import ArchiveSpec, DistillationStream
from .datastats import DataStats
from .distributed import DistributedContext, init_distributed, shutdown_distributed
from .encoding import InputEncoder
from .errors import ModelLoadError
from .locking import output_dir_lock
from .loss import DistillationLoss
from .models import (configure_training_kernels, load_student, load_tokenizer, model_size_mb, pick_device,
                     teacher_size_mb)
from .schema import (ACCURACY, AVG_HARD_LOSS, AVG_LOSS, AVG_SOFT_LOSS, BEST_MODEL_DIRNAME, BEST_MODEL_METRIC_VALUE,
                     CONFIDENCE_INTERVALS, DATA_COUNTS, DATA_COUNTS_TRAINING, DATA_COUNTS_VALIDATION, ENVIRONMENT,
                     EVAL_RESULTS_BEST_FILENAME, F1, FINAL_MODEL_DIRNAME, HISTORY_ELAPSED_SECONDS, HISTORY_EPOCH,
                     HISTORY_EVAL, HISTORY_GLOBAL_STEP, HISTORY_TRAIN, LOWER_IS_BETTER, METRICS_FILENAME,
                     NUM_EVAL_SAMPLES, PREDICTIONS_FILENAME, RECORD_METRICS, S_VS_GT, S_VS_GT_SCRIPT1, S_VS_T,
                     S_VS_T_CORRECTED, S_VS_T_SCRIPT1, SIMILARITY_AVG, STUDENT_SHARE_OF_TEACHER_ACCURACY,
                     SUMMARY_FILENAME, T_VS_GT, T_VS_GT_SCRIPT1, TEACHER_VS_GROUND_TRUTH_METRICS, TRAIN_HARD_LOSS,
                     TRAIN_LEARNING_RATE, TRAIN_LOSS, TRAIN_OPTIMIZER_STEPS, TRAIN_SKIPPED_NONFINITE_STEPS,
                     TRAIN_SOFT_LOSS, TRAINING_ARGS_BEST_FILENAME, TRAINING_ARGS_FINAL_FILENAME, TRAINING_HISTORY,
                     TRAINING_RECORDS_IN_FILE, VALIDATION_RECORDS_IN_FILE, avg, metric_key, strict_key)
from .summary import (append_metrics_line, build_summary, confidence_intervals, environment_info, to_json_compatible,
                      write_json_atomic, write_predictions, write_text_atomic)
from .training import EpochCounters, EpochResult, Trainer, TrainingError, evaluate, make_loader, steps_per_epoch

USER_ERRORS = (DataError, CodecError, ModelLoadError, TrainingError, CheckpointError, OSError)
# Flags that must match for a checkpoint to be resumed exactly.
RESUME_MUST_MATCH = ("distillation_data_path", "train_outer_zip_internal_path", "train_inner_zip_jsonl_filename",
                     "student_model_name", "batch_size", "gradient_accumulation_steps", "epochs", "seed",
                     "alpha_kl_loss_weight", "temperature", "learning_rate", "shuffle_buffer_size",
                     "num_dataloader_workers", "max_train_samples")


class OutputDirError(OSError):
    """The output directory holds a finished run or cannot be written."""


def make_optimizer(model: torch.nn.Module, learning_rate: float, weight_decay: float,
                   device: torch.device) -> torch.optim.Optimizer:
    """AdamW, fused on CUDA and CPU (one kernel per step instead of a dozen passes per parameter)."""
    fused = device.type in ("cuda", "cpu")
    return torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=weight_decay, fused=fused)


def set_seed(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def prepare_output_dir(output_dir: str, overwrite: bool, resuming: bool = False) -> None:
    """Create the output dir; refuse one that holds a finished run or checkpoints unless asked to reuse it."""
    summary_path = os.path.join(output_dir, SUMMARY_FILENAME)
    if os.path.exists(summary_path) and not overwrite:
        raise OutputDirError(f"{output_dir} already holds a finished run ({SUMMARY_FILENAME}); choose another "
                             f"--output_dir or pass --overwrite_output_dir")
    if checkpoints_in(output_dir) and not (overwrite or resuming):
        raise OutputDirError(f"{output_dir} holds checkpoints of an unfinished run; pass "
                             f"--resume_from_checkpoint latest to continue it, or --overwrite_output_dir")
    try:
        os.makedirs(output_dir, exist_ok=True)
    except OSError as error:
        raise OutputDirError(f"cannot create output dir {output_dir}: {error.strerror}") from None
    if not os.access(output_dir, os.W_OK):
        raise OutputDirError(f"output dir {output_dir} is not writable")
    if overwrite and not resuming:
        shutil.rmtree(os.path.join(output_dir, CHECKPOINTS_DIRNAME), ignore_errors=True)
        for stale in (METRICS_FILENAME, PREDICTIONS_FILENAME):
            if os.path.exists(os.path.join(output_dir, stale)):
                os.unlink(os.path.join(output_dir, stale))


def save_model_atomic(model, tokenizer, path: str, extra_files: dict[str, dict]) -> None:
    """save_pretrained into a temporary sibling directory, then swap it into place."""
    temporary = path + ".tmp"
    shutil.rmtree(temporary, ignore_errors=True)
    model.save_pretrained(temporary)
    tokenizer.save_pretrained(temporary)
    for name, content in extra_files.items():
        with open(os.path.join(temporary, name), "w", encoding="utf-8") as stream:
            json.dump(to_json_compatible(content), stream, indent=2)
    if os.path.exists(path):
        shutil.rmtree(path)
    os.replace(temporary, path)


def is_better(metric: str, value: float, best: float | None) -> bool:
    """Lower is better for avg_loss, higher for every other metric."""
    if best is None:
        return True
    return value < best if metric in LOWER_IS_BETTER else value > best


EVAL_LINES = (  # (label, key suffix of the script1-style metrics, suffix of the strict match or None)
    ("student vs teacher, thesis   ", S_VS_T_SCRIPT1, None),
    ("student vs teacher, corrected", S_VS_T_CORRECTED, S_VS_T),
    ("student vs truth             ", S_VS_GT_SCRIPT1, S_VS_GT),
    ("teacher vs truth             ", T_VS_GT_SCRIPT1, T_VS_GT),
)


def _print_eval(prefix: str, results: dict) -> None:
    print(f"{prefix} loss {results[AVG_LOSS]:.4f} (hard {results[AVG_HARD_LOSS]:.4f}, "
          f"soft {results[AVG_SOFT_LOSS]:.4f}) on {results[NUM_EVAL_SAMPLES]} records")
    if not results[NUM_EVAL_SAMPLES]:
        return
    for label, suffix, strict in EVAL_LINES:
        print(f"  {label}: accuracy {results[metric_key(ACCURACY, suffix)]:.4f}  "
              f"F1 {results[metric_key(F1, suffix)]:.4f}  similarity {results[metric_key(SIMILARITY_AVG, suffix)]:.4f}"
              + (f"  strict match {results[avg(strict_key(strict))]:.4f}" if strict else ""))
    print("  (thesis: the teacher's text as the thesis read it, str() of its list of lines; "
          "corrected: its lines joined)")


def run_distillation(args: argparse.Namespace) -> dict:
    """Train, evaluate each epoch, save the student and write the summary; returns the summary."""
    context = init_distributed()
    try:
        with output_dir_lock(args.output_dir, context):  # before prepare_output_dir's checks: no two runs pass them
            return _run(args, context)
    finally:
        shutdown_distributed(context)


def _run(args: argparse.Namespace, context: DistributedContext) -> dict:
    started = time.time()
    keep_freed_memory()
    set_seed(args.seed)
    device = pick_device()
    if not context.is_main:  # one process reports and writes; the others only compute
        os.environ["TQDM_DISABLE"] = "1"
        sys.stdout = open(os.devnull, "w")
    resume_from = getattr(args, "resume_from_checkpoint", None)
    if context.is_main:
        prepare_output_dir(args.output_dir, args.overwrite_output_dir, resuming=resume_from is not None)
    context.barrier()
    checkpoint = None
    if resume_from is not None:
        path = resolve_checkpoint(resume_from, args.output_dir)
        checkpoint = load_checkpoint(path)
        mismatched = [name for name in RESUME_MUST_MATCH
                      if checkpoint["args"].get(name) != getattr(args, name, None)]
        if mismatched:
            raise CheckpointError(f"{path} was made with other values of --{', --'.join(mismatched)}; "
                                  f"resume with the same flags")
        started = time.time() - checkpoint["elapsed_seconds"]
        state = "finished" if checkpoint["epoch_finished"] else "in progress"
        print(f"Resuming from {path} (epoch {checkpoint['epoch'] + 1} {state}, "
              f"global step {checkpoint['global_step']})")
    print(f"Device: {device}")

    tokenizer = load_tokenizer(args.tokenizer_name or args.student_model_name)
    student = load_student(args.student_model_name, args.student_from_scratch).to(device)
    student_size = model_size_mb(student)
    teacher_size = teacher_size_mb(args.teacher_model_name)
    print(f"Student: {args.student_model_name} ({student_size:.2f} MB, vocabulary {student.config.vocab_size})")
    print(f"Teacher: {args.teacher_model_name} "
          f"({f'{teacher_size:.2f} MB' if teacher_size else 'size N/A'})")

    encoder = InputEncoder(tokenizer, args.student_max_src_length, args.student_max_tgt_length)
    need_logits = args.alpha_kl_loss_weight > 0
    stream_options = dict(encoder=encoder, need_logits=need_logits, focal_field=args.focal_content_field_name,
                          seed=args.seed, strict=args.strict_data, rank=context.rank,
                          require_teacher=not args.allow_records_without_teacher,
                          world_size=context.world_size)
    train_stream = DistillationStream(
        ArchiveSpec(args.distillation_data_path, args.train_outer_zip_internal_path,
                    args.train_inner_zip_jsonl_filename, args.train_jsonl_is_gzipped, args.max_record_bytes),
        batch_size=args.batch_size, shuffle_buffer_size=args.shuffle_buffer_size,
        max_records=args.max_train_samples, **stream_options)
    val_stream = DistillationStream(
        ArchiveSpec(args.distillation_data_path, args.val_outer_zip_internal_path,
                    args.val_inner_zip_jsonl_filename, args.val_jsonl_is_gzipped, args.max_record_bytes),
        batch_size=args.eval_batch_size, max_records=args.max_eval_samples, **stream_options)
    try:
        return _train_and_report(args, started, device, tokenizer, student, student_size, teacher_size,
                                 train_stream, val_stream, checkpoint, context)
    finally:
        train_stream.close()
        val_stream.close()


def _train_and_report(args, started, device, tokenizer, student, student_size, teacher_size,
                      train_stream: DistillationStream, val_stream: DistillationStream,
                      checkpoint: dict | None, context: DistributedContext) -> dict:
    print(f"Data: {len(train_stream)} training and {len(val_stream)} validation records")
    if len(train_stream) == 0:
        raise DataError(f"the training data {train_stream.spec.label}/{train_stream.spec.jsonl_name} holds no records")
    pin_memory = device.type == "cuda"
    train_loader = make_loader(train_stream, args.num_dataloader_workers, pin_memory)
    val_loader = make_loader(val_stream, args.num_dataloader_workers, pin_memory)

    loss_fn = DistillationLoss(args.temperature, args.alpha_kl_loss_weight)
    optimizer = make_optimizer(student, args.learning_rate, args.weight_decay, device)
    records_per_process = math.ceil(len(train_stream) / context.world_size)
    total_steps = steps_per_epoch(records_per_process, args.batch_size, args.gradient_accumulation_steps) * args.epochs
    scheduler = get_linear_schedule_with_warmup(optimizer, int(args.warmup_steps_ratio * total_steps), total_steps)
    compiling = getattr(args, "compile", False)
    kernels = configure_training_kernels(student, getattr(args, "attention", "auto"), device, compiling,
                                         getattr(args, "gradient_checkpointing", False))
    print(f"Kernels: {kernels}")
    # Only the training forward is compiled: generation and saving use the plain module.
    train_model = torch.compile(student, dynamic=True) if compiling else student
    if context.enabled:
        train_model = DistributedDataParallel(train_model, device_ids=[context.local_rank]
                                              if device.type == "cuda" else None)
    trainer = Trainer(train_model, loss_fn, optimizer, scheduler, device, args.gradient_accumulation_steps,
                      args.max_grad_norm, args.precision, args.log_steps)
    print(f"Training {args.epochs} epochs, {total_steps} optimizer steps, alpha {args.alpha_kl_loss_weight}, "
          f"T {args.temperature}, effective batch {args.batch_size * args.gradient_accumulation_steps} "
          f"({args.batch_size} x {args.gradient_accumulation_steps} accumulation steps x {context.world_size} "
          f"processes: {args.batch_size * args.gradient_accumulation_steps * context.world_size} records per step)")

    history, best_value, final_results, final_records = [], None, {}, []
    train_data, eval_data = DataStats(), DataStats()
    start_epoch, resume_counters, rng_after_skip = 0, None, None
    if checkpoint is not None:
        student.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["scheduler"])
        trainer.scaler.load_state_dict(checkpoint["scaler"])
        trainer.global_step = checkpoint["global_step"]
        history, best_value, final_results = checkpoint["history"], checkpoint["best_value"], checkpoint["final_results"]
        final_records = checkpoint.get("final_records", [])  # absent in checkpoints of older versions
        train_data.merge(DataStats(**checkpoint["train_data"]))
        eval_data.merge(DataStats(**checkpoint["eval_data"]))
        start_epoch = checkpoint["epoch"]
        if checkpoint["epoch_finished"]:
            start_epoch += 1
            set_rng_state(checkpoint["rng"])
        else:
            resume_counters, rng_after_skip = EpochCounters(**checkpoint["counters"]), checkpoint["rng"]
        # metrics.jsonl holds exactly the epochs the checkpoint knows of, even if more were appended after it.
        write_text_atomic(os.path.join(args.output_dir, METRICS_FILENAME),
                          "".join(json.dumps(to_json_compatible(entry)) + "\n" for entry in history))

    def save_state(epoch: int, epoch_finished: bool) -> None:
        if not context.is_main:
            return
        state = {"model": student.state_dict(), "optimizer": optimizer.state_dict(),
                 "scheduler": scheduler.state_dict(), "scaler": trainer.scaler.state_dict(),
                 "rng": rng_state(), "global_step": trainer.global_step, "epoch": epoch,
                 "epoch_finished": epoch_finished, "counters": vars(trainer.counters).copy(),
                 "history": history, "best_value": best_value, "final_results": final_results,
                 "final_records": final_records,
                 "train_data": vars(train_data).copy(), "eval_data": vars(eval_data).copy(),
                 "elapsed_seconds": time.time() - started, "args": vars(args).copy()}
        path = save_checkpoint(args.output_dir, state, args.save_total_limit)
        print(f"  checkpoint: {path}")

    def on_step(epoch: int):
        def save_every_n_steps(trainer_: Trainer) -> None:
            if args.save_steps and trainer_.global_step % args.save_steps == 0:
                save_state(epoch, epoch_finished=False)
        return save_every_n_steps

    for epoch in range(start_epoch, args.epochs):
        train_stream.set_epoch(epoch)
        result = trainer.train_epoch(train_loader, len(train_stream), f"Epoch {epoch + 1}/{args.epochs}",
                                     resume_counters, rng_after_skip, on_step(epoch))
        resume_counters = rng_after_skip = None
        result = merge_epoch_results(result, trainer, context)
        print(f"Epoch {epoch + 1} train: loss {result.loss:.4f} (hard {result.hard_loss:.4f}, soft "
              f"{result.soft_loss:.4f}), LR {result.learning_rate:.2e}; data: {result.data.describe()}")
        if epoch == 0:
            train_data = result.data
        if result.data.used == 0:  # e.g. records without teacher text or logits (the thesis's validity rule)
            raise DataError(f"every training record was skipped ({result.data.describe()}); records need "
                            f"test_method_masked, a ground truth, the teacher's text and compressed_logits")
        entry = {HISTORY_EPOCH: epoch + 1, HISTORY_GLOBAL_STEP: trainer.global_step,
                 HISTORY_TRAIN: {TRAIN_LOSS: result.loss, TRAIN_HARD_LOSS: result.hard_loss,
                                 TRAIN_SOFT_LOSS: result.soft_loss, TRAIN_LEARNING_RATE: result.learning_rate,
                                 TRAIN_OPTIMIZER_STEPS: result.optimizer_steps,
                                 TRAIN_SKIPPED_NONFINITE_STEPS: result.skipped_nonfinite_steps}}
        if len(val_stream) > 0:
            evaluation = evaluate(student, tokenizer, val_loader, len(val_stream), loss_fn, device,
                                  args.num_beams, args.student_max_tgt_length, args.precision,
                                  show_example=context.is_main, gather=context.gather if context.enabled else None)
            final_results, eval_data, final_records = evaluation.metrics, evaluation.data, evaluation.records
            _print_eval(f"Epoch {epoch + 1} eval:", final_results)
            print(f"  validation data: {eval_data.describe()}")
            entry[HISTORY_EVAL] = final_results
            value = final_results.get(args.best_model_metric)
            if (args.save_best_model and context.is_main and value is not None
                    and is_better(args.best_model_metric, value, best_value)):
                best_value = value
                print(f"  new best {args.best_model_metric} = {value:.4f}: saving {BEST_MODEL_DIRNAME}/")
                save_model_atomic(student, tokenizer, os.path.join(args.output_dir, BEST_MODEL_DIRNAME),
                                  {EVAL_RESULTS_BEST_FILENAME: final_results, TRAINING_ARGS_BEST_FILENAME: vars(args)})
        entry[HISTORY_ELAPSED_SECONDS] = round(time.time() - started, 2)
        if context.is_main:
            append_metrics_line(args.output_dir, entry)
        history.append(entry)
        if args.save_steps:
            save_state(epoch, epoch_finished=True)

    training_seconds = time.time() - started
    if not context.is_main:
        context.barrier()  # wait until the main process has written everything
        return {}
    save_model_atomic(student, tokenizer, os.path.join(args.output_dir, FINAL_MODEL_DIRNAME),
                      {TRAINING_ARGS_FINAL_FILENAME: vars(args)})
    extras = {
        TRAINING_HISTORY: history,
        DATA_COUNTS: {DATA_COUNTS_TRAINING: train_data.as_dict(), DATA_COUNTS_VALIDATION: eval_data.as_dict(),
                      TRAINING_RECORDS_IN_FILE: len(train_stream), VALIDATION_RECORDS_IN_FILE: len(val_stream)},
        TEACHER_VS_GROUND_TRUTH_METRICS: {key: value for key, value in final_results.items() if T_VS_GT in key},
        BEST_MODEL_METRIC_VALUE: best_value,
        CONFIDENCE_INTERVALS: confidence_intervals(final_records, RECORD_METRICS),
        ENVIRONMENT: environment_info(str(device)),
    }
    summary = build_summary(to_json_compatible(vars(args)), final_results, args.epochs, training_seconds,
                            student_size, teacher_size, extras)
    summary_path = os.path.join(args.output_dir, SUMMARY_FILENAME)
    if final_results and len(final_records) == final_results[NUM_EVAL_SAMPLES]:
        write_predictions(args.output_dir, final_records)
    elif final_results:
        print(f"{PREDICTIONS_FILENAME} not written: the checkpoint this run resumed from predates it")
    write_json_atomic(summary_path, summary)
    if final_results and final_results[metric_key(ACCURACY, T_VS_GT_SCRIPT1)] is not None:
        share = final_results.get(STUDENT_SHARE_OF_TEACHER_ACCURACY)
        print(f"Final: student accuracy vs truth {final_results[metric_key(ACCURACY, S_VS_GT_SCRIPT1)]:.4f}, "
              f"teacher {final_results[metric_key(ACCURACY, T_VS_GT_SCRIPT1)]:.4f}"
              + (f" (student reaches {share:.1%} of the teacher)" if share is not None else ""))
    print(f"Done in {training_seconds:.1f}s; summary: {summary_path}")
    context.barrier()
    return summary


def merge_epoch_results(result: EpochResult, trainer: Trainer, context: DistributedContext) -> EpochResult:
    """One epoch's losses and data counts over every process (the result itself in one process)."""
    if not context.enabled:
        return result
    counters = context.gather((trainer.counters.loss_sums, trainer.counters.batches_trained,
                               trainer.counters.skipped_nonfinite, result.data))
    batches = sum(entry[1] for entry in counters)
    sums = np.sum([entry[0] for entry in counters], axis=0) / max(batches, 1)
    data = DataStats()
    for entry in counters:
        data.merge(entry[3])
    return EpochResult(float(sums[0]), float(sums[1]), float(sums[2]), result.learning_rate,
                       result.optimizer_steps, sum(entry[2] for entry in counters), data)
