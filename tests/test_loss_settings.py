"""The loss flags: validation, refused resumes, the temperature schedule, and the teacher-text (sequence-level) CE."""

import json
import math
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from util import tiny_model_and_archive, tiny_run_flags, tiny_t5, tiny_tokenizer

import script
from assertdistill.codec.codec import compress_logits, decode_quantized
from assertdistill.core import schema
from assertdistill.data.dataset import Sample, collate
from assertdistill.distill import training
from assertdistill.distill.checkpoint import CheckpointError, checkpoint_to_resume, save_checkpoint
from assertdistill.distill.config import RunConfig
from assertdistill.distill.forward import BatchLosses, batch_losses, student_logits_for
from assertdistill.distill.loss import DistillationLoss, TemperatureSchedule
from assertdistill.distill.training import Trainer

LOSS_FLAGS = {"divergence": "jsd", "jsd_beta": 0.3, "skew_lambda": 0.2, "teacher_text_weight": 0.5,
              "temperature_final": 1.0, "temperature_schedule": "cosine"}


@pytest.mark.parametrize("flag, value", [("--jsd_beta", "0"), ("--jsd_beta", "1"), ("--skew_lambda", "1.2"),
                                         ("--teacher_text_weight", "-0.1"), ("--temperature_final", "0"),
                                         ("--divergence", "kl"), ("--temperature_schedule", "step")])
def test_out_of_range_loss_flags_are_refused(flag, value, capsys):
    with pytest.raises(SystemExit):
        script.parse_args([flag, value])
    assert flag.lstrip("-") in capsys.readouterr().err


def test_defaults_are_the_thesis_loss():
    args = script.parse_args([])
    assert (args.divergence, args.teacher_text_weight, args.temperature_final) == ("forward_kl", 0.0, None)


@pytest.mark.parametrize("name", LOSS_FLAGS)
def test_resuming_with_another_loss_setting_is_refused(name, tmp_path):
    flags = RunConfig.from_namespace(script.parse_args([])).as_flags()
    checkpoint = save_checkpoint(str(tmp_path), 1, {}, {"args": flags}, save_total_limit=None)
    assert checkpoint_to_resume(checkpoint, str(tmp_path), flags)[0] == checkpoint
    with pytest.raises(CheckpointError, match=f"--{name}"):
        checkpoint_to_resume(checkpoint, str(tmp_path), {**flags, name: LOSS_FLAGS[name]})


def test_a_checkpoint_from_before_the_loss_flags_resumes_with_their_defaults_only(tmp_path):
    flags = RunConfig.from_namespace(script.parse_args([])).as_flags()
    older = {name: value for name, value in flags.items() if name not in LOSS_FLAGS}
    checkpoint = save_checkpoint(str(tmp_path), 1, {}, {"args": older}, save_total_limit=None)
    assert checkpoint_to_resume(checkpoint, str(tmp_path), flags)[0] == checkpoint
    with pytest.raises(CheckpointError, match="--divergence"):
        checkpoint_to_resume(checkpoint, str(tmp_path), {**flags, "divergence": "tvd"})


def test_temperature_schedules():
    assert TemperatureSchedule(2.0).at(0) == TemperatureSchedule(2.0).at(10 ** 6) == 2.0
    linear = TemperatureSchedule(4.0, 1.0, "linear", total_steps=5)
    assert [linear.at(step) for step in range(6)] == [4.0, 3.25, 2.5, 1.75, 1.0, 1.0]
    cosine = TemperatureSchedule(4.0, 1.0, "cosine", total_steps=5)
    expected = [1.0 + 3.0 * (1 + math.cos(math.pi * step / 4)) / 2 for step in range(5)]
    assert [cosine.at(step) for step in range(5)] == pytest.approx(expected)
    assert cosine.at(1) > linear.at(1)  # cosine stays near the start longer
    with pytest.raises(ValueError, match="schedule"):
        TemperatureSchedule(4.0, 1.0, "step")


def test_trainer_moves_the_temperature_per_optimizer_step_and_a_restored_step_restores_it(monkeypatch):
    model = torch.nn.Linear(2, 1)
    seen = []

    def fake_losses(_model, _batch, loss_fn, _precision):
        seen.append(loss_fn.temperature)
        value = model.weight.sum() * 0 + 1.0
        return BatchLosses(value, value.detach(), value.detach(), value.detach())

    monkeypatch.setattr(training, "batch_losses", fake_losses)

    def trainer(global_step=0):
        optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
        loss_fn = DistillationLoss(4.0, 0.5)
        loss_fn.schedule = TemperatureSchedule(4.0, 1.0, "linear", total_steps=3)
        result = Trainer(model, loss_fn, optimizer, scheduler, torch.device("cpu"), gradient_accumulation_steps=2)
        result.global_step = global_step
        return result

    batches = [{"input_ids": torch.zeros((1, 2), dtype=torch.long), "line_numbers": [1]} for _ in range(6)]
    list(trainer().train_epoch(batches, 6, "test"))
    assert seen == [4.0, 4.0, 2.5, 2.5, 1.0, 1.0]  # two micro-steps per optimizer step
    seen.clear()
    list(trainer(global_step=1).train_epoch(batches[:2], 2, "resumed"))  # a checkpoint restores global_step
    assert seen == [2.5, 2.5]


