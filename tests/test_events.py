"""The event schema (explain.events): every event a real run emits fits its declaration, every declared kind is
emitted, a trace file is checked on load (naming the event and the field), and runs own their events: threads,
paused runs stepped later, forced branches and a second finish do not put events into the wrong run."""

from __future__ import annotations

import json
import threading
import time

import pytest
import torch

from explain import events
from explain.__main__ import main as cli
from explain.console import print_timeline
from explain.trace import Trace, TraceFileError


@pytest.fixture(scope="module")
def real_trace(embedded_pipe, tmp_path_factory):
    """Every kind of event from the real embedded model, saved and loaded: a greedy text call, a sampled chat call
    with processors, a step-through run with a forced branch and a look inside one step, and the other decoding
    strategies (two samples, beam search, prompt lookup), and a batch of two prompts."""
    pipe = embedded_pipe
    first = pipe.trace.run + 1
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
    generation = pipe.start("Once upon a time", max_new_tokens=4, keep_logits=True)
    generation.run(2)
    branch = generation.force(1, 42)
    branch.step()
    pipe.finish(generation)
    generation.inspect(1, what=("lens",))
    pipe("The capital of France is", max_new_tokens=3, num_return_sequences=2, do_sample=True)
    pipe("The capital of France is", max_new_tokens=3, num_beams=2, do_sample=False)
    pipe("a b c a b", max_new_tokens=3, prompt_lookup_num_tokens=2, do_sample=False)
    pipe(["The capital of France is", "Hi"], max_new_tokens=3, do_sample=False, batch_size=2)  # a batch: pad event
    path = tmp_path_factory.mktemp("events") / "trace.json"
    trace = Trace([e for e in pipe.trace.events if e.run == 0 or e.run >= first], pipe.trace.meta)
    trace.save(path)
    return trace, path, generation


@pytest.fixture(scope="module")
def quantized_and_adapted(tiny_llama, tmp_path_factory) -> list:
    """The kinds of quantized and adapted runs (explain.quantization, explain.adapters, explain.compare), from the
    tiny Llama: int8 on load, a LoRA adapter written in peft's format (merged and unmerged), and a comparison."""
    from safetensors.torch import save_file

    import explain
    from explain.adapters import load_adapter

    folder = tmp_path_factory.mktemp("events-lora")
    torch.manual_seed(0)
    save_file(
        {
            f"base_model.model.model.layers.{i}.self_attn.q_proj.lora_{part}.weight": torch.randn(shape) * 0.1
            for i in range(2)
            for part, shape in (("A", (2, 32)), ("B", (32, 2)))
        },
        str(folder / "adapter_model.safetensors"),
    )
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 2, "lora_alpha": 4}))
    quantized = explain.pipeline("text-generation", model=tiny_llama.folder, quantization="int8")
    adapted = explain.pipeline("text-generation", model=tiny_llama.folder)
    adapter = load_adapter(adapted.model, str(folder), adapted.trace, apply_with="explain")
    adapter.merge()
    adapter.unmerge()
    explain.compare(quantized, adapted, "Hello", max_new_tokens=2)
    return quantized.trace.events + adapted.trace.events


def test_every_declared_kind_is_emitted_by_a_real_run_and_fits(real_trace, quantized_and_adapted):
    trace, _, _ = real_trace
    for event in quantized_and_adapted:
        events.check_event(event.stage, event.kind, event.data)
        assert events.describe(event)
    emitted = {(e.stage, e.kind) for e in trace.events + quantized_and_adapted}
    assert emitted == set(events.KINDS), f"declared but never emitted: {set(events.KINDS) - emitted}"
    for event in trace.events:
        events.check_event(event.stage, event.kind, event.data)
        line = events.describe(event)
        assert isinstance(line, str) and line


def test_the_console_prints_the_schema_description(real_trace, capsys):
    trace, _, generation = real_trace
    print_timeline(trace, run=generation.run_id)
    out = capsys.readouterr().out
    force = trace.filter("generation", "force", run=generation.run_id)[0]
    assert events.describe(force) in out and "forced" in out
    assert "stopped by" in out


