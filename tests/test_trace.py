"""The trace contract: events reach sinks as they are emitted, in order, numbered by run; a saved trace reads back
equal; a failed save keeps the old file; a bad trace file gets an error naming the file and the fix."""

from __future__ import annotations

import json
import os

import pytest

from explain import STAGES, ExplainError, Trace
from explain.trace import TraceFileError

LOADING = ("registry", "config", "tokenizer", "weights", "placement")


@pytest.fixture(scope="module")
def generated(embedded_pipe):
    """Two real calls of the embedded pipeline, each watched by a sink that records what the trace held when
    the sink was called. Returns (pipeline, the runs of the two calls, what the sink saw)."""
    trace = embedded_pipe.trace
    seen = []
    unsubscribe = trace.subscribe(lambda event: seen.append((event.seq, len(trace.events), event.run, event.stage)))
    first = trace.run + 1
    try:
        embedded_pipe("The capital of France is", max_new_tokens=4, do_sample=False)
        embedded_pipe([{"role": "user", "content": "Say hi"}], max_new_tokens=3, do_sample=False)
    finally:
        unsubscribe()
    return embedded_pipe, (first, first + 1), seen


def test_sink_sees_each_event_the_moment_it_is_emitted(generated):
    _, runs, seen = generated
    assert len(seen) > 10
    for seq, length, _, _ in seen:
        assert length == seq + 1, "the sink was called after later events were appended (batched, not live)"
    assert [s[0] for s in seen] == list(range(seen[0][0], seen[0][0] + len(seen)))
    # the sink saw the first call's decoding before the second call's tokenization
    stages = [(run, stage) for _, _, run, stage in seen]
    assert stages.index((runs[0], "decoding")) < stages.index((runs[1], "tokenization"))


def test_sink_sees_loading_stages_as_they_happen(tiny_llama):
    """A fresh trace passed to pipeline(): when each loading event arrives, it is the newest in the trace and no
    later stage has run yet."""
    import explain

    trace = Trace()
    calls = []
    trace.subscribe(
        lambda event: calls.append((event.seq, len(trace.events), event.stage, [e.stage for e in trace.events]))
    )
    explain.pipeline(model=tiny_llama.folder, trace=trace)
    assert [c[0] for c in calls] == list(range(len(trace)))
    for seq, length, stage, present in calls:
        assert length == seq + 1 and present[-1] == stage
    assert calls[0][3] == ["registry"]
    placement = next(c for c in calls if c[2] == "placement")
    assert "weights" in placement[3] and placement[0] == len(trace) - 1  # placement is the last loading event


def test_seq_is_position_and_stages_are_in_pipeline_order(embedded_pipe):
    events = embedded_pipe.trace.events
    assert [e.seq for e in events] == list(range(len(events)))
    loading = [e for e in events if e.run == 0]
    first = [next(e.seq for e in loading if e.stage == stage) for stage in LOADING]
    assert first == sorted(first), f"loading stages out of order: {dict(zip(LOADING, first, strict=True))}"
    assert {e.stage for e in loading} == set(LOADING)
    assert all(e.stage in STAGES for e in events)


def test_run_numbers(generated):
    pipe, (first, second), _ = generated
    trace = pipe.trace
    assert all(e.stage in LOADING for e in trace.filter(run=0))
    assert not any(e.stage in LOADING for e in trace.events if e.run > 0)
    for run in (first, second):
        stages = [e.stage for e in trace.filter(run=run)]
        assert stages[0] == "tokenization" and stages[-1] == "decoding"
        assert {"tokenization", "generation", "decoding"} == set(stages)
    assert trace.run >= second
    last_of_first = max(e.seq for e in trace.filter(run=first))
    assert all(e.seq > last_of_first for e in trace.filter(run=second)), "the second call began before the first ended"
    steps = trace.filter("generation", "step", run=first)
    assert len(steps) == 4


def test_new_calls_number_runs_one_by_one(embedded_pipe):
    before = embedded_pipe.trace.run
    embedded_pipe(["One", "Two"], max_new_tokens=1)  # a list: one run per prompt
    assert embedded_pipe.trace.run == before + 2
    assert {e.run for e in embedded_pipe.trace.events if e.run > before} == {before + 1, before + 2}


def test_every_event_of_a_real_load_and_generate_is_json(generated):
    pipe, _, _ = generated
    for event in pipe.trace.events:
        text = json.dumps(event.to_dict(), allow_nan=False)
        assert json.loads(text) == event.to_dict(), f"{event.stage}/{event.kind} changes in a JSON round trip"


def test_save_and_load_round_trip_exactly(generated, tmp_path):
    pipe, _, _ = generated
    path = pipe.trace.save(tmp_path / "trace.json")
    again = Trace.load(path)
    assert again.to_dict() == pipe.trace.to_dict()
    assert again.run == pipe.trace.run
    assert len(again) == len(pipe.trace)
    assert again.events[-1] == pipe.trace.events[-1]
    assert os.listdir(tmp_path) == ["trace.json"]  # no temporary file left beside it


ENCODE = {
    "kind_of_input": "text",
    "text": "Hi you",
    "ids": [1, 2],
    "tokens": ["Hi", "Ġyou"],
    "offsets": [[0, 2], [2, 6]],
    "special": [False, False],
    "count": 2,
    "add_special_tokens": True,
    "chat_template_text": None,
    "segments": None,
}
DECODE = {
    "ids": [3],
    "text": "!",
    "text_with_special": "!",
    "stop_reason": "eos",
    "interrupted": False,
    "skip_special_tokens": True,
}
PROGRESS = {"file": "model.safetensors", "done": 1, "total": 2}


