"""transformers' tests/generation/test_stopping_criteria.py as the specification of how explain stops: the
criteria a pipeline call reaches (max_length, EOS, stop strings, max_time) on both backends against
transformers.pipeline(), and explain's stop-string matcher (explain/generation/stopping.py: StopStrings) against
transformers' StopStringCriteria on the strings of transformers' tests, tokenized by the tiny model's byte-level
tokenizer (transformers' tests use GPT-2's and Qwen2's from the Hub). Which tests apply: docs/conformance.md."""

from __future__ import annotations

import pytest
import torch
from transformers.generation.stopping_criteria import StopStringCriteria

from explain.generation.stopping import StopStrings

ARGS = "issue 24 args"
PROMPT = "They completed the challenging puzzle"


def both(pipe, reference, prompt, **call):
    return pipe(prompt, **call), reference(prompt, **call)


@pytest.fixture(scope="module")
def matchers(backends, reference):
    """(explain's tokenizer, transformers' tokenizer) of the tiny model."""
    return backends["explain"].tokenizer, reference.tokenizer


def agree(matchers, text: str, stops: list[str]) -> bool:
    """explain's StopStrings and transformers' StopStringCriteria on the same ids: equal answers; returns it."""
    ours_tokenizer, their_tokenizer = matchers
    ids = their_tokenizer(text, add_special_tokens=False)["input_ids"]
    expected = bool(StopStringCriteria(tokenizer=their_tokenizer, stop_strings=stops)(torch.tensor([ids]), None)[0])
    mine = StopStrings(ours_tokenizer, stops).completes(ids)
    assert mine == expected, f"{text!r} with {stops}: explain {mine}, transformers {expected}"
    return mine


# -- test_list_criteria, test_max_length_criteria -----------------------------------------------------------------
@pytest.mark.parametrize("new", [1, 4])
def test_max_length_criteria(pipe, reference, new):
    """max_length counts the prompt: the call stops when the sequence holds max_length tokens."""
    total = len(reference.tokenizer(PROMPT)["input_ids"]) + new
    mine, expected = both(pipe, reference, PROMPT, do_sample=False, max_length=total, return_tensors=True)
    assert mine == expected and len(mine[0]["generated_token_ids"]) == total


# -- test_max_time_criteria ----------------------------------------------------------------------------------------
def test_max_time_criteria(pipe, reference, backend, request):
    """max_time=0 stops after the first token (the time is checked after each token)."""
    mine, expected = both(
        pipe, reference, PROMPT, do_sample=False, max_new_tokens=10, max_time=0.0, return_tensors=True
    )
    prompt_length = len(reference.tokenizer(PROMPT)["input_ids"])
    assert mine == expected and len(mine[0]["generated_token_ids"]) == prompt_length + 1


# -- test_eos_token_criteria ---------------------------------------------------------------------------------------
def test_eos_token_criteria(pipe, reference):
    """A token the greedy run writes, made EOS, ends the run there (the EOS itself kept in the ids)."""
    plain = reference(PROMPT, do_sample=False, max_new_tokens=10, return_tensors=True)[0]["generated_token_ids"]
    prompt_length = len(reference.tokenizer(PROMPT)["input_ids"])
    eos = plain[prompt_length + 3]
    mine, expected = both(
        pipe, reference, PROMPT, do_sample=False, max_new_tokens=10, eos_token_id=eos, return_tensors=True
    )
    assert mine == expected
    ids = mine[0]["generated_token_ids"]
    assert ids[-1] == eos and eos not in ids[prompt_length:-1]


def test_eos_token_criteria_per_row(padded, backend):
    """In a batch, a row that wrote EOS stops; the others go on. The finished row is filled with generate()'s
    pad_token_id (here the call's, 0, a plain byte token that the text keeps), not with the pad the prompts were
    collated with (the tokenizer's): explain used the latter until this test."""
    pipe, reference = padded[backend], padded["reference"]
    prompts = [PROMPT, "Today a dragon flew over France"]
    plain = reference(PROMPT, do_sample=False, max_new_tokens=6, return_tensors=True)[0]["generated_token_ids"]
    eos = plain[len(reference.tokenizer(PROMPT)["input_ids"]) + 1]
    call = dict(do_sample=False, max_new_tokens=6, eos_token_id=eos, pad_token_id=0, batch_size=2)
    mine, expected = both(pipe, reference, prompts, **call)
    assert mine == expected


# -- test_stop_string_criteria and the byte-level tests ------------------------------------------------------------
TRUE_STRINGS = ["<|im_start|><|im_end|>", "<|im_start|><|im_end|<|im_end|>", ">><|im_start|>>stop", "stop", "e nd"]
FALSE_STRINGS = [
    "<|im_start|><|im_end|",
    "<|im_start|><|im_end|<|im_end|",
    "<|im_end|><|im_start|>",
    "<|im_end|<>stop<|im_end|",
    "end",
    "en d",
    "eNd",
    "<|im_end|",
    "|im_end|>",
    "s",
]


