"""What a config may ask for: every size checked before anything is allocated.

A config.json is a file someone handed you. Before explain builds a model from it, each size must be a positive
whole number, each epsilon a positive finite number (`check_config`, at the config stage); then, before the model's
skeleton is built, the sizes must fit the checkpoint that comes with the config (no more layers than it holds, no
dimension larger than its largest tensor's) and the weights must fit this machine's free memory
(`check_against_checkpoint`, at the weights stage). Each refusal names the file, the key and the fix.
"""

from __future__ import annotations

import math
import re

import psutil
import torch

from ..errors import ConfigValueError, CorruptFileError, ExplainError
from ..utils.units import size_text

LAYER_KEYS = ("num_hidden_layers", "n_layer")
# sizes that are a dimension of some weight, so none can exceed the checkpoint's largest dimension
DIMENSION_KEYS = (
    "vocab_size",
    "hidden_size",
    "n_embd",
    "intermediate_size",
    "n_inner",
    "num_attention_heads",
    "n_head",
    "num_key_value_heads",
    "head_dim",
)
POSITIVE_INTEGERS = (
    *LAYER_KEYS,
    *DIMENSION_KEYS,
    "max_position_embeddings",
    "n_positions",
    "n_ctx",
    "sliding_window",
    "no_rope_layer_interval",
)
NON_NEGATIVE_INTEGERS = ("max_window_layers",)
OPTIONAL = ("n_inner", "num_key_value_heads", "head_dim", "sliding_window", "n_ctx")  # null means "derive it"
POSITIVE_NUMBERS = ("rms_norm_eps", "layer_norm_epsilon", "layer_norm_eps", "rope_theta")
BOOLEANS = ("tie_word_embeddings", "attention_bias", "mlp_bias", "use_sliding_window", "scale_attn_weights")
STRINGS = ("model_type", "hidden_act", "activation_function")
OPTIONAL_STRINGS = ("torch_dtype", "dtype")  # "bfloat16", or null
OBJECTS = ("rope_scaling", "rope_parameters")  # a dict, or null
LISTS = ("layer_types", "no_rope_layers")  # a list, or null
TOKEN_IDS = ("bos_token_id", "eos_token_id", "pad_token_id")  # an id, a list of ids, or null
LARGEST_NUMBER = 1e12  # rope_theta reaches 1e8 in long-context models; torch cannot take an int beyond 2**63
LARGEST = 2**31 - 1  # torch sizes a dimension with int64, but no real model comes near this
INTEGER = re.compile(r"^(u?int\d+|[iu]\d+|bool)$", re.IGNORECASE)  # torch, safetensors and GGUF integer dtypes
LAYER = re.compile(r"^(.*?(?:^|\.)(?:layers|h|blk|block|blocks)\.)(\d+)\.")


def _fix(source: str) -> str:
    return (
        f"correct it in {source}, or get the file again from the model's original repository"
        if "GGUF metadata" not in source
        else "the file is damaged or was written wrong: download it again"
    )


def check_config(config: dict, source: str) -> None:
    """Types and ranges of the sizes explain's models read; `source` names the file (config.json's path, or the
    GGUF file whose metadata the config came from)."""
    for key in POSITIVE_INTEGERS + NON_NEGATIVE_INTEGERS:
        if key not in config or (config[key] is None and key in OPTIONAL):
            continue
        value, least = config[key], 0 if key in NON_NEGATIVE_INTEGERS else 1
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigValueError(
                f'{source}: "{key}" is {value!r} ({type(value).__name__}); it must be a whole '
                f"number of at least {least}: {_fix(source)}"
            )
        if not least <= value <= LARGEST:
            raise ConfigValueError(
                f'{source}: "{key}" is {value}; it must be between {least} and {LARGEST}: {_fix(source)}'
            )
    for key in POSITIVE_NUMBERS:
        if key not in config:
            continue
        value = config[key]
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not 0 < value <= LARGEST_NUMBER
            or not math.isfinite(value)
        ):
            raise ConfigValueError(
                f'{source}: "{key}" is {value!r}; it must be a positive finite number (a NaN or '
                f"a negative {key} makes every logit NaN): {_fix(source)}"
            )
    names = config.get("architectures")
    if "architectures" in config and not (isinstance(names, list) and names and all(isinstance(n, str) for n in names)):
        raise ConfigValueError(
            f'{source}: "architectures" is {names!r}; it must be a list of class names such as '
            f'["LlamaForCausalLM"]: {_fix(source)}'
        )
    for keys, kinds, what in (
        (BOOLEANS, bool, "true or false"),
        (STRINGS, str, "a string"),
        (OPTIONAL_STRINGS, (str, type(None)), "a string (or null)"),
        (OBJECTS, (dict, type(None)), "an object (or null)"),
        (LISTS, (list, type(None)), "a list (or null)"),
    ):
        for key in keys:
            if key in config and not isinstance(config[key], kinds):
                raise ConfigValueError(f'{source}: "{key}" is {config[key]!r}; it must be {what}: {_fix(source)}')
    for key in OBJECTS:  # rope_scaling / rope_parameters: their factors and lengths are numbers
        for name, value in (config.get(key) or {}).items():
            per_dimension = isinstance(value, list) and name.endswith("_factor")  # longrope's long/short_factor
            numbers = value if per_dimension else [value]
            if name.endswith(("factor", "theta", "max_position_embeddings", "beta_fast", "beta_slow")) and any(
                isinstance(item, bool) or not isinstance(item, (int, float)) or not math.isfinite(item)
                for item in numbers
            ):
                what = "a finite number"
                if per_dimension:
                    what = "a list of finite numbers (one per rotary dimension pair)"
                raise ConfigValueError(
                    f'{source}: "{key}"["{name}"] is {value!r:.80}; it must be {what}: {_fix(source)}'
                )
    for key in TOKEN_IDS:
        value = config.get(key)
        ids = value if isinstance(value, list) else [value]
        if value is not None and not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
            raise ConfigValueError(
                f'{source}: "{key}" is {value!r}; it must be a token id, a list of token ids, or null: {_fix(source)}'
            )
    heads = config.get("num_attention_heads") or config.get("n_head")
    kv_heads = config.get("num_key_value_heads")
    if heads and kv_heads and heads % kv_heads:
        raise ConfigValueError(
            f'{source}: "num_attention_heads" ({heads}) is not a multiple of '
            f'"num_key_value_heads" ({kv_heads}); grouped-query attention shares each key/value '
            f"head between the same number of query heads: {_fix(source)}"
        )
    hidden = config.get("hidden_size") or config.get("n_embd")
    if heads and hidden and config.get("head_dim") is None and hidden % heads and config.get("model_type") != "qwen3":
        raise ConfigValueError(
            f'{source}: "hidden_size" ({hidden}) is not a multiple of the number of attention '
            f'heads ({heads}) and no "head_dim" is given: {_fix(source)}'
        )


