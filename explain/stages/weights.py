"""Stage 4, weights: read every tensor of the checkpoint and check its name and shape against the architecture.

The files are found and read by the weight-format registry (explain.formats: GGUF, safetensors, PyTorch
weights-only); this stage bounds what the config asks for against the checkpoint and the machine, builds the
model's skeleton on the meta device, checks the state dict against it, and emits `weights/load`.
"""

from __future__ import annotations

import inspect
import math
import os
import time

import torch
from accelerate import init_empty_weights

from ..errors import ConfigValueError, ExplainError, UnsupportedError
from ..formats import ReadRequest, WeightFormat, find_weights
from ..quantization import make_quantizer
from ..trace import Trace
from ..utils.dtypes import dtype_name, runnable_dtype
from .config import gguf_reader
from .config_checks import check_against_checkpoint, check_memory, check_weight_dtypes
from .loading import Loading


def model_config_from(model_class, config: dict, config_source: str = "config.json"):
    """The model file's config dataclass built from config.json (or GGUF metadata), a refusal naming the file when
    the model file cannot build from it (a missing rope_scaling key, a value of the wrong kind)."""
    try:
        return model_class.config_class.from_dict(config)
    except NotImplementedError as error:
        raise UnsupportedError(f"{config_source}: {error}") from None
    except (KeyError, TypeError, ValueError, ZeroDivisionError) as error:
        raise _cannot_build(config, config_source, error) from None


def _cannot_build(config: dict, config_source: str, error: Exception) -> ConfigValueError:
    return ConfigValueError(
        f"{config_source}: {config['architectures'][0]} cannot be built from this config "
        f"({type(error).__name__}: {error}); a key it needs is missing or of the wrong kind "
        "(e.g. in rope_scaling): correct it, or get the file again"
    )


def load_weights(
    model_class,
    model_config,
    weight_format: WeightFormat,
    paths: list[str],
    config: dict,
    dtype: torch.dtype,
    trace: Trace,
    tied: dict | None = None,
    reader=None,
    config_source: str = "config.json",
    options: dict | None = None,
    notes: dict | None = None,
    quantizer=None,
) -> tuple[torch.nn.Module, dict]:
    """Build the model's skeleton on the meta device, then read the checkpoint into a CPU state dict of
    `dtype`, checked against the skeleton's parameter names. Returns (skeleton, state dict).

    Before anything is allocated, the config's layer count and sizes are checked against the checkpoint's tensors
    (read from the files' headers) and the state's size against this machine's free memory. `notes` are facts of
    the call that go into the weights/load event as they are (which argument asked for the dtype, the warnings it
    raised). A weight the architecture needs and the checkpoint lacks is an error: explain never shows numbers from
    random initialisation. A `quantizer` (explain.quantization) may keep GGUF tensors as stored; they are checked
    here like the others.
    """
    start, t0 = time.time(), time.perf_counter()
    request = ReadRequest(
        expected=[], dtype=dtype, config=config, trace=trace, reader=reader, options=dict(options or {})
    )
    files_text = ", ".join(os.path.basename(p) for p in paths)
    inventory = weight_format.inventory(paths, request)
    check_against_checkpoint(config, inventory, config_source, files_text)
    check_weight_dtypes(config, inventory, files_text)
    check_memory(inventory, dtype, files_text)
    try:
        with init_empty_weights(include_buffers=False):  # names and shapes only, no memory
            model = model_class(model_config)
    except NotImplementedError as error:  # a model file refusing a setting it does not implement (hidden_act, ...)
        raise UnsupportedError(f"{config_source}: {error}") from None
    except (KeyError, TypeError, ValueError, ZeroDivisionError) as error:  # the skeleton reads only the config
        raise _cannot_build(config, config_source, error) from None
    skeleton_time = time.perf_counter() - t0
    tied = tied or {}  # target -> source, e.g. lm_head.weight -> model.embed_tokens.weight
    request.expected = [n for n, _ in model.named_parameters(remove_duplicate=False)] + [
        n for n, b in model.named_buffers() if _persistent(model, n)
    ]
    request.prefix = getattr(model, "base_model_prefix", None)
    if quantizer is not None:
        request.options["take"] = quantizer.take_gguf  # GGUF only: blocks kept as stored, packed for its kernel
    state, facts = weight_format.read(paths, request)
    for target, source in tied.items():  # a tied pair stored under the other name (safetensors' save_model
        if source not in state and target in state:  # keeps lm_head.weight); transformers loads it too
            state[source] = state.pop(target)
    kept = quantizer.kept_shapes() if quantizer is not None else {}  # name -> shape of tensors kept quantized
    tied_used = {k: v for k, v in tied.items() if v in state or v in kept}
    for name in tied_used:
        state.pop(name, None)  # a tied copy in the checkpoint is ignored, as transformers does
    missing = [n for n in request.expected if n not in state and n not in tied_used and n not in kept]
    shapes = {n: list(t.shape) for n, t in list(model.named_parameters()) + list(model.named_buffers())}
    checked = {**{n: list(t.shape) for n, t in state.items()}, **kept}
    mismatched = {
        n: {"checkpoint": shape, "config": shapes[n]}
        for n, shape in checked.items()
        if n in shapes and shape != shapes[n]
    }
    data = dict(
        facts,
        files=[os.path.basename(p) for p in paths],
        tensors=len(state) + len(kept),
        bytes=sum(t.nbytes for t in state.values())  # a quantised tensor subclass reports its stored bytes
        + (quantizer.kept_bytes() if quantizer is not None else 0),
        parameters=sum(t.numel() for t in state.values()) + sum(math.prod(s) for s in kept.values()),
        kept_quantized=len(kept),
        dtype=dtype_name(dtype),
        skeleton_seconds=skeleton_time,
        missing=missing,
        mismatched=mismatched,
        tied=tied_used,
        unexpected_count=len(facts["unexpected"]),
        backend="explain",
        model_class=model_class.__name__,
        source_file=inspect.getsourcefile(model_class),
        **(notes or {}),
    )
    trace.emit("weights", "load", data, start=start, duration=time.perf_counter() - t0)
    if missing:
        raise ExplainError(
            f"the checkpoint ({', '.join(data['files'])}) lacks {len(missing)} weights that "
            f"{config['architectures'][0]} with this config needs, e.g. {missing[:3]}; the config and "
            "the weights do not belong together (check num_hidden_layers / the repo revision)"
        )
    if mismatched:
        name, shape = next(iter(mismatched.items()))
        raise ExplainError(
            f"the checkpoint ({', '.join(data['files'])}) has {name} of shape {shape['checkpoint']} but "
            f"{config['architectures'][0]} with this config needs {shape['config']} ({len(mismatched)} "
            "tensors differ); the config and the weights do not belong together (check hidden_size, "
            "intermediate_size and the head counts in config.json / the repo revision)"
        )
    return model, state


