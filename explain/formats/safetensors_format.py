"""safetensors: one `model.safetensors`, or shards listed in `model.safetensors.index.json`; memory-mapped
(safetensors.safe_open), one tensor read at a time. The format holds no code: reading it runs nothing."""

from __future__ import annotations

import os
from collections import Counter

import safetensors

from ..errors import CorruptFileError
from ..utils.dtypes import dtype_name
from . import ReadRequest, WeightFormat, file_bytes, named_as_model, read_index, register

INDEX, SINGLE = "model.safetensors.index.json", "model.safetensors"


def find(resolve, gguf_path):
    index = resolve(INDEX, required=False)
    if index is not None:
        names = read_index(index, f"safetensors index ({INDEX})")
        return [resolve(name, named_by=f"{index} (its weight_map)") for name in names]
    single = resolve(SINGLE, required=False)
    return [single] if single is not None else None


def _corrupt(path: str, error: Exception) -> CorruptFileError:
    return CorruptFileError(
        f"{path} is not a readable safetensors file ({error}); it is truncated or corrupt: "
        "download it again or re-save the model"
    )


def inventory(paths: list[str], request: ReadRequest) -> dict:
    found = {}
    for path in paths:
        try:
            with safetensors.safe_open(path, framework="pt") as f:  # reads the header only
                for name in f.keys():
                    part = f.get_slice(name)
                    found[name] = (tuple(part.get_shape()), str(part.get_dtype()))
        except (safetensors.SafetensorError, OSError, ValueError, RuntimeError) as error:
            raise _corrupt(path, error) from None
    return found


def read(paths: list[str], request: ReadRequest) -> tuple[dict, dict]:
    state, stored, unexpected = {}, Counter[str](), list[str]()
    wanted = set(request.expected)
    for number, path in enumerate(paths, 1):
        try:
            with safetensors.safe_open(path, framework="pt") as f:  # memory-mapped: read one tensor at a time
                for stored_name in f.keys():
                    name = named_as_model(stored_name, wanted, request.prefix)
                    if name is None:
                        unexpected.append(stored_name)
                        continue
                    tensor = f.get_tensor(stored_name)
                    stored[dtype_name(tensor.dtype)] += 1
                    state[name] = tensor.to(request.dtype) if tensor.is_floating_point() else tensor
        except (safetensors.SafetensorError, OSError, ValueError, RuntimeError) as error:
            raise _corrupt(path, error) from None
        request.trace.emit("weights", "progress", {"file": os.path.basename(path), "done": number, "total": len(paths)})
    return state, {
        "format": "safetensors",
        "stored_dtypes": dict(stored),
        "unexpected": unexpected,
        "file_bytes": file_bytes(paths),
        "shards": len(paths),
    }


FORMAT = register(WeightFormat("safetensors", f"{SINGLE} or {INDEX}", find, inventory, read))
