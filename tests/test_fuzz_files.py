"""Property-based tests of the readers on damaged real files: the tiny model's model.safetensors, its GGUF,
config.json, tokenizer.json and tokenizer_config.json, truncated and bit-flipped by Hypothesis. Each damaged
copy either loads or raises an ExplainError; none hangs, none makes explain write a file, none leaves the cache
changed."""

from __future__ import annotations

import os
import shutil

import pytest
from fuzzing import fingerprint, fuzz, time_limit
from hypothesis import given
from hypothesis import strategies as st

import explain
from explain.errors import ExplainError


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


def damage(data: bytes, draw_cut, flips) -> bytes:
    """`data` cut at a position (None: kept whole) and with bits flipped at positions given as fractions."""
    damaged = bytearray(data)
    for where, bit in flips:
        if damaged:
            damaged[min(int(where * len(damaged)), len(damaged) - 1)] ^= 1 << bit
    if draw_cut is not None:
        damaged = damaged[: int(draw_cut * len(damaged))]
    return bytes(damaged)


damages = st.tuples(
    st.one_of(st.none(), st.floats(0, 1, exclude_max=True)),
    st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 7)), max_size=6),
).filter(lambda d: d[0] is not None or d[1])  # at least one cut or flip
header_damages = st.tuples(
    st.one_of(st.none(), st.floats(0, 0.2)),  # GGUF and safetensors keep their structure
    st.lists(st.tuples(st.floats(0, 0.2), st.integers(0, 7)), max_size=4),
).filter(lambda d: d[0] is not None or d[1])  # in the first part of the file: damage there most


def load_damaged(folder, cache_listing, **arguments):
    """Load the damaged folder: it works or raises an ExplainError; nothing under it or in the cache changes."""
    before, cache = fingerprint(folder), cache_listing()
    try:
        with time_limit():
            explain.pipeline(model=str(folder), **arguments)
    except ExplainError as error:
        assert str(error), "an ExplainError with no message"
    assert fingerprint(folder) == before, "loading changed a file of the model folder"
    assert cache_listing() == cache, "loading wrote into the Hugging Face cache"


EXAMPLES = {"model.safetensors": 100, "config.json": 50, "tokenizer.json": 40, "tokenizer_config.json": 30}


@pytest.mark.parametrize("name", list(EXAMPLES))
def test_damaged_files_of_a_model_folder(tiny_folder, work, cache_listing, name):
    original = open(os.path.join(tiny_folder, name), "rb").read()
    folder = work / f"folder-{name}"

    @fuzz(EXAMPLES[name])
    @given(damage_=st.one_of(damages, header_damages) if name == "model.safetensors" else damages)
    def check(damage_):
        shutil.rmtree(folder, ignore_errors=True)
        shutil.copytree(tiny_folder, folder)
        (folder / name).write_bytes(damage(original, *damage_))
        load_damaged(folder, cache_listing)

    check()


def test_damaged_gguf(tiny_gguf, work, cache_listing):
    original = open(tiny_gguf, "rb").read()
    folder = work / "gguf"
    folder.mkdir()

    @fuzz(150)
    @given(damage_=st.one_of(damages, header_damages))
    def check(damage_):
        (folder / "tiny.gguf").write_bytes(damage(original, *damage_))
        load_damaged(folder, cache_listing, gguf_file="tiny.gguf")

    check()


json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(), st.text(max_size=8)),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=12), inner, max_size=3)),
    max_leaves=6,
)
CONFIG_KEYS = (
    "architectures",
    "model_type",
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "max_position_embeddings",
    "rms_norm_eps",
    "rope_theta",
    "rope_scaling",
    "rope_parameters",
    "hidden_act",
    "tie_word_embeddings",
    "attention_bias",
    "mlp_bias",
    "bos_token_id",
    "eos_token_id",
    "pad_token_id",
    "torch_dtype",
    "dtype",
    "layer_types",
)


def test_config_values_of_any_json(tiny_folder, work, cache_listing):
    """config.json with keys set to any JSON value (a list for a size, an object for a flag, NaN for an epsilon,
    2**70 for a layer count): loading works or raises an ExplainError naming config.json."""
    import json

    original = json.loads(open(os.path.join(tiny_folder, "config.json")).read())
    folder = work / "config-values"

    @fuzz(120)
    @given(changes=st.dictionaries(st.sampled_from(CONFIG_KEYS), json_values, min_size=1, max_size=3))
    def check(changes):
        shutil.rmtree(folder, ignore_errors=True)
        shutil.copytree(tiny_folder, folder)
        (folder / "config.json").write_text(json.dumps({**original, **changes}))
        load_damaged(folder, cache_listing)

    check()


TOKENIZER_KEYS = (
    "bos_token",
    "eos_token",
    "pad_token",
    "unk_token",
    "chat_template",
    "model_max_length",
    "extra_special_tokens",
    "additional_special_tokens",
    "clean_up_tokenization_spaces",
    "add_bos_token",
    "tokenizer_class",
)


