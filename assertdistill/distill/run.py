"""One distillation run, from a RunConfig to distillation_summary.json: set-up, resume, epochs, final report."""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils.data import DataLoader
from transformers import get_linear_schedule_with_warmup

from ..codec.hexframes import CodecError
from ..core.errors import ModelLoadError
from ..core.schema import (
    ACCURACY,
    AVG_HARD_LOSS,
    AVG_LOSS,
    AVG_SOFT_LOSS,
    BEST_MODEL_DIRNAME,
    CHECKPOINTS_DIRNAME,
    EVAL_RESULTS_BEST_FILENAME,
    F1,
    FINAL_MODEL_DIRNAME,
    HISTORY_ELAPSED_SECONDS,
    HISTORY_EVAL,
    LOWER_IS_BETTER,
    METRICS_FILENAME,
    NUM_EVAL_SAMPLES,
    PREDICTIONS_FILENAME,
    R_VS_GT,
    RETRIEVAL_INDEX_DIRNAME,
    S_VS_GT,
    S_VS_GT_SCRIPT1,
    S_VS_T,
    S_VS_T_CORRECTED,
    S_VS_T_SCRIPT1,
    SIMILARITY_AVG,
    SUMMARY_FILENAME,
    T_VS_GT,
    T_VS_GT_SCRIPT1,
    TEACHER_STORED_VS_ONLINE_KL,
    TENSORBOARD_DIRNAME,
    TRAIN_LMBDA,
    TRAIN_ON_POLICY_STEPS,
    TRAIN_REPLAYED_STEPS,
    TRAIN_TEACHER_SOURCE,
    TRAIN_TEACHER_TEXT_LOSS,
    TRAIN_TEMPERATURE,
    TRAINING_ARGS_BEST_FILENAME,
    TRAINING_ARGS_FINAL_FILENAME,
    avg,
    metric_key,
    script1,
    strict_key,
)
from ..data.archive import DataError
from ..data.dataset import ArchiveSpec, DistillationStream
from ..data.datastats import DataStats
from ..data.encoding import InputEncoder
from ..model.models import (
    configure_training_kernels,
    load_student,
    load_tokenizer,
    model_size_mb,
    pick_device,
    teacher_size_mb,
)
from ..retrieval.baseline import attach_retrievers
from ..retrieval.index import RetrievalIndex
from ..runtime.allocator import keep_freed_memory
from ..runtime.distributed import DistributedContext, init_distributed, shutdown_distributed
from ..runtime.locking import output_dir_lock
from ..runtime.rng import rng_state, set_rng_state, set_seed
from .checkpoint import RUN_KEY, CheckpointError, checkpoint_to_resume, checkpoints_in, save_checkpoint
from .config import RunConfig, SettingError
from .evaluation import evaluate
from .loss import DistillationLoss, TemperatureSchedule
from .model_card import write_model_cards
from .on_policy import OnlineDistillation, check_online_settings, load_online_teacher
from .report import final_lines
from .scalars import ScalarLog
from .summary import (
    append_metrics_line,
    history_entry,
    run_summary,
    to_json_compatible,
    write_json_atomic,
    write_predictions,
    write_text_atomic,
)
from .training import Trainer, TrainingError, make_loader, steps_per_epoch

PROJECTION_KEY = "hidden_state_projection"  # a checkpoint's tensors of the hidden-state projection
REPLAY_BUFFER_KEY = "replay_buffer"  # a checkpoint's replay buffers, one per process (--replay_buffer_size)
USER_ERRORS = (DataError, CodecError, ModelLoadError, TrainingError, CheckpointError, OSError, SettingError)


