"""`explain.pipeline(...)`: transformers' pipeline call, each loading stage run for real and traced.

    registry -> config (files from the Hub cache or a folder, then config.json or GGUF metadata)
             -> tokenizer -> weights -> placement

pipeline() checks its arguments, then runs LOADING_STAGES in order on one Loading (explain/stages/loading.py: each
stage is `run(loading, trace)`), then builds the TextGenerationPipeline from what they found.
"""

from __future__ import annotations

import difflib
import inspect
import os
import warnings

import torch

from . import adapters
from .backends import check_backend, transformers_backend
from .errors import ArgumentError, ExplainError, UnsupportedError
from .features import embedded
from .inputs import check_batch_size
from .quantization import check as quantization_method
from .stages import config, hub, placement, tasks, tokenizer, weights
from .stages.loading import Loading
from .stages.placement import AUTO_STRATEGIES, normalise_device
from .trace import Trace
from .utils.dtypes import dtype_name, runnable_dtype

# the loading stages in transformers' order, each `run(loading, trace)`; between the registry and config stages the
# embedded model is provisioned when it is the task's default, and after placement an adapter= is applied
LOADING_STAGES = (tasks.run, embedded.run, config.run, tokenizer.run, weights.run, placement.run, adapters.run)

# transformers.pipeline's own arguments that do not apply to a text-only pipeline; accepted and ignored
IGNORED_ARGUMENTS = (
    "feature_extractor",
    "image_processor",
    "processor",
    "video_processor",
    "use_fast",
    "framework",
    "pipeline_class",
    "num_workers",
    "binary_output",
    "model_card",
)
MODEL_KWARGS = (
    "dtype",
    "torch_dtype",
    "device_map",
    "max_memory",
    "gguf_file",
    "revision",
    "token",
    "trust_remote_code",
    "low_cpu_mem_usage",
    "attn_implementation",
    "cache_dir",
)

# transformers 5 renamed torch_dtype to dtype and warns with these words (pipelines/__init__.py:1103-1110,
# logger.warning_once; modeling_utils.py:1404 says the same); explain warns once per pipeline() call
TORCH_DTYPE_DEPRECATED = "`torch_dtype` is deprecated! Use `dtype` instead!"

REMOTE_CODE_REFUSAL = (
    "trust_remote_code=True asks to download and run Python code from the model repository. explain refuses: "
    "it only runs its own readable model files (explain/models/) so that every number it shows comes from code "
    "you can inspect. Use a model whose architecture explain supports, without trust_remote_code."
)


def _check_arguments(model, revision, gguf_file, token, dtype, device, device_map, max_memory):
    """Refuse, before any stage runs, the loading arguments that cannot work; returns max_memory in bytes."""
    runnable_dtype(dtype, None)
    if model is not None:
        hub.check_model(model)
    for name, value, what in (
        ("revision", revision, "a branch, tag or commit"),
        ("gguf_file", gguf_file, "the name of a .gguf file in the repo or folder"),
    ):
        if value is not None and (not isinstance(value, (str, os.PathLike)) or not os.fspath(value)):
            raise ArgumentError(f"{name}={value!r} is not {what}; pass a non-empty string")
    if token is not None and not isinstance(token, (str, bool)):
        raise ArgumentError(
            f"token={type(token).__name__} is not a token; pass a Hugging Face access token (a string), "
            "True (the saved login) or False"
        )
    if device is not None and device_map is not None:
        raise ExplainError(
            "pass either device= or device_map=, not both (transformers warns that they conflict and lets device= win)"
        )
    if device is not None:
        normalise_device(device, "device")
    elif isinstance(device_map, dict):
        for module, where in device_map.items():
            if not isinstance(module, str):
                raise ArgumentError(
                    f'device_map key {module!r} is not a module name; use "" for the whole model or '
                    'names such as "model.layers.0"'
                )
            if where != "disk":
                normalise_device(where, f"device_map[{module!r}]")
    elif device_map is not None and device_map not in AUTO_STRATEGIES:
        normalise_device(device_map, "device_map")
    if max_memory is None:
        return None
    from .device_plan.memory import parse_max_memory

    return parse_max_memory(max_memory)  # {0: "8GiB", "cpu": "30GiB"} -> bytes, or the format it takes and a fix


