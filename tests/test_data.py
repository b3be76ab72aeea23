"""Nested-ZIP streaming: variants, counting, bad records, sharding, batching."""

import json
import os
import zipfile

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader
from util import make_record, records_as_lines, tiny_tokenizer, write_archive

from assertdistill.codec.codec import compress_logits, decode_quantized
from assertdistill.data import dataset as dataset_module
from assertdistill.data.archive import DataError
from assertdistill.data.dataset import ArchiveSpec, DistillationStream
from assertdistill.data.datastats import DataStats
from assertdistill.data.encoding import InputEncoder


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


@pytest.mark.parametrize("shuffle_buffer_size", [1, 5])  # in file order and through the shuffle buffer
def test_bad_records_are_skipped_and_counted_by_reason(tmp_path, shuffle_buffer_size):
    good = records_as_lines([make_record(i, vocab()) for i in range(3)])
    broken_logits = make_record(9, vocab())
    broken_logits["compressed_logits"]["data_encoded"]["data"] = "zz"
    no_target = make_record(8, vocab())
    del no_target["original_target"]
    wrong_type = make_record(7, vocab())
    wrong_type["test_method_masked"] = 12
    bad = ["{not json", json.dumps(broken_logits), json.dumps(no_target), json.dumps(wrong_type), "[1, 2]"]
    flags = write_archive(str(tmp_path / "d.zip"), good + bad, [])
    batches, stats = drain(stream_for(flags, shuffle_buffer_size=shuffle_buffer_size))
    assert stats.used == 3 and sum(len(batch["line_numbers"]) for batch in batches) == 3
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


# (lines around the records, header item_count): the count always comes from the data.
COUNT_CASES = {
    "header 0": (None, 0),
    "header too large": (None, 9),
    "header too small": (None, 2),
    "header right": (None, 5),
    "blank lines everywhere": (["", "  ", "\t"], 5),
    "no newline at the end": ("no_final_newline", 5),
}


@pytest.mark.parametrize("gzipped", [False, True])
@pytest.mark.parametrize("chunk_bytes", [7, 1 << 23])  # 7: lines and the header split across chunks
@pytest.mark.parametrize("case", sorted(COUNT_CASES))
def test_records_are_counted_in_the_data_not_taken_from_the_header(tmp_path, monkeypatch, case, chunk_bytes, gzipped):
    monkeypatch.setattr(dataset_module, "COUNT_CHUNK_BYTES", chunk_bytes)
    extra, item_count = COUNT_CASES[case]
    lines = records_as_lines([make_record(i, vocab()) for i in range(5)])
    if isinstance(extra, list):
        lines = [extra[0], lines[0], *extra, *lines[1:], extra[1]]
    path = tmp_path / "d.zip"
    header = json.dumps({"header": {"dataset_type": "training", "item_count": item_count}})
    flags = write_archive(str(path), [header] + lines, [], gzipped=gzipped, header=False)
    if extra == "no_final_newline":
        rewrite_member_without_final_newline(path, flags, gzipped)
    stream = stream_for(flags, gzipped=gzipped)
    assert len(stream) == 5 and stream.header == {"dataset_type": "training", "item_count": item_count}
    note = stream.count_note
    if item_count == 5:
        assert note is None
    else:
        assert note == (f"Note: {path}:codet5/distillation_data_training.jsonl.zip/distillation_data_training.jsonl: "
                        f"the header's item_count is {item_count} but the file holds 5 records; using 5")
    assert drain(stream)[1].used == 5


