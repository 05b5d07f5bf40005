"""The traced generation of the embedded model: what each event holds, that events stream while the model runs,
how settings are resolved and recorded, why a run stops, interruption, bfloat16, errors, and the step-through
API (start / step / what_if / force). Parity with transformers' own outputs is in test_fidelity.py.
"""

from __future__ import annotations

import json

import pytest
import torch
from transformers.generation import logits_process as hf

import explain
from explain.errors import ExplainError
from explain.generation.rows import decode_row
from explain.trace import Trace

VOCAB = 49152


@pytest.fixture(scope="module")
def pipe(embedded_pipe):
    return embedded_pipe


def run_events(pipe, stage=None, kind=None):
    return pipe.trace.filter(stage, kind, pipe.trace.run)


# -- settings: where every value came from ----------------------------------------------------------------
def test_settings_event_records_where_each_value_came_from(pipe):
    torch.manual_seed(0)
    pipe("Hello", max_new_tokens=3, top_k=10)
    data = run_events(pipe, "generation", "settings")[0].data
    sources, settings = data["sources"], data["settings"]
    assert sources["max_new_tokens"] == sources["top_k"] == "call"
    assert sources["do_sample"] == sources["temperature"] == "text-generation pipeline default"
    assert settings["do_sample"] is True and settings["temperature"] == 0.7
    assert sources["top_p"] == sources["repetition_penalty"] == sources["min_length"] == "generate() default"
    assert sources["eos_token_id"] == sources["pad_token_id"] == "model config"  # the GGUF's token ids
    assert settings["eos_token_id"] == pipe.tokenizer.eos_token_id
    assert "max_new_tokens (call)" in sources["max_length"]
    assert [p["class"] for p in data["processors"]] == ["TemperatureLogitsWarper", "TopKLogitsWarper"]
    assert data["processors"][1]["args"] == {"top_k": 10}
    assert data["dtype"] == "float32" and data["device"] == "cpu"


def test_greedy_leaves_out_the_sampling_defaults(pipe):
    pipe("Hello", do_sample=False, max_new_tokens=2)
    data = run_events(pipe, "generation", "settings")[0].data
    assert data["sources"]["temperature"] == "generate() default" and data["settings"]["temperature"] == 1.0
    assert data["processors"] == []
    assert all(step["method"] == "greedy" for step in pipe.last_generation.steps)


def test_max_new_tokens_wins_over_max_length(pipe):
    prompt_length = len(pipe.tokenizer.encode("The sky is"))
    pipe("The sky is", do_sample=False, max_new_tokens=3, max_length=prompt_length + 10)
    assert len(pipe.last_generation.steps) == 3
    data = run_events(pipe, "generation", "settings")[0].data
    assert data["settings"]["max_length"] == prompt_length + 3
    assert data["settings"]["max_new_tokens_effective"] == 3

    pipe("The sky is", do_sample=False, max_length=prompt_length + 2)  # max_length counts the prompt
    assert len(pipe.last_generation.steps) == 2
    assert pipe.last_generation.stop_reason == "max_length"
    data = run_events(pipe, "generation", "settings")[0].data
    assert data["sources"]["max_length"] == "call" and data["settings"]["max_new_tokens"] is None


# -- stopping -----------------------------------------------------------------------------------------
def test_eos_stops_and_the_end_event_says_so(pipe):
    output = pipe([{"role": "user", "content": "What is 2+2?"}], do_sample=False, max_new_tokens=30)
    generation = pipe.last_generation
    assert generation.stop_reason == "eos" and len(generation.steps) < 30
    assert generation.generated_ids[-1] == pipe.tokenizer.eos_token_id
    assert generation.steps[-1]["stop_reason"] == "eos"
    end = run_events(pipe, "generation", "end")[0].data
    assert end["stop_reason"] == "eos" and end["interrupted"] is False
    assert end["new_tokens"] == len(generation.steps)
    decoding = run_events(pipe, "decoding", "decode")[0].data
    assert "<|im_end|>" not in output[0]["generated_text"][-1]["content"]  # special tokens skipped
    assert decoding["text_with_special"].endswith("<|im_end|>") and decoding["stop_reason"] == "eos"


