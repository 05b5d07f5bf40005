"""GPT-2, read top to bottom: config, Conv1D, attention, MLP, block, model, LM head.

The 2019 decoder: learned position embeddings added to the token embeddings, LayerNorm before attention and
MLP, a gelu_new MLP, the LM head tied to the token embeddings. Module names are the checkpoint's names
(transformer.h.0.attn.c_attn.weight) and the projections keep OpenAI's (in, out) weight layout, so a
transformers state dict loads as it is. Mirrors transformers' modeling_gpt2.py numerically.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from .cache import KVCache


@dataclass
class GPT2Config:
    vocab_size: int = 50257
    n_positions: int = 1024
    n_embd: int = 768
    n_layer: int = 12
    n_head: int = 12
    n_inner: int | None = None  # MLP width; None means 4 * n_embd
    activation_function: str = "gelu_new"
    layer_norm_epsilon: float = 1e-5
    scale_attn_weights: bool = True
    scale_attn_by_inverse_layer_idx: bool = False
    reorder_and_upcast_attn: bool = False
    add_cross_attention: bool = False
    tie_word_embeddings: bool = True  # GPT-2 checkpoints have no lm_head of their own
    bos_token_id: int | list | None = 50256
    eos_token_id: int | list | None = 50256
    pad_token_id: int | None = None
    model_type: str = "gpt2"
    architectures: list | None = None
    torch_dtype: str | None = None
    dtype: str | None = None
    extra: dict = field(default_factory=dict)  # config.json keys this file does not use

    @classmethod
    def from_dict(cls, config: dict) -> GPT2Config:
        names = {f.name for f in fields(cls)}
        known = {k: v for k, v in config.items() if k in names and k != "extra"}
        return cls(**known, extra={k: v for k, v in config.items() if k not in names})

    def __post_init__(self):
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd {self.n_embd} is not divisible by n_head {self.n_head}")
        if self.add_cross_attention:
            raise NotImplementedError(
                "add_cross_attention: GPT-2 as the decoder of an encoder-decoder model is "
                "not supported by explain; use a plain GPT-2 checkpoint"
            )

    # the names the other model files use -> GPT-2's own (transformers' GPT2Config.attribute_map), so code that
    # asks any config for num_hidden_layers, hidden_size... gets GPT-2's answer
    attribute_map: ClassVar[dict] = {
        "hidden_size": "n_embd",
        "max_position_embeddings": "n_positions",
        "num_attention_heads": "n_head",
        "num_hidden_layers": "n_layer",
    }

    def __getattr__(self, name: str):  # called only for names that are not fields
        if name in GPT2Config.attribute_map:
            return getattr(self, GPT2Config.attribute_map[name])
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")


class Conv1D(nn.Module):
    """A linear layer whose weight is stored (in, out), as in OpenAI's checkpoint: y = x @ weight + bias."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(in_features, out_features))
        self.bias = nn.Parameter(torch.zeros(out_features))
        nn.init.normal_(self.weight, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # addmm (bias + x @ weight in one call) is what transformers runs, so the rounding is the same
        out = torch.addmm(self.bias, x.reshape(-1, x.shape[-1]), self.weight)  # (B * T, out)
        return out.view(*x.shape[:-1], -1)  # (B, T, out)


def gelu_new(x: torch.Tensor) -> torch.Tensor:
    """The tanh approximation of GELU that GPT-2 was trained with, written as transformers writes it."""
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))


ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "gelu_new": gelu_new,
    "gelu": F.gelu,
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
}


class GPT2Attention(nn.Module):
    def __init__(self, config: GPT2Config, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.num_heads = config.n_head
        self.head_dim = config.n_embd // config.n_head
        self.scaling = self.head_dim**-0.5 if config.scale_attn_weights else 1.0
        if config.scale_attn_by_inverse_layer_idx:
            self.scaling /= float(layer_idx + 1)
        self.upcast = config.reorder_and_upcast_attn  # scores in float32 on the eager path
        self.c_attn = Conv1D(config.n_embd, 3 * config.n_embd)  # queries, keys and values in one matmul
        self.c_proj = Conv1D(config.n_embd, config.n_embd)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # older checkpoints store the causal mask as attn.bias / attn.masked_bias; masks are built here instead
        for name in ("bias", "masked_bias"):
            state_dict.pop(prefix + name, None)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(
        self, hidden_states, cache: KVCache | None, output_attentions: bool = False, mask: torch.Tensor | None = None
    ):
        """`mask` (B, 1, T, past + T), from padding_mask, also hides padded keys; None: plain causal attention."""
        batch, length, width = hidden_states.shape
        q, k, v = self.c_attn(hidden_states).split(width, dim=2)  # 3 x (B, T, n_embd)
        shape = (batch, length, self.num_heads, self.head_dim)
        q = q.view(shape).transpose(1, 2)  # (B, n_head, T, head_dim)
        k = k.view(shape).transpose(1, 2)
        v = v.view(shape).transpose(1, 2)
        if cache is not None:
            k, v = cache.update(self.layer_idx, k, v)  # (B, n_head, past + T, head_dim)
        weights = None
        if output_attentions:  # eager path: the weights themselves, for the views
            if self.upcast:
                scores = (q.float() @ k.float().transpose(2, 3)) * self.scaling  # (B, n_head, T, past + T)
            else:
                scores = (q @ k.transpose(2, 3)) * self.scaling
            if mask is None:
                scores = scores + causal_mask(length, k.shape[-2], scores.dtype, scores.device)
            else:  # the additive form of the boolean mask, as transformers' eager_mask builds it
                hidden = torch.zeros(mask.shape, dtype=scores.dtype, device=scores.device)
                scores = scores + hidden.masked_fill(~mask, torch.finfo(scores.dtype).min)
            weights = F.softmax(scores, dim=-1).to(v.dtype)  # GPT-2 keeps the softmax in the scores' dtype
            out = weights @ v  # (B, n_head, T, head_dim)
        elif mask is not None:  # padding: causal and padding in one boolean mask
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=self.scaling)
        elif length == k.shape[-2]:
            out = F.scaled_dot_product_attention(q, k, v, is_causal=length > 1, scale=self.scaling)
        else:  # new tokens after a cached prefix: each sees the whole prefix and the new ones before it
            mask = causal_mask(length, k.shape[-2], q.dtype, q.device) if length > 1 else None
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=self.scaling)
        out = out.transpose(1, 2).reshape(batch, length, width)  # (B, T, n_embd)
        return self.c_proj(out), weights