def _samples_with_teacher_text(tokenizer, vocab):
    rng = np.random.default_rng(2)
    samples = []
    for index, (source, target, text) in enumerate([(14, 6, 9), (9, 8, 3), (11, 5, 0)]):
        compressed = compress_logits(rng.normal(size=(1, 12, vocab)).astype(np.float32) * 2, bits=8)
        teacher_labels = list(rng.integers(5, vocab, text)) + [1] if text else []  # [] = no teacher text
        samples.append(Sample(list(rng.integers(5, vocab, source)), list(rng.integers(5, vocab, target)),
                              decode_quantized(compressed, max_positions=target), "gt", "t", "['t']", index,
                              teacher_labels))
    return samples


def test_teacher_text_loss_is_the_ce_of_a_forward_on_the_teachers_text():
    tokenizer = tiny_tokenizer()
    vocab = len(tokenizer)
    model = tiny_t5(tokenizer).eval()
    batch = collate(_samples_with_teacher_text(tokenizer, vocab), tokenizer.pad_token_id)
    assert batch["teacher_labels"].shape == (3, 10) and (batch["teacher_labels"][2] == -100).all()
    weight = 0.4
    loss_fn = DistillationLoss(2.0, 0.7, divergence="reverse_kl", teacher_text_weight=weight)
    total, hard, soft, text = batch_losses(model, batch, loss_fn)
    plain = batch_losses(model, batch, DistillationLoss(2.0, 0.7, divergence="reverse_kl"))
    text_logits = student_logits_for(model, dict(batch, labels=batch["teacher_labels"]))  # (B, Lt, V)
    expected_text = F.cross_entropy(text_logits.reshape(-1, vocab), batch["teacher_labels"].reshape(-1))
    assert torch.allclose(text, expected_text, rtol=1e-5)
    assert torch.allclose(hard, plain.hard, rtol=1e-5) and torch.allclose(soft, plain.soft, rtol=1e-5)
    assert torch.allclose(total, plain.total + weight * expected_text, rtol=1e-5)
    assert float(plain.teacher_text) == 0.0
    total.backward()
    gradients = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    reference = batch_losses(model, batch, DistillationLoss(2.0, 0.7, divergence="reverse_kl")).total
    text_logits = student_logits_for(model, dict(batch, labels=batch["teacher_labels"]))
    reference = reference + weight * F.cross_entropy(text_logits.reshape(-1, vocab), batch["teacher_labels"].reshape(-1))
    reference.backward()
    for got, want in zip(gradients, (p.grad for p in model.parameters())):
        assert torch.allclose(got, want, rtol=1e-4, atol=1e-6)


def test_a_run_with_every_new_loss_setting_reports_them(tmp_path):
    model_dir, flags = tiny_model_and_archive(tmp_path, num_train=8, num_val=4)
    output_dir = tmp_path / "out"
    argv = tiny_run_flags(tmp_path, model_dir, flags, **{"--epochs": 2, "--num_beams": 1, "--divergence": "jsd",
                                                         "--jsd_beta": "0.3", "--teacher_text_weight": "0.5",
                                                         "--temperature": "4", "--temperature_final": "1",
                                                         "--temperature_schedule": "cosine"})
    assert script.main(argv) == 0
    summary = json.loads((output_dir / schema.SUMMARY_FILENAME).read_text())
    args = summary[schema.ARGS]
    assert (args["temperature"], args["temperature_final"], args["divergence"]) == (4.0, 1.0, "jsd")
    history = [json.loads(line) for line in (output_dir / schema.METRICS_FILENAME).read_text().splitlines()]
    train = [entry[schema.HISTORY_TRAIN] for entry in history]
    assert all(entry[schema.TRAIN_TEACHER_TEXT_LOSS] > 0 for entry in train)
    assert train[-1][schema.TRAIN_TEMPERATURE] == 1.0 and 1.0 < train[0][schema.TRAIN_TEMPERATURE] < 4.0
    assert summary[schema.FINAL_EVALUATION_METRICS][schema.AVG_TEACHER_TEXT_LOSS] > 0
    assert os.path.isdir(output_dir / schema.FINAL_MODEL_DIRNAME)


def test_the_run_builds_its_loss_from_the_settings_of_the_same_names():
    config = RunConfig.from_namespace(script.parse_args(["--alpha", "0.3", "--temperature", "4", "--divergence", "jsd",
                                                         "--jsd_beta", "0.2", "--teacher_text_weight", "0.5"]))
    loss = DistillationLoss.from_config(config)
    assert (loss.alpha, loss.temperature, loss.teacher_text_weight) == (0.3, 4.0, 0.5)
    assert loss.divergence is DistillationLoss(1.0, 0.5, divergence="jsd").divergence and loss.parameter == 0.2
