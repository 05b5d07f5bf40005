"""The loading stages on real data, against transformers loading the same files.

config     the embedded GGUF's metadata -> the config transformers derives from the same GGUF
weights    272 GGUF tensors dequantised -> transformers' GGUF state dict, tensor for tensor
safetensors  a tiny random Llama written by transformers (one file and sharded) -> the same logits
save       pipe.save_pretrained(folder) -> a folder explain and transformers both load to the same model
placement  device_map="auto" / {"": "cpu"} / device="cpu" on this CPU-only machine
CLI        python -m explain load prints every loading stage
"""

from __future__ import annotations

import copy
import functools
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
import transformers

import explain
from explain.stages.tasks import EMBEDDED_GGUF, EMBEDDED_MODEL, EMBEDDED_REVISION

transformers.logging.set_verbosity_error()
transformers.logging.disable_progress_bar()

PARAMETERS = 134_515_008  # SmolLM2-135M: the embedding (tied with the LM head) and 30 decoder layers
LOADING = ("registry", "config", "tokenizer", "weights", "placement")


def unique_parameters(model: torch.nn.Module) -> list[torch.Tensor]:
    return list({p.data_ptr(): p for p in model.parameters()}.values())


def loading_event(pipe, stage: str, kind: str):
    (event,) = pipe.trace.filter(stage, kind, run=0)
    return event.data


def file_events(pipe) -> dict:
    return {e.data["filename"]: e.data for e in pipe.trace.filter("config", "file", run=0)}


@pytest.fixture(scope="module")
def reference(embedded_gguf, monkeypatch_module):
    """transformers loading the same GGUF file from the session cache: (its config, its state dict)."""
    import gguf

    # transformers rebuilds gguf's tensor-name table once per module (~400 times, a third of its load time);
    # the table is a pure function of (architecture, layer count), so remembering it changes no result
    monkeypatch_module.setattr(gguf, "get_tensor_name_map", functools.cache(gguf.get_tensor_name_map))
    folder, name = os.path.split(embedded_gguf)
    config = transformers.AutoConfig.from_pretrained(folder, gguf_file=name)
    model = transformers.AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, config=config)
    return config, model.state_dict()


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


# -- config ------------------------------------------------------------------------------------------------


def test_gguf_config_equals_transformers(embedded_pipe, reference):
    theirs, _ = reference
    ours = embedded_pipe.config
    for key in (
        "hidden_size",
        "num_hidden_layers",
        "num_attention_heads",
        "num_key_value_heads",
        "rms_norm_eps",
        "vocab_size",
        "tie_word_embeddings",
        "intermediate_size",
        "max_position_embeddings",
        "head_dim",
        "bos_token_id",
        "eos_token_id",
        "pad_token_id",
        "model_type",
    ):
        assert ours[key] == getattr(theirs, key), key
    assert ours["rope_theta"] == theirs.rope_parameters["rope_theta"]
    assert ours["architectures"] == ["LlamaForCausalLM"] and type(theirs).__name__ == "LlamaConfig"
    event = loading_event(embedded_pipe, "config", "config")
    assert event["architecture"] == "LlamaForCausalLM" and event["model_type"] == "llama"
    assert event["hyperparameters"]["num_key_value_heads"] == theirs.num_key_value_heads
    assert event["hyperparameters"]["tie_word_embeddings"] is True
    assert event["source"] == f"GGUF metadata of {embedded_pipe.trace.filter('config', 'file')[0].data['path']}"
    assert event["has_generation_config_file"] is False


def test_gguf_file_event(embedded_pipe, provisioned, hf_home):
    files = file_events(embedded_pipe)
    assert list(files) == [EMBEDDED_GGUF]
    data = files[EMBEDDED_GGUF]
    assert data["repo"] == EMBEDDED_MODEL and data["filename"] == EMBEDDED_GGUF
    assert data["revision_asked"] == EMBEDDED_REVISION and data["commit"] == EMBEDDED_REVISION
    assert data["cache"] == "hit" and data["offline"] is True
    assert data["path"] == provisioned["path"] and data["path"].startswith(hf_home)
    assert data["size"] == os.path.getsize(os.path.realpath(data["path"])) == provisioned["size"]


# -- weights -----------------------------------------------------------------------------------------------