def test_length_stops(pipe):
    pipe("Once upon a time", do_sample=False, max_new_tokens=4)
    assert pipe.last_generation.stop_reason == "max_length"
    assert run_events(pipe, "generation", "end")[0].data["stop_reason"] == "max_length"


# -- what one call emits ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sampled(pipe):
    """One sampled run with every kind of processor, its raw logits kept, and what a sink saw while it ran."""
    seen = []

    def sink(event):
        generation = pipe.last_generation
        seen.append(
            {
                "stage": event.stage,
                "kind": event.kind,
                "trace_length": len(pipe.trace),
                "steps_so_far": len(generation.steps) if generation is not None else None,
                "finished": generation.finished if generation is not None else None,
            }
        )

    unsubscribe = pipe.trace.subscribe(sink)
    torch.manual_seed(7)
    try:
        output = pipe(
            "Write a story about a cat",
            max_new_tokens=16,
            temperature=0.8,
            top_k=40,
            top_p=0.9,
            repetition_penalty=1.2,
            keep_logits=True,
        )
    finally:
        unsubscribe()
    return {
        "output": output,
        "generation": pipe.last_generation,
        "run": pipe.trace.run,
        "events": pipe.trace.filter(run=pipe.trace.run),
        "seen": seen,
    }


def test_events_reach_a_sink_as_they_happen(sampled):
    seen = [s for s in sampled["seen"] if s["stage"] != "registry"]
    kinds = [(s["stage"], s["kind"]) for s in seen]
    assert kinds[:3] == [("tokenization", "encode"), ("generation", "settings"), ("generation", "prefill")]
    assert kinds[-2:] == [("generation", "end"), ("decoding", "decode")]  # decoding comes last
    steps = [s for s in seen if s["kind"] == "step"]
    assert len(steps) == len(sampled["generation"].steps) == 16
    # the k-th step event arrives when exactly k steps exist, while the run is still going (but for the last)
    assert [s["steps_so_far"] for s in steps] == list(range(1, 17))
    assert [s["finished"] for s in steps] == [False] * 15 + [True]
    assert [s["trace_length"] for s in steps] == sorted({s["trace_length"] for s in steps})  # one event each


