"""Qwen2, read top to bottom: config, RMSNorm, rotary embedding, attention, MLP, block, model, LM head.

Qwen2 and Qwen2.5 are Llama with a bias on the query, key and value projections. Their sliding-window
attention is off in every released config (use_sliding_window: false); a config that turns it on runs here
only while the sequence fits in the window, where it equals full attention. Module names are the checkpoint's
names (model.layers.0.self_attn.q_proj.bias), so a state dict loads as it is. Mirrors transformers'
modeling_qwen2.py numerically.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import torch
import torch.nn.functional as F
from torch import nn

from .cache import KVCache


@dataclass
class Qwen2Config:
    vocab_size: int = 151936
    hidden_size: int = 4096
    intermediate_size: int = 22016
    num_hidden_layers: int = 32
    num_attention_heads: int = 32
    num_key_value_heads: int | None = None
    head_dim: int | None = None
    hidden_act: str = "silu"
    max_position_embeddings: int = 32768
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    rope_scaling: dict | None = None
    rope_parameters: dict | None = None  # transformers 5 keeps rope_theta and the scaling here
    use_sliding_window: bool = False
    sliding_window: int | None = None
    max_window_layers: int = 28  # with use_sliding_window, layers from this index on use the window
    layer_types: list | None = None  # per layer "full_attention" or "sliding_attention"
    tie_word_embeddings: bool = False
    bos_token_id: int | list | None = None
    eos_token_id: int | list | None = None
    pad_token_id: int | None = None
    model_type: str = "qwen2"
    architectures: list | None = None
    torch_dtype: str | None = None
    dtype: str | None = None
    extra: dict = field(default_factory=dict)  # config.json keys this file does not use

    @classmethod
    def from_dict(cls, config: dict) -> "Qwen2Config":
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
        if not self.use_sliding_window:
            self.sliding_window = None  # transformers ignores the window unless use_sliding_window is set
        if self.layer_types is None:
            self.layer_types = ["sliding_attention" if self.sliding_window is not None and i >= self.max_window_layers
                                else "full_attention" for i in range(self.num_hidden_layers)]


def check_sliding_window(config: Qwen2Config, total: int) -> None:
    """Within the window, sliding-window attention is full causal attention; past it, it is not implemented."""
    if config.sliding_window is not None and "sliding_attention" in config.layer_types \
            and total > config.sliding_window:
        raise NotImplementedError(f"{total} positions exceed this config's sliding_window of "
                                  f"{config.sliding_window} (use_sliding_window is true); explain implements full "
                                  "attention only, which equals the window up to that length. Shorten the prompt "
                                  "or max_new_tokens")


class Qwen2RMSNorm(nn.Module):
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


class Qwen2RotaryEmbedding(nn.Module):
    def __init__(self, config: Qwen2Config):
        super().__init__()
        scaling = config.rope_scaling or {}
        kind = scaling.get("rope_type", scaling.get("type", "default"))
        if kind != "default":
            raise NotImplementedError(f"rope scaling {kind!r} is not implemented for Qwen2; explain supports the "
                                      "default rotary embedding (remove rope_scaling from config.json to run "
                                      "within the original context length)")
        dim = config.head_dim
        inv_freq = 1.0 / (config.rope_theta ** (torch.arange(0, dim, 2, dtype=torch.float) / dim))  # (dim/2,)
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    @torch.no_grad()
    def forward(self, x: torch.Tensor, position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        freqs = position_ids[..., None].float() * self.inv_freq.float()  # (B, T, dim/2)
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


class Qwen2Attention(nn.Module):
    def __init__(self, config: Qwen2Config, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.num_heads, self.num_key_value_heads = config.num_attention_heads, config.num_key_value_heads
        self.head_dim = config.head_dim
        self.scaling = self.head_dim ** -0.5
        # the one difference from Llama: q, k and v have a bias, the output projection does not
        self.q_proj = nn.Linear(config.hidden_size, self.num_heads * self.head_dim, bias=True)
        self.k_proj = nn.Linear(config.hidden_size, self.num_key_value_heads * self.head_dim, bias=True)
        self.v_proj = nn.Linear(config.hidden_size, self.num_key_value_heads * self.head_dim, bias=True)
        self.o_proj = nn.Linear(self.num_heads * self.head_dim, config.hidden_size, bias=False)

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


class Qwen2MLP(nn.Module):
    def __init__(self, config: Qwen2Config):
        super().__init__()
        self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)
        if config.hidden_act != "silu":
            raise NotImplementedError(f"hidden_act {config.hidden_act!r}: this Qwen2 file implements silu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Qwen2DecoderLayer(nn.Module):
    def __init__(self, config: Qwen2Config, layer_idx: int):
        super().__init__()
        self.input_layernorm = Qwen2RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.self_attn = Qwen2Attention(config, layer_idx)
        self.post_attention_layernorm = Qwen2RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp = Qwen2MLP(config)

    def forward(self, hidden_states, cos, sin, cache, output_attentions=False):
        attended, weights = self.self_attn(self.input_layernorm(hidden_states), cos, sin, cache, output_attentions)
        hidden_states = hidden_states + attended
        hidden_states = hidden_states + self.mlp(self.post_attention_layernorm(hidden_states))
        return hidden_states, weights


class Qwen2Model(nn.Module):
    def __init__(self, config: Qwen2Config):
        super().__init__()
        self.config = config
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(Qwen2DecoderLayer(config, i) for i in range(config.num_hidden_layers))
        self.norm = Qwen2RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.rotary_emb = Qwen2RotaryEmbedding(config)

    def forward(self, input_ids, cache=None, position_ids=None, output_attentions=False):
        past = len(cache) if cache is not None else 0
        check_sliding_window(self.config, past + input_ids.shape[1])
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


class Qwen2ForCausalLM(nn.Module):
    config_class = Qwen2Config
    tied_weights = {"lm_head.weight": "model.embed_tokens.weight"}  # used when config.tie_word_embeddings

    def __init__(self, config: Qwen2Config):
        super().__init__()
        self.config = config
        self.model = Qwen2Model(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight

    def forward(self, input_ids, cache: KVCache | None = None, position_ids=None, logits_to_keep: int = 0,
                output_attentions: bool = False) -> CausalLMOutput:
        hidden_states, attentions = self.model(input_ids, cache, position_ids, output_attentions)
        if logits_to_keep:  # generation needs only the last position's logits
            hidden_states = hidden_states[:, -logits_to_keep:, :]
        return CausalLMOutput(self.lm_head(hidden_states), cache, attentions)