def layers_in(names) -> tuple[int, str] | None:
    """(number of decoder layers, their name prefix) that a checkpoint's tensor names hold, or None."""
    found, prefix = -1, None
    for name in names:
        match = LAYER.match(name)
        if match and int(match.group(2)) > found:
            found, prefix = int(match.group(2)), match.group(1)
    return (found + 1, prefix) if prefix is not None else None


def check_against_checkpoint(config: dict, inventory: dict, source: str, files: str) -> None:
    """Before the skeleton is built: the config's layer count and sizes must fit the checkpoint's tensors
    (`inventory`: stored name -> (shape, stored dtype)). `files` names the checkpoint for the message."""
    if not inventory:
        raise ExplainError(f"the checkpoint ({files}) holds no tensors; it is empty or damaged: download it again")
    layers = layers_in(inventory)
    key = next((k for k in LAYER_KEYS if isinstance(config.get(k), int)), None)
    if key is not None and layers is not None and config[key] > layers[0]:
        held, prefix = layers
        raise ConfigValueError(
            f"{source} asks for {key}={config[key]} but the checkpoint ({files}) lacks "
            f"{prefix}{held} and every layer after it: it holds {held} layers. The config and the "
            f"weights do not belong together (check {key} in {source} / the repo revision)"
        )
    largest = max((int(d) for shape, _ in inventory.values() for d in shape), default=0)
    for key in DIMENSION_KEYS:
        value = config.get(key)
        embeddings = ("embed", "wte", "token_embd", "word_embeddings")
        if (
            key == "vocab_size"
            and isinstance(value, int)
            and value > largest
            and not any(part in name for name in inventory for part in embeddings)
        ):
            shared = (
                " (tie_word_embeddings: the output head reuses it, so the file stores only the embedding)"
                if config.get("tie_word_embeddings", True)
                else ""
            )
            raise CorruptFileError(
                f"the checkpoint ({files}) holds no tensor with {value} rows (vocab_size in {source}): it lacks the "
                f"token embedding (model.embed_tokens.weight or its architecture's name){shared}, which the model "
                "cannot run without. The file is incomplete, or the config and the weights do not belong together: "
                "download the checkpoint again"
            )
        if isinstance(value, int) and value > largest:
            raise ConfigValueError(
                f'{source}: "{key}" is {value}, larger than any dimension of any tensor in the '
                f"checkpoint ({files}; the largest is {largest}). The config and the weights do not "
                f"belong together (check {key} in {source} / the repo revision)"
            )


def check_weight_dtypes(config: dict, inventory: dict, files: str) -> None:
    """A checkpoint of a model that is not quantized stores its weights and biases as floating-point numbers; a header
    that says I32 for them lies (read as integers, every weight would be a bit pattern, and torch refuses to build
    float parameters from them mid-load). `inventory` is name -> (shape, stored dtype), from the files' headers."""
    if config.get("quantization_config"):
        return  # bitsandbytes, GPTQ, AWQ...: integer weights are the point
    for name, (_, stored) in inventory.items():
        if name.endswith((".weight", ".bias")) and INTEGER.match(str(stored)):
            declared = config.get("torch_dtype") or config.get("dtype") or "a float dtype"
            raise CorruptFileError(
                f"{files}: its header says {name} is {stored}, an integer type, but the weights of this model are "
                f"floating-point numbers (config.json dtype {declared}, no quantization_config); the header does not "
                "describe the data, or the file is not this model's: download it again"
            )


def check_memory(inventory: dict, dtype: torch.dtype, files: str, available: int | None = None) -> int:
    """The bytes the checkpoint's tensors take once read as `dtype` (integer tensors keep their size); refused
    before reading when they exceed the memory this machine has available. Returns the bytes."""
    item = torch.finfo(dtype).bits // 8
    needed = 0
    for shape, stored in inventory.values():
        elements = math.prod(int(d) for d in shape)
        integer = INTEGER.match(stored) is not None
        needed += elements * (_integer_bytes(stored) if integer else item)
    available = psutil.virtual_memory().available if available is None else available
    if needed > available:
        raise ExplainError(
            f"reading the checkpoint ({files}) as {str(dtype)[6:]} needs {size_text(needed)} of memory "
            f"and this machine has {size_text(available)} available; pass dtype=torch.bfloat16 "
            "(half of float32), use a smaller model, or free memory"
        )
    return needed


def _integer_bytes(stored: str) -> int:
    digits = "".join(c for c in stored if c.isdigit())
    return max(1, int(digits) // 8) if digits else 1
