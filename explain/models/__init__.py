"""The architecture registry: config.json's `architectures[0]` -> the module holding that model's one file.

Each model module defines a config dataclass (fields = config.json keys) and a ...ForCausalLM class whose
forward is `(input_ids, cache=None, position_ids=None, logits_to_keep=0, output_attentions=False)` and
returns an object with `.logits` and `.attentions`.
"""

from __future__ import annotations

import importlib

from ..errors import UnsupportedError

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
GGUF_ARCHITECTURES = {"llama": "LlamaForCausalLM", "mistral": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM",
                      "qwen3": "Qwen3ForCausalLM", "gpt2": "GPT2LMHeadModel", "smollm3": "SmolLM3ForCausalLM"}


def register(architecture: str, module: str, class_name: str) -> None:
    ARCHITECTURES[architecture] = (module, class_name)


def architecture_of(config: dict) -> str:
    names = config.get("architectures") or []
    if not names:
        raise UnsupportedError(f"config has no \"architectures\" entry (model_type {config.get('model_type')!r}); "
                               f"add one of {', '.join(sorted(ARCHITECTURES))} to config.json")
    return names[0]


def model_class(config: dict):
    """The ...ForCausalLM class for a config dict, or an error naming every supported architecture."""
    name = architecture_of(config)
    if name not in ARCHITECTURES:
        raise UnsupportedError(f"architecture {name!r} is not supported by explain; supported: "
                               f"{', '.join(sorted(ARCHITECTURES))}")
    module, class_name = ARCHITECTURES[name]
    return getattr(importlib.import_module(f"{__name__}.{module}"), class_name)


def build_config(config: dict):
    return model_class(config).config_class.from_dict(config)
