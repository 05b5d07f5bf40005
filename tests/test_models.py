"""Parity of every model file with transformers: tiny random configs written here, weights copied over.

For each architecture: logits on a full sequence, the same logits fed through the KV cache, the eager
(attention weights) path against the SDPA path and against transformers' eager weights, greedy decoding
against `generate`, and a bfloat16 run. transformers is the reference only; explain never imports it.
"""

from __future__ import annotations

import functools
from typing import Any

import pytest
import torch
import transformers

from explain import models
from explain.errors import UnsupportedError
from explain.models.cache import KVCache

transformers.logging.set_verbosity_error()

VOCAB = 100
SMALL = dict(
    vocab_size=VOCAB,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    max_position_embeddings=64,
    bos_token_id=1,
    eos_token_id=2,
    pad_token_id=0,
)

# name -> (architecture, transformers config class, config arguments)
CASES: dict[str, tuple[str, type, dict[str, Any]]] = {
    "gpt2": (
        "GPT2LMHeadModel",
        transformers.GPT2Config,
        dict(n_layer=2, n_embd=64, n_head=4, vocab_size=VOCAB, n_positions=64, bos_token_id=1, eos_token_id=2),
    ),
    "llama-gqa": ("LlamaForCausalLM", transformers.LlamaConfig, dict(SMALL, num_key_value_heads=2)),
    "llama3-rope": (
        "LlamaForCausalLM",
        transformers.LlamaConfig,
        dict(
            SMALL,
            num_key_value_heads=2,
            tie_word_embeddings=True,
            rope_scaling={
                "rope_type": "llama3",
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 16,
            },
        ),
    ),
    "mistral": (
        "MistralForCausalLM",
        transformers.MistralConfig,
        dict(SMALL, num_key_value_heads=2, sliding_window=48),
    ),
    "qwen2": ("Qwen2ForCausalLM", transformers.Qwen2Config, dict(SMALL, num_key_value_heads=2)),
    "qwen3": ("Qwen3ForCausalLM", transformers.Qwen3Config, dict(SMALL, num_key_value_heads=2, head_dim=32)),
    "qwen3-bias": (
        "Qwen3ForCausalLM",
        transformers.Qwen3Config,
        dict(SMALL, num_key_value_heads=1, head_dim=16, attention_bias=True, tie_word_embeddings=True),
    ),
    "smollm3": (
        "SmolLM3ForCausalLM",
        transformers.SmolLM3Config,
        dict(SMALL, num_hidden_layers=4, num_key_value_heads=2),
    ),  # layer 3 is a NoPE layer
    "smollm3-nope-list": (
        "SmolLM3ForCausalLM",
        transformers.SmolLM3Config,
        dict(SMALL, num_key_value_heads=4, no_rope_layers=[0, 1], tie_word_embeddings=False),
    ),
}
LENGTH = 12  # test sequences: (2, LENGTH)


def build(name: str, dtype=torch.float32, attn_implementation: str = "sdpa", **overrides):
    """(transformers model, our model), same random weights, both in eval mode."""
    architecture, config_class, arguments = CASES[name]
    hf_config = config_class(**dict(arguments, **overrides))
    torch.manual_seed(0)
    ref = transformers.AutoModelForCausalLM.from_config(hf_config, attn_implementation=attn_implementation)
    ref = ref.to(dtype).eval()
    config = dict(hf_config.to_dict(), architectures=[architecture])
    cls = models.model_class(config)
    our = cls(cls.config_class.from_dict(config)).to(dtype).eval()
    our.load_state_dict(ref.state_dict(), strict=True)
    return ref, our


@functools.cache
def pair(name: str):
    return build(name)


def input_ids(batch: int = 2, length: int = LENGTH) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    return torch.randint(3, VOCAB, (batch, length), generator=generator)


def incremental_logits(our, ids: torch.Tensor, output_attentions: bool = False) -> torch.Tensor:
    """Prefill 4 tokens, then a chunk of 3 (a prefix plus several new queries), then one token at a time."""
    cache, pieces = KVCache(), []
    for start, stop in [(0, 4), (4, 7)] + [(i, i + 1) for i in range(7, ids.shape[1])]:
        out = our(ids[:, start:stop], cache=cache, output_attentions=output_attentions)
        pieces.append(out.logits)
    assert len(cache) == ids.shape[1]
    return torch.cat(pieces, dim=1)


