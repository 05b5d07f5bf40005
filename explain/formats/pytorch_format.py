"""PyTorch checkpoints: `pytorch_model.bin`, or shards listed in `pytorch_model.bin.index.json`. A .bin file is a
pickle, and a pickle can run any code when it is loaded; explain opens it only with torch.load(weights_only=True),
whose unpickler builds tensors and plain containers and refuses everything else, so no code from the file runs."""

from __future__ import annotations

import os
from collections import Counter

import torch

from ..errors import CorruptFileError
from ..utils.dtypes import dtype_name
from . import ReadRequest, WeightFormat, file_bytes, named_as_model, read_index, register

INDEX, SINGLE = "pytorch_model.bin.index.json", "pytorch_model.bin"


def find(resolve, gguf_path):
    index = resolve(INDEX, required=False)
    if index is not None:
        names = read_index(index, f"PyTorch checkpoint index ({INDEX})")
        return [resolve(name, named_by=f"{index} (its weight_map)") for name in names]
    single = resolve(SINGLE, required=False)
    return [single] if single is not None else None


def _load(path: str) -> dict:
    """The file's state dict: a dict of tensor name -> tensor, or an error naming the file."""
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as error:  # the unpickler raises UnpicklingError, RuntimeError, EOFError... on bad bytes
        raise CorruptFileError(
            f"{path} could not be read as a weights-only PyTorch checkpoint "
            f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}). "
            "explain never unpickles arbitrary objects; convert the checkpoint to "
            "safetensors"
        ) from None
    if not isinstance(loaded, dict):
        raise CorruptFileError(
            f"{path} holds a {type(loaded).__name__}, not a state dict (a dict of tensor names to "
            "tensors); save the model with model.save_pretrained() or torch.save(model.state_dict())"
        )
    wrong = next(((k, v) for k, v in loaded.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)), None)
    if wrong is not None:
        raise CorruptFileError(
            f"{path} holds {wrong[0]!r}: {type(wrong[1]).__name__}, not a tensor name and a tensor; "
            "it is not a state dict: save the model with model.save_pretrained()"
        )
    return loaded


def inventory(paths: list[str], request: ReadRequest) -> dict:
    return {name: (tuple(t.shape), dtype_name(t.dtype)) for path in paths for name, t in _load(path).items()}


def read(paths: list[str], request: ReadRequest) -> tuple[dict, dict]:
    state, stored, unexpected = {}, Counter[str](), list[str]()
    wanted = set(request.expected)
    for number, path in enumerate(paths, 1):
        for stored_name, tensor in _load(path).items():
            name = named_as_model(stored_name, wanted, request.prefix)
            if name is None:
                unexpected.append(stored_name)
                continue
            stored[dtype_name(tensor.dtype)] += 1
            state[name] = tensor.to(request.dtype) if tensor.is_floating_point() else tensor
        request.trace.emit("weights", "progress", {"file": os.path.basename(path), "done": number, "total": len(paths)})
    return state, {
        "format": "pytorch (weights_only)",
        "stored_dtypes": dict(stored),
        "unexpected": unexpected,
        "file_bytes": file_bytes(paths),
        "shards": len(paths),
    }


FORMAT = register(WeightFormat("pytorch", f"{SINGLE} or {INDEX}", find, inventory, read))