@pytest.mark.parametrize("text", TRUE_STRINGS)
def test_stop_string_criteria_true(matchers, text):
    assert agree(matchers, text, ["<|im_end|>", "stop", "e nd"])


@pytest.mark.parametrize("text", FALSE_STRINGS)
def test_stop_string_criteria_false(matchers, text):
    assert not agree(matchers, text, ["<|im_end|>", "stop", "e nd"])


@pytest.mark.parametrize(
    "text, stop, expected",
    [("대화 끝", "끝", True), ("작업 완료", "완료", True), ("대화 끝 다음", "끝", False)],
)
def test_stop_string_criteria_byte_fragments(matchers, text, stop, expected):
    """A character split over several byte tokens still matches (no token alone decodes to it)."""
    _, tokenizer = matchers
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    isolated = "".join(tokenizer.convert_tokens_to_string([t]) for t in tokenizer.convert_ids_to_tokens(ids))
    if expected:  # transformers checks the premise on the texts that end with the stop string
        assert tokenizer.decode(ids).endswith(stop) and stop not in isolated
    assert agree(matchers, text, [stop]) is expected


def test_stop_string_criteria_byte_level_ascii(matchers):
    assert agree(matchers, "the end", ["end"])
    assert not agree(matchers, "end of", ["end"])


def test_stop_string_criteria_vocab_size_mismatch(matchers):
    """An id above the vocabulary is no error and matches nothing (transformers: False)."""
    ours_tokenizer, their_tokenizer = matchers
    ids = [len(their_tokenizer) + 1024, 1, 2]
    assert not bool(StopStringCriteria(tokenizer=their_tokenizer, stop_strings=["test"])(torch.tensor([ids]), None)[0])
    assert not StopStrings(ours_tokenizer, ["test"]).completes(ids)


@pytest.mark.parametrize("text", ["a", "baa", "abc", "abbbbbbb", "b"])
def test_single_letter_stop_string(matchers, text):
    """transformers' truth values hold where they do not depend on GPT-2's merges ("a", "baa": True; "b": False);
    "abc" and "abbbbbbb" depend on how the tokenizer splits them, so there explain must agree with transformers."""
    found = agree(matchers, text, ["a"])
    if text in ("a", "baa"):
        assert found
    if text == "b":
        assert not found


def test_criteria_per_row(pipe, reference):
    """A stop string and max_length together: whichever comes first stops the call (the pipeline's stop_strings)."""
    text = "They completed the challenging puzzle, revealing the hidden image at the"
    call = dict(do_sample=False, max_new_tokens=12)
    plain = reference(text, **call)[0]["generated_text"][len(text) :]
    stop = next(c for c in plain if c.isprintable() and c.strip())  # a character the greedy text writes
    mine = pipe(text, stop_strings=[stop], tokenizer=pipe.tokenizer, **call)
    expected = reference(text, stop_strings=[stop], tokenizer=reference.tokenizer, **call)  # generate() needs it
    assert mine == expected
    written = mine[0]["generated_text"][len(text) :]
    assert stop in written and len(written) <= len(plain)


def test_criteria_per_row_batched(padded, backend):
    """A batch with a stop string: the row that writes it stops, the others go on (transformers' per-row result)."""
    pipe, reference = padded[backend], padded["reference"]
    prompts = [
        "They completed the challenging puzzle, revealing the hidden image at the",
        "Today a dragon flew over France",
        "The aroma of freshly baked pizza filled the kitchen",
    ]
    call = dict(do_sample=False, max_new_tokens=8, batch_size=3)
    plain = reference(prompts[0], max_new_tokens=8, do_sample=False)[0]["generated_text"][len(prompts[0]) :]
    stop = next(c for c in plain if c.isprintable() and c.strip())
    mine = pipe(prompts, stop_strings=[stop], tokenizer=pipe.tokenizer, **call)
    expected = reference(prompts, stop_strings=[stop], tokenizer=reference.tokenizer, **call)
    assert mine == expected


@pytest.mark.parametrize("shape", ["plain callables", "a criterion taking kwargs"])
def test_stopping_criteria_list_accepts_plain_callables(pipe, reference, backend, request, shape):
    """A user's stopping criteria (test_stopping_criteria_list_accepts_plain_callables and
    _filters_kwargs_per_criterion): a function stopping after two new tokens stops the call there."""
    from transformers.generation.stopping_criteria import StoppingCriteria, StoppingCriteriaList

    prompt_length = len(reference.tokenizer(PROMPT)["input_ids"])

    def two_new(input_ids, scores, **kwargs):
        return torch.full((input_ids.shape[0],), input_ids.shape[1] >= prompt_length + 2, dtype=torch.bool)

    class TwoNew(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            return two_new(input_ids, scores)

    def criteria():
        return StoppingCriteriaList([two_new] if shape == "plain callables" else [TwoNew()])

    call = dict(do_sample=False, max_new_tokens=8, return_tensors=True)
    mine = pipe(PROMPT, stopping_criteria=criteria(), **call)
    expected = reference(PROMPT, stopping_criteria=criteria(), **call)
    assert mine == expected and len(mine[0]["generated_token_ids"]) == prompt_length + 2
