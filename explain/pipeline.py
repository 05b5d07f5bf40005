"""`explain.pipeline(...)`: transformers' pipeline call, each loading stage run for real and traced.

    registry -> config (files from the Hub cache or a folder, then config.json or GGUF metadata)
             -> tokenizer -> weights -> placement
"""

from __future__ import annotations

import difflib
import inspect
import os
import warnings

import torch

from . import hub, registry
from .backends import check_backend, transformers_backend
from .config import folder_has_gguf, gguf_reader, load_config
from .embedded import ensure_provisioned
from .dtypes import dtype_name, runnable_dtype
from .errors import ArgumentError, ExplainError, NotCachedError, UnsupportedError
from .formats import find_weights
from .inputs import check_batch_size
from .models import model_class
from .placement import AUTO_STRATEGIES, normalise_device, place
from .quantization import check as quantization_method
from .quantization import make_quantizer
from .quantization.memory import release_freed_memory
from .tokenizer import Tokenizer, load_tokenizer
from .trace import Trace
from .weights import load_weights, model_config_from

# transformers.pipeline's own arguments that do not apply to a text-only pipeline; accepted and ignored
IGNORED_ARGUMENTS = ("feature_extractor", "image_processor", "processor", "video_processor", "use_fast",
                     "framework", "pipeline_class", "num_workers", "binary_output", "model_card")
MODEL_KWARGS = ("dtype", "torch_dtype", "device_map", "max_memory", "gguf_file", "revision", "token",
                "trust_remote_code", "low_cpu_mem_usage", "attn_implementation", "cache_dir")

# transformers 5 renamed torch_dtype to dtype and warns with these words (pipelines/__init__.py:1103-1110,
# logger.warning_once; modeling_utils.py:1404 says the same); explain warns once per pipeline() call
TORCH_DTYPE_DEPRECATED = "`torch_dtype` is deprecated! Use `dtype` instead!"

REMOTE_CODE_REFUSAL = (
    "trust_remote_code=True asks to download and run Python code from the model repository. explain refuses: "
    "it only runs its own readable model files (explain/models/) so that every number it shows comes from code "
    "you can inspect. Use a model whose architecture explain supports, without trust_remote_code.")


def _check_arguments(model, revision, gguf_file, token, dtype, device, device_map, max_memory):
    """Refuse, before any stage runs, the loading arguments that cannot work; returns max_memory in bytes."""
    runnable_dtype(dtype, None)
    if model is not None:
        hub.check_model(model)
    for name, value, what in (("revision", revision, "a branch, tag or commit"),
                              ("gguf_file", gguf_file, "the name of a .gguf file in the repo or folder")):
        if value is not None and (not isinstance(value, (str, os.PathLike)) or not os.fspath(value)):
            raise ArgumentError(f"{name}={value!r} is not {what}; pass a non-empty string")
    if token is not None and not isinstance(token, (str, bool)):
        raise ArgumentError(f"token={type(token).__name__} is not a token; pass a Hugging Face access token (a string), "
                            "True (the saved login) or False")
    if device is not None and device_map is not None:
        raise ExplainError("pass either device= or device_map=, not both (transformers warns that they "
                           "conflict and lets device= win)")
    if device is not None:
        normalise_device(device, "device")
    elif isinstance(device_map, dict):
        for module, where in device_map.items():
            if not isinstance(module, str):
                raise ArgumentError(f"device_map key {module!r} is not a module name; use \"\" for the whole model or "
                                    "names such as \"model.layers.0\"")
            if where != "disk":
                normalise_device(where, f"device_map[{module!r}]")
    elif device_map is not None and device_map not in AUTO_STRATEGIES:
        normalise_device(device_map, "device_map")
    if max_memory is None:
        return None
    from .device_plan.memory import parse_max_memory
    return parse_max_memory(max_memory)  # {0: "8GiB", "cpu": "30GiB"} -> bytes, or the format it takes and a fix