def test_step_events_hold_what_the_step_did(sampled, pipe):
    generation = sampled["generation"]
    steps = [e for e in sampled["events"] if e.kind == "step"]
    prefill = [e for e in sampled["events"] if e.kind == "prefill"]
    assert len(prefill) == 1 and prefill[0].seq < steps[0].seq  # prefill is its own event, before step 0
    assert prefill[0].data["prompt_tokens"] == generation.prompt_length
    assert prefill[0].data["kv_cache"]["length"] == generation.prompt_length
    per_position = None
    for index, (event, raw) in enumerate(zip(steps, generation.raw_logits, strict=True)):
        step = event.data
        position = generation.prompt_length + index
        assert step["step"] == index and step["position"] == position
        assert step["token_id"] == generation.input_ids[0, position]
        assert step["token"] == pipe.tokenizer.decode([step["token_id"]])
        assert step["method"] == "sample"
        assert step["forward"] == ("prefill" if index == 0 else "decode")
        assert step["forward_time"] > 0 and event.duration >= step["forward_time"]
        # logits_top: the 20 highest raw logits, exactly
        values, ids = torch.topk(raw, 20)
        assert step["logits_top"]["ids"] == ids.tolist()
        assert torch.equal(torch.tensor(step["logits_top"]["values"], dtype=torch.float32), values)
        assert step["rank"] == int((raw > raw[step["token_id"]]).sum()) + 1
        assert step["logit"] == pytest.approx(float(raw[step["token_id"]]), abs=0)
        # each processor: what it removed, what it kept, the new top (replayed here from the raw row)
        scores = raw[None]
        input_ids = generation.input_ids[:, :position]
        assert [p["name"] for p in step["processors"]] == ["repetition_penalty", "temperature", "top_k", "top_p"]
        for record, processor in zip(step["processors"], generation.processors, strict=True):
            after = processor(input_ids, scores)
            assert record["removed"] == int((torch.isfinite(scores) & ~torch.isfinite(after)).sum())
            assert record["kept"] == int(torch.isfinite(after).sum())
            top_values, top_ids = torch.topk(after[0], 20)
            finite = torch.isfinite(top_values)
            assert record["top"]["ids"] == top_ids[finite].tolist()
            # the chosen token's score and rank after this processor, recorded even when it is outside the top
            assert record["token_score"] == float(after[0, step["token_id"]])
            assert record["token_rank"] == int((after[0] > after[0, step["token_id"]]).sum()) + 1
            scores = after
        assert step["processors"][2]["kept"] <= 40  # top_k=40
        probs = torch.softmax(scores[0], dim=-1)
        assert step["prob"] == pytest.approx(float(probs[step["token_id"]]), rel=1e-6)
        assert 0 < step["prob"] <= 1 and step["probs_top"]["ids"][0] == int(probs.argmax())
        # the KV cache holds every position before this step's token, growing by one a step
        assert step["kv_cache"]["length"] == position
        if per_position is None:
            per_position = step["kv_cache"]["bytes"] / position
        assert step["kv_cache"]["bytes"] == per_position * position
    assert "".join(e.data["text"] for e in steps) == generation.text  # streamed pieces add up to the text


def test_tokenization_and_decoding_events(pipe):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there"}]
    output = pipe(messages, do_sample=False, max_new_tokens=3)
    data = run_events(pipe, "tokenization", "encode")[0].data
    assert data["kind_of_input"] == "chat" and data["add_generation_prompt"] is True
    assert data["chat_template_skipped"] is False
    text = data["chat_template_text"]
    assert (
        text == pipe.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False) == data["text"]
    )
    assert text.startswith("<|im_start|>system\nBe brief.<|im_end|>") and text.endswith("<|im_start|>assistant\n")
    assert data["ids"] == pipe.tokenizer.encode(text, add_special_tokens=False) and data["count"] == len(data["ids"])
    assert data["tokens"] == pipe.tokenizer.convert_ids_to_tokens(data["ids"])
    for token_id, (start, end), special in zip(data["ids"], data["offsets"], data["special"], strict=True):
        assert special == (token_id in pipe.tokenizer.all_special_ids)
        if not special:
            assert pipe.tokenizer.decode([token_id]) == text[start:end].replace("\n", "\n")
    assert data["special"][0] and data["ids"][0] == pipe.tokenizer.convert_tokens_to_ids(["<|im_start|>"])[0]
    assert [s["role"] for s in data["segments"]] == ["system", "user", "generation prompt"]

    decoding = run_events(pipe, "decoding", "decode")[0].data
    assert decoding["ids"] == pipe.last_generation.generated_ids
    assert decoding["text"] == output[0]["generated_text"][-1]["content"]

    pipe("Hello world", do_sample=False, max_new_tokens=1)
    data = run_events(pipe, "tokenization", "encode")[0].data
    assert data["kind_of_input"] == "text" and data["chat_template_text"] is None
    assert data["tokens"] == ["Hello", "Ġworld"] and data["offsets"] == [[0, 5], [5, 11]]


