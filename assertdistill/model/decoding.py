"""A T5 decoding loop with model.generate's greedy and beam search results and little per-step work.

model.generate runs the whole decoder stack through transformers' generic machinery at every step:
mask builders, cache objects that grow by concatenation, position bias recomputed for the whole key
length, and in beam search a reorder of every layer's cache, cross-attention included (the largest
tensors of a step, identical for all beams of a record). This loop keeps the same arithmetic and
drops the rest:
- self-attention keys and values are written into preallocated (rows, H, max_length, d_kv) buffers;
  a beam reorder moves only the filled positions, and only when the beams did change;
- cross-attention keys and values are projected once per record (generation.prefilled_cache's rule);
- the decoder's relative position bias is computed once for all steps and sliced per step;
- the encoder mask is built once; the attention kernels are the model's own (its attention interface,
  called with the arguments T5Attention passes), so the floats are the ones model.generate computes;
- beam search is transformers' vectorised algorithm (top 2 x beams candidates, finished hypotheses
  kept by length-normalised score, the early-stop heuristic), written out for fixed shapes.
supported() says when it applies; generation.generate falls back to model.generate otherwise.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import torch
from transformers import GenerationConfig
from transformers.masking_utils import create_bidirectional_mask
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

NEG = -1.0e9  # transformers' "impossible" score
# generation_config fields that change what greedy / beam search pick; supported() needs their defaults
_DEFAULT_CONFIG = GenerationConfig()
_MUST_BE_DEFAULT = ("do_sample", "num_return_sequences", "num_beam_groups", "diversity_penalty", "min_length",
                    "min_new_tokens", "max_new_tokens", "repetition_penalty", "encoder_repetition_penalty",
                    "no_repeat_ngram_size", "encoder_no_repeat_ngram_size", "bad_words_ids", "force_words_ids",
                    "forced_bos_token_id", "forced_eos_token_id", "suppress_tokens", "begin_suppress_tokens",
                    "sequence_bias", "exponential_decay_length_penalty", "renormalize_logits", "stop_strings",
                    "max_time", "constraints", "guidance_scale", "low_memory", "remove_invalid_values")


def supported(model, generate_kwargs: dict) -> bool:
    """True when this loop gives model.generate's ids: a T5 decoder, default search settings, at most a logits_processor."""
    if set(generate_kwargs) - {"logits_processor"} or getattr(model.config, "model_type", "") not in ("t5", "mt5"):
        return False
    config = model.generation_config
    for name in _MUST_BE_DEFAULT:
        if hasattr(config, name) and getattr(config, name) != getattr(_DEFAULT_CONFIG, name, None):
            return False
    eos = config.eos_token_id if config.eos_token_id is not None else model.config.eos_token_id
    return isinstance(eos, int) and config.decoder_start_token_id in (None, model.config.decoder_start_token_id)