@dataclass
class RunState:
    """One run's parts, filled in by run.py's set-up steps, and what its epochs have produced so far."""

    config: RunConfig
    context: DistributedContext
    device: torch.device
    started: float  # time.time() the run's clock counts from (earlier when resumed)
    # models (run.load_models)
    tokenizer: Any = None
    student: torch.nn.Module | None = None  # the plain module: generation and saving use it
    student_size: float = 0.0  # MiB of trainable parameters
    teacher_size: float | None = None  # MiB; None when the teacher's config cannot be read
    online: OnlineDistillation | None = None  # --teacher_source online: the teacher and its losses
    # data (run.open_data)
    train_stream: DistillationStream | None = None
    val_stream: DistillationStream | None = None
    retrieval_index: RetrievalIndex | None = None  # the training split's: the baseline and --retrieval_augment
    # training (run.set_up_training)
    train_loader: DataLoader | None = None
    val_loader: DataLoader | None = None
    loss_fn: DistillationLoss | None = None
    optimizer: torch.optim.Optimizer | None = None
    scheduler: Any = None
    trainer: Trainer | None = None  # holds the compiled and/or DDP-wrapped training model
    scalars: ScalarLog = field(default_factory=ScalarLog)  # --report_to tensorboard's event files (else a no-op)
    # what the epochs produced (saved in checkpoints)
    history: list[dict] = field(default_factory=list)  # one metrics.jsonl entry per finished epoch
    best_value: float | None = None  # of --best_model_metric, over the epochs so far
    final_results: dict = field(default_factory=dict)  # the last evaluation's metrics
    final_records: list[dict] = field(default_factory=list)  # the last evaluation's per-record rows
    train_data: DataStats = field(default_factory=DataStats)  # the first epoch's counts
    eval_data: DataStats = field(default_factory=DataStats)  # the last evaluation's counts
    # where the epoch loop starts (set when resuming)
    start_epoch: int = 0
    resume_mid_epoch: bool = False  # the trainer's counters are a mid-epoch checkpoint's: skip its batches
    rng_after_skip: dict | None = None  # its random states, restored once its batches are skipped


class OutputDirError(OSError):
    """The output directory holds a finished run or cannot be written."""


def make_optimizer(model: torch.nn.Module, learning_rate: float, weight_decay: float,
                   device: torch.device) -> torch.optim.Optimizer:
    """AdamW, fused on CUDA and CPU (one kernel per step instead of a dozen passes per parameter)."""
    fused = device.type in ("cuda", "cpu")
    return torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=weight_decay, fused=fused)


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
        shutil.rmtree(os.path.join(output_dir, TENSORBOARD_DIRNAME), ignore_errors=True)
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
    ("retrieval vs truth           ", script1(R_VS_GT), R_VS_GT),  # printed when the run has the baseline
)


def _print_eval(prefix: str, results: dict) -> None:
    print(f"{prefix} loss {results[AVG_LOSS]:.4f} (hard {results[AVG_HARD_LOSS]:.4f}, "
          f"soft {results[AVG_SOFT_LOSS]:.4f}) on {results[NUM_EVAL_SAMPLES]} records")
    if not results[NUM_EVAL_SAMPLES]:
        return
    for label, suffix, strict in EVAL_LINES:
        if metric_key(ACCURACY, suffix) not in results:
            continue
        print(f"  {label}: accuracy {results[metric_key(ACCURACY, suffix)]:.4f}  "
              f"F1 {results[metric_key(F1, suffix)]:.4f}  similarity {results[metric_key(SIMILARITY_AVG, suffix)]:.4f}"
              + (f"  strict match {results[avg(strict_key(strict))]:.4f}" if strict else ""))
    print("  (thesis: the teacher's text as the thesis read it, str() of its list of lines; "
          "corrected: its lines joined)")


def run_distillation(config: RunConfig) -> dict:
    """Train, evaluate each epoch, save the student and write the summary; returns the summary."""
    context = init_distributed()
    try:
        with output_dir_lock(config.output_dir, context):  # before prepare_output_dir's checks: no two runs pass them
            return _run(config, context)
    finally:
        shutdown_distributed(context)


