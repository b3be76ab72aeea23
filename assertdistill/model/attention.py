"""Memory-efficient T5 attention: query chunks, recomputed in backward, learnable position bias kept exact.

Eager (and SDPA, which falls back to its math kernel whenever T5's position bias needs a gradient)
attention keeps the scores, the softmax output and the dropout mask of every layer for backward:
batch x heads x 1024 x 1024 floats per tensor at the thesis's source budget, which dominates the
memory of small students. This implementation keeps only the inputs, the output and one log-sum-exp
per query row, and recomputes each chunk's probabilities in backward (FlashAttention's algorithm in
plain PyTorch), so attention memory is that of one chunk. Dropout masks are regenerated from a seed
drawn from torch's global generator, so runs stay reproducible under torch.manual_seed.

Registered with transformers as the attention implementation ATTENTION_NAME; see set_attention(). On
CPU it is also faster than eager and SDPA (docs/PERFORMANCE.md: one extra matmul per chunk in backward,
but no (B, H, Q, K) tensors to fault in and write out). Without a gradient to keep (evaluation,
generation) nothing needs recomputing, and SDPA's fused CPU kernel is about 3x faster than these
chunks: calls without gradient or dropout go to SDPA, still in query chunks, so memory stays bounded.
"""

from __future__ import annotations

import torch

from ..core.errors import ModelLoadError
from .dropout import draw_seed, dropout_masks

ATTENTION_NAME = "assertdistill_chunked"
CHOICES = ("auto", "chunked", "eager", "sdpa")
CHUNK_BYTES = 8 * 1024 * 1024  # scores of one query chunk (batch x heads x rows x keys floats)
SDPA_MAX_QUERIES = 4  # without a gradient to keep, calls with this few query rows go to SDPA


def _rows(tensor: torch.Tensor | None, start: int, stop: int) -> torch.Tensor | None:
    """Query rows start:stop of a (..., Q or 1, K) tensor (a broadcast row dimension is kept)."""
    if tensor is None or tensor.size(-2) == 1:
        return tensor
    return tensor[..., start:stop, :]


def _chunks(total: int, rows: int):
    """(start, stop) of consecutive query chunks of `rows` rows covering 0..total."""
    for start in range(0, total, rows):
        yield start, min(start + rows, total)


