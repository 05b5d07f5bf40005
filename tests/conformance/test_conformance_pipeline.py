"""transformers' tests/pipelines/test_pipelines_text_generation.py as the specification of explain's pipeline, on
both backends: every behaviour it asserts that applies to a decoder-only text-generation pipeline, on the tiny
one-layer Llama (tests/conftest.py: tiny_folder). Where transformers' test compares with strings of a Hub model,
the answer here is transformers.pipeline()'s on the same tiny model and call. Which tests apply, which do not and
why: docs/conformance.md."""

from __future__ import annotations

import pytest
import torch

ARGS = "issue 24 args"
PROMPT = "This is a test"


def both(pipe, reference, prompt, seed: int | None = None, **call):
    if seed is not None:
        torch.manual_seed(seed)
    mine = pipe(prompt, **call)
    if seed is not None:
        torch.manual_seed(seed)
    return mine, reference(prompt, **call)


# -- test_small_model_pt -----------------------------------------------------------------------------------------
def test_small_model_pt_greedy(pipe, reference):
    mine, expected = both(pipe, reference, PROMPT, do_sample=False)
    assert mine == expected and len(mine) == 1 and mine[0]["generated_text"].startswith(PROMPT)


def test_small_model_pt_list_of_prompts(pipe, reference):
    prompts = [PROMPT, "This is a second test"]
    mine, expected = both(pipe, reference, prompts, do_sample=False, max_new_tokens=6)
    assert mine == expected and [len(item) for item in mine] == [1, 1]


def test_small_model_pt_return_tensors(pipe, reference):
    mine, expected = both(
        pipe, reference, PROMPT, seed=0, do_sample=True, num_return_sequences=2, return_tensors=True, max_new_tokens=6
    )
    assert [list(item) for item in mine] == [["generated_token_ids"], ["generated_token_ids"]]
    assert all(isinstance(item["generated_token_ids"], list) for item in mine)
    assert mine == expected


def test_small_model_pt_preprocess_kwargs(pipe, reference, backend, request):
    """add_special_tokens=False and padding=False reach the tokenizer and give transformers' answer."""
    mine, expected = both(
        pipe, reference, PROMPT, do_sample=False, add_special_tokens=False, padding=False, max_new_tokens=6
    )
    assert mine == expected


def test_small_model_pt_tokenizer_kwargs_truncation(pipe, reference, backend, request):
    """truncation=True with max_length cuts the prompt, so the generation differs from the uncut one."""
    text = "testing tokenizer kwargs. using truncation must result in a different generation."
    length = len(reference.tokenizer(text)["input_ids"])
    call = dict(do_sample=False, return_full_text=False, min_new_tokens=1)
    plain = pipe(text, **call)[0]["generated_text"]
    cut, expected = both(pipe, reference, text, truncation=True, max_length=length + 1, **call)
    assert cut == expected and cut[0]["generated_text"] != plain


def test_small_model_pt_batch_of_two_sampled(padded, backend):
    pipe, reference = padded[backend], padded["reference"]
    prompts = [PROMPT, "This is a second test"]
    mine, expected = both(
        pipe,
        reference,
        prompts,
        seed=0,
        do_sample=True,
        num_return_sequences=2,
        batch_size=2,
        return_tensors=True,
        max_new_tokens=6,
    )
    assert [[list(x) for x in item] for item in mine] == [[["generated_token_ids"]] * 2] * 2
    assert all(isinstance(x["generated_token_ids"], list) for item in mine for x in item)


# -- test_small_chat_model_pt ------------------------------------------------------------------------------------
CHAT1 = [
    {"role": "system", "content": "This is a system message."},
    {"role": "user", "content": "This is a test"},
    {"role": "assistant", "content": "This is a reply"},
]
CHAT2 = [
    {"role": "system", "content": "This is a system message."},
    {"role": "user", "content": "This is a second test"},
    {"role": "assistant", "content": "This is a reply"},
]


def test_small_chat_model_pt(pipe, reference):
    """A chat in, the chat out with the model's reply. transformers 5 continues a chat that ends with an assistant
    message (continue_final_message): the last message is "This is a reply" and its continuation (the stored
    version of transformers' test, older, expected a new message; the answer here is 5.25's)."""
    mine, expected = both(pipe, reference, CHAT1, do_sample=False, max_new_tokens=10)
    assert mine == expected
    reply = mine[0]["generated_text"]
    assert reply[:-1] == CHAT1[:-1] and reply[-1]["role"] == "assistant"
    assert reply[-1]["content"].startswith(CHAT1[-1]["content"]) and reply[-1]["content"] != CHAT1[-1]["content"]
    mine, expected = both(pipe, reference, [CHAT1, CHAT2], do_sample=False, max_new_tokens=10)
    assert mine == expected and [item[0]["generated_text"][:-1] for item in mine] == [CHAT1[:-1], CHAT2[:-1]]


def test_small_chat_model_with_dataset_pt(pipe, reference, backend, request):
    from torch.utils.data import Dataset
    from transformers.pipelines.pt_utils import KeyDataset

    class Chats(Dataset):
        data = [CHAT1]

        def __len__(self):
            return 1

        def __getitem__(self, i):  # IndexError past the end: transformers iterates it by index
            return {"text": self.data[i]}

    mine = list(pipe(KeyDataset(Chats(), "text"), do_sample=False, max_new_tokens=10))
    expected = list(reference(KeyDataset(Chats(), "text"), do_sample=False, max_new_tokens=10))
    assert mine == expected and mine[0][0]["generated_text"][:-1] == CHAT1[:-1]


