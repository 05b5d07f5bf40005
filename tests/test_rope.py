"""Every rope scaling transformers applies to a Llama-family model, in every Llama-family file, against transformers.

transformers 5 builds each of these models' rotary embedding from modeling_rope_utils.ROPE_INIT_FUNCTIONS (the
same class in modeling_llama.py, modeling_mistral.py, modeling_qwen2.py, modeling_qwen3.py and
modeling_smollm3.py), so each file reads every rope type: linear, dynamic, yarn, longrope, llama3. The tiny
random models here have max_position_embeddings=16 and run 24 positions, so "dynamic" and "longrope", which
change their frequencies past the original length, change them inside the test, also one token at a time
through the KV cache.
"""

from __future__ import annotations

import functools
from typing import Any

import pytest
import torch
import transformers
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

from explain import models
from explain.models.cache import KVCache

transformers.logging.set_verbosity_error()

VOCAB, CONTEXT, LENGTH = 100, 16, 24
SMALL = dict(
    vocab_size=VOCAB,
    hidden_size=64,
    intermediate_size=96,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=CONTEXT,
    bos_token_id=1,
    eos_token_id=2,
    pad_token_id=0,
)
# name -> (architecture in config.json, transformers config class, arguments)
ARCHITECTURES: dict[str, tuple[str, type, dict[str, Any]]] = {
    "llama": ("LlamaForCausalLM", transformers.LlamaConfig, SMALL),
    "mistral": ("MistralForCausalLM", transformers.MistralConfig, dict(SMALL, sliding_window=None)),
    "qwen2": ("Qwen2ForCausalLM", transformers.Qwen2Config, SMALL),
    "qwen3": ("Qwen3ForCausalLM", transformers.Qwen3Config, dict(SMALL, head_dim=32)),
    "smollm3": ("SmolLM3ForCausalLM", transformers.SmolLM3Config, dict(SMALL, num_hidden_layers=4)),  # a NoPE layer
}


def rope_types(head_dim: int) -> dict:
    """rope_type -> rope_parameters, each making its scaling visible at these lengths."""
    half = head_dim // 2
    return {
        "linear": {"rope_type": "linear", "factor": 2.0},
        "dynamic": {"rope_type": "dynamic", "factor": 2.0},
        # original_max_position_embeddings large enough that the ramp between kept and scaled waves is inside dim
        "yarn": {
            "rope_type": "yarn",
            "factor": 4.0,
            "original_max_position_embeddings": 2048,
            "beta_fast": 32.0,
            "beta_slow": 1.0,
        },
        "yarn-mscale": {
            "rope_type": "yarn",
            "factor": 8.0,
            "original_max_position_embeddings": 1024,
            "mscale": 0.707,
            "mscale_all_dim": 1.0,
            "truncate": False,
        },
        "longrope": {
            "rope_type": "longrope",
            "original_max_position_embeddings": 8,
            "factor": 2.0,
            "short_factor": [1.0 + 0.1 * i for i in range(half)],
            "long_factor": [1.5 + 0.5 * i for i in range(half)],
        },
        "llama3": {
            "rope_type": "llama3",
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8,
        },
    }


def head_dim(arguments: dict) -> int:
    return arguments.get("head_dim") or arguments["hidden_size"] // arguments["num_attention_heads"]


CASES = [(arch, kind) for arch in ARCHITECTURES for kind in rope_types(16)]


def hf_config(arch: str, kind: str, theta: float = 10000.0):
    _, config_class, arguments = ARCHITECTURES[arch]
    rope = dict(rope_types(head_dim(arguments))[kind], rope_theta=theta)
    return config_class(**arguments, rope_parameters=rope)


@functools.cache
def pair(arch: str, kind: str):
    """(transformers model, explain model) with the same random weights, from transformers' own config.json dict."""
    config = hf_config(arch, kind)
    torch.manual_seed(0)
    ref = transformers.AutoModelForCausalLM.from_config(config, attn_implementation="sdpa").eval()
    ours = models.build_config(dict(config.to_dict(), architectures=[ARCHITECTURES[arch][0]]))
    our = models.model_class({"architectures": [ARCHITECTURES[arch][0]]})(ours).eval()
    our.load_state_dict(ref.state_dict(), strict=True)
    return ref, our