def test_a_plain_string_to_a_chat_model_says_in_one_line_that_it_skipped_the_template(pipe, tiny_llama):
    """transformers tokenizes a string as it is (text_generation.py:350), so an instruct model continues the text;
    the event says the template was skipped and the console line says how to use it."""
    from explain.console import describe

    pipe("Write a story about a cat", max_new_tokens=1, do_sample=False)
    event = run_events(pipe, "tokenization", "encode")[0]
    assert event.data["chat_template_skipped"] is True and event.data["ids"] == pipe.tokenizer.encode(
        "Write a story about a cat"
    )  # behaviour unchanged: the string's own tokens, no template
    line = describe(event)
    assert (
        line.startswith(
            "6 tokens from plain text; a plain string skips the chat template, so the model continues the text"
        )
        and '[{"role": "user", "content": ...}]' in line
    )
    assert line.endswith("(command line: --chat)") and "\n" not in line
    pipe([{"role": "user", "content": "Write a story about a cat"}], max_new_tokens=1, do_sample=False)
    event = run_events(pipe, "tokenization", "encode")[0]
    assert event.data["chat_template_skipped"] is False
    assert describe(event) == "36 tokens from a chat, through the chat template"
    plain = explain.pipeline(model=tiny_llama.folder)
    plain.tokenizer.chat_template = None  # a base model: there was no template to skip
    plain("Write a story about a cat", max_new_tokens=1, do_sample=False)
    event = plain.trace.last("tokenization", "encode")
    assert event.data["chat_template_skipped"] is False and describe(event) == "6 tokens from plain text"


# -- trace size ---------------------------------------------------------------------------------------
def test_default_capture_is_a_few_kilobytes_per_step(sampled):
    steps = [e for e in sampled["events"] if e.kind == "step"]
    size = sum(len(json.dumps(e.to_dict())) for e in steps) / len(steps)
    print(f"\naverage step event: {size:.0f} bytes as JSON")
    assert size < 6 * 1024
    assert all(len(e.data["logits_top"]["ids"]) == 20 for e in steps)


def test_trace_top_all_keeps_whole_rows_compactly_and_warns_of_the_cost(pipe, tmp_path):
    with pytest.warns(
        UserWarning,
        match=r"keeps 4 whole rows of 49152 values per step: 1\.0 MiB of trace a step, up to 2\.0 MiB for 2",
    ):
        pipe(
            "The capital of France is",
            do_sample=True,
            top_k=5,
            temperature=0.5,
            max_new_tokens=2,
            trace_top="all",
            keep_logits=True,
        )
    settings = run_events(pipe, "generation", "settings")[0].data
    assert "trace_top" in settings["warnings"][0]
    steps = run_events(pipe, "generation", "step")
    generation = pipe.last_generation
    for event, raw in zip(steps, generation.raw_logits, strict=True):
        rows = event.data["rows"]
        assert list(rows) == ["logits", "temperature", "top_k", "probs"]
        assert torch.equal(torch.from_numpy(decode_row(rows["logits"]).copy()), raw)  # bit for bit
        probs = decode_row(rows["probs"])
        assert (probs > 0).sum() == 5 and abs(probs.sum() - 1) < 1e-5
        assert len(event.data["logits_top"]["ids"]) == 20  # the views' top entries stay as usual
        assert len(json.dumps(event.to_dict())) < 4 * 270_000  # base64 float32: ~262 KB a row, not ~1 MB
    saved = Trace.load(pipe.trace.save(tmp_path / "all.json"))
    assert saved.filter("generation", "step", pipe.trace.run)[0].data["rows"] == steps[0].data["rows"]