# -- test_stop_sequence_stopping_criteria ------------------------------------------------------------------------
def test_stop_sequence_stopping_criteria(pipe, reference):
    prompt = "Hello I believe in"
    mine, expected = both(pipe, reference, prompt, do_sample=False, max_new_tokens=12)
    assert mine == expected
    tokenizer = reference.tokenizer
    generated = reference(prompt, do_sample=False, max_new_tokens=12, return_tensors=True)[0]["generated_token_ids"]
    generated = generated[len(tokenizer(prompt)["input_ids"]) :]
    # a token of the greedy text that is one printable character, which encodes back to itself: stopping at it
    # cuts the text there (transformers' stop_sequence is the first token of the string's encoding)
    stop_id = next(
        t
        for t in generated[1:]
        if tokenizer.decode([t]).isprintable()
        and tokenizer.decode([t]).strip()
        and tokenizer(tokenizer.decode([t]), add_special_tokens=False)["input_ids"] == [t]
    )
    stop = tokenizer.decode([stop_id])
    mine, expected = both(pipe, reference, prompt, do_sample=False, max_new_tokens=12, stop_sequence=stop)
    assert mine == expected
    cut = generated[: generated.index(stop_id) + 1]
    assert mine[0]["generated_text"] == prompt + tokenizer.decode(cut, skip_special_tokens=True)


# -- run_pipeline_test ---------------------------------------------------------------------------------------------
def test_run_pipeline_full_text(pipe, reference):
    mine, expected = both(pipe, reference, PROMPT, do_sample=False, max_new_tokens=6)
    assert mine == expected and mine[0]["generated_text"].startswith(PROMPT)
    mine, expected = both(pipe, reference, PROMPT, do_sample=False, return_full_text=False, max_new_tokens=6)
    assert mine == expected and PROMPT not in mine[0]["generated_text"]


def test_run_pipeline_return_full_text_at_construction(tiny_folder, backend, reference):
    import transformers

    import explain

    pipe = explain.pipeline("text-generation", model=tiny_folder, backend=backend, return_full_text=False)
    theirs = transformers.pipeline("text-generation", model=tiny_folder, return_full_text=False)
    mine, expected = both(pipe, theirs, PROMPT, do_sample=False, max_new_tokens=6)
    assert mine == expected and PROMPT not in mine[0]["generated_text"]
    mine, expected = both(pipe, theirs, PROMPT, do_sample=False, return_full_text=True, max_new_tokens=6)
    assert mine == expected and mine[0]["generated_text"].startswith(PROMPT)


def test_run_pipeline_several_sampled_sequences(pipe, reference):
    prompts = ["This is great !", "Something else"]
    mine, expected = both(pipe, reference, prompts, seed=0, do_sample=True, num_return_sequences=2, max_new_tokens=5)
    assert [len(item) for item in mine] == [2, 2] and all(isinstance(x["generated_text"], str) for i in mine for x in i)


@pytest.mark.parametrize(
    "flags",
    [
        dict(return_full_text=True, return_text=True),
        dict(return_full_text=True, return_tensors=True),
        dict(return_text=True, return_tensors=True),
    ],
    ids=["full_text+text", "full_text+tensors", "text+tensors"],
)
def test_run_pipeline_conflicting_return_flags(pipe, reference, flags):
    with pytest.raises(ValueError):
        reference("test", **flags)
    with pytest.raises(ValueError):
        pipe("test", **flags)


def test_run_pipeline_empty_prompt(pipe, reference):
    """The tokenizer has a BOS token, so an empty prompt generates (transformers starts from BOS)."""
    assert reference.tokenizer.bos_token_id is not None
    mine, expected = both(pipe, reference, "", do_sample=False, max_new_tokens=5)
    assert mine == expected and isinstance(mine[0]["generated_text"], str)


# -- test_pipeline_accelerate_top_p (on the CPU, float32) --------------------------------------------------------
def test_pipeline_top_p(pipe, reference):
    mine, expected = both(pipe, reference, PROMPT, seed=0, do_sample=True, top_p=0.5, max_new_tokens=6)
    assert mine == expected


# -- test_pipeline_length_setting_warning -------------------------------------------------------------------------
def test_pipeline_length_setting_warning(pipe, reference, backend, request):
    """Both max_length and max_new_tokens: transformers logs which one wins ("Both `max_new_tokens`..."); one of
    them alone: no such message."""
    import warnings

    import transformers
    from transformers.testing_utils import CaptureLogger

    message = "Both `max_new_tokens`"
    logger = transformers.logging.get_logger("transformers.generation.utils")

    def said(**call) -> bool:
        transformers.logging.set_verbosity_warning()
        try:
            with CaptureLogger(logger) as captured, warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                pipe("Hello world", **call)
        finally:
            transformers.logging.set_verbosity_error()
        return message in captured.out or any(message in str(w.message) for w in caught)

    total = len(reference.tokenizer("Hello world")["input_ids"]) + 3  # the test's max_length=10, past this prompt
    assert said(max_length=total, max_new_tokens=1)
    assert not said(max_new_tokens=1)
    assert not said(max_length=total)
