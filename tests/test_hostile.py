"""Hostile inputs: bounded memory on any archive, no traceback on any record, one line for a lying ZIP."""

import gzip
import io
import json
import os
import subprocess
import sys
import tempfile
import tracemalloc
import zipfile
from collections import Counter

import pytest
from hostile import bomb_member, inner_zip, jsonl, nested_archive, patched, zip_with_raw_member
from util import make_record, save_tiny_model, tiny_run_flags, tiny_tokenizer

import compress
import script
from assertdistill.core import schema
from assertdistill.data import archive as archive_module
from assertdistill.data import zipstream
from assertdistill.data.archive import DataError, OversizeLine, iter_jsonl_lines, join_pieces, locate_inner_zip
from assertdistill.data.dataset import ArchiveSpec, DistillationStream
from assertdistill.data.datastats import DataStats
from assertdistill.data.encoding import InputEncoder
from assertdistill.data.inspect_data import inspect_archive
from assertdistill.data.zipstream import MemberStream

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GIB = 1 << 30


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_tiny_model(str(tmp_path_factory.mktemp("hostile") / "model"))


def vocab():
    return len(tiny_tokenizer())


def good_lines(count, start=0):
    return [json.dumps(make_record(start + index, vocab())).encode() for index in range(count)]


def run_cli(tmp_path, model_dir, flags, capsys, **overrides):
    code = script.main(tiny_run_flags(tmp_path, model_dir, flags, **{"--num_beams": 1, **overrides}))
    return code, capsys.readouterr()


def training_counts(tmp_path):
    summary = json.loads((tmp_path / "out" / schema.SUMMARY_FILENAME).read_text())
    return summary[schema.DATA_COUNTS][schema.DATA_COUNTS_TRAINING]


def one_error_line(output):
    """The one line a refused run prints on stderr (a progress bar may be redrawn after it), with no traceback."""
    assert "Traceback" not in output.err and output.err.count("error: ") == 1, output.err
    return "error: " + output.err.split("error: ")[1].splitlines()[0]


# ---- records: every parse failure is a counted skip ------------------------------------------------

def record_with(**fields) -> dict:
    record = make_record(7, vocab())
    record.update(fields)
    return record


def logits_with(**fields) -> bytes:
    record = make_record(8, vocab())
    record["compressed_logits"].update(fields)
    return json.dumps(record).encode()  # NaN and Infinity written as the literals Python's json writes


def nested(depth: int) -> bytes:
    return b'{"focal_file": ' + b"[" * depth + b"]" * depth + b', "test_method_masked": "x"}'


# (reason counted, raw line). Cases are data: a new hostile line is a new row.
BAD_LINES = [
    ("too_deeply_nested", nested(100_000)),
    ("invalid_utf8", json.dumps(record_with(test_method_masked="@@")).encode().replace(b"@@", b"\xff\xfe")),
    ("lone_surrogate", json.dumps(record_with(test_method_masked="x \ud800 y")).encode()),
    ("lone_surrogate", json.dumps(record_with(focal_file="\udfff")).encode()),
    ("invalid_json", json.dumps(record_with(test_method_masked="a@b")).encode().replace(b"@", b"\x00")),  # raw NUL
    ("invalid_json", b"\x00"),
    ("invalid_json", json.dumps(record_with(model_type=7)).encode().replace(b'"model_type": 7',
                                                                           b'"model_type": ' + b"9" * 5000)),
    ("bad_compressed_logits", logits_with(scale=float("nan"))),
    ("bad_compressed_logits", logits_with(scale=float("inf"))),
    ("bad_compressed_logits", logits_with(zero_point=float("-inf"))),
    ("bad_compressed_logits", logits_with(scale=1e308).replace(b"1e+308", b"1e999")),  # overflows to inf
    ("bad_compressed_logits", logits_with(shape=[1, 10**30, vocab()])),
    ("bad_compressed_logits", logits_with(bits=2**70)),
    ("too_large", json.dumps(record_with(focal_file="x" * 300_000)).encode()),  # over MAX_RECORD_BYTES
]
MAX_RECORD_BYTES = 256_000  # the 100,000-deep line is 200 kB
# Benign encodings of valid records: read as the data they are.
ACCEPTED_LINES = [
    json.dumps(record_with(model_type=float("nan"), bleu=float("-inf"))).encode(),  # NaN where nothing reads it
    json.dumps(record_with(test_method_masked="caf\u00e9 \U0001f600")).encode(),  # escaped surrogate pair: fine
    json.dumps(record_with(test_method_masked="caf\u00e9 \U0001f600"), ensure_ascii=False).encode(),  # raw UTF-8
    json.dumps(record_with(model_type="\ud800", extra={"\udfff": 1})).encode(),  # where nothing reads it
    json.dumps(record_with(predicted_assertions=["x \ud800"])).encode(),  # scored, not tokenized: replaced, noted
]


