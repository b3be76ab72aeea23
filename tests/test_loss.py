"""DistillationLoss against the thesis formula on fully padded tensors, and its limiting cases."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from assertdistill.codec import compress_logits
from assertdistill.dataset import Sample, collate
from assertdistill.codec import decode_quantized
from assertdistill.forward import batch_losses
from script import DistillationLoss
from util import tiny_t5, tiny_tokenizer


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
        total, hard, soft = batch_losses(model, batch, loss_fn)

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
