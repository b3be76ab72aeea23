"""compress.py in-process: inspect, convert (top-k and re-quantizing) and the storage report."""

import gzip
import io
import json
import os
import zipfile

import numpy as np
import pytest
from torch.utils.data import DataLoader
from util import make_record, records_as_lines, tiny_tokenizer, write_archive

import compress
from assertdistill.codec.codec import compress_logits, decode_quantized, decompress_logits
from assertdistill.data.dataset import ArchiveSpec, DistillationStream
from assertdistill.data.datastats import DataStats
from assertdistill.data.encoding import InputEncoder
from assertdistill.data.storage_report import kl_per_position

BROKEN = "{broken"
NO_LOGITS = json.dumps({"test_method_masked": "x", "original_target": "assertTrue(x);",
                        "model_prediction": "assertTrue(x);"})


def vocab():
    return len(tiny_tokenizer())


@pytest.fixture
def archive(tmp_path):
    """Training: five 8-bit records, one 4-bit record of 30 positions, two bad lines; validation: one 16-bit."""
    records = [make_record(i, vocab()) for i in range(5)] + [make_record(5, vocab(), bits=4, padded_length=30)]
    train = records_as_lines(records) + [BROKEN, NO_LOGITS]
    val = records_as_lines([make_record(10, vocab(), bits=16)])
    return write_archive(str(tmp_path / "data.zip"), train, val, gzipped=True)


def run(argv, capsys):
    """(exit code, stdout, stderr) of compress.main(argv)."""
    code = compress.main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def member_lines(path, inner, name):
    """Lines of a JSONL member (gunzipped when needed) of an inner ZIP of an outer ZIP."""
    with zipfile.ZipFile(path) as outer:
        with zipfile.ZipFile(io.BytesIO(outer.read(inner))) as inner_zip:
            payload = inner_zip.read(name)
    return (gzip.decompress(payload) if payload[:2] == b"\x1f\x8b" else payload).decode().splitlines()


def drain(flags, split="train"):
    """(teacher rows of every batch, stats) of a DistillationStream over the split."""
    spec = ArchiveSpec(flags["--distillation_data_path"], flags[f"--{split}_outer_zip_internal_path"],
                       flags[f"--{split}_inner_zip_jsonl_filename"], gzipped=True)
    stream = DistillationStream(spec, InputEncoder(tiny_tokenizer(), 128, 48), 4, need_logits=True)
    batches, stats = [], DataStats()
    for item in DataLoader(stream, batch_size=None):
        if isinstance(item, DataStats):
            stats.merge(item)
        else:
            batches.append(item)
    return len(stream), batches, stats


# ---------------------------------------------------------------- inspect


def test_inspect_prints_counts_formats_shapes_and_bad_records(archive, capsys):
    code, out, _ = run(["inspect", archive["--distillation_data_path"], "--no_progress"], capsys)
    assert code == 0
    assert "records: 8 inspected, 6 decodable, 2 bad" in out
    assert "invalid_json: 1" in out and "missing_compressed_logits: 1" in out
    assert "formats: 4-bit x1, 8-bit x5" in out and "formats: 16-bit x1" in out
    assert "positions T: min 24 / median 24 / max 30" in out and f"vocab V: {vocab()} x6" in out
    assert "dataset_type=training, item_count=8" in out
    assert "8-bit step s" in out and "4-bit step s" in out


