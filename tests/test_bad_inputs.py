"""Every bad input answered: a clear one-line message and a defined outcome (skip and count, or stop)."""

import errno
import json
import zipfile

import pytest
import torch
from util import make_record, records_as_lines, save_tiny_model, tiny_run_flags, tiny_tokenizer, write_archive

import script
from assertdistill.core import schema
from assertdistill.distill import summary, training
from assertdistill.distill.forward import BatchLosses
from assertdistill.distill.loss import DistillationLoss
from assertdistill.distill.training import Trainer, TrainingError


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_tiny_model(str(tmp_path_factory.mktemp("bad") / "model"))


def vocab():
    return len(tiny_tokenizer())


def run_cli(tmp_path, model_dir, flags, capsys, **overrides):
    code = script.main(tiny_run_flags(tmp_path, model_dir, flags, **{"--num_beams": 1, **overrides}))
    return code, capsys.readouterr()


def summary_of(tmp_path):
    return json.loads((tmp_path / "out" / schema.SUMMARY_FILENAME).read_text())


# Archives that must stop the run with exit code 2 and a one-line message containing the text.
def empty_outer(path):
    zipfile.ZipFile(path, "w").close()
    return {"--distillation_data_path": str(path), "--train_outer_zip_internal_path": "codet5/x.zip",
            "--train_inner_zip_jsonl_filename": "x.jsonl", "--val_outer_zip_internal_path": "codet5/y.zip",
            "--val_inner_zip_jsonl_filename": "y.jsonl"}


STOPPING = [
    ("empty_archive", empty_outer, "holds [nothing]"),
    ("header_only", lambda path: write_archive(str(path), [], []), "holds no records"),
]


@pytest.mark.parametrize("make_archive, message", [case[1:] for case in STOPPING], ids=[c[0] for c in STOPPING])
def test_archives_that_stop_the_run(tmp_path, model_dir, capsys, make_archive, message):
    code, output = run_cli(tmp_path, model_dir, make_archive(tmp_path / "d.zip"), capsys)
    assert code == 2
    last = output.err.strip().splitlines()[-1]
    assert last.startswith("error: ") and message in last and "Traceback" not in output.err


def broken_logits(record, mutate):
    mutate(record["compressed_logits"])
    return record


# Records that are skipped and counted under a reason while the run goes on.
SKIPPED = [
    ("missing_test_method_masked", lambda r: r.pop("test_method_masked") and r),
    ("wrong_field_type", lambda r: r.update(original_target=["assertTrue(a);", 5]) or r),  # thesis: join fails
    ("bad_compressed_logits", lambda r: broken_logits(r, lambda c: c["data_encoded"].update(data="0g"))),
    ("bad_compressed_logits", lambda r: broken_logits(
        r, lambda c: c["data_encoded"].update(data=c["data_encoded"]["data"][:200]))),  # truncated frame
    ("bad_compressed_logits", lambda r: broken_logits(r, lambda c: c["data_encoded"].update(encoding="zstd"))),
    ("bad_compressed_logits", lambda r: broken_logits(r, lambda c: c.update(bits=3))),
    ("bad_compressed_logits", lambda r: broken_logits(r, lambda c: c.update(shape=[1, 5, 7]))),
    ("bad_compressed_logits", lambda r: broken_logits(r, lambda c: c.update(scale=float("nan")))),
]


@pytest.mark.parametrize("reason, corrupt", SKIPPED, ids=[f"{c[0]}_{i}" for i, c in enumerate(SKIPPED)])
def test_bad_records_are_skipped_and_counted(tmp_path, model_dir, capsys, reason, corrupt):
    good = records_as_lines([make_record(i, vocab()) for i in range(4)])
    bad = json.dumps(corrupt(make_record(9, vocab())))
    flags = write_archive(str(tmp_path / "d.zip"), good + [bad], good[:2])
    code, output = run_cli(tmp_path, model_dir, flags, capsys)
    assert code == 0, output.err
    assert summary_of(tmp_path)[schema.DATA_COUNTS][schema.DATA_COUNTS_TRAINING]["skipped_by_reason"] == {reason: 1}
    assert f"{reason}: 1" in output.out  # printed after the pass


