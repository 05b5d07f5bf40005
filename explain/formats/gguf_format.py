"""GGUF (llama.cpp's format): one file the caller names with gguf_file=, quantised blocks dequantised by the `gguf`
package, tensor names mapped with gguf's own TensorNameMap (the table llama.cpp's converter uses), never a table of
ours. As transformers does, every tensor becomes a float tensor of the asked dtype."""

from __future__ import annotations

import mmap
import os
from collections import Counter

import gguf
import numpy as np
import torch
from gguf.quants import dequantize

from ..errors import CorruptFileError, ExplainError
from ..models import common_config
from . import ReadRequest, WeightFormat, register


def find(resolve, gguf_path):
    return [gguf_path] if gguf_path else None


def _reader(paths: list[str], request: ReadRequest):
    from ..stages.config import gguf_reader

    return request.reader if request.reader is not None else gguf_reader(paths[0])


def inventory(paths: list[str], request: ReadRequest) -> dict:
    """Stored tensor -> (shape as the Hugging Face checkpoint has it, quantisation type)."""
    return {
        t.name: (tuple(int(d) for d in reversed(t.shape)), t.tensor_type.name) for t in _reader(paths, request).tensors
    }


def release_pages(tensor) -> None:
    """Drop a tensor's pages of the memory-mapped file from this process once its bytes are read (converted, or
    unpacked into blocks: neither keeps a view of the file), with madvise(MADV_DONTNEED).

    A resident page of a mapped file counts in the process's memory (VmRSS, and so its peak, VmHWM) for as long as
    the file stays mapped, and the reader stays open until the pipeline is built: without this, the whole file
    (~94 MB for the embedded model) sat in the process beside the converted weights at the end of the weights stage,
    the peak of every GGUF load. The pages stay in the system's page cache, and the file is mapped read-only
    (gguf_reader opens it with mode "r"), so a later read of the same bytes gets them again, unchanged. Does nothing
    where the tensor is not a view of an mmap (a copy in memory) or the platform has no madvise (Windows)."""
    base = tensor.data
    while base is not None and not isinstance(base, mmap.mmap):
        base = getattr(base, "base", None)
    if base is None or not hasattr(base, "madvise") or not hasattr(mmap, "MADV_DONTNEED"):
        return
    start = int(tensor.data_offset) // mmap.PAGESIZE * mmap.PAGESIZE  # madvise takes whole pages
    length = min(int(tensor.data_offset) + int(tensor.n_bytes), len(base)) - start
    if length > 0:
        base.madvise(mmap.MADV_DONTNEED, start, length)


def reverse_permute(weights: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's converter interleaves the rotary halves of q/k rows; undo it (transformers does the same)."""
    dim = weights.shape[0] // n_head // 2
    w = weights.reshape(n_head, dim, 2, *weights.shape[1:])  # (heads, head_dim/2, 2, in)
    return w.swapaxes(2, 1).reshape(weights.shape)


def permuted_heads(config: dict, name: str) -> int | None:
    """The head count whose rows llama.cpp's converter permuted in this tensor (llama and mistral q/k), or None."""
    if config["model_type"] in ("llama", "mistral") and name.endswith(("q_proj.weight", "k_proj.weight")):
        return config["num_attention_heads"] if "q_proj" in name else config["num_key_value_heads"]
    return None


def read(paths: list[str], request: ReadRequest) -> tuple[dict, dict]:
    """Dequantise the GGUF tensors the architecture expects; returns (state dict, facts for the event).
    `request.options["take"]`, when given (quantization="gguf"), may keep a tensor's blocks as stored instead."""
    path, reader, config = paths[0], _reader(paths, request), request.config
    take = request.options.get("take")  # a quantizer's take(name, tensor, heads): True when it keeps the blocks
    arch_name = config["model_type"]
    arch = {n: a for a, n in gguf.MODEL_ARCH_NAMES.items()}.get(arch_name)
    if arch is None:
        raise ExplainError(f"{path}: the gguf package knows no architecture {arch_name!r}")
    name_map = gguf.get_tensor_name_map(arch, common_config(config)["num_hidden_layers"])
    gguf_to_hf = {}
    for name in request.expected:
        gguf_name = name_map.get_name(name, try_suffixes=(".weight", ".bias"))
        if gguf_name is not None:
            gguf_to_hf[gguf_name] = name
    state, quant_types, unexpected = {}, Counter[str](), list[str]()
    for index, tensor in enumerate(reader.tensors):
        quant_types[tensor.tensor_type.name] += 1
        hf_name = gguf_to_hf.get(tensor.name)
        if hf_name is None:
            unexpected.append(tensor.name)
            continue
        name = hf_name
        heads = permuted_heads(config, name)
        if take is not None and take(name, tensor, heads):
            continue  # kept quantized, as stored: the quantizer packs it for its kernel (explain.quantization)
        try:
            values = dequantize(tensor.data, tensor.tensor_type)  # float32, shape as the HF checkpoint has it
            if heads is not None:
                values = reverse_permute(values, heads)
        except (ValueError, TypeError, NotImplementedError, IndexError) as error:
            raise CorruptFileError(
                f"{path}: tensor {tensor.name} ({tensor.tensor_type.name}) cannot be read "
                f"({type(error).__name__}: {error}); the file is damaged or its metadata does not "
                "match its tensors: download it again"
            ) from None
        if not values.flags.writeable:  # F32 tensors come back as read-only views of the memory-mapped file
            values = values.copy()
        state[name] = torch.from_numpy(np.ascontiguousarray(values)).to(request.dtype)
        release_pages(tensor)  # its bytes are in `state` now: the file's pages need not stay in this process
        if index % 16 == 0 or index == len(reader.tensors) - 1:
            request.trace.emit(
                "weights", "progress", {"file": os.path.basename(path), "done": index + 1, "total": len(reader.tensors)}
            )
    facts = {
        "format": "gguf",
        "quantization_types": dict(quant_types),
        "stored_dtypes": dict(quant_types),
        "unexpected": unexpected,
        "file_bytes": os.path.getsize(path),
    }
    return state, facts


FORMAT = register(WeightFormat("gguf", "GGUF file (pass gguf_file=)", find, inventory, read))