def _run(config: RunConfig, context: DistributedContext) -> dict:
    """The steps of one run, in order; every process runs them, only the main one reports and writes."""
    started = time.time()
    keep_freed_memory()
    set_seed(config.seed)
    state = RunState(config, context, torch.device("cpu") if context.cpu_only else pick_device(), started)
    checkpoint = prepare_run(state)
    print(f"Device: {state.device}")
    load_models(state)
    try:
        open_data(state)
        set_up_training(state)
        if checkpoint is not None:
            resume(state, checkpoint)
        state.scalars = ScalarLog.open(config.report_to, config.output_dir, context.is_main,
                                       config.teacher_text_weight > 0, state.trainer.global_step)
        state.scalars.start_from(state.trainer.counters)
        for epoch in range(state.start_epoch, config.epochs):
            entry = train_one_epoch(state, epoch)
            final_epoch = epoch == config.epochs - 1  # its evaluation always runs (--eval_strategy no skips the others)
            if len(state.val_stream) > 0 and (config.eval_strategy == "epoch" or final_epoch):
                entry[HISTORY_EVAL] = evaluate_one_epoch(state, epoch)
                keep_best_model(state)
            log_epoch(state, entry)
            if config.save_steps:
                save_run(state, epoch, epoch_finished=True)
        return final_report(state)
    finally:  # the streams' spilled copies of inner ZIPs go, even when the validation data failed to open
        state.scalars.close()
        for stream in (state.train_stream, state.val_stream):
            if stream is not None:
                stream.close()


# --- set-up -----------------------------------------------------------------------------------------------------

def prepare_run(state: RunState) -> dict | None:
    """Silence the other processes, check the output dir; the checkpoint to resume from, or None."""
    config, context = state.config, state.context
    if not context.is_main:  # one process reports and writes; the others only compute
        os.environ["TQDM_DISABLE"] = "1"
        sys.stdout = open(os.devnull, "w")
    resuming = config.resume_from_checkpoint is not None
    if context.is_main:
        prepare_output_dir(config.output_dir, config.overwrite_output_dir, resuming=resuming)
    context.barrier()
    if not resuming:
        return None
    path, checkpoint = checkpoint_to_resume(config.resume_from_checkpoint, config.output_dir, config.as_flags())
    saved = checkpoint[RUN_KEY]
    if saved["world_size"] != context.world_size:
        raise CheckpointError(f"{path} was made by {saved['world_size']} process(es), this run has "
                              f"{context.world_size}; resume with the same number of processes")
    state.started = time.time() - saved["elapsed_seconds"]
    progress = "finished" if saved["epoch_finished"] else "in progress"
    print(f"Resuming from {path} (epoch {saved['epoch'] + 1} {progress}, "
          f"global step {checkpoint['trainer']['global_step']})")
    return checkpoint


@contextlib.contextmanager
def naming_the_flag(flag: str):
    """A model that cannot be loaded: its error says which flag names it and what the flag takes."""
    try:
        yield
    except ModelLoadError as error:
        raise ModelLoadError(f"{error}; pass {flag} with a local model directory or a Hugging Face id this "
                             f"machine can load") from None


def load_models(state: RunState) -> None:
    """The tokenizer and the student on the device; the student's and the teacher's sizes."""
    config = state.config
    check_online_settings(config)
    with naming_the_flag("--tokenizer_name" if config.tokenizer_name else "--student_model_name"):
        state.tokenizer = load_tokenizer(config.tokenizer_name or config.student_model_name)
    with naming_the_flag("--student_model_name"):
        state.student = load_student(config.student_model_name, config.student_from_scratch).to(state.device)
    state.student_size = model_size_mb(state.student)
    state.teacher_size = teacher_size_mb(config.teacher_model_name)
    if config.teacher_source == "online":
        teacher = load_online_teacher(config, state.student, state.tokenizer, state.device)
        state.online = OnlineDistillation(teacher, state.student, state.tokenizer, config, state.context.rank)
    print(f"Student: {config.student_model_name} ({state.student_size:.2f} MB, "
          f"vocabulary {state.student.config.vocab_size})")
    print(f"Teacher: {config.teacher_model_name} "
          f"({f'{state.teacher_size:.2f} MB' if state.teacher_size else 'size N/A'})")


