"""Bad arguments to explain.pipeline and to a pipeline call: each is refused with an ExplainError naming the
argument and the fix, before any stage runs (loading) or before any prompt of a batch runs (a call)."""

from __future__ import annotations

import os

import pytest
import torch

import explain
from explain.errors import ArgumentError, ExplainError
from explain.utils.devices import device_text, parse_device

pytestmark = pytest.mark.usefixtures("cache_untouched")


def refused_early(*words, error_class=ExplainError, **arguments) -> str:
    trace = explain.Trace()
    with pytest.raises(error_class) as caught:
        explain.pipeline(trace=trace, **arguments)
    message = str(caught.value)
    for word in words:
        assert word in message, f"{word!r} not in: {message}"
    assert trace.events == [], f"refused only after {[e.stage + '/' + e.kind for e in trace.events]}"
    return message


# -- explain.pipeline(...) ---------------------------------------------------------------------------------------
def test_an_empty_model_name():
    refused_early('model="" is empty', "leave model out for the embedded SmolLM2", error_class=ArgumentError, model="")


@pytest.mark.parametrize("relative", [False, True])
def test_a_local_folder_that_does_not_exist(tmp_path, relative, monkeypatch):
    """Before: "Repo id must be in the form 'repo_name' or 'namespace/repo_name'" (HFValidationError)."""
    monkeypatch.chdir(tmp_path)
    model = "./my-model" if relative else str(tmp_path / "models" / "my-model")
    refused_early(f"no folder at {model}", "existing model folder", error_class=ArgumentError, model=model)


def test_a_file_given_as_the_model(tmp_path):
    (tmp_path / "model.gguf").write_bytes(b"GGUF")
    refused_early(
        "is a file",
        f'model="{tmp_path}", gguf_file="model.gguf"',
        error_class=ArgumentError,
        model=str(tmp_path / "model.gguf"),
    )


def test_a_model_folder_link_that_loops(tmp_path):
    os.symlink(tmp_path / "loop", tmp_path / "loop")
    refused_early("symbolic link that leads nowhere", error_class=ArgumentError, model=str(tmp_path / "loop"))


def test_a_name_that_is_neither_a_folder_nor_a_repo_id():
    refused_early(
        "'not a repo!' is neither a local folder", "nor a Hub repo id", error_class=ArgumentError, model="not a repo!"
    )


@pytest.mark.parametrize("model_kwargs", ["bfloat16", ["torch_dtype", "bfloat16"], 5])
def test_model_kwargs_that_is_not_a_dict(model_kwargs):
    refused_early(
        "model_kwargs must be a dict",
        "torch_dtype",
        type(model_kwargs).__name__,
        error_class=ArgumentError,
        model_kwargs=model_kwargs,
    )


@pytest.mark.parametrize(
    "max_memory, words",
    [
        (["8GiB"], ["is not a dict of devices", "max_memory maps a device to a size"]),
        ({"cpu": "8 gigs"}, ["'8 gigs' is not a size", "max_memory maps a device to a size"]),
        ({"cpu": "8Gb"}, ["lowercase b", "bits", "write 8GB or 8GiB"]),
        ({"gpu0": "8GiB"}, ["'gpu0' is not a device", "max_memory maps a device to a size"]),
        ({"cpu": -5}, ["is negative"]),
        ({0: "8GiB", "cuda:0": "8GiB"}, ["twice"]),
    ],
)
def test_max_memory_of_the_wrong_shape_or_unit_before_loading(max_memory, words):
    """Before: accepted, then failed in accelerate after seconds of reading the weights."""
    refused_early(*words, model_kwargs={"max_memory": max_memory})


def test_a_max_memory_that_reads_is_used(tiny_llama):
    pipe = explain.pipeline(model=tiny_llama.folder, device_map="auto", model_kwargs={"max_memory": {"cpu": "2GiB"}})
    assert pipe.trace.last("placement", "place").data["max_memory"] == {"cpu": 2 * 2**30}


@pytest.mark.parametrize(
    "arguments, words",
    [
        ({"revision": 5}, ["revision=5 is not a branch, tag or commit"]),
        ({"gguf_file": ""}, ["gguf_file='' is not the name of a .gguf file"]),
        ({"token": 123}, ["token=int is not a token"]),
        ({"device": [0]}, ["device=[0] is not a device"]),
        ({"device_map": {0: "cpu"}}, ["device_map key 0 is not a module name"]),
        ({"device_map": {"": "tpu"}}, ["device_map[''] 'tpu' is not a device"]),
    ],
)
def test_loading_arguments_of_the_wrong_type(arguments, words):
    refused_early(*words, **arguments)