def _persistent(model: torch.nn.Module, name: str) -> bool:
    module_name, _, buffer = name.rpartition(".")
    module = model.get_submodule(module_name) if module_name else model
    return buffer not in module._non_persistent_buffers_set


def run(loading: Loading, trace: Trace) -> None:
    """The weights stage: the checkpoint's tensors into the model class (weights/load), kept quantized when
    quantization= asks (explain.quantization)."""
    cls, config = loading.model_class, loading.config_dict
    assert config is not None, "the config stage runs before the weights stage"
    torch_dtype = runnable_dtype(loading.dtype, config.get("dtype") or config.get("torch_dtype"))
    config_source = loading.config_path or f"the GGUF metadata of {loading.gguf_path}"
    model_config = model_config_from(cls, config, config_source)

    def resolve(filename, required=True, named_by=None):
        return loading.resolve(filename, trace, required=required, named_by=named_by)

    weight_format, paths = find_weights(loading.model, resolve, loading.gguf_path)
    loading.tied = dict(cls.tied_weights) if getattr(model_config, "tie_word_embeddings", False) else {}
    if loading.quantization is not None:  # weights kept quantized: explain.quantization
        if loading.gguf_path is not None and loading.reader is None:
            loading.reader = gguf_reader(loading.gguf_path)
        loading.quantizer = make_quantizer(
            loading.quantization, loading.dtype not in (None, "auto"), torch_dtype, loading.reader
        )
        torch_dtype = loading.quantizer.dtype
    loading.torch_dtype = torch_dtype
    loading.module, loading.state = load_weights(
        cls,
        model_config,
        weight_format,
        paths,
        config,
        torch_dtype,
        trace,
        tied=loading.tied,
        reader=loading.reader,
        config_source=config_source,
        quantizer=loading.quantizer,
        notes={"dtype_argument": loading.dtype_argument, "warnings": loading.dtype_warnings},
    )
    if loading.quantizer is not None:
        loading.quantizer.install(loading.module, loading.state, loading.tied)
