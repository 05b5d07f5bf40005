"""Llama, read top to bottom: config, RMSNorm, rotary embedding, attention, MLP, block, model, LM head.

Covers SmolLM2, Llama 2/3.x ("llama3" rope scaling) and Mistral-style checkpoints: grouped-query attention,
optional tied embeddings. Module names are the checkpoint's names (model.layers.0.self_attn.q_proj.weight),
so a state dict loads as it is. Mirrors transformers' modeling_llama.py numerically.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields

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
    num_key_value_heads: int | None = None
    head_dim: int | None = None
    hidden_act: str = "silu"
    max_position_embeddings: int = 2048
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    rope_scaling: dict | None = None
    rope_parameters: dict | None = None  # transformers 5 keeps rope_theta and the scaling here
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
    def from_dict(cls, config: dict) -> "LlamaConfig":
        names = {f.name for f in fields(cls)}
        known = {k: v for k, v in config.items() if k in names and k != "extra"}
        return cls(**known, extra={k: v for k, v in config.items() if k not in names})

    def __post_init__(self):
        if self.num_key_value_heads is None:
            self.num_key_value_heads = self.num_attention_heads
        if self.head_dim is None:
            self.head_dim = self.hidden_size // self.num_attention_heads
        rope = dict(self.rope_parameters or {})
        self.rope_theta = rope.get("rope_theta", self.rope_theta)
        if self.rope_scaling is None and rope.get("rope_type", "default") != "default":
            self.rope_scaling = rope


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


def rope_inverse_frequencies(config: LlamaConfig) -> torch.Tensor:
    """Frequencies of the rotary embedding; "llama3" scaling stretches the low frequencies for long context."""
    dim = config.head_dim
    inv_freq = 1.0 / (config.rope_theta ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
    scaling = config.rope_scaling or {}
    kind = scaling.get("rope_type", scaling.get("type", "default"))
    if kind == "llama3":
        factor, low, high = scaling["factor"], scaling["low_freq_factor"], scaling["high_freq_factor"]
        old_context = scaling["original_max_position_embeddings"]
        low_wavelen, high_wavelen = old_context / low, old_context / high
        wavelen = 2 * math.pi / inv_freq
        scaled = torch.where(wavelen > low_wavelen, inv_freq / factor, inv_freq)  # long waves: slowed down
        smooth = (old_context / wavelen - low) / (high - low)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = ~(wavelen < high_wavelen) * ~(wavelen > low_wavelen)
        inv_freq = torch.where(medium, smoothed, scaled)
    elif kind == "linear":
        inv_freq = inv_freq / scaling["factor"]
    elif kind != "default":
        raise NotImplementedError(f"rope scaling {kind!r} is not implemented; explain supports default, linear, llama3")
    return inv_freq


class LlamaRotaryEmbedding(nn.Module):
    def __init__(self, config: LlamaConfig):
        super().__init__()
        self.register_buffer("inv_freq", rope_inverse_frequencies(config), persistent=False)

    @torch.no_grad()
    def forward(self, x: torch.Tensor, position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        inv_freq = self.inv_freq[None, :, None].float().expand(position_ids.shape[0], -1, 1)  # (B, dim/2, 1)
        freqs = (inv_freq @ position_ids[:, None, :].float()).transpose(1, 2)  # (B, T, dim/2)
        emb = torch.cat((freqs, freqs), dim=-1)  # (B, T, dim)
        return emb.cos().to(x.dtype), emb.sin().to(x.dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2:]
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


class LlamaAttention(nn.Module):
    def __init__(self, config: LlamaConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.num_heads, self.num_key_value_heads = config.num_attention_heads, config.num_key_value_heads
        self.head_dim = config.head_dim
        self.scaling = self.head_dim ** -0.5
        self.q_proj = nn.Linear(config.hidden_size, self.num_heads * self.head_dim, bias=config.attention_bias)
        self.k_proj = nn.Linear(config.hidden_size, self.num_key_value_heads * self.head_dim, bias=config.attention_bias)
        self.v_proj = nn.Linear(config.hidden_size, self.num_key_value_heads * self.head_dim, bias=config.attention_bias)
        self.o_proj = nn.Linear(self.num_heads * self.head_dim, config.hidden_size, bias=config.attention_bias)

    def forward(self, hidden_states, cos, sin, cache: KVCache | None, output_attentions: bool = False):
        batch, length, _ = hidden_states.shape
        shape = (batch, length, -1, self.head_dim)
        q = self.q_proj(hidden_states).view(shape).transpose(1, 2)  # (B, num_heads, T, head_dim)
        k = self.k_proj(hidden_states).view(shape).transpose(1, 2)  # (B, num_key_value_heads, T, head_dim)
        v = self.v_proj(hidden_states).view(shape).transpose(1, 2)
        q, k = apply_rotary(q, k, cos, sin)
        if cache is not None:
            k, v = cache.update(self.layer_idx, k, v)  # (B, num_key_value_heads, past + T, head_dim)
        n_rep = self.num_heads // self.num_key_value_heads
        k, v = repeat_kv(k, n_rep), repeat_kv(v, n_rep)
        weights = None
        if output_attentions:  # eager path: the weights themselves, for the views
            scores = (q @ k.transpose(2, 3)) * self.scaling  # (B, num_heads, T, past + T)
            scores = scores + causal_mask(length, k.shape[-2], scores.dtype, scores.device)
            weights = F.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)
            out = weights @ v  # (B, num_heads, T, head_dim)
        elif length == k.shape[-2]:
            out = F.scaled_dot_product_attention(q, k, v, is_causal=length > 1, scale=self.scaling)
        else:  # new tokens after a cached prefix: each sees the whole prefix and the new ones before it
            mask = causal_mask(length, k.shape[-2], q.dtype, q.device) if length > 1 else None
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=self.scaling)
        out = out.transpose(1, 2).reshape(batch, length, -1)  # (B, T, num_heads * head_dim)
        return self.o_proj(out), weights


def causal_mask(length: int, total: int, dtype, device) -> torch.Tensor:
    """(T, past + T) additive mask: query i (at position past + i) sees keys 0..past + i."""
    past = total - length
    allowed = torch.ones(length, total, dtype=torch.bool, device=device).tril(diagonal=past)
    return torch.zeros(length, total, dtype=dtype, device=device).masked_fill(~allowed, torch.finfo(dtype).min)


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

    def forward(self, hidden_states, cos, sin, cache, output_attentions=False):
        attended, weights = self.self_attn(self.input_layernorm(hidden_states), cos, sin, cache, output_attentions)
        hidden_states = hidden_states + attended
        hidden_states = hidden_states + self.mlp(self.post_attention_layernorm(hidden_states))
        return hidden_states, weights


class LlamaModel(nn.Module):
    def __init__(self, config: LlamaConfig):
        super().__init__()
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(LlamaDecoderLayer(config, i) for i in range(config.num_hidden_layers))
        self.norm = LlamaRMSNorm(config.hidden_size, config.rms_norm_eps)
        self.rotary_emb = LlamaRotaryEmbedding(config)
        self.sliding_window = config.sliding_window

    def forward(self, input_ids, cache=None, position_ids=None, output_attentions=False):
        past = len(cache) if cache is not None else 0
        if self.sliding_window is not None and past + input_ids.shape[1] > self.sliding_window:
            raise NotImplementedError(f"{past + input_ids.shape[1]} positions exceed this config's sliding_window "
                                      f"of {self.sliding_window}; explain implements full attention only, which "
                                      "equals the window up to that length. Shorten the prompt or max_new_tokens")
        hidden_states = self.embed_tokens(input_ids)  # (B, T, hidden_size)
        if position_ids is None:
            position_ids = torch.arange(past, past + input_ids.shape[1], device=input_ids.device)[None]
        cos, sin = self.rotary_emb(hidden_states, position_ids)
        attentions = []
        for layer in self.layers:
            hidden_states, weights = layer(hidden_states, cos, sin, cache, output_attentions)
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

    def __init__(self, config: LlamaConfig):
        super().__init__()
        self.config = config
        self.model = LlamaModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight

    def forward(self, input_ids, cache: KVCache | None = None, position_ids=None, logits_to_keep: int = 0,
                output_attentions: bool = False) -> CausalLMOutput:
        hidden_states, attentions = self.model(input_ids, cache, position_ids, output_attentions)
        if logits_to_keep:  # generation needs only the last position's logits
            hidden_states = hidden_states[:, -logits_to_keep:, :]
        return CausalLMOutput(self.lm_head(hidden_states), cache, attentions)