def test_inspect_json_report(archive, capsys):
    code, out, _ = run(["inspect", archive["--distillation_data_path"], "--json", "--no_progress"], capsys)
    assert code == 0
    train, val = json.loads(out)["members"]
    assert train["member"] == "distillation_data_training.jsonl" and train["gzipped"] is True
    assert train["records_inspected"] == 8 and train["records_decodable"] == 6
    assert train["bad_records"] == {"invalid_json": 1, "missing_compressed_logits": 1}
    assert train["formats"] == {"4-bit": 1, "8-bit": 5} and train["vocab_sizes"] == {str(vocab()): 6}
    assert (train["positions"]["min"], train["positions"]["max"]) == (24, 30)
    eight = train["quantization_step"]["8-bit"]
    assert eight["count"] == 5 and eight["max_abs_error_bound"]["max"] == eight["max"] / 2
    sizes = train["bytes_per_record"]
    assert sizes["hex_bytes"]["mean"] == 2 * sizes["lz4_bytes"]["mean"]
    assert train["compression_ratio_vs_float32"]["lz4"] > 1
    assert val["formats"] == {"16-bit": 1} and val["quantization_step"] == {}


def test_inspect_limit_and_inner(archive, capsys):
    argv = ["inspect", archive["--distillation_data_path"], "--json", "--no_progress", "--limit", "2",
            "--inner", archive["--train_outer_zip_internal_path"]]
    code, out, _ = run(argv, capsys)
    (member,) = json.loads(out)["members"]
    assert code == 0 and member["records_inspected"] == 2 and member["limit_reached"] is True


def not_a_zip(tmp_path):
    path = tmp_path / "notes.zip"
    path.write_text("not a zip")
    return str(path)


def corrupt_inner(tmp_path):
    path = str(tmp_path / "corrupt.zip")
    with zipfile.ZipFile(path, "w") as outer:
        outer.writestr("codet5/x.jsonl.zip", b"PK garbage")
    return path


@pytest.mark.parametrize(("make_path", "message"), [
    (lambda tmp_path: str(tmp_path / "missing.zip"), "not found"),
    (not_a_zip, "not a readable ZIP"),
    (corrupt_inner, "not a readable ZIP"),
])
@pytest.mark.parametrize("command", ["inspect", "convert", "report"])
def test_user_errors_are_one_line_and_exit_2(tmp_path, capsys, make_path, message, command):
    path = make_path(tmp_path)
    argv = {"inspect": ["inspect", path, "--no_progress"],
            "convert": ["convert", path, str(tmp_path / "out.zip"), "--to", "8", "--no_progress"],
            "report": ["report", "--from", path, "--vocab", "50"]}[command]
    code, out, err = run(argv, capsys)
    assert code == 2 and out == ""
    assert err.startswith("error: ") and message in err and err.count("\n") == 1
    assert not (tmp_path / "out.zip").exists()
    assert not [name for name in os.listdir(tmp_path) if name.startswith(".convert_")]


def test_unknown_inner_zip_lists_the_archive(archive, capsys):
    code, _, err = run(["inspect", archive["--distillation_data_path"], "--inner", "nope.zip"], capsys)
    assert code == 2 and "nope.zip" in err and "distillation_data_training.jsonl.zip" in err


# ---------------------------------------------------------------- convert


def test_convert_to_topk_streams_the_same_records_with_the_teacher_top_entries(archive, tmp_path, capsys):
    source = archive["--distillation_data_path"]
    converted = {**archive, "--distillation_data_path": str(tmp_path / "topk.zip")}
    code, out, _ = run(["convert", source, converted["--distillation_data_path"], "--to", "topk", "--k", "64",
                        "--no_progress"], capsys)
    assert code == 0 and "6 records converted, kept unchanged: invalid_json 1, no_compressed_logits 1" in out

    count_before, _, stats_before = drain(archive)
    count_after, batches, stats_after = drain(converted)
    assert count_after == count_before == 8
    assert stats_after.used == stats_before.used == 6 and stats_after.skipped == stats_before.skipped
    assert all(batch["teacher_values"].dtype.is_floating_point for batch in batches)

    before = [json.loads(line) for line in member_lines(source, archive["--train_outer_zip_internal_path"],
                                                        archive["--train_inner_zip_jsonl_filename"])[1:7]]
    after = [json.loads(line) for line in member_lines(converted["--distillation_data_path"],
                                                       archive["--train_outer_zip_internal_path"],
                                                       archive["--train_inner_zip_jsonl_filename"])[1:7]]
    kls = []
    for old, new in zip(before, after):
        assert new["compressed_logits"]["format"] == "topk"
        original = decompress_logits(old["compressed_logits"])[0].numpy()  # (T, V)
        dense = decompress_logits(new["compressed_logits"])[0].numpy()
        assert dense.shape == original.shape
        top = np.sort(original, axis=1)[:, -64:]  # top-k values, tie-proof
        np.testing.assert_allclose(np.sort(dense, axis=1)[:, -64:], top, rtol=1e-3, atol=1e-3)
        kls.append(kl_per_position(original, dense, 1.0))
    assert np.concatenate(kls).mean() < 0.03  # the flat tail costs ~0.017 nats here (V = 320, k = 64)


