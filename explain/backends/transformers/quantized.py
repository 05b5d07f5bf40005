"""transformers' own quantized weights and PEFT adapters, read off the loaded model as explain's weights events.

    model_kwargs={"quantization_config": TorchAoConfig(...) / QuantoConfig(...) / BitsAndBytesConfig(...)}
        transformers' HfQuantizer replaces each linear weight while it loads: torchao by a tensor subclass
        (Int8Tensor, Int4OpaqueTensor, ...) inside the same nn.Linear, quanto by a QLinear holding a QTensor
    -> quantize_facts(model, files)        the weights/quantize event, in the schema the explain backend fills

    model=<a PEFT adapter folder> (transformers' PeftAdapterMixin.load_adapter), or a peft PeftModel
        peft's LoRA layers wrap the base linears: lora_A / lora_B per adapter name, scaling per adapter name
    -> adapter_facts(model, ...)           the weights/adapter event, in the schema explain.adapters fills

The quantized tensors keep their integer values and scales as inner tensors (torch's __tensor_flatten__, which
torchao's TorchAOBaseTensor and quanto's QTensor implement): bytes_after is the sum of those inner tensors' bytes,
measured, as the explain backend sums its quantized layers' buffers. bytes_before is what the checkpoint files
store (their headers), so the event says what the file held and what memory holds.
"""

from __future__ import annotations

import inspect
import os
from collections import Counter
from typing import Any

import torch
from torch import nn

from ...quantization.memory import process_memory
from ...utils.dtypes import dtype_name


# -- quantized tensors -------------------------------------------------------------------------------------------
def is_quantized(tensor) -> bool:
    """A tensor subclass holding its data as inner tensors (torchao's, quanto's), not a plain float tensor."""
    data = tensor.data if isinstance(tensor, nn.Parameter) else tensor
    return type(data) is not torch.Tensor and hasattr(data, "__tensor_flatten__")


def inner_tensors(tensor, prefix: str = "") -> list[tuple[str, torch.Tensor]]:
    """(name, plain tensor) for every tensor a quantized tensor stores, through nested subclasses (quanto's int4
    values are a PackedTensor inside a WeightQBitsTensor): e.g. [("qdata", uint8 ...), ("scale_and_zero", ...)]."""
    data = tensor.data if isinstance(tensor, nn.Parameter) else tensor
    if not is_quantized(data):
        return [(prefix or "data", data)]
    # torch's protocol for tensor subclasses, which quantized tensors are; the stub of Tensor does not declare it
    names, _ = data.__tensor_flatten__()  # type: ignore[union-attr]
    out = []
    for name in names:
        inner = getattr(data, name)
        if inner is not None:
            out += inner_tensors(inner, f"{prefix}.{name}" if prefix else name)
    return out


def tensor_bytes(tensor) -> int:
    """The bytes a parameter really holds: a quantized one's inner tensors, a plain one's numel x element size."""
    return sum(storage_of(tensor).values()) if is_quantized(tensor) else tensor.numel() * tensor.element_size()


def storage_of(tensor) -> dict[str, int]:
    """Bytes of each stored part, keyed as the view shows them: "qdata (int8)", "scale (float32)"."""
    parts: Counter = Counter()
    for name, inner in inner_tensors(tensor):
        parts[f"{name.split('.')[0].lstrip('_')} ({dtype_name(inner.dtype)})"] += inner.numel() * inner.element_size()
    return dict(parts)


# the op each quantized tensor class runs its matrix products in, as its own linear dispatch picks it (on CPU)
KERNELS = {
    "Int8Tensor": "torch.mm on the int8 values cast to the activations' dtype, times one scale per output row "
    "(torchao Int8Tensor's linear, weight-only branch: torchao/quantization/quantize_/workflows/int8/"
    "int8_tensor.py)",
    "Int4OpaqueTensor": "aten._weight_int4pack_mm_for_cpu (torchao's Int4OpaqueTensor: torch's int4 CPU kernel, the "
    "one explain's Int4Linear calls)",
    "WeightQBytesTensor": "quanto::qbytes_mm: torch._weight_int8pack_mm with bfloat16 activations, else a float matmul "
    "of the activations with the scaled int8 values (optimum/quanto/library/qbytes_mm.py)",
    "WeightQBitsTensor": "quanto's WeightQBitsTensor linear: the int4 values unpacked and dequantized (scale, shift), "
    "then a float matmul (optimum/quanto/tensor/weights/qbits.py)",
}


