"""--teacher_source online, on-policy steps (--lmbda) and hidden-state distillation (--hidden_state_weight):
the online teacher's logits are the archive's to its storage precision, an on-policy step's soft targets are
the student's seeded samples while the hard CE stays on the ground truth, the fused gradients equal autograd's,
a killed and resumed --lmbda 0.5 run equals an uninterrupted one, and two gloo processes stay identical."""

import json
import os
import signal

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from test_distributed import check_replicas_identical, torchrun
from test_resume import final_state, run_script
from transformers import AutoModelForSeq2SeqLM, T5ForConditionalGeneration
from util import (
    assert_same_numbers,
    make_record,
    records_as_lines,
    save_tiny_model,
    tiny_run_flags,
    tiny_t5,
    tiny_tokenizer,
    write_archive,
)

import script
from assertdistill.codec.codec import compress_logits, dequantize_codes
from assertdistill.core import schema
from assertdistill.core.constants import IGNORE_INDEX
from assertdistill.data.dataset import ArchiveSpec, DistillationStream
from assertdistill.data.encoding import InputEncoder
from assertdistill.distill.checkpoint import checkpoints_in
from assertdistill.distill.config import RunConfig
from assertdistill.distill.forward import student_logits_for
from assertdistill.distill.hidden_states import state_distance
from assertdistill.distill.loss import DistillationLoss
from assertdistill.distill.on_policy import OnlineDistillation, is_on_policy_step, sample_targets, sampling_seed
from assertdistill.distill.training import make_loader
from assertdistill.model.tokenizer import t5_config_for
from assertdistill.teacher.online import OnlineTeacher, teacher_rows

CPU = torch.device("cpu")


def records_without_teacher(indices, vocab):
    """Records with neither compressed_logits nor a teacher prediction."""
    records = [make_record(index, vocab, with_logits=False) for index in indices]
    for record in records:
        record.pop("predicted_assertions")
    return records


def test_online_logits_equal_the_archives_to_its_storage_precision(tmp_path):
    tokenizer = tiny_tokenizer()
    teacher = tiny_t5(tokenizer, seed=1).eval()
    encoder = InputEncoder(tokenizer, 64, 32)
    records = [make_record(index, len(tokenizer), with_logits=False) for index in range(6)]
    for record in records:  # the archive's logits: this teacher, run record by record, stored as 8-bit codes
        source = torch.tensor([encoder.encode_source(record["focal_file"], record["test_method_masked"])])
        labels = torch.tensor([encoder.encode_target(record["original_target"])])
        with torch.no_grad():
            logits = teacher(input_ids=source, decoder_input_ids=teacher.prepare_decoder_input_ids_from_labels(
                labels=labels)).logits  # (1, L, V)
        record["compressed_logits"] = compress_logits(logits.numpy(), bits=8)
    flags = write_archive(str(tmp_path / "d.zip"), records_as_lines(records), records_as_lines(records[:1]))
    stream = DistillationStream(ArchiveSpec(flags["--distillation_data_path"], flags["--train_outer_zip_internal_path"],
                                            flags["--train_inner_zip_jsonl_filename"]), encoder, 4, need_logits=True)
    online = OnlineTeacher(teacher, CPU)
    checked = 0
    for batch in make_loader(stream, 0, False):
        if not isinstance(batch, dict):
            continue
        rows = teacher_rows(online.score(batch["input_ids"], batch["attention_mask"], batch["labels"]).logits,
                            batch["labels"])  # padded batch, teacher run now
        assert torch.equal(rows["teacher_position_mask"], batch["teacher_position_mask"])
        stored = dequantize_codes(batch["teacher_values"], batch["teacher_scale"][:, None],
                                  batch["teacher_zero_point"][:, None])  # (N, V)
        error = (rows["teacher_values"] - stored).abs().amax(dim=1)  # (N,)
        assert bool((error <= batch["teacher_scale"] * 0.5 * (1 + 1e-3)).all())  # half an 8-bit step at most
        assert bool((error > 0).any())  # and the comparison is not of a copy with itself
        checked += len(error)
    assert checked == sum(len(encoder.encode_target(record["original_target"])) for record in records)


