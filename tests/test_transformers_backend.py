"""backend="transformers" against backend="explain", and against transformers' own generate().

The embedded GGUF through both backends: the same tokens, the same raw logits (within 1e-4), the same
per-processor records and the same returned structure. The per-step numbers of a traced call equal what generate()
returns with output_logits / output_scores on the same call. A step-through on the real generate() equals a call
under one seed; the step-through widget, what-if and forced branches work on it unchanged. The dashboard names the
backend and the code that ran; `import explain` and the explain backend never import transformers.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys

import pytest
import torch

transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()
transformers.logging.disable_progress_bar()

import explain  # noqa: E402
from explain.errors import ExplainError  # noqa: E402
from explain.widgets import Dashboard, DashboardState, StepThrough  # noqa: E402

LOGIT_TOLERANCE = 1e-4
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def tf_embedded(provisioned):
    """The seed's call on the transformers backend: no model, so the embedded GGUF, loaded by transformers itself."""
    import gguf

    # transformers rebuilds gguf's tensor-name table once per module (~400 times); the table is a pure function of
    # (architecture, layer count), so remembering it changes no result (as tests/test_loading.py does)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(gguf, "get_tensor_name_map", functools.cache(gguf.get_tensor_name_map))
        return explain.pipeline("text-generation", backend="transformers")


@pytest.fixture(scope="module")
def tf_tiny(tiny_llama):
    return explain.pipeline("text-generation", model=tiny_llama.folder, backend="transformers")


def steps_of(pipe, run=None) -> list[dict]:
    return [e.data for e in pipe.trace.filter("generation", "step", pipe.trace.run if run is None else run)]


def same_records(ours: list[dict], theirs: list[dict]) -> None:
    """Per-processor records: names, arguments and counts exactly; the top values within the logit tolerance."""
    assert [(r["name"], r["title"], r["args"], r["removed"], r["changed"], r["kept"]) for r in ours] == [
        (r["name"], r["title"], r["args"], r["removed"], r["changed"], r["kept"]) for r in theirs
    ]
    for a, b in zip(ours, theirs, strict=True):
        assert (a["top"] is None) == (b["top"] is None)
        if a["top"] is not None:
            assert a["top"]["ids"] == b["top"]["ids"]
            assert torch.allclose(
                torch.tensor(a["top"]["values"]), torch.tensor(b["top"]["values"]), atol=LOGIT_TOLERANCE
            )


# -- the embedded GGUF through both backends ----------------------------------------------------------------------


def test_seed_default_loads_the_embedded_gguf_through_transformers(tf_embedded, embedded_pipe):
    trace = tf_embedded.trace
    assert {e.stage for e in trace.filter(run=0)} == {"registry", "config", "tokenizer", "weights", "placement"}
    lookup = trace.filter("registry", "lookup")[0].data
    assert (
        lookup["model_used"] == explain.stages.tasks.EMBEDDED_MODEL
        and lookup["gguf_file_used"] == explain.stages.tasks.EMBEDDED_GGUF
    )
    assert "no model given" in lookup["default_reason"] and lookup["default_model"] == "HuggingFaceTB/SmolLM3-3B"
    gguf_files = [
        e.data for e in trace.filter("config", "file") if e.data["filename"] == explain.stages.tasks.EMBEDDED_GGUF
    ]
    assert gguf_files and all(
        f["cache"] == "hit" and f["commit"] == explain.stages.tasks.EMBEDDED_REVISION for f in gguf_files
    )
    weights = trace.filter("weights", "load")[0].data
    ours = embedded_pipe.trace.filter("weights", "load")[0].data
    assert weights["format"] == "gguf" == ours["format"]
    assert weights["quantization_types"] == ours["quantization_types"] == {"Q4_1": 210, "Q8_0": 1, "F32": 61}
    assert weights["parameters"] == ours["parameters"] and weights["tied"] == ours["tied"]
    assert weights["missing"] == [] and weights["unexpected"] == [] and weights["quantization"]["method"] == "gguf"
    assert weights["source_file"].endswith("transformers/models/llama/modeling_llama.py")
    assert ours["source_file"].endswith("explain/models/llama.py") and ours["backend"] == "explain"
    config = trace.filter("config", "config")[0].data["hyperparameters"]
    explains = embedded_pipe.trace.filter("config", "config")[0].data["hyperparameters"]
    common = set(config) & set(explains)
    assert len(common) >= 12 and {k: config[k] for k in common} == {k: explains[k] for k in common}
    tokenizer = trace.filter("tokenizer", "load")[0].data
    theirs = embedded_pipe.trace.filter("tokenizer", "load")[0].data
    for key in ("source", "model", "vocab_size", "num_merges", "special_tokens", "added_tokens", "chat_template"):
        assert tokenizer[key] == theirs[key], key


