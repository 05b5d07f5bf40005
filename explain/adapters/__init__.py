"""PEFT LoRA adapters on explain's readable models: `explain.pipeline(..., adapter="path/to/lora")`.

An adapter folder is what peft's save_pretrained writes: adapter_config.json (peft_type "LORA", r, lora_alpha,
target_modules, ...) and adapter_model.safetensors (for each adapted layer, lora_A (r, in) and lora_B (out, r),
named after the base model's modules: base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight). explain's
module names are the checkpoint's, so those names are explain's too.

Applied with peft itself (inject_adapter_in_model + set_peft_model_state_dict) when peft is installed and every
adapted layer is a plain nn.Linear; on explain's quantized layers, or without peft, with the readable LoraLinear
(lora.py), which the tests prove equal to peft. Everything is checked before the model is touched: the files, the
type (LoRA only), the options a plain LoRA layer cannot honour (DoRA, modules_to_save, biases), and every tensor's
shape against the layer it adapts.
"""

from __future__ import annotations

import math
import os
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import safetensors
import torch
from torch import nn

from ..errors import CorruptFileError, ExplainError, UnsupportedError
from ..stages.config import read_json
from ..trace import Trace
from .lora import LoraLinear

__all__ = [
    "load_adapter",
    "adapter_event",
    "delta_facts",
    "read_adapter",
    "check_fits",
    "Adapter",
    "LoraLinear",
    "LoraSettings",
    "check_settings",
    "base_model_warning",
]

CONFIG_FILE, WEIGHTS_FILE = "adapter_config.json", "adapter_model.safetensors"
PREFIX = "base_model.model."  # peft's PeftModel wraps the base model twice (PeftModel.base_model.model)


@dataclass
class LoraSettings:
    """The adapter_config.json fields a LoRA layer uses (peft's LoraConfig names)."""

    r: int = 8
    lora_alpha: float = 8
    use_rslora: bool = False
    target_modules: object = None
    base_model_name_or_path: str | None = None
    rank_pattern: dict = field(default_factory=dict)
    alpha_pattern: dict = field(default_factory=dict)

    def alpha_of(self, module_name: str) -> float:
        """lora_alpha, or the alpha_pattern entry for this module as peft matches it (a suffix of the name)."""
        for pattern, alpha in (self.alpha_pattern or {}).items():
            if module_name == pattern or module_name.endswith("." + pattern):
                return alpha
        return self.lora_alpha

    def scaling(self, module_name: str, rank: int) -> float:
        alpha = self.alpha_of(module_name)
        return alpha / math.sqrt(rank) if self.use_rslora else alpha / rank


