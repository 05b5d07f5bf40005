"""What transformers loaded, read off the objects it built, in the data fields of explain's loading events.

    config_facts(config, generation_config, ...)   -> config/config
    tokenizer_facts(tokenizer, ...)                -> tokenizer/load
    weights_facts(model, report, files, ...)       -> weights/load
    placement_facts(model, plan, asked, ...)       -> placement/place

Nothing here loads or computes a model: each value is an attribute of transformers' config, tokenizer or model, the
loading report transformers wrote (LoadStateDictInfo), or a file's own header (safetensors, GGUF).
"""

from __future__ import annotations

import inspect
import json
import os
from collections import Counter

import torch

from ...generation.settings import GENERATE_DEFAULTS
from ...stages.config import KEY_HYPERPARAMETERS
from ...stages.placement import execution
from ...stages.tokenizer import NAMED_TOKENS, NO_LIMIT, component_name
from .quantized import tensor_bytes


def is_remote(obj) -> bool:
    """A class transformers loaded from a repository's own Python files (trust_remote_code=True)."""
    cls = obj if isinstance(obj, type) else type(obj)
    return cls.__module__.startswith("transformers_modules")


def source_file(obj) -> str | None:
    """The Python file that defines the class of `obj` (the modeling file that ran)."""
    cls = obj if isinstance(obj, type) else type(obj)
    try:
        return inspect.getsourcefile(cls)
    except (TypeError, OSError):
        return None


def dtype_name(dtype) -> str | None:
    return None if dtype is None else str(dtype).replace("torch.", "")


# -- config ------------------------------------------------------------------------------------------------------
def config_facts(
    config, generation_config, source: str | None, has_generation_file: bool, model_class: str | None = None
) -> dict:
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    values = text.to_dict()
    hyperparameters = {k: values[k] for k in KEY_HYPERPARAMETERS if k in values}
    rope = values.get("rope_parameters") or {}
    if "rope_theta" not in hyperparameters and isinstance(rope, dict) and "rope_theta" in rope:
        hyperparameters["rope_theta"] = rope["rope_theta"]
    generation, sources = {}, {}
    defaults_source = "generation_config.json" if has_generation_file else "model config"
    for key, default in GENERATE_DEFAULTS.items():
        value = getattr(generation_config, key, None) if generation_config is not None else None
        if isinstance(value, torch.Tensor):
            value = value.tolist()
        if value is None:  # transformers 5 leaves unset values None and applies generate()'s defaults at the call
            value, sources[key] = default, "transformers default"
        else:
            sources[key] = "transformers default" if value == default else defaults_source
        generation[key] = value
    architectures = getattr(config, "architectures", None) or [model_class]  # a GGUF config names none
    return {
        "source": source,
        "architecture": architectures[0],
        "model_type": config.model_type,
        "hyperparameters": hyperparameters,
        "checkpoint_dtype": dtype_name(getattr(config, "dtype", None)),
        "generation_config": generation,
        "generation_config_source": sources,
        "has_generation_config_file": has_generation_file,
        "config_class": type(config).__name__,
        "remote_code": is_remote(config),
    }


