"""Whole generations with many processors at once, token for token against transformers' generate(), on the tiny
random Llama (written by transformers, loaded by explain from its folder; the same on the embedded model is in
test_fidelity.py, whose transformers model it shares). Then what the step records say about each processor, and
the step-through API with any knob: what_if, set_settings and force, and their mistakes (issue 15: a misspelt
knob, a non-integer token id).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import transformers
from transformers.generation import logits_process as hf

import explain
from explain.errors import ExplainError

transformers.logging.set_verbosity_error()
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # transformers' "Unfeasible length constraints" etc.


@pytest.fixture(scope="module")
def tiny(tiny_llama):
    """(explain's pipeline of the tiny Llama folder, transformers' model of it)."""
    return explain.pipeline("text-generation", model=tiny_llama.folder), tiny_llama.model


def knobs_for(plain: list[int], eos: int, sampling: bool) -> dict:
    """Many knobs at once, aimed at the tokens a plain greedy run chose, so that each of them changes something."""
    knobs = dict(
        no_repeat_ngram_size=2,
        repetition_penalty=1.3,
        encoder_repetition_penalty=1.2,
        sequence_bias=[[[plain[3]], 4.0], [[plain[0], plain[1]], -2.0]],
        bad_words_ids=[[plain[0]]],
        suppress_tokens=[plain[2]],
        forced_eos_token_id=eos,
        exponential_decay_length_penalty=(6, 1.4),
        guidance_scale=1.5,
        renormalize_logits=True,
        remove_invalid_values=True,
    )
    if sampling:
        knobs.update(
            temperature=0.8,
            top_k=200,
            top_p=0.95,
            min_p=0.01,
            typical_p=0.95,
            epsilon_cutoff=2e-5,
            eta_cutoff=2e-5,
            watermarking_config={"bias": 2.5},
        )
    return knobs


def transformers_call(knobs: dict) -> dict:
    return {k: tuple(v) if k == "exponential_decay_length_penalty" else v for k, v in knobs.items()}


def both(pipe, model, prompt: str, seed: int | None, **knobs) -> tuple[list[int], list[int]]:
    """(explain's token ids, transformers' token ids) for the same prompt ids and knobs; the same seed for each."""
    if seed is not None:
        torch.manual_seed(seed)
    pipe(prompt, **knobs)
    ours = pipe.last_generation.input_ids[0].tolist()
    input_ids = pipe.last_generation.input_ids[:, : pipe.last_generation.prompt_length]
    if seed is not None:
        torch.manual_seed(seed)
    theirs = model.generate(input_ids, attention_mask=torch.ones_like(input_ids), **transformers_call(knobs))
    return ours, theirs[0].tolist()


@pytest.mark.parametrize("sampling", [False, True], ids=["greedy", "sampling"])
def test_tiny_llama_many_processors_equal_generate(tiny, sampling):
    pipe, model = tiny
    prompt, new = "The cat sat on the mat and the cat", 14
    ours, theirs = both(pipe, model, prompt, 0 if sampling else None, do_sample=sampling, max_new_tokens=new)
    assert ours == theirs
    plain = ours[pipe.last_generation.prompt_length :]
    knobs = knobs_for(plain, pipe.tokenizer.eos_token_id, sampling)
    ours, theirs = both(pipe, model, prompt, 1, do_sample=sampling, max_new_tokens=new, **knobs)
    assert ours == theirs
    generated = ours[pipe.last_generation.prompt_length :]
    assert generated != plain and plain[0] not in generated and plain[2] not in generated
    assert generated[-1] == pipe.tokenizer.eos_token_id or len(generated) < new  # forced (or boosted) EOS
    names = [p["name"] for p in pipe.last_generation.steps[0]["processors"]]
    assert names[0] == "guidance_scale" and names[-1] == "renormalize_logits" and len(names) == len(set(names))
    assert len(names) == (19 if sampling else 11)


@pytest.mark.parametrize(
    "kwargs, words",
    [  # issue 15: each was accepted, or failed with a raw error
        (dict(stop_strings=""), ["stop_strings", "empty string"]),
        (dict(stop_strings=5), ["stop_strings", "a string or a list of strings"]),
        (dict(temperature=float("inf")), ["temperature", "finite"]),  # the pipeline samples by default
        (dict(repetition_penalty=float("inf")), ["repetition_penalty", "finite"]),
        (dict(eos_token_id=[]), ["eos_token_id", "empty list", "leave it out"]),  # transformers: an IndexError
    ],
)
def test_pipeline_refuses_what_used_to_go_wrong_silently(embedded_pipe, kwargs, words):
    with pytest.raises(ExplainError) as error:
        embedded_pipe("Hello", max_new_tokens=3, **kwargs)
    for word in words:
        assert word in str(error.value)
    assert not embedded_pipe.trace.filter("generation", "step", embedded_pipe.trace.run)  # nothing was generated


# -- the step records and the step-through API -------------------------------------------------------------
@pytest.fixture(scope="module")
def run(embedded_pipe):
    """A short greedy run kept for what-if and force: no_repeat_ngram_size and suppress_tokens on."""
    return embedded_pipe.start(
        "one two one two one two one",
        do_sample=False,
        max_new_tokens=4,
        keep_logits=True,
        no_repeat_ngram_size=2,
        suppress_tokens=[28],
    ).run()


def test_each_processor_has_its_record_with_title_and_what_it_removed(run, embedded_pipe):
    first = run.steps[0]["processors"]
    assert [(p["name"], p["title"]) for p in first] == [
        ("no_repeat_ngram_size", "no repeated n-grams"),
        ("suppress_tokens", "suppressed tokens"),
    ]
    assert first[0]["removed"] >= 1 and first[1]["removed"] == 1 and first[1]["kept"] == 49152 - 1 - first[0]["removed"]
    settings = embedded_pipe.trace.last("generation", "settings").data
    assert [p["title"] for p in settings["processors"]] == ["no repeated n-grams", "suppressed tokens"]
    assert settings["settings"]["suppress_tokens"] == [28] and settings["sources"]["suppress_tokens"] == "call"


def test_what_if_takes_any_processor_knob_and_equals_transformers(run):
    result = run.what_if(1, do_sample=True, typical_p=0.5, epsilon_cutoff=1e-3, no_repeat_ngram_size=0)
    scores = run.raw_logits[1][None].clone()
    input_ids = run.input_ids[:, : run.steps[1]["position"]]
    for processor in (
        hf.SuppressTokensLogitsProcessor([28]),
        hf.TemperatureLogitsWarper(1.0 + 1e-9),
        hf.TopKLogitsWarper(50),
        hf.TypicalLogitsWarper(0.5),
        hf.EpsilonLogitsWarper(1e-3),
    ):
        if not isinstance(processor, hf.TemperatureLogitsWarper):  # generate() default 1.0: not built
            scores = processor(input_ids, scores)
    probs = torch.softmax(scores, dim=-1)[0]
    assert result["ids"] == torch.topk(probs, 10).indices.tolist() and result["kept"] == int((probs > 0).sum())
    assert result["settings"]["typical_p"] == 0.5


@pytest.mark.parametrize(
    "knobs, words",
    [
        (dict(temprature=0.5), ["temprature", "did you mean 'temperature'"]),  # issue 15: was silently ignored
        (dict(typical=0.5), ["typical", "did you mean 'typical_p'"]),
        (dict(max_new_tokens=8), ["max_new_tokens", "fixed when the run starts", "pipe.start"]),
        (dict(do_sample=True, top_p=-0.5), ["top_p", ">= 0"]),  # 2.0 keeps every token, as transformers skips it
    ],
)
def test_what_if_and_set_settings_refuse_a_wrong_knob(run, knobs, words):
    for call in (lambda: run.what_if(0, **knobs), lambda: run.set_settings(**knobs)):
        with pytest.raises(ExplainError) as error:
            call()
        for word in words:
            assert word in str(error.value)


@pytest.mark.parametrize("token_id", [5.5, True, "5", torch.tensor(5.0)])
def test_force_refuses_a_token_id_that_is_not_an_integer(run, token_id):
    with pytest.raises(ExplainError, match="the token id must be an integer"):  # issue 15: 5.5 broke the next step
        run.force(1, token_id)


def test_force_takes_numpy_and_torch_integers_and_rebuilds_the_processors(run):
    branch = run.force(np.int64(1), torch.tensor(run.steps[1]["probs_top"]["ids"][1]))
    assert branch.processors is not run.processors and branch.input_ids[0, -1] == run.steps[1]["probs_top"]["ids"][1]
    assert branch.step()["processors"][0]["name"] == "no_repeat_ngram_size"


def test_set_settings_turns_a_new_processor_on_for_the_next_steps(embedded_pipe):
    generation = embedded_pipe.start("la la la la", do_sample=False, max_new_tokens=6)
    generation.run(2)
    generation.set_settings(no_repeat_ngram_size=1)  # no token may appear twice
    generation.run()
    new = generation.generated_ids[2:]
    assert [p["name"] for p in generation.steps[-1]["processors"]] == ["no_repeat_ngram_size"]
    assert not set(new) & set(generation.input_ids[0, : -len(new)].tolist()) and len(set(new)) == len(new)