PROMPTS = {"text": "Write a story about a cat", "chat": [{"role": "user", "content": "What is the capital of France?"}]}


@pytest.mark.parametrize("name", list(PROMPTS))
def test_greedy_same_tokens_logits_and_output_on_both_backends(tf_embedded, embedded_pipe, name):
    prompt = PROMPTS[name]
    kwargs = dict(do_sample=False, max_new_tokens=24, keep_logits=True)
    ours, theirs = embedded_pipe(prompt, **kwargs), tf_embedded(prompt, **kwargs)
    assert theirs == ours  # the returned structure, the chat with the answer included
    a, b = embedded_pipe.last_generation, tf_embedded.last_generation
    assert b.generated_ids == a.generated_ids and b.prompt_length == a.prompt_length
    difference = float((torch.stack(list(b.raw_logits)) - torch.stack(list(a.raw_logits))).abs().max())
    assert difference <= LOGIT_TOLERANCE
    encode = [p.trace.filter("tokenization", "encode", p.trace.run)[0].data for p in (embedded_pipe, tf_embedded)]
    for key in ("ids", "tokens", "offsets", "special", "text", "kind_of_input", "chat_template_text", "segments"):
        assert encode[1][key] == encode[0][key], key
    for one, other in zip(steps_of(embedded_pipe), steps_of(tf_embedded), strict=True):
        assert (one["token_id"], one["rank"], one["position"], one["method"]) == (
            other["token_id"],
            other["rank"],
            other["position"],
            other["method"],
        )
        assert one["logits_top"]["ids"][:5] == other["logits_top"]["ids"][:5]
    decode = [p.trace.filter("decoding", "decode", p.trace.run)[0].data for p in (embedded_pipe, tf_embedded)]
    assert decode[1]["text"] == decode[0]["text"] and decode[1]["ids"] == decode[0]["ids"]


def test_sampling_same_tokens_and_processor_records_on_both_backends(tf_embedded, embedded_pipe):
    kwargs = dict(
        do_sample=True,
        temperature=0.9,
        top_k=20,
        top_p=0.85,
        repetition_penalty=1.3,
        max_new_tokens=16,
        min_new_tokens=4,
    )
    torch.manual_seed(1234)
    ours = embedded_pipe("Write a story about a cat", **kwargs)
    torch.manual_seed(1234)
    theirs = tf_embedded("Write a story about a cat", **kwargs)
    assert theirs == ours
    settings = [p.trace.filter("generation", "settings", p.trace.run)[0].data for p in (embedded_pipe, tf_embedded)]
    assert [(p["name"], p["class"], p["args"]) for p in settings[1]["processors"]] == [
        (p["name"], p["class"], p["args"]) for p in settings[0]["processors"]
    ]
    assert [p["name"] for p in settings[1]["processors"]] == [
        "repetition_penalty",
        "min_length",
        "min_new_tokens",
        "temperature",
        "top_k",
        "top_p",
    ]
    for key in (
        "max_length",
        "min_length",
        "do_sample",
        "temperature",
        "top_k",
        "top_p",
        "repetition_penalty",
        "max_new_tokens",
        "min_new_tokens",
        "eos_token_id",
        "pad_token_id",
        "max_new_tokens_effective",
    ):
        assert settings[1]["settings"][key] == settings[0]["settings"][key], key
    for one, other in zip(steps_of(embedded_pipe), steps_of(tf_embedded), strict=True):
        assert one["token_id"] == other["token_id"] and other["method"] == "sample"
        same_records(other["processors"], one["processors"])
        assert abs(one["prob"] - other["prob"]) <= 1e-4


