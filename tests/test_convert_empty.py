"""compress.py convert refuses an archive with no records: exit 2, one line, nothing written."""

import os
import zipfile

import pytest
from util import write_archive

import compress


def empty_zip(tmp_path):
    path = tmp_path / "empty.zip"
    with zipfile.ZipFile(path, "w"):
        pass
    return str(path)


def headers_only(tmp_path):
    return write_archive(str(tmp_path / "headers.zip"), [], [])["--distillation_data_path"]


def no_inner_zip(tmp_path):
    path = tmp_path / "readme_only.zip"
    with zipfile.ZipFile(path, "w") as outer:
        outer.writestr("README.txt", "no data here")
    return str(path)


@pytest.mark.parametrize("make_archive", [empty_zip, headers_only, no_inner_zip],
                         ids=["empty_zip", "headers_only", "no_inner_zip"])
def test_convert_of_an_archive_without_records_exits_2_in_one_line(tmp_path, capsys, make_archive):
    source = make_archive(tmp_path)
    code = compress.main(["convert", source, str(tmp_path / "out.zip"), "--to", "8", "--no_progress"])
    captured = capsys.readouterr()
    assert code == 2 and captured.out == ""
    assert captured.err == f"error: {source} holds no records (no JSONL member of an inner ZIP has a record line); " \
                           "nothing written\n"
    assert not (tmp_path / "out.zip").exists()
    assert not [name for name in os.listdir(tmp_path) if name.startswith(".convert_")]