def test_a_saved_trace_loads_checked_and_equal(real_trace):
    trace, path, _ = real_trace
    assert Trace.load(path).to_dict() == trace.to_dict()
    assert json.loads(path.read_text())["version"] == 2


def test_a_version_1_file_still_loads(real_trace, tmp_path):
    trace, path, _ = real_trace
    record = json.loads(path.read_text())
    record["version"] = 1
    old = tmp_path / "v1.json"
    old.write_text(json.dumps(record))
    assert Trace.load(old).to_dict()["events"] == record["events"]


def _tampered(path, tmp_path, change) -> tuple[str, int]:
    record = json.loads(path.read_text())
    index = change(record["events"])
    bad = tmp_path / "tampered.json"
    bad.write_text(json.dumps(record))
    return str(bad), index


@pytest.mark.parametrize(
    "field, value, words",
    [
        ("prob", "<img src=x onerror=alert(1)>", ["data.prob: expected a number", "<img src=x"]),
        ("rank", "<script>alert(1)</script>", ["data.rank: expected an integer"]),
        ("entropy_bits", {"a": 1}, ["data.entropy_bits: expected a number"]),
        (
            "logits_top",
            {"ids": [1, "<svg onload=alert(1)>"], "values": [1.0, 2.0]},
            ["data.logits_top.ids[1]: expected an integer"],
        ),
        ("method", "beam", ["data.method: expected one of 'greedy', 'sample'"]),
    ],
)
def test_a_step_field_of_the_wrong_type_is_refused_naming_event_and_field(real_trace, tmp_path, field, value, words):
    _, path, _ = real_trace

    def change(records):
        index = next(i for i, r in enumerate(records) if r["kind"] == "step")
        records[index]["data"][field] = value
        return index

    bad, index = _tampered(path, tmp_path, change)
    with pytest.raises(TraceFileError) as error:
        Trace.load(bad)
    message = str(error.value)
    assert bad in message and f"event {index} (generation/step)" in message and "save the trace again" in message
    for word in words:
        assert word in message


@pytest.mark.parametrize(
    "change, words",
    [
        (lambda r: r.__setitem__("run", -3), ["run: expected a run id"]),
        (lambda r: r.__setitem__("stage", "<b>x</b>"), ["unknown stage '<b>x</b>'"]),
        (lambda r: r.__setitem__("kind", "explode"), ["unknown kind 'explode'"]),
        (lambda r: r.__setitem__("start", "yesterday"), ["start: expected a number"]),
        (lambda r: r["data"].pop("model_used"), ["lacks the field model_used"]),
    ],
)
def test_an_envelope_or_kind_that_is_wrong_is_refused(real_trace, tmp_path, change, words):
    _, path, _ = real_trace
    bad, _ = _tampered(path, tmp_path, lambda records: change(records[0]) or 0)
    with pytest.raises(TraceFileError) as error:
        Trace.load(bad)
    for word in ["event 0", *words]:
        assert word in str(error.value)


def test_a_file_over_the_size_bound_or_a_folder_is_refused(real_trace, tmp_path):
    _, path, _ = real_trace
    with pytest.raises(TraceFileError, match=r"max_bytes=\d+"):
        Trace.load(path, max_bytes=1000)
    assert len(Trace.load(path, max_bytes=path.stat().st_size)) > 0
    with pytest.raises(TraceFileError, match="is a folder"):
        Trace.load(tmp_path)


def test_the_cli_timeline_is_bounded_by_the_runs_that_exist(real_trace, tmp_path, capsys):
    """A 200-byte trace whose one event says run=1000000000 printed a billion run headers."""
    _, path, _ = real_trace
    record = json.loads(path.read_text())
    record["events"] = [dict(record["events"][0], run=10**9)]
    small = tmp_path / "huge-run.json"
    small.write_text(json.dumps(record))
    assert cli(["trace", str(small)]) == 0
    out = capsys.readouterr().out
    assert out.count("-- run") == 1 and f"-- run {10**9}" in out


