"""Shared fixtures. Every test runs offline against a Hugging Face cache in a temporary HF_HOME.

The environment is set here, at import time, before explain, huggingface_hub or transformers are imported by any
test module: huggingface_hub reads HF_HOME / HF_HUB_OFFLINE into constants when it is first imported, and a
test must never read or write the real ~/.cache/huggingface.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

HF_HOME = tempfile.mkdtemp(prefix="explain-tests-hf-home-")
os.environ["HF_HOME"] = HF_HOME
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ["EXPLAIN_CHECK_EVENTS"] = "1"  # every event any test emits is checked against explain.events
# one intra-op thread: the test models are small, and on a busy 2-core machine torch's OpenMP threads wait for
# each other (a 576x576 linear took 6-30 ms with 2 threads, 0.7 ms with 1). Set OMP_NUM_THREADS to override.
os.environ.setdefault("OMP_NUM_THREADS", "1")
for _name in (
    "HF_HUB_CACHE",
    "HUGGINGFACE_HUB_CACHE",
    "TRANSFORMERS_CACHE",
    "HF_ASSETS_CACHE",
    "HF_XET_CACHE",
    "XDG_CACHE_HOME",
):
    os.environ.pop(_name, None)
atexit.register(shutil.rmtree, HF_HOME, ignore_errors=True)

import pytest  # noqa: E402 (after the environment, on purpose)

HUB_CACHE = os.path.join(HF_HOME, "hub")


def listing(root: str = HF_HOME) -> dict:
    """Every file and folder under `root` (the cache) -> its size (None for folders, the target for links),
    to compare before and after something that must not write into the cache."""
    listing: dict[str, str | int | None] = {}
    for folder, folders, files in os.walk(root):
        for name in folders + files:
            path = os.path.join(folder, name)
            relative = os.path.relpath(path, root)
            if os.path.islink(path):
                listing[relative] = "-> " + os.readlink(path)
            elif os.path.isdir(path):
                listing[relative] = None
            else:
                listing[relative] = os.path.getsize(path)
    return listing


@pytest.fixture(scope="session")
def cache_listing():
    """listing(root=HF_HOME): every path under the cache -> size / link target, to check nothing was written."""
    return listing


@pytest.fixture(scope="session")
def hf_home() -> str:
    """The session's HF_HOME; fails loudly if huggingface_hub resolved its cache somewhere else."""
    import huggingface_hub.constants

    assert huggingface_hub.constants.HF_HUB_CACHE == HUB_CACHE, (
        f"huggingface_hub was imported before tests/conftest.py set HF_HOME (its cache is "
        f"{huggingface_hub.constants.HF_HUB_CACHE}); a plugin or an earlier conftest imported it too early"
    )
    assert huggingface_hub.constants.HF_HUB_OFFLINE
    return HF_HOME


@pytest.fixture(scope="session")
def provisioned(hf_home) -> dict:
    """The embedded model laid into the session cache by explain.provision(); returns provision's report."""
    import explain

    return explain.provision()


# the tests that read a lesson's background run (tests/test_notebooks.py)
NOTEBOOK_RUN_TESTS = {"test_notebook_runs_offline", "test_no_cell_is_silent_for_long"}


@pytest.fixture(scope="session", autouse=True)
def notebooks_in_background(request):
    """The lessons this session selected, started at its first test and executed one at a time on a thread of their
    own while the other tests run (tests/notebook_runner.py); None when no lesson is selected."""
    paths = list(  # in order, once each: the two tests that read a lesson's run share it
        dict.fromkeys(
            item.callspec.params["path"]
            for item in request.session.items
            if getattr(item, "originalname", None) in NOTEBOOK_RUN_TESTS
        )
    )
    if not paths:
        yield None
        return
    from notebook_runner import BackgroundNotebooks

    request.getfixturevalue("provisioned")
    runner = BackgroundNotebooks(paths, HF_HOME)
    yield runner
    runner.close()


@pytest.fixture(scope="session")
def embedded_pipe(provisioned):
    """The real embedded pipeline (SmolLM2-135M-Instruct, Q4_1 GGUF -> float32, CPU), loaded once per session.

    Shared: tests may call it (each call adds a run to its trace) but must not change its model or settings."""
    import explain

    return explain.pipeline("text-generation")


@pytest.fixture(scope="session")
def embedded_gguf(provisioned) -> str:
    """Path of the embedded GGUF inside the session cache (a snapshot symlink to the blob)."""
    return provisioned["path"]


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory, embedded_pipe):
    """A tiny random Llama written by transformers itself (config.json, model.safetensors, generation_config.json)
    with the embedded model's tokenizer files. Returns a namespace: folder, model (transformers', eval mode),
    tokenizer (explain's)."""
    from types import SimpleNamespace

    import torch
    import transformers

    tokenizer = embedded_pipe.tokenizer
    config = transformers.LlamaConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        rope_theta=10000.0,
    )
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(config).eval()
    model.generation_config.max_new_tokens = 7  # a value only generation_config.json holds
    folder = tmp_path_factory.mktemp("tiny-llama")
    model.save_pretrained(folder)
    tokenizer.save(folder)
    return SimpleNamespace(folder=str(folder), model=model, tokenizer=tokenizer)


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory, provisioned) -> str:
    """A one-layer Llama GGUF (~24 KB: hidden size 8, 259 tokens, a chat template) written by tests/tiny_files.py
    with the gguf package; small enough to truncate and bit-flip by the thousand. Read-only: copy it to damage it."""
    from tiny_files import write_tiny_gguf

    path = write_tiny_gguf(tmp_path_factory.mktemp("tiny-gguf") / "tiny.gguf")
    os.chmod(path, 0o444)
    return path


@pytest.fixture(scope="session")
def tiny_folder(tiny_gguf, tmp_path_factory) -> str:
    """The tiny GGUF model saved as a Hugging Face folder by explain (config.json, model.safetensors of ~22 KB,
    tokenizer.json, tokenizer_config.json with the chat template)."""
    import explain

    pipe = explain.pipeline(model=os.path.dirname(tiny_gguf), gguf_file=os.path.basename(tiny_gguf))
    return pipe.save_pretrained(tmp_path_factory.mktemp("tiny-folder") / "model")


@pytest.fixture(scope="session")
def gguf_pipe(provisioned):
    """The embedded model run as its GGUF file stores it: quantization="gguf", the fast form (4-bit weights,
    bfloat16 activations), loaded once per session. Shared: do not change its model."""
    import explain

    return explain.pipeline("text-generation", quantization="gguf")


@pytest.fixture
def cache_untouched(provisioned, cache_listing):
    """Fails the test if it wrote anything into the Hugging Face cache (a refused load must not)."""
    before = cache_listing()
    yield
    assert cache_listing() == before, "a refused load or call wrote into the Hugging Face cache"


@pytest.fixture
def folder(tiny_llama, tmp_path):
    """A private copy of the tiny Llama folder, to damage (a module may override it with another model)."""
    copy = tmp_path / "model"
    shutil.copytree(tiny_llama.folder, copy)
    return copy
