"""make_teacher_logits.py with a tiny teacher, read back by script.py; demo defaults."""

import gzip
import json
import zipfile

import pytest
import torch
from transformers import AutoModelForSeq2SeqLM
from util import JAVA_SNIPPETS, save_tiny_model, tiny_tokenizer

import make_teacher_logits
import script
from assertdistill.codec.codec import decompress_logits
from assertdistill.core import schema
from assertdistill.data.encoding import InputEncoder
from assertdistill.distill.forward import student_logits_for

ASSERTION_LINES = [["assertEquals(3, calculator.add(1, 2));"], ["assertTrue(stack.isEmpty());", "assertNull(x);"]]


def write_assertion_dataset(path, count):
    with open(path, "w") as stream:
        for index in range(count):
            stream.write(json.dumps({"focal_file": JAVA_SNIPPETS[index % 2], "test_method_masked": JAVA_SNIPPETS[2],
                                     "assertions": ASSERTION_LINES[index % 2], "repo": "demo",
                                     "test_path": f"src/test/T{index}.java"}) + "\n")
        stream.write("{broken\n")
    return str(path)


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    root = tmp_path_factory.mktemp("teacher")
    teacher = save_tiny_model(str(root / "teacher"))
    train = write_assertion_dataset(root / "train.jsonl", 7)
    val = write_assertion_dataset(root / "val.jsonl", 3)
    archive = str(root / "codet5.zip")
    argv = ["--train_file", train, "--val_file", val, "--output", archive, "--teacher_model_name", teacher,
            "--max_src_length", "64", "--max_tgt_length", "24", "--batch_size", "3", "--num_beams", "2",
            "--bits", "8"]
    assert make_teacher_logits.main(argv) == 0
    return root, teacher, archive


def read_jsonl(archive, inner, name):
    with zipfile.ZipFile(archive) as outer, zipfile.ZipFile(outer.open(inner)) as inner_zip:
        return [json.loads(line) for line in inner_zip.read(name).decode().splitlines()]


def test_archive_layout_header_and_records(generated):
    _, teacher, archive = generated
    with zipfile.ZipFile(archive) as outer:
        assert sorted(outer.namelist()) == ["codet5/distillation_data_training.jsonl.zip",
                                            "codet5/distillation_data_validation.jsonl.zip"]
    lines = read_jsonl(archive, "codet5/distillation_data_training.jsonl.zip", "distillation_data_training.jsonl")
    header, records = lines[0]["header"], lines[1:]
    assert header["dataset_type"] == "training" and header["item_count"] == 7 == len(records)
    assert header["skipped"] == {"invalid_json": 1} and header["compression"]["compression_ratio"] > 1
    assert header["args"]["bits"] == 8 and "created_at" in header
    assert (header["compression"]["format"], header["compression"]["bits"]) == ("lz4", 8)
    assert header["compression"]["positions"] == "the target's length"
    record = records[1]
    assert record["original_target"] == "assertTrue(stack.isEmpty());\nassertNull(x);"
    assert isinstance(record["predicted_assertions"], list) and record["repo"] == "demo"
    # Logits are the teacher's, teacher-forced on the ground truth, for the target's real length.
    tokenizer = tiny_tokenizer()
    target = InputEncoder(tokenizer, 64, 24).encode_target(record["original_target"])
    stored = decompress_logits(record["compressed_logits"])
    assert tuple(stored.shape) == (1, len(target), len(tokenizer))
    model = AutoModelForSeq2SeqLM.from_pretrained(teacher).eval()
    encoder = InputEncoder(tokenizer, 64, 24)
    source = torch.tensor([encoder.encode_source(record["focal_file"], record["test_method_masked"])])
    batch = {"input_ids": source, "attention_mask": torch.ones_like(source), "labels": torch.tensor([target])}
    with torch.no_grad():
        expected = student_logits_for(model, batch)
    step = record["compressed_logits"]["scale"]
    assert torch.allclose(stored, expected, atol=step / 2 + 1e-5)


