"""DistillationLoss against the thesis formula on fully padded tensors, its limiting cases, and the fused path."""

import contextlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from util import tiny_t5, tiny_tokenizer

from assertdistill.codec.codec import compress_logits, decode_quantized
from assertdistill.data.dataset import Sample, collate
from assertdistill.distill.forward import batch_losses
from script import DistillationLoss


def thesis_loss(student_logits, teacher_logits, labels, temperature, alpha):
    """The thesis computation, written out independently: full padded tensors, F.kl_div on probabilities."""
    hard = F.cross_entropy(student_logits.reshape(-1, student_logits.size(-1)), labels.reshape(-1), ignore_index=-100)
    length = min(student_logits.size(1), teacher_logits.size(1))
    vocab = min(student_logits.size(-1), teacher_logits.size(-1))
    log_q = F.log_softmax(student_logits[:, :length, :vocab] / temperature, dim=-1)
    p = F.softmax(teacher_logits[:, :length, :vocab] / temperature, dim=-1)
    kl = F.kl_div(log_q, p, reduction="none").sum(-1)
    mask = (labels[:, :length] != -100).float()
    soft = (kl * mask).sum() / mask.sum().clamp(min=1e-9) * temperature ** 2
    return (1 - alpha) * hard + alpha * soft, hard, soft


def random_case(seed, batch=3, length=7, vocab=11, teacher_length=None, teacher_vocab=None):
    generator = torch.Generator().manual_seed(seed)
    student = torch.randn(batch, length, vocab, generator=generator, dtype=torch.float64)
    teacher = torch.randn(batch, teacher_length or length, teacher_vocab or vocab, generator=generator,
                          dtype=torch.float64) * 3
    labels = torch.randint(0, vocab, (batch, length), generator=generator)
    labels[0, 4:] = -100
    labels[2, 2:] = -100
    return student, teacher, labels


@pytest.mark.parametrize("alpha", [0.0, 0.3, 0.7, 1.0])
@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.0, 8.0])
def test_matches_thesis_formula(alpha, temperature):
    student, teacher, labels = random_case(seed=int(alpha * 10 + temperature * 100))
    total, hard, soft = DistillationLoss(temperature, alpha)(student, teacher, labels)
    expected = thesis_loss(student, teacher, labels, temperature, alpha)
    if alpha == 0:  # the thesis skips the soft term entirely at alpha 0
        expected = (expected[1], expected[1], torch.zeros(()))
    for got, want in zip((total, hard, soft), expected):
        assert torch.allclose(got.double(), want.double(), rtol=1e-5, atol=1e-6)


def test_alpha_limits():
    student, teacher, labels = random_case(seed=1)
    total, hard, _ = DistillationLoss(2.0, 0.0)(student, teacher, labels)
    assert torch.allclose(total, F.cross_entropy(student.reshape(-1, 11).float(), labels.reshape(-1)))
    total, _, soft = DistillationLoss(2.0, 1.0)(student, teacher, labels)
    assert torch.allclose(total, soft) and soft > 0


def test_soft_term_is_zero_when_teacher_equals_student():
    student, _, labels = random_case(seed=2)
    _, _, soft = DistillationLoss(3.0, 0.5)(student, student.clone(), labels)
    assert abs(soft.item()) < 1e-5


def test_cuts_to_shorter_sequence_and_smaller_vocabulary_with_one_warning():
    student, teacher, labels = random_case(seed=3, teacher_length=5, teacher_vocab=9)
    loss = DistillationLoss(2.0, 0.6)
    with pytest.warns(UserWarning, match="vocabulary"):
        result = loss(student, teacher, labels)
    expected = thesis_loss(student, teacher, labels, 2.0, 0.6)
    for got, want in zip(result, expected):
        assert torch.allclose(got.double(), want.double(), rtol=1e-5)