def open_data(state: RunState) -> None:
    """The training and validation streams (this process's share of the records, in batches)."""
    config, context = state.config, state.context
    encoder = InputEncoder(state.tokenizer, config.student_max_src_length, config.student_max_tgt_length,
                           config.retrieval_augment)
    archive_teacher = state.online is None  # an online teacher needs neither stored logits nor stored texts
    require_teacher = archive_teacher and not config.allow_records_without_teacher
    stream_options = dict(encoder=encoder, need_logits=archive_teacher and config.alpha_kl_loss_weight > 0,
                          focal_field=config.focal_content_field_name, seed=config.seed, strict=config.strict_data,
                          rank=context.rank, require_teacher=require_teacher,
                          world_size=context.world_size, teacher_text_targets=config.teacher_text_weight > 0)
    state.train_stream = DistillationStream(
        ArchiveSpec(config.distillation_data_path, config.train_outer_zip_internal_path,
                    config.train_inner_zip_jsonl_filename, config.train_jsonl_is_gzipped, config.max_record_bytes),
        batch_size=config.batch_size, shuffle_buffer_size=config.shuffle_buffer_size,
        max_records=config.max_train_samples, **stream_options)
    state.val_stream = DistillationStream(
        ArchiveSpec(config.distillation_data_path, config.val_outer_zip_internal_path,
                    config.val_inner_zip_jsonl_filename, config.val_jsonl_is_gzipped, config.max_record_bytes),
        batch_size=config.eval_batch_size, max_records=config.max_eval_samples, **stream_options)
    state.retrieval_index = attach_retrievers(state.train_stream, state.val_stream, config.retrieval_augment,
                                              require_teacher=require_teacher)
    if state.online is not None:  # how far the archive's stored logits (where records hold them) are from the teacher
        stored = DistillationStream(state.val_stream.spec, batch_size=config.eval_batch_size,
                                    max_records=config.max_eval_samples, **dict(stream_options, need_logits=True))
        try:
            state.online.measure_stored_kl(make_loader(stored, 0, False), config.temperature, context)
        finally:
            stored.close()


def set_up_training(state: RunState) -> None:
    """Loaders, loss, optimizer, warmup schedule, kernels, DDP and the trainer."""
    config, context, device = state.config, state.context, state.device
    train_stream, val_stream = state.train_stream, state.val_stream
    print(f"Data: {len(train_stream)} training and {len(val_stream)} validation records")
    if len(train_stream) == 0:
        raise DataError(f"the training data {train_stream.spec.label}/{train_stream.spec.jsonl_name} holds no records")
    pin_memory = device.type == "cuda"
    state.train_loader = make_loader(train_stream, config.num_dataloader_workers, pin_memory)
    state.val_loader = make_loader(val_stream, config.num_dataloader_workers, pin_memory)
    state.loss_fn = DistillationLoss.from_config(config)
    model = training_model(state)
    if state.online is not None:  # with --hidden_state_weight: the student and its projection, trained together
        model = state.online.wrap(model)
        context.broadcast_module(model)
    state.optimizer = make_optimizer(model, config.learning_rate, config.weight_decay, device)
    records_per_process = math.ceil(len(train_stream) / context.world_size)
    total_steps = steps_per_epoch(records_per_process, config.batch_size,
                                  config.gradient_accumulation_steps) * config.epochs
    state.scheduler = get_linear_schedule_with_warmup(state.optimizer, int(config.warmup_steps_ratio * total_steps),
                                                      total_steps)
    state.loss_fn.schedule = TemperatureSchedule(config.temperature, config.temperature_final,
                                                 config.temperature_schedule, total_steps)
    state.trainer = Trainer(model, state.loss_fn, state.optimizer, state.scheduler, device,
                            config.gradient_accumulation_steps, config.max_grad_norm, config.precision,
                            config.log_steps, context, losses=state.online,
                            record_losses=state.online.truth_losses if state.online is not None else None)
    if state.online is not None:
        state.online.step_source = lambda: state.trainer.global_step
        state.online.set_schedule(total_steps, config.batch_size * config.gradient_accumulation_steps)
        print(f"Online teacher: lmbda {config.lmbda} ({config.lmbda_schedule}), replay buffer "
              f"{config.replay_buffer_size or 'off'}, hidden states weight {config.hidden_state_weight}")
    batch, accumulation = config.batch_size, config.gradient_accumulation_steps
    print(f"Training {config.epochs} epochs, {total_steps} optimizer steps, alpha {config.alpha_kl_loss_weight}, "
          f"T {describe_temperature(config)}, {config.divergence}, effective batch {batch * accumulation} "
          f"({batch} x {accumulation} accumulation steps x {context.world_size} "
          f"processes: {batch * accumulation * context.world_size} records per step)")