def test_every_bad_line_is_skipped_and_counted_by_reason(tmp_path, model_dir, capsys):
    good = good_lines(4)
    lines = good[:2] + [line for _, line in BAD_LINES] + ACCEPTED_LINES + good[2:]
    payload = b"\xef\xbb\xbf" + jsonl(lines, newline=b"\r\n")  # a BOM before the header, CRLF line ends
    flags = nested_archive(str(tmp_path / "d.zip"), payload, jsonl(good[:2]))
    code, output = run_cli(tmp_path, model_dir, flags, capsys, **{"--max_record_bytes": MAX_RECORD_BYTES})
    assert code == 0, output.err
    counts = training_counts(tmp_path)
    assert counts["skipped_by_reason"] == dict(Counter(reason for reason, _ in BAD_LINES))
    assert counts["records_used"] == len(good) + len(ACCEPTED_LINES)  # the header was recognised behind its BOM
    assert counts["notes"]["teacher_text_lone_surrogate_replaced"] == 1


@pytest.mark.parametrize("reason, line", BAD_LINES, ids=[f"{case[0]}_{i}" for i, case in enumerate(BAD_LINES)])
def test_strict_data_stops_at_a_bad_line_naming_file_and_line(tmp_path, reason, line):
    flags = nested_archive(str(tmp_path / "d.zip"), jsonl(good_lines(1) + [line]), b"")
    spec = ArchiveSpec(str(tmp_path / "d.zip"), flags["--train_outer_zip_internal_path"],
                       flags["--train_inner_zip_jsonl_filename"], max_record_bytes=MAX_RECORD_BYTES)
    stream = DistillationStream(spec, InputEncoder(tiny_tokenizer(), 64, 32), batch_size=2, need_logits=True,
                                strict=True)
    with pytest.raises(DataError, match=r"train\.jsonl line 3: .*\(--strict_data\)") as raised:
        list(stream.iter_groups())
    assert "\n" not in str(raised.value) and len(str(raised.value)) < 400


def test_strict_data_on_a_deep_line_is_one_line_from_the_cli(tmp_path, model_dir, capsys):
    flags = nested_archive(str(tmp_path / "d.zip"), jsonl(good_lines(2) + [nested(100_000)]), jsonl(good_lines(1)))
    code, output = run_cli(tmp_path, model_dir, flags, capsys, **{"--strict_data": True})
    assert code == 2
    assert "line 4: JSON nested deeper" in one_error_line(output)


# ---- the bound on a line: never held, on every path ----------------------------------------------

def bomb_archive(path, line_bytes, before, after):
    """An archive whose training JSONL holds `before`, one line of line_bytes 'x', then `after`."""
    head = jsonl(before)
    member, crc, size = bomb_member(head, b"x", line_bytes, b"\n" + jsonl(after, header=False))
    return nested_archive(path, b"", jsonl(good_lines(2, 90)),
                          train_inner=zip_with_raw_member("train.jsonl", member, crc, size))


