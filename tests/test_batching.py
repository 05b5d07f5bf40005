"""batch_size as transformers' pipeline runs it: a list of prompts of different lengths, left-padded into batches,
one forward per step for the batch, against transformers' own pipeline on the same tiny random Llama (written by
transformers, loaded by explain from its folder). Greedy and seeded sampling give what transformers gives (the
DataLoader's draw from the random generator included), with every processor applied per row and finished rows
padded; the trace records each row; the bad arguments are refused as transformers refuses them. The embedded
SmolLM2 does the same in test_fidelity.py (test_a_batch_equals_the_pipeline).
"""

from __future__ import annotations

import pytest
import torch
import transformers

import explain
from explain.errors import ArgumentError, ExplainError

transformers.logging.set_verbosity_error()
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

# different lengths on purpose: the batch pads the short ones on the left
PROMPTS = [
    "The capital of France is",
    "Hi",
    "Write a long story about a cat and a dog who live in a lighthouse by the",
    "Once upon a time",
    "Numbers: 1, 2, 3,",
]
CHATS = [
    [{"role": "user", "content": "What is 2 + 2?"}],
    [{"role": "system", "content": "You answer in French."}, {"role": "user", "content": "Say hello"}],
    [{"role": "user", "content": "Name three colors."}, {"role": "assistant", "content": "Red,"}],
]


@pytest.fixture(scope="module")
def tiny(tiny_llama):
    """(explain's pipeline of the tiny Llama folder, transformers' pipeline of the same model and folder)."""
    tokenizer = transformers.AutoTokenizer.from_pretrained(tiny_llama.folder)
    theirs = transformers.pipeline("text-generation", model=tiny_llama.model, tokenizer=tokenizer)
    return explain.pipeline("text-generation", model=tiny_llama.folder), theirs


def both(ours, theirs, prompts, seed: int | None = None, **kwargs):
    """(explain's output, transformers' output) for one call, each under the same seed."""
    results = []
    for pipe in (ours, theirs):
        if seed is not None:
            torch.manual_seed(seed)
        results.append(pipe(prompts, **kwargs))
    return results


def steps_of(pipe_or_trace, run):
    trace = getattr(pipe_or_trace, "trace", pipe_or_trace)
    return [
        event.data for event in trace.events if event.run == run and (event.stage, event.kind) == ("generation", "step")
    ]


@pytest.mark.parametrize("batch_size", [2, 3, 5, 8])
def test_greedy_batches_equal_the_pipeline(tiny, batch_size):
    """Every batch size gives transformers' output, the same token ids included (return_tensors: each row as
    generate() returns it, left pads and all)."""
    ours, theirs = tiny
    mine, expected = both(ours, theirs, PROMPTS, do_sample=False, max_new_tokens=10, batch_size=batch_size)
    assert mine == expected and len(mine) == len(PROMPTS)
    mine, expected = both(
        ours, theirs, PROMPTS[:3], do_sample=False, max_new_tokens=6, batch_size=batch_size, return_tensors=True
    )
    assert mine == expected
    if batch_size >= 3:  # one batch: every row padded to the longest prompt, as generate() returns them
        assert len({len(row[0]["generated_token_ids"]) for row in mine}) == 1


def test_a_batch_is_one_forward_per_step_with_the_rows_traced(tiny):
    """One prefill and one decode forward per step for the whole batch; each running row's step records its row
    and its prompt; the pad event shows the left padding and the mask; the decode event lists every row."""
    ours, _ = tiny
    calls = []
    original = ours.model.forward

    def counting(input_ids, *args, **kwargs):
        calls.append((tuple(input_ids.shape), kwargs.get("attention_mask") is not None))
        return original(input_ids, *args, **kwargs)

    ours.model.forward = counting
    try:
        ours(PROMPTS[:3], do_sample=False, max_new_tokens=5, batch_size=3)
    finally:
        del ours.model.forward
    generation = ours.last_generation
    width = generation.prompt_length
    assert calls[0] == ((3, width), True) and all(shape == (3, 1) for shape, _ in calls[1:]) and len(calls) == 5
    run = generation.run_id
    steps = steps_of(ours, run)
    assert len(steps) == 3 * 5  # no row stops early here: max_new_tokens for each
    assert {(s["sequence"], s["batch_row"]) for s in steps} == {(0, 0), (1, 1), (2, 2)}
    lengths = generation.prompt_lengths
    assert all(s["position"] == lengths[s["sequence"]] + s["step"] for s in steps)
    pad = ours.trace.last("tokenization", "pad", run=run).data
    assert pad["side"] == "left" and pad["width"] == width == max(lengths)
    for row, length in zip(pad["rows"], lengths, strict=False):
        assert row["pads"] == width - length and row["attention_mask"] == [0] * row["pads"] + [1] * length
        assert row["ids"][: row["pads"]] == [pad["pad_token_id"]] * row["pads"]
    encodes = [e.data for e in ours.trace.events if e.run == run and e.kind == "encode"]
    assert [e["batch_row"] for e in encodes] == [0, 1, 2] and [e["count"] for e in encodes] == lengths
    settings = ours.trace.last("generation", "settings", run=run).data
    assert settings["batch"]["rows"] == [0, 1, 2] and settings["prompt_tokens"] == width
    decoded = ours.trace.last("decoding", "decode", run=run).data
    assert [s["batch_row"] for s in decoded["sequences"]] == [0, 1, 2]


