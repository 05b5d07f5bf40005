"""The decoding parts of transformers' tests/generation/test_utils.py that apply to a decoder-only model, as the
specification of both backends: greedy search, sampling, beam search, beam sampling, assisted decoding (an
assistant model, prompt lookup) and left-padded batches each give what transformers gives for the same call
(transformers' tests check generate() against its own decoding functions and against greedy decoding; here the
answer is transformers.pipeline()'s and generate()'s on the same tiny model). Then issue 24's fifth item: a beam
search on backend="transformers" is traced into the same generation/beams and generation/ranking events, and the
same beam tree, as on backend="explain". Which tests apply: docs/conformance.md."""

from __future__ import annotations

import os

import pytest
import torch

PROMPT = "The cat sat on the mat and the cat"
TIMING = ("forward_time", "kv_cache")  # measured, not computed: differs between any two runs


def both(pipe, reference, prompt, seed: int | None = None, **call):
    if seed is not None:
        torch.manual_seed(seed)
    mine = pipe(prompt, **call)
    if seed is not None:
        torch.manual_seed(seed)
    return mine, reference(prompt, **call)


def generate(reference, prompt: str, seed: int | None = None, **call):
    """transformers' generate() on the prompt, with its scores (return_dict_in_generate)."""
    ids = reference.tokenizer(prompt, return_tensors="pt")["input_ids"]
    if seed is not None:
        torch.manual_seed(seed)
    with torch.inference_mode():
        return reference.model.generate(
            ids, attention_mask=torch.ones_like(ids), return_dict_in_generate=True, output_scores=True, **call
        )


def run_events(pipe) -> list:
    return [e for e in pipe.trace.events if e.run == pipe.last_generation.run_id]


# -- test_greedy_generate, test_greedy_generate_dict_outputs ------------------------------------------------------
def test_greedy_generate(pipe, reference):
    mine, expected = both(pipe, reference, PROMPT, do_sample=False, max_new_tokens=8, return_tensors=True)
    assert mine == expected
    reference_ids = generate(reference, PROMPT, do_sample=False, max_new_tokens=8).sequences[0].tolist()
    assert mine[0]["generated_token_ids"] == reference_ids
    steps = [e.data["token_id"] for e in run_events(pipe) if e.kind == "step"]
    assert steps == reference_ids[-8:]  # every step traced, on both backends


# -- test_sample_generate (num_return_sequences 1 and 3) -----------------------------------------------------------
@pytest.mark.parametrize("count", [1, 3])
def test_sample_generate(pipe, reference, count):
    call = dict(do_sample=True, max_new_tokens=8, num_return_sequences=count, top_k=20, temperature=0.9)
    mine, expected = both(pipe, reference, PROMPT, seed=5, return_tensors=True, **call)
    assert mine == expected and len(mine) == count


# -- test_beam_search_generate, test_beam_search_generate_dict_output ----------------------------------------------
@pytest.mark.parametrize("count", [1, 2])
def test_beam_search_generate(pipe, reference, count):
    call = dict(do_sample=False, num_beams=2, num_return_sequences=count, max_new_tokens=8)
    mine, expected = both(pipe, reference, PROMPT, return_tensors=True, **call)
    assert mine == expected
    reference_out = generate(reference, PROMPT, **call)
    assert [m["generated_token_ids"] for m in mine] == reference_out.sequences.tolist()
    ranking = pipe.trace.last("generation", "ranking", run=pipe.last_generation.run_id).data
    returned = [h["score"] for h in ranking["hypotheses"] if h["returned"]]
    # sequences_scores: one per returned sequence, negative (log-probabilities), equal to generate()'s
    assert returned == pytest.approx(reference_out.sequences_scores.tolist(), abs=1e-4)
    assert len(returned) == count and all(score < 0 for score in returned)


# -- test_beam_sample_generate, test_beam_sample_generate_dict_output ----------------------------------------------
def test_beam_sample_generate(pipe, reference):
    call = dict(do_sample=True, num_beams=2, num_return_sequences=2, max_new_tokens=6, temperature=0.8)
    mine, expected = both(pipe, reference, PROMPT, seed=3, return_tensors=True, **call)
    assert mine == expected
    reference_out = generate(reference, PROMPT, seed=3, **call)
    ranking = pipe.trace.last("generation", "ranking", run=pipe.last_generation.run_id).data
    returned = [h["score"] for h in ranking["hypotheses"] if h["returned"]]
    assert returned == pytest.approx(reference_out.sequences_scores.tolist(), abs=1e-4)