def test_weights_event_of_the_real_model(embedded_pipe):
    data = loading_event(embedded_pipe, "weights", "load")
    assert data["format"] == "gguf" and data["files"] == [EMBEDDED_GGUF]
    assert data["quantization_types"] == {"Q4_1": 210, "Q8_0": 1, "F32": 61}
    assert sum(data["quantization_types"].values()) == 272 == data["tensors"]  # every GGUF tensor was mapped
    assert data["unexpected"] == [] and data["unexpected_count"] == 0 and data["missing"] == []
    assert data["tied"] == {"lm_head.weight": "model.embed_tokens.weight"}
    assert data["dtype"] == "float32"
    assert data["parameters"] == PARAMETERS
    assert data["bytes"] == PARAMETERS * 4
    assert data["file_bytes"] == os.path.getsize(os.path.realpath(file_events(embedded_pipe)[EMBEDDED_GGUF]["path"]))


def test_real_model_is_float32_tied_and_complete(embedded_pipe):
    model = embedded_pipe.model
    assert model.lm_head.weight is model.model.embed_tokens.weight
    parameters = unique_parameters(model)
    assert sum(p.numel() for p in parameters) == PARAMETERS
    assert {p.dtype for p in parameters} == {torch.float32} and embedded_pipe.dtype == "float32"
    assert {p.device.type for p in parameters} == {"cpu"}
    assert not any(p.is_meta for p in model.parameters()) and not any(b.is_meta for b in model.buffers())


def test_dequantised_weights_equal_transformers(embedded_pipe, reference):
    _, theirs = reference
    ours = embedded_pipe.model.state_dict()
    assert set(ours) == set(theirs)
    for name in (
        "model.layers.0.self_attn.q_proj.weight",
        "model.layers.0.self_attn.k_proj.weight",
        "model.layers.29.self_attn.k_proj.weight",
        "model.embed_tokens.weight",
        "lm_head.weight",
    ):
        assert ours[name].shape == theirs[name].shape and torch.equal(ours[name], theirs[name]), name
    different = [name for name in theirs if not torch.equal(ours[name], theirs[name])]
    assert different == []


def test_parameter_count_equals_transformers(embedded_pipe, reference):
    _, theirs = reference
    assert sum(t.numel() for name, t in theirs.items() if name != "lm_head.weight") == PARAMETERS


@pytest.fixture(scope="module")
def saved(embedded_pipe, tmp_path_factory):
    """The real pipeline written by pipe.save_pretrained: config.json, model.safetensors (float32), tokenizer."""
    folder = str(tmp_path_factory.mktemp("saved") / "smollm2")
    assert embedded_pipe.save_pretrained(folder) == folder
    yield folder
    shutil.rmtree(folder, ignore_errors=True)  # 540 MB that pytest would otherwise keep for three sessions


@pytest.fixture(scope="module")
def bfloat16_pipe(saved):
    """The real model asked for in bfloat16 through model_kwargs, placed by device_map="auto". (From the saved
    safetensors folder: the GGUF's seconds of parsing and dequantising are covered by the session pipeline.)"""
    return explain.pipeline(
        "text-generation",
        model=saved,
        device_map="auto",
        model_kwargs={"torch_dtype": torch.bfloat16, "max_memory": {"cpu": "6GiB"}},
    )


def test_bfloat16_through_model_kwargs(bfloat16_pipe, embedded_pipe):
    assert bfloat16_pipe.dtype == "bfloat16"
    assert loading_event(bfloat16_pipe, "weights", "load")["dtype"] == "bfloat16"
    assert loading_event(bfloat16_pipe, "weights", "load")["stored_dtypes"] == {"float32": 272}
    ours, reference = bfloat16_pipe.model.state_dict(), embedded_pipe.model.state_dict()
    assert {t.dtype for t in unique_parameters(bfloat16_pipe.model)} == {torch.bfloat16}
    for name, tensor in reference.items():  # the float32 dequantisation, rounded once to bfloat16
        assert torch.equal(ours[name], tensor.to(torch.bfloat16)), name