def test_convert_keeps_layout_header_and_other_fields(archive, tmp_path, capsys):
    source, target = archive["--distillation_data_path"], str(tmp_path / "four.zip")
    with zipfile.ZipFile(source, "a") as outer:
        outer.writestr("codet5/README.txt", "kept as is")
    code, _, _ = run(["convert", source, target, "--to", "4", "--max_positions", "5", "--no_progress"], capsys)
    assert code == 0
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target) as new:
        assert old.namelist() == new.namelist()
        assert new.read("codet5/README.txt") == b"kept as is"
    inner, name = archive["--train_outer_zip_internal_path"], archive["--train_inner_zip_jsonl_filename"]
    old_lines, new_lines = member_lines(source, inner, name), member_lines(target, inner, name)
    header = json.loads(new_lines[0])["header"]
    assert header["dataset_type"] == "training" and header["item_count"] == 8
    assert header["args"]["bits"] == 4 and header["compression"]["bits"] == 4
    assert header["converted"]["records_converted"] == 6 and header["converted"]["max_positions"] == 5
    assert header["converted"]["records_kept_unchanged"] == {"invalid_json": 1, "no_compressed_logits": 1}
    assert new_lines[7:] == old_lines[7:] == [BROKEN, NO_LOGITS]  # bad lines copied unchanged
    for old_line, new_line in zip(old_lines[1:7], new_lines[1:7]):
        old_record, new_record = json.loads(old_line), json.loads(new_line)
        old_logits, new_logits = old_record.pop("compressed_logits"), new_record.pop("compressed_logits")
        assert old_record == new_record
        assert new_logits["shape"] == [1, 5, vocab()] and new_logits["bits"] == 4
        quantized = decode_quantized(new_logits)
        assert quantized.bits == 4 and quantized.values.shape == (5, vocab())
        original = decompress_logits(old_logits, max_positions=5).numpy()
        assert np.abs(decompress_logits(new_logits).numpy() - original).max() <= new_logits["scale"] / 2 + 1e-5


def test_convert_reads_deflated_inner_zips_and_uncompressed_jsonl(tmp_path, capsys):
    lines = records_as_lines([make_record(i, vocab()) for i in range(3)])
    flags = write_archive(str(tmp_path / "d.zip"), lines, lines[:1], header=False,
                          inner_compression=zipfile.ZIP_DEFLATED)
    target = str(tmp_path / "sixteen.zip")
    assert run(["convert", flags["--distillation_data_path"], target, "--to", "16", "--no_progress"], capsys)[0] == 0
    with zipfile.ZipFile(target) as outer:
        assert {info.compress_type for info in outer.infolist()} == {zipfile.ZIP_DEFLATED}
    new_lines = member_lines(target, flags["--train_outer_zip_internal_path"],
                             flags["--train_inner_zip_jsonl_filename"])
    assert len(new_lines) == 3 and all(json.loads(line)["compressed_logits"]["bits"] == 16 for line in new_lines)