def test_per_step_numbers_equal_generates_own_outputs(tf_embedded):
    """The same call asks generate() for its logits and scores: the trace holds exactly those numbers."""
    torch.manual_seed(5)
    output = tf_embedded(
        "Once upon a time",
        do_sample=True,
        temperature=0.7,
        top_k=30,
        max_new_tokens=12,
        return_dict_in_generate=True,
        output_logits=True,
        output_scores=True,
        keep_logits=True,
    )
    logits, scores = torch.tensor(output[0]["logits"]), torch.tensor(output[0]["scores"])  # (steps, vocab)
    steps, generation = steps_of(tf_embedded), tf_embedded.last_generation
    assert len(steps) == len(logits) == len(scores) == 12
    assert torch.equal(torch.stack(list(generation.raw_logits)), logits)  # generate()'s own raw logits, bit for bit
    for step, raw, final in zip(steps, logits, scores, strict=True):
        assert step["logits_top"]["ids"] == torch.topk(raw, 20).indices.tolist()
        assert torch.allclose(torch.tensor(step["logits_top"]["values"]), raw[step["logits_top"]["ids"]])
        last = step["processors"][-1]["top"]  # after the whole chain: generate()'s scores
        assert torch.equal(raw[last["ids"]].isfinite(), torch.ones(len(last["ids"]), dtype=torch.bool))
        assert torch.allclose(torch.tensor(last["values"]), final[last["ids"]])
        assert step["prob"] == pytest.approx(float(torch.softmax(final, -1)[step["token_id"]]), abs=1e-7)
        assert step["rank"] == int((raw > raw[step["token_id"]]).sum()) + 1
        assert step["logit"] == pytest.approx(float(raw[step["token_id"]]))


def test_step_through_on_the_real_generate_equals_a_call(tf_embedded):
    kwargs = dict(do_sample=True, temperature=0.8, top_k=40, max_new_tokens=10)
    torch.manual_seed(11)
    tf_embedded("The weather today", **kwargs)
    call = steps_of(tf_embedded)
    torch.manual_seed(11)
    generation = tf_embedded.start("The weather today", **kwargs)
    assert generation.settings["top_k"] == 40 and generation.steps == []  # settings resolved before any step
    generation.run()
    tf_embedded.finish(generation)
    stepped = steps_of(tf_embedded)
    assert [s["token_id"] for s in stepped] == [s["token_id"] for s in call]
    drop = {"forward_time"}
    for a, b in zip(call, stepped, strict=True):
        assert {k: v for k, v in a.items() if k not in drop} == {k: v for k, v in b.items() if k not in drop}
    assert [e.kind for e in tf_embedded.trace.filter(run=tf_embedded.trace.run)] == [
        "encode",
        "settings",
        "prefill",
    ] + ["step"] * 10 + ["end", "decode"]


# -- a tiny Llama written by transformers, through both backends ---------------------------------------------------


@pytest.mark.parametrize(
    "knobs",
    [
        dict(min_p=0.05, temperature=1.3),
        dict(top_p=0.8, repetition_penalty=1.5),
        dict(top_k=0, min_new_tokens=3, temperature=0.6),
    ],
    ids=["min_p", "top_p", "min_new"],
)
def test_processor_records_equal_on_a_tiny_llama(tf_tiny, tiny_llama, knobs):
    """Every processor explain implements, named, parametrised and counted the same from either backend."""
    ours = explain.pipeline("text-generation", model=tiny_llama.folder)
    kwargs = dict(do_sample=True, max_new_tokens=8, **knobs)
    torch.manual_seed(3)
    expected = ours("Hello", **kwargs)
    torch.manual_seed(3)
    assert tf_tiny("Hello", **kwargs) == expected
    settings = [p.trace.filter("generation", "settings")[-1].data["processors"] for p in (ours, tf_tiny)]
    assert [(p["name"], p["class"], p["title"], p["args"]) for p in settings[1]] == [
        (p["name"], p["class"], p["title"], p["args"]) for p in settings[0]
    ]
    for a, b in zip(steps_of(ours), steps_of(tf_tiny), strict=True):
        assert a["token_id"] == b["token_id"]
        same_records(b["processors"], a["processors"])
        assert a["probs_top"]["ids"] == b["probs_top"]["ids"]
        assert a["rank"] == b["rank"] and abs(a["entropy_bits"] - b["entropy_bits"]) < 1e-4


