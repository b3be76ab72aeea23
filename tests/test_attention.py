"""Chunked T5 attention and fast dropout: same results as transformers' eager path, less saved memory."""

import pytest
import torch
from util import tiny_t5

from assertdistill.core.errors import ModelLoadError
from assertdistill.model import attention
from assertdistill.model.dropout import DropoutMasks, FastDropout, use_fast_dropout
from assertdistill.model.models import configure_training_kernels

CPU = torch.device("cpu")


@pytest.fixture
def small_chunks(monkeypatch):
    """Chunks of 16 query rows even for tiny inputs, so every test crosses chunk borders."""
    monkeypatch.setattr(attention, "CHUNK_BYTES", 1)


def padded_batch(seed=0, vocab=300):
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(3, vocab, (3, 45), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[0, 30:] = 0
    attention_mask[2, 7:] = 0
    labels = torch.randint(3, vocab, (3, 19), generator=generator)
    labels[1, 12:] = -100
    return dict(input_ids=input_ids, attention_mask=attention_mask, labels=labels)


def loss_and_gradients(implementation, dropout_rate=0.0, seed=0):
    model = tiny_t5(num_heads=4, num_layers=2, num_decoder_layers=2, dropout_rate=dropout_rate)
    model.set_attn_implementation(implementation)
    model.train()
    torch.manual_seed(seed)
    loss = model(**padded_batch()).loss
    loss.backward()
    return loss.item(), {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def test_loss_and_every_gradient_match_eager_across_chunks_and_padding(small_chunks):
    attention.register()
    eager_loss, eager_grads = loss_and_gradients("eager")
    loss, grads = loss_and_gradients(attention.ATTENTION_NAME)
    assert loss == pytest.approx(eager_loss, rel=1e-6)
    assert grads.keys() == eager_grads.keys()
    relative_bias = "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"
    assert eager_grads[relative_bias].abs().sum() > 0  # the learnable position bias gets its gradient
    for name, gradient in eager_grads.items():
        torch.testing.assert_close(grads[name], gradient, rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize("bias_shape", [(1, 2, 20, 7), (2, 2, 20, 7), (1, 2, 1, 7)])
def test_gradcheck_with_dropout_mask_and_broadcast_bias(small_chunks, bias_shape):
    generator = torch.Generator().manual_seed(1)
    query = torch.randn(2, 2, 20, 3, dtype=torch.double, generator=generator, requires_grad=True)  # 2 chunks
    key = torch.randn(2, 2, 7, 3, dtype=torch.double, generator=generator, requires_grad=True)
    value = torch.randn(2, 2, 7, 4, dtype=torch.double, generator=generator, requires_grad=True)
    bias = torch.randn(*bias_shape, dtype=torch.double, generator=generator, requires_grad=True)
    mask = torch.rand(2, 1, 20, 7, generator=generator) > 0.3  # True = attend

    def function(query, key, value, bias):
        return attention.ChunkedAttention.apply(query, key, value, bias, mask, 0.7, 0.25, 1234)

    assert torch.autograd.gradcheck(function, (query, key, value, bias))


def test_generation_matches_eager(small_chunks):
    attention.register()
    batch = padded_batch()
    outputs = []
    for implementation in ("eager", attention.ATTENTION_NAME):
        model = tiny_t5(num_heads=4, num_layers=2, num_decoder_layers=2).eval()
        model.set_attn_implementation(implementation)
        outputs.append(model.generate(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                      max_new_tokens=6, num_beams=2, do_sample=False))
    assert torch.equal(outputs[0], outputs[1])


def test_dropout_is_reproducible_under_manual_seed_and_varies_without(small_chunks):
    attention.register()
    first, _ = loss_and_gradients(attention.ATTENTION_NAME, dropout_rate=0.3, seed=5)
    again, _ = loss_and_gradients(attention.ATTENTION_NAME, dropout_rate=0.3, seed=5)
    other, _ = loss_and_gradients(attention.ATTENTION_NAME, dropout_rate=0.3, seed=6)
    no_dropout, _ = loss_and_gradients(attention.ATTENTION_NAME, dropout_rate=0.0)
    assert first == again
    assert first != other and first != no_dropout


def test_saved_tensors_hold_no_score_matrices():
    """Backward keeps inputs, output and one value per query row: no (B, H, Q, K) tensor per layer."""
    attention.register()
    batch, heads, length = 4, 4, 300
    saved = {}
    for implementation in ("eager", attention.ATTENTION_NAME):
        model = tiny_t5(num_heads=heads, num_layers=2, num_decoder_layers=1).train()
        model.set_attn_implementation(implementation)
        sizes = []

        def pack(tensor):
            sizes.append(tensor.numel())
            return tensor

        input_ids = torch.randint(3, 300, (batch, length))
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            model(input_ids=input_ids, labels=input_ids[:, :5].clone())
        saved[implementation] = sizes
    score_matrix = batch * heads * length * length
    assert sum(size >= score_matrix for size in saved["eager"]) >= 4  # softmax outputs, dropout masks, ...
    assert max(saved[attention.ATTENTION_NAME]) <= heads * length * length  # the shared (1, H, Q, K) bias
    assert sum(saved[attention.ATTENTION_NAME]) < sum(saved["eager"]) / 3


def test_dropout_masks_rate_scale_and_redraw():
    masks = DropoutMasks(0.1, seed=3, device=CPU)
    kept = masks.next_kept((400, 500), torch.float32).clone()
    assert set(kept.unique().tolist()) == {0.0, 1.0}
    assert 1 - kept.mean().item() == pytest.approx(0.1, abs=0.005)
    assert masks.keep_scale == pytest.approx(1 / (1 - masks.drop_count / 65536))
    assert torch.equal(DropoutMasks(0.1, seed=3, device=CPU).next_kept((400, 500), torch.float32), kept)
    assert not torch.equal(masks.next_kept((400, 500), torch.float32), kept)  # the stream moves on
    assert DropoutMasks(1.0, seed=3, device=CPU).keep_scale == 0.0


def test_fast_dropout_matches_nn_dropout_in_expectation_and_gradient():
    torch.manual_seed(0)
    layer = FastDropout(0.2)
    inputs = torch.ones(200, 300, requires_grad=True)
    outputs = layer(inputs)
    kept = outputs != 0
    assert 1 - kept.float().mean().item() == pytest.approx(0.2, abs=0.01)
    assert outputs[kept].unique().tolist() == pytest.approx([1 / (1 - 13107 / 65536)])
    outputs.sum().backward()
    torch.testing.assert_close(inputs.grad, outputs.detach())  # d(x * m * s)/dx = m * s
    assert torch.equal(layer.eval()(inputs), inputs)


def test_use_fast_dropout_keeps_training_mode_and_parameters():
    model = tiny_t5(dropout_rate=0.1).eval()
    before = {name: p.clone() for name, p in model.state_dict().items()}
    replaced = use_fast_dropout(model)
    assert replaced > 0
    dropouts = [module for module in model.modules() if isinstance(module, torch.nn.Dropout)]
    assert all(type(module) is FastDropout and not module.training for module in dropouts)
    assert all(torch.equal(before[name], value) for name, value in model.state_dict().items())


def test_configure_training_kernels_policy():
    model = tiny_t5()
    assert "assertdistill_chunked" in configure_training_kernels(model, "auto", CPU)
    assert any(isinstance(module, FastDropout) for module in model.modules())
    compiled = tiny_t5()
    assert "assertdistill_chunked" not in configure_training_kernels(compiled, "auto", CPU, compiling=True)
    assert not any(isinstance(module, FastDropout) for module in compiled.modules())
    assert attention.resolve_attention("auto", "t5", torch.device("cuda"), False) is None
    assert attention.resolve_attention("auto", "bart", CPU, False) is None
    reference = tiny_t5()
    assert "eager" in configure_training_kernels(reference, "eager", CPU)
    assert not any(isinstance(module, FastDropout) for module in reference.modules())  # transformers' own


def test_unusable_attention_is_a_model_load_error():
    model = tiny_t5()
    with pytest.raises(ModelLoadError, match="--attention flash_attention_2"):
        attention.set_attention(model, "flash_attention_2", CPU)


def test_saved_student_config_does_not_name_the_private_implementation(tmp_path):
    model = tiny_t5()
    configure_training_kernels(model, "auto", CPU)
    model.save_pretrained(tmp_path)
    assert attention.ATTENTION_NAME not in (tmp_path / "config.json").read_text()


@pytest.mark.parametrize("dropout_rate", [0.0, 0.2])
def test_gradient_checkpointing_gives_the_same_loss_and_gradients(dropout_rate):
    results = []
    for checkpointing in (False, True):
        model = tiny_t5(num_heads=4, num_layers=2, num_decoder_layers=2, dropout_rate=dropout_rate)
        description = configure_training_kernels(model, "auto", CPU, checkpointing=checkpointing)
        assert ("activation checkpointing" in description) == checkpointing
        assert any(getattr(module, "gradient_checkpointing", False) for module in model.modules()) == checkpointing
        model.train()
        torch.manual_seed(3)
        loss = model(**padded_batch()).loss
        loss.backward()
        results.append((loss.item(), {name: p.grad for name, p in model.named_parameters() if p.grad is not None}))
    (plain_loss, plain_grads), (loss, grads) = results
    assert loss == pytest.approx(plain_loss, rel=1e-6)
    for name, gradient in plain_grads.items():  # dropout masks are redrawn identically in the recompute
        torch.testing.assert_close(grads[name], gradient, rtol=1e-4, atol=1e-6, msg=name)


def test_bfloat16_inputs_keep_the_log_sum_exp_in_float32(small_chunks):
    """Under bf16 autocast the saved log-sum-exp stays float32: gradients as close to float64 as eager bf16's."""
    generator = torch.Generator().manual_seed(0)
    query, key, value = (torch.randn(2, 4, 64, 16, generator=generator, dtype=torch.float64) * 2 for _ in range(3))
    bias = torch.randn(1, 4, 64, 64, generator=generator, dtype=torch.float64) * 4
    grad_output = torch.randn(2, 4, 64, 16, generator=generator, dtype=torch.float64)

    def gradients(function, dtype):
        inputs = [tensor.to(dtype).requires_grad_() for tensor in (query, key, value)]
        output = function(*inputs, bias.to(dtype))
        return torch.autograd.grad(output, inputs, grad_output.to(dtype))

    def eager(q, k, v, b):
        return torch.softmax(q @ k.transpose(-1, -2) + b, dim=-1) @ v

    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda tensor: saved.append(tensor) or tensor, lambda t: t):
        chunked = gradients(lambda q, k, v, b: attention.ChunkedAttention.apply(q, k, v, b, None, 1.0, 0.0, 0),
                            torch.bfloat16)
    reference, eager_bf16 = gradients(eager, torch.float64), gradients(eager, torch.bfloat16)
    assert [tensor.dtype for tensor in saved if tensor.dim() == 2] == [torch.float32]  # (BH, Q) log-sum-exp

    def error(got):
        return max(float((g.double() - r).norm() / r.norm()) for g, r in zip(got, reference))

    assert error(chunked) <= 1.5 * error(eager_bf16), (error(chunked), error(eager_bf16))