class T5StepDecoder:
    """One decoding step of a T5 decoder over preallocated caches: (rows,) token ids -> (rows, V) float32 logits."""

    def __init__(self, model, encoder_states: torch.Tensor, attention_mask: torch.Tensor, rows_per_record: int,
                 max_length: int, fold_beams: bool):
        self.model, self.decoder = model, model.decoder
        self.blocks = list(self.decoder.block)
        eager = getattr(sys.modules[type(model).__module__], "eager_attention_forward", None)
        self.attention = ALL_ATTENTION_FUNCTIONS.get_interface(model.config._attn_implementation, eager)
        config = self.decoder.config
        batch, length, _ = encoder_states.shape
        rows = batch * rows_per_record
        first = self.blocks[0].layer[0].SelfAttention
        heads, head_dim = first.n_heads, first.key_value_proj_dim
        # (1, H, L, L): row t is step t's bias over keys 0..t (compute_bias's values, all at once)
        self.position_bias = first.compute_bias(max_length, max_length, device=encoder_states.device)
        self.cache_shape = (rows, heads, max_length, head_dim)
        # self-attention caches in the projections' dtype; positions past the step are never read
        self.keys: list = [None] * len(self.blocks)
        self.values: list = [None] * len(self.blocks)
        self.cross = []  # per layer (keys, values): (B, H, S, d_kv) folded, else (rows, H, S, d_kv)
        for block in self.blocks:
            module = block.layer[1].EncDecAttention
            kv_shape = (batch, length, -1, head_dim)
            keys = module.k(encoder_states).view(kv_shape).transpose(1, 2)
            values = module.v(encoder_states).view(kv_shape).transpose(1, 2)
            if rows_per_record > 1 and not fold_beams:
                keys, values = keys.repeat_interleave(rows_per_record, 0), values.repeat_interleave(rows_per_record, 0)
            self.cross.append((keys, values))
        repeated_mask = attention_mask.repeat_interleave(rows_per_record, 0)  # (rows, S), as generate expands it
        dummy_states = encoder_states.new_empty(rows, length, encoder_states.size(-1))
        self.cross_mask = create_bidirectional_mask(config=config, inputs_embeds=dummy_states[:, :1],
                                                    attention_mask=repeated_mask, encoder_hidden_states=dummy_states)
        self.cross_bias = None  # T5's cross-attention "bias": zeros (1, H, 1, S) in the queries' dtype
        # each module's forward, bound once: the same computation without nn.Module's per-call dispatch
        self.layers = []
        for block in self.blocks:
            own, cross = block.layer[0], block.layer[1]
            attention, encoder_attention = own.SelfAttention, cross.EncDecAttention
            self.layers.append((own.layer_norm.forward, attention.q.forward, attention.k.forward, attention.v.forward,
                                attention.o.forward, attention, cross.layer_norm.forward, encoder_attention.q.forward,
                                encoder_attention.o.forward, encoder_attention, block.layer[-1].forward))
        self.embed, self.final_norm = self.decoder.embed_tokens.forward, self.decoder.final_layer_norm.forward
        self.lm_head = model.lm_head.forward
        self.scale = model.model_dim ** -0.5 if getattr(model.config, "scale_decoder_outputs",
                                                         model.config.tie_word_embeddings) else None
        self.step = 0

    def _attend(self, module, query, keys, values, mask, bias) -> torch.Tensor:
        """The model's attention kernel on (rows, H, 1, d) queries, called as T5Attention calls it: (rows, 1, H * d_v)."""
        output, _ = self.attention(module, query, keys, values, mask, dropout=0.0, scaling=module.scaling,
                                   position_bias=bias)
        return output.reshape(output.size(0), 1, -1)

    def __call__(self, token_ids: torch.Tensor) -> torch.Tensor:
        """Logits (rows, V) of the next token after `token_ids` (rows,) at this step; advances the step."""
        t = self.step
        hidden = self.embed(token_ids[:, None])  # (rows, 1, d_model)
        bias = self.position_bias[:, :, t:t + 1, :t + 1].contiguous()  # (1, H, 1, t + 1)
        shape = (hidden.size(0), 1, -1, self.cache_shape[-1])
        for index, (self_norm, q, k, v, o, self_module, cross_norm, cross_q, cross_o, cross_module,
                    feed_forward) in enumerate(self.layers):
            normed = self_norm(hidden)
            query = q(normed).view(shape).transpose(1, 2)  # (rows, H, 1, d_kv)
            key, value = k(normed).view(shape).transpose(1, 2), v(normed).view(shape).transpose(1, 2)
            if self.keys[index] is None:
                self.keys[index], self.values[index] = key.new_empty(self.cache_shape), value.new_empty(self.cache_shape)
                self.cross_bias = query.new_zeros(1, self.cache_shape[1], 1, self.cross[0][0].size(2))
            keys, values = self.keys[index], self.values[index]
            keys[:, :, t:t + 1] = key
            values[:, :, t:t + 1] = value
            hidden = hidden + o(self._attend(self_module, query, keys[:, :, :t + 1], values[:, :, :t + 1], None, bias))
            query = cross_q(cross_norm(hidden)).view(shape).transpose(1, 2)
            keys, values = self.cross[index]
            hidden = hidden + cross_o(self._attend(cross_module, query, keys, values, self.cross_mask, self.cross_bias))
            hidden = feed_forward(hidden)
        hidden = self.final_norm(hidden)
        if self.scale is not None:
            hidden = hidden * self.scale
        self.step += 1
        return self.lm_head(hidden)[:, -1].float()  # (rows, V)

    def reorder(self, rows: torch.Tensor) -> None:
        """Beam search moved beams: row i continues row rows[i] (self-attention caches of the filled steps only)."""
        filled = self.step
        for cache in self.keys + self.values:
            if cache is not None:
                cache[:, :, :filled] = cache[rows, :, :filled]


