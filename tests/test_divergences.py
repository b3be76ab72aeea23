"""Every divergence: values against formulas written here, gradients against float64 autograd, fused vs unfused."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import assertdistill.distill.loss as loss_module
from assertdistill.codec.codec import compress_topk, decode_quantized, decode_topk
from assertdistill.distill.divergences import CHOICES, DIVERGENCES, divergence_parameter
from script import DistillationLoss

BETA, SKEW = 0.3, 0.2


def formula(name, p, q):
    """D(p, q) per row from probabilities (N, V), float64, as issue 23 writes them."""
    def kl(a, b):
        return (a * (a / b).log()).sum(-1)

    if name == "forward_kl":
        return kl(p, q)
    if name == "reverse_kl":
        return kl(q, p)
    if name == "jsd":
        m = BETA * p + (1 - BETA) * q
        return BETA * kl(p, m) + (1 - BETA) * kl(q, m)
    if name == "skew_kl":
        return kl(p, SKEW * p + (1 - SKEW) * q)
    if name == "skew_reverse_kl":
        return kl(q, SKEW * q + (1 - SKEW) * p)
    assert name == "tvd"
    return 0.5 * (p - q).abs().sum(-1)


def formula_losses(name, logits, labels, teacher_rows, mask, temperature, alpha):
    """(total, hard, soft) from the formula: teacher_rows (N, V) float64 logits at mask's positions."""
    hard = F.cross_entropy(logits.reshape(-1, logits.size(-1)), labels.reshape(-1), ignore_index=-100)
    vocab = min(logits.size(-1), teacher_rows.size(-1))
    p = torch.softmax(teacher_rows[:, :vocab].double() / temperature, -1)
    q = torch.softmax(logits[mask][:, :vocab] / temperature, -1)
    soft = formula(name, p, q).sum() / max(int(mask.sum()), 1) * temperature ** 2
    return (1 - alpha) * hard + alpha * soft, hard, soft


def loss_for(name, temperature=2.0, alpha=0.6):
    return DistillationLoss(temperature=temperature, alpha=alpha, divergence=name, jsd_beta=BETA, skew_lambda=SKEW)


def quantized_case(seed, vocab=40):
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(3, 9, vocab, generator=generator, dtype=torch.float64) * 2
    labels = torch.randint(0, vocab, (3, 9), generator=generator)
    labels[0, 5:] = -100
    labels[2, 2:] = -100
    mask = labels != -100
    mask[1, 6:] = False  # a teacher block shorter than the target
    count = int(mask.sum())
    codes = torch.randint(0, 256, (count, vocab), generator=generator, dtype=torch.uint8)
    scale, zero = torch.rand(count, generator=generator) * 0.04 + 0.01, torch.rand(count, generator=generator) * 200
    return logits.requires_grad_(), labels, codes, scale, zero, mask


@pytest.mark.parametrize("name", CHOICES)
@pytest.mark.parametrize("temperature", [0.5, 2.0])
def test_unfused_values_match_the_formulas(name, temperature):
    generator = torch.Generator().manual_seed(7)
    student = torch.randn(2, 6, 17, generator=generator, dtype=torch.float64)
    teacher = torch.randn(2, 6, 17, generator=generator, dtype=torch.float64) * 3
    labels = torch.randint(0, 17, (2, 6), generator=generator)
    labels[1, 3:] = -100
    mask = labels != -100
    got = loss_for(name, temperature)(student, teacher, labels)
    want = formula_losses(name, student, labels, teacher[mask], mask, temperature, 0.6)
    for value, expected in zip(got, want):
        assert torch.allclose(value.double(), expected, rtol=1e-6, atol=1e-9), (name, value, expected)
    assert got[2] > 0.01  # a real difference between teacher and student


