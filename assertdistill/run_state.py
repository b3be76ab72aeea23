"""RunState: what the steps of one distillation run share, from its set-up to its final report."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils.data import DataLoader

from .config import RunConfig
from .dataset import DistillationStream
from .distributed import DistributedContext
from .loss import DistillationLoss
from .datastats import DataStats
from .training import Trainer


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
    # data (run.open_data)
    train_stream: DistillationStream | None = None
    val_stream: DistillationStream | None = None
    # training (run.set_up_training)
    train_loader: DataLoader | None = None
    val_loader: DataLoader | None = None
    loss_fn: DistillationLoss | None = None
    optimizer: torch.optim.Optimizer | None = None
    scheduler: Any = None
    trainer: Trainer | None = None  # holds the compiled and/or DDP-wrapped training model
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