def test_bfloat16_through_the_dtype_argument_on_the_real_model(bfloat16_pipe):
    pipe = explain.pipeline(dtype=torch.bfloat16)  # the embedded GGUF, dequantised then rounded to bfloat16
    assert pipe.dtype == "bfloat16" and loading_event(pipe, "weights", "load")["dtype"] == "bfloat16"
    assert loading_event(pipe, "weights", "load")["bytes"] == PARAMETERS * 2
    assert {t.dtype for t in unique_parameters(pipe.model)} == {torch.bfloat16}
    assert loading_event(pipe, "placement", "place")["bytes_per_device"] == {"cpu": PARAMETERS * 2}
    expected = bfloat16_pipe.model.state_dict()  # the same rounding reached through safetensors
    assert all(torch.equal(tensor, expected[name]) for name, tensor in pipe.model.state_dict().items())
    pipe("Water boils at", max_new_tokens=3, do_sample=False)
    steps = pipe.trace.filter("generation", "step", run=1)
    assert len(steps) == 3 and pipe.trace.last("generation", "settings").data["dtype"] == "bfloat16"


@pytest.mark.parametrize(
    "asked, dtype", [("bf16", torch.bfloat16), ("torch.float16", torch.float16), ("float32", torch.float32)]
)
def test_dtype_given_by_name(tiny_llama, asked, dtype):
    pipe = explain.pipeline(model=tiny_llama.folder, dtype=asked)
    assert {p.dtype for p in pipe.model.parameters()} == {dtype}
    assert loading_event(pipe, "weights", "load")["dtype"] == str(dtype).replace("torch.", "")


@pytest.fixture
def transformers_warnings():
    """The messages transformers logs (at warning level) while the test runs, its warning_once memory cleared."""
    import logging

    records, handler = [], logging.Handler()
    handler.emit = lambda record: records.append(record.getMessage())
    root = transformers.utils.logging.get_logger("transformers")
    transformers.utils.logging.warning_once.cache_clear()
    transformers.logging.set_verbosity_warning()
    root.addHandler(handler)
    yield records
    root.removeHandler(handler)
    transformers.logging.set_verbosity_error()


@pytest.mark.parametrize(
    "arguments, argument",
    [
        ({"torch_dtype": torch.bfloat16}, "torch_dtype"),
        ({"model_kwargs": {"torch_dtype": torch.bfloat16}}, "model_kwargs['torch_dtype']"),  # the seed's own call
        ({"dtype": "auto", "torch_dtype": torch.bfloat16}, "torch_dtype"),  # "auto" is the default: torch_dtype counts
        ({"model_kwargs": {"dtype": torch.bfloat16, "torch_dtype": torch.float16}}, "model_kwargs['dtype']"),
    ],
)
def test_torch_dtype_is_the_deprecated_name_of_dtype_as_in_transformers(
    tiny_llama, transformers_warnings, arguments, argument
):
    """transformers 5 still takes torch_dtype and warns that it is deprecated (pipelines/__init__.py:1103-1110);
    explain loads the same dtype, warns the same words as a FutureWarning and records them in weights/load."""
    theirs = transformers.pipeline("text-generation", model=tiny_llama.folder, **arguments)
    with pytest.warns(FutureWarning) as caught:
        pipe = explain.pipeline("text-generation", model=tiny_llama.folder, **arguments)
    from explain.pipeline import TORCH_DTYPE_DEPRECATED as message

    # transformers' own words (logged by the pipeline, and again by from_pretrained when it sits in model_kwargs)
    assert message in transformers_warnings and {m for m in transformers_warnings if "dtype" in m} == {message}
    assert [str(w.message) for w in caught if w.category is FutureWarning] == [message]
    assert message == "`torch_dtype` is deprecated! Use `dtype` instead!"
    assert {p.dtype for p in pipe.model.parameters()} == {theirs.model.dtype} == {torch.bfloat16}
    load = loading_event(pipe, "weights", "load")
    assert load["warnings"] == [message] and load["dtype_argument"] == argument and load["dtype"] == "bfloat16"


def test_dtype_warns_nothing_and_says_where_it_came_from(tiny_llama, transformers_warnings):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning fails the test
        pipe = explain.pipeline("text-generation", model=tiny_llama.folder, dtype=torch.bfloat16)
        default = explain.pipeline("text-generation", model=tiny_llama.folder)
    transformers.pipeline("text-generation", model=tiny_llama.folder, dtype=torch.bfloat16)
    assert not [m for m in transformers_warnings if "torch_dtype" in m]
    assert loading_event(pipe, "weights", "load")["warnings"] == []
    assert loading_event(pipe, "weights", "load")["dtype_argument"] == "dtype"
    assert loading_event(default, "weights", "load")["dtype_argument"] == 'default ("auto")'