def pipeline(task: str = "text-generation", model=None, config=None, tokenizer=None, revision: str | None = None,
             token=None, device=None, device_map=None, dtype="auto", torch_dtype=None, trust_remote_code=None,
             model_kwargs: dict | None = None, gguf_file: str | None = None, trace: Trace | None = None,
             quantization: str | None = None, adapter=None, backend: str = "explain", **kwargs):
    """Build a traced text-generation pipeline. Arguments are those of transformers.pipeline, and three of explain's:
    quantization ("gguf", "int8", "int4": explain.quantization) and adapter (a PEFT LoRA folder: explain.adapters),
    and backend: "explain" (the default) runs explain's readable model files; "transformers" runs the real
    transformers.pipeline(...) and traces it (explain/backends/transformers/), in the same events."""
    if check_backend(backend) == "transformers":
        for name, value in (("quantization", quantization), ("adapter", adapter)):
            if value is not None:
                raise ArgumentError(
                    f"{name}= is the explain backend's; on backend=\"transformers\" load the way transformers does: "
                    + ("model_kwargs={\"quantization_config\": ...} (or a GGUF through gguf_file=)"
                       if name == "quantization" else "model=<the adapter folder> (its adapter_config.json names "
                       "the base model; transformers loads both with peft)"))
        return transformers_backend().pipeline(
            task, model=model, config=config, tokenizer=tokenizer, revision=revision, token=token, device=device,
            device_map=device_map, dtype=dtype, torch_dtype=torch_dtype, trust_remote_code=trust_remote_code,
            model_kwargs=model_kwargs, gguf_file=gguf_file, trace=trace, **kwargs)
    from .text_generation import GENERATE_ARGUMENTS, TextGenerationPipeline
    if model_kwargs is not None and not isinstance(model_kwargs, dict):
        raise ArgumentError(f"model_kwargs must be a dict such as {{\"torch_dtype\": torch.bfloat16}}, not "
                            f"{type(model_kwargs).__name__} {str(model_kwargs)[:60]!r}")
    model_kwargs = dict(model_kwargs or {})
    unknown = [k for k in model_kwargs if k not in MODEL_KWARGS]
    if unknown:
        raise ExplainError(f"unknown model_kwargs {unknown}; explain understands {', '.join(MODEL_KWARGS)}")
    trust_remote_code = model_kwargs.pop("trust_remote_code", trust_remote_code)
    if trust_remote_code:
        raise UnsupportedError(REMOTE_CODE_REFUSAL)
    dtype, dtype_argument, dtype_warnings = _dtype_argument(dtype, torch_dtype, model_kwargs)
    for message in dtype_warnings:
        warnings.warn(message, FutureWarning, stacklevel=2)
    if device_map is not None and "device_map" in model_kwargs:
        raise ExplainError("device_map given both as an argument and in model_kwargs; pass it once "
                           "(transformers refuses this too)")
    device_map = model_kwargs.pop("device_map", device_map)
    gguf_file = model_kwargs.pop("gguf_file", gguf_file)
    revision = model_kwargs.pop("revision", revision)
    token = model_kwargs.pop("token", token)
    max_memory = model_kwargs.pop("max_memory", None)
    # arguments that cannot work fail here, before seconds of reading files
    max_memory = _check_arguments(model, revision, gguf_file, token, dtype, device, device_map, max_memory)
    method = quantization_method(quantization, device, device_map)
    generate_defaults = {}
    for key, value in kwargs.items():
        if key in IGNORED_ARGUMENTS:
            continue
        if key in GENERATE_ARGUMENTS:
            generate_defaults[key] = value
            continue
        own = [name for name in inspect.signature(pipeline).parameters if name != "kwargs"]
        close = difflib.get_close_matches(key, list(GENERATE_ARGUMENTS) + own, n=1)
        raise ExplainError(f"unknown argument {key!r} to explain.pipeline"
                           + (f"; did you mean {close[0]!r}?" if close else ""))
    check_batch_size(generate_defaults.get("batch_size"))  # the default of every call: refused here, not at a call

    trace = trace if trace is not None else Trace()
    trace.meta.setdefault("explain_version", __import__("explain").__version__)
    trace.meta.setdefault("torch_version", torch.__version__)
    found = registry.lookup(task, model if isinstance(model, (str, type(None))) else "<object>", trace)
    if model is None:
        model, revision, gguf_file = found["model_used"], found["revision_used"], found["gguf_file_used"]
        ensure_provisioned()
    model = os.fspath(model)

    def resolve(filename, required=True, named_by=None):
        return hub.resolve(model, filename, revision=revision, token=token, trace=trace, required=required,
                           named_by=named_by)

    # -- config stage: files, then the config itself ----------------------------------------------------
    gguf_path = config_path = None
    if hub.is_local(model) and gguf_file is None and not os.path.lexists(os.path.join(model, "config.json")):
        ggufs = folder_has_gguf(model)
        hint = f" It holds GGUF files ({', '.join(ggufs)}): pass gguf_file=\"{ggufs[0]}\"." if ggufs else ""
        raise ExplainError(f"the folder {model} has no config.json, so it is not a Hugging Face model folder.{hint} "
                           "A model folder needs config.json, *.safetensors and tokenizer.json "
                           "(write one with pipe.save_pretrained(folder)).")
    if gguf_file is not None:
        gguf_path = resolve(gguf_file)
    if config is not None:
        config_path = config if os.path.isfile(str(config)) else hub.resolve(config, "config.json", revision=revision,
                                                                               token=token, trace=trace)
    elif gguf_path is None:
        try:
            config_path = resolve("config.json")
        except NotCachedError:
            ggufs = [f for f in hub.list_files(model, revision) if f.endswith(".gguf")]
            if not ggufs:
                raise
            raise ExplainError(f"{model} has no config.json but holds GGUF files ({', '.join(ggufs)}): pass "
                               f"gguf_file=\"{ggufs[0]}\" (transformers needs gguf_file= for these repos too)") from None
    generation_path = resolve("generation_config.json", required=False) if gguf_path is None else None
    config_dict, generation, generation_sources, reader = load_config(config_path, gguf_path, generation_path, trace)
    cls = model_class(config_dict)
    trace.meta.update(backend="explain", model_class=cls.__name__, source_file=inspect.getsourcefile(cls))

    # -- tokenizer stage -----------------------------------------------------------------------------------
    if isinstance(tokenizer, Tokenizer):
        tok = tokenizer
    else:
        if tokenizer is not None:
            source = hub.resolve(tokenizer, "tokenizer.json", revision=revision, token=token, trace=trace)
            source = os.path.dirname(source)
        elif gguf_path is not None:
            source = reader  # the GGUF file is parsed once, in the config stage
        else:
            source = os.path.dirname(resolve("tokenizer.json"))
            for optional in ("tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja"):
                resolve(optional, required=False)
        tok = load_tokenizer(source, trace=trace)
    if reader is not None:  # the weights need only the tensor table: let the metadata's ~250,000 parsed slices go
        reader.fields.clear()  # (vocabulary and merges, ~130 MiB of Python objects) before the weights arrive

    # -- weights stage ---------------------------------------------------------------------------------------
    torch_dtype = runnable_dtype(dtype, config_dict.get("dtype") or config_dict.get("torch_dtype"))
    config_source = config_path or f"the GGUF metadata of {gguf_path}"
    model_config = model_config_from(cls, config_dict, config_source)
    weight_format, paths = find_weights(model, resolve, gguf_path)
    tied = dict(cls.tied_weights) if getattr(model_config, "tie_word_embeddings", False) else {}
    quantizer = None
    if method is not None:  # weights kept quantized: explain.quantization
        if gguf_path is not None and reader is None:
            reader = gguf_reader(gguf_path)
        quantizer = make_quantizer(method, dtype not in (None, "auto"), torch_dtype, reader)
        torch_dtype = quantizer.dtype
    module, state = load_weights(cls, model_config, weight_format, paths, config_dict, torch_dtype, trace, tied=tied,
                                 reader=reader, config_source=config_source, quantizer=quantizer,
                                 notes={"dtype_argument": dtype_argument, "warnings": dtype_warnings})
    if quantizer is not None:
        quantizer.install(module, state, tied)

    # -- placement stage -------------------------------------------------------------------------------------
    module = place(module, state, torch_dtype, trace, device=device, device_map=device_map, max_memory=max_memory,
                   tied=tied)
    del state
    release_freed_memory()  # the loading stages' temporaries (parsed metadata, converted tensors): freed, not kept
    quantized = None
    if quantizer is not None:
        quantized = quantizer.emit(module, trace, trace.last("weights", "load").data["parameters"])
    adapted = None
    if adapter is not None:  # a PEFT LoRA adapter on top: explain.adapters
        from .adapters import load_adapter
        parameters = trace.last("weights", "load").data["parameters"]
        adapted = load_adapter(module, adapter, trace, base_parameters=parameters)
    return TextGenerationPipeline(task=found["task"], model=module, tokenizer=tok, config=config_dict,
                                  generation_config=generation, generation_config_source=generation_sources,
                                  trace=trace, name_or_path=model, dtype=dtype_name(torch_dtype),
                                  generate_defaults=generate_defaults, quantization=quantized, adapter=adapted)


