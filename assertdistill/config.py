"""RunConfig: one distillation run's settings, the flags of script.py (their defaults and help live there)."""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass

from .layout import SplitMembers


@dataclass(frozen=True)
class RunConfig:
    """script.py's flags, in its order; asdict(config) is the summary's and the checkpoints' `args`."""

    # data: outer ZIP -> inner ZIP -> JSONL (docs/DATA_FORMAT.md); None = picked from the published layout
    distillation_data_path: str
    train_outer_zip_internal_path: str | None
    train_inner_zip_jsonl_filename: str | None
    train_jsonl_is_gzipped: bool | None
    val_outer_zip_internal_path: str | None
    val_inner_zip_jsonl_filename: str | None
    val_jsonl_is_gzipped: bool | None
    focal_content_field_name: str
    shuffle_buffer_size: int  # records; 0 = file order
    strict_data: bool
    allow_records_without_teacher: bool
    max_record_bytes: int
    # models
    teacher_model_name: str
    student_model_name: str
    tokenizer_name: str | None  # None = the student's
    student_from_scratch: bool
    attention: str  # attention.CHOICES
    student_max_src_length: int  # tokens
    student_max_tgt_length: int  # tokens, also the generation max length
    # training
    output_dir: str
    overwrite_output_dir: bool
    epochs: int
    batch_size: int  # records
    eval_batch_size: int  # records
    learning_rate: float
    weight_decay: float
    warmup_steps_ratio: float  # 0-1
    alpha_kl_loss_weight: float  # 0-1, weight of the soft KL term
    temperature: float  # > 0
    divergence: str  # divergences.CHOICES
    jsd_beta: float  # 0-1 exclusive, jsd only
    skew_lambda: float  # 0-1 exclusive, skew_kl and skew_reverse_kl only
    teacher_text_weight: float  # >= 0, weight of CE on the teacher's text
    temperature_final: float | None  # None = constant temperature
    temperature_schedule: str  # linear or cosine
    gradient_accumulation_steps: int
    max_grad_norm: float
    precision: str  # fp32, bf16 or fp16
    gradient_checkpointing: bool
    compile: bool
    seed: int
    log_steps: int  # optimizer steps between progress-bar updates
    max_train_samples: int | None  # None = every record
    max_eval_samples: int | None
    num_dataloader_workers: int
    # checkpoints
    save_steps: int  # optimizer steps; 0 = no checkpoints
    save_total_limit: int  # 0 = keep all
    resume_from_checkpoint: str | None  # a checkpoint directory, 'latest' or None
    # evaluation
    num_beams: int
    save_best_model: bool
    best_model_metric: str

    @classmethod
    def from_namespace(cls, args: argparse.Namespace) -> RunConfig:
        """The config of script.py's parsed arguments (every flag, nothing else)."""
        return cls(**vars(args))

    def as_flags(self) -> dict:
        """{flag name: value} in the flags' order, as vars() of the parsed arguments."""
        return dataclasses.asdict(self)

    def data_members(self) -> dict[str, SplitMembers]:
        """The training and validation members as given (None where script.py was not told)."""
        return {"training": SplitMembers(self.train_outer_zip_internal_path, self.train_inner_zip_jsonl_filename,
                                         self.train_jsonl_is_gzipped),
                "validation": SplitMembers(self.val_outer_zip_internal_path, self.val_inner_zip_jsonl_filename,
                                           self.val_jsonl_is_gzipped)}

    def with_data_members(self, members: dict[str, SplitMembers]) -> RunConfig:
        """A copy with the training and validation members replaced."""
        training, validation = members["training"], members["validation"]
        return dataclasses.replace(
            self, train_outer_zip_internal_path=training.inner_zip, train_inner_zip_jsonl_filename=training.jsonl,
            train_jsonl_is_gzipped=training.gzipped, val_outer_zip_internal_path=validation.inner_zip,
            val_inner_zip_jsonl_filename=validation.jsonl, val_jsonl_is_gzipped=validation.gzipped)
