"""Evaluation-time generation gives model.generate's ids and batch_losses's losses on every batch."""

import pytest
import torch
from transformers import BartConfig, BartForConditionalGeneration, LogitsProcessor, LogitsProcessorList
from util import tiny_t5, tiny_tokenizer

from assertdistill.distill.evaluation import evaluate_batch
from assertdistill.distill.forward import batch_losses
from assertdistill.distill.loss import DistillationLoss
from assertdistill.model import attention, generation
from assertdistill.model.decoding import DecodingSettings
from assertdistill.model.models import configure_training_kernels

CUDA = torch.cuda.is_available()
MAX_LENGTH = 24


def eos_prone_t5(seed: int, **dimensions):
    """A tiny T5 whose EOS logit swings widely, so that beams and records end at different steps."""
    tokenizer = tiny_tokenizer()
    model = tiny_t5(tokenizer, seed=seed, **dimensions).eval()
    with torch.no_grad():
        model.lm_head.weight[tokenizer.eos_token_id] *= 12.0
    return model


def mixed_batches(vocab_size: int, pad_token_id: int, seed: int = 0, sizes=(3, 1, 4)):
    """(input_ids, attention_mask) batches with sources of mixed lengths, right-padded like collate()."""
    generator = torch.Generator().manual_seed(seed)
    batches = []
    for batch_size in sizes:
        lengths = torch.randint(5, 40, (batch_size,), generator=generator)
        input_ids = torch.full((batch_size, int(lengths.max())), pad_token_id)
        attention_mask = torch.zeros_like(input_ids)
        for row, length in enumerate(lengths.tolist()):
            input_ids[row, :length] = torch.randint(4, vocab_size, (length,), generator=generator)
            attention_mask[row, :length] = 1
        batches.append((input_ids, attention_mask))
    return batches


def plain_generate(model, input_ids, attention_mask, num_beams):
    return model.generate(input_ids=input_ids, attention_mask=attention_mask, max_length=MAX_LENGTH,
                          num_beams=num_beams, early_stopping=num_beams > 1)


@pytest.mark.parametrize("num_beams", [1, 4])
@pytest.mark.parametrize("attention", ["auto", "eager"])
def test_generate_gives_model_generates_ids(num_beams, attention):
    ended_early = 0
    for seed in range(3):
        model = eos_prone_t5(seed, num_layers=2, num_decoder_layers=2)
        configure_training_kernels(model, attention, torch.device("cpu"))
        for input_ids, attention_mask in mixed_batches(model.config.vocab_size, model.config.pad_token_id, seed):
            with torch.no_grad():
                expected = plain_generate(model, input_ids, attention_mask, num_beams)
                fast = generation.generate(model, input_ids, attention_mask, DecodingSettings(num_beams, MAX_LENGTH))
            assert torch.equal(fast, expected)
            ended_early += int((expected == model.config.eos_token_id).any(1).sum())
    assert ended_early >= 5  # records stopped by EOS at different steps, not only by max_length


def test_generate_takes_the_encoder_output_without_changing_it():
    model = eos_prone_t5(0)
    input_ids, attention_mask = mixed_batches(model.config.vocab_size, model.config.pad_token_id, sizes=(3,))[0]
    with torch.no_grad():
        encoder_outputs = generation.encode(model, input_ids, attention_mask)
        states = encoder_outputs.last_hidden_state.clone()
        settings = DecodingSettings(4, MAX_LENGTH)
        fast = generation.generate(model, input_ids, attention_mask, settings, encoder_outputs=encoder_outputs)
        again = generation.generate(model, input_ids, attention_mask, settings, encoder_outputs=encoder_outputs)
        expected = plain_generate(model, input_ids, attention_mask, 4)
    assert torch.equal(encoder_outputs.last_hidden_state, states)
    assert torch.equal(fast, expected) and torch.equal(again, expected)


