"""Property-based tests of a pipeline call: generation arguments of any type and value, prompts and chat messages
of arbitrary Unicode (lone surrogates included), through the real tokenizer and pipeline of a tiny model and the
real SmolLM2 tokenizer and chat template. Each call either works or raises an ExplainError; none hangs."""

from __future__ import annotations

import os

import pytest
import torch
from fuzzing import fuzz, time_limit
from hypothesis import Phase, assume, given, settings
from hypothesis import strategies as st

import explain
from explain.errors import ArgumentError, ExplainError
from explain.stages.tokenizer import bytes_to_unicode

KNOBS = (
    "max_new_tokens",
    "min_new_tokens",
    "max_length",
    "do_sample",
    "temperature",
    "top_k",
    "top_p",
    "min_p",
    "repetition_penalty",
    "stop_strings",
    "eos_token_id",
    "pad_token_id",
    "return_full_text",
    "skip_special_tokens",
    "trace_top",
)
anything = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 12),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=4),
    st.lists(st.integers(-2, 300), max_size=3),
    st.lists(st.text(max_size=3), max_size=2),
)
sensible = {
    "do_sample": st.booleans(),
    "temperature": st.floats(0.05, 3),
    "top_k": st.integers(0, 300),
    "top_p": st.floats(0.01, 1),
    "min_p": st.floats(0, 1),
    "repetition_penalty": st.floats(0.5, 3),
    "stop_strings": st.lists(st.text(min_size=1, max_size=3), min_size=1, max_size=2),
}
surrogates = st.sampled_from(["\ud800", "\udbff", "\udc00", "\udfff"])
unicode_text = st.text(st.characters(codec="utf-8"), max_size=40)  # every code point UTF-8 can write
any_text = st.one_of(unicode_text, st.builds(lambda a, s, b: a + s + b, unicode_text, surrogates, unicode_text))


def has_surrogate(text: str) -> bool:
    return any(0xD800 <= ord(c) <= 0xDFFF for c in text)


@pytest.fixture(scope="module")
def pipe(tiny_gguf):
    return explain.pipeline(model=os.path.dirname(tiny_gguf), gguf_file=os.path.basename(tiny_gguf))


def call(pipe, prompt, **kwargs):
    """One call, bounded in time and length (max_new_tokens defaults to 4 unless the test sets it)."""
    with time_limit():
        return pipe(prompt, **kwargs)


@settings(fuzz(150), phases=[Phase.explicit, Phase.generate])  # no shrinking: report the first failure at once
@given(knobs=st.dictionaries(st.sampled_from(KNOBS), anything, max_size=4), seed=st.integers(0, 2**16))
def test_generation_arguments_of_any_type_work_or_are_refused(pipe, knobs, seed):
    knobs.setdefault("max_new_tokens", 4)
    if isinstance(knobs.get("max_new_tokens"), int) and knobs["max_new_tokens"] > 12:
        knobs["max_new_tokens"] = 12  # the property is about the values' types and ranges, not long runs
    if isinstance(knobs.get("max_length"), int) and knobs["max_length"] > 24:
        knobs["max_length"] = 24
    torch.manual_seed(seed)
    try:
        out = call(pipe, "the tea", **knobs)
    except ExplainError as error:
        assert str(error)
        return
    assert isinstance(out, list) and isinstance(out[0], dict)


@fuzz(60)
@given(
    knobs=st.fixed_dictionaries({"max_new_tokens": st.integers(1, 6)}, optional=sensible), seed=st.integers(0, 2**16)
)
def test_sensible_generation_arguments_work(pipe, knobs, seed):
    torch.manual_seed(seed)
    out = call(pipe, "the tea", **knobs)
    text = out[0]["generated_text"]
    assert text.startswith("the tea")
    steps = pipe.last_generation.steps
    assert 1 <= len(steps) <= knobs["max_new_tokens"]


@fuzz(100)
@given(prompt=any_text)
def test_prompts_of_any_unicode_work_or_name_the_bad_character(pipe, prompt):
    try:
        out = call(pipe, prompt, max_new_tokens=2, do_sample=False)
    except ArgumentError as error:
        assert has_surrogate(prompt) and "lone surrogate" in str(error)
        return
    except ExplainError as error:  # an empty prompt on a model with no BOS, ...
        assert not has_surrogate(prompt) and str(error)
        return
    assert not has_surrogate(prompt)
    assert out[0]["generated_text"].startswith(prompt)


messages = st.lists(
    st.fixed_dictionaries(
        {
            "role": st.sampled_from(["system", "user", "assistant", "tool"]),
            "content": st.one_of(any_text, any_text, anything),
        }
    ),
    min_size=1,
    max_size=4,
)


@fuzz(80)
@given(chat=messages)
def test_chat_messages_work_or_are_refused(pipe, chat):
    fine = all(isinstance(m["content"], str) and not has_surrogate(m["content"]) for m in chat)
    try:
        out = call(pipe, chat, max_new_tokens=2, do_sample=False)
    except ArgumentError as error:
        assert not fine, f"refused a good chat: {error}"
        return
    except ExplainError as error:  # a good chat the model cannot take (longer than its 64-token context)
        assert fine and str(error)
        return
    assert fine
    generated = out[0]["generated_text"]
    assert generated[: len(chat)] == chat or chat[-1]["role"] == "assistant"


@fuzz(150)
@given(text=unicode_text)
def test_the_real_tokenizer_round_trips_any_text_it_can_spell(embedded_pipe, text):
    """SmolLM2's byte-level BPE: text encodes to ids that decode to the same text, except the characters whose
    bytes its vocabulary lacks (six ASCII control bytes, and lead bytes of planes 4-11), which are dropped: as
    transformers' tokenizer for the same GGUF does (checked by hand for "\x16": both give [])."""
    tokenizer = embedded_pipe.tokenizer
    spelling = bytes_to_unicode()
    spelled = [all(tokenizer.backend.token_to_id(spelling[b]) is not None for b in c.encode()) for c in text]
    partly = [any(tokenizer.backend.token_to_id(spelling[b]) is not None for b in c.encode()) for c in text]
    assume(
        all(whole or not some for whole, some in zip(spelled, partly, strict=True))
    )  # a half-spelled character: U+FFFD
    ids = tokenizer.encode(text, add_special_tokens=False)
    assert tokenizer.decode(ids) == "".join(c for c, whole in zip(text, spelled, strict=True) if whole)
    assert all(0 <= i < tokenizer.vocab_size for i in ids)


@fuzz(100)
@given(
    chat=st.lists(
        st.fixed_dictionaries({"role": st.sampled_from(["system", "user", "assistant"]), "content": unicode_text}),
        min_size=1,
        max_size=4,
    )
)
def test_the_real_chat_template_renders_any_messages(embedded_pipe, chat):
    """SmolLM2's own template (from its GGUF) in the bounded sandbox: every message is in the prompt, in order."""
    assume(all("<|im_" not in m["content"] for m in chat))
    with time_limit():
        text = embedded_pipe.tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)
    position = 0
    for message in chat:
        position = text.index(f"<|im_start|>{message['role']}\n{message['content']}<|im_end|>", position)
    assert text.endswith("<|im_start|>assistant\n")