def ids(length: int = LENGTH) -> torch.Tensor:
    return torch.randint(3, VOCAB, (2, length), generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("arch, kind", CASES)
@torch.no_grad()
def test_logits_and_greedy_ids_match_transformers(arch, kind):
    ref, our = pair(arch, kind)
    tokens = ids()
    expected = ref(tokens).logits
    torch.testing.assert_close(our(tokens).logits, expected, atol=1e-4, rtol=0)
    # one token at a time through the cache, past max_position_embeddings; "dynamic" and "longrope" change their
    # frequencies as the length grows while the cached keys keep the rotation they had (in transformers' cache as
    # in explain's), so only the other kinds equal the full-sequence logits
    cache, reference = KVCache(), ref(tokens[:, :6], use_cache=True)
    pieces, want = [our(tokens[:, :6], cache=cache).logits], [reference.logits]
    for i in range(6, LENGTH):
        pieces.append(our(tokens[:, i : i + 1], cache=cache).logits)
        reference = ref(tokens[:, i : i + 1], cache=reference.cache, use_cache=True)
        want.append(reference.logits)
    torch.testing.assert_close(torch.cat(pieces, dim=1), torch.cat(want, dim=1), atol=1e-4, rtol=0)
    if kind not in ("dynamic", "longrope"):
        torch.testing.assert_close(torch.cat(pieces, dim=1), expected, atol=1e-4, rtol=0)
    # greedy decoding from 6 tokens to 24: the ids generate() picks, through the boundary at 16
    prompt = tokens[:1, :6]
    ref.generation_config.eos_token_id, ref.generation_config.pad_token_id = None, 0
    want = ref.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=LENGTH - 6, do_sample=False)
    cache, got, step = KVCache(), prompt, prompt
    for _ in range(LENGTH - 6):
        step = our(step, cache=cache, logits_to_keep=1).logits[:, -1].argmax(-1, keepdim=True)
        got = torch.cat([got, step], dim=1)
    assert got.tolist() == want.tolist()


@pytest.mark.parametrize("kind", list(rope_types(16)))
@pytest.mark.parametrize("seq_len", [None, 12, 17, 40])
def test_frequencies_and_attention_factor_equal_transformers(kind, seq_len):
    """The inverse frequencies bit for bit, and the attention factor yarn and longrope scale cos and sin by."""
    config = hf_config("llama", kind, theta=500000.0)
    rope_type = config.rope_parameters["rope_type"]
    length = None if seq_len is None else torch.tensor(seq_len)
    want, want_factor = ROPE_INIT_FUNCTIONS[rope_type](config, "cpu", seq_len=length)
    from explain.models.llama import rope_inverse_frequencies

    ours = models.build_config(dict(config.to_dict(), architectures=["LlamaForCausalLM"]))
    got, got_factor = rope_inverse_frequencies(ours, length)
    assert torch.equal(got, want)
    assert got_factor == pytest.approx(want_factor, rel=1e-12)
    if rope_type in ("yarn", "longrope"):
        assert got_factor != 1.0  # else the test would not see a missing attention factor


def legacy(config) -> dict:
    """The same config as an older config.json writes it: rope_theta and rope_scaling ("type") at the top level."""
    data = config.to_dict()
    rope = dict(data.pop("rope_parameters"))
    data["rope_theta"] = rope.pop("rope_theta")
    rope["type"] = rope.pop("rope_type")
    data["rope_scaling"] = rope
    return data


@pytest.mark.parametrize("arch", list(ARCHITECTURES))
@pytest.mark.parametrize("kind", ["linear", "yarn", "llama3"])
@torch.no_grad()
def test_older_rope_scaling_format_reads_the_same(arch, kind):
    config = hf_config(arch, kind, theta=20000.0)
    architecture = ARCHITECTURES[arch][0]
    transformers_reads = type(config)(**{k: v for k, v in legacy(config).items() if k != "transformers_version"})
    assert transformers_reads.rope_parameters["rope_theta"] == 20000.0
    new = models.build_config(dict(config.to_dict(), architectures=[architecture]))
    old = models.build_config(dict(legacy(config), architectures=[architecture]))
    assert old.rope_theta == new.rope_theta == 20000.0
    for key, value in transformers_reads.rope_parameters.items():
        if key != "type":
            assert old.rope_parameters[key] == new.rope_parameters[key] == value, key
    cls = models.model_class({"architectures": [architecture]})
    torch.testing.assert_close(cls(old).model.rotary_emb.inv_freq, cls(new).model.rotary_emb.inv_freq, atol=0, rtol=0)


def test_an_unknown_or_incomplete_rope_scaling_is_a_clear_error():
    with pytest.raises(NotImplementedError, match="rope_type 'su' .* implements default, linear, dynamic, yarn"):
        models.build_config(dict(SMALL, architectures=["Qwen2ForCausalLM"], rope_scaling={"type": "su"}))
    with pytest.raises(ValueError, match="'llama3' needs low_freq_factor, high_freq_factor"):
        models.build_config(
            dict(SMALL, architectures=["SmolLM3ForCausalLM"], rope_parameters={"rope_type": "llama3", "factor": 8.0})
        )
