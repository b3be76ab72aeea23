"""DistiLLM's adaptive off-policy replay (--replay_buffer_size, --lmbda_schedule adaptive): the buffer keeps the
newest samples and draws them by seed, the step plan samples while the buffer fills and replays more as
training goes on, the adaptive share rises only on a held-out loss rise, a replay step's soft term is on the
buffer's records without sampling (gradients against autograd), and a killed and resumed run with replay
equals the uninterrupted one."""

import json
import signal

import pytest
import torch
import torch.nn.functional as F
from test_distributed import check_replicas_identical, torchrun
from test_online import ONLINE, no_logits, online_for, parts  # noqa: F401 (fixtures)
from test_resume import final_state, run_script
from util import assert_same_numbers, tiny_run_flags

from assertdistill.core import schema
from assertdistill.core.constants import IGNORE_INDEX
from assertdistill.data.replay_buffer import ReplayBuffer
from assertdistill.distill.forward import student_logits_for
from assertdistill.distill import on_policy
from assertdistill.distill.hidden_states import state_distance
from assertdistill.distill.on_policy import (
    REPLAY,
    SAMPLE,
    TRUTH,
    OnlineDistillation,
    StepPlan,
    is_on_policy_step,
    sampling_seed,
)

CPU = torch.device("cpu")