# -- tokenizer ---------------------------------------------------------------------------------------------------
def tokenizer_facts(tokenizer, source: str, path: str | None) -> dict:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    special = {}
    for name in NAMED_TOKENS:
        token = getattr(tokenizer, name, None)
        if token is not None:
            special[name] = {"token": str(token), "id": tokenizer.convert_tokens_to_ids(str(token))}
    added = [
        {"id": i, "token": t.content, "special": bool(t.special)}
        for i, t in sorted(tokenizer.added_tokens_decoder.items())
    ]
    empty = tokenizer("", add_special_tokens=True)["input_ids"]
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    merges = None
    if backend is not None:
        model = json.loads(backend.to_str()).get("model", {})
        merges = len(model["merges"]) if isinstance(model.get("merges"), list) else None
    template = tokenizer.chat_template
    max_length = tokenizer.model_max_length
    return {
        "path": path,
        "source": source,
        "model": type(backend.model).__name__ if backend is not None else None,
        "vocab_size": len(tokenizer),
        "num_merges": merges,
        "special_tokens": special,
        "added_tokens": added,
        "add_bos_token": bool(empty) and bos is not None and empty[0] == bos,
        "add_eos_token": bool(empty) and eos is not None and empty[-1] == eos,
        "model_max_length": None if max_length is None or max_length >= NO_LIMIT else max_length,
        "has_chat_template": template is not None,
        "chat_template": template,
        "normalizer": component_name(backend.normalizer) if backend is not None else None,
        "pre_tokenizer": component_name(backend.pre_tokenizer) if backend is not None else None,
        "post_processor": component_name(backend.post_processor) if backend is not None else None,
        "decoder": component_name(backend.decoder) if backend is not None else None,
        "tokenizer_class": type(tokenizer).__name__,
        "remote_code": is_remote(tokenizer),
    }


# -- weights -----------------------------------------------------------------------------------------------------
def checkpoint_format(paths: list[str]) -> str:
    names = [os.path.basename(p) for p in paths]
    if any(n.endswith(".gguf") for n in names):
        return "gguf"
    if any(n.endswith(".safetensors") for n in names):
        return "safetensors"
    if any(n.endswith((".bin", ".pt", ".pth")) for n in names):
        return "pytorch (weights_only)"
    return "unknown"


def stored_dtypes(paths: list[str], quantizer) -> tuple[dict, dict | None]:
    """(stored dtype -> tensors, GGUF quantisation type -> tensors or None), from the files' own headers."""
    weights = [p for p in dict.fromkeys(paths) if p.endswith((".safetensors", ".gguf"))]
    stored: Counter = Counter()
    for path in weights:
        if path.endswith(".safetensors"):
            import safetensors

            with safetensors.safe_open(path, framework="pt") as f:  # the header only
                for name in f.keys():
                    stored[
                        str(f.get_slice(name).get_dtype())
                        .lower()
                        .replace("bf16", "bfloat16")
                        .replace("f32", "float32")
                        .replace("f16", "float16")
                    ] += 1
        else:
            header = getattr(quantizer, "header", None)
            tensors = getattr(header, "tensors", None) if header is not None else None
            if tensors is None:
                from ...stages.config import gguf_reader

                tensors = gguf_reader(path).tensors
            import gguf

            for tensor in tensors:  # transformers' TensorInfo (ggml_type, an int) or gguf's ReaderTensor
                kind = getattr(tensor, "ggml_type", None)
                kind = tensor.tensor_type if kind is None else kind
                stored[gguf.GGMLQuantizationType(int(kind)).name] += 1
    counts = dict(stored)
    return counts, (counts if any(p.endswith(".gguf") for p in weights) else None)


def unique_tensors(model) -> list[tuple[str, torch.Tensor]]:
    """Each parameter and persistent buffer once (a tied weight under its first name)."""
    seen, out = set(), []
    for name, tensor in list(model.named_parameters()) + list(model.named_buffers()):
        if id(tensor) in seen:
            continue
        seen.add(id(tensor))
        out.append((name, tensor))
    return out


def tied_weights(model) -> dict:
    """{name: the name it shares its tensor with}, e.g. lm_head.weight -> model.embed_tokens.weight."""
    first: dict[int, str] = {}
    tied: dict[str, str] = {}
    for name, parameter in model.named_parameters(remove_duplicate=False):
        if id(parameter) in first:
            tied[name] = first[id(parameter)]
        else:
            first[id(parameter)] = name
    return tied