def rewrite_member_without_final_newline(path, flags, gzipped):
    """Drop the JSONL member's last newline (the count must still see its last record)."""
    import gzip
    import io

    inner_name, jsonl_name = flags["--train_outer_zip_internal_path"], flags["--train_inner_zip_jsonl_filename"]
    with zipfile.ZipFile(path) as outer:
        members = {name: outer.read(name) for name in outer.namelist()}
    with zipfile.ZipFile(io.BytesIO(members[inner_name])) as inner:
        payload = inner.read(jsonl_name)
    payload = gzip.decompress(payload) if gzipped else payload
    assert payload.endswith(b"\n")
    payload = payload.rstrip(b"\n")
    payload = gzip.compress(payload) if gzipped else payload
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as inner:
        inner.writestr(jsonl_name, payload)
    members[inner_name] = buffer.getvalue()
    with zipfile.ZipFile(path, "w") as outer:
        for name, data in members.items():
            outer.writestr(name, data)


@pytest.mark.parametrize("first_line, records, header", [
    ('{"header": {"item_count": 3}}', 0, {"item_count": 3}),  # a header and nothing else
    ('{"header": 5}', 0, {}),
    ('{"not_a_header": 1}', 1, None),
    ("[1, 2]", 1, None),
])
def test_count_of_header_only_and_odd_first_lines(tmp_path, first_line, records, header):
    flags = write_archive(str(tmp_path / "d.zip"), [first_line], [], header=False)
    stream = stream_for(flags)
    assert (len(stream), stream.header) == (records, header)


def test_a_long_first_record_is_counted_not_taken_for_a_header(tmp_path, monkeypatch):
    monkeypatch.setattr(dataset_module, "COUNT_CHUNK_BYTES", 1000)
    monkeypatch.setattr(dataset_module, "MAX_HEADER_LINE_BYTES", 2000)  # records here are ~6 KB
    lines = records_as_lines([make_record(i, vocab()) for i in range(3)])
    flags = write_archive(str(tmp_path / "d.zip"), lines, [], header=False)
    stream = stream_for(flags)
    assert len(stream) == 3 and stream.header is None and drain(stream)[1].used == 3


def test_max_records_stops_the_count_early_and_still_notes_a_header_too_small(tmp_path, monkeypatch):
    lines = records_as_lines([make_record(i, vocab()) for i in range(6)])
    header = json.dumps({"header": {"item_count": 1}})
    flags = write_archive(str(tmp_path / "d.zip"), [header] + lines, [], header=False)
    monkeypatch.setattr(dataset_module, "COUNT_CHUNK_BYTES", 100)  # records are ~6 KB: many chunks each
    seen = []
    real_count = dataset_module.count_records
    monkeypatch.setattr(dataset_module, "count_records",
                        lambda *args, **kwargs: seen.append(real_count(*args, **kwargs)) or seen[-1])
    stream = stream_for(flags, max_records=2)
    assert len(stream) == 2 and seen[0][0] == 3 and seen[0][2] is False  # stopped after 3 of 6
    assert stream.count_note.endswith("the header's item_count is 1 but the file holds at least 3 records")
    assert stream_for(flags, max_records=4).count_note.endswith("holds at least 5 records")
    assert stream_for(flags, max_records=10).count_note.endswith("holds 6 records; using 6")


def parse_log(monkeypatch, tmp_path):
    """Make every parse_record call (in any worker process) append the record's line to a log file."""
    log = tmp_path / "parsed.log"
    real_parse = dataset_module.parse_record

    def logged(line, *args, **kwargs):
        entry = json.loads(line) if line.startswith(b"{") and not line.startswith(b"{not") else None
        marker = entry["original_target"].split(",")[0] if isinstance(entry, dict) and "original_target" in entry \
            else line.strip()[:12].decode(errors="replace")
        with open(log, "a") as stream:
            stream.write(f"{os.getpid()}\t{marker}\n")
        return real_parse(line, *args, **kwargs)

    monkeypatch.setattr(dataset_module, "parse_record", logged)
    return log


def batches_signature(batches):
    return [(batch["batch_index"], batch["line_numbers"]) for batch in batches]