def config_name(config) -> str:
    """ "TorchAoConfig(Int8WeightOnlyConfig)", "QuantoConfig(weights=int8)", "BitsAndBytesConfig(4-bit nf4)"."""
    name = type(config).__name__
    quant_type = getattr(config, "quant_type", None)
    if quant_type is not None:
        inner = quant_type if isinstance(quant_type, str) else type(quant_type).__name__
        group = getattr(quant_type, "group_size", None)
        return f"{name}({inner}" + (f", group_size={group}" if group else "") + ")"
    if getattr(config, "weights", None) is not None:
        return f"{name}(weights={config.weights})"
    if getattr(config, "load_in_4bit", False):
        return f"{name}(4-bit {getattr(config, 'bnb_4bit_quant_type', '')})".replace(" )", ")")
    if getattr(config, "load_in_8bit", False):
        return f"{name}(8-bit)"
    return name


def _skip_reason(module_name: str, module: nn.Module, quantizer, config, model) -> str:
    """Why transformers left this linear in float."""
    from transformers.quantizers import base

    skipped = set(getattr(quantizer, "modules_to_not_convert", None) or [])
    asked = set(getattr(config, "modules_to_not_convert", None) or [])
    line = inspect.getsourcelines(base.get_keys_to_not_convert)[1]
    if module_name in asked:
        return "named in quantization_config.modules_to_not_convert"
    if module_name in set(getattr(model, "_keep_in_fp32_modules", None) or []):
        return f"{type(model).__name__}._keep_in_fp32_modules keeps it in float32"
    if module_name in skipped:
        return (
            f"{type(quantizer).__name__}.modules_to_not_convert: transformers' get_keys_to_not_convert leaves "
            f"the output head, the last module and tied weights in float (transformers/quantizers/base.py line "
            f"{line})"
        )
    group = getattr(getattr(config, "quant_type", None), "group_size", None)
    in_features = getattr(module, "in_features", None)
    if group and in_features and in_features % group:
        return f"in_features {in_features} is not a multiple of group_size {group}: torchao leaves it in float"
    return f"{type(quantizer).__name__ if quantizer is not None else 'the quantizer'} did not convert it"