def test_beam_reorder_leaves_the_cross_attention_cache_in_place():
    model = eos_prone_t5(0)
    states = torch.randn(2, 5, model.config.d_model)
    with torch.no_grad():
        cache = generation.prefilled_cache(model, states, num_beams=3)
    keys = cache.cross_attention_cache.layers[0].keys
    assert keys.shape[0] == 6 and torch.equal(keys[0], keys[2]) and not torch.equal(keys[0], keys[3])
    cache.reorder_cache(torch.tensor([2, 0, 1, 5, 3, 4]))
    assert cache.cross_attention_cache.layers[0].keys is keys


def test_models_without_t5_cross_attention_use_plain_generate():
    tokenizer = tiny_tokenizer()
    config = BartConfig(vocab_size=len(tokenizer), d_model=16, encoder_layers=1, decoder_layers=1,
                        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32,
                        decoder_ffn_dim=32, max_position_embeddings=64, pad_token_id=tokenizer.pad_token_id,
                        eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.bos_token_id,
                        decoder_start_token_id=tokenizer.eos_token_id, forced_eos_token_id=None)
    torch.manual_seed(0)
    model = BartForConditionalGeneration(config).eval()
    assert generation.cross_attention_modules(model) is None
    for input_ids, attention_mask in mixed_batches(len(tokenizer), tokenizer.pad_token_id):
        with torch.no_grad():
            expected = plain_generate(model, input_ids, attention_mask, 4)
            fast = generation.generate(model, input_ids, attention_mask, DecodingSettings(4, MAX_LENGTH))
            assert torch.equal(fast, expected)


def eval_batch(model, batch_size: int = 3, target_length: int = 7):
    """A collated batch with labels and 8-bit teacher codes at every label position."""
    vocab = model.config.vocab_size
    input_ids, attention_mask = mixed_batches(model.config.vocab_size, model.config.pad_token_id,
                                              sizes=(batch_size,))[0]
    labels = torch.randint(4, model.config.vocab_size, (batch_size, target_length))
    labels[0, -2:] = -100  # a shorter target
    position_mask = labels != -100
    rows = int(position_mask.sum())
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels,
            "teacher_values": torch.randint(0, 256, (rows, vocab), dtype=torch.uint8),
            "teacher_scale": torch.full((rows,), 0.05), "teacher_zero_point": torch.full((rows,), 128.0),
            "teacher_position_mask": position_mask}


@pytest.mark.parametrize("num_beams", [1, 4])
def test_evaluate_batch_gives_batch_losses_and_generates_ids(num_beams):
    model = eos_prone_t5(1)
    configure_training_kernels(model, "auto", torch.device("cpu"))
    batch = eval_batch(model)
    loss_fn = DistillationLoss(2.0, 0.5)
    with torch.no_grad():
        expected_losses = batch_losses(model, batch, loss_fn)
        expected_ids = plain_generate(model, batch["input_ids"], batch["attention_mask"], num_beams)
        evaluated = evaluate_batch(model, batch, loss_fn, DecodingSettings(num_beams, MAX_LENGTH))
    assert [float(value) for value in evaluated.losses] == [float(value) for value in expected_losses]
    assert torch.equal(evaluated.generated_ids, expected_ids)
    assert evaluated.milliseconds > 0


@pytest.mark.cuda
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_cuda_generate_gives_model_generates_ids(precision):
    from assertdistill.model.precision import autocast_context

    device = torch.device("cuda")
    model = eos_prone_t5(0, num_layers=2, num_decoder_layers=2).to(device)
    configure_training_kernels(model, "auto", device)
    for input_ids, attention_mask in mixed_batches(model.config.vocab_size, model.config.pad_token_id):
        input_ids, attention_mask = input_ids.to(device), attention_mask.to(device)
        for num_beams in (1, 4):
            with torch.no_grad(), autocast_context(device, precision):
                expected = plain_generate(model, input_ids, attention_mask, num_beams)
                fast = generation.generate(model, input_ids, attention_mask, DecodingSettings(num_beams, MAX_LENGTH))
            assert torch.equal(fast, expected)