def test_script_reads_the_generated_archive(generated, tmp_path):
    root, teacher, archive = generated
    argv = ["--distillation_data_path", archive,
            "--train_outer_zip_internal_path", "codet5/distillation_data_training.jsonl.zip",
            "--train_inner_zip_jsonl_filename", "distillation_data_training.jsonl",
            "--val_outer_zip_internal_path", "codet5/distillation_data_validation.jsonl.zip",
            "--val_inner_zip_jsonl_filename", "distillation_data_validation.jsonl",
            "--student_model_name", teacher, "--teacher_model_name", teacher, "--epochs", "1",
            "--batch_size", "4", "--num_beams", "1", "--student_max_src_length", "64",
            "--student_max_tgt_length", "24", "--output_dir", str(tmp_path / "out")]
    assert script.main(argv) == 0
    summary = json.loads((tmp_path / "out" / schema.SUMMARY_FILENAME).read_text())
    assert summary[schema.FINAL_EVALUATION_METRICS]["num_eval_samples"] == 3
    assert summary[schema.FINAL_EVALUATION_METRICS]["avg_soft_loss"] > 0
    assert summary[schema.DATA_COUNTS][schema.DATA_COUNTS_TRAINING]["records_used"] == 7


def test_package_only_writes_records_without_teacher_outputs(generated, tmp_path):
    root, _, _ = generated
    archive = str(tmp_path / "raw.zip")
    argv = ["--package_only", "--train_file", str(root / "train.jsonl"), "--val_file", str(root / "val.jsonl"),
            "--output", archive, "--name", "raw", "--limit_train", "4", "--gzip"]
    assert make_teacher_logits.main(argv) == 0
    with zipfile.ZipFile(archive) as outer, zipfile.ZipFile(outer.open("raw/distillation_data_training.jsonl.zip")) as inner:
        lines = gzip.decompress(inner.read("distillation_data_training.jsonl")).decode().splitlines()
    records = [json.loads(line) for line in lines[1:]]
    assert len(records) == 4 and all("compressed_logits" not in record for record in records)


def test_topk_max_assertions_and_trimmed_focal(generated, tmp_path):
    root, teacher, _ = generated
    archive = str(tmp_path / "topk.zip")
    argv = ["--train_file", str(root / "train.jsonl"), "--val_file", str(root / "val.jsonl"), "--output", archive,
            "--teacher_model_name", teacher, "--max_src_length", "128", "--max_tgt_length", "24",
            "--batch_size", "3", "--num_beams", "1", "--topk", "5", "--max_assertions", "1", "--trim_focal"]
    assert make_teacher_logits.main(argv) == 0
    lines = read_jsonl(archive, "codet5/distillation_data_training.jsonl.zip", "distillation_data_training.jsonl")
    header, records = lines[0]["header"], lines[1:]
    # Every other line of the fixture has two assertions: 4 of 7 kept, 3 skipped and counted.
    assert len(records) == 4 and header["skipped"] == {"invalid_json": 1, "more_than_1_assertions": 3}
    compression = header["compression"]
    assert (compression["format"], compression["k"], compression["format_counts"]) == ("topk", 5, {"topk": 4})
    assert (header["args"]["bits"], header["args"]["logits_format"], header["args"]["topk_k"]) == (16, "topk", 5)
    encoder = InputEncoder(tiny_tokenizer(), 128, 24)
    assert all(record["focal_file"] for record in records)
    for record in records:
        assert record["compressed_logits"]["format"] == "topk" and record["compressed_logits"]["k"] == 5
        assert "\n" not in record["original_target"]
        # The stored focal text is the prefix the 128-token source used, and the source is unchanged by it.
        assert len(record["focal_file"]) < len(JAVA_SNIPPETS[0])
        assert JAVA_SNIPPETS[0].startswith(record["focal_file"].rstrip()) or not record["focal_file"]
        assert encoder.encode_source(record["focal_file"], record["test_method_masked"]) == \
            encoder.encode_source(JAVA_SNIPPETS[0], record["test_method_masked"])
        dense = decompress_logits(record["compressed_logits"])
        assert dense.shape[-2] == len(encoder.encode_target(record["original_target"]))


def test_missing_input_file_is_one_line_error(tmp_path, capsys):
    argv = ["--package_only", "--train_file", str(tmp_path / "nope.jsonl"), "--val_file", str(tmp_path / "x"),
            "--output", str(tmp_path / "o.zip")]
    assert make_teacher_logits.main(argv) == 2
    assert capsys.readouterr().err.startswith("error: cannot read assertion dataset")


