"""data/batch.py declares every key a streamed batch holds, and which of them go to the device."""

import typing

import torch
from util import make_record, records_as_lines, tiny_tokenizer, write_archive

from assertdistill.data.batch import TENSOR_KEYS, Batch
from assertdistill.data.dataset import ArchiveSpec, DistillationStream
from assertdistill.data.datastats import DataStats
from assertdistill.data.encoding import InputEncoder


def test_a_streamed_batch_holds_only_declared_keys_and_its_tensors_are_the_tensor_keys(tmp_path):
    vocab = len(tiny_tokenizer())
    flags = write_archive(str(tmp_path / "d.zip"), records_as_lines([make_record(i, vocab) for i in range(3)]),
                          records_as_lines([make_record(9, vocab)]))
    spec = ArchiveSpec(flags["--distillation_data_path"], flags["--train_outer_zip_internal_path"],
                       flags["--train_inner_zip_jsonl_filename"])
    stream = DistillationStream(spec, InputEncoder(tiny_tokenizer(), 128, 48), 2, True, teacher_text_targets=True)
    batches = [item for item in stream if not isinstance(item, DataStats)]
    declared = typing.get_type_hints(Batch)
    assert batches and all(set(batch) <= set(declared) for batch in batches)
    tensors = {name for batch in batches for name, value in batch.items() if isinstance(value, torch.Tensor)}
    assert tensors == set(TENSOR_KEYS)