def quantize_facts(model, files: list[str] | None) -> dict | None:
    """The weights/quantize event for a model transformers quantized on load, or None if it is not quantized.
    `files`: the checkpoint files it loaded, whose headers say what they stored (None: not known)."""
    config = getattr(model.config, "quantization_config", None)
    quantizer = getattr(model, "hf_quantizer", None)
    if config is None and quantizer is None:
        return None
    stored = stored_tensors(files) if files else None  # read only for a quantized model, not on every load
    config = config if config is not None else getattr(quantizer, "quantization_config", None)
    method = getattr(config, "quant_method", None)
    method = str(getattr(method, "value", method) or type(config).__name__)
    modules, kernels, conversions, after = Counter[str](), {}, Counter[tuple](), Counter[str]()
    left_in_float, seen, parameters, first_names = {}, set(), 0, dict[int, str]()
    for module_name, module in model.named_modules():
        for name, tensor in module.named_parameters(recurse=False):
            full = f"{module_name}.{name}" if module_name else name
            if id(tensor) in seen:  # a tied weight, counted under its first name
                if name == "weight" and isinstance(module, nn.Linear) and not is_quantized(tensor):
                    left_in_float[full] = f"tied to {first_names[id(tensor)]}: " + _skip_reason(
                        module_name, module, quantizer, config, model
                    )
                continue
            first_names[id(tensor)] = full
            seen.add(id(tensor))
            parameters += tensor.numel()
            if is_quantized(tensor):
                kind = type(tensor.data).__name__
                modules[f"{type(module).__name__} ({kind} {name})"] += 1
                kernels[kind] = KERNELS.get(kind, f"{type(tensor.data).__module__}.{kind}'s own linear")
                for part, size in storage_of(tensor).items():
                    after[part] += size
                # a float checkpoint quantized once, or a checkpoint saved quantized, whose parts have other names
                # (transformers refuses a quantization_config with a GGUF file: no dequantized round trip here)
                source = (stored or {}).get(full, ("stored in parts" if stored else "not known", 0))[0]
                conversions[(source, f"{kind} ({config_name(config)})", False, "")] += 1
                continue
            after[dtype_name(tensor.dtype)] += tensor.numel() * tensor.element_size()
            if name == "weight" and isinstance(module, nn.Linear):
                left_in_float[full] = _skip_reason(module_name, module, quantizer, config, model)
    for name, buffer in model.named_buffers():
        owner, _, short = name.rpartition(".")
        holder = model.get_submodule(owner) if owner else model
        if short in holder._non_persistent_buffers_set or id(buffer) in seen:
            continue
        seen.add(id(buffer))
        after[dtype_name(buffer.dtype)] += buffer.numel() * buffer.element_size()
    before = Counter[str]()
    for kind, size in (stored or {}).values():
        before[kind] += size
    compute = dtype_name(model.dtype)
    float32_bytes, total_after = parameters * 4, sum(after.values())
    import transformers

    data = {
        "method": method,
        "summary": f"transformers {transformers.__version__}: quantization_config="
        f"{config_name(config)}, "
        + (
            f"read as saved by {type(quantizer).__name__} (a quantized checkpoint)"
            if getattr(quantizer, "pre_quantized", False)
            else f"applied by {type(quantizer).__name__} on load"
        ),
        "form": compute,
        "label": f"{config_name(config)}; {compute} activations",
        "compute_dtype": compute,
        "modules": dict(modules),
        "kernels": kernels,
        "conversions": [
            {"from": source, "to": target, "tensors": count, "float_round_trip": round_trip, "reason": reason}
            for (source, target, round_trip, reason), count in conversions.items()
        ],
        "left_in_float": left_in_float,
        "bytes_before": dict(before),
        "bytes_after": dict(after),
        "total_before": sum(before.values()),
        "total_after": total_after,
        "float32_bytes": float32_bytes,
        "parameters": parameters,
        "ratio_to_float32": total_after / float32_bytes if float32_bytes else None,
        "bits_per_parameter": 8 * total_after / parameters if parameters else None,
        "process_memory": process_memory(),
        "backend": "transformers",
        "config": _config_dict(config),
        "quantizer": type(quantizer).__name__ if quantizer is not None else None,
        "bytes_before_source": "checkpoint files",
    }
    if not stored:  # a model given or attached: explain did not see its files, so what they held is not known
        for key in ("bytes_before", "total_before", "bytes_before_source"):
            del data[key]
    return data


def _config_dict(config) -> dict:
    import json

    try:
        as_dict = config.to_dict() if hasattr(config, "to_dict") else dict(config)
        return json.loads(json.dumps(as_dict, default=str))  # enums, torch dtypes and AOBaseConfigs as text
    except (TypeError, ValueError):
        return {"repr": repr(config)[:500]}


def stored_tensors(paths: list[str]) -> dict[str, tuple[str, int]]:
    """tensor name -> (stored type, bytes), from the checkpoint files' headers (safetensors: dtype and shape;
    GGUF: the block type and its bytes). The names are the checkpoint's (GGUF's are llama.cpp's)."""
    out = {}
    for path in dict.fromkeys(paths):
        if path.endswith(".safetensors") and os.path.isfile(path):
            import safetensors

            with safetensors.safe_open(path, framework="pt") as f:  # the header only
                for name in f.keys():
                    piece = f.get_slice(name)
                    dtype = getattr(torch, _SAFETENSORS_DTYPES.get(piece.get_dtype(), "float32"))
                    count = 1
                    for size in piece.get_shape():
                        count *= size
                    out[name] = (dtype_name(dtype), count * torch.empty((), dtype=dtype).element_size())
        elif path.endswith(".gguf") and os.path.isfile(path):
            from ...stages.config import gguf_reader

            for tensor in gguf_reader(path).tensors:
                out[tensor.name] = (tensor.tensor_type.name, int(tensor.n_bytes))
    return out