def test_dtype_twice_is_refused_as_transformers_refuses_it(tiny_llama):
    with pytest.raises(ValueError, match="You cannot use both"):
        transformers.pipeline(
            "text-generation",
            model=tiny_llama.folder,
            dtype=torch.float16,
            model_kwargs={"torch_dtype": torch.bfloat16},
        )
    trace = explain.Trace()
    with pytest.raises(explain.ExplainError, match="pass it once"):
        explain.pipeline(
            "text-generation",
            model=tiny_llama.folder,
            dtype=torch.float16,
            model_kwargs={"torch_dtype": torch.bfloat16},
            trace=trace,
        )
    assert trace.events == []  # refused before any stage ran


def test_dtype_auto_keeps_the_checkpoint_dtype(tiny_llama, tmp_path):
    bf16 = str(tmp_path / "tiny-llama-bf16")
    copy.deepcopy(tiny_llama.model).to(torch.bfloat16).save_pretrained(bf16)
    tiny_llama.tokenizer.save(bf16)
    pipe = explain.pipeline(model=bf16)
    assert loading_event(pipe, "config", "config")["checkpoint_dtype"] == "bfloat16"
    assert loading_event(pipe, "weights", "load")["stored_dtypes"] == {"bfloat16": 2 + 2 * 9 + 1}
    assert {p.dtype for p in pipe.model.parameters()} == {torch.bfloat16}


# -- placement ---------------------------------------------------------------------------------------------


def test_device_map_auto_on_a_cpu_only_machine(bfloat16_pipe):
    assert not torch.cuda.is_available()
    data = loading_event(bfloat16_pipe, "placement", "place")
    assert data["strategy"] == "auto" and data["devices"] == ["cpu"]
    assert set(data["device_map"].values()) == {"cpu"}
    assert "no accelerator" in data["reason"] and "cpu" in data["reason"]
    assert data["max_memory"] == {"cpu": 6 * 2**30}
    parameter_bytes = sum(p.numel() * p.element_size() for p in unique_parameters(bfloat16_pipe.model))
    assert parameter_bytes == PARAMETERS * 2
    assert data["bytes_per_device"] == {"cpu": parameter_bytes}
    assert data["tied"] == {"lm_head.weight": "model.embed_tokens.weight"}
    assert bfloat16_pipe.model.lm_head.weight is bfloat16_pipe.model.model.embed_tokens.weight


def test_default_placement_of_the_real_model(embedded_pipe):
    data = loading_event(embedded_pipe, "placement", "place")
    assert data["strategy"] == "single device" and data["device_map"] == {"": "cpu"}
    assert data["reason"] == "no device given: transformers' default is the CPU"
    assert data["bytes_per_device"] == {"cpu": PARAMETERS * 4}
    assert set(data["layers"].values()) == {"cpu"} and "model.layers.29" in data["layers"]


@pytest.mark.parametrize(
    "placement",
    [
        {"device_map": {"": "cpu"}},
        {"device": "cpu"},
        {"device": -1},
        {"device": torch.device("cpu")},
        {"device_map": "auto"},
        {"device_map": "sequential"},
    ],
)
def test_placements_that_work_on_cpu(tiny_llama, placement):
    pipe = explain.pipeline(model=tiny_llama.folder, **placement)
    data = loading_event(pipe, "placement", "place")
    assert data["devices"] == ["cpu"]
    assert {p.device.type for p in pipe.model.parameters()} == {"cpu"}
    assert data["bytes_per_device"] == {"cpu": sum(p.numel() * 4 for p in tiny_llama.model.parameters())}
    assert pipe("Hi", max_new_tokens=2)[0]["generated_text"].startswith("Hi")


# -- safetensors: tiny random Llamas written by transformers -------------------------------------------------


def _ids(tokenizer, text="The quick brown fox jumps over the lazy dog"):
    return torch.tensor([tokenizer.encode(text)])


def _assert_same_logits(ours: torch.nn.Module, theirs: torch.nn.Module, ids: torch.Tensor, atol=1e-5):
    with torch.inference_mode():
        expected = theirs(ids).logits
        got = ours(ids).logits
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, atol=atol, rtol=0)