@pytest.mark.parametrize("teacher_vocab", [vocab() - 20, vocab() + 20])
def test_teacher_vocabulary_of_another_size_is_cut_with_a_warning(tmp_path, model_dir, capsys, teacher_vocab):
    lines = records_as_lines([make_record(i, teacher_vocab) for i in range(4)])
    flags = write_archive(str(tmp_path / "d.zip"), lines, lines[:2])
    with pytest.warns(UserWarning, match="vocabular"):
        code, _ = run_cli(tmp_path, model_dir, flags, capsys)
    assert code == 0 and summary_of(tmp_path)[schema.FINAL_EVALUATION_METRICS]["avg_soft_loss"] > 0


def test_teacher_shorter_than_target_is_noted_and_used(tmp_path, model_dir, capsys):
    lines = records_as_lines([make_record(i, vocab(), padded_length=3) for i in range(4)])
    flags = write_archive(str(tmp_path / "d.zip"), lines, lines[:2])
    code, _ = run_cli(tmp_path, model_dir, flags, capsys)
    assert code == 0
    training_counts = summary_of(tmp_path)[schema.DATA_COUNTS][schema.DATA_COUNTS_TRAINING]
    assert training_counts["notes"] == {"teacher_shorter_than_target": 4}


def test_output_dir_that_cannot_be_created(tmp_path, model_dir, capsys):
    flags = write_archive(str(tmp_path / "d.zip"), records_as_lines([make_record(0, vocab())]), [])
    (tmp_path / "a_file").write_text("x")
    code, output = run_cli(tmp_path, model_dir, flags, capsys, **{"--output_dir": str(tmp_path / "a_file" / "out")})
    assert code == 2 and "cannot create output dir" in output.err


def test_disk_full_while_saving_the_summary(tmp_path, model_dir, capsys, monkeypatch):
    flags = write_archive(str(tmp_path / "d.zip"), records_as_lines([make_record(0, vocab())]), [])

    def full_disk(_):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(summary.os, "fsync", full_disk)
    code, output = run_cli(tmp_path, model_dir, flags, capsys)
    assert code == 2
    assert "cannot write" in output.err and "No space left on device" in output.err
    assert not any(path.name.startswith(".tmp_") for path in (tmp_path / "out").iterdir())


def test_non_finite_losses_are_skipped_counted_named_and_stop_the_run_when_persistent(monkeypatch, capsys):
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    trainer = Trainer(model, DistillationLoss(2.0, 0.5), optimizer, scheduler, torch.device("cpu"))

    def fake_losses(_, batch, *__):  # the mean of the batch's "loss" column
        value = batch["loss"].mean() * model.weight.sum() / model.weight.sum().detach()
        return BatchLosses(value, value.detach(), value.detach(), value.detach())

    def batch_of(*losses, first_line=1):
        return {"input_ids": torch.zeros((len(losses), 2), dtype=torch.long), "loss": torch.tensor(losses),
                "line_numbers": list(range(first_line, first_line + len(losses)))}

    monkeypatch.setattr(training, "batch_losses", fake_losses)
    batches = [batch_of(1.0, float("nan"), first_line=5), batch_of(1.0, 2.0), batch_of(float("inf"), float("inf"))]
    steps = list(trainer.train_epoch(batches, 6, "test"))
    result = trainer.epoch_result
    assert steps == [1] and result.skipped_nonfinite_steps == 2 and result.optimizer_steps == 1
    assert result.loss == pytest.approx(1.5)  # the finite batch only
    log = capsys.readouterr().out
    assert "record(s) at line(s) 6\n" in log  # the one record of the first batch that is non-finite on its own
    assert "record(s) at line(s) 1, 2\n" in log
    with pytest.raises(TrainingError, match="non-finite for 20 batches in a row"):
        list(trainer.train_epoch([batch_of(float("nan")) for _ in range(30)], 30, "test"))
