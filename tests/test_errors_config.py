"""A config.json (or GGUF metadata) asking for what cannot be built: every size is checked before anything is
allocated, against its type, the checkpoint and the machine, and the error names the file and the key."""

from __future__ import annotations

import json
import math
import resource

import pytest
import torch

import explain
from explain.errors import ConfigValueError, CorruptFileError, ExplainError, UnsupportedError
from explain.stages.config_checks import check_memory

pytestmark = pytest.mark.usefixtures("cache_untouched")


def edit_config(folder, **changes):
    path = folder / "config.json"
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config))  # json writes NaN as the literal NaN, as a hand-edited file might hold
    return path


def refused(folder, *words, error_class=ConfigValueError, **arguments):
    trace = explain.Trace()
    with pytest.raises(error_class) as caught:
        explain.pipeline(model=str(folder), trace=trace, **arguments)
    message = str(caught.value)
    for word in words:
        assert word in message, f"{word!r} not in: {message}"
    return trace


def test_ten_million_layers_are_refused_before_the_skeleton_is_built(folder):
    path = edit_config(folder, num_hidden_layers=10**7)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    trace = refused(
        folder,
        str(path),
        "num_hidden_layers=10000000",
        "lacks model.layers.2",
        "holds 2 layers",
        "do not belong together",
    )
    assert trace.filter("weights", "load") == [] and trace.filter("placement") == []
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before  # KiB on Linux
    assert grown < 200 * 1024, f"the peak memory grew by {grown / 1024:.0f} MiB while refusing"


@pytest.mark.parametrize(
    "key, value", [("hidden_size", 10**9), ("intermediate_size", 2**30), ("vocab_size", 10**10), ("head_dim", 10**9)]
)
def test_sizes_larger_than_any_tensor_of_the_checkpoint(folder, key, value):
    path = edit_config(folder, **{key: value})
    words = [str(path), f'"{key}" is {value}', "larger than any dimension", "model.safetensors"]
    if value > 2**31 - 1:
        words = [str(path), f'"{key}" is {value}', "between 1 and"]
    trace = refused(folder, *words)
    assert trace.filter("weights", "load") == []


@pytest.mark.parametrize(
    "key, value, words",
    [
        ("hidden_size", "32", ["is '32' (str)", "a whole number of at least 1"]),
        ("num_hidden_layers", -2, ["is -2", "between 1 and"]),
        ("num_attention_heads", 0, ["is 0", "between 1 and"]),
        ("intermediate_size", 64.5, ["is 64.5 (float)"]),
        ("num_key_value_heads", True, ["is True (bool)"]),
        ("max_position_embeddings", None, ["is None"]),
        ("rms_norm_eps", float("nan"), ["is nan", "positive finite number"]),
        ("rms_norm_eps", -1e-5, ["is -1e-05", "positive finite number"]),
        ("rope_theta", float("inf"), ["is inf"]),
        ("tie_word_embeddings", "false", ["is 'false'", "true or false"]),
        ("num_key_value_heads", 3, ["(4) is not a multiple of", "num_key_value_heads"]),
        ("architectures", "LlamaForCausalLM", ["must be a list of class names"]),
        ("rope_scaling", "linear", ["must be an object (or null)"]),
        ("rope_scaling", {"rope_type": "llama3", "factor": "8"}, ["[\"factor\"] is '8'", "a finite number"]),
        ("hidden_act", 5, ["must be a string"]),
        ("eos_token_id", "2", ["must be a token id, a list of token ids, or null"]),
        ("rope_theta", 10**30, ["positive finite number"]),
    ],
)
def test_config_values_of_the_wrong_type_or_range(folder, key, value, words):
    path = edit_config(folder, **{key: value})
    trace = refused(folder, str(path), f'"{key}"' if "multiple" not in words[0] else "", *words)
    assert isinstance(trace, explain.Trace)
    assert trace.filter("tokenizer") == [], "refused only after the config stage"


def test_a_config_the_model_file_cannot_build_from(folder):
    """rope_scaling llama3 without its factor: the model file's refusal becomes an error naming config.json."""
    path = edit_config(folder, rope_scaling={"rope_type": "llama3"})
    refused(folder, str(path), "LlamaForCausalLM cannot be built from this config", "needs factor")


def test_an_activation_the_model_file_does_not_implement(folder):
    path = edit_config(folder, hidden_act="relu6")
    refused(folder, str(path), "hidden_act 'relu6'", error_class=UnsupportedError)


def test_a_nan_epsilon_is_refused_before_it_makes_every_logit_nan(folder):
    """Before: a NaN rms_norm_eps loaded, generated NaN logits, and failed only when sampling, naming nothing."""
    path = edit_config(folder, rms_norm_eps=float("nan"))
    assert "NaN" in path.read_text()
    refused(folder, str(path), '"rms_norm_eps" is nan', "NaN")


