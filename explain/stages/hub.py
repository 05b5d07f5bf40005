"""Stage 2a, config files: resolve each file with huggingface_hub, from a local folder or the Hub cache.

The cache is the one transformers uses (HF_HOME / HF_HUB_CACHE), read at call time so a notebook or a test can
point HF_HOME somewhere else after import. HF_HUB_OFFLINE=1 means: never touch the network.
"""

from __future__ import annotations

import os
import re
import time
from typing import Any

import huggingface_hub
from huggingface_hub import errors as hub_errors
from huggingface_hub.utils import validate_repo_id

from ..errors import ArgumentError, CorruptFileError, ExplainError, NotCachedError, OutsideFolderError
from ..trace import Trace

COMMIT = re.compile(r"^[0-9a-f]{40}$")


def cache_dir() -> str:
    """The Hugging Face hub cache as huggingface_hub and transformers would find it right now."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.path.expanduser(os.environ["HF_HUB_CACHE"])
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "huggingface"
    )
    return os.path.join(os.path.expanduser(home), "hub")


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").upper() in {"1", "ON", "YES", "TRUE"}


def is_local(model: str) -> bool:
    return os.path.isdir(model)


def check_model(model) -> None:
    """model= is a folder that exists or something that can be a Hub repo id; otherwise say which it is not."""
    if not isinstance(model, (str, os.PathLike)):
        raise ArgumentError(
            f"model must be a Hub repo id or a local folder (a string), not a {type(model).__name__}; "
            "explain loads the weights itself so that it can trace them"
        )
    model = os.fspath(model)
    if not model.strip():
        raise ArgumentError(
            'model="" is empty; pass a Hub repo id such as "HuggingFaceTB/SmolLM2-135M-Instruct", a '
            "local folder, or leave model out for the embedded SmolLM2"
        )
    if os.path.isdir(model):
        if not os.access(model, os.R_OK | os.X_OK):
            raise ArgumentError(f"the folder {model} cannot be read (permission denied); check its permissions")
        return
    if os.path.lexists(model):
        if os.path.isfile(model):
            hint = (
                f'; for a GGUF file pass model="{os.path.dirname(model) or "."}", gguf_file="{os.path.basename(model)}"'
                if model.endswith(".gguf")
                else ""
            )
            raise ArgumentError(f"model={model!r} is a file; pass the folder that holds the model's files{hint}")
        raise ArgumentError(
            f"model={model!r} is a symbolic link that leads nowhere (its target is missing, or the "
            "link loops); point it at the model's folder"
        )
    looks_like_path = (
        os.path.isabs(model)
        or model.startswith(("./", "../", "~", ".\\"))
        or model in (".", "..")
        or model.count("/") > 1
        or "\\" in model
    )
    if looks_like_path:
        raise ArgumentError(
            f"no folder at {model} (from {os.getcwd()}); pass an existing model folder, or a Hub repo "
            'id such as "HuggingFaceTB/SmolLM2-135M-Instruct"'
        )
    try:
        validate_repo_id(model)
    except hub_errors.HFValidationError as error:
        raise ArgumentError(
            f"model={model!r} is neither a local folder (there is none at {os.path.abspath(model)}) nor a "
            f"Hub repo id ({error}); pass a folder that exists or an id such as "
            '"HuggingFaceTB/SmolLM2-135M-Instruct"'
        ) from None


def containing_folders(folder: str) -> list[str]:
    """Where the files of a local model folder may really live: the folder itself and, for a snapshot of a Hugging
    Face cache (.../models--org--name/snapshots/<commit>, whose files link to ../../blobs), its repo folder; and
    the Hugging Face cache, the user's own downloads."""
    real = os.path.realpath(folder)
    roots = [real]
    snapshots = os.path.dirname(real)
    if os.path.basename(snapshots) == "snapshots" and os.path.basename(os.path.dirname(snapshots)).startswith(
        "models--"
    ):
        roots.append(os.path.dirname(snapshots))
    roots.append(os.path.realpath(cache_dir()))
    return roots