@pytest.mark.parametrize("bias_shape", [None, (1, 2, 40, 9), (2, 2, 40, 9), (1, 2, 1, 9)])
@pytest.mark.parametrize("with_mask", [False, True])
def test_inference_attention_matches_the_chunked_forward(monkeypatch, bias_shape, with_mask):
    monkeypatch.setattr(attention, "CHUNK_BYTES", 1)  # chunks of 16 query rows: 3 chunks
    generator = torch.Generator().manual_seed(2)
    query, key, value = (torch.randn(2, 2, rows, 5, generator=generator) for rows in (40, 9, 9))
    bias = torch.randn(*bias_shape, generator=generator) if bias_shape else None
    mask = torch.rand(2, 1, 40, 9, generator=generator) > 0.3 if with_mask else None
    if mask is not None:
        mask[..., 0] = True  # every query row attends to something
    expected = attention.ChunkedAttention.apply(query, key, value, bias, mask, 0.7, 0.0, 0)
    torch.testing.assert_close(attention.inference_attention(query, key, value, bias, mask, 0.7), expected,
                               rtol=1e-5, atol=1e-6)


def test_models_without_gradient_use_inference_attention_and_match_eager(monkeypatch):
    calls, real = [], attention.inference_attention
    monkeypatch.setattr(attention, "inference_attention", lambda *args: calls.append(args[0].shape) or real(*args))
    batch = eval_batch(tiny_t5())
    losses = {}
    for implementation in ("eager", "auto"):
        model = tiny_t5(num_layers=2, num_decoder_layers=2).eval()
        configure_training_kernels(model, implementation, torch.device("cpu"))
        with torch.no_grad():
            losses[implementation] = batch_losses(model, batch, DistillationLoss(2.0, 0.5))
    assert calls  # the encoder's and the teacher-forced decoder's attention, without autograd
    for got, want in zip(losses["auto"], losses["eager"]):
        assert float(got) == pytest.approx(float(want), rel=1e-5)


class EosFirst(LogitsProcessor):
    """Makes EOS the best first token (scores of rows whose only token is the start token)."""

    def __init__(self, eos_token_id: int):
        self.eos_token_id = eos_token_id

    def __call__(self, input_ids, scores):
        if input_ids.size(1) == 1:
            scores = scores.clone()
            scores[:, self.eos_token_id] += 100.0
        return scores


@pytest.mark.parametrize("num_beams", [1, 4])
@pytest.mark.parametrize("case", ["eos_first", "max_length_2", "max_length_3", "length_penalty", "fallback"])
def test_decoding_edge_cases_give_model_generates_ids(num_beams, case):
    """EOS as the first token, the shortest max lengths, a length penalty, and a setting the loop leaves to generate."""
    model = eos_prone_t5(2, num_layers=2, num_decoder_layers=2)
    max_length = {"max_length_2": 2, "max_length_3": 3}.get(case, MAX_LENGTH)
    processors = {}
    if case == "eos_first":  # through a logits processor, which both paths apply
        processors["logits_processor"] = LogitsProcessorList([EosFirst(model.config.eos_token_id)])
    if case == "length_penalty":
        model.generation_config.length_penalty = 0.4
    if case == "fallback":
        model.generation_config.no_repeat_ngram_size = 2
    assert generation.decoding.supported(model, processors) == (case != "fallback")
    for input_ids, attention_mask in mixed_batches(model.config.vocab_size, model.config.pad_token_id, 3, sizes=(4,)):
        with torch.no_grad():
            expected = model.generate(input_ids=input_ids, attention_mask=attention_mask, max_length=max_length,
                                      num_beams=num_beams, early_stopping=num_beams > 1, **processors)
            fast = generation.generate(model, input_ids, attention_mask, DecodingSettings(num_beams, max_length),
                                       **processors)
        assert torch.equal(fast, expected)
        if case == "eos_first":
            assert (expected[:, 1] == model.config.eos_token_id).all()