def quantization_facts(model) -> dict | None:
    config = getattr(model.config, "quantization_config", None)
    quantizer = getattr(model, "hf_quantizer", None)
    if config is None and quantizer is None:
        return None
    config = config if config is not None else getattr(quantizer, "quantization_config", None)
    as_dict = (
        config.to_dict()
        if config is not None and hasattr(config, "to_dict")
        else dict(config)
        if isinstance(config, dict)
        else {}
    )
    method = as_dict.get("quant_method") or getattr(config, "quant_method", None)
    return {
        "method": str(getattr(method, "value", method)),
        "config": as_dict,
        "quantizer": type(quantizer).__name__ if quantizer is not None else None,
    }


def adapter_facts(model) -> dict | None:
    """The PEFT adapters transformers loaded into the model (its PeftAdapterMixin keeps their configs in
    model.peft_config): name -> type, rank, alpha, target modules, the base model it was trained on."""
    configs = getattr(model, "peft_config", None)
    if not configs:
        return None
    out = {}
    for name, config in configs.items():
        targets = getattr(config, "target_modules", None)
        out[name] = {
            "peft_type": str(getattr(config.peft_type, "value", config.peft_type)),
            "r": getattr(config, "r", None),
            "lora_alpha": getattr(config, "lora_alpha", None),
            "target_modules": sorted(targets) if isinstance(targets, (set, list, tuple)) else targets,
            "base_model": getattr(config, "base_model_name_or_path", None),
        }
    return out


def weights_facts(model, report, files: list[str], seconds: float | None) -> dict:
    files = list(dict.fromkeys(files))  # transformers may resolve a file twice (a GGUF file: config, then weights)
    tensors = unique_tensors(model)
    parameters = [t for _, t in tensors if isinstance(t, torch.nn.Parameter)]
    dtypes = Counter(dtype_name(t.dtype) for t in parameters)
    stored, quant_types = stored_dtypes(files, getattr(model, "hf_quantizer", None))
    missing = sorted(getattr(report, "missing_keys", None) or [])
    unexpected = sorted(getattr(report, "unexpected_keys", None) or [])
    mismatched = {
        name: {"checkpoint": list(checkpoint), "config": list(expected)}
        for name, checkpoint, expected in sorted(getattr(report, "mismatched_keys", None) or [])
    }
    data = {
        "format": checkpoint_format(files),
        "files": [os.path.basename(p) for p in files],
        "shards": sum(1 for p in files if p.endswith((".safetensors", ".bin"))) or None,
        "file_bytes": sum(os.path.getsize(p) for p in files if os.path.isfile(p)),
        "stored_dtypes": stored,
        "tensors": len(tensors),
        "bytes": sum(tensor_bytes(t) for _, t in tensors),  # a quantized tensor's inner tensors
        "parameters": sum(t.numel() for t in parameters),
        "dtype": dtypes.most_common(1)[0][0] if dtypes else None,
        "parameter_dtypes": dict(dtypes),
        "skeleton_seconds": None,
        "missing": missing,
        "mismatched": mismatched,
        "tied": tied_weights(model),
        "unexpected": unexpected,
        "unexpected_count": len(unexpected),
        "error_msgs": list(getattr(report, "error_msgs", None) or []),
        "conversion_errors": dict(getattr(report, "conversion_errors", None) or {}),
        "quantization": quantization_facts(model),
        "adapters": adapter_facts(model),
        "model_class": type(model).__name__,
        "source_file": source_file(model),
        "remote_code": is_remote(model),
        "backend": "transformers",
        "seconds": seconds,
    }
    if quant_types is not None:
        data["quantization_types"] = quant_types
    return data


# -- placement ---------------------------------------------------------------------------------------------------
AUTO_STRATEGIES = ("auto", "balanced", "balanced_low_0", "sequential")


def _where(name: str, device_map: dict) -> str:
    """The device of the longest device-map prefix owning `name` (accelerate's rule)."""
    best = None
    for module in device_map:
        if module == "" or name == module or name.startswith(module + "."):
            if best is None or len(module) > len(best):
                best = module
    where = device_map.get(best, "cpu") if best is not None else "cpu"
    return f"cuda:{where}" if isinstance(where, int) else str(where)