def test_convert_and_inspect_keep_every_batch_row(tmp_path, capsys):
    record = make_record(0, vocab())
    logits = np.random.default_rng(0).normal(0.0, 2.0, (2, 6, vocab())).astype(np.float32)  # (B=2, T, V)
    record["compressed_logits"] = compress_logits(logits, bits=8)
    flags = write_archive(str(tmp_path / "b.zip"), records_as_lines([record]), [])
    code, out, _ = run(["inspect", flags["--distillation_data_path"], "--no_progress"], capsys)
    assert code == 0 and "8-bit (2 batch rows; training reads the first) x1" in out
    names = (flags["--train_outer_zip_internal_path"], flags["--train_inner_zip_jsonl_filename"])
    for target, kept in (("16", False), ("topk", True)):  # top-k holds one row: the record is kept as it was
        output = str(tmp_path / f"{target}.zip")
        extra = ["--k", "4"] if target == "topk" else []
        code, out, _ = run(["convert", flags["--distillation_data_path"], output, "--to", target, "--no_progress",
                            *extra], capsys)
        assert code == 0
        converted = json.loads(member_lines(output, *names)[1])["compressed_logits"]
        if kept:
            assert converted == record["compressed_logits"] and "not_representable 1" in out
        else:
            assert converted["shape"] == [2, 6, vocab()] and converted["bits"] == 16
            expected = decompress_logits(record["compressed_logits"]).numpy().astype(np.float16).astype(np.float32)
            np.testing.assert_array_equal(decompress_logits(converted).numpy(), expected)


def test_convert_refuses_to_overwrite_and_checks_flags(archive, tmp_path, capsys):
    source = archive["--distillation_data_path"]
    code, _, err = run(["convert", source, source, "--to", "8"], capsys)
    assert code == 2 and err.startswith("error: ") and "--overwrite" in err
    for flags in (["--to", "topk"], ["--to", "8", "--k", "4"], ["--to", "7"], ["--to", "topk", "--k", "0"]):
        with pytest.raises(SystemExit) as caught:
            compress.parse_args(["convert", source, str(tmp_path / "o.zip"), *flags])
        assert caught.value.code == 2


# ---------------------------------------------------------------- report and the public API


def test_report_prints_every_form_and_json(capsys):
    argv = ["report", "--vocab", "300", "--positions", "8", "--records", "1"]
    code, out, _ = run(argv, capsys)
    assert code == 0
    for form in ("16-bit", "8-bit", "4-bit", "topk k=16", "topk k=64", "topk k=256"):
        assert f"\n{form} " in out
    assert "KL T=1 mean / max" in out and "KL T=4 mean / max" in out
    code, out, _ = run(argv + ["--json"], capsys)
    forms = {row["form"]: row for row in json.loads(out)["forms"]}
    assert code == 0 and len(forms) == 6
    kl = {name: row["kl"]["1.0"]["mean"] for name, row in forms.items()}
    assert kl["16-bit"] < kl["8-bit"] < kl["4-bit"] and kl["topk k=256"] < kl["topk k=16"]
    assert forms["8-bit"]["hex_bytes_per_record"] == 2 * forms["8-bit"]["lz4_bytes_per_record"]
    assert forms["8-bit"]["step"] > 0 and forms["topk k=16"]["step"] is None


def test_report_from_an_archive_says_what_the_originals_are(archive, capsys):
    code, out, _ = run(["report", "--from", archive["--distillation_data_path"], "--positions", "4"], capsys)
    assert code == 0 and "8-bit records are not the teacher's original logits" in out
    assert f"2 record(s) of 4 positions x V = {vocab()}" in out


def test_thesis_imports_the_codec_from_compress():
    from compress import compress_logits, decompress_logits

    logits = np.linspace(-3, 3, 24, dtype=np.float32).reshape(1, 4, 6)
    assert np.abs(decompress_logits(compress_logits(logits, bits=8)).numpy() - logits).max() < 0.02