def test_an_oversize_line_is_read_past_in_bounded_memory(tmp_path):
    path = str(tmp_path / "bomb.zip")
    flags = bomb_archive(path, 256 << 20, good_lines(2), good_lines(1, 50))
    location = locate_inner_zip(path, flags["--train_outer_zip_internal_path"])
    tracemalloc.start()
    try:
        found = list(iter_jsonl_lines(location, "train.jsonl", False, "bomb", max_record_bytes=1 << 20))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert [number for number, _ in found] == [1, 2, 3, 4, 5]
    assert found[3][1] == OversizeLine(256 << 20, 1 << 20)
    assert peak < 40 << 20  # the bound (1 MiB) plus a few inflated chunks (8 MiB each), not the 256 MiB line


def test_an_oversize_line_of_spaces_is_a_blank_line(tmp_path):
    payload = jsonl(good_lines(1)) + b" " * 5000 + b"\n" + jsonl(good_lines(1, 5), header=False)
    flags = nested_archive(str(tmp_path / "d.zip"), payload, b"")
    location = locate_inner_zip(str(tmp_path / "d.zip"), flags["--train_outer_zip_internal_path"])
    lines = list(iter_jsonl_lines(location, "train.jsonl", False, "d", max_record_bytes=1000))
    assert [number for number, _ in lines] == [1, 2, 4]


def test_a_gzipped_member_obeys_the_bound(tmp_path):
    payload = jsonl(good_lines(1)) + b"y" * (3 << 20) + b"\n" + jsonl(good_lines(1, 5), header=False)
    flags = nested_archive(str(tmp_path / "d.zip"), gzip.compress(payload, compresslevel=1), b"")
    location = locate_inner_zip(str(tmp_path / "d.zip"), flags["--train_outer_zip_internal_path"])
    lines = list(iter_jsonl_lines(location, "train.jsonl", True, "d", max_record_bytes=1 << 20))
    assert [number for number, _ in lines] == [1, 2, 3, 4]
    assert lines[2][1] == OversizeLine(3 << 20, 1 << 20) and lines[3][1] == good_lines(1, 5)[0] + b"\n"


@pytest.mark.parametrize("out_chunk_bytes", [1, 2, 1 << 20])  # the mark split over 3, 2 or 1 inflated pieces
@pytest.mark.parametrize("joined", [True, False])
def test_a_bom_opening_the_member_is_dropped_however_it_is_split(tmp_path, monkeypatch, out_chunk_bytes, joined):
    monkeypatch.setattr(zipstream, "OUT_CHUNK_BYTES", out_chunk_bytes)
    payload = jsonl([b'{"a": 1}', b"\xef\xbb\xbf{}"])  # a mark opening a later line is the record's business
    flags = nested_archive(str(tmp_path / "d.zip"), b"\xef\xbb\xbf" + payload, b"")
    location = locate_inner_zip(str(tmp_path / "d.zip"), flags["--train_outer_zip_internal_path"])
    lines = [line if joined else join_pieces(line)
             for _, line in iter_jsonl_lines(location, "train.jsonl", False, "d", joined=joined)]
    assert b"".join(lines) == payload


RUNNER = """
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, ({limit}, {limit}))  # a regression dies here, not the machine
sys.path[:0] = [{root!r}]
import script
code = script.main(sys.argv[1:])
with open({peak_file!r}, "w") as stream:
    stream.write(str(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024))
sys.exit(code)
"""