def test_trace_top_all_keeps_the_same_rows_on_both_backends(tf_tiny, tiny_llama):
    """trace_top="all": the top 20 as usual, and the whole rows (logits, after each processor, probabilities) in
    the same keys, the logits row bit for bit the raw logits generate() produced."""
    from explain.generation.rows import decode_row

    ours = explain.pipeline("text-generation", model=tiny_llama.folder)
    kwargs = dict(do_sample=True, top_k=5, temperature=0.8, max_new_tokens=2, trace_top="all", keep_logits=True)
    with pytest.warns(UserWarning, match="whole rows"):
        ours("Hello", **kwargs)
    with pytest.warns(UserWarning, match="whole rows"):
        tf_tiny("Hello", **kwargs)
    settings = [p.trace.filter("generation", "settings", p.trace.run)[0].data for p in (ours, tf_tiny)]
    assert settings[0]["warnings"] == settings[1]["warnings"]
    for a, b in zip(steps_of(ours), steps_of(tf_tiny), strict=True):
        assert set(a["rows"]) == set(b["rows"]) == {"logits", "temperature", "top_k", "probs"}
        assert len(a["logits_top"]["ids"]) == len(b["logits_top"]["ids"]) == 20
    kept = tf_tiny.last_generation.raw_logits
    for step, record in enumerate(steps_of(tf_tiny)):
        assert torch.equal(torch.from_numpy(decode_row(record["rows"]["logits"]).copy()), kept[step])
        probs = decode_row(record["rows"]["probs"])
        assert abs(float(probs.sum()) - 1) < 1e-5 and int((probs > 0).sum()) == 5  # top_k=5 left five


def test_inspect_equals_the_explain_backend(tf_tiny, tiny_llama):
    """Generation.inspect on the transformers backend (the step replayed on transformers' forward and Cache) reads
    what the explain backend reads on the same weights: the lens, the attention weights, Captum's attribution;
    capture="inside" records the same looks as the run goes."""
    pytest.importorskip("captum")
    ours = explain.pipeline("text-generation", model=tiny_llama.folder)
    runs = []
    for pipe in (ours, tf_tiny):
        generation = pipe.start("The capital of France is", max_new_tokens=4, do_sample=False)
        generation.run()
        pipe.finish(generation)
        runs.append(generation)
    assert runs[0].generated_ids == runs[1].generated_ids
    for step in (0, 3):
        a, b = (g.inspect(step, what=("lens", "attention", "attribution")) for g in runs)
        assert a["context_ids"] == b["context_ids"] and a["token_id"] == b["token_id"]
        for one, other in zip(a["lens"]["layers"], b["lens"]["layers"], strict=True):
            assert one["ids"] == other["ids"] and one["chosen_rank"] == other["chosen_rank"]
            assert one["probs"] == pytest.approx(other["probs"], abs=1e-5)
        assert b["lens"]["last_layer_difference"] < 1e-5
        assert torch.allclose(torch.tensor(a["attention"]["heads"]), torch.tensor(b["attention"]["heads"]), atol=1e-5)
        assert a["attribution"]["shares"] == pytest.approx(b["attribution"]["shares"], abs=1e-4)
        assert tf_tiny.trace.filter("generation", "inspect", runs[1].run_id)[-1].data["step"] == step
    captured = tf_tiny.start("The capital of France is", max_new_tokens=4, do_sample=False, capture="inside")
    captured.run()
    looks = [e.data for e in tf_tiny.trace.filter("generation", "inspect", captured.run_id)]
    assert [look["step"] for look in looks] == [0, 1, 2, 3] and all("attribution" not in look for look in looks)
    assert looks[3]["lens"]["layers"] == runs[1].inspect(3)["lens"]["layers"]


def test_what_if_and_set_settings_take_every_registry_knob(tf_tiny, tiny_llama):
    """A knob beyond the first row (no_repeat_ngram_size) changes what-if and the next steps on either backend
    alike; the processor it adds is named and titled by the registry."""
    ours = explain.pipeline("text-generation", model=tiny_llama.folder)
    prompt = "the the the the the the"
    runs = [p.start(prompt, max_new_tokens=6, do_sample=False, keep_logits=True) for p in (ours, tf_tiny)]
    for generation in runs:
        generation.run(2)
    a, b = (g.what_if(1, no_repeat_ngram_size=1, do_sample=True, top_k=4) for g in runs)
    assert a["ids"][:4] == b["ids"][:4] and a["kept"] == b["kept"] == 4
    assert a["probs"] == pytest.approx(b["probs"], abs=1e-5)
    assert a.keys() == b.keys() and a["settings"] == b["settings"]  # one answer (RunState.what_if_answer) for both
    assert a["recorded_token_rank"] == b["recorded_token_rank"] >= 1
    with pytest.raises(ExplainError, match="cannot change"):
        runs[1].set_settings(max_new_tokens=3)
    for generation in runs:
        generation.set_settings(no_repeat_ngram_size=1)
        generation.step()
    records = [g.steps[-1]["processors"] for g in runs]
    assert (
        [(r["name"], r["title"], r["args"]) for r in records[1]]
        == [(r["name"], r["title"], r["args"]) for r in records[0]]
        == [("no_repeat_ngram_size", "no repeated n-grams", {"ngram_size": 1})]
    )
    same_records(records[1], records[0])