def hooks_facts(model) -> dict:
    """accelerate's hooks on the model's modules: how many, of which class, how many offload their weights."""
    classes, offload = Counter[str](), list[str]()
    for name, module in model.named_modules():
        hook = getattr(module, "_hf_hook", None)
        if hook is None:
            continue
        for single in getattr(hook, "hooks", None) or [hook]:
            classes[type(single).__name__] += 1
            if getattr(single, "offload", False):
                offload.append(name)
    return {"count": sum(classes.values()), "classes": dict(classes), "offloading_modules": len(offload)}


def placement_facts(model, asked: dict, plan: dict) -> dict:
    device_map = getattr(model, "hf_device_map", None)
    if device_map:
        device_map = {k: (v if isinstance(v, (int, str)) else str(v)) for k, v in device_map.items()}
    else:
        first = next((p for p in model.parameters() if p.device.type != "meta"), None)
        device_map = {"": str(first.device) if first is not None else "cpu"}
    asked_map = asked.get("device_map")
    if isinstance(asked_map, str) and asked_map in AUTO_STRATEGIES:
        strategy = asked_map
    elif isinstance(asked_map, dict):
        strategy = "given"
    else:
        strategy = "single device"
    tensors = unique_tensors(model)
    per_device: dict = {}
    layers, modules = {}, {}
    for name, tensor in tensors:
        where = _where(name, device_map)
        per_device[where] = per_device.get(where, 0) + tensor_bytes(tensor)
    for name, child in model.named_children():
        if any(True for _ in child.parameters()):
            first = next(n for n, _ in child.named_parameters())
            modules[name] = _where(f"{name}.{first}", device_map)
    for name, module in model.named_modules():
        depth = name.count(".")
        if name and name.split(".")[-1].isdigit() and depth <= 2 and any(True for _ in module.parameters()):
            layers[name] = _where(name, device_map)
    devices = sorted({str(v) if not isinstance(v, int) else f"cuda:{v}" for v in device_map.values()})
    runs = execution(model, device_map)  # where each module runs, as explain's placement reads accelerate's hooks
    offloaded = runs["offloaded"]
    hooks = hooks_facts(model)
    if strategy in AUTO_STRATEGIES:
        memory = plan.get("max_memory")
        reason = (
            f"accelerate's infer_auto_device_map filled {', '.join(map(str, memory or {}))} in order within "
            f"max_memory, keeping each {', '.join(getattr(model, '_no_split_modules', None) or ['module'])} "
            "whole"
            + (
                f"; {len(offloaded)} module(s) offloaded ({', '.join(offloaded[:3])}"
                f"{', ...' if len(offloaded) > 3 else ''}), moved in by accelerate's hooks at each "
                "forward"
                if offloaded
                else ""
            )
        )
    elif strategy == "given":
        reason = "device_map given by the caller"
    else:
        reason = (
            "no device given: transformers' default is the CPU"
            if asked.get("device") is None and asked_map is None
            else f"everything on {devices[0]}, as asked"
        )
    return {
        "asked": {
            "device": None if asked.get("device") is None else str(asked.get("device")),
            "device_map": asked_map if not isinstance(asked_map, dict) else "dict",
        },
        "no_split_module_classes": list(getattr(model, "_no_split_modules", None) or []),
        "dtype": dtype_name(model.dtype),
        "strategy": strategy,
        "max_memory_asked": asked.get("max_memory"),
        "device_map": device_map,
        "reason": reason,
        "devices": devices,
        "bytes_per_device": per_device,
        "tied": tied_weights(model),
        "modules": modules,
        "layers": layers,
        "hooks": hooks,
        "offload_folder": asked.get("offload_folder"),
        **runs,
        **({"max_memory": plan["max_memory"]} if plan.get("max_memory") is not None else {}),
    }
