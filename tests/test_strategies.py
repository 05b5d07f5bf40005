"""Every decoding strategy against transformers, on tiny random Llamas written by transformers (loaded by explain
from their folders): several samples, beam search and beam sampling, assisted decoding by an assistant model and by
prompt lookup. Each call returns what transformers' pipeline returns for the same call, and the sequences (and beam
scores, within 1e-4) equal generate()'s; greedy-assisted output equals plain greedy decoding (the guarantee of
speculative decoding). Then the strategy's events, the arguments refused with what to use, and the step-through.
The same on the embedded SmolLM2 is in test_strategy_fidelity.py.
"""

from __future__ import annotations

import pytest
import torch
import transformers

import explain
from explain.errors import ExplainError

transformers.logging.set_verbosity_error()
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
SCORE_TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def tiny(tiny_llama):
    """(explain's pipeline of the tiny Llama folder, transformers' pipeline of the same model and folder)."""
    tokenizer = transformers.AutoTokenizer.from_pretrained(tiny_llama.folder)
    theirs = transformers.pipeline("text-generation", model=tiny_llama.model, tokenizer=tokenizer)
    return explain.pipeline("text-generation", model=tiny_llama.folder), theirs


@pytest.fixture(scope="module")
def small(tiny_llama, tmp_path_factory):
    """A smaller assistant of the same vocabulary: the tiny Llama's embeddings, head and first layer only (written
    by transformers), so that it agrees with the tiny Llama on some tokens and not on others."""
    config = transformers.LlamaConfig(**{**tiny_llama.model.config.to_dict(), "num_hidden_layers": 1})
    model = transformers.LlamaForCausalLM(config).eval()
    missing = model.load_state_dict(tiny_llama.model.state_dict(), strict=False)
    assert not missing.missing_keys
    folder = tmp_path_factory.mktemp("tiny-llama-1-layer")
    model.save_pretrained(folder)
    tiny_llama.tokenizer.save(folder)
    return explain.pipeline("text-generation", model=str(folder)), model


def generate(theirs, ids: list[int], seed: int | None = None, **kwargs):
    """transformers' generate() on the prompt ids, with its scores."""
    input_ids = torch.tensor([ids])
    if seed is not None:
        torch.manual_seed(seed)
    with torch.inference_mode():
        return theirs.model.generate(
            input_ids,
            attention_mask=torch.ones_like(input_ids),
            return_dict_in_generate=True,
            output_scores=True,
            **kwargs,
        )


def both(ours, theirs, prompt, seed: int | None = None, **kwargs):
    """(explain's pipeline output, transformers' pipeline output) for one call, under the same seed."""
    if seed is not None:
        torch.manual_seed(seed)
    mine = ours(prompt, **kwargs)
    if seed is not None:
        torch.manual_seed(seed)
    return mine, theirs(prompt, **kwargs)


def greedy_tokens(ours, prompt, new=12) -> list[int]:
    ours(prompt, max_new_tokens=new, do_sample=False)
    return ours.last_generation.generated_ids


PROMPT = "The cat sat on the mat and the cat"


# -- several samples ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "knobs", [dict(), dict(temperature=0.7, top_k=50, top_p=0.9, repetition_penalty=1.3)], ids=["plain", "processors"]
)
def test_several_samples_equal_the_pipeline_under_a_seed(tiny, knobs):
    ours, theirs = tiny
    call = dict(do_sample=True, num_return_sequences=5, max_new_tokens=10, **knobs)
    mine, expected = both(ours, theirs, PROMPT, seed=7, **call)
    assert len(mine) == 5 and mine == expected
    generation = ours.last_generation
    reference = generate(theirs, generation.sequences[0][: generation.prompt_length], seed=7, **call)
    assert generation.sequences == reference.sequences.tolist()
    assert len({tuple(s) for s in generation.sequences}) > 1  # really several draws
    # one generation/step per row and step, each naming its row
    steps = ours.trace.filter("generation", "step", generation.run_id)
    assert sorted({e.data["sequence"] for e in steps}) == list(range(5))
    for row in range(5):
        ids = [e.data["token_id"] for e in steps if e.data["sequence"] == row]
        assert ids == generation.sequences[row][generation.prompt_length :][: len(ids)]


def test_finished_samples_are_padded_as_transformers_pads_them(tiny):
    """A sample that meets EOS stops; the batch goes on and it gets the pad token, as generate() does."""
    ours, theirs = tiny
    plain = greedy_tokens(ours, PROMPT)
    frequent = max(set(plain), key=plain.count)  # a token the model likes, made EOS so that some rows end early
    call = dict(
        do_sample=True,
        num_return_sequences=6,
        max_new_tokens=12,
        temperature=0.3,
        eos_token_id=frequent,
        pad_token_id=0,
    )
    for seed in range(4):
        mine, expected = both(ours, theirs, PROMPT, seed=seed, **call)
        assert mine == expected
        generation = ours.last_generation
        reference = generate(theirs, generation.sequences[0][: generation.prompt_length], seed=seed, **call)
        assert generation.sequences == reference.sequences.tolist()
        if any(0 in row[generation.prompt_length :] for row in generation.sequences):
            break
    else:
        pytest.fail("no sample ended early: the test did not check the padding")