@pytest.mark.parametrize("name", CHOICES)
def test_zero_when_student_equals_teacher(name):
    rows = torch.randn(5, 23, dtype=torch.float64)
    labels = torch.zeros(1, 5, dtype=torch.long)
    _, _, soft = loss_for(name)(rows[None], rows[None].clone(), labels)
    assert abs(float(soft)) < 1e-12


@pytest.mark.parametrize("name", CHOICES)
@pytest.mark.parametrize("chunk_values", [1 << 22, 80])  # 80: two rows per chunk, chunks partly taught
def test_fused_values_and_gradients_match_float64_autograd_of_the_formula(name, chunk_values, monkeypatch):
    monkeypatch.setattr(loss_module, "FUSED_CHUNK_VALUES", chunk_values)
    logits, labels, codes, scale, zero, mask = quantized_case(seed=len(name) + chunk_values % 7)
    teacher = (codes.double() - zero.double()[:, None]) * scale.double()[:, None]
    fused = loss_for(name).fused(logits, labels, codes, scale, zero, mask)
    want = formula_losses(name, logits, labels, teacher, mask, 2.0, 0.6)
    for value, expected in zip(fused, want):
        assert torch.allclose(value.double(), expected.double(), rtol=1e-5, atol=1e-8), (name, value, expected)
    (got,) = torch.autograd.grad(fused[0] * 0.5, logits)
    (expected,) = torch.autograd.grad(want[0] * 0.5, logits)
    assert torch.allclose(got, expected, rtol=1e-5, atol=1e-9), (name, (got - expected).abs().max())


class _RegistryGradient(torch.autograd.Function):
    """sum of D(p, softmax(s)) over rows, its backward the registry's student_gradient (for gradcheck)."""

    @staticmethod
    def forward(ctx, student, teacher_log_probs, name):
        entry = DIVERGENCES[name]
        parameter = divergence_parameter(name, BETA, SKEW)
        log_q = F.log_softmax(student, -1)
        p = teacher_log_probs.exp()
        terms, gradient = entry.evaluate(teacher_log_probs, p, log_q.clone(), parameter, True)
        ctx.save_for_backward(gradient)
        return terms.sum()

    @staticmethod
    def backward(ctx, grad):
        (gradient,) = ctx.saved_tensors
        return gradient * grad, None, None


@pytest.mark.parametrize("name", CHOICES)
def test_registry_gradients_pass_gradcheck(name):
    generator = torch.Generator().manual_seed(11)
    student = torch.randn(4, 9, generator=generator, dtype=torch.float64, requires_grad=True)
    teacher_log_probs = F.log_softmax(torch.randn(4, 9, generator=generator, dtype=torch.float64) * 2, -1)
    assert torch.autograd.gradcheck(lambda s: _RegistryGradient.apply(s, teacher_log_probs, name), (student,))
    evaluate = DIVERGENCES[name].evaluate  # the terms the unfused path differentiates
    parameter = divergence_parameter(name, BETA, SKEW)
    assert torch.autograd.gradcheck(
        lambda s: evaluate(teacher_log_probs, teacher_log_probs.exp(), F.log_softmax(s, -1), parameter, False)[0]
        .sum(), (student,))


def topk_case(seed, vocab=48, k=6, positions=7):
    """A top-k record decoded as training reads it (dense float16, tail filled) and its sparse arrays."""
    rng = np.random.default_rng(seed)
    original = (rng.normal(size=(1, positions, vocab)) * 2).astype(np.float32)
    compressed = compress_topk(original, k)
    stored = decode_quantized(compressed)
    assert stored.bits == 16 and stored.scale == 1.0 and stored.zero_point == 0.0
    return original[0], torch.from_numpy(stored.values), decode_topk(compressed)


def dense_from_sparse(sparse, vocab):
    """Top-k values at their ids, the tail logit elsewhere, float64, built here from the sparse arrays."""
    dense = torch.from_numpy(sparse.tail.astype(np.float64))[:, None].repeat(1, vocab)
    dense.scatter_(1, torch.from_numpy(sparse.indices.astype(np.int64)),
                   torch.from_numpy(sparse.values.astype(np.float64)))
    return dense