# -- interruption -------------------------------------------------------------------------------------
def test_keyboard_interrupt_leaves_a_valid_trace_and_a_working_pipeline(pipe, tmp_path):
    prompt = "The three primary colors are"
    before = pipe(prompt, do_sample=False, max_new_tokens=8)

    def interrupt_at_step_5(event):
        if event.kind == "step" and event.data["step"] == 5:
            raise KeyboardInterrupt

    unsubscribe = pipe.trace.subscribe(interrupt_at_step_5)
    try:
        with pytest.raises(KeyboardInterrupt):
            pipe(prompt, do_sample=False, max_new_tokens=40)
    finally:
        unsubscribe()
    run = pipe.trace.run
    assert len(pipe.trace.filter("generation", "step", run)) == 6
    end = pipe.trace.filter("generation", "end", run)[0].data
    assert end["interrupted"] is True and end["stop_reason"] == "interrupted" and end["new_tokens"] == 6
    decoding = pipe.trace.filter("decoding", "decode", run)
    assert len(decoding) == 1 and decoding[0].data["interrupted"] is True
    assert pipe.trace.filter(run=run)[-1].stage == "decoding"

    path = pipe.trace.save(tmp_path / "interrupted.json")  # a valid trace: it survives a JSON round trip
    loaded = Trace.load(path)
    assert [e.to_dict() for e in loaded.events] == [e.to_dict() for e in pipe.trace.events]

    assert pipe(prompt, do_sample=False, max_new_tokens=8) == before  # the next call works, same result
    assert pipe.trace.filter("generation", "end", pipe.trace.run)[0].data["interrupted"] is False


# -- bfloat16 -----------------------------------------------------------------------------------------
def test_bfloat16_pipeline_is_sensible_and_says_its_dtype(provisioned):
    pipe = explain.pipeline("text-generation", dtype=torch.bfloat16)
    assert next(pipe.model.parameters()).dtype == torch.bfloat16
    output = pipe(
        [{"role": "user", "content": "What is the capital of France?"}],
        do_sample=False,
        max_new_tokens=12,
        return_full_text=False,
    )
    assert "Paris" in output[0]["generated_text"]
    assert pipe.trace.filter("placement")[0].data["dtype"] == "bfloat16"
    assert pipe.trace.last("generation", "settings").data["dtype"] == "bfloat16"


# -- errors that say what to do -----------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, words",
    [
        (dict(max_new_tokens=-1), ["max_new_tokens", "-1"]),
        (dict(max_new_tokens=0), ["max_new_tokens", "at least 1"]),
        (dict(do_sample=True, temperature=0), ["temperature", "do_sample=False"]),
        (dict(do_sample=True, temperature=-0.5), ["temperature", "do_sample=False"]),
        (dict(do_sample=True, top_p=-0.5), ["top_p", ">= 0", "top_p=1.0 keeps every token"]),
        (dict(max_new_token=5), ["max_new_token", "did you mean 'max_new_tokens'"]),
        (dict(max_length=1), ["max_length=1", "max_new_tokens"]),
        (dict(return_full_text=False, return_text=True), ["mutually exclusive"]),
        (dict(handle_long_generation="middle"), ["handle_long_generation", "hole"]),
    ],
)
def test_bad_arguments_say_what_is_wrong_and_the_fix(pipe, kwargs, words):
    with pytest.raises(ExplainError) as error:
        pipe("Hello there", **kwargs)
    for word in words:
        assert word in str(error.value)


def test_empty_prompt_needs_a_bos_token(pipe, monkeypatch):
    monkeypatch.setattr(pipe.tokenizer, "bos_token", None)  # a model with no BOS (restored after the test)
    with pytest.raises(ExplainError, match="the prompt is empty and this model has no BOS token"):
        pipe("", max_new_tokens=2)


def test_prompt_longer_than_the_context_window(pipe):
    long_prompt = "word " * 8300  # more tokens than the 8192 positions of the model
    # a rotary model goes on, as transformers does, and says so before it runs (start(): nothing is run)
    generation = pipe.start(long_prompt, max_new_tokens=2)
    assert generation.prompt_length > 8192
    warnings = pipe.trace.last("generation", "settings").data["warnings"]
    assert len(warnings) == 1 and "longer than the model's context window of 8192 positions" in warnings[0]
    # "hole" keeps the prompt's last tokens that fit the tokenizer's model_max_length, leaving room for the new ones,
    # as transformers' pipeline measures it; the GGUF's tokenizer states no limit, so it keeps them all
    generation = pipe.start(long_prompt, max_new_tokens=10, handle_long_generation="hole")
    assert generation.prompt_length > 8192 and "hole" not in pipe.trace.last("generation", "settings").data
    limit = pipe.tokenizer.model_max_length
    pipe.tokenizer.model_max_length = 8192
    try:
        generation = pipe.start(long_prompt, max_new_tokens=10, handle_long_generation="hole")
    finally:
        pipe.tokenizer.model_max_length = limit
    assert generation.prompt_length == 8192 - 10 and generation.settings["max_length"] == 8192
    settings = pipe.trace.last("generation", "settings").data
    assert settings["hole"]["kept"] == 8182 and settings["hole"]["dropped"] == settings["hole"]["prompt_tokens"] - 8182
    assert settings["warnings"] == [] and settings["context_window"] == 8192