def _chunk_rows(batch_heads: int, keys: int) -> int:
    """Query rows per chunk so one chunk's scores take about CHUNK_BYTES."""
    return max(16, CHUNK_BYTES // (4 * batch_heads * keys))


def _probabilities(query_rows, key_t, bias, mask, scaling, heads: int, log_sum_exp=None):
    """One chunk's (weights (BH, c, K), log-sum-exp (BH, c), row sums (BH, c, 1) or None).

    query_rows (BH, c, D), key_t (BH, D, K); bias and mask broadcast against (B, H, c, K). With
    log_sum_exp given, the weights are the softmax and row sums None; without, the weights are
    exp(scores - row max), still to be divided by the row sums.
    """
    scores = torch.bmm(query_rows, key_t)  # (BH, c, K); 3-D views: bmm reads transposes without copies
    if scaling != 1.0:
        scores.mul_(scaling)
    grid = scores.view(-1, heads, *scores.shape[1:])  # (B, H, c, K), the same memory
    if bias is not None:
        grid.add_(bias)
    if mask is not None:
        grid.masked_fill_(~mask, torch.finfo(scores.dtype).min)
    if log_sum_exp is not None:  # backward: normalized by the forward's log-sum-exp
        return scores.sub_(log_sum_exp.unsqueeze(-1)).exp_(), log_sum_exp, None
    row_max = scores.amax(dim=-1, keepdim=True)  # (BH, c, 1); in-place passes, no temporaries
    weights = scores.sub_(row_max).exp_()  # unnormalized: the caller divides the (BH, c, Dv) product
    wide = torch.promote_types(scores.dtype, torch.float32)  # float32 under bf16/fp16 autocast too
    row_sum = weights.sum(dim=-1, keepdim=True, dtype=wide)  # (BH, c, 1)
    return weights, (row_max.to(wide) + row_sum.log()).squeeze(-1), row_sum


class ChunkedAttention(torch.autograd.Function):
    """softmax(q k^T * scaling + bias, masked) (dropped out) @ v, chunked over queries, recomputed in backward."""

    @staticmethod
    def forward(ctx, query, key, value, bias, mask, scaling: float, dropout: float, seed: int):
        # query (B, H, Q, D); key, value (B, H, K, D); bias (1 or B, H, Q or 1, K) or None;
        # mask bool (B, 1 or H, Q or 1, K) or None, True = attend.
        batch, heads, queries, _ = query.shape
        query3, key3, value3 = (t.reshape(batch * heads, *t.shape[2:]) for t in (query, key, value))
        rows = _chunk_rows(batch * heads, key.size(-2))
        output = query3.new_empty(batch * heads, queries, value.size(-1))  # (BH, Q, Dv)
        log_sum_exp = query3.new_empty(batch * heads, queries,  # (BH, Q), never in bf16/fp16
                                        dtype=torch.promote_types(query3.dtype, torch.float32))
        masks = dropout_masks(dropout, seed, query.device)
        for start, stop in _chunks(queries, rows):
            weights, log_sum_exp[:, start:stop], row_sum = _probabilities(
                query3[:, start:stop], key3.transpose(1, 2), _rows(bias, start, stop), _rows(mask, start, stop),
                scaling, heads)
            if masks is not None:  # (P * M / (1 - p)) @ v, the scale applied to the (BH, c, Dv) result
                weights.mul_(masks.next_kept(weights.shape, weights.dtype))
                row_sum.mul_(1.0 / masks.keep_scale)
            output[:, start:stop] = torch.bmm(weights, value3).div_(row_sum)
        ctx.save_for_backward(query3, key3, value3, bias, mask, output, log_sum_exp)
        ctx.settings = (scaling, dropout, seed, rows, heads)
        return output.view(batch, heads, queries, -1)

    @staticmethod
    def backward(ctx, grad_output):
        query, key, value, bias, mask, output, log_sum_exp = ctx.saved_tensors  # (BH, ., .) views
        scaling, dropout, seed, rows, heads = ctx.settings
        grad_output = grad_output.reshape(output.shape)  # (BH, Q, Dv)
        wide = torch.promote_types(query.dtype, torch.float32)  # bf16/fp16 inputs: float32 sums across chunks
        row_dot = (grad_output.to(wide) * output.to(wide)).sum(-1)  # (BH, Q): sum_j P_ij dP_ij, FlashAttention's D
        grad_query = torch.empty_like(query)
        grad_key, grad_value = torch.zeros_like(key, dtype=wide), torch.zeros_like(value, dtype=wide)
        need_bias = bias is not None and ctx.needs_input_grad[3]
        grad_bias = torch.zeros_like(bias) if need_bias else None
        masks = dropout_masks(dropout, seed, query.device)
        for start, stop in _chunks(query.size(1), rows):
            query_rows, grad_rows = query[:, start:stop], grad_output[:, start:stop]  # (BH, c, D), (BH, c, Dv)
            probs, _, _ = _probabilities(query_rows, key.transpose(1, 2), _rows(bias, start, stop),
                                         _rows(mask, start, stop), scaling, heads, log_sum_exp[:, start:stop])
            kept = None
            if masks is not None:
                grad_rows = grad_rows * masks.keep_scale
                kept = masks.next_kept(probs.shape, probs.dtype)
            grad_probs = torch.bmm(grad_rows, value.transpose(1, 2))  # (BH, c, K)
            if kept is not None:
                grad_probs.mul_(kept)
            grad_scores = grad_probs.sub_(row_dot[:, start:stop].unsqueeze(-1)).mul_(probs)  # (BH, c, K)
            if kept is not None:
                probs.mul_(kept)
            _accumulate_product(grad_value, probs.transpose(1, 2), grad_rows)
            if need_bias:
                grid = grad_scores.view(-1, heads, *grad_scores.shape[1:])  # (B, H, c, K)
                if grad_bias.size(-2) == 1:
                    grad_bias += grid.sum_to_size(grad_bias.shape)
                else:
                    grad_bias[..., start:stop, :] = grid.sum_to_size(
                        grad_bias.shape[:-2] + (stop - start, grad_bias.size(-1)))
            if scaling != 1.0:
                grad_scores.mul_(scaling)
            grad_query[:, start:stop] = torch.bmm(grad_scores, key)
            _accumulate_product(grad_key, grad_scores.transpose(1, 2), query_rows)
        batch = query.size(0) // heads
        unflatten = lambda tensor: tensor.view(batch, heads, *tensor.shape[1:])  # noqa: E731
        return (unflatten(grad_query), unflatten(grad_key.to(key.dtype)), unflatten(grad_value.to(value.dtype)),
                grad_bias, None, None, None, None)


def _accumulate_product(total: torch.Tensor, left: torch.Tensor, right: torch.Tensor) -> None:
    """total += left @ right (batched); a float32 total of bf16/fp16 factors takes each chunk's product once rounded."""
    if total.dtype == left.dtype:
        total.baddbmm_(left, right)
    else:
        total += torch.bmm(left, right)


def inference_attention(query, key, value, bias, mask, scaling: float) -> torch.Tensor:
    """softmax(q k^T * scaling + bias, masked) @ v without autograd: SDPA on query chunks, (B, H, Q, Dv).

    Shapes as ChunkedAttention.forward; each chunk's (B, H, c, K) additive mask is built only for the chunk.
    """
    batch, heads, queries, _ = query.shape
    rows = _chunk_rows(batch * heads, key.size(-2))
    output = query.new_empty(batch, heads, queries, value.size(-1))  # (B, H, Q, Dv)
    lowest = torch.finfo(query.dtype).min
    for start, stop in _chunks(queries, rows):
        chunk_bias, chunk_mask = _rows(bias, start, stop), _rows(mask, start, stop)
        if chunk_bias is None:
            attn_mask = chunk_mask  # boolean or None
        elif chunk_mask is None:
            attn_mask = chunk_bias.to(query.dtype)
        else:
            attn_mask = torch.where(chunk_mask, chunk_bias.to(query.dtype), lowest)  # (B, H, c, K)
        output[:, :, start:stop] = torch.nn.functional.scaled_dot_product_attention(
            query[:, :, start:stop], key, value, attn_mask=attn_mask, scale=scaling)
    return output


def beam_folded_attention(query, key, value, mask, bias, scaling: float) -> torch.Tensor:
    """One decoding step's cross-attention with the beams folded into the query rows: (B * beams, 1, H, Dv).

    query (B * beams, H, 1, D), a record's beams consecutive (as generate orders them); key, value
    (B, H, S, D), stored once per record (generation.prefilled_cache); mask and bias broadcast against
    (B * beams, H, 1, S). SDPA then reads each record's keys and values once for all its beams.
    """
    records, heads, _, head_dim = key.shape
    beams = query.size(0) // records
    assert query.size(0) == records * beams and query.size(2) == 1, "expected one decoding step of whole beams"
    folded = query.view(records, beams, heads, head_dim).transpose(1, 2)  # (B, H, beams, D)
    per_record = [None if t is None else t[::beams] if t.size(0) > 1 else t for t in (mask, bias)]
    mask, bias = per_record  # (B or 1, 1 or H, 1, S)
    if bias is not None:
        bias = bias.to(query.dtype)
        mask = bias if mask is None else torch.where(mask, bias, torch.finfo(query.dtype).min) \
            if mask.dtype == torch.bool else bias + mask
    output = torch.nn.functional.scaled_dot_product_attention(folded, key, value, attn_mask=mask, scale=scaling)
    return output.transpose(1, 2).reshape(records * beams, 1, heads, -1)  # (B, H, beams, Dv) -> (B * beams, 1, H, Dv)


def chunked_attention_forward(module, query, key, value, attention_mask, dropout: float = 0.0,
                              scaling: float | None = None, position_bias=None, **kwargs):
    """transformers attention interface: returns ((B, Q, H, Dv) output, None)."""
    if scaling is None:
        scaling = query.size(-1) ** -0.5
    if not module.training:
        dropout = 0.0
    inference = not (torch.is_grad_enabled() and query.requires_grad)
    if key.size(0) != query.size(0):  # cross-attention keys and values stored once per record, not per beam
        return beam_folded_attention(query, key, value, attention_mask, position_bias, scaling), None
    if query.size(-2) <= SDPA_MAX_QUERIES and inference:
        # Generation steps: a few queries, nothing to save for backward; SDPA's kernels win there.
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                      scaling=scaling, position_bias=position_bias, **kwargs)
    if attention_mask is not None and attention_mask.dtype != torch.bool:
        position_bias = attention_mask if position_bias is None else position_bias + attention_mask
        attention_mask = None
    if inference and dropout == 0:
        output = inference_attention(query, key, value, position_bias, attention_mask, float(scaling))
        return output.transpose(1, 2).contiguous(), None
    seed = draw_seed() if dropout > 0 else 0
    output = ChunkedAttention.apply(query, key, value, position_bias, attention_mask, float(scaling),
                                    float(dropout), seed)
    return output.transpose(1, 2).contiguous(), None