def read_adapter(path) -> tuple[dict, LoraSettings, dict]:
    """(adapter_config.json as written, its LoRA settings, {module name: {"lora_A": tensor, "lora_B": tensor}})."""
    path = os.fspath(path)
    if not os.path.isdir(path):
        raise ExplainError(
            f"adapter={path!r} is not a folder; a PEFT adapter is a folder holding {CONFIG_FILE} and "
            f"{WEIGHTS_FILE} (what peft's save_pretrained writes)"
        )
    config_path, weights_path = os.path.join(path, CONFIG_FILE), os.path.join(path, WEIGHTS_FILE)
    if not os.path.isfile(config_path):
        raise ExplainError(
            f"the adapter folder {path} has no {CONFIG_FILE}; copy the whole folder peft's save_pretrained wrote"
        )
    config = read_json(config_path, "PEFT adapter config (adapter_config.json)")
    kind = str(config.get("peft_type", "")).upper()
    if kind != "LORA":
        raise UnsupportedError(
            f"{config_path} is a {config.get('peft_type')!r} adapter; explain applies LoRA adapters "
            '(peft_type "LORA") only. Load it with peft and transformers instead'
        )
    refused = {
        "use_dora": "DoRA (use_dora: true) rescales each column of the weight",
        "modules_to_save": "modules_to_save replaces whole layers",
        "trainable_token_indices": "trainable tokens change embedding rows",
        "lora_bias": "lora_bias adds a bias to lora_B",
    }
    for key, what in refused.items():
        if config.get(key):
            raise UnsupportedError(
                f"{config_path}: {what}, which a plain LoRA layer does not do; explain applies "
                f"plain LoRA adapters only (remove {key} or load it with peft and transformers)"
            )
    if config.get("bias", "none") != "none":
        raise UnsupportedError(
            f"{config_path}: bias={config['bias']!r} trains the base layers' biases too; explain "
            'applies plain LoRA adapters (bias "none") only'
        )
    if not os.path.isfile(weights_path):
        other = [f for f in os.listdir(path) if f.startswith("adapter_model")]
        hint = f" (it holds {', '.join(other)}: explain reads safetensors only, never a pickle)" if other else ""
        raise ExplainError(
            f"the adapter folder {path} has no {WEIGHTS_FILE}{hint}; save the adapter with peft's "
            "save_pretrained(folder) (safe_serialization is its default)"
        )
    check_settings(config, config_path)
    settings = LoraSettings(**{k: config[k] for k in LoraSettings.__dataclass_fields__ if config.get(k) is not None})
    weights: dict[str, dict] = {}
    try:
        with safetensors.safe_open(weights_path, framework="pt") as f:
            for key in f.keys():
                name = key.removeprefix(PREFIX)
                module_name, _, part = name.removesuffix(".weight").rpartition(".")
                if part not in ("lora_A", "lora_B") or not name.endswith(".weight"):
                    raise UnsupportedError(
                        f"{weights_path} holds {key}, which is not a LoRA A or B matrix of a "
                        "linear layer; explain applies plain LoRA adapters to linear layers only"
                    )
                weights.setdefault(module_name, {})[part] = f.get_tensor(key)
    except (safetensors.SafetensorError, OSError) as error:
        raise CorruptFileError(
            f"{weights_path} is not a readable safetensors file ({error}); save the adapter again"
        ) from None
    for module_name, pair in weights.items():
        if set(pair) != {"lora_A", "lora_B"}:
            raise CorruptFileError(
                f"{weights_path} has {', '.join(pair)} but not both lora_A and lora_B for "
                f"{module_name}; the file is incomplete: save the adapter again"
            )
    if not weights:
        raise CorruptFileError(f"{weights_path} holds no LoRA weights")
    return config, settings, weights


def _is_number(value, integer: bool = False) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return isinstance(value, int) if integer else math.isfinite(value)


def check_settings(config: dict, config_path: str) -> None:
    """The LoRA fields of adapter_config.json have the types peft's LoraConfig declares, a positive rank and a
    finite alpha (lora_alpha NaN made every logit NaN; a string, a list or r=0 ended in raw errors)."""

    def refuse(field: str, value, what: str):
        raise CorruptFileError(
            f"{config_path}: {field} is {value!r:.60}, but it must be {what} (peft's LoraConfig); fix the file or "
            "save the adapter again with peft"
        )

    if "r" in config and not (_is_number(config["r"], integer=True) and config["r"] >= 1):
        refuse("r", config["r"], "a positive integer (the rank)")
    if "lora_alpha" in config and not _is_number(config["lora_alpha"]):
        refuse("lora_alpha", config["lora_alpha"], "a finite number")
    for key, integer, what in (
        ("rank_pattern", True, "a dict of module name -> positive integer rank"),
        ("alpha_pattern", False, "a dict of module name -> finite alpha"),
    ):
        pattern = config.get(key)
        if pattern is None:
            continue
        if not isinstance(pattern, dict) or not all(
            isinstance(k, str) and _is_number(v, integer) and (not integer or v >= 1) for k, v in pattern.items()
        ):
            refuse(key, pattern, what)
    if not isinstance(config.get("use_rslora", False), bool):
        refuse("use_rslora", config["use_rslora"], "true or false")
    targets = config.get("target_modules")
    if targets is not None and not (
        isinstance(targets, str) or (isinstance(targets, list) and all(isinstance(t, str) for t in targets))
    ):
        refuse("target_modules", targets, "a module name, a regular expression or a list of module names")
    base = config.get("base_model_name_or_path")
    if base is not None and not isinstance(base, str):
        refuse("base_model_name_or_path", base, "a Hub repo id or a folder")