@pytest.mark.parametrize(
    "spelling, device, text",
    [
        (0, 0, "cuda:0"),
        ("0", 0, "cuda:0"),
        ("cuda:1", 1, "cuda:1"),
        ("cuda", 0, "cuda:0"),
        (" CPU ", "cpu", "cpu"),
        (-1, "cpu", "cpu"),
        (torch.device("cpu"), "cpu", "cpu"),
        (torch.device("cuda", 2), 2, "cuda:2"),
        ("mps", "mps", "mps"),
        ("disk", "disk", "disk"),
    ],
)
def test_one_device_parser_reads_every_spelling(spelling, device, text):
    assert parse_device(spelling) == device and device_text(spelling) == text


@pytest.mark.parametrize("spelling", ["tpu", "cuda:x", True, 1.5, None, [0]])
def test_the_device_parser_refuses_what_is_not_a_device(spelling):
    with pytest.raises(ArgumentError, match="cpu, cuda, cuda:N"):
        parse_device(spelling, "device")


# -- a pipeline call ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pipe(tiny_llama):
    return explain.pipeline(model=tiny_llama.folder)


def refused_call(pipe, text_inputs, *words, **kwargs):
    events, run = len(pipe.trace), pipe.trace.run
    with pytest.raises(ArgumentError) as caught:
        pipe(text_inputs, max_new_tokens=2, **kwargs)
    message = str(caught.value)
    for word in words:
        assert word in message, f"{word!r} not in: {message}"
    assert len(pipe.trace) == events and pipe.trace.run == run, "something ran before the refusal"
    return message


@pytest.mark.parametrize(
    "content, shown",
    [
        (5, "5 (int)"),
        (None, "None (NoneType)"),
        ({"text": "hi"}, "(dict)"),
        ([{"type": "text", "text": "hi"}], "(list)"),
    ],
)
def test_chat_content_that_is_not_a_string(pipe, content, shown):
    """Before: a raw TypeError from inside the chat template (str + int)."""
    chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": content}]
    refused_call(pipe, chat, "text_inputs[1] (user) has content", shown, "a message's content is a string")


@pytest.mark.parametrize(
    "message, words",
    [
        ({"content": "hi"}, ["has role None"]),
        ({"role": 3, "content": "hi"}, ["has role 3"]),
        ("just text", ["text_inputs[1] is a str, not a message"]),
    ],
)
def test_chat_messages_that_are_not_messages(pipe, message, words):
    refused_call(pipe, [{"role": "user", "content": "hi"}, message], *words)


def test_a_batch_with_one_bad_prompt_runs_none_of_them(pipe):
    """Before: the earlier prompts ran, then the bad one raised and their results were lost."""
    refused_call(pipe, ["Hello", "World", 42], "text_inputs[2] is a int", "a prompt is a string")
    refused_call(pipe, ["Hello", [{"role": "user", "content": b"bytes"}]], "text_inputs[1][0] (user) has content")


@pytest.mark.parametrize("text_inputs", [None, 42, [], {"role": "user", "content": "hi"}, b"Hello"])
def test_text_inputs_of_the_wrong_type(pipe, text_inputs):
    refused_call(pipe, text_inputs, "text_inputs must be a string, a chat")


def test_lone_surrogates_in_a_prompt_and_in_a_message(pipe):
    refused_call(pipe, "Hello \ud800 world", "text_inputs holds '\\ud800' at character 6", "lone surrogate")
    refused_call(
        pipe,
        [{"role": "user", "content": "ok"}, {"role": "assistant", "content": "\udcff"}],
        "text_inputs[1]['content'] holds '\\udcff'",
    )
    with pytest.raises(ArgumentError, match="lone surrogate"):
        pipe.start("\udc80")


@pytest.mark.parametrize("name", ["skip_special_tokens", "return_full_text", "add_special_tokens"])
def test_a_pipeline_option_that_is_not_a_boolean(pipe, name):
    """Found by Hypothesis: skip_special_tokens=[''] reached the tokenizer and raised a raw TypeError."""
    refused_call(pipe, "Hello", f"{name}=[''] is not a boolean", "True or False", **{name: [""]})


def test_good_inputs_still_run(pipe):
    out = pipe(["Hello", "Hi 👋 ünïcödé"], max_new_tokens=2, do_sample=False)
    assert len(out) == 2 and out[0][0]["generated_text"].startswith("Hello")
    # a list of chats (a list mixing chats and strings is refused, as transformers fails on it: test_batching.py)
    out = pipe(
        [[{"role": "user", "content": "Hi 👋 ünïcödé"}], [{"role": "user", "content": "Hello"}]],
        max_new_tokens=2,
        do_sample=False,
    )
    assert len(out) == 2 and out[0][0]["generated_text"][-1]["role"] == "assistant"