def test_single_file_safetensors_gives_transformers_logits(tiny_llama):
    pipe = explain.pipeline(model=tiny_llama.folder)
    _assert_same_logits(pipe.model, tiny_llama.model, _ids(tiny_llama.tokenizer))
    weights = loading_event(pipe, "weights", "load")
    assert weights["format"] == "safetensors" and weights["files"] == ["model.safetensors"]
    assert weights["shards"] == 1 and weights["missing"] == [] and weights["unexpected"] == []
    assert weights["parameters"] == tiny_llama.model.num_parameters()
    lookup = loading_event(pipe, "registry", "lookup")
    assert lookup["model_used"] == tiny_llama.folder and lookup["default_reason"] == "model given by the caller"


def test_folder_file_events_and_generation_config(tiny_llama):
    pipe = explain.pipeline(model=tiny_llama.folder)
    files = file_events(pipe)
    for name in ("config.json", "generation_config.json", "tokenizer.json", "model.safetensors"):
        data = files[name]
        assert data["cache"] == "local folder" and data["repo"] == tiny_llama.folder
        assert data["path"] == os.path.join(tiny_llama.folder, name)
        assert data["size"] == os.path.getsize(data["path"]) and data["commit"] is None
    assert files["model.safetensors.index.json"]["absent"] is True
    config = loading_event(pipe, "config", "config")
    assert config["source"] == os.path.join(tiny_llama.folder, "config.json")
    assert config["has_generation_config_file"] is True
    with open(os.path.join(tiny_llama.folder, "generation_config.json")) as f:
        written = json.load(f)
    assert written["max_new_tokens"] == 7
    assert config["generation_config"]["max_new_tokens"] == 7
    assert config["generation_config_source"]["max_new_tokens"] == "generation_config.json"
    assert config["generation_config_source"]["top_k"] == "transformers default"
    assert pipe.last_generation is None
    pipe("Hello")
    assert len(pipe.last_generation.generated_ids) <= 7


def test_sharded_safetensors_gives_transformers_logits(tiny_llama, tmp_path):
    folder = tmp_path / "sharded"
    tiny_llama.model.save_pretrained(folder, max_shard_size="100KB")
    tiny_llama.tokenizer.save(folder)
    with open(folder / "model.safetensors.index.json") as f:
        shards = sorted(set(json.load(f)["weight_map"].values()))
    assert len(shards) > 1 and not (folder / "model.safetensors").exists()
    pipe = explain.pipeline(model=str(folder))
    _assert_same_logits(pipe.model, tiny_llama.model, _ids(tiny_llama.tokenizer))
    weights = loading_event(pipe, "weights", "load")
    assert weights["files"] == shards and weights["shards"] == len(shards)
    assert set(file_events(pipe)) >= {"model.safetensors.index.json", *shards}
    progress = pipe.trace.filter("weights", "progress", run=0)
    assert [p.data["done"] for p in progress] == list(range(1, len(shards) + 1))


# -- save_pretrained of the real pipeline ---------------------------------------------------------------------


def test_saved_folder_loads_back_identically(embedded_pipe, saved):
    assert sorted(os.listdir(saved)) == [
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "special_tokens_map.json",
        "tokenizer.json",
        "tokenizer_config.json",
    ]
    again = explain.pipeline(model=saved)
    ours, original = again.model.state_dict(), embedded_pipe.model.state_dict()
    assert set(ours) == set(original)
    assert all(torch.equal(ours[name], original[name]) for name in original)
    assert again.model.lm_head.weight is again.model.model.embed_tokens.weight
    assert loading_event(again, "weights", "load")["parameters"] == PARAMETERS
    prompt = "The three primary colours are"
    first = embedded_pipe(prompt, max_new_tokens=8, do_sample=False)
    first_ids = embedded_pipe.last_generation.generated_ids
    second = again(prompt, max_new_tokens=8, do_sample=False)
    assert second == first and again.last_generation.generated_ids == first_ids
    assert len(first_ids) == 8


