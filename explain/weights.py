"""Stage 4, weights: read every tensor of the checkpoint and check its name against the architecture.

Formats, each read by the library made for it:
  safetensors   one file or shards listed in model.safetensors.index.json; memory-mapped (safetensors.safe_open)
  gguf          llama.cpp's format; quantised blocks dequantised by the `gguf` package, names mapped with
                gguf's own TensorNameMap (the table llama.cpp's converter uses), never a table of ours
  pytorch .bin  only with torch.load(weights_only=True): a pickle is never executed
"""

from __future__ import annotations

import inspect
import os
import time
from collections import Counter

import gguf
import numpy as np
import safetensors
import torch
from accelerate import init_empty_weights
from gguf.quants import dequantize

from .config import gguf_reader
from .errors import CorruptFileError, ExplainError
from .trace import Trace

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float": torch.float32, "float16": torch.float16,
          "fp16": torch.float16, "half": torch.float16, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}


def resolve_dtype(dtype, checkpoint_dtype: str | None) -> torch.dtype:
    """dtype / torch_dtype as transformers takes them: a torch.dtype, a name, or "auto" (the checkpoint's)."""
    if dtype is None or dtype == "auto":
        return DTYPES.get(str(checkpoint_dtype).replace("torch.", ""), torch.float32)
    if isinstance(dtype, torch.dtype):
        return dtype
    name = str(dtype).replace("torch.", "")
    if name not in DTYPES:
        raise ExplainError(f"unknown dtype {dtype!r}; use one of \"auto\", {', '.join(sorted(set(DTYPES)))} "
                           "or a torch dtype such as torch.bfloat16")
    return DTYPES[name]


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def _reverse_permute(weights: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's converter interleaves the rotary halves of q/k rows; undo it (transformers does the same)."""
    dim = weights.shape[0] // n_head // 2
    w = weights.reshape(n_head, dim, 2, *weights.shape[1:])  # (heads, head_dim/2, 2, in)
    return w.swapaxes(2, 1).reshape(weights.shape)


def read_gguf(reader: gguf.GGUFReader, path: str, expected: list[str], config: dict, trace: Trace,
              dtype: torch.dtype) -> tuple[dict, dict]:
    """Dequantise the GGUF tensors the architecture expects; returns (state dict, facts for the event)."""
    arch_name = config["model_type"]
    arch = {n: a for a, n in gguf.MODEL_ARCH_NAMES.items()}.get(arch_name)
    if arch is None:
        raise ExplainError(f"{path}: the gguf package knows no architecture {arch_name!r}")
    name_map = gguf.get_tensor_name_map(arch, config.get("num_hidden_layers") or config.get("n_layer"))
    gguf_to_hf = {}
    for name in expected:
        gguf_name = name_map.get_name(name, try_suffixes=(".weight", ".bias"))
        if gguf_name is not None:
            gguf_to_hf[gguf_name] = name
    state, quant_types, unexpected = {}, Counter(), []
    for index, tensor in enumerate(reader.tensors):
        quant_types[tensor.tensor_type.name] += 1
        name = gguf_to_hf.get(tensor.name)
        if name is None:
            unexpected.append(tensor.name)
            continue
        values = dequantize(tensor.data, tensor.tensor_type)  # float32, shape as the HF checkpoint has it
        if arch_name in ("llama", "mistral") and name.endswith(("q_proj.weight", "k_proj.weight")):
            heads = config["num_attention_heads"] if "q_proj" in name else config["num_key_value_heads"]
            values = _reverse_permute(values, heads)
        if not values.flags.writeable:  # F32 tensors come back as read-only views of the memory-mapped file
            values = values.copy()
        state[name] = torch.from_numpy(np.ascontiguousarray(values)).to(dtype)
        if index % 16 == 0 or index == len(reader.tensors) - 1:
            trace.emit("weights", "progress", {"file": os.path.basename(path), "done": index + 1,
                                               "total": len(reader.tensors)})
    facts = {"format": "gguf", "quantization_types": dict(quant_types),
             "stored_dtypes": dict(quant_types), "unexpected": unexpected,
             "file_bytes": os.path.getsize(path)}
    return state, facts


def _named_as_model(name: str, wanted: set, prefix: str | None) -> str | None:
    """The model's name for a checkpoint tensor. Old checkpoints (OpenAI's GPT-2) store the base model without
    its prefix ("h.0.attn.c_attn.weight" for "transformer.h.0.attn.c_attn.weight"), as transformers allows."""
    if name in wanted:
        return name
    if prefix and f"{prefix}.{name}" in wanted:
        return f"{prefix}.{name}"
    return None


def read_safetensors(paths: list[str], expected: list[str], trace: Trace, dtype: torch.dtype,
                     prefix: str | None = None) -> tuple[dict, dict]:
    state, stored, unexpected = {}, Counter(), []
    wanted = set(expected)
    for number, path in enumerate(paths, 1):
        try:
            with safetensors.safe_open(path, framework="pt") as f:  # memory-mapped: read one tensor at a time
                for stored_name in f.keys():
                    name = _named_as_model(stored_name, wanted, prefix)
                    if name is None:
                        unexpected.append(stored_name)
                        continue
                    tensor = f.get_tensor(stored_name)
                    stored[dtype_name(tensor.dtype)] += 1
                    state[name] = tensor.to(dtype) if tensor.is_floating_point() else tensor
        except (safetensors.SafetensorError, OSError, ValueError, RuntimeError) as error:
            raise CorruptFileError(f"{path} is not a readable safetensors file ({error}); it is truncated or "
                                   "corrupt: download it again or re-save the model") from None
        trace.emit("weights", "progress", {"file": os.path.basename(path), "done": number, "total": len(paths)})
    return state, {"format": "safetensors", "stored_dtypes": dict(stored), "unexpected": unexpected,
                   "file_bytes": sum(os.path.getsize(p) for p in paths), "shards": len(paths)}


def read_pytorch_bin(paths: list[str], expected: list[str], trace: Trace, dtype: torch.dtype,
                     prefix: str | None = None) -> tuple[dict, dict]:
    state, stored, unexpected = {}, Counter(), []
    wanted = set(expected)
    for number, path in enumerate(paths, 1):
        try:
            loaded = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except Exception as error:
            raise CorruptFileError(f"{path} could not be read as a weights-only PyTorch checkpoint ({error}). "
                                   "explain never unpickles arbitrary objects; convert the checkpoint to "
                                   "safetensors") from None
        for stored_name, tensor in loaded.items():
            name = _named_as_model(stored_name, wanted, prefix)
            if name is None:
                unexpected.append(stored_name)
                continue
            stored[dtype_name(tensor.dtype)] += 1
            state[name] = tensor.to(dtype) if tensor.is_floating_point() else tensor
        trace.emit("weights", "progress", {"file": os.path.basename(path), "done": number, "total": len(paths)})
    return state, {"format": "pytorch (weights_only)", "stored_dtypes": dict(stored), "unexpected": unexpected,
                   "file_bytes": sum(os.path.getsize(p) for p in paths), "shards": len(paths)}


def load_weights(model_class, model_config, files: dict, config: dict, dtype: torch.dtype, trace: Trace,
                 tied: dict | None = None, reader: gguf.GGUFReader | None = None) -> tuple[torch.nn.Module, dict]:
    """Build the model's skeleton on the meta device, then read the checkpoint into a CPU state dict of
    `dtype`, checked against the skeleton's parameter names. Returns (skeleton, state dict).

    `files` is {"gguf": path} or {"safetensors": [paths]} or {"bin": [paths]}. A weight the architecture
    needs and the checkpoint lacks is an error: explain never shows numbers from random initialisation.
    """
    start, t0 = time.time(), time.perf_counter()
    with init_empty_weights(include_buffers=False):  # names and shapes only, no memory
        model = model_class(model_config)
    skeleton_time = time.perf_counter() - t0
    tied = tied or {}  # target -> source, e.g. lm_head.weight -> model.embed_tokens.weight
    expected = [n for n, _ in model.named_parameters(remove_duplicate=False)] + \
               [n for n, b in model.named_buffers() if _persistent(model, n)]
    if "gguf" in files:
        path = files["gguf"]
        state, facts = read_gguf(reader or gguf_reader(path), path, expected, config, trace, dtype)
        paths = [path]
    elif "safetensors" in files:
        paths = files["safetensors"]
        state, facts = read_safetensors(paths, expected, trace, dtype, getattr(model, "base_model_prefix", None))
    else:
        paths = files["bin"]
        state, facts = read_pytorch_bin(paths, expected, trace, dtype, getattr(model, "base_model_prefix", None))
    for target, source in tied.items():  # a tied pair stored under the other name (safetensors' save_model
        if source not in state and target in state:  # keeps lm_head.weight); transformers loads it too
            state[source] = state.pop(target)
    tied_used = {k: v for k, v in tied.items() if v in state}
    for name in tied_used:
        state.pop(name, None)  # a tied copy in the checkpoint is ignored, as transformers does
    missing = [n for n in expected if n not in state and n not in tied_used]
    shapes = {n: list(t.shape) for n, t in list(model.named_parameters()) + list(model.named_buffers())}
    mismatched = {n: {"checkpoint": list(t.shape), "config": shapes[n]} for n, t in state.items()
                  if n in shapes and list(t.shape) != shapes[n]}
    data = dict(facts, files=[os.path.basename(p) for p in paths], tensors=len(state),
                bytes=sum(t.numel() * t.element_size() for t in state.values()),
                parameters=sum(t.numel() for t in state.values()), dtype=dtype_name(dtype),
                skeleton_seconds=skeleton_time, missing=missing, mismatched=mismatched, tied=tied_used,
                unexpected_count=len(facts["unexpected"]), backend="explain", model_class=model_class.__name__,
                source_file=inspect.getsourcefile(model_class))
    trace.emit("weights", "load", data, start=start, duration=time.perf_counter() - t0)
    if missing:
        raise ExplainError(f"the checkpoint ({', '.join(data['files'])}) lacks {len(missing)} weights that "
                           f"{config['architectures'][0]} with this config needs, e.g. {missing[:3]}; the config and "
                           "the weights do not belong together (check num_hidden_layers / the repo revision)")
    if mismatched:
        name, shape = next(iter(mismatched.items()))
        raise ExplainError(f"the checkpoint ({', '.join(data['files'])}) has {name} of shape {shape['checkpoint']} but "
                           f"{config['architectures'][0]} with this config needs {shape['config']} ({len(mismatched)} "
                           "tensors differ); the config and the weights do not belong together (check hidden_size, "
                           "intermediate_size and the head counts in config.json / the repo revision)")
    return model, state


def _persistent(model: torch.nn.Module, name: str) -> bool:
    module_name, _, buffer = name.rpartition(".")
    module = model.get_submodule(module_name) if module_name else model
    return buffer not in module._non_persistent_buffers_set


def safetensors_files(resolve, model: str, index_path: str | None) -> list[str]:
    """The shard files of a sharded checkpoint, from model.safetensors.index.json's weight_map."""
    from .config import read_json
    index = read_json(index_path, "safetensors index (model.safetensors.index.json)")
    if "weight_map" not in index:
        raise CorruptFileError(f"{index_path} has no \"weight_map\"; it is not a safetensors index")
    return [resolve(shard) for shard in sorted(set(index["weight_map"].values()))]