def test_trimmed_batch_loss_equals_fully_padded_thesis_loss():
    """The suite's batch path (pad to longest, 8-bit codes at label positions) equals the thesis path."""
    tokenizer = tiny_tokenizer()
    model = tiny_t5(tokenizer).eval()
    vocab = len(tokenizer)
    rng = np.random.default_rng(0)
    samples, full_teacher = [], []
    padded_target, padded_source = 20, 48
    for index, (source_length, target_length) in enumerate([(30, 6), (12, 9), (21, 4)]):
        logits = rng.normal(size=(1, 16, vocab)).astype(np.float32) * 2
        compressed = compress_logits(logits, bits=8)
        full_teacher.append(decode_quantized(compressed).dequantize())  # (16, V) what the thesis decodes
        samples.append(Sample(list(rng.integers(5, vocab, source_length)), list(rng.integers(5, vocab, target_length)),
                              decode_quantized(compressed, max_positions=target_length), "gt", "t", "['t']", index))
    batch = collate(samples, tokenizer.pad_token_id)
    loss_fn = DistillationLoss(2.0, 0.7)
    with torch.no_grad():
        total, hard, soft, _ = batch_losses(model, batch, loss_fn)

        # Thesis path: everything padded to fixed lengths, teacher padded to 16 positions in full.
        input_ids = torch.full((3, padded_source), tokenizer.pad_token_id)
        labels = torch.full((3, padded_target), -100)
        for row, sample in enumerate(samples):
            input_ids[row, : len(sample.input_ids)] = torch.tensor(sample.input_ids)
            labels[row, : len(sample.labels)] = torch.tensor(sample.labels)
        outputs = model(input_ids=input_ids, attention_mask=(input_ids != tokenizer.pad_token_id).long(), labels=labels)
        expected = thesis_loss(outputs.logits, torch.stack(full_teacher), labels, 2.0, 0.7)
    for got, want in zip((total, hard, soft), expected):
        assert torch.allclose(got, want, rtol=1e-4), (got, want)


def dequantized(codes, scale, zero):
    """The teacher logits of stored codes, (codes - zero_point) * scale, written here (not the codec's function)."""
    return (codes.double() - zero.double()[:, None]) * scale.double()[:, None]


def reference_losses(loss_fn, logits, labels, codes, scale, zero, mask):
    hard = loss_fn.hard_loss(logits, labels)
    soft = torch.zeros(())
    if codes is not None and loss_fn.alpha > 0:
        teacher = dequantized(codes, scale, zero)
        soft = loss_fn.soft_loss_from_rows(logits[mask], teacher, mask.sum())
    return loss_fn.combine(hard, soft), hard, soft


@pytest.mark.parametrize("temperature, alpha, teacher_vocab, teacher", [
    (2.0, 0.7, 40, True), (1.0, 0.0, 40, True), (0.5, 1.0, 40, True), (4.0, 0.3, 33, True), (2.0, 0.5, 40, False)])
def test_fused_loss_matches_reference_values_and_gradients(temperature, alpha, teacher_vocab, teacher):
    generator = torch.Generator().manual_seed(int(temperature * 10 + alpha * 100))
    logits = torch.randn(3, 9, 40, generator=generator, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, 40, (3, 9), generator=generator)
    labels[0, 5:] = -100
    labels[2, 2:] = -100
    mask = labels != -100
    mask[1, 6:] = False  # a teacher block shorter than the target
    count = int(mask.sum())
    codes = torch.randint(0, 256, (count, teacher_vocab), generator=generator, dtype=torch.uint8) if teacher else None
    scale, zero = torch.rand(count, generator=generator) * 0.1 + 0.01, torch.rand(count, generator=generator) * 200
    loss_fn = DistillationLoss(temperature, alpha)
    with pytest.warns(UserWarning, match="vocabulary") if teacher and teacher_vocab != 40 and alpha else \
            contextlib.nullcontext():
        fused = loss_fn.fused(logits, labels, codes, scale, zero, mask)
    expected = reference_losses(loss_fn, logits, labels, codes, scale, zero, mask)
    for got, want in zip(fused, expected):
        assert torch.allclose(got.double(), want.double(), rtol=1e-5, atol=1e-7)
    assert not fused[1].requires_grad and not fused[2].requires_grad  # logged, not backpropagated
    for scale_by in (1.0, 0.25):  # 0.25: gradient accumulation divides the loss
        if scale_by != 1.0:  # the fused backward runs once: a fresh graph
            fused = loss_fn.fused(logits, labels, codes, scale, zero, mask)
        (got,) = torch.autograd.grad(fused[0] * scale_by if scale_by != 1.0 else fused[0], logits)
        (want,) = torch.autograd.grad(expected[0] * scale_by, logits, retain_graph=True)
        assert torch.allclose(got, want, rtol=1e-4, atol=1e-7)