@pytest.mark.parametrize("name", CASES)
@torch.no_grad()
def test_logits_match_transformers(name):
    ref, our = pair(name)
    ids = input_ids()
    expected = ref(ids).logits
    got = our(ids).logits
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    last = our(ids, logits_to_keep=1).logits
    torch.testing.assert_close(last, got[:, -1:], atol=1e-6, rtol=0)


@pytest.mark.parametrize("name", CASES)
@torch.no_grad()
def test_kv_cache_gives_the_same_logits(name):
    ref, our = pair(name)
    ids = input_ids()
    expected = ref(ids).logits
    torch.testing.assert_close(incremental_logits(our, ids), expected, atol=1e-5, rtol=0)
    # the eager path through the cache, too (the step-through view uses it)
    torch.testing.assert_close(incremental_logits(our, ids, output_attentions=True), expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", CASES)
@torch.no_grad()
def test_eager_path_and_attention_weights(name):
    _, our = pair(name)
    ref, _ = build(name, attn_implementation="eager")
    ids = input_ids()
    fast = our(ids)
    eager = our(ids, output_attentions=True)
    assert fast.attentions is None
    torch.testing.assert_close(eager.logits, fast.logits, atol=1e-5, rtol=0)
    expected = ref(ids, output_attentions=True)
    torch.testing.assert_close(eager.logits, expected.logits, atol=1e-5, rtol=0)
    assert len(eager.attentions) == len(expected.attentions) == ref.config.num_hidden_layers
    for got, want in zip(eager.attentions, expected.attentions, strict=True):
        assert got.shape == want.shape == (2, ref.config.num_attention_heads, LENGTH, LENGTH)
        torch.testing.assert_close(got, want, atol=1e-6, rtol=0)
        assert torch.all(got.triu(diagonal=1) == 0)  # causal: nothing from the future


@pytest.mark.parametrize("name", CASES)
@torch.no_grad()
def test_greedy_decoding_matches_generate(name):
    ref, our = pair(name)
    ids = input_ids(batch=1, length=6)
    ref.generation_config.eos_token_id = None  # never stop early
    ref.generation_config.pad_token_id = 0
    expected = ref.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=10, do_sample=False)
    cache, generated, step = KVCache(), ids, ids
    for _ in range(10):
        logits = our(step, cache=cache, logits_to_keep=1).logits  # (1, 1, vocab)
        step = logits[:, -1].argmax(dim=-1, keepdim=True)
        generated = torch.cat([generated, step], dim=1)
    assert generated.tolist() == expected.tolist()


PROMPT_LENGTHS = (12, 7, 3)  # a left-padded batch: rows of different lengths, the shortest padded the most


def left_padded_batch(lengths=PROMPT_LENGTHS, pad: int = 0) -> tuple[torch.Tensor, torch.Tensor, list]:
    """(input_ids, attention_mask, prompts) for prompts of `lengths`, padded on the left as the pipeline pads
    decoder-only prompts."""
    generator = torch.Generator().manual_seed(2)
    prompts = [torch.randint(3, VOCAB, (length,), generator=generator) for length in lengths]
    width = max(lengths)
    ids = torch.full((len(prompts), width), pad)
    mask = torch.zeros(len(prompts), width, dtype=torch.long)
    for row, prompt in enumerate(prompts):
        ids[row, width - len(prompt) :] = prompt
        mask[row, width - len(prompt) :] = 1
    return ids, mask, prompts


def generate_positions(mask: torch.Tensor) -> torch.Tensor:
    """The position ids transformers' generate gives a padded batch (_prepare_position_ids_for_generation)."""
    return (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)


@pytest.mark.parametrize("name", CASES)
@torch.no_grad()
def test_left_padded_batch_matches_transformers(name):
    """Logits at every real position of a left-padded batch: equal to transformers given the same mask and the
    positions generate computes, equal to each prompt run alone, and the same through the KV cache (prefill,
    then one token at a time with the mask growing by a column of ones) and on the eager path."""
    ref, our = pair(name)
    ids, mask, prompts = left_padded_batch()
    real = mask.bool()
    expected = ref(ids, attention_mask=mask, position_ids=generate_positions(mask)).logits
    got = our(ids, attention_mask=mask).logits
    torch.testing.assert_close(got[real], expected[real], atol=1e-5, rtol=0)
    for row, prompt in enumerate(prompts):  # padding changes nothing a real token computes
        alone = our(prompt[None]).logits[0]
        torch.testing.assert_close(got[row, -len(prompt) :], alone, atol=1e-5, rtol=0)
    # the eager path (attention weights) sees the same mask and gives the same logits
    eager = our(ids, attention_mask=mask, output_attentions=True)
    torch.testing.assert_close(eager.logits[real], expected[real], atol=1e-5, rtol=0)
    for weights in eager.attentions:  # no real query attends a pad
        keys_of_pads = ~real[:, None, None, :].expand_as(weights)
        queries_real = real[:, None, :, None].expand_as(weights)
        assert torch.all(weights[keys_of_pads & queries_real] == 0)
    # through the cache: the prompt's mask, then one more 1 per new token
    cache = KVCache()
    first = our(ids[:, :8], cache=cache, attention_mask=mask[:, :8]).logits
    pieces = [first]
    for position in range(8, ids.shape[1]):
        pieces.append(our(ids[:, position : position + 1], cache=cache, attention_mask=mask[:, : position + 1]).logits)
    stepped = torch.cat(pieces, dim=1)
    torch.testing.assert_close(stepped[real], expected[real], atol=1e-5, rtol=0)
    assert len(cache) == ids.shape[1]