def test_a_failed_stage_still_emits_its_event_with_the_error():
    from explain.stages import tasks

    trace = Trace()
    with pytest.raises(Exception, match="text-generaton"):
        tasks.lookup("text-generaton", None, trace)
    (event,) = trace.events
    assert (event.stage, event.kind, event.data["task_asked"]) == ("registry", "lookup", "text-generaton")
    assert event.data["error"]["type"] == "UnknownTaskError"
    assert events.describe(event).startswith("failed: UnknownTaskError")


# -- runs own their events ------------------------------------------------------------------------------------
def _check_run(trace: Trace, run: int, new_tokens: int) -> None:
    """One call's events: tokenization, settings, prefill, steps 0..n-1 in order, one end, one decode."""
    kinds = [(e.stage, e.kind) for e in trace.filter(run=run) if e.kind != "force"]
    assert kinds == [("tokenization", "encode"), ("generation", "settings"), ("generation", "prefill")] + [
        ("generation", "step")
    ] * new_tokens + [("generation", "end"), ("decoding", "decode")], kinds
    assert [e.data["step"] for e in trace.filter("generation", "step", run)] == list(range(new_tokens))


def test_an_older_paused_run_stepped_after_a_newer_call_keeps_its_run(embedded_pipe):
    pipe = embedded_pipe
    paused = pipe.start("One, two,", max_new_tokens=3, do_sample=False)
    paused.step()
    newer = pipe.trace.run + 1
    pipe("Red, green,", max_new_tokens=2, do_sample=False)
    assert pipe.trace.run == newer and paused.run_id == newer - 1
    paused.run()
    pipe.finish(paused)
    pipe.finish(paused)  # a run ends once
    _check_run(pipe.trace, paused.run_id, 3)
    _check_run(pipe.trace, newer, 2)


def test_forced_branches_belong_to_their_run_and_number_from_one(embedded_pipe):
    pipe = embedded_pipe
    generation = pipe.start("Hello", max_new_tokens=3, keep_logits=True, do_sample=False)
    generation.run()
    pipe("Other call", max_new_tokens=1)  # a newer call in between
    first, second = generation.force(0, 42), generation.force(1, 43)
    second.step()
    forces = pipe.trace.filter("generation", "force", run=generation.run_id)
    assert [f.data["branch"] for f in forces] == [1, 2] and (first.branch, second.branch) == (1, 2)
    steps = pipe.trace.filter("generation", "step", run=generation.run_id)
    assert [s.data["branch"] for s in steps][-1] == 2
    assert not pipe.trace.filter("generation", "force", run=generation.run_id + 1)


def test_two_threads_calling_one_pipeline_get_their_own_runs(embedded_pipe):
    """Calling one pipeline from two threads works: each call's events carry its own run id, in order, and the
    texts are those of the same calls made one after the other."""
    pipe = embedded_pipe
    prompts = ["The sky is", "def add(a, b):", "Once upon a time", "1, 2, 3,"]
    alone = [pipe(p, max_new_tokens=5, do_sample=False)[0]["generated_text"] for p in prompts]
    before = pipe.trace.run
    together: dict[str, str] = {}

    def call(prompt):
        together[prompt] = pipe(prompt, max_new_tokens=5, do_sample=False)[0]["generated_text"]

    def yield_now(event):  # a slow sink: the threads take turns between steps
        time.sleep(0.002)

    unsubscribe = pipe.trace.subscribe(yield_now)
    threads = [threading.Thread(target=call, args=(p,)) for p in prompts]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        unsubscribe()
    assert [together[p] for p in prompts] == alone
    order = [e.run for e in pipe.trace.events if e.run > before]
    assert order != sorted(order), "the calls did not overlap, so this test proved nothing"
    runs = sorted({e.run for e in pipe.trace.events if e.run > before})
    assert runs == list(range(before + 1, before + 5))
    for run in runs:
        _check_run(pipe.trace, run, 5)
        text = pipe.trace.filter("tokenization", "encode", run)[0].data["text"]
        decoded = pipe.trace.filter("decoding", "decode", run)[0].data["text"]
        assert text + decoded in alone