def test_zip_bomb_run_skips_the_line_in_bounded_memory(tmp_path, model_dir):
    """A 2 GiB line in a 2 MB archive (default --max_record_bytes, 1 GiB): counted as too_large, RSS < 2 GB."""
    flags = bomb_archive(str(tmp_path / "bomb.zip"), 2 * GIB, good_lines(3), good_lines(2, 40))
    assert os.path.getsize(tmp_path / "bomb.zip") < 4 << 20
    peak_file = str(tmp_path / "peak")
    code = RUNNER.format(limit=8 * GIB, root=ROOT, peak_file=peak_file)
    argv = tiny_run_flags(tmp_path, model_dir, flags, **{"--num_beams": 1})
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", code, *argv], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    counts = training_counts(tmp_path)
    assert counts["skipped_by_reason"] == {"too_large": 1} and counts["records_used"] == 5
    assert "too_large: 1" in proc.stdout
    assert int(open(peak_file).read()) < 2e9


def test_zip_bomb_under_strict_data_is_one_line(tmp_path, model_dir, capsys):
    flags = bomb_archive(str(tmp_path / "bomb.zip"), 64 << 20, good_lines(2), good_lines(1, 40))
    code, output = run_cli(tmp_path, model_dir, flags, capsys, **{"--strict_data": True,
                                                                    "--max_record_bytes": 1 << 20})
    assert code == 2
    assert one_error_line(output).endswith(
        "train.jsonl line 4: a line of 67,108,864 bytes, longer than --max_record_bytes 1,048,576 (--strict_data)")


def test_inspect_convert_and_report_obey_the_bound(tmp_path, capsys):
    path = str(tmp_path / "bomb.zip")
    flags = bomb_archive(path, 32 << 20, good_lines(2), good_lines(1, 40))
    bound = ["--max_record_bytes", str(1 << 20)]
    assert compress.main(["inspect", path, "--inner", flags["--train_outer_zip_internal_path"], "--json",
                          "--no_progress", *bound]) == 0
    report = json.loads(capsys.readouterr().out)["members"][0]
    assert report["bad_records"] == {"too_large": 1} and report["records_decodable"] == 3
    assert report["bytes_per_record"]["line_bytes"]["max"] == 32 << 20

    out = str(tmp_path / "out.zip")
    assert compress.main(["convert", path, out, "--to", "4", "--no_progress", *bound]) == 0
    printed = capsys.readouterr().out
    assert "3 records converted, dropped: too_large 1" in printed
    assert compress.main(["inspect", out, "--json", "--no_progress"]) == 0
    members = json.loads(capsys.readouterr().out)["members"]
    assert [member["records_decodable"] for member in members] == [3, 2]
    assert members[0]["header"]["item_count"] == 3

    assert compress.main(["report", "--from", path, "--records", "3", "--positions", "4", "--k", "4",
                          "--json", *bound]) == 0
    assert "too_large" in json.loads(capsys.readouterr().out)["origin"]


# ---- the ZIP level: every lie answered in one line -----------------------------------------------

def damaged_inner(change):
    """The training inner ZIP (one deflated member, train.jsonl) with `change` applied to its bytes."""
    return lambda: change(inner_zip("train.jsonl", jsonl(good_lines(3))))


def duplicate_member(_):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("train.jsonl", jsonl(good_lines(2)))
        with pytest.warns(UserWarning, match="Duplicate name"):
            archive.writestr("train.jsonl", jsonl(good_lines(3)))
    return buffer.getvalue()


def truncated_central_directory(data):
    return data[: data.rfind(b"PK\x01\x02") + 20]


def file_size(data):
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return archive.getinfo("train.jsonl").file_size