# -- test_assisted_decoding_matches_greedy_search, test_prompt_lookup_decoding_matches_greedy_search -------------
def test_assisted_decoding_matches_greedy_search(pipe, reference, backend, request):
    """The model as its own assistant: assisted decoding returns greedy decoding's text (and transformers')."""
    call = dict(do_sample=False, max_new_tokens=10)
    greedy = pipe(PROMPT, **call)
    assistant = pipe if backend == "explain" else pipe.model  # each backend takes its own kind of model
    mine = pipe(PROMPT, assistant_model=assistant, **call)
    assert mine == greedy == reference(PROMPT, assistant_model=reference.model, **call)


def test_prompt_lookup_decoding_matches_greedy_search(pipe, reference):
    prompt = "a b c d a b c d a b"
    call = dict(do_sample=False, max_new_tokens=10)
    greedy = pipe(prompt, **call)
    mine, expected = both(pipe, reference, prompt, prompt_lookup_num_tokens=3, **call)
    assert mine == expected == greedy


# -- test_left_padding_compatibility ------------------------------------------------------------------------------
@pytest.mark.parametrize("knobs", [{}, {"repetition_penalty": 1.5}], ids=["plain", "repetition penalty"])
def test_left_padding_compatibility(padded, backend, knobs):
    """A batch, left-padded, gives each prompt transformers' answer for the same batch (with a repetition penalty
    too: transformers leaves the pads out of it, RepetitionPenaltyLogitsProcessor's prompt_ignore_length)."""
    pipe, reference = padded[backend], padded["reference"]
    prompts = ["Hello", "The cat sat on the mat"]
    call = dict(do_sample=False, max_new_tokens=5, batch_size=2, **knobs)
    assert pipe(prompts, **call) == reference(prompts, **call)


# -- issue 24, item 5: beam search traced alike on both backends ----------------------------------------------------
@pytest.mark.parametrize(
    "call",
    [
        dict(do_sample=False, num_beams=3, max_new_tokens=6),
        dict(do_sample=False, num_beams=3, num_return_sequences=2, max_new_tokens=8, length_penalty=0.5),
        dict(do_sample=True, num_beams=2, num_return_sequences=2, max_new_tokens=5, seed=1),
    ],
    ids=["beam search", "returned two, length penalty", "beam sampling"],
)
def test_beam_search_traced_alike_on_both_backends(backends, reference, call):
    """backend="transformers" emits generation/beams per step and generation/ranking at the end, read from
    transformers' _beam_search; they equal the explain backend's for the same call (timings aside), the beam tree
    is the same, and the answer is transformers.pipeline()'s."""
    from explain.features.trees import beam_tree

    call = dict(call)
    seed = call.pop("seed", None)
    outputs, events = {}, {}
    for name, pipe in backends.items():
        if seed is not None:
            torch.manual_seed(seed)
        outputs[name] = pipe(PROMPT, **call)
        events[name] = run_events(pipe)
    if seed is not None:
        torch.manual_seed(seed)
    assert outputs["explain"] == outputs["transformers"] == reference(PROMPT, **call)
    kinds = {name: [(e.stage, e.kind) for e in found] for name, found in events.items()}
    assert kinds["explain"] == kinds["transformers"]
    assert ("generation", "beams") in kinds["transformers"] and ("generation", "ranking") in kinds["transformers"]
    beams = {name: [e.data for e in found if e.kind in ("beams", "ranking")] for name, found in events.items()}
    for ours, theirs in zip(beams["explain"], beams["transformers"], strict=True):
        assert {k: v for k, v in ours.items() if k not in TIMING} == {
            k: v for k, v in theirs.items() if k not in TIMING
        }
    settings = {name: next(e.data for e in found if e.kind == "settings") for name, found in events.items()}
    assert (
        settings["transformers"]["steps_traced"]
        and settings["transformers"]["strategy"] == settings["explain"]["strategy"]
    )
    assert beam_tree(events["explain"], PROMPT) == beam_tree(events["transformers"], PROMPT)