def greedy(step: T5StepDecoder, batch: int, start_id: int, eos_id: int, pad_id: int, max_length: int,
           logits_processor=None) -> torch.Tensor:
    """model.generate's greedy ids (B, L <= max_length): finished rows padded with pad_id."""
    device = step.position_bias.device
    sequences = torch.full((batch, 1), start_id, dtype=torch.long, device=device)
    unfinished = torch.ones(batch, dtype=torch.long, device=device)
    while sequences.size(1) < max_length:
        scores = step(sequences[:, -1])
        if logits_processor is not None:
            scores = logits_processor(sequences, scores)
        tokens = torch.argmax(scores, dim=-1)
        tokens = tokens * unfinished + pad_id * (1 - unfinished)
        sequences = torch.cat([sequences, tokens[:, None]], dim=-1)
        unfinished = unfinished & (tokens != eos_id).long()
        if not unfinished.any():
            break
    return sequences


def beam_search(step: T5StepDecoder, batch: int, num_beams: int, start_id: int, eos_id: int, fill_id: int,
                max_length: int, length_penalty: float, early_stopping, logits_processor=None) -> torch.Tensor:
    """model.generate's beam search ids (B, L <= max_length), one best hypothesis per record."""
    device = step.position_bias.device
    keep = 2 * num_beams  # candidates per record: enough that num_beams survive even if num_beams end here
    running = torch.full((batch, num_beams, max_length), fill_id, dtype=torch.long, device=device)
    running[:, :, 0] = start_id
    finished = running.clone()
    running_scores = torch.zeros((batch, num_beams), device=device)
    running_scores[:, 1:] = NEG
    finished_scores = torch.full((batch, num_beams), NEG, device=device)
    finished_lengths = torch.zeros((batch, num_beams), dtype=torch.long, device=device)
    is_finished = torch.zeros((batch, num_beams), dtype=torch.bool, device=device)
    improvable = torch.ones((batch, 1), dtype=torch.bool, device=device)
    top_mask = torch.arange(keep, device=device) < num_beams  # (keep,)
    offsets = torch.arange(batch, device=device)[:, None] * num_beams  # (B, 1)
    identity = torch.arange(batch * num_beams, device=device)
    cur_len = 1
    while True:
        logits = step(running[:, :, cur_len - 1].reshape(-1))  # (B * beams, V)
        log_probs = torch.log_softmax(logits, dim=-1)
        if logits_processor is not None:
            log_probs = logits_processor(running[:, :, :cur_len].reshape(batch * num_beams, cur_len), log_probs)
        vocab = log_probs.size(-1)
        log_probs = (log_probs.view(batch, num_beams, vocab) + running_scores[:, :, None]).view(batch, -1)
        top_scores, top_indices = torch.topk(log_probs, k=keep)  # (B, keep)
        top_beams, top_ids = top_indices // vocab, top_indices % vocab
        candidates = torch.take_along_dim(running, top_beams[:, :, None], dim=1)  # (B, keep, max_length)
        candidates[:, :, cur_len] = top_ids
        hits = (top_ids == eos_id) | (cur_len + 1 >= max_length)  # (B, keep)
        # the best num_beams candidates that go on
        going_on = top_scores + hits.to(torch.float32) * NEG
        chosen = torch.topk(going_on, k=num_beams)[1]  # (B, beams)
        running = torch.take_along_dim(candidates, chosen[:, :, None], dim=1)
        running_scores = torch.take_along_dim(going_on, chosen, dim=1)
        source_rows = torch.take_along_dim(top_beams + offsets, chosen, dim=1).view(-1)
        # finished hypotheses: keep the best num_beams by length-normalised score
        just_finished = hits & top_mask[None, :]
        normalised = top_scores / (cur_len ** length_penalty)
        normalised += (torch.all(is_finished, dim=-1, keepdim=True) & (early_stopping is True)).to(torch.float32) * NEG
        normalised += (~improvable).to(torch.float32) * NEG
        normalised += (~just_finished) * NEG
        merged_scores = torch.cat((finished_scores, normalised), dim=1)
        best = torch.topk(merged_scores, k=num_beams)[1]
        finished = torch.take_along_dim(torch.cat((finished, candidates), dim=1), best[:, :, None], dim=1)
        finished_scores = torch.take_along_dim(merged_scores, best, dim=1)
        lengths = torch.cat((finished_lengths, torch.full_like(top_ids, cur_len)), dim=1)
        finished_lengths = torch.take_along_dim(lengths, best, dim=1)
        is_finished = torch.take_along_dim(torch.cat((is_finished, just_finished), dim=1), best, dim=1)
        if not torch.equal(source_rows, identity):
            step.reorder(source_rows)
        cur_len += 1
        hypothetical = (max_length - 1) if early_stopping == "never" and length_penalty > 0.0 else cur_len - 1
        best_running = running_scores[:, :1] / (hypothetical ** length_penalty)
        worst_finished = torch.where(is_finished, torch.min(finished_scores, dim=1, keepdim=True)[0], NEG)
        improvable = improvable & torch.any(best_running > worst_finished, dim=-1, keepdim=True)
        if not (improvable.any() and not (is_finished.all() and early_stopping is True) and not hits.all()):
            break
    return finished[:, 0, :1 + int(finished_lengths[:, 0].max())]