# (case id, training inner ZIP bytes, what the one line says)
ZIP_LIES = [
    ("crc", damaged_inner(lambda z: patched(z, "train.jsonl", "crc", 12345)), "Bad CRC-32"),
    ("size_larger", damaged_inner(lambda z: patched(z, "train.jsonl", "size", file_size(z) + 10)),
     "Bad CRC-32 or size"),
    ("size_smaller", damaged_inner(lambda z: patched(z, "train.jsonl", "size", file_size(z) - 10)), "more data than"),
    ("compressed_size_past_the_end", damaged_inner(lambda z: patched(z, "train.jsonl", "compressed_size", 1 << 30)),
     "more than the archive holds"),
    ("encrypted", damaged_inner(lambda z: patched(z, "train.jsonl", "flags", 0x1)), "is encrypted"),
    ("method_unsupported", damaged_inner(lambda z: patched(z, "train.jsonl", "method", 99)),
     "compression method 99, which is not supported"),
    ("duplicate_names", damaged_inner(duplicate_member), "holds 2 members named 'train.jsonl'"),
    ("truncated_central_directory", damaged_inner(truncated_central_directory), "is not a readable ZIP archive"),
]


@pytest.mark.parametrize("make_inner, message", [case[1:] for case in ZIP_LIES], ids=[c[0] for c in ZIP_LIES])
def test_lying_zip_members_stop_the_run_in_one_line(tmp_path, model_dir, capsys, make_inner, message):
    flags = nested_archive(str(tmp_path / "d.zip"), b"", jsonl(good_lines(1)), train_inner=make_inner())
    code, output = run_cli(tmp_path, model_dir, flags, capsys)
    assert code == 2
    assert message in one_error_line(output)
    assert compress.main(["inspect", flags["--distillation_data_path"], "--no_progress"]) == 2
    assert message in one_error_line(capsys.readouterr())


@pytest.mark.parametrize("field, value, message", [("flags", 0x1, "is encrypted"),
                                                   ("method", 98, "compression method 98"),
                                                   ("crc", 1, "cannot extract")])
def test_lying_outer_members_are_one_line(tmp_path, capsys, field, value, message):
    path = str(tmp_path / "d.zip")
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as outer:  # compressed: spilled to disk
        outer.writestr("codet5/train.jsonl.zip", inner_zip("train.jsonl", jsonl(good_lines(1))))
    with open(path, "rb") as stream:
        data = patched(stream.read(), "codet5/train.jsonl.zip", field, value)
    with open(path, "wb") as stream:
        stream.write(data)
    assert compress.main(["inspect", path, "--no_progress"]) == 2
    assert message in one_error_line(capsys.readouterr())


def test_a_refused_archive_leaves_no_spilled_copy(tmp_path, monkeypatch):
    spill_dir = tmp_path / "spill"
    spill_dir.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spill_dir))
    path = str(tmp_path / "d.zip")
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as outer:  # compressed: spilled to disk
        outer.writestr("codet5/train.jsonl.zip", patched(inner_zip("train.jsonl", jsonl(good_lines(1))),
                                                         "train.jsonl", "crc", 1))
    spec = ArchiveSpec(path, "codet5/train.jsonl.zip", "train.jsonl")
    with pytest.raises(DataError, match="Bad CRC-32"):
        DistillationStream(spec, InputEncoder(tiny_tokenizer(), 64, 32), batch_size=2, need_logits=True)
    assert list(spill_dir.iterdir()) == []


@pytest.mark.parametrize("method", [zipfile.ZIP_STORED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA])
def test_other_compression_methods_read_the_same_records(tmp_path, method):
    payload = jsonl(good_lines(3))
    flags = nested_archive(str(tmp_path / "d.zip"), payload, b"", compression=method)
    location = locate_inner_zip(str(tmp_path / "d.zip"), flags["--train_outer_zip_internal_path"])
    lines = [line for _, line in iter_jsonl_lines(location, "train.jsonl", False, "d")]
    assert b"".join(lines) == payload


