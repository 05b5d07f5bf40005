"""The context window (max_position_embeddings) as transformers treats it, on tiny models written by transformers.

A model with rotary positions (Llama here) computes any position: transformers' generate goes on past the window,
warning once (MaxLengthCriteria's "friendly reminder"), and explain goes on too, saying so in the trace (the
settings event's `warnings`, and `warnings` on the step that passes the window) and with a UserWarning. GPT-2
learned one embedding per position: transformers' generate fails there with an IndexError, explain stops with
stop reason "context_window" and a message saying why, and refuses a prompt longer than the window.
"""

from __future__ import annotations

import pytest
import torch
import transformers

import explain
from explain.errors import ExplainError

transformers.logging.set_verbosity_error()
WINDOW = 16


@pytest.fixture(scope="module")
def tokenizer(embedded_pipe):
    return embedded_pipe.tokenizer


def write(folder, model, tokenizer) -> str:
    model.save_pretrained(folder)
    tokenizer.save(folder)
    return str(folder)


@pytest.fixture(scope="module")
def rope_model(tmp_path_factory, tokenizer):
    """(folder, transformers model): a tiny random Llama with a 16-position window."""
    config = transformers.LlamaConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=WINDOW,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(config).eval()
    return write(tmp_path_factory.mktemp("tiny-llama-16"), model, tokenizer), model