def _small_trace() -> Trace:
    from explain.stages import tasks

    trace = Trace(meta={"what": "test"})
    tasks.lookup("text-generation", "some/model", trace)  # a real registry/lookup event
    trace.emit("weights", "progress", dict(PROGRESS, seconds=float("nan")))  # a fact the schema does not declare
    run = trace.new_run()
    trace.emit("tokenization", "encode", ENCODE, run=run)
    return trace


def test_emit_makes_data_json_and_refuses_unknown_stages():
    trace = _small_trace()
    assert trace.events[1].data["seconds"] == "nan"  # JSON has no NaN; it stays readable
    assert [e.run for e in trace.events] == [0, 0, 1]
    with pytest.raises(ValueError, match="unknown stage 'loading'"):
        trace.emit("loading", "x")


def test_emit_of_a_call_stage_needs_its_run():
    with pytest.raises(ValueError, match="run="):
        Trace().emit("tokenization", "encode", ENCODE)


def test_emit_checks_each_event_against_the_schema():
    """The tests run with EXPLAIN_CHECK_EVENTS=1 (tests/conftest.py), so a producer that emits a field of the
    wrong type, or forgets one, fails where it emits."""
    assert Trace.check_events
    with pytest.raises(ValueError, match=r"data.count: expected an integer, got '2'"):
        Trace().emit("tokenization", "encode", dict(ENCODE, count="2"), run=1)
    with pytest.raises(ValueError, match="lacks the field ids"):
        Trace().emit("tokenization", "encode", {k: v for k, v in ENCODE.items() if k != "ids"}, run=1)
    with pytest.raises(ValueError, match="unknown kind 'x' of stage 'registry'"):
        Trace().emit("registry", "x")


def test_a_failing_sink_does_not_break_the_run():
    trace = Trace()
    calls = []

    def broken(event):
        calls.append(event.seq)
        raise RuntimeError("view crashed")

    trace.subscribe(broken)
    for _ in range(2):
        with pytest.warns(UserWarning, match="view crashed"):
            trace.emit("weights", "progress", PROGRESS)
    assert calls == [0, 1] and len(trace) == 2


def test_subscribe_with_replay_and_unsubscribe():
    trace = _small_trace()
    seen = []
    unsubscribe = trace.subscribe(seen.append, replay=True)
    assert [e.seq for e in seen] == [0, 1, 2]
    unsubscribe()
    trace.emit("decoding", "decode", DECODE, run=1)
    assert len(seen) == 3 and len(trace) == 4


def test_failed_save_with_unserialisable_data_keeps_the_old_file(tmp_path):
    trace = _small_trace()
    path = tmp_path / "trace.json"
    trace.save(path)
    before = path.read_bytes()
    trace.events[1].data["bad"] = object()  # patched in after emit: not JSON
    with pytest.raises(TypeError):
        trace.save(path)
    trace.events[1].data["bad"] = float("inf")  # JSON has no inf either
    with pytest.raises(ValueError):
        trace.save(path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["trace.json"]


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    trace = _small_trace()
    path = tmp_path / "trace.json"
    trace.save(path)
    before = path.read_bytes()
    trace.emit("decoding", "decode", DECODE, run=1)

    def full_disk(source, target):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", full_disk)
    with pytest.raises(ExplainError, match=f"cannot write the trace {path} \\(No space left on device\\); free space"):
        trace.save(path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["trace.json"]
    assert len(Trace.load(path)) == 3


def test_saved_file_is_readable_by_others(tmp_path):
    """A trace is meant to be shared: it gets the permissions of any file written with open(), not 0600."""
    umask = os.umask(0o022)
    os.umask(umask)
    path = _small_trace().save(tmp_path / "trace.json")
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~umask


@pytest.mark.parametrize(
    "content, words",
    [
        ('{"format": "explain-trace", "version": 1, "events": [{"stage": "regis', ["truncated", "save it again"]),
        ('{"model_type": "llama", "hidden_size": 576}', ["not an explain trace", "trace.save"]),
        ("[1, 2, 3]", ["not an explain trace", "trace.save"]),
        ('{"format": "explain-trace", "version": 1, "events": [{"stage": "registry"}]}', ["lacks", "trace.save"]),
        ('{"format": "explain-trace", "version": 1, "events": [7]}', ["event", "trace.save"]),
        ('{"format": "explain-trace", "version": 99, "events": []}', ["newer explain", "upgrade"]),
        (b"\xff\xfe\x00binary", ["not JSON", "save it again"]),
    ],
)
def test_load_of_a_bad_file_names_the_file_and_the_fix(tmp_path, content, words):
    path = tmp_path / "bad-trace.json"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    with pytest.raises(TraceFileError) as error:
        Trace.load(path)
    message = str(error.value)
    assert str(path) in message
    for word in words:
        assert word in message


def test_load_of_a_missing_file(tmp_path):
    path = tmp_path / "nowhere" / "trace.json"
    with pytest.raises(TraceFileError) as error:
        Trace.load(path)
    assert str(path) in str(error.value) and "pipe.trace.save(path)" in str(error.value)
