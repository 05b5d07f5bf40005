"""Stage 2b, config: the model's config.json, or the same keys read from a GGUF file's metadata.

For GGUF the key names come from the `gguf` package's constants (gguf.Keys), and the mapping to config.json
keys is the one transformers applies (transformers/integrations/ggml.py, GGUF_CONFIG_MAPPING).
"""

from __future__ import annotations

import inspect
import json
import os

import gguf
import numpy as np

from ..errors import CorruptFileError, ExplainError, NotCachedError
from ..models import GGUF_ARCHITECTURES, architecture_of, model_class
from ..trace import Trace
from . import hub
from .config_checks import check_config
from .loading import Loading

# GGUF metadata key (after "<arch>.") -> config.json key, per GGUF architecture, as transformers maps them
_LLAMA_LIKE = {
    "context_length": "max_position_embeddings",
    "block_count": "num_hidden_layers",
    "feed_forward_length": "intermediate_size",
    "embedding_length": "hidden_size",
    "rope.freq_base": "rope_theta",
    "attention.head_count": "num_attention_heads",
    "attention.head_count_kv": "num_key_value_heads",
    "attention.layer_norm_rms_epsilon": "rms_norm_eps",
    "vocab_size": "vocab_size",
}
GGUF_CONFIG_KEYS = {
    "llama": {**_LLAMA_LIKE, "rope.dimension_count": "head_dim"},  # dimension_count == head_dim for llama only
    "mistral": {**_LLAMA_LIKE, "rope.dimension_count": "head_dim"},
    "qwen2": _LLAMA_LIKE,
    "qwen3": {**_LLAMA_LIKE, "attention.key_length": "head_dim"},
    "gpt2": {
        "block_count": "n_layer",
        "context_length": "n_ctx",
        "embedding_length": "n_embd",
        "attention.head_count": "n_head",
        "attention.layer_norm_epsilon": "layer_norm_epsilon",
    },
}
GGUF_REQUIRED_KEYS = ("block_count", "embedding_length", "attention.head_count")  # a model's shape needs them
# the hyperparameters worth showing, in the names each family uses
KEY_HYPERPARAMETERS = (
    "vocab_size",
    "hidden_size",
    "n_embd",
    "intermediate_size",
    "num_hidden_layers",
    "n_layer",
    "num_attention_heads",
    "n_head",
    "num_key_value_heads",
    "head_dim",
    "max_position_embeddings",
    "n_positions",
    "n_ctx",
    "rope_theta",
    "rope_scaling",
    "rope_parameters",
    "rms_norm_eps",
    "layer_norm_epsilon",
    "tie_word_embeddings",
    "hidden_act",
    "bos_token_id",
    "eos_token_id",
    "pad_token_id",
)


JSON_LIMIT = 64 * 2**20  # a config or an index is kilobytes; a bigger file is not one, and is not read into memory


def read_json(path: str, what: str) -> dict:
    try:
        size = os.path.getsize(path)
        if size > JSON_LIMIT:
            raise CorruptFileError(
                f"{path} is {size / 2**20:.0f} MiB, far more than a {what} ever is (explain reads at "
                f"most {JSON_LIMIT // 2**20} MiB); it is not what its name says: get it again"
            )
        with open(path, encoding="utf-8") as f:
            value = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as error:
        reason = "nested too deeply" if isinstance(error, RecursionError) else str(error)
        raise CorruptFileError(
            f"{path} is not valid JSON ({reason}); the {what} is truncated or corrupt: "
            "download it again or restore it from the original checkpoint"
        ) from None
    except OSError as error:
        raise CorruptFileError(
            f"{path} cannot be read ({error.strerror or error}); check the file and its permissions"
        ) from None
    if not isinstance(value, dict):
        raise CorruptFileError(f"{path} holds JSON but not an object; it is not a {what}")
    return value


class GGUFFile(gguf.GGUFReader):
    """gguf's own reader, over a plain ndarray view of its memory map: the same bytes, no copy, parsed ~3x faster.

    The reader slices its data once per part of every metadata field: about 250,000 small slices for a 49,152-token
    vocabulary and its merges. On an np.memmap each slice runs the subclass's Python hooks (__getitem__,
    __array_finalize__), which were two thirds of the parse and a third of the whole load of the embedded model.
    """

    @property
    def data(self):
        return self._data

    @data.setter
    def data(self, value):  # GGUFReader.__init__ assigns its np.memmap here
        self.filename = getattr(value, "filename", None)
        self._data = value.view(np.ndarray)  # still the mapped file: the view keeps the memmap as its base


