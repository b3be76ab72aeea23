"""--precision bf16 on the CPU: the fused loss and the chunked attention against float32, the bf16 weight copy,
exact resume, and what a CPU without bf16 instructions does."""

import json
import os
import warnings

import pytest
import torch
from test_resume import final_state, run_script
from util import assert_same_numbers, tiny_model_and_archive, tiny_run_flags, tiny_t5

import script
from assertdistill.core import schema
from assertdistill.distill.loss import DistillationLoss
from assertdistill.distill.training import Trainer
from assertdistill.model import attention, precision
from assertdistill.model.precision import Bf16Weights, cpu_matrix_features, effective_precision, inference_model

CPU = torch.device("cpu")
needs_bf16_cpu = pytest.mark.skipif(not precision.cpu_has_bf16(), reason="the CPU has no bf16 instructions")


@pytest.fixture
def without_bf16(monkeypatch):
    """A CPU without AVX512-BF16 or AMX, as oneDNN's probe would report it; messages shown again."""
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: False)
    monkeypatch.setattr(precision, "_warned", set())


@pytest.fixture
def with_bf16(monkeypatch):
    """A CPU with bf16 instructions (on one without, torch emulates them: slower, the same results)."""
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: True)


def relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got.double() - want.double()).norm() / want.double().norm())


def test_fused_loss_of_bf16_logits_matches_float32():
    """bf16 logits, fp32 arithmetic inside: losses equal fp32's on the same (rounded) values to 1e-5 relative,
    within 1e-2 of the unrounded logits' losses; the bf16 gradient within bf16 rounding (2^-8) of fp32's."""
    generator = torch.Generator().manual_seed(0)
    batch, length, vocab = 2, 24, 3000
    logits32 = torch.randn(batch, length, vocab, generator=generator) * 3
    labels = torch.randint(0, vocab, (batch, length), generator=generator)
    labels[1, 17:] = -100
    mask = labels != -100
    rows = int(mask.sum())
    codes = torch.randint(0, 256, (rows, vocab), generator=generator, dtype=torch.uint8)
    scale, zero = torch.full((rows,), 0.05), torch.full((rows,), 128.0)
    loss_fn = DistillationLoss(2.0, 0.5)

    def losses_and_gradient(logits):
        logits = logits.clone().requires_grad_()
        total, hard, soft = loss_fn.fused(logits, labels, codes, scale, zero, mask)
        (gradient,) = torch.autograd.grad(total, logits)
        return torch.stack([total.detach(), hard, soft]), gradient

    bf16_losses, bf16_gradient = losses_and_gradient(logits32.bfloat16())
    rounded_losses, rounded_gradient = losses_and_gradient(logits32.bfloat16().float())
    exact_losses, _ = losses_and_gradient(logits32)
    assert bf16_losses.dtype == torch.float32 and bf16_gradient.dtype == torch.bfloat16
    torch.testing.assert_close(bf16_losses, rounded_losses, rtol=1e-5, atol=0)
    torch.testing.assert_close(bf16_losses, exact_losses, rtol=1e-2, atol=0)
    assert relative_error(bf16_gradient, rounded_gradient) < 2 ** -8


def test_chunked_attention_in_bf16_matches_float32_as_closely_as_eager_bf16(monkeypatch):
    """bf16 q, k, v, bias: output and gradients within 8% (relative norm) of the float64 reference on the same
    rounded inputs, and within 1.05x the error of eager bf16 attention (float32 log-sum-exp and sums across chunks)."""
    monkeypatch.setattr(attention, "CHUNK_BYTES", 1)  # 16-row chunks: the sums cross chunk borders
    generator = torch.Generator().manual_seed(0)
    query, key, value = (torch.randn(2, 4, 64, 16, generator=generator).mul(2).bfloat16().double() for _ in range(3))
    bias = torch.randn(1, 4, 64, 64, generator=generator).mul(4).bfloat16().double()
    grad_output = torch.randn(2, 4, 64, 16, generator=generator).bfloat16().double()

    def results(function, dtype):
        inputs = [tensor.to(dtype).requires_grad_() for tensor in (query, key, value)]
        output = function(*inputs, bias.to(dtype))
        return (output.detach(), *torch.autograd.grad(output, inputs, grad_output.to(dtype)))

    def eager(q, k, v, b):
        return torch.softmax(q @ k.transpose(-1, -2) + b, dim=-1) @ v

    def chunked(q, k, v, b):
        return attention.ChunkedAttention.apply(q, k, v, b, None, 1.0, 0.0, 0)

    reference = results(eager, torch.float64)
    chunked_bf16, eager_bf16 = results(chunked, torch.bfloat16), results(eager, torch.bfloat16)
    assert all(tensor.dtype == torch.bfloat16 for tensor in chunked_bf16)
    for got, eager_got, want in zip(chunked_bf16, eager_bf16, reference):
        assert relative_error(got, want) < 0.08
        assert relative_error(got, want) <= 1.05 * relative_error(eager_got, want)


