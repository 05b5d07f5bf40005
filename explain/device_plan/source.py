"""What to plan for: a model name, a folder, a config, a pipeline or a module -> a model accelerate can size.

From a config, the model is built on the meta device (accelerate's init_empty_weights) from explain's own model
files: every parameter has its shape and dtype but no storage, so a 70B model costs no memory and no download.
A name is looked up, in this order, as a local folder (or a config.json path), in the Hugging Face cache (offline:
the network is never touched) and among the configs that ship with explain (explain/data/configs/).
"""

from __future__ import annotations

import dataclasses
import json
import os
from contextlib import contextmanager

import torch
from accelerate import init_empty_weights

from ..errors import ExplainError
from ..models import model_class
from ..stages import hub
from ..utils.dtypes import dtype_name

CONFIGS = os.path.join(os.path.dirname(os.path.dirname(__file__)), "data", "configs")
ALIASES = {"gpt2": "openai-community/gpt2"}  # the short names the Hub redirects


class ModelSourceError(ExplainError):
    """A model name with no config explain can find."""


@dataclasses.dataclass
class Source:
    module: torch.nn.Module  # on the meta device when built from a config
    config: dict  # config.json's keys
    name: str
    where: str  # where the config came from, in words
    default_dtype: str | None  # what from_pretrained(dtype="auto") would use


def shipped() -> dict:
    """repo id -> path of every config shipped with explain."""
    return {
        f[: -len(".json")].replace("--", "/", 1): os.path.join(CONFIGS, f)
        for f in sorted(os.listdir(CONFIGS))
        if f.endswith(".json")
    }


@contextmanager
def _offline():
    """HF_HUB_OFFLINE=1 for the duration: hub.resolve then reads the cache and never the network."""
    before = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        yield
    finally:
        if before is None:
            del os.environ["HF_HUB_OFFLINE"]
        else:
            os.environ["HF_HUB_OFFLINE"] = before


def find_config(name: str, revision: str | None = None) -> tuple[dict, str]:
    """(config dict, where it came from) for a folder, a config.json path, a cached repo or a shipped config."""
    from ..stages.config import read_json

    name = os.fspath(name)
    if os.path.isfile(name):
        return read_json(name, "model config (config.json)"), f"file {name}"
    if os.path.isdir(name):
        path = os.path.join(name, "config.json")
        if not os.path.isfile(path):
            raise ModelSourceError(
                f"the folder {name} has no config.json; a plan needs the model's config.json "
                "(the weights are not needed)"
            )
        return read_json(path, "model config (config.json)"), f"folder {name}"
    repo = ALIASES.get(name, name)
    cached: str | None = None
    with _offline():
        try:
            cached = hub.resolve(repo, "config.json", revision=revision)
        except (ValueError, OSError):  # not cached (NotCachedError), or not a valid repo id (HFValidationError)
            pass
    if cached is not None:
        return read_json(cached, "model config (config.json)"), f"Hugging Face cache ({cached})"
    table = {key.lower(): (key, path) for key, path in shipped().items()}
    if repo.lower() in table:
        key, path = table[repo.lower()]
        with open(path, encoding="utf-8") as f:
            return json.load(f), f"shipped with explain (explain/data/configs/{os.path.basename(path)})"
    raise ModelSourceError(
        f"no config for {name!r}: it is not a folder, not in the Hugging Face cache at {hub.cache_dir()} (looked up "
        f"offline) and not one of the configs shipped with explain ({', '.join(shipped())}). A plan needs only the "
        f"model's config.json: pass a folder that holds it, the path of a config.json, the config itself as a dict, "
        f"or fetch it once with `hf download {repo} config.json`"
    )


def build(config: dict) -> torch.nn.Module:
    """explain's model for `config`, on the meta device, with tied weights tied (so they are counted once)."""
    cls = model_class(config)
    model_config = cls.config_class.from_dict(config)
    with init_empty_weights():  # parameters on "meta": shapes and dtypes, no storage
        module = cls(model_config)
    if getattr(model_config, "tie_word_embeddings", False):
        # init_empty_weights re-registers every parameter, which unties them; tie them again, as transformers does
        for target, source in getattr(cls, "tied_weights", {}).items():
            owner, _, attribute = target.rpartition(".")
            setattr(module.get_submodule(owner), attribute, module.get_parameter(source))
    return module.eval()


def config_of(module: torch.nn.Module) -> dict:
    config = getattr(module, "config", None)
    if config is None:
        return {}
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        values = dataclasses.asdict(config)
        values.update(values.pop("extra", {}) or {})
        return values
    if hasattr(config, "to_dict"):  # a transformers PretrainedConfig
        return config.to_dict()
    return dict(config) if isinstance(config, dict) else {}


def module_dtype(module: torch.nn.Module) -> str:
    first = next((p for p in module.parameters() if p.is_floating_point()), None)
    return dtype_name(first.dtype) if first is not None else "float32"


def resolve(model, revision: str | None = None) -> Source:
    """Turn whatever the caller passed into a Source."""
    if isinstance(model, torch.nn.Module):
        config = config_of(model)
        name = config.get("_name_or_path") or type(model).__name__
        return Source(model, config, name, f"the module you passed ({type(model).__name__})", module_dtype(model))
    if hasattr(model, "model") and isinstance(model.model, torch.nn.Module):  # a pipeline
        source = resolve(model.model)
        source.name = getattr(model, "name_or_path", None) or source.name
        source.config = dict(getattr(model, "config", None) or source.config)
        source.where = f"the pipeline's model ({type(model.model).__name__}, {source.default_dtype})"
        return source
    if isinstance(model, dict):
        config, where = dict(model), "the config dict you passed"
        name = config.get("_name_or_path") or (config.get("architectures") or ["config"])[0]
    elif isinstance(model, (str, os.PathLike)):
        config, where = find_config(os.fspath(model), revision)
        name = os.fspath(model)
    else:
        raise ModelSourceError(
            f"cannot plan for a {type(model).__name__}; pass a model name, a folder, a config "
            "dict, a pipeline or an nn.Module"
        )
    dtype = config.get("dtype") or config.get("torch_dtype")
    return Source(build(config), config, name, where, dtype if isinstance(dtype, str) else None)