def _same_model(a: str, b: str) -> bool:
    """Two names of one model: equal, the same folder, or a folder named as the repo (HuggingFaceTB/SmolLM2-135M and
    ~/models/SmolLM2-135M)."""
    a, b = os.path.normpath(a), os.path.normpath(b)
    if a == b or (os.path.exists(a) and os.path.exists(b) and os.path.samefile(a, b)):
        return True
    return os.path.basename(a).lower() == os.path.basename(b).lower()


def base_model_warning(settings: LoraSettings, loaded: str | None, path: str) -> str | None:
    """A warning when adapter_config.json names another base model than the one loaded (the shapes may still fit:
    a fine-tune of another checkpoint of the same architecture changes every answer)."""
    trained_on = settings.base_model_name_or_path
    if not trained_on or not loaded or _same_model(trained_on, loaded):
        return None
    return (
        f"the adapter {path} was made for {trained_on} (adapter_config.json base_model_name_or_path) and is applied "
        f"to {loaded}: its shapes fit, but a LoRA is a change to one set of weights, so on another base model its "
        "outputs mean little. Load the base model it names"
    )


def check_fits(model: nn.Module, weights: dict, settings: LoraSettings, path: str) -> None:
    """Every adapted module exists in `model` as a linear layer, and A and B have the shapes it needs."""
    trained_on = (
        (f" It was trained on {settings.base_model_name_or_path} (adapter_config.json base_model_name_or_path).")
        if settings.base_model_name_or_path
        else ""
    )
    for module_name, pair in weights.items():
        try:
            layer = model.get_submodule(module_name)
        except AttributeError:
            raise ExplainError(
                f"the adapter {path} adapts {module_name}, which this model does not have: it was made "
                f"for another base model.{trained_on} Load the base model it was trained on"
            ) from None
        if not hasattr(layer, "in_features") or not hasattr(layer, "out_features") or isinstance(layer, LoraLinear):
            raise ExplainError(
                f"the adapter {path} adapts {module_name}, a {type(layer).__name__}; explain applies "
                "LoRA to linear layers only"
            )
        a, b = pair["lora_A"], pair["lora_B"]
        expected_a, expected_b = (a.shape[0], layer.in_features), (layer.out_features, a.shape[0])
        if tuple(a.shape) != expected_a or tuple(b.shape) != expected_b:
            raise ExplainError(
                f"the adapter {path} does not fit this model: {module_name}.lora_A is {list(a.shape)} "
                f"and lora_B {list(b.shape)}, but this model's {module_name} is {layer.in_features} -> "
                f"{layer.out_features}, which needs lora_A {list(expected_a)} and lora_B "
                f"{list(expected_b)}.{trained_on} An adapter fits only the base model it was trained on"
            )


class Adapter:
    """An applied adapter: what it changes, and merge / unmerge (W <-> W + (alpha / r) B A)."""

    def __init__(self, path: str, config: dict, settings: LoraSettings, layers: dict, applied_with: str, trace: Trace):
        self.path, self.config, self.settings = path, config, settings
        self.name = os.path.basename(os.path.normpath(path))
        self.layers = layers  # module name -> the wrapping layer (peft's lora.Linear or explain's LoraLinear)
        self.applied_with, self.trace = applied_with, trace
        self.merged = False

    def __repr__(self):
        return (
            f"explain.adapters.Adapter({self.name!r}, LoRA r={self.settings.r}, alpha={self.settings.lora_alpha}, "
            f"{len(self.layers)} layers, {'merged' if self.merged else 'unmerged'}, {self.applied_with})"
        )

    def _quantized_base(self) -> list[str]:
        return [name for name, layer in self.layers.items() if not isinstance(_base(layer), nn.Linear)]

    def merge(self) -> None:
        """Add (alpha / r) B A into each base weight: the same outputs (up to rounding), no extra products."""
        quantized = self._quantized_base()
        if quantized:
            raise ExplainError(
                f"cannot merge into quantized layers ({quantized[0]}, ...): W + (alpha / r) B A would "
                "have to be quantized again, changing the base weights. The adapter runs unmerged "
                "(base(x) + (alpha / r) B(A(x)) at every product); to merge, load without quantization="
            )
        self._toggle(True)

    def unmerge(self) -> None:
        """Subtract (alpha / r) B A again: the base weights back, up to the rounding of their dtype."""
        self._toggle(False)

    def _toggle(self, merge: bool) -> None:
        if merge == self.merged:
            return
        start, t0 = time.time(), time.perf_counter()
        with torch.no_grad():
            for layer in self.layers.values():
                layer.merge() if merge else layer.unmerge()
        self.merged = merge
        self.trace.emit(
            "weights",
            "adapter_merge",
            {"adapter": self.name, "merged": merge, "layers": len(self.layers)},
            start=start,
            duration=time.perf_counter() - t0,
        )


