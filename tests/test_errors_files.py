"""Files a model folder names, and files explain writes: a folder's files never lead explain outside it (an index
entry, a symbolic link); the cache and a saved model are written with the umask's mode, and a provision that
cannot write (read-only, full) says so in one error and leaves no temporary file."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import textwrap

import pytest

import explain
from explain.errors import CacheWriteError, CorruptFileError, OutsideFolderError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def outside(tiny_llama, tmp_path):
    """A valid checkpoint outside the model folder: opening it would load the model, so only the check refuses."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.copy(os.path.join(tiny_llama.folder, "model.safetensors"), elsewhere / "secret.safetensors")
    return elsewhere / "secret.safetensors"


def shard_index(folder, shard: str) -> str:
    """Move the single file into a sharded layout whose index names `shard` for every tensor."""
    from safetensors import safe_open

    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        names = list(f.keys())
    (folder / "model.safetensors").unlink()
    index = folder / "model.safetensors.index.json"
    index.write_text(json.dumps({"metadata": {}, "weight_map": {name: shard for name in names}}))
    return str(index)


def refused(folder, error_class, *words):
    trace = explain.Trace()
    with pytest.raises(error_class) as caught:
        explain.pipeline(model=str(folder), trace=trace)
    message = str(caught.value)
    for word in words:
        assert word in message, f"{word!r} not in: {message}"
    assert trace.filter("weights", "load") == [], "a file outside the folder was read"


def test_index_naming_an_absolute_path(folder, outside):
    index = shard_index(folder, str(outside))
    refused(
        folder,
        OutsideFolderError,
        index,
        "weight_map['lm_head.weight']",
        repr(str(outside)),
        "outside the model's folder",
    )


@pytest.mark.parametrize(
    "entry",
    ["../elsewhere/secret.safetensors", "sub/../../elsewhere/secret.safetensors", "..\\elsewhere\\secret.safetensors"],
)
def test_index_naming_a_path_up_and_out(folder, outside, entry):
    index = shard_index(folder, entry)
    refused(folder, OutsideFolderError, index, repr(entry), "outside the model's folder")


def test_index_naming_a_link_that_leads_out(folder, outside):
    index = shard_index(folder, "shard.safetensors")
    os.symlink(outside, folder / "shard.safetensors")
    refused(folder, OutsideFolderError, str(folder / "shard.safetensors"), f"named by {index}", str(outside))


def test_index_naming_a_folder_link_that_leads_out(folder, outside):
    index = shard_index(folder, "sub/secret.safetensors")
    os.symlink(outside.parent, folder / "sub")
    refused(folder, OutsideFolderError, f"named by {index}", str(outside))


def test_a_weights_file_that_links_out_of_the_folder(folder, outside):
    (folder / "model.safetensors").unlink()
    os.symlink(outside, folder / "model.safetensors")
    refused(
        folder, OutsideFolderError, str(folder / "model.safetensors"), str(outside), "Copy the file into the folder"
    )


@pytest.mark.parametrize(
    "name", ["chat_template.jinja", "additional_chat_templates/tools.jinja", "tokenizer_config.json", "tokenizer.json"]
)
def test_tokenizer_files_that_link_out_of_the_folder(folder, tmp_path, name):
    """A chat template linked to a private file would put that file's text into the prompt, the trace and the
    dashboard: refused."""
    secret = tmp_path / "private.txt"
    secret.write_text("the contents of a private file")
    target = folder / name
    target.parent.mkdir(exist_ok=True)
    if target.exists():
        target.unlink()
    os.symlink(secret, target)
    trace = explain.Trace()
    with pytest.raises(OutsideFolderError) as caught:
        explain.pipeline(model=str(folder), trace=trace)
    assert str(target) in str(caught.value) and str(secret) in str(caught.value)
    assert "the contents of a private file" not in json.dumps(trace.to_dict())


def test_a_config_json_link_that_loops(folder):
    """Before: reported as "the folder has no config.json"."""
    (folder / "config.json").unlink()
    os.symlink("config.json", folder / "config.json")
    refused(folder, CorruptFileError, str(folder / "config.json"), "symbolic link that cannot be followed")


def test_a_link_whose_target_is_missing(folder, tmp_path):
    (folder / "tokenizer.json").unlink()
    os.symlink(folder / "gone.json", folder / "tokenizer.json")
    refused(folder, CorruptFileError, str(folder / "tokenizer.json"), "target", "is missing")


def test_a_cache_snapshot_folder_loads_through_its_links(tiny_llama, tmp_path):
    """A snapshot folder of a Hugging Face cache (files linked to ../../blobs) is one folder: it loads."""
    repo = tmp_path / "models--someone--tiny"
    snapshot = repo / "snapshots" / ("0" * 40)
    (repo / "blobs").mkdir(parents=True)
    snapshot.mkdir(parents=True)
    for name in os.listdir(tiny_llama.folder):
        data = open(os.path.join(tiny_llama.folder, name), "rb").read()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        os.symlink(os.path.relpath(blob, snapshot), snapshot / name)
    pipe = explain.pipeline(model=str(snapshot))
    assert pipe.trace.last("weights", "load").data["missing"] == []


