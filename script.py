"""Distill a teacher's precomputed logits into a small seq2seq student that writes JUnit assertions.

The CLI of the thesis "Tiny but Mighty: Tuning Alpha and Temperature for Distilled SLMs in Assertion
Generation": same flags, defaults and summary keys. With --distillation_data_path every flag not given
has the thesis's default (student Salesforce/codet5-small, teacher Salesforce/codet5-base, ...), and
inner paths not given are taken from the published layout. Without it the embedded demo runs (the
demo archive and models, with the small-model settings of demo/run_defaults.json for every flag not
given). The data format: docs/DATA_FORMAT.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from assertdistill.archive import DEFAULT_MAX_RECORD_BYTES
from assertdistill.attention import CHOICES as ATTENTION_CHOICES
from assertdistill.divergences import CHOICES as DIVERGENCE_CHOICES
from assertdistill.divergences import DEFAULT_DIVERGENCE, DEFAULT_JSD_BETA, DEFAULT_SKEW_LAMBDA
from assertdistill.loss import DistillationLoss  # noqa: F401  (public API: from script import DistillationLoss)
from assertdistill.metrics import evaluate_assertions_script1_style  # noqa: F401  (public API)
from assertdistill.paths import DEMO
from assertdistill.schema import BEST_MODEL_METRICS, DEFAULT_BEST_MODEL_METRIC

THESIS_STUDENT = "Salesforce/codet5-small"  # the thesis's default models (off the demo)
THESIS_TEACHER = "Salesforce/codet5-base"


def demo_defaults() -> dict:
    """The embedded demo's archive, members and models, and the small-model values of demo/run_defaults.json."""
    with open(DEMO.run_defaults, encoding="utf-8") as stream:
        run_defaults = {name: value for name, value in json.load(stream).items() if not name.startswith("_")}
    return {"distillation_data_path": DEMO.archive,
            "train_outer_zip_internal_path": DEMO.train_inner_zip, "train_inner_zip_jsonl_filename": DEMO.train_jsonl,
            "val_outer_zip_internal_path": DEMO.val_inner_zip, "val_inner_zip_jsonl_filename": DEMO.val_jsonl,
            "train_jsonl_is_gzipped": False, "val_jsonl_is_gzipped": False,
            "teacher_model_name": DEMO.teacher, "student_model_name": DEMO.student, **run_defaults}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse and validate the command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    data = parser.add_argument_group("data (outer ZIP -> inner ZIP -> JSONL; the format: docs/DATA_FORMAT.md)")
    data.add_argument("--distillation_data_path", default=None,
                      help="outer ZIP holding the inner ZIPs; without it the embedded demo runs (demo/: its archive "
                           "and models, and demo/run_defaults.json's values for every flag not given)")
    data.add_argument("--train_outer_zip_internal_path", default=None,
                      help="path of the training inner ZIP inside the outer ZIP; when not given, the outer "
                           "ZIP's only member named <name>/distillation_data_training.jsonl.zip")
    data.add_argument("--train_inner_zip_jsonl_filename", default=None,
                      help="JSONL member inside the training inner ZIP; when not given, its only *.jsonl(.gz) member")
    data.add_argument("--train_jsonl_is_gzipped", action="store_true", default=None,
                      help="the training JSONL is gzip-compressed; when not given, detected from its first bytes")
    data.add_argument("--val_outer_zip_internal_path", default=None,
                      help="path of the validation inner ZIP inside the outer ZIP; when not given, the outer "
                           "ZIP's only member named <name>/distillation_data_validation.jsonl.zip")
    data.add_argument("--val_inner_zip_jsonl_filename", default=None,
                      help="JSONL member inside the validation inner ZIP; when not given, its only *.jsonl(.gz) member")
    data.add_argument("--val_jsonl_is_gzipped", action="store_true", default=None,
                      help="the validation JSONL is gzip-compressed; when not given, detected from its first bytes")
    data.add_argument("--focal_content_field_name", default="focal_file",
                      help="record field holding the focal code (focal_method is tried when it is absent)")
    data.add_argument("--shuffle_buffer_size", type=int, default=0,
                      help="records held in a shuffle buffer during training; 0 = file order, as the thesis")
    data.add_argument("--strict_data", action="store_true",
                      help="stop at the first bad record (naming file and line) instead of skipping and counting")
    data.add_argument("--allow_records_without_teacher", action="store_true",
                      help="this suite only, for plain fine-tuning at --alpha 0 on archives without teacher output "
                           "(make_teacher_logits.py --package_only): keep records that lack teacher text or logits "
                           "instead of skipping them as the thesis does; their teacher text counts as empty, so the "
                           "vs-teacher metrics mean nothing then")
    data.add_argument("--max_record_bytes", type=int, default=DEFAULT_MAX_RECORD_BYTES,
                      help="longest record line read (bytes; real records are at most ~131 MB); a longer line "
                           "is skipped unread and counted as too_large (a ZIP bomb cannot fill the memory)")

    models = parser.add_argument_group("models")
    models.add_argument("--teacher_model_name", default=THESIS_TEACHER,
                        help="teacher Hugging Face id or local directory; only its config is read (for its size)")
    models.add_argument("--student_model_name", default=THESIS_STUDENT,
                        help="student Hugging Face id or local directory (T5 family)")
    models.add_argument("--tokenizer_name", default=None,
                        help="tokenizer id or directory; default: the student's")
    models.add_argument("--student_from_scratch", action="store_true",
                        help="initialize the student randomly from its config instead of loading weights "
                             "(automatic for a local directory that holds a config but no weights)")
    models.add_argument("--attention", choices=ATTENTION_CHOICES, default="auto",
                        help="student attention: chunked (memory-efficient, recomputed in backward), eager, sdpa; "
                             "auto = chunked for T5 students on CPU without --compile, else transformers' default")
    models.add_argument("--student_max_src_length", type=int, default=1024, help="max source tokens")
    models.add_argument("--student_max_tgt_length", type=int, default=512,
                        help="max target tokens (also the generation max length)")

    training = parser.add_argument_group("training")
    training.add_argument("--output_dir", default="./distilled_model_output",
                          help="where models, metrics.jsonl and distillation_summary.json go")
    training.add_argument("--overwrite_output_dir", action="store_true",
                          help="allow writing into an output dir that already holds a finished run")
    training.add_argument("--epochs", type=int, default=3, help="training epochs")
    training.add_argument("--batch_size", type=int, default=8, help="training batch size (records)")
    training.add_argument("--eval_batch_size", type=int, default=16, help="evaluation batch size (records)")
    training.add_argument("--learning_rate", type=float, default=5e-5, help="AdamW peak learning rate")
    training.add_argument("--weight_decay", type=float, default=0.01, help="AdamW weight decay")
    training.add_argument("--warmup_steps_ratio", type=float, default=0.1,
                          help="share of optimizer steps spent in linear warmup (0-1)")
    training.add_argument("--alpha_kl_loss_weight", "--alpha", dest="alpha_kl_loss_weight", type=float, default=0.7,
                          help="alpha: weight of the soft KL term; (1 - alpha) weighs the hard CE term (0-1)")
    training.add_argument("--temperature", type=float, default=2.0, help="softmax temperature T of the KL term (> 0)")
    training.add_argument("--divergence", choices=DIVERGENCE_CHOICES, default=DEFAULT_DIVERGENCE,
                          help="the soft term's divergence between teacher p and student q (docs/LOSSES.md); "
                               "forward_kl = KL(p || q), the thesis")
    training.add_argument("--jsd_beta", type=float, default=DEFAULT_JSD_BETA,
                          help="jsd's beta (0-1, exclusive): beta KL(p || m) + (1 - beta) KL(q || m), "
                               "m = beta p + (1 - beta) q")
    training.add_argument("--skew_lambda", type=float, default=DEFAULT_SKEW_LAMBDA,
                          help="skew_kl / skew_reverse_kl's lambda (0-1, exclusive): KL(p || lambda p + (1 - lambda) q)")
    training.add_argument("--teacher_text_weight", type=float, default=0.0,
                          help="w >= 0: adds w * CE on the teacher's predicted text (sequence-level KD; one more "
                               "student forward per batch when > 0)")
    training.add_argument("--temperature_final", type=float, default=None,
                          help="T at the last optimizer step (> 0); T moves from --temperature to it along "
                               "--temperature_schedule; default: T stays --temperature")
    training.add_argument("--temperature_schedule", choices=["linear", "cosine"], default="linear",
                          help="how T moves to --temperature_final over the optimizer steps")
    training.add_argument("--gradient_accumulation_steps", type=int, default=1,
                          help="batches accumulated per optimizer step")
    training.add_argument("--max_grad_norm", type=float, default=1.0, help="gradient clipping norm")
    training.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="fp32",
                          help="autocast precision on GPU (CPU always runs fp32)")
    training.add_argument("--gradient_checkpointing", action="store_true",
                          help="recompute each layer's activations in backward: less memory, about a third more "
                               "compute (for students whose activations do not fit)")
    training.add_argument("--compile", action="store_true",
                          help="torch.compile the student for training (slow first steps; pays off on long GPU runs)")
    training.add_argument("--seed", type=int, default=42, help="random seed")
    training.add_argument("--log_steps", type=int, default=50, help="optimizer steps between progress-bar updates")
    data.add_argument("--max_train_samples", type=int, default=None,
                      help="use only the first N training records (quick runs and tests)")
    data.add_argument("--max_eval_samples", type=int, default=None,
                      help="use only the first N validation records (quick runs and tests)")
    training.add_argument("--num_dataloader_workers", type=int, default=0,
                          help="DataLoader worker processes (records are sharded among them)")

    checkpoints = parser.add_argument_group("checkpoints")
    checkpoints.add_argument("--save_steps", type=int, default=0,
                             help="write a checkpoint (weights, optimizer, scheduler, RNG states, place in the "
                                  "data) every N optimizer steps and at every epoch end; 0 = no checkpoints")
    checkpoints.add_argument("--save_total_limit", type=int, default=2,
                             help="keep only the newest N checkpoints (0 = keep all)")
    checkpoints.add_argument("--resume_from_checkpoint", default=None,
                             help="continue a killed run from a checkpoint directory, or 'latest' in --output_dir")

    evaluation = parser.add_argument_group("evaluation")
    evaluation.add_argument("--num_beams", type=int, default=4, help="beam width for generation")
    evaluation.add_argument("--save_best_model", action="store_true",
                            help="save the best epoch's student to output_dir/best_student_model")
    evaluation.add_argument("--best_model_metric", default=DEFAULT_BEST_MODEL_METRIC, choices=BEST_MODEL_METRICS,
                            help="metric that picks the best model (lower is better for avg_loss); the *_script1 "
                                 "choices are the thesis's numbers, *_s_vs_t_corrected compare with the "
                                 "teacher's lines joined, strict_exact_match needs an exact item match")

    args = parser.parse_args(argv)
    if args.distillation_data_path is None:  # the embedded demo: its values for every flag not given
        parser.set_defaults(**demo_defaults())
        args = parser.parse_args(argv)
    checks = [
        (0.0 <= args.alpha_kl_loss_weight <= 1.0, "--alpha_kl_loss_weight must be between 0 and 1"),
        (args.temperature > 0, "--temperature must be > 0"),
        (0.0 < args.jsd_beta < 1.0, "--jsd_beta must be between 0 and 1 (exclusive)"),
        (0.0 < args.skew_lambda < 1.0, "--skew_lambda must be between 0 and 1 (exclusive)"),
        (args.teacher_text_weight >= 0, "--teacher_text_weight must be >= 0"),
        (args.temperature_final is None or args.temperature_final > 0, "--temperature_final must be > 0"),
        (args.epochs >= 1, "--epochs must be >= 1"),
        (args.batch_size >= 1 and args.eval_batch_size >= 1, "batch sizes must be >= 1"),
        (args.gradient_accumulation_steps >= 1, "--gradient_accumulation_steps must be >= 1"),
        (0.0 <= args.warmup_steps_ratio <= 1.0, "--warmup_steps_ratio must be between 0 and 1"),
        (args.student_max_src_length >= 8 and args.student_max_tgt_length >= 2, "max lengths are too small"),
        (args.num_beams >= 1, "--num_beams must be >= 1"),
        (args.num_dataloader_workers >= 0 and args.shuffle_buffer_size >= 0, "counts must be >= 0"),
        (args.save_steps >= 0 and args.save_total_limit >= 0, "--save_steps and --save_total_limit must be >= 0"),
        (args.max_record_bytes >= 1, "--max_record_bytes must be >= 1"),
    ]
    for passed, message in checks:
        if not passed:
            parser.error(message)
    return args


def main(argv: list[str] | None = None) -> int:
    """Run one distillation; user errors become one line on stderr and exit code 2."""
    args = parse_args(argv)
    from assertdistill.cli import run_reporting_errors
    from assertdistill.config import RunConfig
    from assertdistill.layout import resolve_data_members
    from assertdistill.run import USER_ERRORS, run_distillation

    config = RunConfig.from_namespace(args)

    def resolve_and_run() -> dict:
        members, picked = resolve_data_members(config.distillation_data_path, config.data_members())
        for line in picked:
            if os.environ.get("RANK", "0") == "0":  # once under torchrun
                print(line)
        return run_distillation(config.with_data_members(members))

    return run_reporting_errors(resolve_and_run, USER_ERRORS)


if __name__ == "__main__":
    sys.exit(main())