@dataclass(frozen=True)
class DecodingSettings:
    """How a student decodes, as model.generate's arguments: beam width (1 = greedy) and the longest output in
    tokens (the start token included); early stopping is on with beams, as the thesis's evaluation calls generate."""

    num_beams: int = 4
    max_length: int = 512

    @property
    def early_stopping(self) -> bool:
        """model.generate's early_stopping: on for beam search."""
        return self.num_beams > 1


def decode(model, encoder_states: torch.Tensor, attention_mask: torch.Tensor, settings: DecodingSettings,
           fold_beams: bool, logits_processor=None) -> torch.Tensor:
    """model.generate(max_length, num_beams, early_stopping=num_beams > 1)'s ids for encoded records (B, L)."""
    num_beams, max_length = settings.num_beams, settings.max_length
    config = model.generation_config
    eos_id = config.eos_token_id if config.eos_token_id is not None else model.config.eos_token_id
    pad_id = config.pad_token_id if config.pad_token_id is not None else eos_id
    start_id = model.config.decoder_start_token_id
    batch = encoder_states.size(0)
    step = T5StepDecoder(model, encoder_states, attention_mask, num_beams, max_length, fold_beams and num_beams > 1)
    if num_beams == 1:
        return greedy(step, batch, start_id, eos_id, pad_id, max_length, logits_processor)
    fill_id = pad_id or eos_id  # as generate fills its beam buffers (T5's pad id 0 counts as unset there)
    length_penalty = config.length_penalty if config.length_penalty is not None else 1.0
    return beam_search(step, batch, num_beams, start_id, eos_id, fill_id, max_length, length_penalty,
                       True, logits_processor)