def gguf_reader(path: str) -> gguf.GGUFReader:
    """Open a GGUF file (memory-mapped); a truncated or foreign file gets an error naming it, and a header that
    states more than explain reads is refused before gguf's reader builds it (formats/gguf_header.py)."""
    from ..formats.gguf_header import check_header

    check_header(path)
    try:
        return GGUFFile(path, "r")
    except Exception as error:  # the reader raises ValueError, IndexError, struct errors... on bad bytes
        raise CorruptFileError(
            f"{path} is not a readable GGUF file ({type(error).__name__}: {error}); "
            "it is truncated or corrupt: download it again (or run `python -m explain "
            "provision` for the embedded model)"
        ) from None


def gguf_metadata(reader: gguf.GGUFReader, skip_arrays: bool = True) -> dict:
    """Every metadata field as plain Python (vocabulary-sized arrays skipped unless asked)."""
    meta = {}
    for name, value in reader.fields.items():
        if name.startswith("GGUF.") or (
            skip_arrays
            and name
            in (
                gguf.Keys.Tokenizer.LIST,
                gguf.Keys.Tokenizer.TOKEN_TYPE,
                gguf.Keys.Tokenizer.MERGES,
                gguf.Keys.Tokenizer.SCORES,
            )
        ):
            continue
        meta[name] = value.contents()
    return meta


def config_from_gguf(reader: gguf.GGUFReader, path: str) -> dict:
    try:
        meta = gguf_metadata(reader)
    except (ValueError, TypeError, IndexError) as error:  # a field whose bytes are not what its type says
        raise CorruptFileError(
            f"{path}: its metadata cannot be read ({type(error).__name__}: {error}); the file is "
            "truncated or corrupt: download it again"
        ) from None
    arch = meta.get(gguf.Keys.General.ARCHITECTURE)
    if not isinstance(arch, str) or arch not in GGUF_CONFIG_KEYS:
        raise ExplainError(
            f"{path}: GGUF architecture {arch!r} is not supported; supported GGUF architectures: "
            f"{', '.join(sorted(GGUF_CONFIG_KEYS))}"
        )
    lacking = [f"{arch}.{key}" for key in GGUF_REQUIRED_KEYS if f"{arch}.{key}" not in meta]
    if lacking:
        raise CorruptFileError(
            f"{path} lacks the metadata {', '.join(lacking)} that every {arch} GGUF file holds; "
            "it is damaged or was written wrong: download it again"
        )
    config = {
        "model_type": arch,
        "architectures": [GGUF_ARCHITECTURES[arch]],
        "_name_or_path": meta.get(gguf.Keys.General.NAME),
    }
    for key, hf_key in GGUF_CONFIG_KEYS[arch].items():
        if f"{arch}.{key}" in meta:
            config[hf_key] = meta[f"{arch}.{key}"]
    if "vocab_size" not in config and gguf.Keys.Tokenizer.LIST in reader.fields:
        config["vocab_size"] = len(reader.fields[gguf.Keys.Tokenizer.LIST].data)
    for key, hf_key in (
        (gguf.Keys.Tokenizer.BOS_ID, "bos_token_id"),
        (gguf.Keys.Tokenizer.EOS_ID, "eos_token_id"),
        (gguf.Keys.Tokenizer.PAD_ID, "pad_token_id"),
        (gguf.Keys.Tokenizer.UNK_ID, "unk_token_id"),
    ):
        if key in meta:
            config[hf_key] = meta[key]
    names = {t.name for t in reader.tensors}
    config["tie_word_embeddings"] = "output.weight" not in names  # no separate LM head: it reuses the embedding
    if arch == "gpt2":
        config["n_positions"] = config.get("n_ctx")
    config["torch_dtype"] = "float32"  # GGUF tensors are dequantised to float32, as transformers does
    return config


