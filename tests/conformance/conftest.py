"""Fixtures of the conformance tests: the tiny one-layer Llama folder (tests/conftest.py: tiny_folder) behind both
backends and behind transformers' own pipeline, loaded once per session."""

from __future__ import annotations

import pytest

BACKENDS = ("explain", "transformers")


@pytest.fixture(scope="session")
def reference(tiny_folder):
    """transformers.pipeline() on the tiny model: the answer both backends must give."""
    import transformers

    transformers.logging.set_verbosity_error()
    return transformers.pipeline("text-generation", model=tiny_folder)


@pytest.fixture(scope="session")
def backends(tiny_folder) -> dict:
    """backend name -> explain's pipeline of the tiny model on that backend."""
    import explain

    return {name: explain.pipeline("text-generation", model=tiny_folder, backend=name) for name in BACKENDS}


@pytest.fixture(params=BACKENDS)
def backend(request) -> str:
    return request.param


@pytest.fixture
def pipe(backends, backend):
    return backends[backend]


@pytest.fixture(scope="session")
def padded(tiny_folder) -> dict:
    """backend name -> a pipeline of the tiny model whose tokenizer pads with EOS, as transformers' tests set it
    (`tokenizer.pad_token_id = eos`) for batches; "reference" -> transformers.pipeline() likewise."""
    import transformers

    import explain

    found = {name: explain.pipeline("text-generation", model=tiny_folder, backend=name) for name in BACKENDS}
    found["reference"] = transformers.pipeline("text-generation", model=tiny_folder)
    for pipe in found.values():
        pipe.tokenizer.pad_token = pipe.tokenizer.eos_token
    return found