def _boolean_mask(*args, **kwargs):
    """SDPA's boolean masks, but causal masks always materialized (the chunks need them explicitly)."""
    from transformers.masking_utils import sdpa_mask

    kwargs["allow_is_causal_skip"] = False
    return sdpa_mask(*args, **kwargs)


def register() -> None:
    """Make ATTENTION_NAME known to transformers (idempotent)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(ATTENTION_NAME, chunked_attention_forward)
    AttentionMaskInterface.register(ATTENTION_NAME, _boolean_mask)


def resolve_attention(choice: str, model_type: str, device: torch.device, compiling: bool) -> str | None:
    """The implementation `choice` means for this run; None keeps transformers' default.

    auto: chunked for T5-family students trained on CPU, where it measured faster than eager and SDPA
    and needs a fraction of their memory (docs/PERFORMANCE.md); on GPUs, and under torch.compile,
    transformers' default (SDPA) with its fused kernels.
    """
    if choice == "auto":
        return ATTENTION_NAME if device.type == "cpu" and not compiling and model_type in ("t5", "mt5") else None
    return ATTENTION_NAME if choice == "chunked" else choice


def set_attention(model, choice: str, device: torch.device, compiling: bool = False) -> str:
    """Apply --attention to a transformers model; returns the implementation in use."""
    name = resolve_attention(choice, getattr(model.config, "model_type", ""), device, compiling)
    if name is not None:
        if name == ATTENTION_NAME:
            register()
        try:
            model.set_attn_implementation(name)
        except (ValueError, ImportError) as error:
            raise ModelLoadError(f"--attention {choice}: {model.__class__.__name__} cannot use it ({error})") from error
    return model.config._attn_implementation
