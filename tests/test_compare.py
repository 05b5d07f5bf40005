"""explain.compare: the same prompt through two pipelines, step by step, as data, a printout and an event."""

from __future__ import annotations

import io
import json

import pytest
import torch
import torch.nn.functional as F
from tiny_files import make_lora

import explain
from explain.errors import ExplainError

PROMPT = "Once upon a time"


@pytest.fixture(scope="module")
def pipes(tiny_llama, tmp_path_factory):
    """The tiny Llama (A), a second load of it, and the same with a LoRA adapter made by peft (B)."""
    pytest.importorskip("peft")
    folder = tmp_path_factory.mktemp("lora-compare")
    make_lora(tiny_llama.model, folder, target_modules=["q_proj", "v_proj"])
    return (
        explain.pipeline("text-generation", model=tiny_llama.folder),
        explain.pipeline("text-generation", model=tiny_llama.folder),
        explain.pipeline("text-generation", model=tiny_llama.folder, adapter=str(folder)),
    )


def test_a_pipeline_against_itself(pipes):
    a, same, _ = pipes
    comparison = explain.compare(a, same, PROMPT, max_new_tokens=8)
    assert comparison.first_divergence is None and comparison.summary["identical_texts"]
    assert comparison.summary["agreement"] == 1.0 and comparison.summary["max_kl"] < 1e-6
    assert comparison.texts[0] == comparison.texts[1] and len(comparison.steps) == 8
    assert comparison.labels == ["float32", "float32"]


def test_against_an_adapter(pipes):
    a, _, b = pipes
    comparison = explain.compare(a, b, PROMPT, max_new_tokens=12)
    assert comparison.labels[1].startswith("float32 + LoRA ")
    steps = comparison.steps
    assert comparison.summary["mean_kl"] > 0.01
    ids_a, ids_b = comparison.ids
    first = comparison.first_divergence
    assert first is not None and ids_a[: first["step"]] == ids_b[: first["step"]]
    assert ids_a[first["step"]] != ids_b[first["step"]]
    assert first["character"] == len(a.tokenizer.decode(ids_a[: first["step"]]))
    # before the texts differ, B's own choice is B's top-1 on A's context, and so agrees with A
    for row in steps[: first["step"]]:
        assert row["agree"] and row["top1_b"] == ids_b[row["step"]]
    assert steps[first["step"]]["top1_b"] == ids_b[first["step"]] and not steps[first["step"]]["agree"]
    assert comparison.summary["agreement"] == sum(r["agree"] for r in steps) / len(steps)


def test_per_step_numbers_are_the_models(pipes, tiny_llama):
    """KL and probabilities recomputed from each model's logits on A's tokens (one full forward each)."""
    a, _, b = pipes
    comparison = explain.compare(a, b, PROMPT, max_new_tokens=6)
    prompt_ids = a.tokenizer.encode(PROMPT)
    ids = torch.tensor([prompt_ids + comparison.ids[0]])  # (1, P + N)
    with torch.no_grad():
        log_a = F.log_softmax(a.model(ids).logits[0, len(prompt_ids) - 1 : -1], dim=-1)  # (N, vocab)
        log_b = F.log_softmax(b.model(ids).logits[0, len(prompt_ids) - 1 : -1], dim=-1)
    kl = (log_a.exp() * (log_a - log_b)).sum(-1)
    for row in comparison.steps:
        assert row["kl"] == pytest.approx(float(kl[row["step"]]), abs=1e-4)
        assert row["p_b"] == pytest.approx(float(log_b[row["step"], row["token_a"]].exp()), abs=1e-5)
        assert row["top1_b"] == int(log_b[row["step"]].argmax())


def test_event_print_and_data(pipes):
    a, _, b = pipes
    comparison = explain.compare(a, b, PROMPT, max_new_tokens=5)
    event = b.trace.last("generation", "compare")
    assert event.data == json.loads(json.dumps(comparison.to_dict()))
    out = io.StringIO()
    comparison.print(file=out)
    text = out.getvalue()
    assert "top-1 agreement on A's context" in text and "KL(A||B)" in text
    assert len([line for line in text.splitlines() if line[:4].strip().isdigit()]) == 5  # one row per step
    assert repr(comparison).startswith("Comparison('float32' vs 'float32 + LoRA")


def test_different_vocabularies_are_refused(pipes, embedded_pipe, monkeypatch):
    a, _, _ = pipes
    monkeypatch.setattr(type(a.tokenizer), "vocab_size", property(lambda self: 7 if self is a.tokenizer else 49152))
    with pytest.raises(ExplainError, match="different vocabularies"):
        explain.compare(a, embedded_pipe, PROMPT, max_new_tokens=2)