_SAFETENSORS_DTYPES = {
    "F64": "float64",
    "F32": "float32",
    "F16": "float16",
    "BF16": "bfloat16",
    "I64": "int64",
    "I32": "int32",
    "I16": "int16",
    "I8": "int8",
    "U8": "uint8",
    "BOOL": "bool",
}


# -- PEFT adapters -----------------------------------------------------------------------------------------------
def lora_layers(model) -> dict[str, Any]:
    """module name (the checkpoint's, without PeftModel's "base_model.model.") -> peft's LoRA layer (Any: peft's
    types do not declare its lora_A, lora_B and scaling, set per adapter)."""
    try:
        from peft.tuners.lora import LoraLayer
    except ImportError:
        return {}
    from ...adapters import PREFIX

    return {
        name.removeprefix(PREFIX): module for name, module in model.named_modules() if isinstance(module, LoraLayer)
    }


def adapter_facts(model, path: str | None = None, base_parameters: int | None = None) -> list[dict]:
    """One weights/adapter event's data per LoRA adapter in the model (peft's layers, whichever way they came:
    transformers' load_adapter or a PeftModel), in the schema explain.adapters emits."""
    from ...adapters import LoraSettings, adapter_event, delta_facts

    layers = lora_layers(model)
    configs = getattr(model, "peft_config", None) or {}
    if not layers or not configs:
        return []
    import peft

    if base_parameters is None:
        base_parameters = sum(p.numel() for n, p in model.named_parameters() if "lora_" not in n)
    out = []
    for adapter, config in configs.items():
        if str(getattr(config.peft_type, "value", config.peft_type)).upper() != "LORA":
            continue
        facts = []
        for name, layer in layers.items():
            if adapter not in layer.lora_A:
                continue
            pair = {"lora_A": layer.lora_A[adapter].weight.detach(), "lora_B": layer.lora_B[adapter].weight.detach()}
            facts.append(delta_facts(name, pair, layer.get_base_layer(), float(layer.scaling[adapter])))
        if not facts:
            continue
        merged = all(
            adapter in getattr(layer, "merged_adapters", [])
            for name, layer in layers.items()
            if adapter in layer.lora_A
        )
        settings = LoraSettings(
            r=config.r,
            lora_alpha=config.lora_alpha,
            use_rslora=bool(config.use_rslora),
            target_modules=config.target_modules,
            base_model_name_or_path=config.base_model_name_or_path,
        )
        how = (
            "transformers' PeftAdapterMixin.load_adapter"
            if not isinstance(model, peft.PeftModel)
            else "a peft PeftModel"
        )
        out.append(
            adapter_event(
                adapter,
                str(path) if path else f"(in memory: peft adapter {adapter!r})",
                settings,
                facts,
                f"peft {peft.__version__} ({how})",
                base_parameters,
                merged,
            )
        )
    return out


def emit_weights_details(
    trace,
    model,
    files: list[str] | None,
    adapter_path: str | None = None,
    start: float | None = None,
    given: bool = False,
) -> None:
    """After weights/load: weights/quantize when transformers quantized the model, weights/adapter per LoRA adapter.
    `files`: the checkpoint files it loaded (None: a model given or attached, whose files explain did not see)."""
    import time

    now = time.time() if start is None else start
    data = quantize_facts(model, files)
    if data is not None:
        trace.emit("weights", "quantize", dict(data, given=True) if given else data, start=now)
    for data in adapter_facts(model, adapter_path):
        trace.emit("weights", "adapter", dict(data, given=True) if given else data, start=now)