def test_finished_rows_are_padded_and_processors_run_per_row(tiny):
    """An EOS that some rows reach early: those rows get pad_token_id from then on, as generate() pads them, while
    the others go on; repetition penalty, no-repeat n-grams and min_new_tokens act on each row, as in
    transformers (the pads of the padded rows included)."""
    ours, theirs = tiny
    probe = ours(PROMPTS, do_sample=False, max_new_tokens=12, batch_size=5, return_tensors=True)
    generated = [row[0]["generated_token_ids"][ours.last_generation.prompt_length :] for row in probe]
    eos = generated[0][3]  # a token row 0 writes at its 4th step: row 0 (at least) stops there
    call = dict(do_sample=False, max_new_tokens=12, batch_size=5, eos_token_id=eos)
    mine, expected = both(ours, theirs, PROMPTS, **call, return_tensors=True)
    rows = [row[0]["generated_token_ids"] for row in mine]
    assert mine == expected
    width = ours.last_generation.prompt_length
    ended = [row[width:].index(eos) for row in rows if eos in row[width:]]
    assert ended and min(ended) < 11  # a row ended before the others...
    pad = ours.tokenizer.pad_token_id
    for row in rows:
        if eos in row[width:]:
            after = row[width + row[width:].index(eos) + 1 :]
            assert after == [pad] * len(after)  # ...and was padded from then on
    for processors in (dict(repetition_penalty=1.5, no_repeat_ngram_size=2), dict(min_new_tokens=6)):
        mine, expected = both(ours, theirs, PROMPTS, **call, **processors)
        assert mine == expected


def test_stop_strings_stop_each_row(tiny):
    ours, theirs = tiny
    probe = ours(PROMPTS[:3], do_sample=False, max_new_tokens=10, batch_size=3, return_full_text=False)
    stop = probe[1][0]["generated_text"][2:4]  # a piece of row 1's text: row 1 stops there
    mine, expected = both(
        ours, theirs, PROMPTS[:3], do_sample=False, max_new_tokens=10, batch_size=3, stop_sequence=stop
    )
    assert mine == expected


def test_seeded_sampling_equals_the_pipeline(tiny):
    """The same draws: the DataLoader's one draw from torch's generator, then one multinomial per step over the
    (rows, vocab) probabilities; several samples per prompt expand each prompt into its rows first."""
    ours, theirs = tiny
    for call in (
        dict(batch_size=2),
        dict(batch_size=5, top_k=30, top_p=0.9, repetition_penalty=1.2),
        dict(batch_size=3, num_return_sequences=2),
    ):
        mine, expected = both(ours, theirs, PROMPTS, seed=11, do_sample=True, max_new_tokens=8, **call)
        assert mine == expected
    # the DataLoader's draw is part of it: batch_size=1 lists sample what transformers samples too
    mine, expected = both(ours, theirs, PROMPTS[:2], seed=3, do_sample=True, max_new_tokens=6)
    assert mine == expected


def test_chats_batch_as_the_pipeline_batches_them(tiny):
    ours, theirs = tiny
    mine, expected = both(ours, theirs, CHATS, do_sample=False, max_new_tokens=6, batch_size=3)
    assert mine == expected


def test_batch_size_is_checked(tiny):
    ours, _ = tiny
    for bad in (0, -2, 2.0, "4", True):
        with pytest.raises(ArgumentError, match="batch_size="):
            ours(PROMPTS, batch_size=bad)
    with pytest.raises(ArgumentError, match="batch_size=0"):
        explain.pipeline("text-generation", model=ours.name_or_path, batch_size=0)


def test_a_batch_mixing_chats_and_strings_is_refused_as_transformers_fails(tiny):
    ours, theirs = tiny
    mixed = [PROMPTS[0], CHATS[0]]
    with pytest.raises(TypeError, match="can only concatenate str"):
        theirs(mixed, max_new_tokens=2)
    for batch_size in (1, 2):
        with pytest.raises(
            ArgumentError,
            match=r"mixes strings and chats \(text_inputs\[0\] is a string, "
            r"text_inputs\[1\] a chat\)",
        ):
            ours(mixed, max_new_tokens=2, batch_size=batch_size)


