"""A config's shape under the common names, whatever a model family calls them (GPT-2: n_layer, n_embd, n_head,
n_positions), for code that reads a plain dict: a saved trace's hyperparameters in the event schema and the
widgets, which import no model. explain.models.common_config answers the same from the registered model files'
`attribute_map`s; tests/test_models.py checks that OTHER_NAMES is exactly what those declare."""

from __future__ import annotations

COMMON_NAMES = ("num_hidden_layers", "hidden_size", "num_attention_heads", "max_position_embeddings", "vocab_size")

# common name -> the other names model families give it in config.json (GPT-2's, as transformers' GPT2Config maps them)
OTHER_NAMES = {
    "hidden_size": ("n_embd",),
    "max_position_embeddings": ("n_positions",),
    "num_attention_heads": ("n_head",),
    "num_hidden_layers": ("n_layer",),
}


def common_config(config: dict, other_names: dict = OTHER_NAMES) -> dict:
    """The COMMON_NAMES' values in `config`, under whichever name it uses; None where it has no value."""
    values = {}
    for name in COMMON_NAMES:
        candidates = (name,) + tuple(other_names.get(name, ()))
        values[name] = next((config[key] for key in candidates if config.get(key) is not None), None)
    return values
