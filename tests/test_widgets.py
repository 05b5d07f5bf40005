"""The widgets in Python, on the embedded model (tests/browser drives the same in a real JupyterLab).

The dashboard is a sink on the trace: what it shows must be exactly what the trace recorded (tokens, ids,
probabilities, stages), live and when replayed from a saved file; its updates are coalesced; untrusted text is
escaped in the static HTML; the step-through controller adds exactly the tokens its buttons say.
"""

from __future__ import annotations

import pathlib
import re
import subprocess
import sys

import pytest
import torch

pytest.importorskip("ipywidgets")
pytest.importorskip("anywidget")
pytest.importorskip("plotly")

from html import escape  # noqa: E402

import explain  # noqa: E402
from explain.errors import GenerationInterrupted  # noqa: E402
from explain.trace import Event, Trace  # noqa: E402
from explain.widgets import Dashboard, DashboardState, StepThrough, ThrottledSink, summary_html  # noqa: E402
from explain.widgets.state import visible  # noqa: E402
from explain.widgets.step_chart import CANDIDATES, chart_step, processor_title  # noqa: E402
from explain.widgets.views import step_caption  # noqa: E402

EVIL = "<img src=x onerror=alert(1)>"
ROOT = pathlib.Path(__file__).resolve().parent.parent
STAGES = ["registry", "config", "tokenizer", "weights", "placement", "tokenization", "generation", "decoding"]


@pytest.fixture(scope="module")
def pipe(embedded_pipe):
    return embedded_pipe


def test_core_imports_no_widget_library():
    code = (
        "import sys, explain; p = explain.pipeline; import explain.generation, explain.console; "
        "print(sorted(m for m in ('ipywidgets', 'plotly', 'anywidget', 'IPython') if m in sys.modules))"
    )
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


def has_arguments(css: str) -> list[str]:
    """Every :has() argument in a style sheet, its nested parentheses kept."""
    found, start = [], css.find(":has(")
    while start != -1:
        depth, i = 1, start + len(":has(")
        while depth:
            depth += {"(": 1, ")": -1}.get(css[i], 0)
            i += 1
        found.append(css[start + len(":has(") : i - 1])
        start = css.find(":has(", i)
    return found


def test_no_style_rule_looks_at_all_descendants_with_has():
    """Chrome re-checks a :has() whose argument has a descendant combinator on every change inside the elements it
    is on: `.jp-Notebook:has(.explain-dashboard)` and the fallback's `:has(> .jp-OutputArea-output .explain-fallback)`
    made each style recalculation of a chart's redraw in JupyterLab about three times as slow (bench/browser.py's
    click; its results name the figures). Each :has() looks at children and siblings only."""
    from explain.widgets.static import FALLBACK_STYLE

    sheets = {path.name: path.read_text() for path in (ROOT / "explain" / "widgets").glob("*.css")}
    sheets["static.py FALLBACK_STYLE"] = FALLBACK_STYLE
    arguments = {name: has_arguments(css) for name, css in sheets.items()}
    assert len(arguments["static.py FALLBACK_STYLE"]) == 6, arguments  # the reopened notebook's rules are still there
    for name, found in arguments.items():
        for argument in found:
            tight = re.sub(r"\s*([>+~])\s*", r"\1", argument.strip())
            assert tight[0] in ">+~" and not re.search(r"\s", tight), f"{name}: :has({argument}) looks at descendants"


def test_sink_coalesces_steps_to_about_ten_flushes_a_second():
    clock, flushed = Clock(), []
    sink = ThrottledSink(flushed.append, interval=0.1, clock=clock)
    for i in range(200):  # 200 steps at 100 tokens/s: two seconds
        clock.now = i * 0.01
        sink(step_event(i))
    sink.flush()
    assert 18 <= len(flushed) <= 22  # about 10 a second
    assert [e.data["step"] for batch in flushed for e in batch] == list(range(200))  # none lost, in order