@pytest.mark.parametrize("name", CHOICES)
def test_topk_storage_reads_the_tail_as_flat_for_every_divergence(name):
    """The documented choice (docs/LOSSES.md): each of the V - k tail entries holds the tail logit."""
    original, values, sparse = topk_case(seed=3)
    positions, vocab = values.shape
    generator = torch.Generator().manual_seed(5)
    logits = torch.randn(1, positions, vocab, generator=generator, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, vocab, (1, positions), generator=generator)
    mask = labels != -100
    ones, zeros = torch.ones(positions), torch.zeros(positions)
    fused = loss_for(name).fused(logits, labels, values, ones, zeros, mask)
    flat_tail = dense_from_sparse(sparse, vocab)
    want = formula_losses(name, logits, labels, flat_tail, mask, 2.0, 0.6)
    for value, expected in zip(fused, want):
        assert torch.allclose(value.double(), expected, rtol=2e-3, atol=1e-6), (name, value, expected)
    (got,) = torch.autograd.grad(fused[0], logits)
    (expected,) = torch.autograd.grad(want[0], logits)
    assert torch.allclose(got, expected, rtol=2e-3, atol=1e-6)
    # A student whose rows equal the flat-tail reconstruction has no soft loss; the original rows do.
    with torch.no_grad():
        as_stored = loss_for(name, alpha=1.0).fused(flat_tail[None], labels, values, ones, zeros, mask)[2]
        as_original = loss_for(name, alpha=1.0).fused(torch.from_numpy(original).double()[None], labels, values,
                                                      ones, zeros, mask)[2]
    assert abs(float(as_stored)) < 1e-3 * float(as_original) and float(as_original) > 1e-3


def test_unknown_divergence_and_parameters_out_of_range_are_refused():
    with pytest.raises(ValueError, match="unknown divergence"):
        DistillationLoss(temperature=2.0, alpha=0.5, divergence="kl")
    for keyword, value in (("jsd_beta", 0.0), ("jsd_beta", 1.0), ("skew_lambda", 1.5), ("skew_lambda", 0.0)):
        with pytest.raises(ValueError, match=keyword):
            DistillationLoss(temperature=2.0, alpha=0.5, divergence="jsd", **{keyword: value})


def test_default_is_the_thesis_forward_kl():
    loss = DistillationLoss(temperature=2.0, alpha=0.5)
    assert loss.divergence.name == "forward_kl"


@pytest.mark.parametrize("name", CHOICES)
def test_fused_equals_unfused_on_8_bit_storage(name, monkeypatch):
    monkeypatch.setattr(loss_module, "FUSED_CHUNK_VALUES", 120)  # three rows per chunk
    logits, labels, codes, scale, zero, _ = quantized_case(seed=21)
    mask = labels != -100  # the unfused API reads the teacher at every label position
    codes = torch.randint(0, 256, (int(mask.sum()), codes.size(1)), dtype=torch.uint8,
                          generator=torch.Generator().manual_seed(1))
    scale, zero = scale[:1].expand(len(codes)).contiguous(), zero[:1].expand(len(codes)).contiguous()
    teacher = torch.zeros(logits.shape, dtype=torch.float64)
    teacher[mask] = (codes.double() - zero.double()[:, None]) * scale.double()[:, None]
    loss = loss_for(name, temperature=1.5, alpha=0.8)
    fused = loss.fused(logits, labels, codes, scale, zero, mask)
    unfused = loss(logits, teacher, labels)
    for got, want in zip(fused, unfused):
        assert torch.allclose(got.double(), want.double(), rtol=1e-5, atol=1e-8)
    (got,) = torch.autograd.grad(fused[0], logits)
    (want,) = torch.autograd.grad(unfused[0], logits)
    assert torch.allclose(got, want, rtol=1e-5, atol=1e-9)