# -- the step-through API -----------------------------------------------------------------------------
def test_start_and_step_add_one_token_each(pipe):
    expected = pipe("Once upon a time", do_sample=False, max_new_tokens=5)
    expected_ids = pipe.last_generation.input_ids[0].tolist()
    generation = pipe.start("Once upon a time", do_sample=False, max_new_tokens=5)
    assert generation.steps == [] and not generation.finished
    length = generation.input_ids.shape[1]
    for index in range(5):
        step = generation.step()
        assert len(generation.steps) == index + 1 and generation.input_ids.shape[1] == length + index + 1
        assert step["token_id"] == generation.input_ids[0, -1]
    assert generation.finished and generation.stop_reason == "max_length"
    assert generation.input_ids[0].tolist() == expected_ids
    assert "Once upon a time" + generation.text == expected[0]["generated_text"]
    with pytest.raises(ExplainError, match="finished"):
        generation.step()


def test_what_if_equals_transformers_processors_on_the_recorded_row(pipe):
    generation = pipe.start("My favourite fruit is", do_sample=False, max_new_tokens=3, keep_logits=True).run()
    knobs = dict(do_sample=True, temperature=0.6, top_k=30, top_p=0.8, repetition_penalty=1.4)
    result = generation.what_if(1, **knobs)
    raw = generation.raw_logits[1][None].clone()  # (1, vocab): step 1's row, as recorded
    input_ids = generation.input_ids[:, : generation.steps[1]["position"]]
    for processor in (
        hf.RepetitionPenaltyLogitsProcessor(1.4),
        hf.TemperatureLogitsWarper(0.6),
        hf.TopKLogitsWarper(30),
        hf.TopPLogitsWarper(0.8),
    ):
        raw = processor(input_ids, raw)
    probs = torch.softmax(raw, dim=-1)[0]
    top_probs, top_ids = torch.topk(probs, 10)
    assert result["ids"] == top_ids.tolist()
    assert torch.equal(torch.tensor(result["probs"], dtype=torch.float32), top_probs)
    assert result["kept"] == int((probs > 0).sum())
    assert result["recorded_token"] == generation.steps[1]["token_id"]
    assert result["recorded_token_prob"] == pytest.approx(float(probs[result["recorded_token"]]))
    assert result["recorded_token_rank"] == int((probs > probs[result["recorded_token"]]).sum()) + 1
    as_recorded = generation.what_if(1)  # no knobs: the run's own (greedy) settings give back the recorded step
    assert as_recorded["ids"][0] == generation.steps[1]["token_id"]
    assert as_recorded["probs"][0] == pytest.approx(generation.steps[1]["prob"])