def test_tokenizer_config_values_of_any_json(tiny_folder, work, cache_listing):
    """tokenizer_config.json with keys set to any JSON value: loading works or raises an ExplainError."""
    import json

    original = json.loads(open(os.path.join(tiny_folder, "tokenizer_config.json")).read())
    folder = work / "tokenizer-config-values"

    @fuzz(100)
    @given(changes=st.dictionaries(st.sampled_from(TOKENIZER_KEYS), json_values, min_size=1, max_size=3))
    def check(changes):
        shutil.rmtree(folder, ignore_errors=True)
        shutil.copytree(tiny_folder, folder)
        (folder / "tokenizer_config.json").write_text(json.dumps({**original, **changes}))
        load_damaged(folder, cache_listing)

    check()


# -- issue 28: paths that are not regular files, for reading a trace and for writing one ---------------------------
def _make(kind: str, where) -> str:
    """A path of the given kind under `where` (a real FIFO, folder, link, or one of the machine's devices)."""
    path = where / f"target-{kind}"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "folder":
        path.mkdir()
    elif kind == "dev-null":
        return "/dev/null"
    elif kind == "dev-zero":
        return "/dev/zero"
    elif kind == "dev-stdout":
        return "/dev/stdout"
    elif kind.startswith("link-to-"):
        path.symlink_to(_make(kind[len("link-to-") :], where))
    elif kind == "dangling-link":
        path.symlink_to(where / "nowhere" / "x.json")
    elif kind == "loop-link":
        path.symlink_to(path)
    elif kind == "missing-folder":
        return str(where / "missing" / "t.json")
    return str(path)


KINDS = [
    "fifo",
    "folder",
    "dev-null",
    "dev-zero",
    "dev-stdout",
    "link-to-fifo",
    "link-to-dev-null",
    "link-to-folder",
    "dangling-link",
    "loop-link",
    "missing-folder",
]


@fuzz(40)
@given(kind=st.sampled_from(KINDS), write=st.booleans())
def test_paths_that_are_not_regular_files(tmp_path_factory, kind, write):
    """Trace.load and Trace.save on a FIFO, a device, a folder, a link to one, a dangling or looping link: an
    ExplainError naming the path, at once (a FIFO never blocks), and nothing replaced (a device stays a device, a
    link stays a link)."""
    from explain import Trace

    where = tmp_path_factory.mktemp("kinds")
    path = _make(kind, where)
    before = os.lstat(path) if os.path.lexists(path) else None
    trace = Trace(meta={"kind": kind})
    if write and kind == "missing-folder":  # a new path: Trace.save makes its folders, as it always has
        assert Trace.load(trace.save(path)).meta == {"kind": kind}
        return
    with time_limit(10):
        with pytest.raises(ExplainError) as error:
            trace.save(path) if write else Trace.load(path)
    assert path in str(error.value)
    if before is not None:
        after = os.lstat(path)
        assert (after.st_mode, after.st_ino) == (before.st_mode, before.st_ino), "the path was replaced"
    assert not [n for n in os.listdir(where) if n.startswith(".explain-")], "a temporary file was left"


ADAPTER_KEYS = (
    "r",
    "lora_alpha",
    "alpha_pattern",
    "rank_pattern",
    "use_rslora",
    "target_modules",
    "base_model_name_or_path",
    "peft_type",
    "bias",
    "use_dora",
)


@pytest.fixture(scope="module")
def tiny_adapter(tiny_folder, work):
    """A LoRA adapter made by peft on the tiny folder's model (q_proj, v_proj, down_proj), naming that folder."""
    import transformers
    from tiny_files import make_lora

    folder = work / "adapter"
    make_lora(transformers.AutoModelForCausalLM.from_pretrained(tiny_folder), folder, base=str(tiny_folder))
    return folder


def test_adapter_config_values_of_any_json(tiny_folder, tiny_adapter, work, cache_listing):
    """adapter_config.json with LoRA keys set to any JSON value (a string alpha, NaN, a list for alpha_pattern, r=0,
    r=-4): loading works and every logit is a number, or it raises an ExplainError naming adapter_config.json."""
    import json
    import math

    original = json.loads((tiny_adapter / "adapter_config.json").read_text())
    folder = work / "adapter-values"

    @fuzz(60)
    @given(changes=st.dictionaries(st.sampled_from(ADAPTER_KEYS), json_values, min_size=1, max_size=3))
    def check(changes):
        shutil.rmtree(folder, ignore_errors=True)
        shutil.copytree(tiny_adapter, folder)
        (folder / "adapter_config.json").write_text(json.dumps({**original, **changes}))
        cache = cache_listing()
        try:
            with time_limit():
                pipe = explain.pipeline(model=str(tiny_folder), adapter=str(folder))
                generation = pipe.start("hi", max_new_tokens=1, trace_top=3)
                generation.run()
        except ExplainError as error:
            assert str(error), "an ExplainError with no message"
        else:  # applied: its scaling is a number, so the logits are too
            top = generation.steps[0]["logits_top"]  # non-finite logits are left out of it
            assert len(top["ids"]) == 3 and all(math.isfinite(v) for v in top["values"]), changes
        assert cache_listing() == cache, "loading wrote into the Hugging Face cache"

    check()