def inside_folder(folder: str, path: str, named_by: str | None = None) -> str:
    """`path` (a file of the model folder `folder`) if it really lies inside that folder, following every symbolic
    link; otherwise an OutsideFolderError naming the file (and `named_by`, the file that named it)."""
    try:
        real = os.path.realpath(path, strict=True)
    except FileNotFoundError:  # a link whose target is missing: where it points is still checked
        real = os.path.realpath(path)
    except OSError as error:  # a link that loops (ELOOP)
        raise CorruptFileError(
            f"{path} is a symbolic link that cannot be followed ({error.strerror}); replace it with the file itself"
        ) from None
    if not any(real == root or real.startswith(root.rstrip(os.sep) + os.sep) for root in containing_folders(folder)):
        named = f", named by {named_by}," if named_by else ""
        raise OutsideFolderError(
            f"{path}{named} leads outside the model folder {folder} (to {real}); explain opens "
            "only files inside the folder it was given. Copy the file into the folder, or load "
            "the folder it belongs to"
        )
    return path


def repo_folder(repo_id: str) -> str:
    return os.path.join(cache_dir(), "models--" + repo_id.replace("/", "--"))


def _commit_of(path: str, repo_id: str) -> str | None:
    """Cached files live at <cache>/models--org--name/snapshots/<commit>/<filename>."""
    snapshots = os.path.join(repo_folder(repo_id), "snapshots") + os.sep
    if path.startswith(snapshots):
        return path[len(snapshots) :].split(os.sep, 1)[0]
    return None


def _not_cached_message(repo_id: str, filename: str, revision: str | None) -> str:
    from .tasks import EMBEDDED_GGUF, EMBEDDED_MODEL

    where = f"{repo_id}/{filename} (revision {revision or 'main'})"
    if repo_id == EMBEDDED_MODEL and filename == EMBEDDED_GGUF:
        fix = "run `python -m explain provision` (or explain.provision()) to put the embedded model in the cache"
    else:
        fix = (
            f"download it once while online (`hf download {repo_id} {filename}`), unset HF_HUB_OFFLINE, "
            "or pass a local folder as model="
        )
    state = "offline mode is on (HF_HUB_OFFLINE=1)" if offline() else "the Hub could not be reached"
    return f"{where} is not in the Hugging Face cache at {cache_dir()} and {state}; {fix}."


def resolve(
    model: str,
    filename: str,
    revision: str | None = None,
    token: str | bool | None = None,
    trace: Trace | None = None,
    required: bool = True,
    named_by: str | None = None,
) -> str | None:
    """Return a local path for `filename` of `model` (a folder or a repo id); emit one `config/file` event.

    A missing optional file (required=False) gives None and an event that says so. A file of a local folder must
    lie inside it (symbolic links followed); `named_by` is the file that named `filename`, for the error.
    """
    start, t0 = time.time(), time.perf_counter()
    data: dict[str, Any] = {
        "repo": model,
        "filename": filename,
        "revision_asked": revision,
        "commit": None,
        "cache": None,
        "size": None,
        "path": None,
        "offline": offline(),
    }
    path = None
    try:
        if is_local(model):
            candidate = os.path.join(model, filename)
            data["cache"] = "local folder"
            if os.path.lexists(candidate):
                inside_folder(model, candidate, named_by)
                if os.path.islink(candidate) and not os.path.exists(candidate):
                    raise CorruptFileError(
                        f"{candidate} is a symbolic link whose target {os.readlink(candidate)!r} is "
                        "missing; replace it with the file itself"
                    )
            if os.path.isfile(candidate):
                path = candidate
            elif os.path.isdir(candidate):
                raise CorruptFileError(
                    f"{candidate} is a folder, not a file; the folder {model} is not laid out as a "
                    "model folder: write one with pipe.save_pretrained(folder)"
                )
            elif required:
                raise ExplainError(
                    f"{candidate} is missing: the folder {model} has no {filename}. Copy it from the "
                    "original checkpoint, or write a complete folder with pipe.save_pretrained(folder)"
                )
        else:
            try:
                validate_repo_id(model)
            except hub_errors.HFValidationError as error:
                raise ArgumentError(f"{model!r} is neither a local folder nor a valid Hub repo id ({error})") from None
            cache = cache_dir()
            hit = huggingface_hub.try_to_load_from_cache(model, filename, cache_dir=cache, revision=revision)
            data["cache"] = "hit" if isinstance(hit, str) else "miss"
            try:
                path = huggingface_hub.hf_hub_download(
                    model, filename, revision=revision, token=token, cache_dir=cache, local_files_only=offline()
                )
            except ValueError as error:  # huggingface_hub refuses a file name with ".." or an absolute path
                raise ArgumentError(f"{model}: cannot fetch {filename!r} ({error})") from None
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