def test_force_branches_and_leaves_the_original_intact(pipe):
    generation = pipe.start(
        "The best programming language is", do_sample=False, max_new_tokens=6, keep_logits=True
    ).run()
    original_ids = generation.input_ids.clone()
    original_steps = json.dumps(generation.steps)
    forced_token = pipe.tokenizer.encode(" Rust", add_special_tokens=False)[0]
    branch = generation.force(2, forced_token)
    branch.run()
    assert torch.equal(generation.input_ids, original_ids) and json.dumps(generation.steps) == original_steps
    position = generation.steps[2]["position"]
    assert torch.equal(branch.input_ids[:, :position], original_ids[:, :position])
    assert branch.input_ids[0, position] == forced_token and branch.steps[2]["forced"] is True
    assert branch.input_ids.shape == original_ids.shape and branch.stop_reason == "max_length"
    assert branch.branch != generation.branch
    # each token after the forced one is the greedy choice given the branch's own history (a fresh forward)
    with torch.inference_mode():
        logits = pipe.model(branch.input_ids).logits[0]  # (T, vocab), no cache
    for j in range(position + 1, branch.input_ids.shape[1]):
        assert branch.input_ids[0, j] == logits[j - 1].argmax()
    force = pipe.trace.last("generation", "force").data
    assert force["replaced"] == int(original_ids[0, position]) and force["token_id"] == forced_token


# -- the terminal main job (the README's first command) ------------------------------------------------------
def test_keep_logits_keeps_a_bounded_window_and_names_what_was_dropped(pipe):
    """keep_logits=True kept a 196 KB row per step without bound; now it keeps the newest KEEP_LOGITS rows, and
    keep_logits=<n> keeps n. A step whose row was dropped says so and how to keep it."""
    from explain.generation.rows import KEEP_LOGITS

    generation = pipe.start("One, two, three,", do_sample=False, max_new_tokens=6, keep_logits=3).run()
    assert len(generation.raw_logits) == 6 and len(list(generation.raw_logits)) == 3
    assert generation.what_if(4, do_sample=True, top_k=2)["kept"] == 2
    with pytest.raises(ExplainError, match=r"step 1 are no longer kept.*keep_logits=6"):
        generation.what_if(1, do_sample=True)
    with pytest.raises(ExplainError, match="no longer kept"):
        generation.force(2, 42)
    branch = generation.force(3, 42)
    assert torch.equal(branch.raw_logits[3], generation.raw_logits[3])
    assert pipe.start("Hi", max_new_tokens=2, keep_logits=True).raw_logits.limit == KEEP_LOGITS
    for bad in (0, -1, "yes", 2.5):
        with pytest.raises(ExplainError, match="keep_logits must be"):
            pipe.start("Hi", max_new_tokens=2, keep_logits=bad)


def test_cli_generate_streams_the_greedy_text_and_a_summary(pipe, tmp_path):
    import subprocess
    import sys

    prompt, trace_file = "Write a story about a cat", tmp_path / "run.json"
    expected = pipe(prompt, do_sample=False, max_new_tokens=12)[0]["generated_text"]
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "explain",
            "generate",
            prompt,
            "--max-new-tokens",
            "12",
            "--steps",
            "--save-trace",
            str(trace_file),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    assert "Traceback" not in run.stderr
    out = run.stdout
    assert expected in out  # the prompt, then each token as it came: the same text as the pipeline's
    for stage in ("registry", "config", "tokenizer", "weights", "placement", "tokenization", "generation", "decoding"):
        assert f" {stage} " in out, f"no {stage} line in the timeline:\n{out}"
    summary = out.strip().splitlines()[-1]
    assert summary.startswith("load ") and "prefill" in summary and "decode 12 tokens at" in summary
    assert "tokens/s | stopped by max_length" in summary
    assert "a plain string skips the chat template" in out and "--chat" in out  # and how to use it
    saved = Trace.load(trace_file)
    steps = saved.filter("generation", "step", saved.run)
    assert len(steps) == 12 and prompt + "".join(s.data["text"] or "" for s in steps) == expected
    table = out[out.index("runners-up") :]  # --steps: one row a token with its probability
    assert all(f"{s.data['prob']:6.3f}" in table for s in steps)


def test_cli_generate_bad_argument_exits_2_naming_the_fix():
    import subprocess
    import sys

    run = subprocess.run(
        [sys.executable, "-m", "explain", "generate", "Hi", "--sample", "--temperature", "0"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 2 and run.stdout.count("\n") < 30
    assert run.stderr.startswith("error: ") and "do_sample=False" in run.stderr and "Traceback" not in run.stderr
