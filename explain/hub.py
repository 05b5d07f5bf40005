"""Stage 2a, config files: resolve each file with huggingface_hub, from a local folder or the Hub cache.

The cache is the one transformers uses (HF_HOME / HF_HUB_CACHE), read at call time so a notebook or a test can
point HF_HOME somewhere else after import. HF_HUB_OFFLINE=1 means: never touch the network.
"""

from __future__ import annotations

import os
import re
import time

import huggingface_hub
from huggingface_hub import errors as hub_errors

from .errors import ExplainError, NotCachedError
from .trace import Trace

COMMIT = re.compile(r"^[0-9a-f]{40}$")


def cache_dir() -> str:
    """The Hugging Face hub cache as huggingface_hub and transformers would find it right now."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.path.expanduser(os.environ["HF_HUB_CACHE"])
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "huggingface")
    return os.path.join(os.path.expanduser(home), "hub")


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").upper() in {"1", "ON", "YES", "TRUE"}


def is_local(model: str) -> bool:
    return os.path.isdir(model)


def repo_folder(repo_id: str) -> str:
    return os.path.join(cache_dir(), "models--" + repo_id.replace("/", "--"))


def _commit_of(path: str, repo_id: str) -> str | None:
    """Cached files live at <cache>/models--org--name/snapshots/<commit>/<filename>."""
    snapshots = os.path.join(repo_folder(repo_id), "snapshots") + os.sep
    if path.startswith(snapshots):
        return path[len(snapshots):].split(os.sep, 1)[0]
    return None


def _not_cached_message(repo_id: str, filename: str, revision: str | None) -> str:
    from .registry import EMBEDDED_GGUF, EMBEDDED_MODEL
    where = f"{repo_id}/{filename} (revision {revision or 'main'})"
    if repo_id == EMBEDDED_MODEL and filename == EMBEDDED_GGUF:
        fix = "run `python -m explain provision` (or explain.provision()) to put the embedded model in the cache"
    else:
        fix = (f"download it once while online (`hf download {repo_id} {filename}`), unset HF_HUB_OFFLINE, "
               "or pass a local folder as model=")
    state = "offline mode is on (HF_HUB_OFFLINE=1)" if offline() else "the Hub could not be reached"
    return f"{where} is not in the Hugging Face cache at {cache_dir()} and {state}; {fix}."


def resolve(model: str, filename: str, revision: str | None = None, token: str | bool | None = None,
            trace: Trace | None = None, required: bool = True) -> str | None:
    """Return a local path for `filename` of `model` (a folder or a repo id); emit one `config/file` event.

    A missing optional file (required=False) gives None and an event that says so.
    """
    start, t0 = time.time(), time.perf_counter()
    data = {"repo": model, "filename": filename, "revision_asked": revision, "commit": None,
            "cache": None, "size": None, "path": None, "offline": offline()}
    path = None
    try:
        if is_local(model):
            candidate = os.path.join(model, filename)
            data["cache"] = "local folder"
            if os.path.isfile(candidate):
                path = candidate
            elif required:
                raise ExplainError(f"{candidate} is missing: the folder {model} has no {filename}. Copy it from the "
                                   "original checkpoint, or write a complete folder with pipe.save_pretrained(folder)")
        else:
            cache = cache_dir()
            hit = huggingface_hub.try_to_load_from_cache(model, filename, cache_dir=cache, revision=revision)
            data["cache"] = "hit" if isinstance(hit, str) else "miss"
            try:
                path = huggingface_hub.hf_hub_download(model, filename, revision=revision, token=token,
                                                       cache_dir=cache, local_files_only=offline())
            except hub_errors.RemoteEntryNotFoundError:  # the Hub answered: this repo has no such file
                if required:
                    raise
            except (hub_errors.LocalEntryNotFoundError, hub_errors.OfflineModeIsEnabled):
                if required:
                    raise NotCachedError(_not_cached_message(model, filename, revision)) from None
            if path is not None:
                data["commit"] = _commit_of(path, model)
        if path is not None:
            data["path"] = path
            data["size"] = os.path.getsize(path)
        else:
            data["absent"] = True
    finally:
        if trace is not None:
            trace.emit("config", "file", data, start=start, duration=time.perf_counter() - t0)
    return path


def list_files(model: str, revision: str | None = None) -> list[str]:
    """The files a folder or a cached snapshot holds (used to find *.safetensors and *.gguf)."""
    if is_local(model):
        return sorted(os.listdir(model))
    if offline() or (revision and COMMIT.match(revision)):
        commit = revision
        if not (commit and COMMIT.match(commit)):
            ref = os.path.join(repo_folder(model), "refs", revision or "main")
            if not os.path.isfile(ref):
                return []
            commit = open(ref).read().strip()
        snapshot = os.path.join(repo_folder(model), "snapshots", commit)
        return sorted(os.listdir(snapshot)) if os.path.isdir(snapshot) else []
    try:
        return sorted(huggingface_hub.list_repo_files(model, revision=revision))
    except Exception:  # unreachable Hub: fall back to what the cache has
        return []