@pytest.mark.parametrize("knobs", [{}, {"repetition_penalty": 1.2, "min_new_tokens": 3}], ids=["plain", "processors"])
def test_prompt_lookup_traced_alike_on_both_backends(backends, reference, knobs):
    """Greedy prompt lookup on backend="transformers": generation/draft per round and a generation/step per token,
    read from transformers' _assisted_decoding, equal to the explain backend's (times aside; the entropy within
    1e-5 bits, the two backends sum it differently); the rounds view is the same; the answer is transformers'."""
    from explain.features.trees import draft_rounds

    prompt = "a b c d a b c d a b"
    call = dict(do_sample=False, max_new_tokens=10, prompt_lookup_num_tokens=3, **knobs)
    outputs = {name: pipe(prompt, **call) for name, pipe in backends.items()}
    events = {name: run_events(pipe) for name, pipe in backends.items()}
    assert outputs["explain"] == outputs["transformers"] == reference(prompt, **call)
    kinds = {name: [(e.stage, e.kind) for e in found] for name, found in events.items()}
    assert kinds["explain"] == kinds["transformers"] and ("generation", "draft") in kinds["transformers"]
    times = ("draft_time", "verify_time")
    drafts = {name: [e.data for e in found if e.kind == "draft"] for name, found in events.items()}
    for ours, theirs in zip(drafts["explain"], drafts["transformers"], strict=True):
        assert {k: v for k, v in ours.items() if k not in times} == {k: v for k, v in theirs.items() if k not in times}
    steps = {name: [e.data for e in found if e.kind == "step"] for name, found in events.items()}
    for ours, theirs in zip(steps["explain"], steps["transformers"], strict=True):
        for key in ours:
            if key in TIMING:
                continue
            if key == "entropy_bits":
                assert theirs[key] == pytest.approx(ours[key], abs=1e-5)
            else:
                assert theirs[key] == ours[key], key
    views = {name: draft_rounds(found) for name, found in events.items()}

    def untimed(view):
        rounds = [{k: v for k, v in r.items() if k not in times} for r in view.get("rounds", [])]
        return {**{k: v for k, v in view.items() if k != "rounds"}, "rounds": rounds}

    assert untimed(views["explain"]) == untimed(views["transformers"])


@pytest.fixture(scope="module")
def assisted(tiny_folder, tmp_path_factory) -> dict:
    """A target and a smaller assistant of the same tokenizer, written by transformers: the assistant is the one-layer
    tiny model with its head scaled by 10 (sure enough of its tokens to draft several), the target the same with a
    second, seeded random layer, so that it agrees with some drafted tokens and not with others. "explain" and
    "transformers": a pipeline of the target on that backend and the assistant as that backend takes it (an explain
    pipeline, a transformers model); "reference": transformers.pipeline() of the target, and the assistant model."""
    import shutil

    import transformers

    import explain

    folders = {name: tmp_path_factory.mktemp(f"assisted-{name}") / "model" for name in ("target", "assistant")}
    small = transformers.AutoModelForCausalLM.from_pretrained(tiny_folder).eval()
    with torch.no_grad():
        small.lm_head.weight.mul_(10)
    config = transformers.AutoConfig.from_pretrained(tiny_folder)
    config.num_hidden_layers = 2
    torch.manual_seed(7)
    target = transformers.AutoModelForCausalLM.from_config(config).eval()
    with torch.no_grad():
        for name, parameter in target.named_parameters():
            if "layers.1." in name and "norm" not in name:
                parameter.normal_(0, 0.1)
    target.load_state_dict(small.state_dict(), strict=False)  # layer 0, embeddings and head: the assistant's
    for model, folder in ((target, folders["target"]), (small, folders["assistant"])):
        model.save_pretrained(folder)
        for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
            if os.path.exists(f"{tiny_folder}/{name}"):
                shutil.copy(f"{tiny_folder}/{name}", folder / name)
    target_folder, assistant_folder = str(folders["target"]), str(folders["assistant"])
    return {
        "explain": (explain.pipeline("text-generation", model=target_folder), explain.pipeline(model=assistant_folder)),
        "transformers": (explain.pipeline("text-generation", model=target_folder, backend="transformers"), small),
        "reference": (transformers.pipeline("text-generation", model=target_folder), small),
        "folder": target_folder,
    }