def test_gguf_metadata_is_checked_as_a_config_is(tmp_path, provisioned):
    """A GGUF file whose metadata holds a NaN epsilon: the error names the GGUF file."""
    import gguf
    import numpy as np

    path = tmp_path / "tiny.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(1)
    writer.add_context_length(32)
    writer.add_embedding_length(8)
    writer.add_feed_forward_length(16)
    writer.add_head_count(2)
    writer.add_head_count_kv(2)
    writer.add_layer_norm_rms_eps(float("nan"))
    writer.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    trace = explain.Trace()
    with pytest.raises(ConfigValueError) as caught:
        explain.pipeline(model=str(tmp_path), gguf_file="tiny.gguf", trace=trace)
    assert f"the GGUF metadata of {path}" in str(caught.value) and '"rms_norm_eps" is nan' in str(caught.value)
    assert "download it again" in str(caught.value)


def test_weights_that_do_not_fit_the_memory_this_machine_has(folder, monkeypatch):
    """The machine is asked before reading: a checkpoint that cannot fit is refused with the fix."""
    import explain.stages.config_checks as checks

    class Small:
        available = 100_000  # bytes: less than the tiny model's float32 weights (~3.2 MB with its vocabulary)

    monkeypatch.setattr(checks.psutil, "virtual_memory", lambda: Small)
    trace = refused(
        folder, "needs 12.1 MiB of memory", "97.7 KiB available", "dtype=torch.bfloat16", error_class=ExplainError
    )
    assert trace.filter("weights", "load") == []


def test_check_memory_counts_the_asked_dtype_and_integer_tensors():
    inventory = {"embed": ((1000, 64), "BF16"), "q": ((64, 64), "Q4_1"), "ids": ((10,), "I64")}
    float32 = check_memory(inventory, torch.float32, "m.safetensors", available=10**9)
    assert float32 == (1000 * 64 + 64 * 64) * 4 + 10 * 8
    assert check_memory(inventory, torch.bfloat16, "m.safetensors", available=10**9) == (1000 * 64 + 64 * 64) * 2 + 80
    with pytest.raises(ExplainError, match="needs 266.1 KiB of memory and this machine has 1000 B available"):
        check_memory(inventory, torch.float32, "m.safetensors", available=1000)


@pytest.mark.parametrize("saved", [[1, 2, 3], {"model.embed_tokens.weight": [1.0, 2.0]}, torch.zeros(3)])
def test_pytorch_bin_that_is_not_a_state_dict(folder, saved):
    (folder / "model.safetensors").unlink()
    torch.save(saved, folder / "pytorch_model.bin")
    refused(folder, str(folder / "pytorch_model.bin"), "not a state dict", error_class=CorruptFileError)


def test_pytorch_bin_with_a_pickled_object_is_never_run(folder, tmp_path):
    """A .bin holding a pickle that would run code on load: weights_only refuses it, the code never runs."""
    import pickle

    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    (folder / "model.safetensors").unlink()
    with open(folder / "pytorch_model.bin", "wb") as f:
        pickle.dump({"x": Payload()}, f)
    refused(folder, "weights-only PyTorch checkpoint", "never unpickles", error_class=CorruptFileError)
    assert not marker.exists()


@pytest.mark.parametrize(
    "dtype", [torch.float8_e4m3fn, torch.float8_e5m2, torch.float64, torch.int8, torch.complex64, "float8_e4m3fn"]
)
def test_dtypes_explain_cannot_run_are_refused_at_once(dtype):
    trace = explain.Trace()
    with pytest.raises(UnsupportedError) as caught:
        explain.pipeline(dtype=dtype, trace=trace)
    message = str(caught.value)
    assert "float32" in message and "torch.bfloat16" in message and "float16" in message
    assert trace.events == [], "refused only after loading started"


def test_the_dtype_table_is_one_table():
    from explain.device_plan import memory
    from explain.utils import dtypes

    assert memory.DTYPES is dtypes.DTYPES
    assert dtypes.runnable_dtype("bf16") is torch.bfloat16 and dtypes.runnable_dtype("torch.float16") is torch.float16
    assert dtypes.runnable_dtype("auto", "bfloat16") is torch.bfloat16
    assert dtypes.runnable_dtype(None, "float8_e4m3fn") is torch.float32  # a checkpoint dtype explain cannot run
    assert memory.dtype_name("nf4") == "4bit" and memory.dtype_name(torch.bfloat16) == "bfloat16"
    assert math.isclose(torch.finfo(dtypes.DTYPES["4bit"].torch_dtype).bits, 16)
