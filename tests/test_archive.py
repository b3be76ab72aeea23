"""The nested-ZIP reader: the member stream gives zipfile's lines and errors; prefetching keeps order."""

import io
import threading
import zipfile

import pytest
from util import make_record, records_as_lines, tiny_tokenizer, write_archive

from assertdistill.data import archive as archive_module
from assertdistill.data import zipstream
from assertdistill.data.archive import DataError, locate_inner_zip, open_jsonl_member
from assertdistill.data.dataset import ArchiveSpec, DistillationStream
from assertdistill.data.encoding import InputEncoder


def member_lines(flags, split="train"):
    location = locate_inner_zip(flags["--distillation_data_path"], flags[f"--{split}_outer_zip_internal_path"])
    with open_jsonl_member(location, flags[f"--{split}_inner_zip_jsonl_filename"], False, "label") as stream:
        return list(iter(stream.readline, b""))


def zipfile_lines(flags, split="train"):
    with zipfile.ZipFile(flags["--distillation_data_path"]) as outer:
        inner = zipfile.ZipFile(io.BytesIO(outer.read(flags[f"--{split}_outer_zip_internal_path"])))
        return inner.read(flags[f"--{split}_inner_zip_jsonl_filename"]).splitlines(keepends=True)


@pytest.mark.parametrize("chunk_bytes", [(7, 13), (1 << 18, 1 << 20)])  # tiny chunks split lines everywhere
@pytest.mark.parametrize("compression", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
def test_member_reader_gives_zipfiles_lines(tmp_path, monkeypatch, chunk_bytes, compression):
    monkeypatch.setattr(zipstream, "RAW_CHUNK_BYTES", chunk_bytes[0])
    monkeypatch.setattr(zipstream, "OUT_CHUNK_BYTES", chunk_bytes[1])
    lines = records_as_lines([make_record(i, 50, padded_length=40) for i in range(3)]) + ["", "  ", "{}"]
    flags = write_archive(str(tmp_path / "d.zip"), lines, [], inner_compression=compression)
    assert member_lines(flags) == zipfile_lines(flags)


def test_member_reader_reports_damage_as_zipfile_does(tmp_path):
    lines = records_as_lines([make_record(i, 50, padded_length=40) for i in range(3)])
    flags = write_archive(str(tmp_path / "d.zip"), lines, [])
    path = tmp_path / "d.zip"
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as outer, zipfile.ZipFile(io.BytesIO(outer.read(
            flags["--train_outer_zip_internal_path"]))) as inner:
        member = inner.infolist()[0]
        inner_offset = data.find(outer.read(flags["--train_outer_zip_internal_path"]))
        middle = inner_offset + member.header_offset + 30 + len(member.filename) + member.compress_size // 2
    data[middle] ^= 0xFF  # one flipped byte in the middle of the deflated JSONL
    path.write_bytes(bytes(data))
    spec = ArchiveSpec(str(path), flags["--train_outer_zip_internal_path"], flags["--train_inner_zip_jsonl_filename"])
    with pytest.raises(DataError, match="truncated or corrupt"):
        list(DistillationStream(spec, InputEncoder(tiny_tokenizer(), 64, 32), 2, True))


def test_prefetched_keeps_order_reraises_in_place_and_closes_on_early_stop():
    def numbers(fail_at=None, closed=None):
        try:
            for number in range(50):
                if number == fail_at:
                    raise ValueError("broken at 7")
                yield number
        finally:
            if closed is not None:
                closed.append(True)

    assert list(archive_module.prefetched(numbers(), depth=2)) == list(range(50))
    seen = []
    with pytest.raises(ValueError, match="broken at 7"):
        for number in archive_module.prefetched(numbers(fail_at=7)):
            seen.append(number)
    assert seen == list(range(7))
    closed = []
    reader = archive_module.prefetched(numbers(closed=closed))
    assert next(reader) == 0
    reader.close()  # the consumer stops early: the thread ends and closes its source
    assert closed == [True] and not any(t.name == "prefetch-lines" for t in threading.enumerate())