def test_no_pad_token_cannot_batch_as_in_transformers(tiny_llama, tmp_path):
    """A tokenizer without a pad token: transformers refuses batch_size > 1 before anything runs, with these words;
    explain the same, and says how to give it one. batch_size=1 still runs."""
    import shutil

    folder = tmp_path / "no-pad"
    shutil.copytree(tiny_llama.folder, folder)
    ours = explain.pipeline("text-generation", model=str(folder))
    ours.tokenizer.pad_token = None
    tokenizer = transformers.AutoTokenizer.from_pretrained(tiny_llama.folder)
    tokenizer.pad_token = None
    theirs = transformers.pipeline("text-generation", model=tiny_llama.model, tokenizer=tokenizer)
    with pytest.raises(ValueError, match="Pipeline with tokenizer without pad_token cannot do batching"):
        theirs(PROMPTS[:2], batch_size=2, max_new_tokens=2)
    runs = len(ours.trace.runs()) if hasattr(ours.trace, "runs") else None
    with pytest.raises(
        ExplainError,
        match="Pipeline with tokenizer without pad_token cannot do batching.*"
        "pipe.tokenizer.pad_token = pipe.tokenizer.eos_token",
    ):
        ours(PROMPTS[:2], batch_size=2, max_new_tokens=2)
    assert runs is None or len(ours.trace.runs()) == runs
    assert len(ours(PROMPTS[:2], batch_size=1, max_new_tokens=2, do_sample=False)) == 2


def test_strategies_explain_does_not_batch_are_refused_with_the_way_out(tiny):
    ours, _ = tiny
    with pytest.raises(ExplainError, match="batch_size=2 with beam search.*batch_size=1"):
        ours(PROMPTS[:2], batch_size=2, num_beams=2, do_sample=False, max_new_tokens=2)


def test_the_transformers_backend_runs_transformers_batches_and_traces_each_row(tiny_llama, tiny):
    """backend="transformers" passes batch_size to transformers' own pipeline (the same output as the pipeline
    untraced) and traces every row: one run per batch, each step with its row and prompt, the padding."""
    _, theirs = tiny
    traced = explain.pipeline("text-generation", model=tiny_llama.folder, backend="transformers")
    call = dict(do_sample=False, max_new_tokens=5, batch_size=3)
    assert traced(PROMPTS, **call) == theirs(PROMPTS, **call)
    generation = traced.last_generation  # the second batch: prompts 3 and 4
    run = generation.run_id
    assert generation.batch_rows == [3, 4]
    steps = steps_of(traced, run)
    assert {(s["sequence"], s["batch_row"]) for s in steps} == {(0, 3), (1, 4)} and len(steps) == 2 * 5
    pad = traced.trace.last("tokenization", "pad", run=run).data
    assert pad["side"] == "left" and [row["batch_row"] for row in pad["rows"]] == [3, 4]
    encodes = [e.data["batch_row"] for e in traced.trace.events if e.run == run and e.kind == "encode"]
    decodes = [e.data["batch_row"] for e in traced.trace.events if e.run == run and e.kind == "decode"]
    assert encodes == decodes == [3, 4]
    # the explain backend's records of the same batch name the same tokens, row by row
    ours, _ = tiny
    ours(PROMPTS, **call)
    mine = steps_of(ours, ours.last_generation.run_id)
    assert [(s["batch_row"], s["step"], s["token_id"]) for s in mine] == [
        (s["batch_row"], s["step"], s["token_id"]) for s in steps
    ]
    with pytest.raises(ArgumentError, match="batch_size=0"):
        traced(PROMPTS, batch_size=0)


def test_a_saved_batch_loads_with_its_rows(tiny, tmp_path):
    """save and load keep a batch as it ran: the pad event, each step's row and prompt, the decoded rows."""
    from explain.trace import Trace

    ours, _ = tiny
    ours(PROMPTS[:3], do_sample=False, max_new_tokens=3, batch_size=3)
    run = ours.last_generation.run_id
    path = ours.trace.save(tmp_path / "batch.json")
    loaded = Trace.load(path)
    for stage, kind in (("tokenization", "pad"), ("decoding", "decode")):
        assert loaded.last(stage, kind, run=run).data == ours.trace.last(stage, kind, run=run).data
    assert steps_of(loaded, run) == steps_of(ours, run)
    assert {(s["sequence"], s["batch_row"]) for s in steps_of(loaded, run)} == {(0, 0), (1, 1), (2, 2)}