def test_greedy_with_several_sequences_is_refused(tiny):
    ours, _ = tiny
    with pytest.raises(ExplainError, match="do_sample=True.*num_beams=3"):
        ours(PROMPT, num_return_sequences=3, do_sample=False, max_new_tokens=3)


# -- beam search ---------------------------------------------------------------------------------------------------
BEAM_CALLS = {
    "4 beams": dict(num_beams=4),
    "4 beams, 3 returned": dict(num_beams=4, num_return_sequences=3),
    "length_penalty 0.5, early_stopping": dict(
        num_beams=3, num_return_sequences=2, length_penalty=0.5, early_stopping=True
    ),
    "length_penalty 2, never": dict(num_beams=3, length_penalty=2.0, early_stopping="never"),
    "with processors": dict(num_beams=4, num_return_sequences=2, repetition_penalty=1.5, no_repeat_ngram_size=2),
}


@pytest.mark.parametrize("eos", [False, True], ids=["no EOS", "a frequent EOS"])
@pytest.mark.parametrize("name", list(BEAM_CALLS))
def test_beam_search_equals_transformers(tiny, name, eos):
    """Sequences, sequences_scores (within 1e-4) and the pipeline's output; with a frequent token made EOS the
    finished list, the length penalty and early stopping all act."""
    ours, theirs = tiny
    call = dict(do_sample=False, max_new_tokens=9, **BEAM_CALLS[name])
    if eos:
        plain = greedy_tokens(ours, PROMPT)
        call.update(eos_token_id=plain[2], pad_token_id=0)
    mine, expected = both(ours, theirs, PROMPT, **call)
    assert mine == expected
    generation = ours.last_generation
    reference = generate(theirs, generation.sequences[0][: generation.prompt_length], **call)
    assert generation.sequences == reference.sequences.tolist()
    assert generation.sequences_scores == pytest.approx(reference.sequences_scores.tolist(), abs=SCORE_TOLERANCE)
    ranking = ours.trace.last("generation", "ranking", run=generation.run_id).data
    returned = [h for h in ranking["hypotheses"] if h["returned"]]
    assert [h["score"] for h in returned] == pytest.approx(reference.sequences_scores.tolist(), abs=SCORE_TOLERANCE)
    for hypothesis in returned:  # score = log_prob / length ** length_penalty
        assert hypothesis["score"] == pytest.approx(
            hypothesis["log_prob"] / hypothesis["length"] ** call.get("length_penalty", 1.0), rel=1e-6
        )


def test_beam_search_records_every_beams_candidates(tiny):
    ours, theirs = tiny
    ours(PROMPT, num_beams=3, max_new_tokens=5, do_sample=False)
    generation = ours.last_generation
    steps = ours.trace.filter("generation", "beams", generation.run_id)
    assert len(steps) == len(generation.steps) == 5
    first = steps[0].data
    assert len(first["beams"]) == 1 and len(first["candidates"]) == 6  # K = max(2, 1 + #EOS) * num_beams
    for step in steps:
        d = step.data
        kept = sorted(c["kept"] for c in d["candidates"] if c["kept"] is not None)
        if d is not steps[-1].data:  # every running slot is filled by one unfinished candidate
            assert kept == [0, 1, 2]
        else:  # the last step: every candidate reached max_length and the best joined the finished list
            assert kept == [] and all(c["finished"] == "max_length" for c in d["candidates"])
            assert sum(c["added"] for c in d["candidates"]) == 3
        scores = [c["score"] for c in d["candidates"]]
        assert scores == sorted(scores, reverse=True)
        for candidate in d["candidates"]:  # a candidate's score is its beam's score + its token's log-probability
            beam = d["beams"][candidate["beam"]]
            entry = beam["top"]["ids"].index(candidate["token_id"])
            assert candidate["score"] == pytest.approx(beam["score"] + beam["top"]["values"][entry], abs=1e-4)
        assert all(len(b["top"]["ids"]) <= 6 for b in d["beams"])  # bounded: the top K, never whole rows
    ranking = ours.trace.last("generation", "ranking", run=generation.run_id).data
    assert ranking["hypotheses"][0]["ids"] == generation.generated_ids