@pytest.fixture
def parts():
    """A student, an online teacher of another width, a batch, the loss."""
    tokenizer = tiny_tokenizer()
    student = tiny_t5(tokenizer, seed=0).eval()  # eval: no dropout, so the oracle sees the same network
    teacher = OnlineTeacher(tiny_t5(tokenizer, seed=1, d_model=48), CPU)
    generator = torch.Generator().manual_seed(0)
    labels = torch.randint(5, len(tokenizer), (3, 7), generator=generator)
    labels[1, 5:] = IGNORE_INDEX
    batch = {"input_ids": torch.randint(5, len(tokenizer), (3, 11), generator=generator),
             "attention_mask": torch.ones(3, 11, dtype=torch.long), "labels": labels, "batch_index": 5}
    batch["attention_mask"][2, 8:] = 0
    return tokenizer, student, teacher, batch, DistillationLoss(2.0, 0.6, divergence="jsd", jsd_beta=0.5)


def online_for(parts, step: int = 3, **settings) -> OnlineDistillation:
    tokenizer, student, teacher, _, _ = parts
    config = RunConfig(teacher_source="online", seed=7, student_max_tgt_length=9, **settings)
    online = OnlineDistillation(teacher, student, tokenizer, config)
    online.step_source = lambda: step
    return online


def test_an_on_policy_steps_soft_targets_are_the_students_seeded_samples(parts, monkeypatch):
    tokenizer, student, teacher, batch, loss_fn = parts
    online = online_for(parts, lmbda=1.0)
    scored = []
    score = teacher.score
    monkeypatch.setattr(teacher, "score", lambda *args, **kwargs: scored.append(args[2]) or score(*args, **kwargs))
    losses = online(student, batch, loss_fn)

    seed = sampling_seed(7, 3, 0, 5)
    samples = sample_targets(student, batch["input_ids"], batch["attention_mask"], 9, 1.0, seed)
    assert len(scored) == 1 and torch.equal(scored[0], samples)  # the teacher scored the student's samples
    assert torch.equal(samples, sample_targets(student, batch["input_ids"], batch["attention_mask"], 9, 1.0, seed))
    assert not torch.equal(samples, sample_targets(student, batch["input_ids"], batch["attention_mask"], 9, 1.0,
                                                   seed + 1))
    for row in samples.tolist():  # targets end at the first eos; nothing is taught after it
        if tokenizer.eos_token_id in row:
            end = row.index(tokenizer.eos_token_id)
            assert all(token == IGNORE_INDEX for token in row[end + 1:])
            assert IGNORE_INDEX not in row[:end + 1]
    assert samples.size(1) <= 8  # at most --student_max_tgt_length - 1 tokens after the start token
    with torch.no_grad():  # the hard term is the CE on the ground truth, the soft term D on the samples
        truth_logits = student_logits_for(student, batch)
        sample_logits = student_logits_for(student, dict(batch, labels=samples))
        teacher_logits = score(batch["input_ids"], batch["attention_mask"], samples).logits
    assert losses.hard.item() == pytest.approx(loss_fn.hard_loss(truth_logits, batch["labels"]).item(), rel=1e-5)
    _, _, soft = loss_fn.forward(sample_logits, teacher_logits, samples)
    assert losses.soft.item() == pytest.approx(soft.item(), rel=1e-5)
    assert losses.total.item() == pytest.approx(((1 - loss_fn.alpha) * losses.hard + loss_fn.alpha * soft).item(),
                                                rel=1e-5)


