"""Nested-ZIP streaming: variants, counting, bad records, sharding, batching."""

import json
import zipfile

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from assertdistill.archive import DataError
from assertdistill.codec import decode_quantized
from assertdistill.dataset import ArchiveSpec, DistillationStream
from assertdistill.records import FOCAL_PREFIX, TEST_PREFIX, DataStats, InputEncoder
from util import JAVA_SNIPPETS, make_record, records_as_lines, tiny_tokenizer, write_archive


def stream_for(flags, split="train", batch_size=4, need_logits=True, **options):
    encoder = InputEncoder(tiny_tokenizer(), 128, 48)
    spec = ArchiveSpec(flags["--distillation_data_path"], flags[f"--{split}_outer_zip_internal_path"],
                       flags[f"--{split}_inner_zip_jsonl_filename"], options.pop("gzipped", False))
    return DistillationStream(spec, encoder, batch_size, need_logits, **options)


def drain(stream, num_workers=0):
    batches, stats = [], DataStats()
    for item in DataLoader(stream, batch_size=None, num_workers=num_workers):
        if isinstance(item, DataStats):
            stats.merge(item)
        else:
            batches.append(item)
    return batches, stats


def vocab():
    return len(tiny_tokenizer())


# (archive options, record options): every combination must give the same 6 usable records.
VARIANTS = [
    ({}, {}),
    ({"gzipped": True}, {}),
    ({"header": False}, {}),
    ({"inner_compression": zipfile.ZIP_DEFLATED}, {}),
    ({}, {"target_field": "assertions", "teacher_field": "model_prediction"}),
    ({}, {"bits": 4}),
    ({}, {"bits": 16, "padded_length": 512}),
]


@pytest.mark.parametrize("archive_options, record_options", VARIANTS)
def test_variants_stream_all_records(tmp_path, archive_options, record_options):
    records = [make_record(i, vocab(), **record_options) for i in range(6)]
    flags = write_archive(str(tmp_path / "d.zip"), records_as_lines(records), [], **archive_options)
    stream = stream_for(flags, gzipped=archive_options.get("gzipped", False))
    assert len(stream) == 6
    batches, stats = drain(stream)
    assert stats.used == 6 and not stats.skipped
    assert [len(batch["labels"]) for batch in batches] == [4, 2]
    truth = batches[0]["ground_truth_texts"][0]
    assert truth == "assertEquals(0, calculator.add(0, 0));\nassertTrue(stack.isEmpty());"
    assert batches[0]["teacher_texts"][0] == "assertEquals(0, calculator.add(0, 0));"  # list joined


def test_batches_pad_to_longest_and_hold_teacher_rows_only_at_label_positions(tmp_path):
    records = [make_record(i, vocab(), padded_length=512) for i in range(3)]
    flags = write_archive(str(tmp_path / "d.zip"), records_as_lines(records), [])
    (batch,), _ = drain(stream_for(flags))
    labels, mask = batch["labels"], batch["teacher_position_mask"]
    lengths = (labels != -100).sum(1)
    assert labels.shape[1] == lengths.max() < 48  # not padded to the max length
    assert torch.equal(mask, labels != -100)
    assert batch["teacher_values"].dtype == torch.uint8
    assert batch["teacher_values"].shape == (int(lengths.sum()), vocab())
    first = decode_quantized(records[0]["compressed_logits"]).values[: lengths[0]]
    assert np.array_equal(batch["teacher_values"][: lengths[0]].numpy(), first)


def test_bad_records_are_skipped_and_counted_by_reason(tmp_path):
    good = records_as_lines([make_record(i, vocab()) for i in range(3)])
    broken_logits = make_record(9, vocab())
    broken_logits["compressed_logits"]["data_encoded"]["data"] = "zz"
    no_target = make_record(8, vocab())
    del no_target["original_target"]
    wrong_type = make_record(7, vocab())
    wrong_type["test_method_masked"] = 12
    bad = ["{not json", json.dumps(broken_logits), json.dumps(no_target), json.dumps(wrong_type), "[1, 2]"]
    flags = write_archive(str(tmp_path / "d.zip"), good + bad, [])
    batches, stats = drain(stream_for(flags))
    assert stats.used == 3
    assert dict(stats.skipped) == {"invalid_json": 1, "bad_compressed_logits": 1, "missing_ground_truth": 1,
                                   "wrong_field_type": 1, "not_an_object": 1}
    assert "5 skipped" in stats.describe()


def test_strict_data_names_file_and_line(tmp_path):
    lines = records_as_lines([make_record(0, vocab())]) + ["{not json"]
    flags = write_archive(str(tmp_path / "d.zip"), lines, [])
    with pytest.raises(DataError, match=r"line 3: invalid JSON"):
        drain(stream_for(flags, strict=True))


def test_records_without_logits_are_skipped_even_at_alpha_0(tmp_path):
    records = [make_record(i, vocab(), with_logits=False) for i in range(2)] + [make_record(2, vocab())]
    flags = write_archive(str(tmp_path / "d.zip"), records_as_lines(records), [])
    for need_logits in (True, False):  # the thesis's validity rule asks for them whatever alpha is
        batches, stats = drain(stream_for(flags, need_logits=need_logits))
        assert stats.used == 1 and stats.skipped == {"missing_compressed_logits": 2}
    assert batches[0]["teacher_values"] is None  # without need_logits they are not decoded


