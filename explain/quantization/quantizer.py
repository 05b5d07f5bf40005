"""One quantized load: which tensors stay quantized, the layers that replace nn.Linear, and the event about it.

    pipeline(quantization=...)
      -> Quantizer.take_gguf(name, tensor, heads)  (weights stage, per GGUF tensor: keep the blocks as stored?)
      -> load_weights checks kept tensors' names and shapes like the others
      -> Quantizer.install(model, state, tied)      (replace each linear by its quantized layer; what cannot be
                                                     quantized stays in float, with the reason)
      -> placement
      -> Quantizer.emit(model, trace)              (weights/quantize: bytes per type before and after, memory)

Like transformers' quantizers (transformers/quantizers/base.py, get_keys_to_not_convert), an on-load method
leaves the output head and tied weights in float; a GGUF file's own quantized head is kept as the file has it.
"""

from __future__ import annotations

import time
from collections import Counter
from functools import partial

import torch
from torch import nn

from ..formats.gguf_format import release_pages, reverse_permute
from ..trace import Trace
from ..utils.dtypes import dtype_name
from .blocks import permute_rows, unpack
from .linear import INT8_IN_MULTIPLE, QuantizedLinear, int8_shape_problem
from .memory import process_memory, release_freed_memory
from .methods import GGUF_KINDS, Method

# a conversion's temporaries (the unpacked integers, their int32 copy for the packing kernel: ~6 MB for a 576 x 1536
# matrix) stay in glibc's heap once freed; handed back every 4 tensors they add at most ~25 MB to the load's peak
# (every 32: 30-60 MB more, varying run to run; every tensor: ~5 MB less, but 1 s more per load of the embedded model)
TRIM_EVERY = 4
FORMS = {  # activations dtype -> (form, what it is), for the GGUF method
    torch.bfloat16: (
        "fast",
        "bfloat16 activations; the scales and zeros are rounded to bfloat16, so the products "
        "differ from the float32 model's by about as much as a plain bfloat16 load does",
    ),
    torch.float32: (
        "exact",
        "float32 activations, scales and zeros: the products equal a float32 product with "
        "the dequantized weights up to float32 rounding (slow: torch's int4 CPU kernel is "
        "tuned for bfloat16)",
    ),
    torch.float16: (
        "float16",
        "float16 activations; d is a float16 in the file, so the scales are exact, but "
        "torch's int4 CPU kernel is slow in float16",
    ),
}