def pipeline(
    task: str = "text-generation",
    model=None,
    config=None,
    tokenizer=None,
    revision: str | None = None,
    token=None,
    device=None,
    device_map=None,
    dtype="auto",
    torch_dtype=None,
    trust_remote_code=None,
    model_kwargs: dict | None = None,
    gguf_file: str | None = None,
    trace: Trace | None = None,
    quantization: str | None = None,
    adapter=None,
    backend: str = "explain",
    **kwargs,
):
    """Build a traced text-generation pipeline. Arguments are those of transformers.pipeline, and three of explain's:
    quantization ("gguf", "int8", "int4": explain.quantization) and adapter (a PEFT LoRA folder: explain.adapters),
    and backend: "explain" (the default) runs explain's readable model files; "transformers" runs the real
    transformers.pipeline(...) and traces it (explain/backends/transformers/), in the same events."""
    if check_backend(backend) == "transformers":
        for name, value in (("quantization", quantization), ("adapter", adapter)):
            if value is not None:
                raise ArgumentError(
                    f'{name}= is the explain backend\'s; on backend="transformers" load the way transformers does: '
                    + (
                        'model_kwargs={"quantization_config": ...} (or a GGUF through gguf_file=)'
                        if name == "quantization"
                        else "model=<the adapter folder> (its adapter_config.json names "
                        "the base model; transformers loads both with peft)"
                    )
                )
        return transformers_backend().pipeline(
            task,
            model=model,
            config=config,
            tokenizer=tokenizer,
            revision=revision,
            token=token,
            device=device,
            device_map=device_map,
            dtype=dtype,
            torch_dtype=torch_dtype,
            trust_remote_code=trust_remote_code,
            model_kwargs=model_kwargs,
            gguf_file=gguf_file,
            trace=trace,
            **kwargs,
        )
    from .generation.settings import GENERATE_DEFAULTS  # every knob's default, for the config stage
    from .text_generation import GENERATE_ARGUMENTS, TextGenerationPipeline

    if model_kwargs is not None and not isinstance(model_kwargs, dict):
        raise ArgumentError(
            f'model_kwargs must be a dict such as {{"torch_dtype": torch.bfloat16}}, not '
            f"{type(model_kwargs).__name__} {str(model_kwargs)[:60]!r}"
        )
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
        raise ExplainError(
            "device_map given both as an argument and in model_kwargs; pass it once (transformers refuses this too)"
        )
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
        raise ExplainError(
            f"unknown argument {key!r} to explain.pipeline" + (f"; did you mean {close[0]!r}?" if close else "")
        )
    check_batch_size(generate_defaults.get("batch_size"))  # the default of every call: refused here, not at a call

    trace = trace if trace is not None else Trace()
    trace.meta.setdefault("explain_version", __import__("explain").__version__)
    trace.meta.setdefault("torch_version", torch.__version__)
    loading = Loading(
        task=task,
        model=model,
        revision=revision,
        token=token,
        gguf_file=gguf_file,
        config=config,
        tokenizer=tokenizer,
        dtype=dtype,
        dtype_argument=dtype_argument,
        dtype_warnings=dtype_warnings,
        device=device,
        device_map=device_map,
        max_memory=max_memory,
        quantization=method,
        adapter=adapter,
        generation_defaults=GENERATE_DEFAULTS,
    )
    for stage in LOADING_STAGES:
        stage(loading, trace)
    assert loading.found is not None, "the registry stage names the task"
    return TextGenerationPipeline(
        task=loading.found["task"],
        model=loading.module,
        tokenizer=loading.loaded_tokenizer,
        config=loading.config_dict,
        generation_config=loading.generation,
        generation_config_source=loading.generation_sources,
        trace=trace,
        name_or_path=loading.model,
        dtype=dtype_name(loading.torch_dtype),
        generate_defaults=generate_defaults,
        quantization=loading.quantized,
        adapter=loading.adapted,
    )


def _dtype_argument(dtype, torch_dtype, model_kwargs: dict) -> tuple[object, str, list[str]]:
    """(the dtype asked for, which argument gave it, warnings), as transformers.pipeline reads them
    (pipelines/__init__.py:1103-1124): `torch_dtype` is the deprecated name of `dtype` and warns; a top-level
    `torch_dtype` counts only where `dtype` was left "auto"; a dtype in model_kwargs with a top-level one too is
    refused; inside model_kwargs `dtype` wins over `torch_dtype`, as in from_pretrained (modeling_utils.py:4184).
    Pops them from model_kwargs."""
    argument, messages = "dtype" if dtype != "auto" else 'default ("auto")', []
    if torch_dtype is not None:
        messages.append(TORCH_DTYPE_DEPRECATED)
        if dtype == "auto":
            dtype, argument = torch_dtype, "torch_dtype"
    if "torch_dtype" in model_kwargs or "dtype" in model_kwargs:
        if "torch_dtype" in model_kwargs and not messages:
            messages.append(TORCH_DTYPE_DEPRECATED)
        if dtype != "auto":
            given = "dtype" if "dtype" in model_kwargs else "torch_dtype"
            raise ExplainError(
                f"a dtype given both as {argument}= and in model_kwargs[{given!r}]; pass it once, "
                "preferably as dtype=... (transformers refuses this too)"
            )
        argument = "model_kwargs['dtype']" if "dtype" in model_kwargs else "model_kwargs['torch_dtype']"
        given = model_kwargs.pop("torch_dtype", None)
        dtype = model_kwargs.pop("dtype", given)
    return dtype, argument, messages