def test_lmbda_is_the_share_of_steps_drawn_the_same_by_every_process():
    draws = [is_on_policy_step(42, step, 0.5) for step in range(2000)]
    assert 0.45 < sum(draws) / len(draws) < 0.55
    assert draws == [is_on_policy_step(42, step, 0.5) for step in range(2000)]  # a function of (seed, step)
    assert not any(is_on_policy_step(42, step, 0.0) for step in range(100))
    assert all(is_on_policy_step(42, step, 1.0) for step in range(100))


@pytest.mark.parametrize("lmbda", [0.0, 1.0])
@pytest.mark.parametrize("kind", ["mse", "cosine"])
def test_gradients_equal_autograds(parts, lmbda, kind):
    tokenizer, student, teacher, batch, loss_fn = parts
    online = online_for(parts, lmbda=lmbda, hidden_state_weight=0.3, hidden_state_loss=kind)
    model = online.wrap(student)
    online(model, batch, loss_fn).total.backward()
    fused = {name: parameter.grad.clone() for name, parameter in model.named_parameters()}
    model.zero_grad(set_to_none=True)

    # The oracle: every term by plain autograd.
    soft_labels = batch["labels"]
    if lmbda:
        soft_labels = sample_targets(student, batch["input_ids"], batch["attention_mask"], 9, 1.0,
                                     sampling_seed(7, 3, 0, 5))
    truth = teacher.score(batch["input_ids"], batch["attention_mask"], batch["labels"], True)
    teacher_logits = teacher.score(batch["input_ids"], batch["attention_mask"], soft_labels).logits
    outputs = student(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                      decoder_input_ids=student.prepare_decoder_input_ids_from_labels(labels=batch["labels"]),
                      output_hidden_states=True)
    soft_logits = student_logits_for(student, dict(batch, labels=soft_labels))
    hard = F.cross_entropy(outputs.logits.flatten(0, 1), batch["labels"].flatten(), ignore_index=IGNORE_INDEX)
    _, _, soft = loss_fn.forward(soft_logits, teacher_logits, soft_labels)
    hidden = (state_distance(model.projection(outputs.encoder_last_hidden_state), truth.encoder_states,
                             batch["attention_mask"].bool(), kind)
              + state_distance(model.projection(outputs.decoder_hidden_states[-1]), truth.decoder_states,
                               batch["labels"] != IGNORE_INDEX, kind)) / 2
    ((1 - loss_fn.alpha) * hard + loss_fn.alpha * soft + 0.3 * hidden).backward()
    for name, parameter in model.named_parameters():
        assert torch.allclose(fused[name], parameter.grad, rtol=1e-4, atol=1e-6), name
    assert fused["projection.weight"].abs().sum() > 0


def test_teacher_text_comes_from_the_teacher_where_the_archive_has_none(parts):
    tokenizer, student, teacher, batch, _ = parts
    online = online_for(parts, teacher_text_weight=0.5)
    archive_text = torch.tensor([[7, 8, 2], [IGNORE_INDEX] * 3, [9, 2, IGNORE_INDEX]])
    labels = online.teacher_text_labels(dict(batch, teacher_labels=archive_text, line_numbers=[1, 2, 3]), "training")
    generated = teacher.texts(dict(batch, line_numbers=[1, 2, 3]), "training", 1, 9)  # cached: the same ids
    assert labels[0, :3].tolist() == [7, 8, 2] and labels[2, :2].tolist() == [9, 2]
    assert [token for token in labels[1].tolist() if token != IGNORE_INDEX] == generated[1]
    assert generated[1]  # the tiny teacher writes something


def test_a_teacher_with_another_vocabulary_is_refused_in_one_line(tmp_path, capsys):
    tokenizer = tiny_tokenizer()
    student_dir = save_tiny_model(str(tmp_path / "student"))
    config = t5_config_for(tokenizer, d_model=32, d_ff=64, d_kv=8, num_heads=2, num_layers=1, num_decoder_layers=1)
    config.vocab_size = len(tokenizer) + 10
    T5ForConditionalGeneration(config).save_pretrained(str(tmp_path / "teacher"))
    records = records_without_teacher(range(4), len(tokenizer))
    flags = write_archive(str(tmp_path / "d.zip"), records_as_lines(records), records_as_lines(records))
    argv = tiny_run_flags(tmp_path, student_dir, flags, **{"--teacher_model_name": str(tmp_path / "teacher"),
                                                           "--teacher_source": "online"})
    assert script.main(argv) != 0
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"vocabulary of {len(tokenizer) + 10} tokens and the student {len(tokenizer)}" in last
    assert "student's tokenizer" in last


