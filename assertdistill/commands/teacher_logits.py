"""Run a teacher over an assertion dataset and write the distillation data script.py reads.

The cohort's data generator, rebuilt: per record the source fields, `original_target`, the teacher's
beam-search `predicted_assertions` and `compressed_logits` teacher-forced on the ground truth,
packaged as <output>.zip -> <name>/distillation_data_<split>.jsonl.zip -> JSONL. The format, and which
of its forms the thesis's own script reads: docs/DATA_FORMAT.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

import torch

from assertdistill.core.cli import reports_user_errors
from assertdistill.core.errors import ModelLoadError
from assertdistill.core.schema import ACCURACY, SIMILARITY_AVG, T_VS_GT_SCRIPT1, metric_key
from assertdistill.data.archive import DataError
from assertdistill.data.encoding import InputEncoder
from assertdistill.model.models import from_pretrained_local_first, load_tokenizer, pick_device
from assertdistill.retrieval.baseline import dataset_retrievers
from assertdistill.teacher.teacher_logits import (
    SPLITS,
    SplitReport,
    TeacherOptions,
    package_nested_zip,
    read_assertion_dataset,
    sample_records,
    write_split_jsonl,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse and validate the command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--train_file", required=True, help="assertion dataset JSONL for the training split "
                                                            "(make_dataset.py output; .gz accepted)")
    parser.add_argument("--val_file", required=True, help="assertion dataset JSONL for the validation split")
    parser.add_argument("--output", required=True, help="outer ZIP to write")
    parser.add_argument("--name", default="codet5", help="folder of the inner ZIPs inside the outer ZIP")
    parser.add_argument("--teacher_model_name", default=None,
                        help="teacher Hugging Face id or local directory; omit with --package_only")
    parser.add_argument("--tokenizer_name", default=None, help="tokenizer; default: the teacher's")
    parser.add_argument("--package_only", action="store_true",
                        help="write records without teacher outputs, e.g. to fine-tune a teacher with "
                             "script.py --alpha 0 (which needs no logits)")
    parser.add_argument("--bits", type=int, choices=[4, 8, 16, 32], default=8, help="logit storage bits")
    parser.add_argument("--topk", type=int, default=None, metavar="K",
                        help="store the sparse top-K format (docs/TOPK_FORMAT.md) instead of --bits")
    parser.add_argument("--max_assertions", type=int, default=None, metavar="N",
                        help="skip (and count) test methods with more than N assertions")
    parser.add_argument("--trim_focal", action="store_true",
                        help="store only the part of each focal file that fits --max_src_length next to its "
                             "test method (smaller archives; the records then suit that budget or less)")
    parser.add_argument("--max_src_length", type=int, default=1024, help="source token budget (as script.py)")
    parser.add_argument("--max_tgt_length", type=int, default=512, help="target token budget (as script.py)")
    parser.add_argument("--pad_to_max_length", action="store_true",
                        help="store max_tgt_length positions per record as the thesis generator did (default: the "
                             "target's real length); the thesis's own script stacks the blocks of a batch, so it "
                             "reads real-length archives only at --batch_size 1")
    parser.add_argument("--retrieval_augment", type=int, default=0, metavar="K",
                        help="the teacher's inputs carry the K retrieved training examples, as script.py "
                             "--retrieval_augment K builds them (docs/RETRIEVAL.md); 0 = the thesis's input")
    parser.add_argument("--batch_size", type=int, default=16, help="teacher batch size")
    parser.add_argument("--num_beams", type=int, default=4, help="beam width of the teacher's predictions")
    parser.add_argument("--train_num_beams", type=int, default=None,
                        help="beam width on the training split (its predictions only feed the header's teacher "
                             "metrics; 1 is several times faster); default: --num_beams")
    parser.add_argument("--limit_train", type=int, default=None, help="random subset size of the training split")
    parser.add_argument("--limit_val", type=int, default=None, help="random subset size of the validation split")
    parser.add_argument("--focal_field", default="focal_file",
                        help="input field holding the focal code: the teacher's input is built from it, and it is "
                             "stored as focal_file (focal_file is used when a record lacks it)")
    parser.add_argument("--gzip", action="store_true", help="gzip the JSONL inside each inner ZIP")
    parser.add_argument("--shuffle", action="store_true",
                        help="write records in a seeded random order instead of the input order "
                             "(input files are usually grouped by repository)")
    parser.add_argument("--seed", type=int, default=42, help="seed of the subset sampling and --shuffle")
    args = parser.parse_args(argv)
    if not args.package_only and not args.teacher_model_name:
        parser.error("--teacher_model_name is required unless --package_only is given")
    if args.train_num_beams is None:
        args.train_num_beams = args.num_beams
    if args.batch_size < 1 or args.num_beams < 1 or args.train_num_beams < 1:
        parser.error("--batch_size, --num_beams and --train_num_beams must be >= 1")
    if args.topk is not None and args.topk < 1:
        parser.error("--topk must be >= 1")
    if args.retrieval_augment < 0:
        parser.error("--retrieval_augment must be >= 0")
    if args.max_assertions is not None and args.max_assertions < 1:
        parser.error("--max_assertions must be >= 1")
    if args.trim_focal and not (args.teacher_model_name or args.tokenizer_name):
        parser.error("--trim_focal needs a tokenizer: give --teacher_model_name or --tokenizer_name")
    return args


@reports_user_errors(DataError, ModelLoadError, OSError)
def main(argv: list[str] | None = None) -> int:
    """Build the distillation archive; user errors become one line on stderr and exit code 2."""
    args = parse_args(argv)
    options = TeacherOptions.from_flags(vars(args))
    try:
        device = pick_device()
        model = tokenizer = encoder = None
        if not args.package_only or args.trim_focal:
            tokenizer = load_tokenizer(args.tokenizer_name or args.teacher_model_name)
            encoder = InputEncoder(tokenizer, args.max_src_length, args.max_tgt_length, args.retrieval_augment)
        if not args.package_only:
            from transformers import AutoModelForSeq2SeqLM

            model = from_pretrained_local_first(AutoModelForSeq2SeqLM.from_pretrained, args.teacher_model_name,
                                                "teacher model", dtype=torch.float32).to(device).eval()
        torch.manual_seed(args.seed)
        with tempfile.TemporaryDirectory(prefix="teacher_logits_") as work_dir:
            jsonl_paths, reports, retrievers = {}, {}, {}
            for split, path, limit in zip(SPLITS, (args.train_file, args.val_file), (args.limit_train, args.limit_val)):
                report = SplitReport()
                records = sample_records(list(read_assertion_dataset(path, report, args.max_assertions)), limit,
                                         args.seed, args.shuffle)
                if args.retrieval_augment and not retrievers:  # the training split comes first: its records
                    retrievers = dataset_retrievers(records, args.retrieval_augment)
                jsonl_paths[split] = os.path.join(work_dir, f"{split}.jsonl")
                write_split_jsonl(records, jsonl_paths[split], model, tokenizer, encoder, options, split, report,
                                  device, retrievers.get(split))
                reports[split] = report
            members = package_nested_zip(jsonl_paths, args.output, args.name, args.gzip)
    except (DataError, ModelLoadError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for split, report in reports.items():
        ratio = report.float32_bytes / report.stored_bytes if report.stored_bytes else 0.0
        print(f"{split}: {report.written} records written, skipped {report.skipped or 'none'}"
              + (f", logits {report.stored_bytes / max(report.written, 1) / 1024:.1f} KiB/record as hex "
                 f"({ratio:.1f}x smaller than float32)" if report.stored_bytes else ""))
        if report.teacher_metrics:
            accuracy = report.teacher_metrics[metric_key(ACCURACY, T_VS_GT_SCRIPT1)]
            similarity = report.teacher_metrics[metric_key(SIMILARITY_AVG, T_VS_GT_SCRIPT1)]
            print(f"  teacher vs ground truth: accuracy {accuracy:.4f}, similarity {similarity:.4f}")
    print(f"Wrote {args.output} ({os.path.getsize(args.output) / 1e6:.1f} MB):")
    for split, member in members.items():
        flag = "train" if split == "training" else "val"
        print(f"  --{flag}_outer_zip_internal_path {member['inner_zip']} "
              f"--{flag}_inner_zip_jsonl_filename {member['jsonl']}" + (f" --{flag}_jsonl_is_gzipped" if args.gzip else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
