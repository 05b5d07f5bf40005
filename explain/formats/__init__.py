"""Weight formats: a registry of entries with one signature each, so a new format is one file plus its tests.

    entry = FORMATS["safetensors"]
    paths = entry.find(resolve, gguf_path)           # the format's files in a folder or cached repo, or None
    names = entry.inventory(paths, request)          # stored tensor -> (shape, stored dtype), no data read
    state, facts = entry.read(paths, request)        # the state dict, and facts for the weights/load event

`find_weights` asks each entry in order (FORMATS' order is the preference: a GGUF file the caller named, then
safetensors, then PyTorch's weights-only pickles) and returns the first that finds files. `resolve(filename,
required)` is the pipeline's one way to turn a file name into a local path (explain.stages.hub.resolve: a local folder,
kept inside itself, or the Hugging Face cache); a file name read from another file (an index's weight_map) goes
through `shard_names` first, which refuses absolute paths and `..`.

What `read` returns is a dict of tensors keyed by the model's parameter names (`request.expected`), each in
`request.dtype` when it is floating point, and facts: at least "format", "stored_dtypes", "unexpected" (stored names
the model does not use), "file_bytes". An entry may also return tensors that are not plain float tensors (a
torch.Tensor subclass holding quantised blocks): the weights stage counts their bytes with `tensor.nbytes` and
compares their `shape` with the model's, nothing else. Options for one format (keep GGUF blocks quantised, ...) travel
in `request.options`.
"""

from __future__ import annotations

import os
import posixpath
import re
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from ..errors import CorruptFileError, ExplainError, OutsideFolderError
from ..trace import Trace

Resolve = Callable[..., "str | None"]  # resolve(filename, required=True) -> local path, or None when not required


@dataclass
class ReadRequest:
    """What an entry needs to read a checkpoint for one model."""

    expected: list[str]  # the model's parameter and persistent buffer names (the skeleton's)
    dtype: torch.dtype  # what floating-point tensors become
    config: dict  # config.json as a dict (GGUF needs model_type and the head counts to undo llama.cpp's permutation)
    trace: Trace  # for weights/progress events
    prefix: str | None = None  # the model's base_model_prefix: old checkpoints store names without it
    reader: object | None = None  # an open GGUF reader from the config stage, so the file is parsed once
    options: dict = field(default_factory=dict)  # format-specific options (e.g. quantised loading)


@dataclass(frozen=True)
class WeightFormat:
    name: str  # "safetensors"; the weights/load event's "format" says which entry read the files
    looks_for: str  # the files it finds, for the error when no entry finds any
    find: Callable[[Resolve, str | None], list[str] | None]  # (resolve, gguf_path) -> paths or None
    inventory: Callable[[list[str], ReadRequest], dict]  # paths -> {stored name: (shape, stored dtype name)}
    read: Callable[[list[str], ReadRequest], tuple[dict, dict]]  # paths -> (state dict, facts)


FORMATS: dict[str, WeightFormat] = {}


def register(entry: WeightFormat, before: str | None = None) -> WeightFormat:
    """Add a format; `before` puts it ahead of an existing entry in the order find_weights asks them."""
    items = [(name, e) for name, e in FORMATS.items() if name != entry.name]
    position = next((i for i, (name, _) in enumerate(items) if name == before), len(items))
    items.insert(position, (entry.name, entry))
    FORMATS.clear()
    FORMATS.update(items)
    return entry


def find_weights(model: str, resolve: Resolve, gguf_path: str | None = None) -> tuple[WeightFormat, list[str]]:
    """The first registered format that finds files for this model, and those files."""
    for entry in FORMATS.values():
        paths = entry.find(resolve, gguf_path)
        if paths:
            return entry, paths
    raise ExplainError(
        f"{model} has no weights explain can read: no " + ", ".join(entry.looks_for for entry in FORMATS.values())
    )


# -- helpers the entries share --------------------------------------------------------------------------------------
def shard_names(index_path: str, entries: dict) -> list[str]:
    """The distinct file names an index's weight_map names, each checked to be a plain relative name inside the
    model's folder: an absolute path, `..` or a drive is refused naming the index file and the entry (a model folder
    is shared between people: its files must never make explain open a file elsewhere)."""
    names = []
    for tensor, name in entries.items():
        if not isinstance(name, str) or not name:
            raise CorruptFileError(
                f"{index_path}: weight_map[{tensor!r}] is {name!r}, not a file name; the index is "
                "damaged: download it again or re-save the model"
            )
        normal = posixpath.normpath(name.replace("\\", "/"))
        if (
            os.path.isabs(name)
            or normal.startswith("/")
            or normal == ".."
            or normal.startswith("../")
            or re.match(r"^[A-Za-z]:", name)
            or "\x00" in name
        ):
            raise OutsideFolderError(
                f"{index_path}: weight_map[{tensor!r}] names {name!r}, a path outside the model's "
                "folder; explain opens only files inside it. The index was edited or comes from "
                "someone you should not trust: get the model from its original source"
            )
        if normal not in names:
            names.append(normal)
    return sorted(names)


def read_index(index_path: str, what: str) -> list[str]:
    """The shard file names of `model.safetensors.index.json` / `pytorch_model.bin.index.json`."""
    from ..stages.config import read_json

    index = read_json(index_path, what)
    if not isinstance(index.get("weight_map"), dict) or not index["weight_map"]:
        raise CorruptFileError(f'{index_path} has no "weight_map" of tensor names to files; it is not a {what}')
    return shard_names(index_path, index["weight_map"])


def named_as_model(name: str, wanted: set, prefix: str | None) -> str | None:
    """The model's name for a checkpoint tensor. Old checkpoints (OpenAI's GPT-2) store the base model without
    its prefix ("h.0.attn.c_attn.weight" for "transformer.h.0.attn.c_attn.weight"), as transformers allows."""
    if name in wanted:
        return name
    if prefix and f"{prefix}.{name}" in wanted:
        return f"{prefix}.{name}"
    return None


def file_bytes(paths: list[str]) -> int:
    return sum(os.path.getsize(p) for p in paths)


# each registers itself; the order of these lines is the order find_weights asks them in
from . import gguf_format  # noqa: E402, I001  (first: a GGUF file the caller named wins)
from . import safetensors_format  # noqa: E402
from . import pytorch_format  # noqa: E402  (last: pickles, opened weights-only)

__all__ = [
    "FORMATS",
    "ReadRequest",
    "WeightFormat",
    "find_weights",
    "register",
    "shard_names",
    "read_index",
    "named_as_model",
    "gguf_format",
    "safetensors_format",
    "pytorch_format",
]
