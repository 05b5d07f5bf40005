"""The architecture registry: config.json's `architectures[0]` -> the module holding that model's one file.

Each model module defines a config dataclass (fields = config.json keys) that answers the common names
(num_hidden_layers, hidden_size, num_attention_heads, max_position_embeddings, vocab_size; a family with other
names maps them in an `attribute_map`, as GPT-2's does) and a ...ForCausalLM class with `config_class`,
`tied_weights`, `learned_positions` (True when no position past max_position_embeddings has an embedding) and a
forward `(input_ids, cache=None, position_ids=None, attention_mask=None, logits_to_keep=0,
output_attentions=False)` that returns an object with `.logits`, `.cache` and `.attentions` (an attention mask
over every position so far gives left-padded rows their positions and hides their pads).
Adding one: docs/architecture.md, "Add an architecture".
"""

from __future__ import annotations

import functools
import importlib

from ..errors import UnsupportedError
from ..utils.config_names import COMMON_NAMES  # noqa: F401  (explain.models.COMMON_NAMES, as before)
from ..utils.config_names import common_config as common_names_of

# architecture name (as in config.json) -> (module, class name)
ARCHITECTURES = {
    "LlamaForCausalLM": ("llama", "LlamaForCausalLM"),
    "MistralForCausalLM": ("llama", "LlamaForCausalLM"),  # Llama's layers and names; sliding_window checked there
    "GPT2LMHeadModel": ("gpt2", "GPT2LMHeadModel"),
    "Qwen2ForCausalLM": ("qwen2", "Qwen2ForCausalLM"),
    "Qwen3ForCausalLM": ("qwen3", "Qwen3ForCausalLM"),
    "SmolLM3ForCausalLM": ("smollm3", "SmolLM3ForCausalLM"),
}
# GGUF general.architecture -> the architecture name transformers gives the same checkpoint
GGUF_ARCHITECTURES = {
    "llama": "LlamaForCausalLM",
    "mistral": "LlamaForCausalLM",
    "qwen2": "Qwen2ForCausalLM",
    "qwen3": "Qwen3ForCausalLM",
    "gpt2": "GPT2LMHeadModel",
    "smollm3": "SmolLM3ForCausalLM",
}


def register(architecture: str, module: str, class_name: str) -> None:
    ARCHITECTURES[architecture] = (module, class_name)
    _family_names.cache_clear()


def architecture_of(config: dict) -> str:
    names = config.get("architectures") or []
    if not names:
        raise UnsupportedError(
            f'config has no "architectures" entry (model_type {config.get("model_type")!r}); '
            f"add one of {', '.join(sorted(ARCHITECTURES))} to config.json"
        )
    return names[0]


def model_class(config: dict):
    """The ...ForCausalLM class for a config dict, or an error naming every supported architecture."""
    name = architecture_of(config)
    if name not in ARCHITECTURES:
        raise UnsupportedError(
            f"architecture {name!r} is not supported by explain; supported: {', '.join(sorted(ARCHITECTURES))}"
        )
    module, class_name = ARCHITECTURES[name]
    return getattr(importlib.import_module(f"{__name__}.{module}"), class_name)


def build_config(config: dict):
    return model_class(config).config_class.from_dict(config)


@functools.cache
def _family_names() -> dict[str, tuple[str, ...]]:
    """Common name -> the other names families use for it, from every registered config class's attribute_map."""
    names: dict[str, tuple[str, ...]] = {}
    for module, class_name in ARCHITECTURES.values():
        config_class = getattr(importlib.import_module(f"{__name__}.{module}"), class_name).config_class
        for common, own in getattr(config_class, "attribute_map", {}).items():
            names[common] = names.get(common, ()) + ((own,) if own not in names.get(common, ()) else ())
    return names


def common_config(config: dict) -> dict:
    """A config.json dict's shape under the common names (COMMON_NAMES), whatever its family calls them (GPT-2:
    n_layer, n_embd, n_head, n_positions), for code that reads a dict: a saved trace's hyperparameters, the device
    planner's configs. A model's config object answers the same names itself. None where the config has no value."""
    return common_names_of(config, _family_names())