def test_sink_shows_a_stage_end_at_once_and_backs_off_when_flushes_are_costly():
    clock = Clock()
    batches = []

    def slow_view(events):
        batches.append(events)
        clock.now += 0.01  # the view takes 10 ms a flush

    sink = ThrottledSink(slow_view, interval=0.1, budget=0.02, clock=clock)
    sink(step_event(0))
    assert len(batches) == 1  # the first event is drawn at once
    for i in range(1, 20):
        clock.now += 0.1
        sink(step_event(i))
    assert sink.wait == pytest.approx(0.01 / 0.02)  # 0.5 s between flushes keeps the view at 2% of the time
    flushed = len(batches)
    assert 3 <= flushed <= 5  # 2 s of steps: not one flush per step, not one in all
    sink(Event(stage="generation", kind="end", run=1, start=0.0, duration=0.0, data={}))
    assert len(batches) == flushed + 1 and sum(map(len, batches)) == 21  # the end flushes everything pending at once


def test_sink_never_stands_still_for_a_second_and_one_slow_flush_does_not_stretch_it():
    # On a loaded machine one flush can take 100 ms (the process paused, a garbage collection). At 2% of the time
    # that would be 5 s without a flush: a 60-token run would show 2 tokens, then 60 (CI saw exactly that).
    clock, costs, flushed_at = Clock(), iter([0.002, 0.1] + [0.002] * 30 + [0.2] * 30), []

    def view(events):
        flushed_at.append(clock.now)
        clock.now += next(costs)

    sink = ThrottledSink(view, interval=0.1, budget=0.02, max_wait=1.0, clock=clock)
    for i in range(100):
        clock.now += 0.05  # 20 tokens a second
        sink(step_event(i))
        assert clock.now - flushed_at[-1] <= 1.0 + 0.2 + 0.05, f"no flush for {clock.now - flushed_at[-1]:.2f} s"
    assert flushed_at[2] - flushed_at[1] < 0.3  # the one 100 ms flush did not stretch the wait (to 5 s, or 1 s)
    assert sink.wait == pytest.approx(1.0)  # flushes costing 200 ms each: the wait stretches, to at most a second