@pytest.mark.parametrize("method", [zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA, zipfile.ZIP_DEFLATED])
def test_no_inflate_call_returns_more_than_a_chunk(tmp_path, monkeypatch, method):
    """bzip2 turns a few kB into GBs in one call of zipfile's reader; this one hands out bounded pieces."""
    monkeypatch.setattr(zipstream, "OUT_CHUNK_BYTES", 1 << 16)
    payload = b"x" * (4 << 20) + b"\n"
    flags = nested_archive(str(tmp_path / "d.zip"), payload, b"", compression=method)
    location = locate_inner_zip(str(tmp_path / "d.zip"), flags["--train_outer_zip_internal_path"])
    with archive_module.open_inner_zip(location, "d") as inner:
        stream = archive_module.open_member(inner, location, "train.jsonl", "d")
        assert isinstance(stream, MemberStream)
        pieces = iter(stream._next_piece, b"")
        sizes = [len(piece) for piece in pieces]
    assert max(sizes) <= 1 << 16 and sum(sizes) == len(payload)


# ---- fuzzing: bytes -> line -> record -> sample, and archive bytes -> one line ----------------------

try:
    from hypothesis import HealthCheck, event, given, settings
    from hypothesis import strategies as st
except ImportError:  # test-only dependency
    st = None

FUZZ_SETTINGS = dict(deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))


def expected_records(payload: bytes, limit: int) -> int:
    """Records the reader must hand on (used or counted): non-blank lines but the header, as the format says."""
    lines = payload.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    records, first = 0, True
    for number, line in enumerate(lines):
        oversize = len(line) > limit  # the bound holds for the line as read: BOM and \r included
        if number == 0 and not oversize and line.startswith(b"\xef\xbb\xbf"):
            line = line[3:]
        if not line.strip():
            continue
        if first and not oversize and is_header_line(line) is not None:
            first = False
            continue
        first = False
        records += 1
    return records