def test_bf16_copy_trains_and_the_master_weights_stay_float32():
    """Gradients reach the fp32 master (accumulated in fp32 over micro-steps); refresh rounds the master into the copy."""
    master = tiny_t5().eval()  # no dropout: both micro-steps give the same gradients
    weights = Bf16Weights(master)
    assert all(p.dtype == torch.bfloat16 for p in weights.model.parameters())
    batch = dict(input_ids=torch.randint(3, 300, (2, 9)), labels=torch.randint(3, 300, (2, 5)))
    for _ in range(2):  # two micro-steps
        weights.model(**batch).loss.backward()
        twin_gradients = {name: p.grad.float() for name, p in weights.model.named_parameters()}
        weights.collect_gradients()
    assert all(p.grad is None for p in weights.model.parameters())
    assert all(p.grad.dtype == torch.float32 for p in master.parameters())
    assert master.lm_head.weight.grad.abs().sum() > 0
    for name, parameter in master.named_parameters():  # summed in float32: exactly twice each bf16 gradient
        assert torch.equal(parameter.grad, 2 * twin_gradients[name]), name
    with torch.no_grad():
        for parameter in master.parameters():
            parameter.add_(0.01)
    weights.refresh()
    for parameter, twin in zip(master.parameters(), weights.model.parameters()):
        assert torch.equal(twin, parameter.bfloat16())


def test_trainer_runs_the_bf16_copy_and_evaluation_a_bf16_model(with_bf16):
    model = tiny_t5()
    optimizer = torch.optim.AdamW(model.parameters())
    trainer = Trainer(model, DistillationLoss(2.0, 0.5), optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1),
                      CPU, precision="bf16")
    assert next(trainer.forward_model.parameters()).dtype == torch.bfloat16
    assert all(p.dtype == torch.float32 for p in model.parameters())  # what the optimizer and checkpoints hold
    assert next(inference_model(model, "bf16", CPU).parameters()).dtype == torch.bfloat16
    assert inference_model(model, "fp32", CPU) is model


def test_a_cpu_without_bf16_says_so_once_and_runs_fp32(without_bf16):
    with pytest.warns(UserWarning, match="no bf16 matrix instructions.*computes in fp32"):
        assert effective_precision("bf16", CPU) == "fp32"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per process
        assert effective_precision("bf16", CPU) == "fp32"
    assert Bf16Weights.for_run(tiny_t5(), "bf16", CPU) is None
    assert effective_precision("bf16", torch.device("cuda")) == "bf16"  # GPUs: autocast, as before


def test_bf16_run_on_a_cpu_without_bf16_equals_the_fp32_run(without_bf16, tmp_path, capsys):
    model_dir, flags = tiny_model_and_archive(tmp_path, num_train=8, num_val=4)
    summaries = []
    for name in ("fp32", "bf16"):
        out = str(tmp_path / name)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert script.main(tiny_run_flags(tmp_path, model_dir, flags, **{"--output_dir": out,
                                                                              "--precision": name})) == 0
        said = [str(w.message) for w in caught if "no bf16 matrix instructions" in str(w.message)]
        assert len(said) == (name == "bf16")
        summary = json.loads(open(os.path.join(out, schema.SUMMARY_FILENAME)).read())
        summaries.append(summary[schema.FINAL_EVALUATION_METRICS])
    for metrics in summaries:
        metrics.pop(schema.AVG_INFERENCE_TIME_PER_SAMPLE_MS)
    assert summaries[0] == summaries[1]


def test_matrix_features_read_from_cpuinfo(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx512f avx512_bf16 avx512_vnni amx_tile amx_bf16 amx_int8\n")
    assert cpu_matrix_features(str(cpuinfo)) == ["amx_bf16", "amx_int8", "amx_tile", "avx512_bf16", "avx512_vnni"]
    assert cpu_matrix_features(str(tmp_path / "missing")) == []


@needs_bf16_cpu
def test_killed_bf16_run_resumes_exactly(tmp_path):
    """A --precision bf16 run SIGKILLed mid-epoch and resumed ends as the uninterrupted bf16 run, bit for bit."""
    model_dir, flags = tiny_model_and_archive(tmp_path, num_train=22, num_val=4)
    common = {"--epochs": 2, "--batch_size": 4, "--learning_rate": 3e-3, "--num_beams": 1, "--precision": "bf16"}
    plain = str(tmp_path / "plain")
    assert run_script(tiny_run_flags(tmp_path, model_dir, flags, **common, **{"--output_dir": plain})).returncode == 0
    out = str(tmp_path / "killed")
    argv = tiny_run_flags(tmp_path, model_dir, flags, **common, **{"--output_dir": out, "--save_steps": 2})
    assert run_script(argv, kill="step:9").returncode < 0
    resumed = run_script(argv + ["--resume_from_checkpoint", "latest"])
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "Resuming from" in resumed.stdout
    metrics, history, weights, predictions, _ = final_state(out)
    plain_metrics, plain_history, plain_weights, plain_predictions, _ = final_state(plain)
    assert_same_numbers(metrics, plain_metrics)
    assert_same_numbers(history, plain_history)
    assert all(torch.equal(weights[name], plain_weights[name]) for name in plain_weights)
    assert predictions == plain_predictions