def test_count_without_header_skips_empty_lines(tmp_path):
    lines = records_as_lines([make_record(i, vocab()) for i in range(3)])
    flags = write_archive(str(tmp_path / "d.zip"), [lines[0], "", lines[1], "   ", lines[2]], [], header=False)
    assert len(stream_for(flags)) == 3


def test_workers_shard_without_duplicates_or_drops(tmp_path):
    records = [make_record(i, vocab()) for i in range(11)]
    flags = write_archive(str(tmp_path / "d.zip"), records_as_lines(records), [])
    batches, stats = drain(stream_for(flags, batch_size=2), num_workers=2)
    seen = sorted(line for batch in batches for line in batch["line_numbers"])
    assert seen == list(range(2, 13)) and stats.used == 11


def test_shuffle_buffer_permutes_but_keeps_every_record(tmp_path):
    records = [make_record(i, vocab()) for i in range(10)]
    flags = write_archive(str(tmp_path / "d.zip"), records_as_lines(records), [])
    batches, _ = drain(stream_for(flags, shuffle_buffer_size=5))
    order = [line for batch in batches for line in batch["line_numbers"]]
    assert sorted(order) == list(range(2, 12)) and order != sorted(order)


@pytest.mark.parametrize("make_problem, message", [
    (lambda path: path.with_name("missing.zip"), "not found"),
    (lambda path: (path.write_text("plain text"), path)[1], "not a readable ZIP"),
    (lambda path: (path.write_bytes(path.read_bytes()[:100]), path)[1], "not a readable ZIP"),  # truncated
])
def test_archive_problems_are_data_errors(tmp_path, make_problem, message):
    flags = write_archive(str(tmp_path / "d.zip"), [], [])
    flags["--distillation_data_path"] = str(make_problem(tmp_path / "d.zip"))
    with pytest.raises(DataError, match=message):
        stream_for(flags)


def test_wrong_inner_paths_list_what_the_archive_holds(tmp_path):
    flags = write_archive(str(tmp_path / "d.zip"), [], [])
    with pytest.raises(DataError, match=r"holds \[codet5/distillation_data_training.jsonl.zip"):
        stream_for({**flags, "--train_outer_zip_internal_path": "nope.zip"})
    with pytest.raises(DataError, match=r"'x.jsonl' not found .* holds \[distillation_data_training.jsonl\]"):
        stream_for({**flags, "--train_inner_zip_jsonl_filename": "x.jsonl"})


@pytest.mark.parametrize("written_gzipped, flag", [(True, False), (False, True)])
def test_wrong_gzip_flag_is_explained(tmp_path, written_gzipped, flag):
    flags = write_archive(str(tmp_path / "d.zip"), records_as_lines([make_record(0, vocab())]), [],
                          gzipped=written_gzipped)
    with pytest.raises(DataError, match="gzip"):
        stream_for(flags, gzipped=flag)


def test_source_text_follows_the_thesis_layout():
    encoder = InputEncoder(tiny_tokenizer(), 128, 16)
    focal = "public class Calculator { public int add(int a, int b) { return a + b; } }\n" * 10
    text = encoder.source_text(focal, "void testAdd() {}")
    assert text.startswith(FOCAL_PREFIX) and text.endswith(f"\n\n{TEST_PREFIX}void testAdd() {{}}")
    assert len(encoder.encode_source(focal, "void testAdd() {}")) <= 128
    assert focal.startswith(text[len(FOCAL_PREFIX): text.index("\n\n" + TEST_PREFIX)])  # a truncated prefix
    long_test = "void testAdd() { calculator.add(1, 2); }" * 20
    assert encoder.source_text(focal, long_test) == f"{TEST_PREFIX}{long_test}"  # no room for focal code
    assert encoder.source_text("  ", "t()") == f"{TEST_PREFIX}t()"


ADVERSARIAL_TEXTS = ["", " ", "\n\n\t  x", "é漢字😀 naïve\r\n", "a<mask>b </s> <pad>", "x" * 3000,
                     "    " * 200 + "return;", "int a = 1;\n" * 300, "\"\\\"escaped\\\"\" // comment"]


@pytest.mark.parametrize("text", ADVERSARIAL_TEXTS + JAVA_SNIPPETS)
def test_encoder_tokenizes_exactly_as_the_tokenizer_call(text):
    tokenizer = tiny_tokenizer()
    encoder = InputEncoder(tokenizer, 64, 16)
    for add_special_tokens in (True, False):
        for max_length in (None, 5, 64):
            options = {"truncation": True, "max_length": max_length} if max_length else {}
            expected = tokenizer(text, add_special_tokens=add_special_tokens, **options)["input_ids"]
            assert encoder._ids(text, add_special_tokens, max_length) == expected
    full = tokenizer(text * 3, add_special_tokens=False)["input_ids"]
    for count in (1, 7, 50, 400):
        assert encoder.first_tokens(text * 3, count) == full[:count]