def test_the_buffer_keeps_the_newest_records_unpadded_and_draws_them_by_seed():
    buffer = ReplayBuffer(3)
    input_ids = torch.tensor([[5, 6, 0], [7, 0, 0]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    labels = torch.tensor([[8, 2, IGNORE_INDEX], [9, 9, 2]])
    buffer.add(input_ids, mask, labels)
    buffer.add(input_ids[:1] + 10, mask[:1], labels[:1])
    buffer.add(input_ids[1:] + 20, mask[1:], labels[1:])  # the first record leaves
    assert [source.tolist() for source, _ in buffer.entries] == [[7], [15, 16], [27]]
    assert [target.tolist() for _, target in buffer.entries] == [[9, 9, 2], [8, 2], [9, 9, 2]]
    drawn = buffer.draw(2, seed=4, pad_token_id=0, device=CPU)
    again = buffer.draw(2, seed=4, pad_token_id=0, device=CPU)
    assert all(torch.equal(drawn[key], again[key]) for key in ("input_ids", "attention_mask", "labels"))
    assert drawn["input_ids"].shape[0] == 2 and len({tuple(row.tolist()) for row in drawn["input_ids"]}) == 2
    for ids, row_mask, row_labels in zip(drawn["input_ids"], drawn["attention_mask"], drawn["labels"]):
        source = ids[row_mask.bool()].tolist()
        target = row_labels[row_labels != IGNORE_INDEX].tolist()
        assert (source, target) in [(s.tolist(), t.tolist()) for s, t in buffer.entries]
        assert ids[~row_mask.bool()].eq(0).all()  # padded with the pad id, masked
    seeds = {tuple(buffer.draw(1, seed=seed, pad_token_id=0, device=CPU)["input_ids"][0].tolist())
             for seed in range(20)}
    assert len(seeds) == 3  # the seed chooses: every record is drawn by some seed
    assert buffer.draw(5, seed=0, pad_token_id=0, device=CPU)["input_ids"].shape[0] == 3  # no more than it holds

    restored = ReplayBuffer(3)
    restored.load_state_dict(buffer.state_dict())
    assert all(torch.equal(a, b) for pair, other in zip(buffer.entries, restored.entries) for a, b in zip(pair, other))
    with pytest.raises(ValueError, match="cannot be restored"):
        ReplayBuffer(4).load_state_dict(buffer.state_dict())
    with pytest.raises(ValueError, match="empty"):
        ReplayBuffer(2).draw(1, 0, 0, CPU)


def test_without_a_buffer_the_plan_is_the_lmbda_draw():
    plan = StepPlan(42, 0.5, 0, 100, 8)
    assert [plan.kind(step) == SAMPLE for step in range(300)] == [is_on_policy_step(42, step, 0.5)
                                                                   for step in range(300)]
    assert REPLAY not in plan.kinds and len(plan.kinds) == 300


def test_the_plan_samples_while_the_buffer_fills_then_replays_more_as_training_goes_on():
    plan = StepPlan(42, 1.0, capacity=32, total_steps=1000, records_per_step=8)
    kinds = "".join(plan.kind(step) for step in range(1000))
    assert kinds[:4] == SAMPLE * 4 and TRUTH not in kinds  # 4 steps x 8 records fill 32; lmbda 1: all on-policy
    first, last = kinds[4:500], kinds[500:]
    assert first.count(REPLAY) / len(first) < 0.35 and last.count(REPLAY) / len(last) > 0.65  # fresh: 1 - progress
    again = StepPlan(42, 1.0, capacity=32, total_steps=1000, records_per_step=8)
    assert again.kind(999) == kinds[999] and "".join(again.kinds) == kinds  # decided in step order, the same anywhere
    half = StepPlan(42, 0.5, capacity=32, total_steps=1000, records_per_step=8)
    half_kinds = "".join(half.kind(step) for step in range(1000))
    assert [kind != TRUTH for kind in half_kinds] == [is_on_policy_step(42, step, 0.5) for step in range(1000)]
    assert half.counts(0, 1000) == (1000 - half_kinds.count(TRUTH), half_kinds.count(REPLAY))
    resumed = StepPlan(42, 1.0, capacity=32, total_steps=1000, records_per_step=8)
    resumed.load_state_dict(json.loads(json.dumps(StepPlan(42, 1.0, 32, 1000, 8).state_dict())))
    resumed.load_state_dict(json.loads(json.dumps({**plan.state_dict(), "kinds": kinds[:300]})))
    assert "".join(resumed.kind(step) for step in range(1000)) == kinds  # the fill count comes back with the kinds


def test_the_adaptive_share_rises_only_when_the_held_out_loss_rises_by_eps():
    plan = StepPlan(42, 0.0, 16, 100, 4, schedule="adaptive", eps=0.1)
    assert plan.kind(0) == TRUTH
    for loss, expected in ((2.0, 0.0), (1.5, 0.0), (2.05, 0.0), (2.1, 0.1), (2.15, 0.1), (2.3, 0.2)):
        plan.after_evaluation(loss)
        assert plan.lmbda == pytest.approx(expected)
    for _ in range(20):
        plan.after_evaluation(plan.reference_loss + 1)
    assert plan.lmbda == 1.0
    assert SAMPLE in "".join(plan.kind(step) for step in range(1, 40))  # later steps use the new share
    constant = StepPlan(42, 0.3, 16, 100, 4)
    constant.after_evaluation(1.0)
    constant.after_evaluation(9.0)
    assert constant.lmbda == 0.3


def test_a_replay_steps_soft_term_is_on_buffer_records_without_sampling(parts, monkeypatch):  # noqa: F811
    tokenizer, student, teacher, batch, loss_fn = parts
    online = online_for(parts, lmbda=1.0, replay_buffer_size=2, hidden_state_weight=0.3)
    generator = torch.Generator().manual_seed(1)
    online.buffer.add(torch.randint(5, len(tokenizer), (2, 6), generator=generator),
                      torch.tensor([[1] * 6, [1] * 4 + [0] * 2]),
                      torch.tensor([[9, 10, 2, IGNORE_INDEX], [11, 12, 13, 2]]))
    online.plan.kinds = [REPLAY] * 4  # steps 0..3 replay; online_for's step is 3
    monkeypatch.setattr(on_policy, "sample_targets", lambda *args, **kwargs: pytest.fail("a replay step sampled"))
    scored = []
    score = teacher.score
    monkeypatch.setattr(teacher, "score", lambda *args, **kwargs: scored.append(args) or score(*args, **kwargs))
    model = online.wrap(student)
    losses = online(model, batch, loss_fn)
    losses.total.backward()
    fused = {name: parameter.grad.clone() for name, parameter in model.named_parameters()}
    model.zero_grad(set_to_none=True)

    replayed = online.buffer.draw(3, sampling_seed(7, 3, 0, 5), student.config.pad_token_id, CPU)
    assert torch.equal(scored[0][0], replayed["input_ids"]) and torch.equal(scored[0][2], replayed["labels"])
    assert replayed["input_ids"].size(0) == 2  # the buffer's two records
    # The oracle: CE on the batch's ground truth, D on the replayed records, hidden states on the truth.
    truth = score(batch["input_ids"], batch["attention_mask"], batch["labels"], True)
    teacher_logits = score(replayed["input_ids"], replayed["attention_mask"], replayed["labels"]).logits
    outputs = student(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                      decoder_input_ids=student.prepare_decoder_input_ids_from_labels(labels=batch["labels"]),
                      output_hidden_states=True)
    hard = F.cross_entropy(outputs.logits.flatten(0, 1), batch["labels"].flatten(), ignore_index=IGNORE_INDEX)
    _, _, soft = loss_fn.forward(student_logits_for(student, replayed), teacher_logits, replayed["labels"])
    hidden = (state_distance(model.projection(outputs.encoder_last_hidden_state), truth.encoder_states,
                             batch["attention_mask"].bool(), "mse")
              + state_distance(model.projection(outputs.decoder_hidden_states[-1]), truth.decoder_states,
                               batch["labels"] != IGNORE_INDEX, "mse")) / 2
    assert losses.soft.item() == pytest.approx(soft.item(), rel=1e-5)
    ((1 - loss_fn.alpha) * hard + loss_fn.alpha * soft + 0.3 * hidden).backward()
    for name, parameter in model.named_parameters():
        assert torch.allclose(fused[name], parameter.grad, rtol=1e-4, atol=1e-6), name


def test_a_sampled_step_fills_the_buffer_with_the_batchs_sources_and_samples(parts):  # noqa: F811
    tokenizer, student, teacher, batch, loss_fn = parts
    online = online_for(parts, lmbda=1.0, replay_buffer_size=5)
    online(student, batch, loss_fn)
    assert online.plan.kinds == [SAMPLE] * 4  # steps 0..3 decided, all sampled while the buffer fills
    samples = on_policy.sample_targets(student, batch["input_ids"], batch["attention_mask"], 9, 1.0,
                                       sampling_seed(7, 3, 0, 5))
    assert len(online.buffer) == 3
    for (source, target), ids, mask, sample in zip(online.buffer.entries, batch["input_ids"],
                                                   batch["attention_mask"], samples):
        assert torch.equal(source, ids[mask.bool()]) and torch.equal(target, sample[sample != IGNORE_INDEX])


REPLAYING = {**ONLINE, "--lmbda": 1.0, "--replay_buffer_size": 8, "--lmbda_schedule": "adaptive",
             "--adaptive_lmbda_eps": 0.0}


def test_a_killed_and_resumed_replay_run_equals_the_uninterrupted_run(no_logits):  # noqa: F811
    root, student_dir, teacher_dir, flags = no_logits
    common = {**REPLAYING, "--teacher_model_name": teacher_dir}
    plain = root / "replay_plain"
    done = run_script(tiny_run_flags(root, student_dir, flags, **common, **{"--output_dir": str(plain)}))
    assert done.returncode == 0, done.stderr[-2000:]
    history = json.loads((plain / schema.SUMMARY_FILENAME).read_text())[schema.TRAINING_HISTORY]
    train = [entry[schema.HISTORY_TRAIN] for entry in history]
    assert sum(entry[schema.TRAIN_REPLAYED_STEPS] for entry in train) > 0
    assert all(entry[schema.TRAIN_ON_POLICY_STEPS] == entry[schema.TRAIN_OPTIMIZER_STEPS] for entry in train)
    assert train[0][schema.TRAIN_LMBDA] == 1.0
    killed = root / "replay_killed"
    argv = tiny_run_flags(root, student_dir, flags, **common, **{"--output_dir": str(killed), "--save_steps": 2})
    assert run_script(argv, kill="step:9").returncode == -signal.SIGKILL  # mid epoch 2, last checkpoint at step 8
    resumed = run_script(argv + ["--resume_from_checkpoint", "latest"])
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    expected, actual = final_state(str(plain)), final_state(str(killed))
    assert_same_numbers(actual[0], expected[0])  # metrics
    assert_same_numbers(actual[1], expected[1])  # history, replayed steps included
    assert all(torch.equal(actual[2][name], expected[2][name]) for name in expected[2])
    assert actual[3] == expected[3]  # predictions


def test_two_gloo_processes_with_replay_end_with_equal_replicas(no_logits, tmp_path):  # noqa: F811
    root, student_dir, teacher_dir, flags = no_logits
    settings = {**REPLAYING, "--teacher_model_name": teacher_dir, "--replay_buffer_size": 4}
    argv = tiny_run_flags(tmp_path, student_dir, flags, **settings)
    proc = torchrun(tmp_path, argv, tmp_path / "dump")
    assert proc.returncode == 0, proc.stderr[-3000:]
    check_replicas_identical(tmp_path / "dump")
    summary = json.loads((tmp_path / "out" / schema.SUMMARY_FILENAME).read_text())
    assert sum(entry[schema.HISTORY_TRAIN][schema.TRAIN_REPLAYED_STEPS] for entry in summary[schema.TRAINING_HISTORY])


def test_naming_a_non_finite_record_samples_nothing_and_uses_the_online_teacher(parts):  # noqa: F811
    tokenizer, student, teacher, batch, loss_fn = parts
    off_policy = online_for(parts)(student, batch, loss_fn)
    online = online_for(parts, lmbda=1.0, replay_buffer_size=4)
    diagnosed = online.truth_losses(student, batch, loss_fn)
    assert diagnosed.total.item() == pytest.approx(off_policy.total.item(), rel=1e-5)
    assert diagnosed.soft.item() > 0 and len(online.buffer) == 0 and online.plan.kinds == []


def test_the_online_bench_times_a_replayed_step(capsys, monkeypatch):
    from benchmarks import online as online_bench

    kinds = []
    call = OnlineDistillation.__call__

    def recording(self, model, batch, loss_fn, precision="fp32"):
        kinds.append((self.config.replay_buffer_size, self.plan.kind(self.step_source())))
        return call(self, model, batch, loss_fn, precision)

    monkeypatch.setattr(OnlineDistillation, "__call__", recording)
    assert online_bench.main(["--student", "tiny", "--teacher", "tiny", "--vocab_size", "300", "--batch_size", "2",
                              "--source_length", "12", "--target_length", "6", "--rounds", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1].startswith("replay_step_ratio=") and float(lines[-1].split("=")[1]) > 0
    assert [kind for size, kind in kinds if size] == [SAMPLE, REPLAY, REPLAY]  # warm-up fills, the timed steps replay