if st is not None:
    from assertdistill.data.archive import is_header_line

    BASE_RECORDS = [make_record(0, 320), make_record(1, 320, bits=4, target_field="assertions"),
                    make_record(2, 320, bits=16, padded_length=3), make_record(3, 320, padded_length=120)]  # 77 kB hex
    FIELD_PATHS = [(key,) for key in ("focal_file", "test_method_masked", "original_target", "assertions",
                                      "predicted_assertions", "compressed_logits", "model_type")] + \
                  [("compressed_logits", key) for key in ("shape", "bits", "scale", "zero_point", "format",
                                                          "data_encoded", "packed")] + \
                  [("compressed_logits", "data_encoded", key) for key in ("data", "original_size",
                                                                          "compressed_size", "encoding")]
    HOSTILE_VALUES = st.one_of(
        st.sampled_from([float("nan"), float("inf"), float("-inf"), 1e308, 10**30, -(2**63), -1, 0, "", [], {},
                         None, True, "\ud800", "a\udfffb", "\x00", "caf\u00e9 \U0001f600", [[[[]]]], ["x", 5]]),
        st.text(max_size=12), st.integers(), st.floats(), st.lists(st.integers(-3, 3), max_size=3))
    SNIPPETS = [b"NaN", b"Infinity", b"-Infinity", b"1e999", b"9" * 5000, b'"\\ud800"', b"\\ud800", b"\x00",
                b"\xff", b"\xc3", b"\xef\xbb\xbf", b"\r", b"\n", b"[" * 3000, b"{", b'"', b"\\", b",", b"\t"]

    @st.composite
    def hostile_lines(draw):
        """A record line, valid or damaged in one of the ways real files and attackers damage them."""
        kind = draw(st.sampled_from(["valid", "set", "delete", "splice", "cut", "flip", "random", "deep"]))
        if kind == "random":
            return draw(st.binary(max_size=300))
        if kind == "deep":
            depth = draw(st.sampled_from([900, 1100, 5000, 100_000]))
            return b'{"test_method_masked": "x", "original_target": ' + b"[" * depth + b"]" * depth + b"}"
        record = json.loads(json.dumps(draw(st.sampled_from(BASE_RECORDS))))  # a deep copy
        if kind in ("set", "delete"):
            *parents, key = draw(st.sampled_from(FIELD_PATHS))
            container = record
            for name in parents:
                container = container.get(name) if isinstance(container, dict) else None
            if isinstance(container, dict):
                if kind == "set":
                    container[key] = draw(HOSTILE_VALUES)
                else:
                    container.pop(key, None)
        line = json.dumps(record).encode()  # NaN and Infinity as the literals Python's json writes
        position = draw(st.integers(0, len(line)))
        if kind == "splice":
            line = line[:position] + draw(st.sampled_from(SNIPPETS)) + line[position:]
        elif kind == "cut":
            line = line[:position]
        elif kind == "flip" and position < len(line):
            line = line[:position] + bytes([line[position] ^ draw(st.integers(1, 255))]) + line[position + 1:]
        return line

    @pytest.fixture(scope="module")
    def fuzz_dir(tmp_path_factory):
        return str(tmp_path_factory.mktemp("fuzz"))

    @settings(max_examples=120, **FUZZ_SETTINGS)
    @given(lines=st.lists(hostile_lines(), max_size=5), header=st.booleans(), bom=st.booleans(),
           newline=st.sampled_from([b"\n", b"\r\n"]), limit=st.sampled_from([150, 1 << 30, 1 << 30]),
           strict=st.booleans())
    def test_fuzzed_lines_are_used_or_counted_never_a_traceback(fuzz_dir, lines, header, bom, newline, limit,
                                                                strict):
        payload = (b"\xef\xbb\xbf" if bom else b"") + jsonl(lines, header=header, newline=newline)
        path = os.path.join(fuzz_dir, "d.zip")
        nested_archive(path, payload, b"")
        spec = ArchiveSpec(path, "codet5/train.jsonl.zip", "train.jsonl", max_record_bytes=limit)
        stats = DataStats()
        try:
            stream = DistillationStream(spec, InputEncoder(tiny_tokenizer(), 64, 32), batch_size=2,
                                        need_logits=True, strict=strict)
            samples = []
            for _, group_samples, group_stats in stream.iter_groups():
                samples += group_samples
                stats.merge(group_stats)
        except DataError as error:  # the clean error: only --strict_data stops at a bad record
            assert strict and "\n" not in str(error) and "(--strict_data)" in str(error)
            return
        assert stats.used == len(samples)
        assert stats.used + sum(stats.skipped.values()) == expected_records(payload, limit)

    ARCHIVE_METHODS = [(zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED), (zipfile.ZIP_DEFLATED, zipfile.ZIP_DEFLATED),
                       (zipfile.ZIP_STORED, zipfile.ZIP_BZIP2), (zipfile.ZIP_STORED, zipfile.ZIP_LZMA),
                       (zipfile.ZIP_DEFLATED, zipfile.ZIP_STORED)]

    def small_archive(outer_method: int, inner_method: int) -> bytes:
        """A nested archive of two short records per split, as bytes."""
        records = [json.dumps(make_record(index, 320, padded_length=2)).encode() for index in range(2)]
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", compression=outer_method) as outer:
            for split in ("train", "val"):
                outer.writestr(f"codet5/{split}.jsonl.zip", inner_zip(f"{split}.jsonl", jsonl(records), inner_method))
        return buffer.getvalue()

    ARCHIVES = [small_archive(*methods) for methods in ARCHIVE_METHODS]

    @st.composite
    def damaged_archives(draw):
        """An archive with a few bytes changed, mostly in ZIP headers, or cut short."""
        data = bytearray(draw(st.sampled_from(ARCHIVES)))
        headers = [index for index in range(len(data) - 1) if data[index : index + 2] == b"PK"]
        for _ in range(draw(st.integers(1, 4))):
            if draw(st.booleans()):
                position = min(draw(st.sampled_from(headers)) + draw(st.integers(0, 60)), len(data) - 1)
            else:
                position = draw(st.integers(0, len(data) - 1))
            data[position] ^= draw(st.integers(1, 255))
        if draw(st.integers(0, 4)) == 0:
            data = data[: draw(st.integers(0, len(data)))]
        return bytes(data)

    def read_archive(data: bytes, path: str) -> tuple[list, DataStats, list]:
        """(samples, counts, inspection reports as dicts) of an archive's training member; DataError if refused."""
        with open(path, "wb") as stream:
            stream.write(data)
        spec = ArchiveSpec(path, "codet5/train.jsonl.zip", "train.jsonl")
        stream = DistillationStream(spec, InputEncoder(tiny_tokenizer(), 64, 32), batch_size=2, need_logits=True)
        samples, stats = [], DataStats()
        try:
            for _, group_samples, group_stats in stream.iter_groups():
                samples += group_samples
                stats.merge(group_stats)
        finally:
            stream.close()
        return samples, stats, [report.as_dict() for report in inspect_archive(path, progress=False)]

    def sample_view(sample) -> tuple:
        """What training takes from a sample: ids, labels, texts, line number, teacher values and parameters."""
        teacher = sample.teacher
        return (sample.input_ids, sample.labels, sample.ground_truth_text, sample.teacher_text, sample.line_number,
                teacher.values.tobytes(), teacher.values.shape, teacher.scale, teacher.zero_point, teacher.bits)

    @pytest.fixture(scope="module")
    def intact_reading(fuzz_dir):
        """What the undamaged archives yield (the same records under every compression method)."""
        readings = []
        for data in ARCHIVES:
            samples, stats, reports = read_archive(data, os.path.join(fuzz_dir, "intact.zip"))
            readings.append(([sample_view(sample) for sample in samples], stats.as_dict(), reports))
        assert all(reading[:2] == readings[0][:2] for reading in readings)
        assert readings[0][1]["records_used"] == 2 and readings[0][1]["records_skipped"] == 0
        return readings[0]

    @settings(max_examples=150, **FUZZ_SETTINGS)
    @given(data=damaged_archives())
    def test_fuzzed_archives_are_read_or_refused_in_one_line(fuzz_dir, intact_reading, data):
        """A damaged archive is refused in one line, or read to exactly what the intact archive holds."""
        try:
            samples, stats, reports = read_archive(data, os.path.join(fuzz_dir, "damaged.zip"))
        except DataError as error:
            assert "\n" not in str(error)
            event("refused")
            return
        event("read")
        expected_samples, expected_stats, expected_reports = intact_reading
        assert [sample_view(sample) for sample in samples] == expected_samples  # ZIP CRCs guard the content
        assert stats.as_dict() == expected_stats
        train_reports = [report for report in reports if report["member"] == "train.jsonl"]
        expected_train = [report for report in expected_reports if report["member"] == "train.jsonl"]
        assert train_reports == expected_train

else:

    @pytest.mark.skip(reason="hypothesis is not installed")
    def test_fuzzed_lines_are_used_or_counted_never_a_traceback():
        """Placeholder so the missing property test shows up as skipped."""


def test_a_run_whose_validation_data_fails_leaves_no_spilled_copy(tmp_path, monkeypatch, capsys):
    """The training inner ZIP is spilled to disk (compressed outer member); the validation JSONL is missing."""
    from util import records_as_lines, write_archive

    spill_dir = tmp_path / "spill"
    spill_dir.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spill_dir))
    vocab = len(tiny_tokenizer())
    flags = write_archive(str(tmp_path / "d.zip"), records_as_lines([make_record(i, vocab) for i in range(3)]),
                          records_as_lines([make_record(9, vocab)]), inner_compression=zipfile.ZIP_DEFLATED)
    flags["--val_inner_zip_jsonl_filename"] = "missing.jsonl"
    model_dir = save_tiny_model(str(tmp_path / "model"))
    assert script.main(tiny_run_flags(tmp_path, model_dir, flags)) == 2
    assert "missing.jsonl" in one_error_line(capsys.readouterr())
    assert list(spill_dir.iterdir()) == []