def describe_temperature(config: RunConfig) -> str:
    """'2.0', or '4.0 -> 1.0 (cosine)' with --temperature_final."""
    if config.temperature_final is None:
        return f"{config.temperature}"
    return f"{config.temperature} -> {config.temperature_final} ({config.temperature_schedule})"


def training_model(state: RunState) -> torch.nn.Module:
    """The student with --attention's kernels, compiled with --compile; rank 0's weights in every process."""
    config, device = state.config, state.device
    kernels = configure_training_kernels(state.student, config.attention, device, config.compile,
                                         config.gradient_checkpointing)
    print(f"Kernels: {kernels}")
    # Only the training forward is compiled: generation and saving use the plain module.
    state.context.broadcast_module(state.student)  # the Trainer averages gradients over processes itself
    return torch.compile(state.student, dynamic=True) if config.compile else state.student


def resume(state: RunState, checkpoint: dict) -> None:
    """Continue from a checkpoint: its model, trainer, history and this process's random state; metrics.jsonl cut
    back to match. A mid-epoch checkpoint's random state waits until its batches are skipped again."""
    saved = checkpoint[RUN_KEY]
    state.student.load_state_dict(checkpoint["model"])
    if PROJECTION_KEY in checkpoint:
        state.trainer.model.projection.load_state_dict(checkpoint[PROJECTION_KEY])
    state.trainer.load_state_dict(checkpoint["trainer"])
    if state.online is not None and saved.get("online_plan") is not None:
        state.online.load_state_dict(saved["online_plan"], checkpoint.get(REPLAY_BUFFER_KEY), state.context.rank)
    state.history, state.best_value = saved["history"], saved["best_value"]
    state.final_results, state.final_records = saved["final_results"], saved["final_records"]
    state.train_data.merge(_data_stats(saved["train_data"]))
    state.eval_data.merge(_data_stats(saved["eval_data"]))
    state.start_epoch = saved["epoch"]
    rng = checkpoint["rng"][state.context.rank]
    if saved["epoch_finished"]:
        state.start_epoch += 1
        set_rng_state(rng)
    else:
        state.resume_mid_epoch, state.rng_after_skip = True, rng
    # metrics.jsonl holds exactly the epochs the checkpoint knows of, even if more were appended after it.
    write_text_atomic(os.path.join(state.config.output_dir, METRICS_FILENAME),
                      "".join(json.dumps(to_json_compatible(entry)) + "\n" for entry in state.history))


# --- one epoch: train, evaluate, keep the best model, log, checkpoint ---------------------------------------------