def test_saved_folder_is_a_transformers_folder(embedded_pipe, saved):
    theirs = transformers.AutoModelForCausalLM.from_pretrained(saved).eval()
    assert type(theirs).__name__ == "LlamaForCausalLM" and theirs.dtype == torch.float32
    assert theirs.num_parameters() == PARAMETERS
    ids = _ids(embedded_pipe.tokenizer, "The three primary colours are")
    _assert_same_logits(embedded_pipe.model, theirs, ids, atol=1e-4)
    generated = theirs.generate(ids, max_new_tokens=8, do_sample=False)[0, ids.shape[1] :].tolist()
    embedded_pipe("The three primary colours are", max_new_tokens=8, do_sample=False)
    assert generated == embedded_pipe.last_generation.generated_ids
    tokenizer = transformers.AutoTokenizer.from_pretrained(saved)
    assert tokenizer("The three primary colours are")["input_ids"] == ids[0].tolist()


# -- the command line --------------------------------------------------------------------------------------


@pytest.fixture(scope="module", autouse=True)
def cli(request, provisioned, tmp_path_factory):
    """The command-line runs this module tests, started in the background as the module starts: each is seconds
    of imports and loading in a fresh process, which overlap with the in-process tests. A test calls
    cli(name) to wait for its run: a CompletedProcess."""
    folder = tmp_path_factory.mktemp("cli")
    commands = {
        "load": ["load", "--save-trace", str(folder / "load.json")],
        "provision": ["provision"],
        "error": ["load", "--model", str(folder)],
    }  # a folder without config.json
    wanted = {
        item.name.split("_")[2]
        for item in request.session.items
        if item.module is request.module and item.name.startswith("test_cli_")
    }
    processes = {
        name: subprocess.Popen(
            [sys.executable, "-m", "explain", *commands[name]],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=dict(os.environ),
        )
        for name in sorted(wanted)
    }
    results = {}

    def result(name: str) -> subprocess.CompletedProcess:
        if name not in results:
            out, err = processes[name].communicate(timeout=300)
            results[name] = subprocess.CompletedProcess(commands[name], processes[name].returncode, out, err)
        return results[name]

    result.folder = folder
    yield result
    for process in processes.values():
        if process.poll() is None:
            process.kill()
            process.wait()


def test_cli_load_prints_every_loading_stage(cli):
    run = cli("load")
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    for stage in LOADING:
        assert any(f"  {stage} " in line for line in lines), f"no {stage} line in:\n{run.stdout}"
    assert "SmolLM2-135M-Instruct.Q4_1.gguf: hit @ab810cf" in run.stdout
    assert "272 tensors" in run.stdout and "134.5 M parameters" in run.stdout
    saved = explain.Trace.load(cli.folder / "load.json")
    assert saved.events[0].stage == "registry" and saved.events[-1].stage == "placement"
    assert {e.stage for e in saved.events} == set(LOADING)


def test_cli_provision_exits_0(cli, hf_home):
    run = cli("provision")
    assert run.returncode == 0, run.stderr
    assert "already in" in run.stdout and hf_home in run.stdout and EMBEDDED_GGUF in run.stdout


def test_cli_error_exits_2_with_the_message_on_stderr(cli):
    run = cli("error")
    assert run.returncode == 2
    assert run.stderr.startswith("error: ") and f"the folder {cli.folder} has no config.json" in run.stderr
    assert "Traceback" not in run.stderr and run.stdout == ""


def test_gguf_file_reads_what_ggufs_own_reader_reads(provisioned):
    """explain's GGUFFile is gguf.GGUFReader over a plain ndarray view of the map: every field and tensor equal."""
    import gguf
    import numpy as np

    from explain.stages.config import GGUFFile, gguf_reader

    ours, theirs = gguf_reader(provisioned["path"]), gguf.GGUFReader(provisioned["path"], "r")
    assert isinstance(ours, GGUFFile) and ours.filename == provisioned["path"]
    assert type(ours.data) is np.ndarray and ours.data.base is not None  # no copy of the 94 MB file
    assert list(ours.fields) == list(theirs.fields)
    for name, field in theirs.fields.items():
        mine = ours.fields[name]
        assert mine.types == field.types and mine.data == field.data, name
        assert len(mine.parts) == len(field.parts)
        assert all(np.array_equal(a, b) for a, b in zip(mine.parts, field.parts, strict=True)), name
    assert [(t.name, t.tensor_type, t.shape.tolist()) for t in ours.tensors] == [
        (t.name, t.tensor_type, t.shape.tolist()) for t in theirs.tensors
    ]
    assert all(np.array_equal(a.data, b.data) for a, b in zip(ours.tensors, theirs.tensors, strict=True))
