"""The widgets in Python, on the embedded model (tests/browser drives the same in a real JupyterLab).

The dashboard is a sink on the trace: what it shows must be exactly what the trace recorded (tokens, ids,
probabilities, stages), live and when replayed from a saved file; its updates are coalesced; untrusted text is
escaped in the static HTML; the step-through controller adds exactly the tokens its buttons say.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

pytest.importorskip("ipywidgets")
pytest.importorskip("anywidget")
pytest.importorskip("plotly")

import explain  # noqa: E402
from explain.trace import Event, Trace  # noqa: E402
from html import escape  # noqa: E402

from explain.widgets.state import visible  # noqa: E402
from explain.widgets import Dashboard, DashboardState, StepThrough, ThrottledSink, summary_html  # noqa: E402

EVIL = "<img src=x onerror=alert(1)>"
STAGES = ["registry", "config", "tokenizer", "weights", "placement", "tokenization", "generation", "decoding"]


@pytest.fixture(scope="module")
def pipe(embedded_pipe):
    return embedded_pipe


def test_core_imports_no_widget_library():
    code = ("import sys, explain; p = explain.pipeline; import explain.generation, explain.console; "
            "print(sorted(m for m in ('ipywidgets', 'plotly', 'anywidget', 'IPython') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# -- the sink -----------------------------------------------------------------------------------------------
class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def step_event(i: int) -> Event:
    return Event(stage="generation", kind="step", run=1, start=0.0, duration=0.0, data={"step": i})


def test_sink_coalesces_steps_to_about_ten_flushes_a_second():
    clock, flushed = Clock(), []
    sink = ThrottledSink(flushed.append, interval=0.1, clock=clock)
    for i in range(200):  # 200 steps at 100 tokens/s: two seconds
        clock.now = i * 0.01
        sink(step_event(i))
    sink.flush()
    assert 18 <= len(flushed) <= 22  # about 10 a second
    assert [e.data["step"] for batch in flushed for e in batch] == list(range(200))  # none lost, in order


def test_sink_shows_a_stage_end_at_once_and_backs_off_when_a_flush_is_costly():
    clock = Clock()
    batches = []

    def slow_view(events):
        batches.append(events)
        clock.now += 0.05  # the view takes 50 ms a flush

    sink = ThrottledSink(slow_view, interval=0.1, budget=0.02, clock=clock)
    sink(step_event(0))
    assert len(batches) == 1  # the first event is drawn at once
    assert sink.wait == pytest.approx(0.05 / 0.02)  # 2.5 s between flushes keeps the view at 2% of the time
    for i in range(1, 20):
        clock.now += 0.1
        sink(step_event(i))
    assert len(batches) == 1  # still waiting: 1.9 s < 2.5 s
    sink(Event(stage="generation", kind="end", run=1, start=0.0, duration=0.0, data={}))
    assert len(batches) == 2 and len(batches[1]) == 20  # the end flushes everything pending at once


# -- the dashboard, live ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def live(pipe):
    """A dashboard that followed one sampled chat call, with what its sink flushed while the call ran."""
    dashboard = Dashboard(pipe)
    flushes = []
    original = dashboard._on_events
    dashboard.sink.on_flush = lambda events: (flushes.append(len(events)), original(events))
    torch.manual_seed(3)
    output = pipe([{"role": "user", "content": "Write a story about a cat"}], max_new_tokens=30, do_sample=True,
                  temperature=0.8, top_k=40)
    yield dashboard, output, flushes, pipe.last_generation, pipe.trace.run
    dashboard.close()


def test_live_dashboard_shows_what_the_trace_recorded(live, pipe):
    dashboard, output, flushes, generation, run = live
    state = dashboard.state
    assert state.run == run and state.finished
    tokens = dashboard.text.tokens
    assert [t[0] for t in tokens] == [s["token"] for s in generation.steps]
    assert [t[1] for t in tokens] == [s["prob"] for s in generation.steps]  # the shading is the real probability
    assert state.text() == output[0]["generated_text"][-1]["content"]
    chips = dashboard.prompt.tokens
    encode = pipe.trace.last("tokenization", "encode").data
    assert [c[1] for c in chips] == encode["ids"] == generation.input_ids[0, :generation.prompt_length].tolist()
    assert {c[5] for c in chips if c[5]} == {"user", "generation prompt"}  # chat-template roles marked
    assert any(c[4] for c in chips)  # special tokens marked (<|im_start|>, <|im_end|>)
    rows = {r["stage"]: r for r in state.stage_rows()}
    assert list(rows) == STAGES and all(r["status"] == "done" for r in rows.values())
    assert "1 file (cache hit)" in rows["config"]["facts"]
    assert any("Q4_1" in f or "gguf" in f for f in rows["weights"]["facts"])
    assert f"{len(generation.steps)}/30 tokens" in rows["generation"]["facts"]


def test_live_updates_were_coalesced(live):
    dashboard, _, flushes, generation, _ = live
    steps = len(generation.steps)
    assert sum(flushes) >= steps  # every step event reached the view
    assert 2 <= len(flushes) < steps  # more than once while it ran, fewer than once per token


def test_selecting_a_token_shows_its_step(live):
    dashboard, _, _, generation, _ = live
    dashboard.text.selected = 4
    assert dashboard.selected_step() == 4
    assert "Step 4" in dashboard.step_caption.value
    assert f"<code>{escape(visible(generation.steps[4]['token']))}</code>" in dashboard.step_caption.value
    assert f"p = {generation.steps[4]['prob']:.3f}" in dashboard.step_caption.value
    titles = dashboard.figure.panel_titles  # one panel of bars each: logits, each processor, probabilities
    assert titles[0] == "model logits" and titles[-1].startswith("probabilities, sampled")
    assert [t.split(" ")[0] for t in titles[1:-1]] == ["temperature", "top-k"]


# -- replay -------------------------------------------------------------------------------------------------
def test_replayed_trace_shows_the_same(live, pipe, tmp_path):
    dashboard, *_ = live
    path = tmp_path / "run.json"
    pipe.trace.save(path)
    replay = Dashboard(Trace.load(path))
    try:
        replay.run_picker.value = dashboard.state.run  # the same call
        assert replay.text.tokens == dashboard.text.tokens
        assert replay.prompt.tokens == dashboard.prompt.tokens
        assert replay.state.stage_rows() == dashboard.state.stage_rows()
        assert summary_html(replay.state) == summary_html(dashboard.state)
    finally:
        replay.close()


def test_a_plain_string_to_a_chat_model_is_captioned_with_how_to_use_the_template(pipe):
    pipe("Write a story about a cat", max_new_tokens=2, do_sample=False)
    dashboard = Dashboard(pipe.trace)
    try:
        caption = dashboard.prompt.caption
        assert caption.startswith("6 tokens from plain text; a plain string skips the chat template")
        assert '[{"role": "user", "content": ...}]' in caption
        assert "plain text, chat template skipped" in dashboard.state.stage_rows()[5]["facts"]
        html = summary_html(dashboard.state)  # the static fallback says it too
        assert "a plain string skips the chat template" in html and "[{&quot;role&quot;: &quot;user&quot;" in html
    finally:
        dashboard.close()
    pipe([{"role": "user", "content": "Hi"}], max_new_tokens=2, do_sample=False)
    state = DashboardState.from_trace(pipe.trace, pipe.trace.run)
    assert state.prompt_caption().endswith("tokens from a chat, through the chat template")
    assert "skips" not in summary_html(state)


def test_show_rejects_what_is_not_a_pipeline_or_trace():
    with pytest.raises(TypeError, match="explain.pipeline"):
        Dashboard("run.json")


# -- untrusted text -----------------------------------------------------------------------------------------
def test_prompt_and_tokens_are_escaped_in_the_static_html(pipe):
    pipe(EVIL, max_new_tokens=3, do_sample=False)
    state = DashboardState.from_trace(pipe.trace, pipe.trace.run)
    html = summary_html(state)
    assert "<img" not in html and "onerror=alert(1)>" not in html
    assert "&lt;" in html and "alert" in html  # shown as text: the prompt's chips are <, img, src, ...
    bundle = Dashboard(pipe.trace)._repr_mimebundle_()
    assert "<img" not in bundle["text/html"]
    assert "application/vnd.jupyter.widget-view+json" in bundle


# -- step-through -------------------------------------------------------------------------------------------
def test_step_through_buttons_add_exactly_what_they_say(pipe):
    st = StepThrough(pipe, "The capital of France is", max_new_tokens=12, do_sample=False)
    try:
        assert st.generation.steps == [] and st.dashboard.text.tokens == []
        st.next_button.click()
        assert len(st.generation.steps) == 1 and len(st.dashboard.text.tokens) == 1
        st.count.value = 3
        st.run_button.click()
        assert len(st.generation.steps) == 4 and len(st.dashboard.text.tokens) == 4
        greedy = pipe("The capital of France is", max_new_tokens=12, do_sample=False)
        st.end_button.click()
        assert st.generation.finished and st.generation.stop_reason == "max_length"
        assert "The capital of France is" + st.generation.text == greedy[0]["generated_text"]
        st.next_button.click()  # a finished run says so instead of failing
        assert "finished" in st.message.value
        st.reset_button.click()
        assert st.generation.steps == [] and st.dashboard.text.tokens == []
    finally:
        st.close()


def test_step_through_knobs_what_if_and_force(pipe):
    st = StepThrough(pipe, "Once upon a time", max_new_tokens=8, do_sample=False)
    try:
        st.run(3)
        st.dashboard.text.selected = 1
        st.do_sample.value, st.temperature.value, st.top_k.value = True, 0.5, 5
        result = st.what_if_button.click() or st.dashboard.what_if
        assert result["settings"]["top_k"] == 5 and result["kept"] <= 5
        assert result == st.generation.what_if(1, **st.knobs())  # the same numbers as the API
        assert st.generation.settings["top_k"] == 5  # the knobs also apply to the next steps
        original = list(st.generation.input_ids[0].tolist())
        runner_up = next(i for i in st.generation.steps[1]["probs_top"]["ids"]
                         if i != st.generation.steps[1]["token_id"])
        st.force_choice.value = runner_up
        st.force_button.click()
        branch = st.generation
        assert branch.branch != 0 and branch.steps[1]["forced"] and branch.input_ids[0, -1] == runner_up
        assert st.generations[0].input_ids[0].tolist() == original  # the original run is kept
        assert len(st.dashboard.state.branches) == 2
        st.next_button.click()
        assert len(branch.steps) == 3
    finally:
        st.close()


def test_step_through_knob_widgets_come_from_the_registry(pipe):
    """The five knobs of the first row look as they always did; every other knob with a widget declaration sits
    under "more knobs", and moving it changes the run (and a what-if) like any knob."""
    import ipywidgets as widgets
    from explain.generation.settings import KNOBS
    from explain.widgets.controller import MORE_KNOBS
    st = StepThrough(pipe, "Once upon a time", max_new_tokens=6, do_sample=False)
    try:
        first_row = st.children[2].children
        assert [(type(w).__name__, w.description) for w in first_row] == [
            ("Checkbox", "sample (do_sample)"), ("FloatSlider", "temperature"), ("IntSlider", "top-k"),
            ("FloatSlider", "top-p"), ("FloatSlider", "repetition penalty")]
        assert [(w.min, w.max, w.step) for w in first_row[1:]] == [(0.05, 2.0, 0.05), (0, 200, 1), (0.05, 1.0, 0.05),
                                                                  (1.0, 2.0, 0.05)]
        assert st.temperature is first_row[1] and st.top_k.value == 50 and st.temperature.disabled  # greedy
        more = st.more_knobs.children[0].children
        assert set(MORE_KNOBS) == {n for n, k in KNOBS.items() if k.widget is not None} - {
            "do_sample", "temperature", "top_k", "top_p", "repetition_penalty"}
        assert len(more) == len(MORE_KNOBS) >= 8 and all(isinstance(w, widgets.Widget) for w in more)
        assert st.knobs()["min_p"] is None and st.knobs()["guidance_scale"] is None  # sliders at "off"
        st.run(2)
        st.do_sample.value = True
        st.typical_p.value = 0.5
        assert st.generation.settings["typical_p"] == 0.5 and st.typical_p.disabled is False
        st.no_repeat_ngram_size.value = 2
        assert [p.name for p in st.generation.processors][:1] == ["no_repeat_ngram_size"]
        result = st.what_if(1)
        assert result["settings"]["typical_p"] == 0.5 and result == st.generation.what_if(1, **st.knobs())
    finally:
        st.close()


def test_step_through_escapes_its_prompt(pipe):
    st = StepThrough(pipe, EVIL, max_new_tokens=2, do_sample=False)
    try:
        title = st.children[0].value
        assert "<img" not in title and "&lt;img src=x onerror=alert(1)&gt;" in title
        assert "<img" not in st._repr_mimebundle_()["text/html"]
    finally:
        st.close()


# -- ipywidgets 7 (what Colab still ships) ------------------------------------------------------------------
IPYWIDGETS_7 = """
import ipywidgets, torch, explain
from explain.widgets import Dashboard, StepThrough
assert ipywidgets.__version__.startswith("7."), ipywidgets.__version__
pipe = explain.pipeline("text-generation")
dashboard = Dashboard(pipe)
pipe("Hello there", max_new_tokens=5, do_sample=False)
assert [t[0] for t in dashboard.text.tokens] == [s["token"] for s in pipe.last_generation.steps]
st = StepThrough(pipe, "Once upon a time", max_new_tokens=6, do_sample=False)
st.next_button.click()
st.count.value = 2
st.run_button.click()
assert len(st.dashboard.text.tokens) == 3
st.dashboard.text.selected = 1
st.do_sample.value, st.top_k.value = True, 5
st.what_if_button.click()
assert "5 tokens keep a chance" in st.message.value, st.message.value
st.force_button.click()
assert "Branch 1" in st.message.value and len(st.dashboard.state.branches) == 2
bundle = dashboard._repr_mimebundle_()
assert bundle["application/vnd.jupyter.widget-view+json"]["version_major"] == 2
print("ok", ipywidgets.__version__)
"""


def test_widgets_work_with_ipywidgets_7(tmp_path, provisioned):
    """The views and the step-through, in a virtual environment that has this machine's packages but
    ipywidgets 7 (pip install 'ipywidgets<8' over them)."""
    import os
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    install = subprocess.run([python, "-m", "pip", "install", "-q", "ipywidgets>=7.6,<8"], capture_output=True,
                             text=True)
    assert install.returncode == 0, install.stderr[-2000:]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    run = subprocess.run([python, "-c", IPYWIDGETS_7], capture_output=True, text=True, env=env, cwd=tmp_path,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.strip().startswith("ok 7.")
