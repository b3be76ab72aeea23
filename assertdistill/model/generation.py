"""Evaluation-time generation: model.generate's token ids on the same batch, with less work.

T5 students with default search settings are decoded by decoding.py's loop (preallocated caches, the
beam search written out; its docstring). For other models, and settings that loop leaves to
transformers, model.generate runs with a prefilled cache. What model.generate repeats or copies that
evaluation does not need (docs/PERFORMANCE.md):
- the encoder: evaluate() already runs it for the eval loss; here it runs once per batch and both the
  loss and generation use its output;
- cross-attention keys and values: generate projects the encoder output of every beam (num_beams
  identical copies per record); here each record's are projected once;
- the beam reorder: after every step beam search index_selects the whole cache, the cross-attention
  keys and values included (batch x beams x heads x source x d_kv floats per layer, the largest
  tensors of a decoding step), although beam search only permutes the beams of a record, whose
  cross-attention entries are identical. Here only the self-attention cache is reordered;
- with the suite's attention (attention.ATTENTION_NAME, CPU) the keys and values stay one copy per
  record and each decoding step's cross-attention reads them once for all the record's beams
  (attention.beam_folded_attention). Its sums run in another order than generate's per-beam kernel
  (differences of ~1e-7 relative in the attention output); the ids were equal to generate's in every
  test and benchmark record. With other attention implementations the copies are per beam and the
  ids are bit for bit generate's.
Everything else is transformers' own generate (its beam search, stopping rules and generation config).
"""

from __future__ import annotations

import torch
from transformers import DynamicCache, EncoderDecoderCache
from transformers.modeling_outputs import BaseModelOutput

from . import decoding
from .attention import ATTENTION_NAME
from .decoding import DecodingSettings


class BeamInvariantCrossCache(EncoderDecoderCache):
    """An encoder-decoder cache whose cross-attention entries are the same for every beam of a record.

    Beam search only moves beams within a record, so reordering leaves the cross-attention cache as it is.
    """

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        self.self_attention_cache.reorder_cache(beam_idx)


def cross_attention_modules(model) -> list | None:
    """The decoder's cross-attention modules of a T5-family model, in layer order; None for other models."""
    blocks = getattr(getattr(model, "decoder", None), "block", None)
    if blocks is None:
        return None
    modules = []
    for block in blocks:
        layers = getattr(block, "layer", ())
        attention = getattr(layers[1], "EncDecAttention", None) if len(layers) > 1 else None
        if attention is None or not all(hasattr(attention, name) for name in ("k", "v", "key_value_proj_dim")):
            return None
        modules.append(attention)
    return modules


def folds_beams(model) -> bool:
    """True when the model's attention (the suite's chunked one) reads per-record cross-attention keys for all beams."""
    return getattr(model.config, "_attn_implementation", None) == ATTENTION_NAME


def prefilled_cache(model, encoder_states: torch.Tensor, num_beams: int) -> BeamInvariantCrossCache | None:
    """A cache holding every decoder layer's cross-attention keys and values, projected once per record.

    encoder_states (B, S, d_model); the cached keys and values are (B, H, S, d_kv) when the model's
    attention folds beams (folds_beams), else (B * num_beams, H, S, d_kv), each record's rows repeated
    for its beams as generate orders them. None when the model is not T5-like.
    """
    modules = cross_attention_modules(model)
    if modules is None:
        return None
    repeat = num_beams > 1 and not folds_beams(model)
    batch, length = encoder_states.shape[:2]
    self_attention, cross_attention = DynamicCache(config=model.config), DynamicCache(config=model.config)
    for layer_index, attention in enumerate(modules):
        shape = (batch, length, -1, attention.key_value_proj_dim)
        keys = attention.k(encoder_states).view(shape).transpose(1, 2)  # (B, H, S, d_kv)
        values = attention.v(encoder_states).view(shape).transpose(1, 2)  # (B, H, S, d_kv)
        if repeat:
            keys, values = keys.repeat_interleave(num_beams, 0), values.repeat_interleave(num_beams, 0)
        cross_attention.update(keys, values, layer_index)
    cache = BeamInvariantCrossCache(self_attention, cross_attention)
    for layer_index in range(len(modules)):
        cache.is_updated[layer_index] = True  # generate's first step reuses these instead of projecting
    return cache


def encode(model, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> BaseModelOutput:
    """The encoder's output for a batch, as model.generate and model(...) compute it."""
    return model.get_encoder()(input_ids=input_ids, attention_mask=attention_mask, return_dict=True)


def generate(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, settings: DecodingSettings,
             encoder_outputs: BaseModelOutput | None = None, **generate_kwargs) -> torch.Tensor:
    """model.generate(input_ids, attention_mask, max_length, num_beams, early_stopping=num_beams > 1)'s ids, faster.

    T5 students with default search settings run decoding.decode's loop; other models model.generate
    with the cache below.

    encoder_outputs: the batch's encoder output when already computed (it is not modified).
    generate_kwargs go to model.generate (e.g. a logits_processor). Returns (B, L) token ids.
    """
    if encoder_outputs is None:
        encoder_outputs = encode(model, input_ids, attention_mask)
    states = encoder_outputs.last_hidden_state  # (B, S, d_model)
    if decoding.supported(model, generate_kwargs):
        return decoding.decode(model, states, attention_mask, settings, folds_beams(model),
                               generate_kwargs.get("logits_processor"))
    options = dict(max_length=settings.max_length, num_beams=settings.num_beams,
                   early_stopping=settings.early_stopping, **generate_kwargs)
    cache = prefilled_cache(model, states, settings.num_beams)
    if cache is not None:
        options["cache"] = cache
    # A new wrapper: generate repeats the states for the beams by replacing them in the object it is given.
    return model.generate(encoder_outputs=BaseModelOutput(last_hidden_state=states), attention_mask=attention_mask,
                          **options)