def _base(layer: Any) -> nn.Module:  # peft's LoraLayer or explain's LoraLinear
    return layer.get_base_layer() if hasattr(layer, "get_base_layer") else layer.base_layer


def _peft_can_wrap(model: nn.Module, weights: dict) -> tuple[bool, str]:
    """Whether peft applies the adapter, and why not. The layers are looked at first: peft imports transformers
    (and torchao, ~90 MB of modules in a kernel), which a model of explain's quantized layers never uses."""
    kinds = {type(model.get_submodule(name)).__name__ for name in weights}
    if kinds != {"Linear"}:
        return False, (
            f"peft cannot wrap {', '.join(sorted(kinds - {'Linear'}))} (explain's quantized layers): "
            "explain's readable LoraLinear, proven equal to peft"
        )
    try:
        import peft  # noqa: F401  (imports transformers: only when an adapter is asked for and peft can wrap it)
    except ImportError:
        return False, "peft is not installed (pip install peft): explain's readable LoraLinear, proven equal to peft"
    return True, ""


def _apply_with_peft(model: nn.Module, config: dict, settings: LoraSettings, weights: dict) -> dict:
    import peft
    from peft import LoraConfig, inject_adapter_in_model, set_peft_model_state_dict

    # a null field is peft's default (alpha_pattern: null made peft fail with "'NoneType' object has no attribute")
    known = {k: v for k, v in config.items() if k in LoraConfig.__dataclass_fields__ and v is not None}
    lora_config = LoraConfig(**{**known, "inference_mode": True})
    state = {f"{name}.{part}.weight": tensor for name, pair in weights.items() for part, tensor in pair.items()}
    inject_adapter_in_model(lora_config, model, adapter_name="default", state_dict=state)
    result = set_peft_model_state_dict(model, state, adapter_name="default")
    unexpected = result.unexpected_keys  # type: ignore[attr-defined]  # peft annotates torch's result as a bare namedtuple
    if unexpected:
        raise ExplainError(f"peft {peft.__version__} did not place {unexpected[:3]} of the adapter")
    return {name: model.get_submodule(name) for name in weights}


def _apply_readable(model: nn.Module, settings: LoraSettings, weights: dict) -> dict:
    layers = {}
    for name, pair in weights.items():
        base = model.get_submodule(name)
        rank = pair["lora_A"].shape[0]
        layer = LoraLinear(base, pair["lora_A"].float(), pair["lora_B"].float(), settings.scaling(name, rank))
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child, layer)
        layers[name] = layer
    return layers


def delta_facts(name: str, pair: dict, base: Any, scaling: float) -> dict:  # base: nn.Linear or a QuantizedLinear
    a, b = pair["lora_A"].float(), pair["lora_B"].float()
    # ||B A||_F^2 = sum((B^T B) * (A A^T)): two r x r matrices instead of the (out, in) product
    delta_norm = scaling * float(((b.t() @ b) * (a @ a.t())).sum().clamp(min=0).sqrt())
    weight = base.weight if isinstance(base, nn.Linear) else base.dequantized_weight()
    weight_norm = float(weight.detach().float().norm())
    return {
        "module": name,
        "rank": int(a.shape[0]),
        "scaling": scaling,
        "in_features": int(a.shape[1]),
        "out_features": int(b.shape[0]),
        "parameters": a.numel() + b.numel(),
        "bytes": pair["lora_A"].nbytes + pair["lora_B"].nbytes,
        "base_parameters": int(a.shape[1] * b.shape[0]),
        "delta_norm": delta_norm,
        "weight_norm": weight_norm,
        "relative_change": delta_norm / weight_norm if weight_norm else None,
        "base_layer": type(base).__name__,
    }