@pytest.mark.parametrize("num_workers", [1, 2])
def test_workers_share_never_repeat_and_batch_as_one_process(tmp_path, monkeypatch, num_workers):
    records = records_as_lines([make_record(i, vocab()) for i in range(11)])
    # Bad records: one in group 1, and group 3 (records 9-11 at batch size 3) holds only bad ones.
    lines = records[:4] + ["{not json"] + records[4:8] + ["{not json", "[1]", "{not json"] + records[8:]
    flags = write_archive(str(tmp_path / "d.zip"), lines, [])
    single_batches, single_stats = drain(stream_for(flags, batch_size=3))
    log = parse_log(monkeypatch, tmp_path)
    batches, stats = drain(stream_for(flags, batch_size=3), num_workers=num_workers)
    parsed = [line.split("\t") for line in log.read_text().splitlines()]
    assert len(parsed) == len(lines)  # every record parsed once, none twice
    assert len({pid for pid, _ in parsed}) == num_workers and os.getpid() not in {int(pid) for pid, _ in parsed}
    assert stats.as_dict() == single_stats.as_dict()
    assert stats.used == 11 and dict(stats.skipped) == {"invalid_json": 3, "not_an_object": 1}
    assert batches_signature(batches) == batches_signature(single_batches)  # same batches, same order
    assert [batch["batch_index"] for batch in batches] == [0, 1, 2, 4]  # group 3 had no usable record
    assert [len(batch["line_numbers"]) for batch in batches] == [3, 2, 3, 3]


def test_two_ranks_with_two_workers_each_split_the_groups(tmp_path):
    records = records_as_lines([make_record(i, vocab()) for i in range(10)])
    flags = write_archive(str(tmp_path / "d.zip"), records, [])
    single = batches_signature(drain(stream_for(flags, batch_size=2))[0])
    shares = []
    for rank in (0, 1):
        batches, stats = drain(stream_for(flags, batch_size=2, rank=rank, world_size=2), num_workers=2)
        shares.append((batches_signature(batches), stats.used))
    assert [used for _, used in shares] == [6, 4]  # groups 0, 1, 4 and 2, 3
    assert sorted(shares[0][0] + shares[1][0]) == single


def test_a_batch_dimension_above_one_keeps_the_first_row_and_is_noted(tmp_path):
    rng = np.random.default_rng(0)
    record = make_record(0, vocab())
    logits = rng.normal(0.0, 1.0, (2, 48, vocab())).astype(np.float32)  # (B=2, T, V), as a batched generator writes
    record["compressed_logits"] = compress_logits(logits, bits=8)
    other = make_record(1, vocab(), padded_length=48)
    flags = write_archive(str(tmp_path / "d.zip"), records_as_lines([record, other]), [])
    (batch,), stats = drain(stream_for(flags))
    assert stats.used == 2 and stats.notes == {"teacher_batch_rows_first_kept": 1}
    length = int((batch["labels"][0] != -100).sum())
    first_row = decode_quantized(record["compressed_logits"]).values  # (T, V) codes of row 0
    assert np.array_equal(batch["teacher_values"][:length].numpy(), first_row[:length])


def test_shuffle_buffer_permutes_but_keeps_every_record(tmp_path):
    records = [make_record(i, vocab()) for i in range(10)]
    flags = write_archive(str(tmp_path / "d.zip"), records_as_lines(records), [])
    batches, _ = drain(stream_for(flags, shuffle_buffer_size=5))
    order = [line for batch in batches for line in batch["line_numbers"]]
    assert sorted(order) == list(range(2, 12)) and order != sorted(order)
    stream = stream_for(flags, shuffle_buffer_size=5)
    stream.set_epoch(1)
    epoch_two = [line for batch in drain(stream)[0] for line in batch["line_numbers"]]
    assert sorted(epoch_two) == sorted(order) and epoch_two != order  # each epoch its own order
    stream.set_epoch(0)
    assert [line for batch in drain(stream)[0] for line in batch["line_numbers"]] == order  # and the same again


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