@pytest.fixture(scope="module")
def learned_model(tmp_path_factory, tokenizer):
    """(folder, transformers model): a tiny random GPT-2 with 16 learned positions."""
    config = transformers.GPT2Config(
        vocab_size=tokenizer.vocab_size,
        n_positions=WINDOW,
        n_embd=32,
        n_layer=2,
        n_head=4,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(config).eval()
    return write(tmp_path_factory.mktemp("tiny-gpt2-16"), model, tokenizer), model


def words(tokenizer, count: int) -> str:
    """A text of exactly `count` tokens (a BOS, if the tokenizer adds one, included)."""
    text = "one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen " * 3
    parts = text.split()
    for end in range(1, len(parts) + 1):
        candidate = " ".join(parts[:end])
        if len(tokenizer.encode(candidate)) == count:
            return candidate
    raise AssertionError(f"no prefix of the text is {count} tokens")


def greedy_ids(model, ids: list[int], new_tokens: int) -> list[int]:
    prompt = torch.tensor([ids])
    out = model.generate(
        prompt,
        attention_mask=torch.ones_like(prompt),
        max_new_tokens=new_tokens,
        do_sample=False,
        eos_token_id=None,
        pad_token_id=0,
    )
    return out[0].tolist()


def settings_event(pipe):
    return pipe.trace.filter("generation", "settings", pipe.trace.run)[-1].data


@pytest.mark.parametrize("prompt_tokens", [10, 20])  # passing the window while generating, or from the prompt on
def test_rope_model_goes_past_the_window_as_transformers_does(rope_model, tokenizer, prompt_tokens):
    folder, reference = rope_model
    pipe = explain.pipeline(model=folder)
    text = words(tokenizer, prompt_tokens)
    with pytest.warns(UserWarning, match="past the model's context window of 16 positions"):
        pipe(text, max_new_tokens=12, do_sample=False, eos_token_id=None)
    generation = pipe.last_generation
    assert generation.stop_reason == "max_length" and len(generation.steps) == 12
    assert generation.input_ids[0].tolist() == greedy_ids(reference, tokenizer.encode(text), 12)
    settings = settings_event(pipe)
    assert settings["context_window"] == WINDOW and len(settings["warnings"]) == 1
    expected = "longer than the model's context window" if prompt_tokens > WINDOW else "may run past"
    assert expected in settings["warnings"][0]
    warned = [step["step"] for step in generation.steps if step.get("warnings")]
    # the step whose token makes the sequence longer than the window: the next forward is past it
    assert warned == [max(WINDOW - prompt_tokens, 0)]
    step = generation.steps[warned[0]]
    assert step["position"] + 1 > WINDOW and "rotary positions go on" in step["warnings"][0]
    events = pipe.trace.filter("generation", "step", pipe.trace.run)
    assert [e.data["step"] for e in events if e.data.get("warnings")] == warned  # in the trace, as views read it


def test_rope_model_within_the_window_has_no_warning(rope_model, tokenizer):
    pipe = explain.pipeline(model=rope_model[0])
    pipe(words(tokenizer, 6), max_new_tokens=10, do_sample=False, eos_token_id=None)
    assert settings_event(pipe)["warnings"] == []
    assert not any(step.get("warnings") for step in pipe.last_generation.steps)


def test_learned_positions_stop_at_the_window_with_the_reason(learned_model, tokenizer):
    folder, reference = learned_model
    pipe = explain.pipeline(model=folder)
    ids = tokenizer.encode(words(tokenizer, 10))
    pipe(words(tokenizer, 10), max_new_tokens=12, do_sample=False, eos_token_id=None)
    generation = pipe.last_generation
    assert generation.stop_reason == "context_window" and len(generation.steps) == WINDOW - 10
    assert generation.input_ids[0].tolist() == greedy_ids(reference, ids, WINDOW - 10)  # the same tokens up to it
    last = generation.steps[-1]
    assert last["stop_reason"] == "context_window"
    assert "16 positions" in last["warnings"][0] and "IndexError" in last["warnings"][0]
    assert "leave room for 6 new tokens of the 12 asked for" in settings_event(pipe)["warnings"][0]
    end = pipe.trace.filter("generation", "end", pipe.trace.run)[-1].data
    assert end["stop_reason"] == "context_window" and end["new_tokens"] == WINDOW - 10
    with pytest.raises(IndexError):  # what transformers does at the same place
        greedy_ids(reference, ids, 12)


def test_learned_positions_refuse_a_longer_prompt(learned_model, tokenizer):
    pipe = explain.pipeline(model=learned_model[0])
    with pytest.raises(ExplainError, match="20 tokens but the model's context window is 16 tokens.*IndexError"):
        pipe(words(tokenizer, 20), max_new_tokens=2)
    # "hole" keeps what fits the tokenizer's model_max_length, as transformers' pipeline does (not the window)
    with pytest.raises(ExplainError, match='20 tokens after handle_long_generation="hole".*model_max_length = 16'):
        pipe.start(words(tokenizer, 20), max_new_tokens=4, handle_long_generation="hole")
    pipe.tokenizer.model_max_length = WINDOW  # the fix the message names
    generation = pipe.start(words(tokenizer, 20), max_new_tokens=4, handle_long_generation="hole")
    assert generation.prompt_length == WINDOW - 4


def test_a_batch_with_a_prompt_past_the_window_runs_as_transformers_runs_it(rope_model, tokenizer):
    """Rotary positions: a batch whose longest prompt passes the window runs on, as transformers' pipeline runs it
    (the same output), and the settings event says so."""
    folder, reference = rope_model
    pipe = explain.pipeline(model=folder)
    theirs = transformers.pipeline(
        "text-generation", model=reference, tokenizer=transformers.AutoTokenizer.from_pretrained(folder)
    )
    prompts = [words(tokenizer, 20), words(tokenizer, 6)]
    call = dict(max_new_tokens=5, do_sample=False, batch_size=2)
    with pytest.warns(UserWarning):
        mine = pipe(prompts, **call)
    assert mine == theirs(prompts, **call)
    assert "longer than the model's context window" in settings_event(pipe)["warnings"][0]


def test_learned_positions_refuse_a_batch_with_a_longer_prompt_and_stop_a_batch_at_the_window(learned_model, tokenizer):
    """GPT-2: a prompt of the batch longer than the window fails the whole batch in transformers (IndexError):
    explain refuses it naming the prompt; a batch that reaches the window stops there, every row."""
    folder, reference = learned_model
    pipe = explain.pipeline(model=folder)
    theirs = transformers.pipeline(
        "text-generation", model=reference, tokenizer=transformers.AutoTokenizer.from_pretrained(folder)
    )
    prompts = [words(tokenizer, 6), words(tokenizer, 20)]
    with pytest.raises(IndexError):
        theirs(prompts, max_new_tokens=2, batch_size=2)
    with pytest.raises(
        ExplainError, match="prompt 1 of the list is 20 tokens but the model's context window is 16 tokens.*IndexError"
    ):
        pipe(prompts, max_new_tokens=2, batch_size=2)
    pipe(
        [words(tokenizer, 10), words(tokenizer, 6)], max_new_tokens=12, do_sample=False, eos_token_id=None, batch_size=2
    )
    generation = pipe.last_generation
    assert generation.stop_reason == "context_window" and len(generation.steps) == WINDOW - 10