def train_one_epoch(state: RunState, epoch: int) -> dict:
    """Train one epoch over every process's share; returns the epoch's metrics.jsonl entry (train part)."""
    config, trainer = state.config, state.trainer
    state.train_stream.set_epoch(epoch)
    for step in trainer.train_epoch(state.train_loader, len(state.train_stream), f"Epoch {epoch + 1}/{config.epochs}",
                                    state.resume_mid_epoch, state.rng_after_skip):
        state.scalars.training_step(step, trainer.counters, trainer.scheduler.get_last_lr()[0],
                                    state.loss_fn.temperature)
        if config.save_steps and step % config.save_steps == 0:  # a mid-epoch checkpoint every --save_steps
            save_run(state, epoch, epoch_finished=False)
    state.resume_mid_epoch, state.rng_after_skip = False, None
    result = trainer.epoch_result
    print(f"Epoch {epoch + 1} train: loss {result.loss:.4f} (hard {result.hard_loss:.4f}, soft "
          f"{result.soft_loss:.4f}), LR {result.learning_rate:.2e}; data: {result.data.describe()}")
    if epoch == 0:
        state.train_data = result.data
    if result.data.used == 0:  # e.g. records without teacher text or logits (the thesis's validity rule)
        raise DataError(f"every training record was skipped ({result.data.describe()}); records need "
                        f"test_method_masked, a ground truth, the teacher's text and compressed_logits")
    return history_entry(epoch, trainer.global_step, result, loss_extras(state, result))


def loss_extras(state: RunState, result) -> dict:
    """The train entry's keys of the optional losses: teacher-text CE, the temperature a schedule reached."""
    extras = {}
    if state.config.teacher_text_weight > 0:
        extras[TRAIN_TEACHER_TEXT_LOSS] = result.teacher_text_loss
    if state.config.temperature_final is not None:
        extras[TRAIN_TEMPERATURE] = state.loss_fn.at_step(state.trainer.global_step)
    if state.online is not None:
        config, end = state.config, state.trainer.global_step
        extras[TRAIN_TEACHER_SOURCE] = config.teacher_source
        # every process decides the epoch's step kinds here, before an evaluation may move lmbda
        on_policy, replayed = state.online.plan.counts(end - result.optimizer_steps, end)
        extras[TRAIN_ON_POLICY_STEPS] = on_policy
        if config.replay_buffer_size > 0:
            extras[TRAIN_REPLAYED_STEPS] = replayed
        if config.lmbda_schedule == "adaptive":
            extras[TRAIN_LMBDA] = state.online.plan.lmbda
    return extras


def evaluate_one_epoch(state: RunState, epoch: int) -> dict:
    """Evaluate the student on the validation stream (gathered over processes); returns its metrics."""
    config, context = state.config, state.context
    state.loss_fn.at_step(state.trainer.global_step)  # the soft loss at the temperature training has reached
    loader = state.val_loader if state.online is None else state.online.evaluation_batches(state.val_loader)
    evaluation = evaluate(state.student, state.tokenizer, loader, len(state.val_stream), state.loss_fn,
                          state.device, config.decoding(), config.precision,
                          show_example=context.is_main, gather=context.gather if context.enabled else None)
    state.final_results, state.eval_data, state.final_records = evaluation.metrics, evaluation.data, evaluation.records
    if state.online is not None:
        if state.online.stored_kl is not None:
            state.final_results[TEACHER_STORED_VS_ONLINE_KL] = state.online.stored_kl
        state.online.plan.after_evaluation(state.final_results[AVG_HARD_LOSS])  # --lmbda_schedule adaptive
    _print_eval(f"Epoch {epoch + 1} eval:", state.final_results)
    state.scalars.evaluation(state.trainer.global_step, state.final_results)
    print(f"  validation data: {state.eval_data.describe()}")
    return state.final_results


def keep_best_model(state: RunState) -> None:
    """With --save_best_model, save the student to best_student_model/ when this evaluation is the best yet."""
    config = state.config
    metric = config.best_model_metric
    value = state.final_results.get(metric)
    if not (config.save_best_model and state.context.is_main and value is not None
            and is_better(metric, value, state.best_value)):
        return
    state.best_value = value
    print(f"  new best {metric} = {value:.4f}: saving {BEST_MODEL_DIRNAME}/")
    save_model_atomic(state.student, state.tokenizer, os.path.join(config.output_dir, BEST_MODEL_DIRNAME),
                      {EVAL_RESULTS_BEST_FILENAME: state.final_results, TRAINING_ARGS_BEST_FILENAME: config.as_flags()})