def test_beam_sampling_equals_generate_under_a_seed(tiny):
    ours, theirs = tiny
    call = dict(do_sample=True, num_beams=3, num_return_sequences=2, max_new_tokens=8, temperature=0.8, top_k=40)
    mine, expected = both(ours, theirs, PROMPT, seed=3, **call)
    assert mine == expected
    generation = ours.last_generation
    reference = generate(theirs, generation.sequences[0][: generation.prompt_length], seed=3, **call)
    assert generation.sequences == reference.sequences.tolist()
    assert generation.sequences_scores == pytest.approx(reference.sequences_scores.tolist(), abs=SCORE_TOLERANCE)


def test_beam_search_steps_one_at_a_time(tiny):
    """The step-through: each step advances every beam; stepping to the end gives the call's answer."""
    ours, _ = tiny
    ours(PROMPT, num_beams=3, max_new_tokens=6, do_sample=False)
    expected = ours.last_generation.sequences
    generation = ours.start(PROMPT, num_beams=3, max_new_tokens=6, do_sample=False)
    record = generation.step()
    assert record["step"] == 0 and len(record["running"]) == 3
    while not generation.finished:
        generation.step()
    assert generation.sequences == expected
    assert PROMPT + ours.finish(generation) == ours.trace.last("decoding", "decode", run=generation.run_id).data[
        "text"
    ].join([PROMPT, ""])
    with pytest.raises(ExplainError, match="runs several"):
        generation.force(1, 5)


def test_beam_search_refusals(tiny):
    ours, _ = tiny
    with pytest.raises(ExplainError, match=r"num_return_sequences \(5\).*num_beams \(2\)"):
        ours(PROMPT, num_beams=2, num_return_sequences=5, max_new_tokens=3)
    with pytest.raises(ExplainError, match="group beam search.*transformers-community/group-beam-search"):
        ours(PROMPT, num_beams=4, num_beam_groups=2, diversity_penalty=1.0, max_new_tokens=3)
    with pytest.raises(ExplainError, match="contrastive search.*transformers-community/contrastive-search"):
        ours(PROMPT, penalty_alpha=0.6, top_k=4, do_sample=False, max_new_tokens=3)
    with pytest.raises(ExplainError, match="early_stopping"):
        ours(PROMPT, num_beams=2, early_stopping="sometimes", max_new_tokens=3)


# -- assisted decoding -----------------------------------------------------------------------------------------------
def test_prompt_lookup_equals_greedy_and_transformers(tiny):
    ours, theirs = tiny
    prompt = "def add(a, b):\n    return a + b\n\ndef add(a, b):\n    return a"
    call = dict(do_sample=False, max_new_tokens=16)
    plain = ours(prompt, **call)
    mine, expected = both(ours, theirs, prompt, prompt_lookup_num_tokens=3, **call)
    assert mine == expected == plain
    generation = ours.last_generation
    rounds = ours.trace.filter("generation", "draft", generation.run_id)
    assert rounds and sum(len(r.data["drafted"]) for r in rounds) > 0  # the lookup found something to draft
    assert len(rounds) == len(generation.rounds) <= len(generation.steps)
    assert sum(r.data["accepted"] + 1 for r in rounds) >= len(generation.steps)
    steps = ours.trace.filter("generation", "step", generation.run_id)
    assert [s.data["token_id"] for s in steps] == generation.generated_ids


@pytest.mark.parametrize("assistant", ["itself", "one layer"])
def test_assistant_model_equals_greedy_and_transformers(tiny, small, tiny_llama, assistant):
    """With the model as its own assistant every drafted token is accepted; with a one-layer assistant some are
    rejected. Both give plain greedy decoding's text, and transformers' assisted output."""
    ours, theirs = tiny
    helper, helper_reference = (ours, tiny_llama.model) if assistant == "itself" else small
    call = dict(do_sample=False, max_new_tokens=14)
    plain = ours(PROMPT, **call)
    mine = ours(PROMPT, assistant_model=helper, **call)
    expected = theirs(PROMPT, assistant_model=helper_reference, **call)
    assert mine == expected == plain
    generation = ours.last_generation
    rate = generation.acceptance
    assert rate["drafted"] > 0
    if assistant == "itself":
        assert rate["accepted"] == rate["drafted"] and all(r["rejection"] is None for r in generation.rounds)
    else:
        rejected = [r for r in generation.rounds if r["rejection"] is not None]
        assert rejected and rate["accepted"] < rate["drafted"]
        for r in rejected:  # the model would have picked another token where the first drafted one was rejected
            assert r["rejection"]["drafted_id"] == r["drafted"][r["accepted"]]
            assert r["rejection"]["target_id"] != r["rejection"]["drafted_id"]
            assert r["rejection"]["target_id"] == r["new_ids"][-1]


