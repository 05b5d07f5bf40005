"""`explain.pipeline(...)`: transformers' pipeline call, each loading stage run for real and traced.

    registry -> config (files from the Hub cache or a folder, then config.json or GGUF metadata)
             -> tokenizer -> weights -> placement
"""

from __future__ import annotations

import difflib
import inspect
import os

import torch

from . import hub, registry
from .backends import check_backend, transformers_backend
from .config import folder_has_gguf, load_config
from .embedded import ensure_provisioned
from .errors import ExplainError, NotCachedError, UnsupportedError
from .models import model_class
from .placement import AUTO_STRATEGIES, normalise_device, place
from .tokenizer import Tokenizer, load_tokenizer
from .trace import Trace
from .weights import dtype_name, load_weights, resolve_dtype, safetensors_files

# transformers.pipeline's own arguments that do not apply to a text-only pipeline; accepted and ignored
IGNORED_ARGUMENTS = ("feature_extractor", "image_processor", "processor", "video_processor", "use_fast",
                     "framework", "pipeline_class", "batch_size", "num_workers", "binary_output", "model_card")
MODEL_KWARGS = ("dtype", "torch_dtype", "device_map", "max_memory", "gguf_file", "revision", "token",
                "trust_remote_code", "low_cpu_mem_usage", "attn_implementation", "cache_dir")

REMOTE_CODE_REFUSAL = (
    "trust_remote_code=True asks to download and run Python code from the model repository. explain refuses: "
    "it only runs its own readable model files (explain/models/) so that every number it shows comes from code "
    "you can inspect. Use a model whose architecture explain supports, without trust_remote_code.")


def pipeline(task: str = "text-generation", model=None, config=None, tokenizer=None, revision: str | None = None,
             token=None, device=None, device_map=None, dtype="auto", torch_dtype=None, trust_remote_code=None,
             model_kwargs: dict | None = None, gguf_file: str | None = None, trace: Trace | None = None,
             backend: str = "explain", **kwargs):
    """Build a traced text-generation pipeline. Arguments are those of transformers.pipeline.

    backend="explain" (the default) runs explain's readable model files; backend="transformers" runs the real
    transformers.pipeline(...) and traces it (explain/backends/transformers/), in the same events."""
    if check_backend(backend) == "transformers":
        return transformers_backend().pipeline(
            task, model=model, config=config, tokenizer=tokenizer, revision=revision, token=token, device=device,
            device_map=device_map, dtype=dtype, torch_dtype=torch_dtype, trust_remote_code=trust_remote_code,
            model_kwargs=model_kwargs, gguf_file=gguf_file, trace=trace, **kwargs)
    from .text_generation import GENERATE_ARGUMENTS, TextGenerationPipeline
    model_kwargs = dict(model_kwargs or {})
    unknown = [k for k in model_kwargs if k not in MODEL_KWARGS]
    if unknown:
        raise ExplainError(f"unknown model_kwargs {unknown}; explain understands {', '.join(MODEL_KWARGS)}")
    trust_remote_code = model_kwargs.pop("trust_remote_code", trust_remote_code)
    if trust_remote_code:
        raise UnsupportedError(REMOTE_CODE_REFUSAL)
    dtype = model_kwargs.pop("dtype", model_kwargs.pop("torch_dtype", torch_dtype if torch_dtype is not None else dtype))
    if device_map is not None and "device_map" in model_kwargs:
        raise ExplainError("device_map given both as an argument and in model_kwargs; pass it once "
                           "(transformers refuses this too)")
    device_map = model_kwargs.pop("device_map", device_map)
    gguf_file = model_kwargs.pop("gguf_file", gguf_file)
    revision = model_kwargs.pop("revision", revision)
    token = model_kwargs.pop("token", token)
    max_memory = model_kwargs.pop("max_memory", None)
    # arguments that cannot work fail here, before seconds of reading files
    if dtype is not None and dtype != "auto":
        resolve_dtype(dtype, None)
    if device is not None and device_map is not None:
        raise ExplainError("pass either device= or device_map=, not both (transformers warns that they "
                           "conflict and lets device= win)")
    if device is not None:
        normalise_device(device)
    elif isinstance(device_map, (str, int)) and device_map not in AUTO_STRATEGIES:
        normalise_device(device_map)
    elif isinstance(device_map, dict):
        for where in set(device_map.values()) - {"disk"}:
            normalise_device(where)
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

    trace = trace if trace is not None else Trace()
    trace.meta.setdefault("explain_version", __import__("explain").__version__)
    trace.meta.setdefault("torch_version", torch.__version__)
    found = registry.lookup(task, model if isinstance(model, (str, type(None))) else "<object>", trace)
    if model is None:
        model, revision, gguf_file = found["model_used"], found["revision_used"], found["gguf_file_used"]
        ensure_provisioned()
    if not isinstance(model, (str, os.PathLike)):
        raise ExplainError("model must be a Hub repo id or a local folder (a string); explain loads the "
                           "weights itself so that it can trace them")
    model = os.fspath(model)

    def resolve(filename, required=True):
        return hub.resolve(model, filename, revision=revision, token=token, trace=trace, required=required)

    # -- config stage: files, then the config itself ----------------------------------------------------
    gguf_path = config_path = None
    if hub.is_local(model) and gguf_file is None and not os.path.isfile(os.path.join(model, "config.json")):
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

    # -- weights stage ---------------------------------------------------------------------------------------
    torch_dtype = resolve_dtype(dtype, config_dict.get("dtype") or config_dict.get("torch_dtype"))
    model_config = cls.config_class.from_dict(config_dict)
    if gguf_path is not None:
        files = {"gguf": gguf_path}
    else:
        index = resolve("model.safetensors.index.json", required=False)
        if index is not None:
            files = {"safetensors": safetensors_files(resolve, model, index)}
        else:
            single = resolve("model.safetensors", required=False)
            if single is not None:
                files = {"safetensors": [single]}
            else:
                binary = resolve("pytorch_model.bin", required=False)
                if binary is None:
                    raise ExplainError(f"{model} has no weights explain can read: no model.safetensors, "
                                       "model.safetensors.index.json or pytorch_model.bin")
                files = {"bin": [binary]}
    tied = dict(cls.tied_weights) if getattr(model_config, "tie_word_embeddings", False) else {}
    module, state = load_weights(cls, model_config, files, config_dict, torch_dtype, trace, tied=tied, reader=reader)

    # -- placement stage -------------------------------------------------------------------------------------
    module = place(module, state, torch_dtype, trace, device=device, device_map=device_map, max_memory=max_memory,
                   tied=tied)
    del state
    return TextGenerationPipeline(task=found["task"], model=module, tokenizer=tok, config=config_dict,
                                  generation_config=generation, generation_config_source=generation_sources,
                                  trace=trace, name_or_path=model, dtype=dtype_name(torch_dtype),
                                  generate_defaults=generate_defaults)