def adapter_event(
    name: str,
    path: str,
    settings: LoraSettings,
    facts: list[dict],
    applied_with: str,
    base_parameters: int,
    merged: bool = False,
) -> dict:
    """The weights/adapter event's data: the settings, one delta_facts entry per adapted layer, the totals (the
    transformers backend fills it from peft's layers with the same function)."""
    adapter_parameters = sum(f["parameters"] for f in facts)
    return {
        "adapter": name,
        "path": path,
        "peft_type": "LORA",
        "applied_with": applied_with,
        "base_model_name_or_path": settings.base_model_name_or_path,
        "r": settings.r,
        "lora_alpha": settings.lora_alpha,
        "use_rslora": settings.use_rslora,
        "target_modules": sorted(settings.target_modules)
        if isinstance(settings.target_modules, (list, set))
        else settings.target_modules,
        "layers": len(facts),
        "modules": facts,
        "adapter_parameters": adapter_parameters,
        "base_parameters": base_parameters,
        "share_of_base": adapter_parameters / base_parameters,
        "adapter_bytes": sum(f["bytes"] for f in facts),
        "merged": merged,
        "formula": "W' = W + (alpha / r) B A; unmerged: y = base(x) + (alpha / r) B(A(x))",
    }


def load_adapter(
    model: nn.Module,
    path,
    trace: Trace,
    apply_with: str | None = None,
    base_parameters: int | None = None,
    base_model: str | None = None,
) -> Adapter:
    """Check the adapter folder against `model`, apply it (peft where it can wrap the layers, else LoraLinear),
    emit weights/adapter and return the Adapter. apply_with="explain" forces the readable layer (the tests)."""
    start, t0 = time.time(), time.perf_counter()
    path = os.fspath(path)
    adapter_config, settings, weights = read_adapter(path)
    check_fits(model, weights, settings, path)
    use_peft, why = _peft_can_wrap(model, weights)
    if apply_with == "explain":
        use_peft, why = False, "asked for explain's readable LoraLinear"
    elif apply_with not in (None, "peft"):
        raise ExplainError(f'apply_with={apply_with!r}: use None (peft where it can), "peft" or "explain"')
    elif apply_with == "peft" and not use_peft:
        raise ExplainError(f'apply_with="peft" but {why.split(":")[0]}')
    bases = {name: model.get_submodule(name) for name in weights}
    facts = [
        delta_facts(name, pair, bases[name], settings.scaling(name, pair["lora_A"].shape[0]))
        for name, pair in weights.items()
    ]
    with torch.no_grad():
        if use_peft:
            import peft

            layers = _apply_with_peft(model, adapter_config, settings, weights)
            applied_with = f"peft {peft.__version__} (inject_adapter_in_model + set_peft_model_state_dict)"
        else:
            layers = _apply_readable(model, settings, weights)
            applied_with = f"explain.adapters.lora.LoraLinear ({why})"
    adapter = Adapter(path, adapter_config, settings, layers, applied_with, trace)
    if base_parameters is None:
        base_parameters = sum(p.numel() for n, p in model.named_parameters() if "lora_" not in n)
    data = adapter_event(adapter.name, path, settings, facts, applied_with, base_parameters)
    warning = base_model_warning(settings, base_model, path)
    if warning:
        data["warnings"] = [warning]
        warnings.warn(warning, UserWarning, stacklevel=3)
    trace.emit("weights", "adapter", data, start=start, duration=time.perf_counter() - t0)
    return adapter


def run(loading, trace: Trace) -> None:
    """After the placement stage (a stage's shape, explain/stages/loading.py): a PEFT LoRA adapter on top, when
    adapter= was given (adapters/adapter)."""
    if loading.adapter is not None:
        load = trace.last("weights", "load")
        assert load is not None, "the weights stage emitted weights/load"
        loaded = os.fspath(loading.model) if isinstance(loading.model, (str, os.PathLike)) else None
        loading.adapted = load_adapter(
            loading.module, loading.adapter, trace, base_parameters=load.data["parameters"], base_model=loaded
        )