# Copied from explain.models.llama.causal_mask
def causal_mask(length: int, total: int, dtype, device) -> torch.Tensor:
    """(T, past + T) additive mask: query i (at position past + i) sees keys 0..past + i."""
    past = total - length
    allowed = torch.ones(length, total, dtype=torch.bool, device=device).tril(diagonal=past)
    return torch.zeros(length, total, dtype=dtype, device=device).masked_fill(~allowed, torch.finfo(dtype).min)


# Copied from explain.models.llama.positions_from_mask
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


# Copied from explain.models.llama.padding_mask
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


class GPT2MLP(nn.Module):
    def __init__(self, config: GPT2Config):
        super().__init__()
        inner = config.n_inner if config.n_inner is not None else 4 * config.n_embd
        self.c_fc = Conv1D(config.n_embd, inner)
        self.c_proj = Conv1D(inner, config.n_embd)
        if config.activation_function not in ACTIVATIONS:
            raise NotImplementedError(
                f"activation_function {config.activation_function!r}: this GPT-2 file "
                f"implements {', '.join(ACTIVATIONS)}"
            )
        self.act = ACTIVATIONS[config.activation_function]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(self.act(self.c_fc(x)))


class GPT2Block(nn.Module):
    def __init__(self, config: GPT2Config, layer_idx: int):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.attn = GPT2Attention(config, layer_idx)
        self.ln_2 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.mlp = GPT2MLP(config)

    def forward(self, hidden_states, cache, output_attentions=False, mask=None):
        attended, weights = self.attn(self.ln_1(hidden_states), cache, output_attentions, mask)
        hidden_states = attended + hidden_states
        hidden_states = hidden_states + self.mlp(self.ln_2(hidden_states))
        return hidden_states, weights


class GPT2Model(nn.Module):
    def __init__(self, config: GPT2Config):
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)  # token embeddings
        self.wpe = nn.Embedding(config.n_positions, config.n_embd)  # learned position embeddings
        self.h = nn.ModuleList(GPT2Block(config, i) for i in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)

    def forward(self, input_ids, cache=None, position_ids=None, attention_mask=None, output_attentions=False):
        past, length = (len(cache) if cache is not None else 0), input_ids.shape[1]
        if past + length > self.config.n_positions:
            raise ValueError(
                f"{past + length} tokens do not fit GPT-2's {self.config.n_positions} "
                "learned positions (n_positions); shorten the prompt or max_new_tokens"
            )
        if position_ids is None:
            position_ids = positions_from_mask(attention_mask, past, length, input_ids.device)
        mask = padding_mask(attention_mask, length, past + length)  # (B, 1, T, past + T), None without padding
        hidden_states = self.wte(input_ids) + self.wpe(position_ids)  # (B, T, n_embd)
        attentions = []
        for block in self.h:
            hidden_states, weights = block(hidden_states, cache, output_attentions, mask)
            attentions.append(weights)
        return self.ln_f(hidden_states), attentions if output_attentions else None


# Copied from explain.models.llama.CausalLMOutput
@dataclass
class CausalLMOutput:
    logits: torch.Tensor  # (B, T or logits_to_keep, vocab_size)
    cache: KVCache | None
    attentions: list | None = None


class GPT2LMHeadModel(nn.Module):
    config_class = GPT2Config
    tied_weights = {"lm_head.weight": "transformer.wte.weight"}  # used when config.tie_word_embeddings
    base_model_prefix = "transformer"  # OpenAI-era checkpoints name their tensors without it (h.0..., wte...)
    learned_positions = True  # wpe has n_positions rows: there is no position past them to embed

    def __init__(self, config: GPT2Config):
        super().__init__()
        self.config = config
        self.transformer = GPT2Model(config)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.transformer.wte.weight

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
        hidden_states, attentions = self.transformer(input_ids, cache, position_ids, attention_mask, output_attentions)
        if logits_to_keep:  # generation needs only the last position's logits
            hidden_states = hidden_states[:, -logits_to_keep:, :]
        return CausalLMOutput(self.lm_head(hidden_states), cache, attentions)