# -- the dashboard, live ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def live(pipe):
    """A dashboard that followed one sampled chat call, with what its sink flushed while the call ran."""
    dashboard = Dashboard(pipe)
    flushes = []
    original = dashboard._on_events
    dashboard.sink.on_flush = lambda events: (flushes.append(len(events)), original(events))
    torch.manual_seed(3)
    output = pipe(
        [{"role": "user", "content": "Write a story about a cat"}],
        max_new_tokens=30,
        do_sample=True,
        temperature=0.8,
        top_k=40,
    )
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
    assert [c[1] for c in chips] == encode["ids"] == generation.input_ids[0, : generation.prompt_length].tolist()
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
    titles = [p["title"] for p in dashboard.chart.step["panels"]]  # logits, each processor, probabilities
    assert titles[0].startswith("model logits") and titles[-1].startswith("probabilities, sampled")
    assert [t.split(" ")[0] for t in titles[1:-1]] == ["temperature", "top-k"]
    assert dashboard.chart.step["index"] == 4 and dashboard.chart.selected == 4


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
        runner_up = next(
            i for i in st.generation.steps[1]["probs_top"]["ids"] if i != st.generation.steps[1]["token_id"]
        )
        st.force_choice.value = runner_up
        st.force_button.click()  # "Force it and continue": the branch goes on to the run's limit
        branch = st.generation
        assert (
            branch.branch != 0
            and branch.steps[1]["forced"]
            and branch.input_ids[0, branch.prompt_length + 1] == runner_up
        )
        assert branch.finished and len(branch.steps) == 8 and branch.stop_reason == "max_length"
        assert st.generations[0].input_ids[0].tolist() == original  # the original run is kept
        assert len(st.dashboard.state.branches) == 2
        assert (
            st.next_button.disabled and st.next_button.button_style == "" and "Finished" in st.next_button.description
        )
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
            ("Checkbox", "sample (do_sample)"),
            ("FloatSlider", "temperature"),
            ("IntSlider", "top-k"),
            ("FloatSlider", "top-p"),
            ("FloatSlider", "repetition penalty"),
        ]
        assert [(w.min, w.max, w.step) for w in first_row[1:]] == [
            (0.05, 2.0, 0.05),
            (0, 200, 1),
            (0.05, 1.0, 0.05),
            (1.0, 2.0, 0.05),
        ]
        assert st.temperature is first_row[1] and st.top_k.value == 50 and st.temperature.disabled  # greedy
        more = st.more_knobs.children[0].children
        assert set(MORE_KNOBS) == {n for n, k in KNOBS.items() if k.widget is not None} - {
            "do_sample",
            "temperature",
            "top_k",
            "top_p",
            "repetition_penalty",
        }
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
    import site

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    # --system-site-packages gives the *base* interpreter's packages: when this test runs inside a virtual
    # environment (the README's command in a venv), torch and explain's dependencies are in that venv, not the base.
    # A .pth file adds the running interpreter's own site-packages (their .pth files processed too, as for any
    # site directory) after the new venv's, so its ipywidgets 7 still comes first.
    inner = subprocess.run(
        [python, "-c", "import site; print(site.getsitepackages()[0])"], capture_output=True, text=True, check=True
    ).stdout.strip()
    user = [site.getusersitepackages()] if site.ENABLE_USER_SITE else []  # off inside a venv, as there
    outer = [path for path in site.getsitepackages() + user if os.path.isdir(path)]
    pth = "".join(f"import site; site.addsitedir({path!r})\n" for path in outer)
    pathlib.Path(inner, "outer_environment.pth").write_text(pth)
    install = subprocess.run(
        [python, "-m", "pip", "install", "-q", "ipywidgets>=7.6,<8"], capture_output=True, text=True
    )
    assert install.returncode == 0, install.stderr[-2000:]
    env = {**os.environ, "PYTHONPATH": str(pathlib.Path(__file__).resolve().parents[1])}  # this checkout's explain
    run = subprocess.run(
        [python, "-c", IPYWIDGETS_7], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.strip().startswith("ok 7.")


# -- the step view: the chosen token in every panel ---------------------------------------------------------
def test_the_chosen_token_is_in_every_panel_with_its_rank(pipe):
    """At a high temperature the sampled token is often outside the top 8: it still has its bar in every panel
    (an extra one, below the gap, with the score the trace recorded) and the caption says its rank."""
    torch.manual_seed(0)
    pipe("Write a story about a cat", max_new_tokens=24, do_sample=True, temperature=1.8, top_k=80, top_p=0.98)
    generation = pipe.last_generation
    extras = 0
    for step in generation.steps:
        chart = chart_step(step)
        assert [p["kind"] for p in chart["panels"]] == ["logit"] * 4 + ["prob"]  # logits, 3 processors, probs
        for panel, processor in zip(chart["panels"], [None] + step["processors"] + [None], strict=True):
            ids = [bar[1] for bar in panel["bars"]]
            if step["token_id"] in ids:
                assert panel["extra"] is None
                continue
            extras += 1
            extra = panel["extra"]
            assert extra["id"] == step["token_id"] and extra["word"] == step["token"]
            if panel["kind"] == "prob":
                assert extra["value"] == step["prob"] and extra["rank"] == step["processors"][-1]["token_rank"]
            elif processor is None:
                assert extra["value"] == step["logit"] and extra["rank"] == step["rank"]
            else:
                assert extra["value"] == processor["token_score"] and extra["rank"] == processor["token_rank"]
            assert extra["rank"] > CANDIDATES
    assert extras > 0, "no sampled token outside the top 8: pick another seed"
    outside = next(s for s in generation.steps if s["rank"] > CANDIDATES)
    caption = step_caption(outside)
    assert f"rank {outside['rank']} of the model's logits" in caption
    assert (
        f"rank {outside['processors'][-1]['token_rank']} after the processors" in caption
        or outside["processors"][-1]["token_rank"] == outside["rank"]
    )


def test_top_k_title_explains_ties():
    assert (
        processor_title({"name": "top_k", "args": {"top_k": 50}, "removed": 49099, "kept": 53})
        == "top-k 50 (keeps 53: 3 more tie with the 50th score)"
    )
    assert (
        processor_title({"name": "top_k", "args": {"top_k": 50}, "removed": 49102, "kept": 50}) == "top-k 50 (keeps 50)"
    )
    assert (
        processor_title({"name": "temperature", "args": {"temperature": 0.8}, "removed": 0, "kept": 9})
        == "temperature 0.8"
    )
    assert processor_title({"name": "x", "title": "my own title", "removed": 0}) == "my own title"


# -- a trace is a file people share: every value is escaped, numbers included -----------------------------
HOSTILE = ("<img src=x onerror=alert(1)>", "<svg onload=alert(2)>", "<script>alert(3)</script>")


def _hostile_trace(trace: Trace) -> Trace:
    """The trace of one run with markup in every numeric field a view shows (step, position, rank, prob, ids...)."""
    import copy

    events = [copy.deepcopy(e) for e in trace.events if e.run in (0, trace.run)]
    img, svg, script = HOSTILE
    for event in events:
        d = event.data
        if event.kind == "step":
            d.update(
                step=script,
                position=img,
                rank=svg,
                prob=img,
                raw_prob=svg,
                entropy_bits=script,
                token_id=img,
                forward_time=svg,
                kv_cache={"length": script, "bytes": img},
                stop_reason=svg,
                forward=img,
            )
            d["token_texts"] = {k: img for k in d.get("token_texts", {})}
            d["logits_top"]["values"] = [svg] * len(d["logits_top"]["values"])
            d["probs_top"]["ids"] = [script] * len(d["probs_top"]["ids"])
            for p in d.get("processors", []):
                p.update(kept=img, removed=svg, token_score=script, token_rank=img)
        elif event.kind == "encode":
            d.update(count=img, ids=[svg] * len(d["ids"]))
        elif event.kind == "settings":
            d["settings"]["max_new_tokens_effective"] = script
        elif event.kind == "end":
            d.update(stop_reason=img)
        elif event.kind == "lookup":
            d.update(model_used=svg)
    return Trace(events)


def test_a_hostile_trace_shows_as_text_everywhere(pipe):
    pipe("Hello", max_new_tokens=3, do_sample=False)
    trace = _hostile_trace(pipe.trace)
    dashboard = Dashboard(trace)
    try:
        dashboard.select(1)
        pages = {
            "static": summary_html(dashboard.state),
            "header": dashboard.header.value,
            "caption": dashboard.step_caption.value,
            "bundle": dashboard._repr_mimebundle_()["text/html"],
        }
        for name, html in pages.items():
            for markup in HOSTILE:
                assert markup not in html, f"{name} renders {markup}"
            assert "<img" not in html and "<svg" not in html and "<script" not in html, name
        assert "&lt;img src=x onerror=alert(1)&gt;" in pages["caption"]  # shown, as text
        numbers = [v for panel in dashboard.chart.step["panels"] for bar in panel["bars"] for v in bar[1:]]
        numbers += [v for key in ("x", "p", "entropy", "ms") for v in dashboard.chart.curves[key]]
        assert all(v is None or isinstance(v, (int, float)) for v in numbers), numbers  # no string reaches a number
        assert all(c[1] is None for c in dashboard.prompt.tokens)  # ids that are markup are dropped, not shown
        assert all(isinstance(t[0], str) and (t[1] is None) for t in dashboard.text.tokens)
    finally:
        dashboard.close()


# -- the view registry ------------------------------------------------------------------------------------
def test_a_registered_view_is_drawn_by_every_new_dashboard(pipe):
    from explain.widgets import views

    class StepCount(views.View):
        name, reads, section = "step-count", frozenset({views.STEPS}), ("Count", "steps so far")

        def draw(self, scene):
            return {"value": f"<b>{len(scene.state.steps())} steps</b>"}

    views.register(StepCount())
    try:
        with pytest.raises(ValueError, match="registered already"):
            views.register(StepCount())
        dashboard = Dashboard(pipe.trace)
        try:
            assert [v.name for v in dashboard.views][-1] == "step-count"
            assert dashboard.parts["step-count"] in dashboard.children
            assert dashboard.parts["step-count"].value == f"<b>{len(dashboard.state.steps())} steps</b>"
        finally:
            dashboard.close()
    finally:
        views.VIEWS[:] = [v for v in views.VIEWS if v.name != "step-count"]


def test_a_drawn_view_is_its_view_class_its_widget_beside_it_and_its_module(pipe):
    """The view recipe's three pieces for a view drawn by an ES module: the View, its widget (a ViewWidget declared
    beside the view, not in elements.py), its module; the live dashboard and the exported page both draw it."""
    import traitlets

    from explain.widgets import views
    from explain.widgets.elements import ViewWidget, module_source
    from explain.widgets.export import export_data

    class EntropyBars(ViewWidget):
        _esm = module_source("tokens.js")  # (a new view has its own file; any module shows the mechanism)
        bars = traitlets.List().tag(sync=True)

    class EntropyView(views.View):
        name, reads, module = "entropy", frozenset({views.RUN, views.STEPS}), "tokens.js"
        section = ("Entropy", "each step's entropy, in bits")

        def create(self):
            return EntropyBars()

        def draw(self, scene):
            return {"bars": [views.number(step["entropy_bits"]) for step in scene.state.steps()]}

    views.register(EntropyView())
    try:
        pipe("Once upon a time", max_new_tokens=3, do_sample=False)
        dashboard = Dashboard(pipe.trace)
        try:
            entropies = [step["entropy_bits"] for step in dashboard.state.steps()]
            assert len(entropies) == 3 and dashboard.parts["entropy"].bars == entropies
            assert dashboard.parts["entropy"].ref  # a ViewWidget: its module can heal (elements.module_source)
            page = export_data(pipe.trace, run=pipe.trace.run)
            assert page["pages"][f"{pipe.trace.run}:0"]["values"]["entropy"] == {"bars": entropies}
        finally:
            dashboard.close()
    finally:
        views.VIEWS[:] = [v for v in views.VIEWS if v.name != "entropy"]


# -- a display belongs to its run ---------------------------------------------------------------------------
def _event(kind: str, run: int, **data) -> Event:
    stage = {"encode": "tokenization", "decode": "decoding"}.get(kind, "generation")
    return Event(stage=stage, kind=kind, run=run, start=0.0, duration=0.0, data=data)


def test_a_dashboard_for_some_runs_ignores_every_other_run():
    trace = Trace()
    mine = Dashboard(trace, runs={2})
    everything = Dashboard(trace)
    try:
        for run in (1, 2, 3):
            trace.run = run
            trace.events.append(_event("settings", run, settings={"max_new_tokens_effective": 5}))
            for sink in list(trace._sinks):
                sink(trace.events[-1])
            step = _event("step", run, step=0, token=f"t{run}", token_id=run, prob=0.5, branch=0)
            trace.events.append(step)
            for sink in list(trace._sinks):
                sink(step)
        mine.flush()
        everything.flush()
        assert mine.state.run == 2 and [t[0] for t in mine.text.tokens] == ["t2"]
        assert everything.state.run == 3 and [t[0] for t in everything.text.tokens] == ["t3"]
        late = _event("step", 1, step=1, token="late", token_id=9, prob=0.5, branch=0)  # an older run, stepped again
        for sink in list(trace._sinks):
            sink(late)
        mine.flush()
        everything.flush()
        assert [t[0] for t in everything.text.tokens] == ["t3"], "an older run's step took the display over"
    finally:
        mine.close()
        everything.close()


def test_step_through_display_belongs_to_its_run(pipe):
    """Cells run after a step-through (a call, a paused run stepped and forced) leave its display alone, and its
    own Next token still draws."""
    st = StepThrough(pipe, "Once upon a time", max_new_tokens=20, do_sample=False)
    try:
        st.run(6)
        shown = (list(st.dashboard.text.tokens), st.dashboard.header.value, st.dashboard.chart.step)
        pipe("Hello there", max_new_tokens=5, do_sample=False)
        g = pipe.start("The capital of France is", max_new_tokens=8, do_sample=False)
        g.run()
        b = g.force(2, g.steps[2]["probs_top"]["ids"][1])
        b.run()
        st.dashboard.flush()
        assert (list(st.dashboard.text.tokens), st.dashboard.header.value, st.dashboard.chart.step) == shown
        assert len(st.dashboard.state.branches) == 1 and "paused at 6/20 tokens" in st.dashboard.header.value
        st.next_button.click()
        assert len(st.dashboard.text.tokens) == 7 and st.dashboard.chart.step["index"] == 6
        assert [t[0] for t in st.dashboard.text.tokens] == [s["token"] for s in st.generation.steps]
    finally:
        st.close()


# -- the paused step-through says what it is doing --------------------------------------------------------
def test_paused_step_through_before_and_after(pipe):
    st = StepThrough(pipe, "The capital of France is", max_new_tokens=3, do_sample=False)
    try:
        header = st.dashboard.header.value
        assert "ready: press Next token to generate the first of 3 tokens" in header and "#bf8700" not in header
        assert st.dashboard.chart.step["panels"] == [] and "fills in with the first token" in st.dashboard.chart.message
        assert st.dashboard.step_caption.layout.display == "none"  # no blank space where a caption would be
        st.next_button.click()
        assert "paused at 1/3 tokens" in st.dashboard.header.value and st.dashboard.chart.message == ""
        assert st.dashboard.step_caption.layout.display != "none" and len(st.dashboard.chart.step["panels"]) == 2
        st.end_button.click()
        assert all(b.disabled for b in (st.next_button, st.run_button, st.end_button))
        assert "Next token and Run are off because this run has ended" in st.message.value
        assert "the token limit" in st.message.value and "Reset starts again" in st.next_button.tooltip
        assert "done: 3 tokens" in st.dashboard.header.value
    finally:
        st.close()


# -- Ctrl-C / Kernel > Interrupt ----------------------------------------------------------------------------
def test_an_interrupt_ends_the_run_cleanly(pipe):
    dashboard = Dashboard(pipe)
    seen = []

    def interrupt_at_fourth_step(event):
        seen.append(event.kind)
        if event.kind == "step" and seen.count("step") == 4:
            raise KeyboardInterrupt  # as Ctrl-C would, in the middle of the run

    unsubscribe = pipe.trace.subscribe(interrupt_at_fourth_step)
    try:
        with pytest.raises(KeyboardInterrupt) as raised:  # still a KeyboardInterrupt: scripts stop as on Ctrl-C
            pipe("Write a long story", max_new_tokens=50, do_sample=False)
    finally:
        unsubscribe()
    assert isinstance(raised.value, GenerationInterrupted)
    run = pipe.trace.run
    assert str(raised.value).startswith(f"interrupted at step 4 of call {run}: the 4 tokens generated so far")
    events = pipe.trace.filter(run=run)
    assert [e.kind for e in events if e.kind == "step"] == ["step"] * 4
    end = pipe.trace.last("generation", "end").data
    assert end["stop_reason"] == "interrupted" and end["interrupted"] and end["new_tokens"] == 4
    decode = pipe.trace.last("decoding", "decode")
    assert decode.run == run and decode.data["text"] == pipe.last_generation.output_text
    assert [e.kind for e in events][-2:] == ["end", "decode"]
    try:
        assert "interrupted at step 4: 4 tokens kept" in dashboard.header.value
        assert "interrupted at step 4" in dashboard.text.status
        assert "interrupted at step 4" in {r["stage"]: r for r in dashboard.timeline.rows}["generation"]["facts"]
    finally:
        dashboard.close()


IPYTHON_INTERRUPT = """
from IPython.core.interactiveshell import InteractiveShell
shell = InteractiveShell.instance()
shell.run_cell("from explain.errors import interrupted\\nraise interrupted('interrupted at step 3 of call 1: kept')")
print("AFTER")
"""


def test_an_interrupt_is_one_line_in_ipython():
    run = subprocess.run([sys.executable, "-c", IPYTHON_INTERRUPT], capture_output=True, text=True, timeout=120)
    shown = [line for line in (run.stdout + run.stderr).splitlines() if line.strip()]
    assert shown == ["GenerationInterrupted: interrupted at step 3 of call 1: kept", "AFTER"], shown


# -- the standalone page --------------------------------------------------------------------------------------
def test_the_exported_page_is_drawn_by_the_same_views(pipe):
    """explain.export's values are the live dashboard's, view by view and step by step (one implementation)."""
    from explain.widgets.export import export_data

    torch.manual_seed(5)
    pipe("Once upon a time", max_new_tokens=6, do_sample=True, temperature=0.9)
    dashboard = Dashboard(pipe.trace)
    try:
        data = export_data(pipe.trace, run=pipe.trace.run)
        assert [k["key"] for k in data["keys"]] == [f"{pipe.trace.run}:0"]
        assert [v["name"] for v in data["views"]] == [v.name for v in dashboard.views]
        page = data["pages"][f"{pipe.trace.run}:0"]

        def on_screen(name, values):  # the widget's traits, and whether it is shown
            part = dashboard.parts[name]
            return {
                **{k: getattr(part, k) for k in values if k != "shown"},
                **({"shown": part.layout.display != "none"} if "shown" in values else {}),
            }

        for name, values in page["values"].items():
            assert values == on_screen(name, values), name
        for index in range(len(dashboard.state.steps())):
            dashboard.select(index)
            for name, table in page["steps"].items():
                values = {**page["values"][name], **table[index]}
                assert values == on_screen(name, values), (name, index)
    finally:
        dashboard.close()


def test_export_writes_one_page_and_refuses_bad_paths(pipe, tmp_path):
    from explain.trace import TraceFileError

    pipe("Hello", max_new_tokens=3, do_sample=False)
    written = explain.export(pipe, tmp_path / "run.html")
    html = (tmp_path / "run.html").read_text()
    assert written == str(tmp_path / "run.html") and html.startswith("<!DOCTYPE html>")
    assert "Content-Security-Policy" in html and "connect-src 'none'" in html
    assert "http://" not in html.split("<script", 1)[0] and "<link" not in html  # nothing fetched, all inline
    assert (tmp_path / "run.html").stat().st_mode & 0o044  # readable by others, like any file the user writes
    with pytest.raises(explain.ExplainError, match="is a folder"):
        explain.export(pipe, tmp_path)
    with pytest.raises(explain.ExplainError, match="does not exist"):
        explain.export(pipe, tmp_path / "missing" / "run.html")
    with pytest.raises(TraceFileError, match="no trace file"):
        explain.export(tmp_path / "none.json", tmp_path / "x.html")
    with pytest.raises(explain.ExplainError, match="no call 999"):
        explain.export(pipe, tmp_path / "x.html", run=999)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.html"]  # no temporary file left behind


# -- inside the model, as a view of the dashboard -----------------------------------------------------------------
def test_the_inside_view_shows_the_inspected_steps_of_the_run(pipe, tmp_path):
    """With capture="inside" the dashboard's "Inside the model" view shows the selected step's generation/inspect
    data (the same as InsideView of the saved trace); a run that inspected nothing hides the view and its title;
    the exported page carries it per step."""
    from explain.widgets import InsideView
    from explain.widgets.export import export_data

    pipe("Red, green and", max_new_tokens=3, do_sample=False, capture="inside")
    run = pipe.trace.run
    dashboard = Dashboard(pipe.trace)
    try:
        inside, title = dashboard.inside, dashboard.sections["inside"]
        assert inside.look["step"] == 2 and "lens" in inside.look and "attention" in inside.look
        assert inside.layout.display != "none" and title.layout.display != "none"
        dashboard.select(0)
        assert inside.look == InsideView(pipe.trace, step=0, run=run).look and inside.look["step"] == 0
        page = export_data(pipe.trace, run=run)["pages"][f"{run}:0"]
        assert page["values"]["inside"]["look"]["step"] == 2 and page["steps"]["inside"][0]["look"]["step"] == 0
        pipe("Hello", max_new_tokens=2, do_sample=False)  # nothing inspected: the view takes no room
        assert dashboard.state.run == pipe.trace.run and dashboard.inside.look == {}
        assert inside.layout.display == "none" and title.layout.display == "none"
        html = pathlib.Path(explain.export(pipe.trace, tmp_path / "inside.html", run=run)).read_text()
        assert '"inside.js":' in html and ".explain-in-lens-grid" in html  # its module and its style sheet
    finally:
        dashboard.close()


def test_the_header_names_the_backend_and_model_code_from_the_trace_meta(pipe):
    """The header says which backend ran and links the model file (the trace's meta), live and in the exported page;
    a hostile meta shows as text."""
    from explain.widgets.export import export_data

    pipe("Hi", max_new_tokens=1, do_sample=False)
    dashboard = Dashboard(pipe.trace)
    try:
        assert "backend explain" in dashboard.header.value and "llama.py" in dashboard.header.value
        page = export_data(pipe.trace, run=pipe.trace.run)["pages"][f"{pipe.trace.run}:0"]
        assert page["values"]["header"]["value"] == dashboard.header.value
    finally:
        dashboard.close()
    hostile = Trace(list(pipe.trace.events), meta={**pipe.trace.meta, "backend": "<img src=x onerror=alert(1)>"})
    dashboard = Dashboard(hostile)
    try:
        assert "<img" not in dashboard.header.value and "&lt;img src=x" in dashboard.header.value
    finally:
        dashboard.close()


def test_a_new_kind_reaches_the_dashboard_through_its_declaration_a_handler_and_a_view():
    """The event-kind recipe end to end, with a throwaway kind: declared (events.KINDS), emitted into a run (checked
    against its declaration where it is emitted), folded by a handler its view registers, read as the run's newest of
    its kind, drawn by a registered view in a live dashboard; then every piece is taken back."""
    from typing import TypedDict

    from explain import events
    from explain.widgets import views
    from explain.widgets.state import HANDLERS, handles, unhandle

    class GenerationTally(TypedDict):
        count: int

    key = ("generation", "tally")
    events.KINDS[key] = events.Kind(*key, GenerationTally, lambda d: f"tally of {d['count']}")

    @handles(*key)
    def tally(state, event):
        state.folds[key] = state.folds.get(key, 0) + event.data["count"]

    class TallyView(views.View):
        name, reads, section = "tally", frozenset({views.STEPS}), ("Tally", "the run's tallies")

        def draw(self, scene):
            newest = scene.state.latest_event(*key)
            if newest is None:
                return {"value": ""}
            return {"value": f"{scene.state.folds[key]} in all, {newest.data['count']} last"}

    views.register(TallyView())
    trace = Trace()
    dashboard = Dashboard(trace)
    try:
        with pytest.raises(ValueError, match="generation/tally has a handler already"):
            handles(*key)(tally)
        first = trace.new_run()
        trace.emit("generation", "tally", {"count": 2}, run=first)
        trace.emit("generation", "tally", {"count": 3}, run=first)
        dashboard.flush()
        assert dashboard.parts["tally"].value == "5 in all, 3 last"
        assert events.describe(trace.events[-1]) == "tally of 3"
        second = trace.new_run()  # a new run starts its own fold
        trace.emit("generation", "tally", {"count": 4}, run=second)
        dashboard.flush()
        assert dashboard.parts["tally"].value == "4 in all, 4 last"
        with pytest.raises(ValueError, match="data.count: expected an integer"):  # checked where it is emitted
            other = Trace()
            other.emit("generation", "tally", {"count": "four"}, run=other.new_run())
    finally:
        dashboard.close()
        views.VIEWS[:] = [v for v in views.VIEWS if v.name != "tally"]
        unhandle(*key)
        del events.KINDS[key]
    assert key not in HANDLERS and key not in events.KINDS


def test_pipeline_presentation_argument_is_the_same_switch(tiny_folder):
    """explain.pipeline(..., presentation=True) switches presentation mode as explain.presentation(True) does: the
    synced `presentation` trait each view's prelude.js reads (it marks <body data-explain-presentation>), on views
    already shown and on views made later, and the dashboards' button."""
    from explain.errors import ExplainError
    from explain.widgets import base

    def state(dashboard) -> tuple:
        return (base.presentation(), dashboard.chart.get_state()["presentation"], dashboard.present_button.value)

    try:
        explain.presentation(False)
        shown = Dashboard(Trace())  # on the page before the switch
        assert state(shown) == (False, False, False)
        explain.presentation(True)
        by_function = (state(shown), state(Dashboard(Trace())))
        explain.presentation(False)
        explain.pipeline(model=tiny_folder, presentation=True)
        by_argument = (state(shown), state(Dashboard(Trace())))
        assert by_argument == by_function == ((True, True, True), (True, True, True))
        explain.pipeline(model=tiny_folder)  # left out: the mode stays as it is
        assert state(shown) == (True, True, True)
        with pytest.raises(ExplainError, match=r"presentation= is on or off: pass True or False, not str 'yes'"):
            explain.pipeline(model=tiny_folder, presentation="yes")
        assert state(shown) == (True, True, True)
        explain.pipeline(model=tiny_folder, presentation=False)
        assert state(shown) == (False, False, False) and state(Dashboard(Trace())) == (False, False, False)
    finally:
        explain.presentation(False)