def test_every_declared_kind_from_the_transformers_backend(tiny_llama, tmp_path):
    """The scenario of tests/test_events.py on backend="transformers": every (stage, kind) explain.events declares
    is emitted and fits (the checker also runs on every emit in tests), each call's events carry its own run, a
    forced branch stays in its run, a run ends once, and the saved trace loads checked and equal."""
    from explain import events

    pipe = explain.pipeline("text-generation", model=tiny_llama.folder, backend="transformers")
    pipe("The capital of France is", max_new_tokens=3, do_sample=False)
    pipe(
        [{"role": "user", "content": "Hi"}],
        max_new_tokens=3,
        do_sample=True,
        temperature=0.7,
        top_k=5,
        top_p=0.9,
        repetition_penalty=1.2,
        min_p=0.05,
        min_new_tokens=2,
    )
    reserved = pipe.trace.new_run()
    generation = pipe.start("Once upon a time", run=reserved, max_new_tokens=4, keep_logits=True)
    assert generation.run_id == reserved
    generation.run(2)
    branch = generation.force(1, 42)
    branch.step()
    text = pipe.finish(generation)
    count = len(pipe.trace)
    assert pipe.finish(generation) == text and len(pipe.trace) == count  # a run ends once
    generation.inspect(1, what=("lens",))
    batched = pipe(["Hi", "The capital of France is"], max_new_tokens=2, do_sample=False, batch_size=2)  # pad event
    assert len(batched) == 2 and pipe.last_generation.run_id == reserved + 1
    pipe("The capital of France is", max_new_tokens=3, num_beams=2, do_sample=False)  # beams, ranking
    pipe("a b c a b", max_new_tokens=3, prompt_lookup_num_tokens=2, do_sample=False)  # draft
    emitted = {(e.stage, e.kind) for e in pipe.trace.events}
    # a quantization config, an adapter and explain.compare emit theirs on this backend too (in
    # test_transformers_quantization.py and test_transformers_models.py), not in this run; the kinds only explain
    # emits say so in their declaration (events/kinds.py: EXPLAIN_ONLY)
    explain_only = {("weights", "quantize"), ("weights", "adapter"), ("generation", "compare")} | {
        key for key, kind in events.KINDS.items() if "transformers" not in kind.backends
    }
    assert emitted == set(events.KINDS) - explain_only, (
        f"declared but never emitted: {set(events.KINDS) - explain_only - emitted}"
    )
    assert pipe.trace.runs() == [0, 1, 2, reserved, reserved + 1, reserved + 2, reserved + 3]
    assert {e.data["branch"] for e in pipe.trace.filter("generation", "step", reserved)} == {0, branch.branch}
    assert all(e.run == reserved for e in pipe.trace.events if e.kind in ("force", "inspect"))
    for event in pipe.trace.events:
        events.check_event(event.stage, event.kind, event.data)
        assert events.describe(event)
    path = pipe.trace.save(tmp_path / "trace.json")
    assert explain.Trace.load(path).to_dict() == pipe.trace.to_dict()


def test_a_list_of_prompts_is_one_run_each(tf_tiny):
    """A list of prompts (or of chats) is one traced run per prompt, with what transformers returns for the list."""
    plain = transformers.TextGenerationPipeline(model=tf_tiny.model, tokenizer=tf_tiny.tokenizer)
    before = tf_tiny.trace.run
    for prompts, kind in (
        (["Hello", "Once upon"], "text"),
        ([[{"role": "user", "content": "Hi"}], [{"role": "user", "content": "Bye"}]], "chat"),
    ):
        assert tf_tiny(prompts, max_new_tokens=3, do_sample=False) == plain(prompts, max_new_tokens=3, do_sample=False)
        kinds = [e.data["kind_of_input"] for e in tf_tiny.trace.filter("tokenization", "encode") if e.run > before]
        assert kinds == [kind, kind] and tf_tiny.trace.run == before + 2
        assert all(len(tf_tiny.trace.filter("generation", "step", run)) == 3 for run in (before + 1, before + 2))
        before = tf_tiny.trace.run


# -- step-through, what-if, force, on a tiny model ----------------------------------------------------------------