def test_the_teacher_reads_the_focal_field_given(generated, tmp_path):
    root, teacher, _ = generated
    path = tmp_path / "focal_method.jsonl"
    with open(path, "w") as stream:
        stream.write(json.dumps({"header": {"item_count": 2}}) + "\n[1, 2]\n")  # both skipped and counted
        for index in range(2):  # the focal code under focal_method; a decoy under focal_file
            stream.write(json.dumps({"focal_method": JAVA_SNIPPETS[1], "focal_file": JAVA_SNIPPETS[0],
                                     "test_method_masked": JAVA_SNIPPETS[2],
                                     "assertions": ASSERTION_LINES[index]}) + "\n")
    archive = str(tmp_path / "f.zip")
    argv = ["--train_file", str(path), "--val_file", str(path), "--output", archive, "--teacher_model_name", teacher,
            "--max_src_length", "256", "--max_tgt_length", "24", "--num_beams", "1", "--focal_field", "focal_method",
            "--bits", "32"]
    assert make_teacher_logits.main(argv) == 0
    lines = read_jsonl(archive, "codet5/distillation_data_training.jsonl.zip", "distillation_data_training.jsonl")
    header, record = lines[0]["header"], lines[1]
    assert header["item_count"] == 2 and header["skipped"] == {"header_line": 1, "not_an_object": 1}
    assert record["focal_file"] == JAVA_SNIPPETS[1]
    encoder = InputEncoder(tiny_tokenizer(), 256, 24)
    assert encoder.source_text(JAVA_SNIPPETS[1], JAVA_SNIPPETS[2]) != encoder.source_text(JAVA_SNIPPETS[0],
                                                                                          JAVA_SNIPPETS[2])
    target = encoder.encode_target(record["original_target"])
    model = AutoModelForSeq2SeqLM.from_pretrained(teacher).eval()
    stored = decompress_logits(record["compressed_logits"])  # float32: exact up to the batch's padding
    for focal, matches in ((JAVA_SNIPPETS[1], True), (JAVA_SNIPPETS[0], False)):
        source = torch.tensor([encoder.encode_source(focal, JAVA_SNIPPETS[2])])
        batch = {"input_ids": source, "attention_mask": torch.ones_like(source), "labels": torch.tensor([target])}
        with torch.no_grad():
            expected = student_logits_for(model, batch)
        assert torch.allclose(stored, expected, atol=1e-4) == matches


def test_retrieval_augmented_teacher_inputs_are_the_students(generated, tmp_path):
    """--retrieval_augment 1: a training record's logits are the teacher's on its input with the example the
    training rule retrieves (never itself nor its file; ties: the first record), as script.py builds it."""
    root, teacher, _ = generated
    train = write_assertion_dataset(tmp_path / "train.jsonl", 4)
    archive = str(tmp_path / "k.zip")
    argv = ["--train_file", train, "--val_file", train, "--output", archive, "--teacher_model_name", teacher,
            "--max_src_length", "256", "--max_tgt_length", "24", "--num_beams", "1", "--bits", "32",
            "--retrieval_augment", "1"]
    assert make_teacher_logits.main(argv) == 0
    lines = read_jsonl(archive, "codet5/distillation_data_training.jsonl.zip", "distillation_data_training.jsonl")
    assert lines[0]["header"]["args"]["retrieval_augment"] == 1
    record = lines[1]  # every test method is the same: record 0 retrieves record 1 (itself excluded)
    example = (JAVA_SNIPPETS[2], "\n".join(ASSERTION_LINES[1]))
    model = AutoModelForSeq2SeqLM.from_pretrained(teacher).eval()
    stored = decompress_logits(record["compressed_logits"])
    target = InputEncoder(tiny_tokenizer(), 256, 24).encode_target(record["original_target"])
    for encoder, retrieved, matches in ((InputEncoder(tiny_tokenizer(), 256, 24, examples=1), [example], True),
                                        (InputEncoder(tiny_tokenizer(), 256, 24), [], False)):
        source = torch.tensor([encoder.encode_source(record["focal_file"], JAVA_SNIPPETS[2], retrieved)])
        batch = {"input_ids": source, "attention_mask": torch.ones_like(source), "labels": torch.tensor([target])}
        with torch.no_grad():
            expected = student_logits_for(model, batch)
        assert torch.allclose(stored, expected, atol=1e-4) == matches