@pytest.mark.parametrize("name", CASES)
@torch.no_grad()
def test_left_padded_greedy_decoding_matches_generate(name):
    """Greedy ids of a left-padded batch equal transformers' generate given the same attention mask."""
    ref, our = pair(name)
    ids, mask, _ = left_padded_batch()
    ref.generation_config.eos_token_id = None  # never stop early
    ref.generation_config.pad_token_id = 0
    expected = ref.generate(ids, attention_mask=mask, max_new_tokens=10, do_sample=False)
    cache, generated, step = KVCache(), ids, ids
    for _ in range(10):
        logits = our(step, cache=cache, attention_mask=mask, logits_to_keep=1).logits  # (B, 1, vocab)
        step = logits[:, -1].argmax(dim=-1, keepdim=True)
        generated = torch.cat([generated, step], dim=1)
        mask = torch.cat([mask, torch.ones_like(step)], dim=1)
    assert generated.tolist() == expected.tolist()


def test_an_all_ones_mask_is_the_unpadded_call(monkeypatch):
    """No padding, no mask: the SDPA call is the unbatched one (is_causal, no attn_mask), so a mask of ones costs
    nothing and changes nothing."""
    _, our = pair("llama-gqa")
    ids = input_ids()
    calls = []
    sdpa = torch.nn.functional.scaled_dot_product_attention

    def spy(*args, **kwargs):
        calls.append((kwargs.get("attn_mask"), kwargs.get("is_causal")))
        return sdpa(*args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
    with torch.no_grad():
        plain = our(ids).logits
        ones = our(ids, attention_mask=torch.ones_like(ids)).logits
    assert torch.equal(plain, ones)
    assert calls and all(mask is None and causal for mask, causal in calls)


def test_a_mask_of_the_wrong_length_is_refused():
    _, our = pair("llama-gqa")
    ids, mask, _ = left_padded_batch()
    with pytest.raises(ValueError, match="attention_mask covers 11 positions"):
        our(ids, attention_mask=mask[:, 1:])


@pytest.mark.parametrize("name", ["gpt2", "llama-gqa", "mistral", "qwen2", "qwen3", "smollm3"])
@torch.no_grad()
def test_bfloat16_close_to_transformers(name):
    ref, our = build(name, dtype=torch.bfloat16)
    ids = input_ids()
    expected, got = ref(ids).logits.float(), our(ids).logits.float()
    assert got.dtype == torch.float32 and our(ids).logits.dtype == torch.bfloat16
    scale = expected.abs().max()
    assert (got - expected).abs().max() <= 5e-2 * scale
    agree = (got.argmax(-1) == expected.argmax(-1)).float().mean()
    assert agree >= 0.9


@torch.no_grad()
def test_gpt2_loads_checkpoints_that_store_the_causal_mask():
    ref, our = pair("gpt2")
    state = dict(ref.state_dict())
    for layer in range(2):  # what older GPT-2 checkpoints carry next to the weights
        state[f"transformer.h.{layer}.attn.bias"] = torch.ones(1, 1, 64, 64, dtype=torch.bool).tril()
        state[f"transformer.h.{layer}.attn.masked_bias"] = torch.tensor(-1e4)
    our.load_state_dict(state, strict=True)
    assert "lm_head.weight" in dict(our.named_parameters(remove_duplicate=False))
    assert our.lm_head.weight is our.transformer.wte.weight


def test_gpt2_refuses_more_positions_than_it_learned():
    _, our = pair("gpt2")
    with pytest.raises(ValueError, match="n_positions"):
        our(input_ids(batch=1, length=65))


def test_smollm3_default_nope_layers_follow_transformers():
    architecture, config_class, arguments = CASES["smollm3"]
    hf_config = config_class(**dict(arguments, num_hidden_layers=9))
    ours = models.build_config(dict(hf_config.to_dict(), architectures=[architecture]))
    without = {k: v for k, v in hf_config.to_dict().items() if k not in ("no_rope_layers", "layer_types")}
    derived = models.build_config(dict(without, architectures=[architecture]))
    assert ours.no_rope_layers == derived.no_rope_layers == hf_config.no_rope_layers == [1, 1, 1, 0, 1, 1, 1, 0, 1]
    _, our = pair("smollm3")
    assert [layer.self_attn.use_rope for layer in our.model.layers] == [True, True, True, False]


@pytest.mark.parametrize(
    "name, overrides",
    [
        ("mistral", dict(sliding_window=8)),
        ("qwen2", dict(use_sliding_window=True, sliding_window=8, max_window_layers=1)),
        ("smollm3", dict(use_sliding_window=True, sliding_window=8)),
    ],
)
@torch.no_grad()
def test_sliding_window_within_the_window_or_a_clear_error(name, overrides):
    ref, our = build(name, **overrides)
    ids = input_ids(length=8)
    torch.testing.assert_close(our(ids).logits, ref(ids).logits, atol=1e-5, rtol=0)
    with pytest.raises(NotImplementedError, match="sliding_window"):
        our(input_ids(length=9))
    cache = KVCache()
    our(ids, cache=cache)
    with pytest.raises(NotImplementedError, match="sliding_window"):
        our(ids[:, :1], cache=cache)  # the 9th position, arriving through the cache


def test_qwen_without_use_sliding_window_ignores_the_window():
    _, our = build("qwen2", use_sliding_window=False, sliding_window=4)
    our(input_ids(length=9))  # no error: transformers ignores sliding_window here too


def test_mistral_state_dict_has_llama_names():
    mistral, _ = pair("mistral")
    llama, _ = pair("llama-gqa")
    assert set(mistral.state_dict()) == set(llama.state_dict())


def test_unsupported_architecture_names_every_supported_one():
    with pytest.raises(UnsupportedError) as raised:
        models.model_class({"architectures": ["FalconForCausalLM"]})
    message = str(raised.value)
    assert "FalconForCausalLM" in message
    for name in [
        "GPT2LMHeadModel",
        "LlamaForCausalLM",
        "MistralForCausalLM",
        "Qwen2ForCausalLM",
        "Qwen3ForCausalLM",
        "SmolLM3ForCausalLM",
    ]:
        assert name in message
    for name in models.ARCHITECTURES:
        assert name in message


def test_the_schema_knows_every_familys_other_names():
    """The event schema and the widgets read a saved trace's hyperparameters without the model registry
    (explain/utils/config_names.py): its table of other names is exactly what the model files' attribute_maps say."""
    from explain.utils import config_names

    assert models._family_names() == config_names.OTHER_NAMES
    gpt2 = {"n_layer": 12, "n_embd": 768, "n_head": 12, "n_positions": 1024, "vocab_size": 50257}
    assert (
        config_names.common_config(gpt2)
        == models.common_config(gpt2)
        == {
            "num_hidden_layers": 12,
            "hidden_size": 768,
            "num_attention_heads": 12,
            "max_position_embeddings": 1024,
            "vocab_size": 50257,
        }
    )


@pytest.mark.parametrize("name", CASES)
def test_every_config_answers_the_common_names_as_transformers_does(name):
    """GPT-2's n_layer / n_embd / n_head / n_positions are answered under the common names by the config object
    and by models.common_config for a plain dict (a saved trace's hyperparameters), as transformers' configs do."""
    architecture, config_class, arguments = CASES[name]
    hf_config = config_class(**arguments)
    config = dict(hf_config.to_dict(), architectures=[architecture])
    ours = models.build_config(config)
    common = models.common_config(config)
    assert list(common) == list(models.COMMON_NAMES)
    for key in models.COMMON_NAMES:
        assert common[key] == getattr(ours, key) == getattr(hf_config, key) is not None, key
    with pytest.raises(AttributeError, match="no_such_name"):
        ours.no_such_name  # noqa: B018 - only the mapped names are answered
    assert models.common_config({"num_hidden_layers": 3}) == {
        "num_hidden_layers": 3,
        "hidden_size": None,
        "num_attention_heads": None,
        "max_position_embeddings": None,
        "vocab_size": None,
    }