def generation_config(config: dict, generation_file: dict | None, defaults: dict) -> tuple[dict, dict]:
    """The model's generation defaults: transformers' `defaults` (every knob's, explain.generation.settings'
    GENERATE_DEFAULTS: the caller passes them, as this stage sits below generation), then config.json's token ids,
    then generation_config.json. Returns (values, where each value came from)."""
    values = dict(defaults)
    source = {k: "transformers default" for k in defaults}
    for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
        if config.get(key) is not None:
            values[key], source[key] = config[key], "model config"
    for key, value in (generation_file or {}).items():
        if not key.startswith("_") and key != "transformers_version":
            values[key], source[key] = value, "generation_config.json"
    return values, source


def load_config(
    config_path: str | None, gguf_path: str | None, generation_path: str | None, trace: Trace, generation_defaults: dict
) -> tuple[dict, dict, dict, gguf.GGUFReader | None]:
    """Run the config stage. Returns (config dict, generation defaults, their sources, the open GGUF reader if
    any, for the tokenizer and weights stages to reuse); emits `config/config`."""
    reader = None
    with trace.span("config", "config") as data:
        if config_path is not None:
            config = read_json(config_path, "model config (config.json)")
            data["source"] = config_path
        else:
            assert gguf_path is not None, "load_config needs config.json or a GGUF file"
            reader = gguf_reader(gguf_path)  # parses the header and metadata; tensors stay memory-mapped
            config = config_from_gguf(reader, gguf_path)
            data["source"] = f"GGUF metadata of {gguf_path}"
        check_config(config, config_path or f"the GGUF metadata of {gguf_path}")  # sizes, epsilons: before any use
        architecture_of(config)  # a config with no architectures entry fails here, with the fix
        generation_file = read_json(generation_path, "generation config") if generation_path else None
        generation, sources = generation_config(config, generation_file, generation_defaults)
        data.update(
            architecture=config["architectures"][0],
            model_type=config.get("model_type"),
            hyperparameters={k: config[k] for k in KEY_HYPERPARAMETERS if k in config},
            checkpoint_dtype=config.get("dtype") or config.get("torch_dtype"),
            generation_config=generation,
            generation_config_source=sources,
            has_generation_config_file=generation_file is not None,
        )
    return config, generation, sources, reader


def folder_has_gguf(folder: str) -> list[str]:
    return sorted(f for f in os.listdir(folder) if f.endswith(".gguf")) if os.path.isdir(folder) else []


def run(loading: Loading, trace: Trace) -> None:
    """The config stage: the model's files (config/file), then config.json or the GGUF metadata and the generation
    defaults (config/config); the model class the architecture names."""
    model, gguf_file = loading.model, loading.gguf_file
    if hub.is_local(model) and gguf_file is None and not os.path.lexists(os.path.join(model, "config.json")):
        ggufs = folder_has_gguf(model)
        hint = f' It holds GGUF files ({", ".join(ggufs)}): pass gguf_file="{ggufs[0]}".' if ggufs else ""
        raise ExplainError(
            f"the folder {model} has no config.json, so it is not a Hugging Face model folder.{hint} "
            "A model folder needs config.json, *.safetensors and tokenizer.json "
            "(write one with pipe.save_pretrained(folder))."
        )
    if gguf_file is not None:
        loading.gguf_path = loading.resolve(gguf_file, trace)
    if loading.config is not None:
        config = loading.config
        loading.config_path = (
            config
            if os.path.isfile(str(config))
            else hub.resolve(config, "config.json", revision=loading.revision, token=loading.token, trace=trace)
        )
    elif loading.gguf_path is None:
        try:
            loading.config_path = loading.resolve("config.json", trace)
        except NotCachedError:
            ggufs = [f for f in hub.list_files(model, loading.revision) if f.endswith(".gguf")]
            if not ggufs:
                raise
            raise ExplainError(
                f"{model} has no config.json but holds GGUF files ({', '.join(ggufs)}): pass "
                f'gguf_file="{ggufs[0]}" (transformers needs gguf_file= for these repos too)'
            ) from None
    generation_path = (
        loading.resolve("generation_config.json", trace, required=False) if loading.gguf_path is None else None
    )
    loading.config_dict, loading.generation, loading.generation_sources, loading.reader = load_config(
        loading.config_path, loading.gguf_path, generation_path, trace, loading.generation_defaults
    )
    loading.model_class = model_class(loading.config_dict)
    trace.meta.update(
        backend="explain",
        model_class=loading.model_class.__name__,
        source_file=inspect.getsourcefile(loading.model_class),
    )