def test_fused_backward_scales_in_place_and_refuses_a_second_run():
    logits = torch.randn(2, 4, 30, requires_grad=True)
    labels = torch.randint(0, 30, (2, 4))
    saved = []

    def keep(tensor):
        saved.append(tensor)
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(keep, lambda tensor: tensor):
        total = DistillationLoss(2.0, 0.0).fused(logits, labels, None, None, None, None)[0]
    (gradient,) = torch.autograd.grad(total * 3.0, logits, retain_graph=True)
    assert any(tensor.data_ptr() == gradient.data_ptr() for tensor in saved)  # scaled in place, no new (B, L, V)
    assert torch.allclose(gradient, torch.autograd.grad(F.cross_entropy(logits.reshape(-1, 30), labels.reshape(-1))
                                                        * 3.0, logits)[0], atol=1e-7)
    with pytest.raises(RuntimeError, match="runs once"):
        torch.autograd.grad(total, logits)


def test_fused_loss_without_gradient_keeps_no_buffer():
    logits = torch.randn(2, 5, 30)
    labels = torch.randint(0, 30, (2, 5))
    with torch.no_grad():
        total, hard, _ = DistillationLoss(2.0, 0.0).fused(logits, labels, None, None, None, None)
    assert torch.allclose(hard, torch.nn.functional.cross_entropy(logits.reshape(-1, 30), labels.reshape(-1)))
    assert torch.allclose(total, hard)


