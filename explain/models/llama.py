"""Llama, read top to bottom: config, RMSNorm, rotary embedding, attention, MLP, block, model, LM head.

Covers SmolLM2, Llama 2/3.x and Mistral-style checkpoints: grouped-query attention, optional tied embeddings,
every rope scaling transformers' Llama reads (linear, dynamic, yarn, longrope, llama3). The pieces the other
Llama-family files share (rotary embedding, attention, block, model) are written here once; qwen2.py, qwen3.py
and smollm3.py carry marked copies (`# Copied from explain.models.llama.<name>`, checked by tests/test_copies.py).
Module names are the checkpoint's names (model.layers.0.self_attn.q_proj.weight), so a state dict loads as it is.
Mirrors transformers' modeling_llama.py numerically.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .cache import KVCache


@dataclass
class LlamaConfig:
    vocab_size: int = 32000
    hidden_size: int = 4096
    intermediate_size: int = 11008
    num_hidden_layers: int = 32
    num_attention_heads: int = 32
    num_key_value_heads: int = 0  # 0 or null (absent): num_attention_heads, set by __post_init__
    head_dim: int = 0  # 0 or null (absent): hidden_size // num_attention_heads, set by __post_init__
    hidden_act: str = "silu"
    max_position_embeddings: int = 2048
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    rope_scaling: dict | None = None
    # transformers 5 keeps rope_theta and the scaling here (empty: read from rope_theta and rope_scaling)
    rope_parameters: dict[str, Any] = field(default_factory=dict)
    attention_bias: bool = False
    mlp_bias: bool = False
    sliding_window: int | None = None  # Mistral: a query sees only the last sliding_window positions
    tie_word_embeddings: bool = False
    bos_token_id: int | list | None = None
    eos_token_id: int | list | None = None
    pad_token_id: int | None = None
    model_type: str = "llama"
    architectures: list | None = None
    torch_dtype: str | None = None
    dtype: str | None = None
    extra: dict = field(default_factory=dict)  # config.json keys this file does not use

    @classmethod
    def from_dict(cls, config: dict) -> LlamaConfig:
        names = {f.name for f in fields(cls)}
        known = {k: v for k, v in config.items() if k in names and k != "extra"}
        return cls(**known, extra={k: v for k, v in config.items() if k not in names})

    def __post_init__(self):
        if not self.num_key_value_heads:
            self.num_key_value_heads = self.num_attention_heads
        if not self.head_dim:
            self.head_dim = self.hidden_size // self.num_attention_heads
        self.rope_parameters = standardize_rope_parameters(self)
        self.rope_theta = self.rope_parameters["rope_theta"]


ROPE_TYPES = ("default", "linear", "dynamic", "yarn", "longrope", "llama3")  # transformers' ROPE_INIT_FUNCTIONS


def standardize_rope_parameters(config: LlamaConfig) -> dict:
    """One dict for the rotary embedding: rope_type, rope_theta and the scaling's own keys.

    transformers 5 writes them to config.json as `rope_parameters`; older files have `rope_theta` and a
    `rope_scaling` dict (its kind under "type" or "rope_type") at the top level. Read as transformers reads them
    (RotaryEmbeddingConfigMixin.convert_rope_params_to_dict): rope_scaling wins over rope_parameters, a
    rope_theta inside the dict wins over the top-level one.
    """
    rope = dict(config.rope_scaling or config.rope_parameters or {})
    rope.setdefault("rope_type", rope.get("type", "default"))
    rope.setdefault("rope_theta", config.rope_theta)
    if rope["rope_type"] in ("llama3", "yarn", "longrope"):
        rope.setdefault("original_max_position_embeddings", config.max_position_embeddings)
    if rope["rope_type"] not in ROPE_TYPES:
        raise NotImplementedError(
            f"rope_type {rope['rope_type']!r} in config.json is not implemented; explain "
            f"implements {', '.join(ROPE_TYPES)}"
        )
    needs = {
        "linear": ["factor"],
        "dynamic": ["factor"],
        "yarn": ["factor"],
        "longrope": ["long_factor", "short_factor"],
        "llama3": ["factor", "low_freq_factor", "high_freq_factor"],
    }.get(rope["rope_type"], [])
    missing = [key for key in needs if key not in rope]
    if missing:
        raise ValueError(
            f"rope_type {rope['rope_type']!r} needs {', '.join(missing)} in config.json's "
            "rope_parameters (or rope_scaling); the config is incomplete"
        )
    return rope


def check_sliding_window(config: LlamaConfig, total: int) -> None:
    """Within the window, sliding-window attention is full causal attention; past it, it is not implemented."""
    if config.sliding_window is not None and total > config.sliding_window:
        raise NotImplementedError(
            f"{total} positions exceed this config's sliding_window of {config.sliding_window}; "
            "explain implements full attention only, which equals the window up to that "
            "length. Shorten the prompt or max_new_tokens"
        )


class LlamaRMSNorm(nn.Module):
    def __init__(self, hidden_size: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.eps = eps

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        dtype = hidden_states.dtype
        hidden_states = hidden_states.to(torch.float32)  # normalise in fp32, as transformers does
        variance = hidden_states.pow(2).mean(-1, keepdim=True)
        hidden_states = hidden_states * torch.rsqrt(variance + self.eps)
        return self.weight * hidden_states.to(dtype)


def rope_inverse_frequencies(config: LlamaConfig, seq_len: torch.Tensor | None = None) -> tuple[torch.Tensor, float]:
    """(inverse frequencies (head_dim/2,), attention factor) for config.rope_parameters, computed as transformers'
    ROPE_INIT_FUNCTIONS compute them (modeling_rope_utils.py). `seq_len`, the length the sequence has reached, is
    read by the two kinds that change with it: "dynamic" and "longrope"."""
    rope, dim = config.rope_parameters, config.head_dim
    kind, base = rope["rope_type"], rope["rope_theta"]
    # the original context is in rope for llama3, yarn and longrope (standardize_rope_parameters sets it), the kinds
    # that read it; linear, dynamic and llama3 state a factor (checked there), yarn and longrope may leave it out:
    # then the factor is how far the context grew past the original
    original = rope.get("original_max_position_embeddings", config.max_position_embeddings)
    factor = rope.get("factor") or config.max_position_embeddings / original
    exponents = torch.arange(0, dim, 2, dtype=torch.int64).float() / dim  # (dim/2,)
    if kind == "dynamic" and seq_len is not None:  # NTK: past the context window, a larger base stretches all waves
        seq_len = torch.maximum(seq_len, torch.tensor(config.max_position_embeddings, dtype=seq_len.dtype))
        base = base * ((factor * seq_len / config.max_position_embeddings) - (factor - 1)) ** (dim / (dim - 2))
    inv_freq, attention_factor = 1.0 / (base**exponents), 1.0
    if kind == "linear":  # positions squeezed by `factor`: the same as dividing every frequency by it
        inv_freq = inv_freq / factor
    elif kind == "llama3":  # long waves slowed down by `factor`, short ones kept, a smooth blend between
        low, high = rope["low_freq_factor"], rope["high_freq_factor"]
        low_wavelen, high_wavelen = original / low, original / high
        wavelen = 2 * math.pi / inv_freq
        scaled = torch.where(wavelen > low_wavelen, inv_freq / factor, inv_freq)
        smooth = (original / wavelen - low) / (high - low)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = ~(wavelen < high_wavelen) * ~(wavelen > low_wavelen)
        inv_freq = torch.where(medium, smoothed, scaled)
    elif kind == "yarn":  # interpolate the long waves, keep (extrapolate) the short ones, ramp between
        stated = rope.get("attention_factor")
        if stated is not None:
            attention_factor = stated
        else:
            mscale, mscale_all_dim = rope.get("mscale"), rope.get("mscale_all_dim")
            attention_factor = (
                _yarn_mscale(factor, mscale) / _yarn_mscale(factor, mscale_all_dim)
                if mscale and mscale_all_dim
                else _yarn_mscale(factor)
            )
        # the dimensions that turn beta_fast and beta_slow times over the original context bound the ramp
        bound = [
            dim * math.log(original / (turns * 2 * math.pi)) / (2 * math.log(base))
            for turns in (rope.get("beta_fast") or 32, rope.get("beta_slow") or 1)
        ]
        if rope.get("truncate", True):
            bound = [math.floor(bound[0]), math.ceil(bound[1])]
        low, high = max(bound[0], 0), min(bound[1], dim - 1)
        high = high + 0.001 if low == high else high  # no division by zero
        ramp = torch.clamp((torch.arange(dim // 2, dtype=torch.float32) - low) / (high - low), 0, 1)  # (dim/2,)
        wave = base**exponents
        keep = 1 - ramp  # 1: extrapolate (unchanged frequency), 0: interpolate (frequency / factor)
        inv_freq = 1.0 / (factor * wave) * (1 - keep) + 1.0 / wave * keep
        attention_factor = float(attention_factor)
    elif kind == "longrope":  # one rescale factor per frequency, a longer set once past the original context
        stated = rope.get("attention_factor")
        if stated is not None:
            attention_factor = stated
        else:
            attention_factor = 1.0 if factor <= 1.0 else math.sqrt(1 + math.log(factor) / math.log(original))
        long = seq_len is not None and seq_len > original
        rescale = torch.tensor(rope["long_factor"] if long else rope["short_factor"], dtype=torch.float32)
        inv_freq = 1.0 / (rescale * base**exponents)
    return inv_freq, attention_factor


def _yarn_mscale(scale: float, mscale: float = 1) -> float:
    return 1.0 if scale <= 1 else 0.1 * mscale * math.log(scale) + 1.0


class LlamaRotaryEmbedding(nn.Module):
    inv_freq: torch.Tensor  # a buffer: nn.Module's attribute lookup would give the checker Tensor | Module

    def __init__(self, config: LlamaConfig):
        super().__init__()
        self.config = config
        self.rope_type = config.rope_parameters["rope_type"]
        # past this length "dynamic" and "longrope" compute other frequencies (transformers' dynamic_rope_update)
        self.original_length = config.rope_parameters.get(
            "original_max_position_embeddings", config.max_position_embeddings
        )
        inv_freq, self.attention_scaling = rope_inverse_frequencies(config)
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    @torch.no_grad()
    def forward(self, x: torch.Tensor, position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        inv_freq, scaling = self.inv_freq, self.attention_scaling
        if self.rope_type in ("dynamic", "longrope"):
            seq_len = position_ids.max() + 1
            if seq_len > self.original_length:
                inv_freq, scaling = rope_inverse_frequencies(self.config, seq_len.cpu())
        freqs = position_ids[..., None].float() * inv_freq.to(device=x.device, dtype=torch.float)  # (B, T, dim/2)
        emb = torch.cat((freqs, freqs), dim=-1)  # (B, T, dim)
        return (emb.cos() * scaling).to(x.dtype), (emb.sin() * scaling).to(x.dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2 :]
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary(q, k, cos, sin):
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)  # (B, 1, T, head_dim), broadcast over heads
    return q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin


def repeat_kv(hidden_states: torch.Tensor, n_rep: int) -> torch.Tensor:
    """(B, num_key_value_heads, T, head_dim) -> (B, num_attention_heads, T, head_dim) for grouped-query attention."""
    if n_rep == 1:
        return hidden_states
    batch, kv_heads, length, head_dim = hidden_states.shape
    hidden_states = hidden_states[:, :, None, :, :].expand(batch, kv_heads, n_rep, length, head_dim)
    return hidden_states.reshape(batch, kv_heads * n_rep, length, head_dim)


def causal_mask(length: int, total: int, dtype, device) -> torch.Tensor:
    """(T, past + T) additive mask: query i (at position past + i) sees keys 0..past + i."""
    past = total - length
    allowed = torch.ones(length, total, dtype=torch.bool, device=device).tril(diagonal=past)
    return torch.zeros(length, total, dtype=dtype, device=device).masked_fill(~allowed, torch.finfo(dtype).min)


def positions_from_mask(attention_mask: torch.Tensor | None, past: int, length: int, device) -> torch.Tensor:
    """Position ids of the `length` new tokens: (1, T) counting on from `past` without a mask; with a (B, past + T)
    attention mask, each row counts only its real tokens, so a left-padded prompt starts at position 0 where its
    text starts. Computed as transformers' generate computes them (_prepare_position_ids_for_generation: cumsum - 1,
    pads set to 0; each later step is the last position + 1, which the cumsum gives too)."""
    if attention_mask is None:
        return torch.arange(past, past + length, device=device)[None]
    positions = attention_mask.long().cumsum(-1) - 1  # (B, past + T)
    positions = positions.masked_fill(attention_mask == 0, 0)
    return positions[:, -length:]  # (B, T)


def padding_mask(attention_mask: torch.Tensor | None, length: int, total: int) -> torch.Tensor | None:
    """(B, 1, T, past + T) boolean mask, True where a query may attend a key: the key is at or before the query
    (causal) and is a real token, not padding (attention_mask 1). None when nothing is padded: attention is then
    plain causal (SDPA's is_causal), as transformers' _ignore_causal_mask_sdpa decides. A pad query of a
    left-padded row sees no key at all; SDPA returns zeros there, and no real token ever attends to it."""
    if attention_mask is None:
        return None
    if attention_mask.shape[-1] != total:
        raise ValueError(
            f"attention_mask covers {attention_mask.shape[-1]} positions, but the cache and the input "
            f"hold {total}; pass the mask of every position so far (the prompt's and each new token's)"
        )
    if bool(attention_mask.all()):
        return None
    query = torch.arange(total - length, total, device=attention_mask.device)[:, None]  # (T, 1)
    key = torch.arange(total, device=attention_mask.device)[None, :]  # (1, past + T)
    return (key <= query)[None, None] & attention_mask.bool()[:, None, None, :]  # (B, 1, T, past + T)


def attend(q, k, v, scaling: float, output_attentions: bool = False, mask: torch.Tensor | None = None):
    """Causal attention of q (B, num_heads, T, head_dim) over k, v (B, num_key_value_heads, past + T, head_dim).

    `mask` (B, 1, T, past + T), from padding_mask, also hides padded keys; None means plain causal attention.
    Returns (B, num_heads, T, head_dim) and the weights (B, num_heads, T, past + T) when output_attentions, else
    None. The paths are transformers': sdpa_attention_forward lets SDPA share each key/value head among its
    group of query heads (enable_gqa, no copies) when there is no mask; with a mask it folds a single query's
    heads into its key/value heads (pack_gqa) or repeats keys and values per query head; eager_attention_forward,
    the one that returns the weights, repeats keys and values to one per query head first.
    """
    length, total = q.shape[-2], k.shape[-2]
    groups = q.shape[1] // k.shape[1]  # query heads per key/value head
    if output_attentions:
        k, v = repeat_kv(k, groups), repeat_kv(v, groups)  # (B, num_heads, past + T, head_dim)
        scores = (q @ k.transpose(2, 3)) * scaling  # (B, num_heads, T, past + T)
        if mask is None:
            scores = scores + causal_mask(length, total, scores.dtype, scores.device)
        else:  # the additive form of the boolean mask, as transformers' eager_mask builds it
            hidden = torch.zeros(mask.shape, dtype=scores.dtype, device=scores.device)
            scores = scores + hidden.masked_fill(~mask, torch.finfo(scores.dtype).min)
        weights = F.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)
        return weights @ v, weights
    if mask is None:
        # new tokens after a cached prefix each see the whole prefix and the new ones before them: a mask says so
        mask = causal_mask(length, total, q.dtype, q.device) if 1 < length < total else None
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=length > 1 and mask is None, scale=scaling, enable_gqa=groups > 1
        )
        return out, None
    if groups > 1 and length == 1:  # one query per row: its heads become the queries of their key/value head
        batch, heads, _, head_dim = q.shape
        packed = q.reshape(batch, heads // groups, groups, head_dim)  # (B, num_key_value_heads, groups, head_dim)
        out = F.scaled_dot_product_attention(packed, k, v, attn_mask=mask, scale=scaling)
        return out.reshape(batch, heads, 1, head_dim), None
    k, v = repeat_kv(k, groups), repeat_kv(v, groups)  # (B, num_heads, past + T, head_dim)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scaling), None


class LlamaAttention(nn.Module):
    def __init__(self, config: LlamaConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.num_heads, self.num_key_value_heads = config.num_attention_heads, config.num_key_value_heads
        self.head_dim = config.head_dim
        self.scaling = self.head_dim**-0.5
        self.q_proj = nn.Linear(config.hidden_size, self.num_heads * self.head_dim, bias=config.attention_bias)
        self.k_proj = nn.Linear(
            config.hidden_size, self.num_key_value_heads * self.head_dim, bias=config.attention_bias
        )
        self.v_proj = nn.Linear(
            config.hidden_size, self.num_key_value_heads * self.head_dim, bias=config.attention_bias
        )
        self.o_proj = nn.Linear(self.num_heads * self.head_dim, config.hidden_size, bias=config.attention_bias)

    def forward(
        self,
        hidden_states,
        cos,
        sin,
        cache: KVCache | None,
        output_attentions: bool = False,
        mask: torch.Tensor | None = None,
    ):
        batch, length, _ = hidden_states.shape
        shape = (batch, length, -1, self.head_dim)
        q = self.q_proj(hidden_states).view(shape).transpose(1, 2)  # (B, num_heads, T, head_dim)
        k = self.k_proj(hidden_states).view(shape).transpose(1, 2)  # (B, num_key_value_heads, T, head_dim)
        v = self.v_proj(hidden_states).view(shape).transpose(1, 2)
        q, k = apply_rotary(q, k, cos, sin)
        if cache is not None:
            k, v = cache.update(self.layer_idx, k, v)  # (B, num_key_value_heads, past + T, head_dim)
        out, weights = attend(q, k, v, self.scaling, output_attentions, mask)
        out = out.transpose(1, 2).reshape(batch, length, -1)  # (B, T, num_heads * head_dim)
        return self.o_proj(out), weights


class LlamaMLP(nn.Module):
    def __init__(self, config: LlamaConfig):
        super().__init__()
        self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=config.mlp_bias)
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=config.mlp_bias)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=config.mlp_bias)
        if config.hidden_act != "silu":
            raise NotImplementedError(f"hidden_act {config.hidden_act!r}: this Llama file implements silu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class LlamaDecoderLayer(nn.Module):
    def __init__(self, config: LlamaConfig, layer_idx: int):
        super().__init__()
        self.input_layernorm = LlamaRMSNorm(config.hidden_size, config.rms_norm_eps)
        self.self_attn = LlamaAttention(config, layer_idx)
        self.post_attention_layernorm = LlamaRMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp = LlamaMLP(config)

    def forward(self, hidden_states, cos, sin, cache, output_attentions=False, mask=None):
        attended, weights = self.self_attn(
            self.input_layernorm(hidden_states), cos, sin, cache, output_attentions, mask
        )
        hidden_states = hidden_states + attended
        hidden_states = hidden_states + self.mlp(self.post_attention_layernorm(hidden_states))
        return hidden_states, weights


class LlamaModel(nn.Module):
    def __init__(self, config: LlamaConfig):
        super().__init__()
        self.config = config
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(LlamaDecoderLayer(config, i) for i in range(config.num_hidden_layers))
        self.norm = LlamaRMSNorm(config.hidden_size, config.rms_norm_eps)
        self.rotary_emb = LlamaRotaryEmbedding(config)

    def forward(self, input_ids, cache=None, position_ids=None, attention_mask=None, output_attentions=False):
        past, length = (len(cache) if cache is not None else 0), input_ids.shape[1]
        check_sliding_window(self.config, past + length)
        hidden_states = self.embed_tokens(input_ids)  # (B, T, hidden_size)
        if position_ids is None:
            position_ids = positions_from_mask(attention_mask, past, length, input_ids.device)
        mask = padding_mask(attention_mask, length, past + length)  # (B, 1, T, past + T), None without padding
        cos, sin = self.rotary_emb(hidden_states, position_ids)
        attentions = []
        for layer in self.layers:
            hidden_states, weights = layer(hidden_states, cos, sin, cache, output_attentions, mask)
            attentions.append(weights)
        return self.norm(hidden_states), attentions if output_attentions else None


@dataclass
class CausalLMOutput:
    logits: torch.Tensor  # (B, T or logits_to_keep, vocab_size)
    cache: KVCache | None
    attentions: list | None = None


class LlamaForCausalLM(nn.Module):
    config_class = LlamaConfig
    tied_weights = {"lm_head.weight": "model.embed_tokens.weight"}  # used when config.tie_word_embeddings
    learned_positions = False  # rotary positions go on past max_position_embeddings (the model may do worse there)

    def __init__(self, config: LlamaConfig):
        super().__init__()
        self.config = config
        self.model = LlamaModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight

    def forward(
        self,
        input_ids,
        cache: KVCache | None = None,
        position_ids=None,
        attention_mask=None,
        logits_to_keep: int = 0,
        output_attentions: bool = False,
    ) -> CausalLMOutput:
        """`attention_mask` (B, past + T): 1 for a real token, 0 for padding, over every position so far (the
        cache's and input_ids'), as transformers' generate passes it; None when no row is padded."""
        hidden_states, attentions = self.model(input_ids, cache, position_ids, attention_mask, output_attentions)
        if logits_to_keep:  # generation needs only the last position's logits
            hidden_states = hidden_states[:, -logits_to_keep:, :]
        return CausalLMOutput(self.lm_head(hidden_states), cache, attentions)