def test_on_policy_and_hidden_states_need_the_online_teacher(no_logits, capsys):
    root, student_dir, teacher_dir, flags = no_logits
    for flag, value in (("--lmbda", 0.5), ("--hidden_state_weight", 0.5), ("--replay_buffer_size", 8),
                        ("--lmbda_schedule", "adaptive")):
        argv = tiny_run_flags(root, student_dir, flags, **{flag: value, "--output_dir": str(root / "refused")})
        assert script.main(argv) == 2
        last = capsys.readouterr().err.strip().splitlines()[-1]
        assert "--replay_buffer_size and --hidden_state_weight need --teacher_source online" in last
    argv = tiny_run_flags(root, student_dir, flags, **{"--teacher_source": "online", "--teacher_model_name": teacher_dir,
                                                       "--replay_buffer_size": 8, "--output_dir": str(root / "refused")})
    assert script.main(argv) == 2  # a buffer that no on-policy step would fill
    assert "--replay_buffer_size needs on-policy steps" in capsys.readouterr().err.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def no_logits(tmp_path_factory):
    """A student, a wider teacher (its own weights) and an archive whose records carry no logits and no teacher text."""
    root = tmp_path_factory.mktemp("online")
    student_dir = save_tiny_model(str(root / "student"))
    teacher_dir = save_tiny_model(str(root / "teacher"), seed=5, d_model=48)  # seed 5 writes text
    vocab = len(tiny_tokenizer())
    flags = write_archive(str(root / "d.zip"), records_as_lines(records_without_teacher(range(22), vocab)),
                          records_as_lines(records_without_teacher(range(50, 54), vocab)))
    return root, student_dir, teacher_dir, flags


def teacher_predictions(teacher_dir: str, flags: dict) -> list[str]:
    """The teacher's greedy predictions on the validation records, as tiny_run_flags's lengths encode them."""
    tokenizer = tiny_tokenizer()
    teacher = OnlineTeacher(AutoModelForSeq2SeqLM.from_pretrained(teacher_dir), CPU)
    stream = DistillationStream(ArchiveSpec(flags["--distillation_data_path"], flags["--val_outer_zip_internal_path"],
                                            flags["--val_inner_zip_jsonl_filename"]), InputEncoder(tokenizer, 64, 32),
                                4, need_logits=False, require_teacher=False)
    texts = []
    for batch in make_loader(stream, 0, False):
        if isinstance(batch, dict):
            texts += [tokenizer.decode(ids, skip_special_tokens=True) for ids in teacher.texts(batch, "v", 1, 32)]
    return texts


ONLINE = {"--teacher_source": "online", "--lmbda": 0.5, "--hidden_state_weight": 0.5, "--divergence": "jsd",
          "--epochs": 2, "--num_beams": 1, "--learning_rate": 3e-3}