def test_a_second_call_while_one_is_traced_is_refused(tf_tiny):
    """The transformers backend traces one generate() at a time per model (README): a second call that starts while
    one is traced (another thread) gets an UnsupportedError saying so, and the first call's hooks are untouched."""
    from explain.backends.transformers.hooks import observing
    from explain.errors import UnsupportedError

    model = tf_tiny.model

    class Recorder:  # observing() reports to it only once generate() builds its processors
        pass

    with observing(model, Recorder()):
        with pytest.raises(UnsupportedError, match='one call at a time per model.*backend="explain"'):
            with observing(model, Recorder()):
                pass
        assert "_get_logits_processor" in vars(model)
    assert "_get_logits_processor" not in vars(model), "the hooks outlived their call"
    assert tf_tiny("Hello", max_new_tokens=2, do_sample=False)[0]["generated_text"].startswith("Hello")


def test_what_if_and_force_drive_the_real_model(tf_tiny):
    generation = tf_tiny.start("Once upon a time", max_new_tokens=6, do_sample=False, keep_logits=True)
    generation.run(3)
    same = generation.what_if(1, do_sample=False)
    assert same["recorded_token"] == generation.steps[1]["token_id"] and same["ids"][0] == same["recorded_token"]
    assert same["recorded_token_prob"] == pytest.approx(generation.steps[1]["prob"], abs=1e-6)
    narrow = generation.what_if(1, do_sample=True, top_k=3, temperature=0.5)
    assert narrow["kept"] == 3
    runner_up = generation.steps[1]["probs_top"]["ids"][1]
    branch = generation.force(1, runner_up)
    assert branch.branch == 1 and branch.steps[-1]["forced"] and branch.input_ids[0, -1] == runner_up
    assert branch.cache is not None and branch.cache.get_seq_length() == branch.steps[1]["position"]
    branch.run()
    model = tf_tiny.model
    with torch.inference_mode():  # the branch continues exactly as generate() would from its ids
        expected = model.generate(
            branch.input_ids[:, : branch.steps[1]["position"] + 1], max_new_tokens=4, do_sample=False
        )
    assert branch.input_ids[0].tolist() == expected[0].tolist()
    assert generation.input_ids.shape[1] == generation.prompt_length + 3  # the original is untouched
    state = DashboardState.from_trace(tf_tiny.trace, tf_tiny.trace.run)
    assert len(state.branches) == 2


def test_step_through_widget_on_the_transformers_backend(tf_tiny):
    st = StepThrough(tf_tiny, "The capital of France is", max_new_tokens=8, do_sample=False)
    try:
        st.next_button.click()
        st.count.value = 3
        st.run_button.click()
        assert len(st.generation.steps) == 4 and len(st.dashboard.text.tokens) == 4
        st.dashboard.text.selected = 1
        st.do_sample.value, st.temperature.value, st.top_k.value = True, 0.5, 5
        st.what_if_button.click()
        assert st.dashboard.what_if["kept"] <= 5 and st.generation.settings["top_k"] == 5
        st.force_choice.value = next(
            i for i in st.generation.steps[1]["probs_top"]["ids"] if i != st.generation.steps[1]["token_id"]
        )
        st.force_button.click()
        assert st.generation.branch != 0 and len(st.dashboard.state.branches) == 2
        st.end_button.click()
        assert st.generation.finished and "transformers" in st.dashboard.header.value
    finally:
        st.close()


def test_dashboard_names_the_backend_and_the_code_that_ran(tf_tiny, embedded_pipe, tmp_path):
    tf_tiny("Hi", max_new_tokens=2, do_sample=False)
    for pipe, backend, file in ((tf_tiny, "transformers", "modeling_llama.py"), (embedded_pipe, "explain", "llama.py")):
        dashboard = Dashboard(pipe)
        try:
            assert f"backend {backend}" in dashboard.header.value and file in dashboard.header.value
        finally:
            dashboard.close()
        replayed = Dashboard(explain.Trace.load(pipe.trace.save(tmp_path / f"{backend}.json")))
        try:
            assert f"backend {backend}" in replayed.header.value
        finally:
            replayed.close()


def test_import_explain_and_the_explain_backend_never_import_transformers(provisioned):
    code = (
        "import sys, explain; pipe = explain.pipeline('text-generation'); pipe('Hi', max_new_tokens=2, "
        "do_sample=False); print('transformers' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=600,
        env=dict(os.environ, PYTHONPATH=REPO),
        cwd=REPO,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "False"
