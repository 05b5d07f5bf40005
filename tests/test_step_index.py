"""Every step index and token id a user passes to inspect / what_if / force goes through one check
(explain/utils/step_index.py), on both backends: an int (numpy and 0-d torch integers too), never a bool, a float or a
string; a negative step is refused everywhere, naming the newest step instead; what="lens" is one item."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import explain
from explain.errors import ArgumentError, ExplainError
from explain.utils.step_index import step_number, token_number


@pytest.mark.parametrize("value", [True, False, 1.0, "1", b"1", None, [1], torch.tensor(1.0), np.float32(1)])
def test_what_is_not_an_integer_is_refused(value):
    with pytest.raises(ArgumentError, match="the step must be an integer"):
        step_number(value, 5)


@pytest.mark.parametrize("value", [1, np.int64(1), torch.tensor(1), np.uint8(1)])
def test_integers_of_every_kind_are_taken(value):
    assert step_number(value, 5) == 1 and type(step_number(value, 5)) is int


def test_ranges():
    with pytest.raises(ArgumentError, match=r"step -1 has not been generated; steps 0..4 exist .*the newest, 4"):
        step_number(-1, 5)
    with pytest.raises(ArgumentError, match="step 5 has not been generated; steps 0..4 exist"):
        step_number(5, 5)
    with pytest.raises(ArgumentError, match="no step has been generated yet"):
        step_number(0, 0)
    with pytest.raises(ArgumentError, match=r"token id 10 is outside the vocabulary \(0..9\)"):
        token_number(10, 10)


@pytest.fixture(scope="module", params=["explain", "transformers"])
def generation(request, embedded_pipe, tiny_llama):
    """A 3-step run kept for what-if and force, on each backend (transformers: the tiny Llama folder)."""
    if request.param == "explain":
        pipe = embedded_pipe
    else:
        pytest.importorskip("transformers")
        pipe = explain.pipeline("text-generation", model=tiny_llama.folder, backend="transformers")
    return pipe.start(
        "The capital of France is", max_new_tokens=3, min_new_tokens=3, do_sample=False, keep_logits=True
    ).run()


CALLS = {
    "inspect": lambda g, step: g.inspect(step, what="lens"),
    "what_if": lambda g, step: g.what_if(step, temperature=0.5),
    "force": lambda g, step: g.force(step, 5),
}


@pytest.mark.parametrize("call", CALLS)
@pytest.mark.parametrize(
    "step, words",
    [
        (True, "must be an integer"),
        (1.0, "must be an integer"),
        ("1", "must be an integer"),
        (-1, "step -1 has not been generated"),
        (3, "step 3 has not been generated; steps 0..2 exist"),
    ],
)
def test_every_call_checks_its_step_the_same_way(generation, call, step, words):
    with pytest.raises(ExplainError, match=words):
        CALLS[call](generation, step)


def test_what_as_a_string_is_one_item(generation):
    look = generation.inspect(1, what="lens")
    assert "lens" in look and "attention" not in look
    with pytest.raises(ExplainError, match="cannot inspect \\['lns'\\]"):
        generation.inspect(1, what="lns")  # refused as one name, not read as the letters l, n, s
    with pytest.raises(ExplainError, match="what= names what to compute"):
        generation.inspect(1, what=3)


def test_step_through_a_saved_trace_is_refused(embedded_pipe):
    with pytest.raises(ExplainError, match="step_through needs a pipeline, got Trace; a saved trace has no model"):
        explain.step_through(embedded_pipe.trace, "Hello")
    with pytest.raises(ExplainError, match="step_through needs a pipeline, got str"):
        explain.step_through("gpt2", "Hello")