def test_collate_and_batch_losses_unchanged_by_fused_path():
    """batch_losses == the unfused formula on a collated batch (what Trainer and evaluate see)."""
    tokenizer = tiny_tokenizer()
    vocab = len(tokenizer)
    rng = np.random.default_rng(1)
    samples = []
    from assertdistill.data.dataset import Sample

    for index, (source, target) in enumerate([(20, 5), (9, 8)]):
        compressed = compress_logits(rng.normal(size=(1, 12, vocab)).astype(np.float32), bits=8)
        samples.append(Sample(list(rng.integers(5, vocab, source)), list(rng.integers(5, vocab, target)),
                              decode_quantized(compressed, max_positions=target), "gt", "t", "['t']", index))
    batch = collate(samples, tokenizer.pad_token_id)
    model = tiny_t5(tokenizer).eval()
    loss_fn = DistillationLoss(2.0, 0.7)
    total, hard, soft, _ = batch_losses(model, batch, loss_fn)
    from assertdistill.distill.forward import student_logits_for

    logits = student_logits_for(model, batch)
    expected = reference_losses(loss_fn, logits, batch["labels"], batch["teacher_values"], batch["teacher_scale"],
                                batch["teacher_zero_point"], batch["teacher_position_mask"])
    for got, want in zip((total, hard, soft), expected):
        assert torch.allclose(got, want, rtol=1e-5)
    total.backward()
    fused_gradients = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    expected[0].backward()
    for got, want in zip(fused_gradients, (p.grad for p in model.parameters())):
        assert torch.allclose(got, want, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA device"))])
def test_fp16_fused_gradient_under_a_grad_scaler_matches_float32(device):
    """float16 logits (as under fp16 autocast) and a GradScaler-sized factor: no gradient flushed to zero."""
    generator = torch.Generator().manual_seed(0)
    rows, vocab = 256, 32100
    logits32 = (torch.randn(2, rows // 2, vocab, generator=generator) * 2).half().float().to(device)
    labels = torch.randint(0, vocab, (2, rows // 2), generator=generator).to(device)
    mask = labels != -100
    codes = torch.randint(0, 256, (rows, vocab), generator=generator, dtype=torch.uint8).to(device)
    scale, zero = torch.full((rows,), 0.05, device=device), torch.full((rows,), 128.0, device=device)
    loss_fn = DistillationLoss(2.0, 0.5)
    gradients = []
    for logits in (logits32.clone().requires_grad_(), logits32.half().requires_grad_()):
        total = loss_fn.fused(logits, labels, codes, scale, zero, mask)[0]
        (gradient,) = torch.autograd.grad(total * 65536.0, logits)  # GradScaler's initial scale
        assert gradient.dtype == logits.dtype
        gradients.append(gradient.float())
    reference, half = gradients
    flushed = ((half == 0) & (reference != 0)).float().mean()
    assert flushed < 1e-3, flushed
    assert (half - reference).norm() / reference.norm() < 1e-3


class _SyncCounter(TorchDispatchMode):
    """Counts the ops that wait for a CUDA device when their input lives there (.item(), bool(), nonzero)."""

    SYNCING = {torch.ops.aten._local_scalar_dense.default, torch.ops.aten.nonzero.default,
               torch.ops.aten.is_nonzero.default}

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += func in self.SYNCING
        return func(*args, **(kwargs or {}))


def test_fused_loss_syncs_a_fixed_number_of_times_whatever_the_chunk_count(monkeypatch):
    """The chunk loop itself never waits for the device: the syncs do not grow with the number of chunks."""
    from assertdistill.distill import loss as loss_module

    generator = torch.Generator().manual_seed(4)
    logits = torch.randn(4, 16, 50, generator=generator, requires_grad=True)
    labels = torch.randint(0, 50, (4, 16), generator=generator)
    labels[1, 9:] = -100
    mask = labels != -100
    mask[2, 5:] = False
    count = int(mask.sum())
    codes = torch.randint(0, 256, (count, 50), generator=generator, dtype=torch.uint8)
    scale, zero = torch.full((count,), 0.05), torch.full((count,), 128.0)
    syncs = []
    for chunk_values in (1 << 22, 50 * 3):  # 1 chunk, then 22 chunks of 3 rows
        monkeypatch.setattr(loss_module, "FUSED_CHUNK_VALUES", chunk_values)
        with _SyncCounter() as counter:
            DistillationLoss(2.0, 0.5, divergence="jsd").fused(logits, labels, codes, scale, zero, mask)
        syncs.append(counter.count)
    assert syncs[0] == syncs[1] <= 4, syncs


def test_fp16_gradient_rows_far_above_and_below_one_keep_their_values():
    """Each float16 row gets its own power-of-two scale: a row of gradients near T (one taught position at
    T = 8) neither overflows nor pushes a row of tiny gradients (many CE-only rows) under float16's range."""
    generator = torch.Generator().manual_seed(1)
    vocab = 1000
    logits32 = (torch.randn(1, 64, vocab, generator=generator) * 4).half().float()
    labels = torch.randint(0, vocab, (1, 64), generator=generator)
    mask = torch.zeros_like(labels, dtype=torch.bool)
    mask[0, 0] = True  # one taught position: its gradient is alpha T (q - p), up to ~8
    teacher = torch.full((1, vocab), -200.0)
    teacher[0, int(logits32[0, 0].argmin())] = 200.0  # the teacher is sure of the student's least likely token
    gradients = []
    for logits in (logits32.clone().requires_grad_(), logits32.half().requires_grad_()):
        total = DistillationLoss(8.0, 0.999).fused(logits, labels, teacher, torch.ones(1), torch.zeros(1), mask)[0]
        gradients.append(torch.autograd.grad(total, logits)[0].float())
    reference, half = gradients
    assert reference[0, 0].abs().max() > 4 and reference[0, 1:].abs().max() < 1e-4
    assert torch.isfinite(half).all()
    best = reference.half().float()  # the float32 gradient cast once: what a float16 gradient can hold
    for row in (0, 1, 63):
        assert (half[0, row] - best[0, row]).norm() <= 1e-3 * best[0, row].norm(), row