def log_epoch(state: RunState, entry: dict) -> None:
    """Stamp the epoch's entry with the elapsed time, append it to metrics.jsonl and to the history."""
    entry[HISTORY_ELAPSED_SECONDS] = round(time.time() - state.started, 2)
    if state.context.is_main:
        append_metrics_line(state.config.output_dir, entry)
    state.history.append(entry)


def save_run(state: RunState, epoch: int, epoch_finished: bool) -> None:
    """Checkpoint the run: weights, trainer and every process's random state (gathered), run state as JSON.

    Every process takes part (the trainer's and the random states are gathered); the main one writes.
    """
    trainer_state, rng = state.trainer.state_dict(), state.context.gather(rng_state())
    plan, buffers = state.online.state_dict(state.context) if state.online is not None else (None, None)
    if not state.context.is_main:
        return
    run = {"epoch": epoch, "epoch_finished": epoch_finished, "world_size": state.context.world_size,
           "history": state.history, "best_value": state.best_value, "final_results": state.final_results,
           "final_records": state.final_records, "train_data": vars(state.train_data),
           "eval_data": vars(state.eval_data), "elapsed_seconds": time.time() - state.started,
           "args": state.config.as_flags(), "online_plan": plan}
    tensors = {"model": state.student.state_dict(), "trainer": trainer_state, "rng": rng}
    if buffers is not None:  # --replay_buffer_size: every process's sampled records
        tensors[REPLAY_BUFFER_KEY] = buffers
    if hasattr(state.trainer.model, "projection"):  # --hidden_state_weight's projection: checkpoints only
        tensors[PROJECTION_KEY] = state.trainer.model.projection_state()
    state.scalars.flush()  # the curve up to this step survives a kill; a resume purges the events after it
    path = save_checkpoint(state.config.output_dir, state.trainer.global_step, tensors,
                           to_json_compatible(run), state.config.save_total_limit)
    print(f"  checkpoint: {path}")


def _data_stats(saved: dict) -> DataStats:
    """DataStats from its checkpointed fields."""
    return DataStats(saved["used"], Counter(saved["skipped"]), Counter(saved["notes"]))


# --- the final report -------------------------------------------------------------------------------------------

def final_report(state: RunState) -> dict:
    """Save the final student, predictions.jsonl and distillation_summary.json; returns the summary."""
    config, context, final_results = state.config, state.context, state.final_results
    training_seconds = time.time() - state.started
    if not context.is_main:
        context.barrier()  # wait until the main process has written everything
        return {}
    save_model_atomic(state.student, state.tokenizer, os.path.join(config.output_dir, FINAL_MODEL_DIRNAME),
                      {TRAINING_ARGS_FINAL_FILENAME: config.as_flags()})
    if state.retrieval_index is not None:  # beside the student: generate_assertions.py --retrieval_index
        state.retrieval_index.save(os.path.join(config.output_dir, RETRIEVAL_INDEX_DIRNAME))
    summary = run_summary(state, training_seconds)
    summary_path = os.path.join(config.output_dir, SUMMARY_FILENAME)
    if final_results and len(state.final_records) == final_results[NUM_EVAL_SAMPLES]:
        write_predictions(config.output_dir, state.final_records)
    elif final_results:
        print(f"{PREDICTIONS_FILENAME} not written: the checkpoint this run resumed from predates it")
    write_json_atomic(summary_path, summary)
    write_model_cards(config.output_dir, summary)
    print(f"Done in {training_seconds:.1f}s; summary: {summary_path}")
    for line in final_lines(state.final_records):
        print(line)
    context.barrier()
    return summary