# -- writing: file modes ------------------------------------------------------------------------------------------
@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_provision_writes_files_with_the_umask_mode(tmp_path, monkeypatch, umask_022):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    report = explain.provision()
    repo = tmp_path / "hf" / "hub" / "models--QuantFactory--SmolLM2-135M-Instruct-GGUF"
    assert mode(repo / "blobs" / report["sha256"]) == 0o644
    assert mode(repo / "refs" / "main") == 0o644
    assert sorted(os.listdir(repo / "refs")) == ["main"]
    assert not [n for n in os.listdir(repo / "blobs") if n.startswith(".")]


@pytest.mark.parametrize("umask, expected", [(0o022, 0o644), (0o027, 0o640)])
def test_save_pretrained_follows_the_umask(tiny_llama, tmp_path, umask, expected):
    pipe = explain.pipeline(model=tiny_llama.folder)
    old = os.umask(umask)
    try:
        saved = pipe.save_pretrained(tmp_path / "saved")
    finally:
        os.umask(old)
    modes = {name: mode(os.path.join(saved, name)) for name in os.listdir(saved)}
    assert modes["model.safetensors"] == expected, modes  # the safetensors library itself writes 0600
    assert set(modes.values()) == {expected}, modes
    assert [n for n in os.listdir(tmp_path) if n.startswith(".explain-save-")] == []


# -- writing: a cache that cannot be written -------------------------------------------------------------------------
def run_provision(hf_home: str, shell_setup: str = "") -> subprocess.CompletedProcess:
    """explain.provision() in a fresh process (HF_HOME given), after `shell_setup` (run inside a user and mount
    namespace when it is given, so that even root meets a read-only or full file system)."""
    code = textwrap.dedent(f"""
        import os, sys
        os.environ["HF_HOME"] = {hf_home!r}
        import explain
        from explain.errors import CacheWriteError
        try:
            explain.provision()
        except CacheWriteError as error:
            print("CacheWriteError:", error)
            left = [name for _, _, files in os.walk({hf_home!r}) for name in files]
            print("LEFT:", sorted(left))
            sys.exit(3)
    """)
    env = {**os.environ, "PYTHONPATH": REPO}
    command = [sys.executable, "-c", code]
    if shell_setup:
        command = ["unshare", "-rm", "sh", "-c", f'{shell_setup} && exec "$0" -c "$1"', sys.executable, code]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)


def namespaces_work(tmp_path) -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = tmp_path / "probe"
    probe.mkdir()
    return (
        subprocess.run(
            ["unshare", "-rm", "sh", "-c", f"mount -t tmpfs -o size=1m tmpfs {probe}"], capture_output=True
        ).returncode
        == 0
    )


def test_provision_into_a_read_only_cache(tmp_path):
    hf_home = tmp_path / "hf"
    hf_home.mkdir()
    if os.geteuid() != 0:
        os.chmod(hf_home, 0o555)
        result = run_provision(str(hf_home))
    elif namespaces_work(tmp_path):
        result = run_provision(str(hf_home), f"mount --bind {hf_home} {hf_home} && mount -o remount,ro,bind {hf_home}")
    else:
        pytest.skip("running as root without user namespaces: no way to make a folder read-only for this process")
    assert result.returncode == 3, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert f"cannot write into the Hugging Face cache at {hf_home / 'hub'}" in result.stdout
    assert "HF_HOME" in result.stdout and "a folder you can write to" in result.stdout
    assert os.listdir(hf_home) == []


def test_provision_into_a_full_disk(tmp_path):
    if not namespaces_work(tmp_path):
        pytest.skip("no user namespaces here to mount a small file system")
    hf_home = tmp_path / "hf"
    hf_home.mkdir()
    result = run_provision(str(hf_home), f"mount -t tmpfs -o size=8m tmpfs {hf_home}")
    assert result.returncode == 3, result.stderr[-2000:]
    assert "No space left on device" in result.stdout and "the embedded model takes 94 MiB" in result.stdout
    assert "Traceback" not in result.stderr
    assert "LEFT: ['provision.lock']" in result.stdout  # the lock file stays, as huggingface_hub's do


def test_a_failed_copy_leaves_no_temporary_file(tmp_path, monkeypatch):
    """The copy into blobs/ fails half way (ENOSPC): nothing is left in blobs/ or refs/, and the next provision
    (with room) completes."""
    import explain.utils.files

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    real_copy = shutil.copyfile

    def full_disk(source, target):
        with open(target, "wb") as f:
            f.write(b"\0" * 1000)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), target)

    monkeypatch.setattr(explain.utils.files.shutil, "copyfile", full_disk)
    with pytest.raises(CacheWriteError, match="No space left on device"):
        explain.provision()
    repo = tmp_path / "hf" / "hub" / "models--QuantFactory--SmolLM2-135M-Instruct-GGUF"
    assert os.listdir(repo / "blobs") == [] and os.listdir(repo / "refs") == []
    monkeypatch.setattr(explain.utils.files.shutil, "copyfile", real_copy)
    assert explain.provision()["copied"]


def test_a_failed_ref_write_leaves_no_temporary_file(tmp_path, monkeypatch):
    import explain.utils.files

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))

    def fail(temporary, path):
        raise OSError(errno.EIO, os.strerror(errno.EIO), path)

    monkeypatch.setattr(explain.utils.files, "publish", fail)
    with pytest.raises(CacheWriteError, match="Input/output error"):
        explain.provision()
    repo = tmp_path / "hf" / "hub" / "models--QuantFactory--SmolLM2-135M-Instruct-GGUF"
    assert os.listdir(repo / "refs") == [] and os.listdir(repo / "blobs") == []