def _dtype_argument(dtype, torch_dtype, model_kwargs: dict) -> tuple[object, str, list[str]]:
    """(the dtype asked for, which argument gave it, warnings), as transformers.pipeline reads them
    (pipelines/__init__.py:1103-1124): `torch_dtype` is the deprecated name of `dtype` and warns; a top-level
    `torch_dtype` counts only where `dtype` was left "auto"; a dtype in model_kwargs with a top-level one too is
    refused; inside model_kwargs `dtype` wins over `torch_dtype`, as in from_pretrained (modeling_utils.py:4184).
    Pops them from model_kwargs."""
    argument, messages = "dtype" if dtype != "auto" else "default (\"auto\")", []
    if torch_dtype is not None:
        messages.append(TORCH_DTYPE_DEPRECATED)
        if dtype == "auto":
            dtype, argument = torch_dtype, "torch_dtype"
    if "torch_dtype" in model_kwargs or "dtype" in model_kwargs:
        if "torch_dtype" in model_kwargs and not messages:
            messages.append(TORCH_DTYPE_DEPRECATED)
        if dtype != "auto":
            given = "dtype" if "dtype" in model_kwargs else "torch_dtype"
            raise ExplainError(f"a dtype given both as {argument}= and in model_kwargs[{given!r}]; pass it once, "
                               "preferably as dtype=... (transformers refuses this too)")
        argument = "model_kwargs['dtype']" if "dtype" in model_kwargs else "model_kwargs['torch_dtype']"
        given = model_kwargs.pop("torch_dtype", None)
        dtype = model_kwargs.pop("dtype", given)
    return dtype, argument, messages
