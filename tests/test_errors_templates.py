"""Chat templates are code from a model's files: they render in jinja2's sandbox, stop at a time limit and an output
limit, and every failure is a ChatTemplateError naming the file the template came from."""

from __future__ import annotations

import json
import os
import shutil
import time

import pytest

import explain
from explain.errors import ChatTemplateError
from explain.stages import chat_template
from explain.stages.tokenizer import Tokenizer

CHAT = [{"role": "user", "content": "Hello"}]


@pytest.fixture
def folder(tiny_folder, tmp_path):
    copy = tmp_path / "model"
    shutil.copytree(tiny_folder, copy)
    return copy


def with_template(folder, template: str, where: str = "chat_template.jinja"):
    """The folder's tokenizer with `template` stored in `where` (a file of its own, or tokenizer_config.json)."""
    if where == "tokenizer_config.json":
        config = json.loads((folder / where).read_text())
        config["chat_template"] = template
        (folder / where).write_text(json.dumps(config))
    else:
        (folder / where).parent.mkdir(exist_ok=True)
        (folder / where).write_text(template)
    return Tokenizer.from_folder(folder)


def fails(tokenizer, *words, error_class=ChatTemplateError, **kwargs):
    with pytest.raises(error_class) as caught:
        tokenizer.apply_chat_template(CHAT, add_generation_prompt=True, **kwargs)
    message = str(caught.value)
    for word in words:
        assert word in message, f"{word!r} not in: {message}"
    return message


def test_nested_loops_stop_at_the_time_limit_naming_the_file(folder):
    template = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
    tokenizer = with_template(folder, template)
    start = time.perf_counter()
    fails(
        tokenizer,
        f"from {folder / 'chat_template.jinja'}",
        f"ran for more than {chat_template.TIME_LIMIT:g} s",
        error_class=chat_template.TemplateLimitError,
    )
    assert time.perf_counter() - start < chat_template.TIME_LIMIT + 5


@pytest.mark.parametrize(
    "template",
    [
        "{{ 'x' * 10000000000 }}",  # one 10 GB string
        "{% set ns = namespace(s='x') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s }}",
        "{% set ns = namespace(s='x') %}{% for i in range(40) %}{% set ns.s = ns.s + ns.s %}{% endfor %}{{ ns.s }}",
        "{% for i in range(100000) %}{{ 'x' * 100000 }}{% endfor %}",  # 10 GB written a piece at a time
        "{{ 'x'|center(10000000000) }}",
        "{{ 'x'.ljust(10000000000) }}",
        "{{ '%10000000000s' % 'x' }}",
        "{{ '{:>10000000000}'.format('x') }}",
        "{{ messages|tojson(indent=10000000000) }}",
        "{{ 2 ** 10000000000 }}",
        "{{ (range(100000)|list * 1000)|join(',') }}",
    ],
)
def test_templates_that_build_gigabytes_fail_with_the_error_not_a_memory_error(folder, template):
    tokenizer = with_template(folder, template)
    start = time.perf_counter()
    fails(
        tokenizer,
        f"from {folder / 'chat_template.jinja'}",
        "beyond the limit of",
        error_class=chat_template.TemplateLimitError,
    )
    assert time.perf_counter() - start < 5


def test_deep_recursion_is_a_template_error(folder):
    tokenizer = with_template(folder, "{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}")
    fails(tokenizer, "recursed too deeply")


def test_the_template_source_is_named_wherever_it_came_from(folder, tiny_gguf):
    failing = "{{ raise_exception('Conversation roles must alternate') }}"
    assert "tokenizer_config.json" in fails(
        with_template(folder, failing, "tokenizer_config.json"), "Conversation roles must alternate"
    )
    tokenizer = with_template(folder, failing, "additional_chat_templates/tools.jinja")
    fails(tokenizer, str(folder / "additional_chat_templates" / "tools.jinja"), chat_template="tools")
    fails(Tokenizer.from_gguf(tiny_gguf), "the chat_template= argument", "alternate", chat_template=failing)
    gguf_tokenizer = Tokenizer.from_gguf(tiny_gguf)
    gguf_tokenizer.chat_template = failing  # as if the GGUF's own tokenizer.chat_template held it
    fails(gguf_tokenizer, f"{tiny_gguf} (its tokenizer.chat_template)")


@pytest.mark.parametrize(
    "template, words",
    [
        ("{{ messages[0]['content'] + 5 }}", ["failed on these messages", "can only concatenate str"]),
        ("{{ ''.__class__.__mro__[1].__subclasses__() }}", ["failed on these messages", "unsafe"]),
        ("{{ messages.append(1) }}", ["failed on these messages"]),
        ("{% set ns = namespace() %}{% set ns._secret = 1 %}", ["cannot set '_secret'"]),
        ("{% for %}", ["is not valid jinja", "line 1"]),
    ],
)
def test_template_mistakes_and_sandbox_refusals(folder, template, words):
    """Before: a TypeError from inside a template escaped raw; the sandbox's refusals still hold."""
    fails(with_template(folder, template), str(folder / "chat_template.jinja"), *words)


def test_a_template_longer_than_any_real_one_is_not_compiled(folder):
    tokenizer = with_template(folder, "x" * (chat_template.TEMPLATE_LIMIT + 1))
    fails(tokenizer, "characters long", error_class=chat_template.TemplateLimitError)


def test_the_limit_grows_with_the_messages(folder):
    """A long document in a message is not a runaway template: the output limit is at least 4x the input."""
    tokenizer = with_template(folder, "{{ messages[0]['content'] }}")
    long = "y" * (chat_template.OUTPUT_LIMIT + 10)
    assert len(tokenizer.apply_chat_template([{"role": "user", "content": long}], tokenize=False)) == len(long)


def test_a_pipeline_call_reports_the_limit_and_keeps_going(folder):
    """Through the pipeline: the error reaches the caller, the role segmentation does not run the template
    N more times after a limit, and the pipeline still works with a plain prompt."""
    (folder / "chat_template.jinja").write_text("{% for i in range(100000) %}{{ 'x' * 100000 }}{% endfor %}")
    pipe = explain.pipeline(model=str(folder))
    with pytest.raises(chat_template.TemplateLimitError, match="chat_template.jinja"):
        pipe(CHAT * 3, max_new_tokens=1)
    assert pipe("the", max_new_tokens=1, do_sample=False)[0]["generated_text"].startswith("the")


def test_a_real_template_renders_as_before(embedded_pipe):
    text = embedded_pipe.tokenizer.apply_chat_template(CHAT, add_generation_prompt=True, tokenize=False)
    assert (
        text == "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>"
        "\n<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n"
    )
    assert os.path.basename(embedded_pipe.tokenizer.chat_template_sources["default"]).startswith("SmolLM2")