def test_an_online_run_trains_on_an_archive_without_logits_and_records_its_settings(no_logits):
    root, student_dir, teacher_dir, flags = no_logits
    out = root / "run"
    argv = tiny_run_flags(root, student_dir, flags, **ONLINE, **{"--teacher_model_name": teacher_dir,
                                                                 "--output_dir": str(out), "--save_steps": 3,
                                                                 "--teacher_text_weight": 0.5})
    assert script.main(argv) == 0
    summary = json.loads((out / schema.SUMMARY_FILENAME).read_text())
    args = summary[schema.ARGS]
    assert (args["teacher_source"], args["lmbda"], args["hidden_state_weight"]) == ("online", 0.5, 0.5)
    assert summary[schema.DATA_COUNTS][schema.DATA_COUNTS_TRAINING]["records_used"] == 22
    entries = [json.loads(line) for line in (out / schema.METRICS_FILENAME).read_text().splitlines()]
    steps = [entry[schema.HISTORY_TRAIN][schema.TRAIN_ON_POLICY_STEPS] for entry in entries]
    assert steps == [sum(is_on_policy_step(42, step, 0.5) for step in range(6 * epoch, 6 * epoch + 6))
                     for epoch in range(2)] and sum(steps) > 0
    assert all(entry[schema.HISTORY_TRAIN][schema.TRAIN_TEACHER_SOURCE] == "online" for entry in entries)
    assert all(torch.isfinite(torch.tensor(entry[schema.HISTORY_TRAIN][schema.TRAIN_TEACHER_TEXT_LOSS]))
               for entry in entries)
    card = (out / schema.FINAL_MODEL_DIRNAME / schema.MODEL_CARD_FILENAME).read_text()
    assert "| `--teacher_source` | `online` |" in card and "| `--lmbda` | `0.5` |" in card
    rows = [json.loads(line) for line in (out / schema.PREDICTIONS_FILENAME).read_text().splitlines()]
    expected = teacher_predictions(teacher_dir, flags)  # the records have none: the teacher's own, generated
    assert [row[schema.ROW_TEACHER_PREDICTION] for row in rows] == expected and any(expected)
    # The projection (student 32 wide, teacher 48) is in the checkpoints, not in the saved student.
    weights = load_file(str(out / schema.FINAL_MODEL_DIRNAME / "model.safetensors"))
    assert not [name for name in weights if "projection" in name]
    checkpoint = torch.load(os.path.join(checkpoints_in(str(out))[-1][1], "state.pt"), weights_only=True)
    assert checkpoint["hidden_state_projection"]["weight"].shape == (48, 32)


def test_a_killed_and_resumed_on_policy_run_equals_the_uninterrupted_run(no_logits):
    root, student_dir, teacher_dir, flags = no_logits
    common = {**ONLINE, "--teacher_model_name": teacher_dir}
    plain = root / "plain"
    assert run_script(tiny_run_flags(root, student_dir, flags, **common, **{"--output_dir": str(plain)})) \
        .returncode == 0
    killed = root / "killed"
    argv = tiny_run_flags(root, student_dir, flags, **common, **{"--output_dir": str(killed), "--save_steps": 2})
    assert run_script(argv, kill="step:9").returncode == -signal.SIGKILL  # mid epoch 2, last checkpoint at step 8
    resumed = run_script(argv + ["--resume_from_checkpoint", "latest"])
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "global step 8" in resumed.stdout
    expected, actual = final_state(str(plain)), final_state(str(killed))
    assert_same_numbers(actual[0], expected[0])  # metrics
    assert_same_numbers(actual[1], expected[1])  # history, on-policy steps included
    assert all(torch.allclose(actual[2][name], expected[2][name]) for name in expected[2])
    assert actual[3] == expected[3]  # predictions


def test_two_gloo_processes_with_lmbda_and_hidden_states_end_with_equal_replicas(no_logits, tmp_path):
    root, student_dir, teacher_dir, flags = no_logits
    argv = tiny_run_flags(tmp_path, student_dir, flags, **ONLINE, **{"--teacher_model_name": teacher_dir,
                                                                     "--gradient_accumulation_steps": 2})
    proc = torchrun(tmp_path, argv, tmp_path / "dump")
    assert proc.returncode == 0, proc.stderr[-3000:]
    check_replicas_identical(tmp_path / "dump")
    summary = json.loads((tmp_path / "out" / schema.SUMMARY_FILENAME).read_text())
    assert sum(entry[schema.HISTORY_TRAIN][schema.TRAIN_ON_POLICY_STEPS] for entry in summary[schema.TRAINING_HISTORY])