class Quantizer:
    def __init__(self, method: Method, dtype: torch.dtype, reader=None):
        self.method, self.dtype, self.reader = method, dtype, reader
        self.kept: dict[str, tuple] = {}  # name -> (GGUF reader tensor, permuted heads or None), in file order
        self.conversions: Counter = Counter()  # (from, to, float round trip, reason) -> tensors
        self.before: Counter = Counter()  # stored kind -> bytes, before quantization
        self.left_in_float: dict[str, str] = {}  # name -> why it was not quantized
        self.stored: dict[str, str] = {}  # name -> its GGUF type, for every tensor the GGUF file gave
        self.start, self.seconds = time.time(), 0.0  # when and how long install() ran

    # -- weights stage: keep GGUF blocks as stored ----------------------------------------------------------------
    def take_gguf(self, name: str, tensor, heads: int | None) -> bool:
        self.stored[name] = tensor.tensor_type.name
        if (
            self.method.reads != "gguf"
            or tensor.tensor_type.name not in GGUF_KINDS
            or not name.endswith(".weight")
            or len(tensor.shape) != 2
        ):
            return False
        self.kept[name] = (tensor, heads)
        return True

    def kept_shapes(self) -> dict:
        """name -> [out_features, in_features] of the kept tensors (GGUF lists dimensions innermost first)."""
        return {name: [int(d) for d in reversed(tensor.shape)] for name, (tensor, _) in self.kept.items()}

    def kept_bytes(self) -> int:
        return sum(int(tensor.n_bytes) for tensor, _ in self.kept.values())

    # -- between weights and placement ---------------------------------------------------------------------------
    def install(self, model: nn.Module, state: dict, tied: dict) -> None:
        """Replace linears by quantized layers (their tensors leave `state`); others stay in `state` as floats."""
        t0 = time.perf_counter()
        self.start = time.time()
        tied_names = set(tied) | set(tied.values())
        if self.method.reads == "gguf":
            self._install_gguf(model, state, tied_names)
        else:
            self._install_on_load(model, state, tied_names)
        self.seconds += time.perf_counter() - t0

    def _install_gguf(self, model, state, tied_names):
        if self.reader is not None:
            for tensor in self.reader.tensors:  # the file as stored, every tensor explain reads or not
                self.before[tensor.tensor_type.name] += int(tensor.n_bytes)
        shapes = self.kept_shapes()
        for index, (name, (tensor, heads)) in enumerate(self.kept.items()):
            if index % TRIM_EVERY == TRIM_EVERY - 1:
                release_freed_memory()  # each conversion's temporaries, so they do not pile up as free heap
            kind = tensor.tensor_type.name
            out_features, _ = shapes[name]
            blocks = unpack(tensor.data, kind, rows=out_features)  # copies: the blocks hold no view of the file
            release_pages(tensor)  # so its pages of the mapped file leave the process (the load's peak)
            if heads is not None:  # llama.cpp's converter permuted these rows; whole blocks move, so it is exact
                blocks = permute_rows(blocks, partial(reverse_permute, n_head=heads))
            module_name = name.removesuffix(".weight")
            reason = self._why_not(model, module_name, name, tied_names, kind)
            if reason is None:
                layer = self.method.layer(blocks, self.dtype, state.pop(module_name + ".bias", None))
                _replace(model, module_name, layer)
                self.conversions[(kind, self.method.conversions[kind], False, "")] += 1
            else:  # no kernel takes it here: the format's own float32 values, cast to the activations' dtype
                state[name] = blocks.dequantize(self.dtype)
                del blocks
                release_freed_memory()  # a large table (the embedding): its integers and float32 rows, freed
                self.left_in_float[name] = reason
                self.conversions[(kind, f"{dtype_name(self.dtype)} (dequantized once)", True, reason)] += 1
        for name, tensor in state.items():
            if name not in self.left_in_float:
                self.conversions[(self.stored.get(name, "float"), dtype_name(tensor.dtype), False, "")] += 1

    def _install_on_load(self, model, state, tied_names):
        for tensor in state.values():
            self.before[dtype_name(tensor.dtype)] += tensor.numel() * tensor.element_size()
        for module_name, module in list(model.named_modules()):
            name = module_name + ".weight"
            if not isinstance(module, nn.Linear) or name not in state:
                continue
            reason = self._why_not(model, module_name, name, tied_names, "float")
            if reason is None and module_name.split(".")[-1] == "lm_head":
                reason = (
                    "the output head stays in float, as transformers' quantizers leave it (get_keys_to_not_convert)"
                )
            if reason is not None:
                self.left_in_float[name] = reason
                continue
            weight = state.pop(name)
            layer = self.method.layer(weight, self.dtype, state.pop(module_name + ".bias", None))
            _replace(model, module_name, layer)
            self.conversions[(dtype_name(weight.dtype), self.method.conversions["float"], False, "")] += 1

    def _why_not(self, model, module_name, name, tied_names, kind) -> str | None:
        try:
            module = model.get_submodule(module_name)
        except AttributeError:
            return "no module of that name"
        if not isinstance(module, nn.Linear):
            return (
                f"{type(module).__name__} is a lookup table, not a matrix product: its rows are read as "
                f"{dtype_name(self.dtype)}"
                if isinstance(module, nn.Embedding)
                else f"{type(module).__name__} is not nn.Linear"
            )
        if name in tied_names:
            return "tied to another weight: kept in float for both uses"
        four_bit = kind in ("Q4_0", "Q4_1") or (kind == "float" and self.method.bits == 4)
        if four_bit and (module.out_features % 16 or module.in_features % 32):
            return (
                f"{module.out_features} x {module.in_features}: torch's int4 packing needs out_features divisible "
                "by 16 and in_features by 32"
            )
        if kind == "float" and self.method.bits == 8 and module.in_features % INT8_IN_MULTIPLE:
            return int8_shape_problem(module.out_features, module.in_features)
        return None

    # -- after placement --------------------------------------------------------------------------------------
    def emit(self, model: nn.Module, trace: Trace, parameters: int) -> dict:
        after, modules, kernels, seen = Counter[str](), Counter[str](), {}, set()
        for module in model.modules():
            if isinstance(module, QuantizedLinear):
                modules[type(module).__name__] += 1
                kernels[type(module).__name__] = module.kernel
                for part, size in module.storage().items():
                    after[part] += size
        for name, tensor in list(model.named_parameters()) + _persistent_buffers(model):
            owner = model.get_submodule(name.rpartition(".")[0]) if "." in name else model
            if isinstance(owner, QuantizedLinear) and name.rpartition(".")[2] != "bias" or tensor.data_ptr() in seen:
                continue
            seen.add(tensor.data_ptr())
            after[dtype_name(tensor.dtype)] += tensor.numel() * tensor.element_size()
        form, label = self.form()
        float32_bytes = parameters * 4
        data = {
            "method": self.method.name,
            "summary": self.method.summary,
            "form": form,
            "label": label,
            "compute_dtype": dtype_name(self.dtype),
            "modules": dict(modules),
            "kernels": kernels,
            "conversions": [
                {"from": source, "to": target, "tensors": count, "float_round_trip": round_trip, "reason": reason}
                for (source, target, round_trip, reason), count in self.conversions.items()
            ],
            "left_in_float": self.left_in_float,
            "bytes_before": dict(self.before),
            "bytes_after": dict(after),
            "total_before": sum(self.before.values()),
            "total_after": sum(after.values()),
            "float32_bytes": float32_bytes,
            "parameters": parameters,
            "ratio_to_float32": sum(after.values()) / float32_bytes if float32_bytes else None,
            "bits_per_parameter": 8 * sum(after.values()) / parameters if parameters else None,
            "process_memory": process_memory(),
            "seconds": self.seconds,
        }
        trace.emit("weights", "quantize", data, start=self.start, duration=self.seconds)
        return data

    def form(self) -> tuple[str, str]:
        if self.method.reads == "gguf":
            return FORMS.get(self.dtype, (dtype_name(self.dtype), f"{dtype_name(self.dtype)} activations"))
        return (dtype_name(self.dtype), f"{self.method.summary}; {dtype_name(self.dtype)} activations")


def _replace(model: nn.Module, module_name: str, layer: nn.Module) -> None:
    parent, _, child = module_name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, layer)


def _persistent_buffers(model: nn.Module) -> list:
    out = []
    for module_name, module in model.named_modules():
        for name, buffer in module.named_buffers(recurse=False):
            if buffer is not None and name not in module._non_persistent_buffers_set:
                out.append((f"{module_name}.{name}" if module_name else name, buffer))
    return out


def bits(layer: QuantizedLinear) -> float:
    """Stored bits per weight of one quantized layer, scales included."""
    return 8 * sum(layer.storage().values()) / (layer.in_features * layer.out_features)