def test_speculative_sampling_equals_transformers_under_a_seed(tiny, small):
    ours, theirs = tiny
    helper, helper_reference = small
    call = dict(do_sample=True, max_new_tokens=12, temperature=0.9)
    torch.manual_seed(11)
    mine = ours(PROMPT, assistant_model=helper, **call)
    torch.manual_seed(11)
    expected = theirs(PROMPT, assistant_model=helper_reference, **call)
    assert mine == expected


def test_assisted_refusals(tiny, small):
    ours, _ = tiny
    with pytest.raises(ExplainError, match="num_return_sequences has to be 1 with assisted decoding"):
        ours(PROMPT, prompt_lookup_num_tokens=3, do_sample=True, num_return_sequences=2, max_new_tokens=3)
    with pytest.raises(ExplainError, match="explain pipeline"):
        ours(PROMPT, assistant_model="gpt2", max_new_tokens=3)


def test_settings_event_names_the_strategy(tiny, small):
    ours, _ = tiny
    for call, name, mode in [
        (dict(), "one_sequence", "greedy_search"),
        (dict(do_sample=True, num_return_sequences=2), "samples", "sample"),
        (dict(num_beams=2), "beam_search", "beam_search"),
        (dict(num_beams=2, do_sample=True), "beam_search", "beam_sample"),
        (dict(prompt_lookup_num_tokens=2), "assisted", "assisted_generation"),
        (dict(assistant_model=small[0]), "assisted", "assisted_generation"),
    ]:
        ours(PROMPT, max_new_tokens=2, **{"do_sample": False, **call})
        settings = ours.trace.last("generation", "settings", run=ours.last_generation.run_id)
        assert settings is not None
        strategy = settings.data["strategy"]
        assert (strategy["name"], strategy["mode"]) == (name, mode)
    label = settings.data["settings"]["assistant_model"]  # the last call's assistant, shown by a label, not an object
    assert isinstance(label, str) and "LlamaForCausalLM" in label and "M parameters" in label


def test_a_list_of_prompts_is_answered_as_the_pipeline_answers_it(tiny):
    """One prompt after another (transformers' pipeline default, batch_size=1), and the trace says so."""
    ours, theirs = tiny
    prompts = [PROMPT, "Once upon a time"]
    for call in (dict(num_beams=3, num_return_sequences=2), dict(prompt_lookup_num_tokens=2)):
        mine, expected = both(ours, theirs, prompts, do_sample=False, max_new_tokens=6, **call)
        assert mine == expected and len(mine) == 2
    note = ours.trace.last("generation", "settings", run=ours.last_generation.run_id).data["batch"]
    assert (note["index"], note["size"], note["batch_size"]) == (1, 2, 1) and "one after another" in note["note"]


def test_the_console_describes_each_strategy(tiny, small, capsys):
    from explain.console import print_timeline

    ours, _ = tiny
    ours(PROMPT, num_beams=3, num_return_sequences=2, max_new_tokens=4, do_sample=False)
    print_timeline(ours.trace, run=ours.last_generation.run_id)
    beams = capsys.readouterr().out
    assert "beam search: 3 beams, length_penalty 1.0, early_stopping False, up to 4 new tokens" in beams
    assert "beam step 0: running " in beams and "beam search ranked 3 finished sequences; best " in beams
    assert "beam step 3: no beam running (every candidate finished); 3 finished (3 new)" in beams
    assert "stopped by max_length" in beams
    ours(PROMPT, assistant_model=small[0], max_new_tokens=8, do_sample=False)
    print_timeline(ours.trace, run=ours.last_generation.run_id)
    drafts = capsys.readouterr().out
    assert "assisted decoding (greedy): drafts by " in drafts and "round 0 (assistant): " in drafts
    rejected = next(r for r in ours.last_generation.rounds if r["rejection"])
    assert (
        f"round {rejected['round']} (assistant): {rejected['accepted']}/{len(rejected['drafted'])} drafted "
        f"tokens accepted"
        in drafts
        and "the model ranks first" in drafts
    )
    ours(PROMPT, do_sample=True, num_return_sequences=2, max_new_tokens=3)
    print_timeline(ours.trace, run=ours.last_generation.run_id)
    assert "sampling 2 sequences, up to 3 new tokens" in capsys.readouterr().out


def test_the_command_line_prints_every_returned_sequence(tiny_llama, capsys):
    from explain.__main__ import main as cli

    assert (
        cli(
            [
                "generate",
                PROMPT,
                "--model",
                tiny_llama.folder,
                "--num-beams",
                "3",
                "--num-return-sequences",
                "2",
                "--max-new-tokens",
                "4",
                "--no-do-sample",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert f"[0] {PROMPT}" in out and f"[1] {PROMPT}" in out and "[2]" not in out
    assert "beam search: 3 beams" in out and "beam search ranked 3 finished sequences" in out