@pytest.mark.parametrize("knobs", [{}, {"repetition_penalty": 1.2, "min_new_tokens": 3}], ids=["plain", "processors"])
def test_assistant_model_traced_alike_on_both_backends(assisted, knobs):
    """Greedy assisted decoding by a smaller assistant model on backend="transformers": a generation/draft per round
    (the assistant's drafted tokens and their probabilities, why the draft ended, the target's picks, the accepted
    count, the rejection) and a generation/step per token, read from transformers' _assisted_decoding and its
    AssistedCandidateGenerator, equal to the explain backend's (times aside); the rounds view is the same; the
    answer is transformers.pipeline()'s with the same assistant, and plain greedy decoding's."""
    from explain.features.trees import draft_rounds

    call = dict(do_sample=False, max_new_tokens=12, **knobs)
    pipes = {name: assisted[name][0] for name in ("explain", "transformers")}
    outputs = {name: pipe(PROMPT, assistant_model=assisted[name][1], **call) for name, pipe in pipes.items()}
    events = {name: run_events(pipe) for name, pipe in pipes.items()}
    reference, helper = assisted["reference"]
    assert outputs["explain"] == outputs["transformers"] == reference(PROMPT, assistant_model=helper, **call)
    assert outputs["transformers"] == reference(PROMPT, **call)  # speculative decoding's guarantee
    kinds = {name: [(e.stage, e.kind) for e in found] for name, found in events.items()}
    assert kinds["explain"] == kinds["transformers"] and ("generation", "draft") in kinds["transformers"]
    settings = next(e.data for e in events["transformers"] if e.kind == "settings")
    assert settings["steps_traced"] and "why_not_traced" not in settings
    times = ("draft_time", "verify_time")
    drafts = {name: [e.data for e in found if e.kind == "draft"] for name, found in events.items()}
    for ours, theirs in zip(drafts["explain"], drafts["transformers"], strict=True):
        assert theirs["source"] == "assistant"
        assert {k: v for k, v in ours.items() if k not in times} == {k: v for k, v in theirs.items() if k not in times}
    # a round kept every drafted token and a round rejected one: both paths of the check were traced
    assert any(d["rejection"] is None and d["drafted"] for d in drafts["transformers"])
    assert any(d["rejection"] is not None for d in drafts["transformers"])
    steps = {name: [e.data for e in found if e.kind == "step"] for name, found in events.items()}
    for ours, theirs in zip(steps["explain"], steps["transformers"], strict=True):
        for key in ours:
            if key in TIMING:
                continue
            if key == "entropy_bits":
                assert theirs[key] == pytest.approx(ours[key], abs=1e-5)
            else:
                assert theirs[key] == ours[key], key
    views = {name: draft_rounds(found) for name, found in events.items()}
    assert {k: v for k, v in views["explain"].items() if k != "rounds"} == {
        k: v for k, v in views["transformers"].items() if k != "rounds"
    }


def test_assisted_decoding_untraced_says_why(assisted, backends, reference):
    """What backend="transformers" does not trace of assisted decoding still runs with transformers' answer, and the
    settings event says why it is not traced: speculative sampling (its uniform draws are inside transformers),
    and the model as its own assistant (the assistant's generate() would run through the target's hooks)."""
    pipe, helper = assisted["transformers"]
    theirs, _ = assisted["reference"]
    call = dict(do_sample=True, max_new_tokens=8, temperature=0.8)
    torch.manual_seed(4)
    mine = pipe(PROMPT, assistant_model=helper, **call)
    torch.manual_seed(4)
    assert mine == theirs(PROMPT, assistant_model=helper, **call)
    found = run_events(pipe)
    settings = next(e.data for e in found if e.kind == "settings")
    assert not settings["steps_traced"] and "speculative sampling" in settings["why_not_traced"]
    assert not any(e.kind in ("draft", "step") for e in found)
    own = backends["transformers"]
    call = dict(do_sample=False, max_new_tokens=6)
    assert own(PROMPT, assistant_model=own.model, **call) == reference(PROMPT, assistant_model=reference.model, **call)
    settings = next(e.data for e in run_events(own) if e.kind == "settings")
    assert settings["generation_mode"] == "assisted_generation" and "the model itself" in settings["why_not_traced"]


def test_pipeline_assistant_model_traced(assisted):
    """An assistant given when the pipeline is built (transformers' pipeline(..., assistant_model=)) drafts every
    call on backend="transformers", traced as the call's own assistant is, with transformers' answer."""
    import transformers

    import explain

    helper = assisted["transformers"][1]
    pipe = explain.pipeline("text-generation", model=assisted["folder"], backend="transformers", assistant_model=helper)
    reference = transformers.pipeline("text-generation", model=assisted["folder"], assistant_model=helper)
    call = dict(do_sample=False, max_new_tokens=8)
    assert pipe(PROMPT, **call) == reference(PROMPT, **call)
    found = run_events(pipe)
    drafts = [e.data for e in found if e.kind == "draft"]
    assert drafts and all(d["source"] == "assistant" for d in drafts)
    assert sum(len(d["new_ids"]) for d in drafts) == len([e for e in found if e.kind == "step"]) == 8
