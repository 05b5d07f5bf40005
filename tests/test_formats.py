"""The weight-format registry: each entry finds its files, lists their tensors without reading them, and reads a
state dict; the pipeline asks them in order. A new format is one entry (registered here by a test, as a plugin
would) and loads through the same stage."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

import explain
from explain.errors import ExplainError
from explain.formats import FORMATS, ReadRequest, WeightFormat, find_weights, named_as_model, register
from explain.trace import Trace


@pytest.fixture
def folder(tiny_folder, tmp_path):
    copy = tmp_path / "model"
    shutil.copytree(tiny_folder, copy)
    return copy


@pytest.fixture(scope="module")
def reference(tiny_folder):
    """Greedy ids and last logits of the tiny model loaded from its single model.safetensors."""
    return run(explain.pipeline(model=tiny_folder))


def run(pipe):
    out = pipe("the tea", max_new_tokens=4, do_sample=False, return_tensors=True, keep_logits=True)
    return out[0]["generated_token_ids"], torch.stack(list(pipe.last_generation.raw_logits))


def same(result, reference) -> bool:
    """The same ids, and logits equal to float32 rounding (a memory-mapped tensor and a copy of it may take
    different kernel paths: 1e-7 apart)."""
    return result[0] == reference[0] and torch.allclose(result[1], reference[1], atol=1e-5, rtol=0)


def state_of(folder) -> dict:
    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        return {name: f.get_tensor(name) for name in f.keys()}


def resolver(folder):
    def resolve(filename, required=True, named_by=None):
        return explain.stages.hub.resolve(str(folder), filename, required=required, named_by=named_by)

    return resolve


def test_the_registry_order_is_the_preference():
    assert list(FORMATS)[:3] == ["gguf", "safetensors", "pytorch"]
    assert all(isinstance(entry, WeightFormat) for entry in FORMATS.values())


def test_each_entry_finds_lists_and_reads_its_files(tiny_gguf, folder):
    torch.save(state_of(folder), folder / "pytorch_model.bin")
    expected = list(state_of(folder))
    for name, gguf_path in (("gguf", tiny_gguf), ("safetensors", None), ("pytorch", None)):
        entry = FORMATS[name]
        paths = entry.find(resolver(folder), gguf_path)
        assert paths and all(os.path.isfile(p) for p in paths), name
        request = ReadRequest(
            expected=expected,
            dtype=torch.bfloat16,
            config=json.loads((folder / "config.json").read_text()),
            trace=Trace(),
        )
        inventory = entry.inventory(paths, request)
        assert len(inventory) == 12 and all(isinstance(shape, tuple) for shape, _ in inventory.values()), name
        state, facts = entry.read(paths, request)
        assert sorted(state) == sorted(expected), name
        assert all(t.dtype is torch.bfloat16 for t in state.values()), name
        assert {"format", "stored_dtypes", "unexpected", "file_bytes"} <= set(facts), name
        assert facts["unexpected"] == [] and request.trace.filter("weights", "progress"), name
    (folder / "empty").mkdir()
    assert FORMATS["safetensors"].find(resolver(folder / "empty"), None) is None


def test_the_pipeline_prefers_safetensors_to_a_pytorch_bin(folder):
    torch.save({"garbage": torch.zeros(1)}, folder / "pytorch_model.bin")
    weight_format, paths = find_weights(str(folder), resolver(folder))
    assert weight_format.name == "safetensors" and paths == [str(folder / "model.safetensors")]


def shard(folder, suffix: str, save) -> None:
    """Split model.safetensors into two shards and an index, written with `save`."""
    state = state_of(folder)
    names = sorted(state)
    halves = {f"model-0000{i + 1}-of-00002.{suffix}": names[i::2] for i in range(2)}
    for file, part in halves.items():
        save({n: state[n].contiguous() for n in part}, folder / file)
    index = "model.safetensors.index.json" if suffix == "safetensors" else "pytorch_model.bin.index.json"
    (folder / index).write_text(
        json.dumps({"metadata": {}, "weight_map": {n: f for f, p in halves.items() for n in p}})
    )
    (folder / "model.safetensors").unlink()


@pytest.mark.parametrize(
    "suffix, save", [("safetensors", lambda s, p: save_file(s, str(p))), ("bin", lambda s, p: torch.save(s, p))]
)
def test_sharded_checkpoints_load_the_same_model(folder, reference, suffix, save):
    shard(folder, suffix, save)
    pipe = explain.pipeline(model=str(folder))
    event = pipe.trace.last("weights", "load").data
    assert event["shards"] == 2 and len(event["files"]) == 2
    assert event["format"] == ("safetensors" if suffix == "safetensors" else "pytorch (weights_only)")
    assert same(run(pipe), reference)


def test_a_single_pytorch_bin_loads_the_same_model(folder, reference):
    torch.save(state_of(folder), folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()
    assert same(run(explain.pipeline(model=str(folder))), reference)


def test_no_weights_names_every_format(folder):
    (folder / "model.safetensors").unlink()
    with pytest.raises(ExplainError) as caught:
        explain.pipeline(model=str(folder))
    for entry in FORMATS.values():
        assert entry.looks_for in str(caught.value)


def test_a_new_format_is_one_entry(folder, reference):
    """A NumPy .npz format (allow_pickle=False: no code runs), registered ahead of safetensors."""

    def find(resolve, gguf_path):
        path = resolve("model.npz", required=False)
        return [path] if path else None

    def inventory(paths, request):
        with np.load(paths[0], allow_pickle=False) as arrays:
            return {name: (arrays[name].shape, str(arrays[name].dtype)) for name in arrays.files}

    def read(paths, request):
        state, unexpected = {}, []
        with np.load(paths[0], allow_pickle=False) as arrays:
            for stored in arrays.files:
                name = named_as_model(stored, set(request.expected), request.prefix)
                if name is None:
                    unexpected.append(stored)
                else:
                    state[name] = torch.from_numpy(arrays[stored].copy()).to(request.dtype)
        return state, {
            "format": "npz",
            "stored_dtypes": {"float32": len(state)},
            "unexpected": unexpected,
            "file_bytes": os.path.getsize(paths[0]),
        }

    np.savez(folder / "model.npz", **{n: t.float().numpy() for n, t in state_of(folder).items()})
    (folder / "model.safetensors").unlink()
    register(WeightFormat("npz", "model.npz", find, inventory, read), before="safetensors")
    try:
        assert list(FORMATS)[:3] == ["gguf", "npz", "safetensors"]
        pipe = explain.pipeline(model=str(folder))
        assert pipe.trace.last("weights", "load").data["format"] == "npz"
        assert same(run(pipe), reference)
    finally:
        FORMATS.pop("npz")
