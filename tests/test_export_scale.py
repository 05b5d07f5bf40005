"""The exported page at scale (issue 28): a run of thousands of steps exports in time linear in its steps, each
step's values are one JSON line parsed when the step is selected, and the page's links come only from values of the
form explain writes."""

from __future__ import annotations

import copy
import json
import re
import time

import pytest

pytest.importorskip("ipywidgets")

import explain
from explain.trace import Event, Trace
from explain.widgets import step_chart
from explain.widgets.code_link import code_html, source_link
from explain.widgets.export import export_data, export_html

STEPS = 2000


@pytest.fixture(scope="module")
def long_trace(tiny_folder) -> Trace:
    """A real sampled run of the tiny model (6 steps), its step events repeated with new numbers to STEPS steps."""
    pipe = explain.pipeline(model=tiny_folder)
    pipe("Hello", max_new_tokens=6, min_new_tokens=6, do_sample=True, top_k=20)
    run = pipe.trace.run
    steps = pipe.trace.filter("generation", "step", run)
    kept = [
        e for e in pipe.trace.events if not (e.run == run and e.stage == "generation" and e.kind in ("step", "end"))
    ]
    events = list(kept)
    for index in range(STEPS):
        source = steps[index % len(steps)]
        data = dict(copy.deepcopy(source.data), step=index, position=steps[0].data["position"] + index)
        data.pop("stop_reason", None)
        events.append(Event("generation", "step", run, source.start + index / 100, source.duration, data))
    for seq, event in enumerate(events):
        event.seq = seq
    return Trace(events, pipe.trace.meta)


def test_the_curves_are_computed_once_per_page_not_once_per_step(long_trace, monkeypatch):
    calls = []
    original = step_chart._curves
    monkeypatch.setattr(step_chart, "_curves", lambda steps: calls.append(len(steps)) or original(steps))
    started = time.process_time()
    data = export_data(long_trace)
    seconds = time.process_time() - started
    assert calls == [STEPS], f"the chart's curves were computed {len(calls)} times"
    (page,) = data["pages"].values()
    assert len(page["steps"]["chart"]) == STEPS
    assert seconds < 30, f"{STEPS} steps took {seconds:.1f} s of CPU (about 0.5 s expected)"


def test_each_step_is_one_json_line_parsed_on_selection(long_trace):
    html = export_html(long_trace)
    data = export_data(long_trace)
    (key,) = data["pages"]
    found = re.search(r"<script type='application/json' id='explain-steps-0'>(.*?)</script>", html, re.S)
    lines = found.group(1).split("\n")
    assert len(lines) == STEPS
    for index in (0, 1, STEPS // 2, STEPS - 1):  # each line is that step's tables, as export_data computed them
        assert json.loads(lines[index]) == {name: table[index] for name, table in data["pages"][key]["steps"].items()}
    page = re.search(r"id='explain-data'>(.*?)</script>", html, re.S).group(1)
    assert json.loads(page)["pages"][key]["step_views"] == list(data["pages"][key]["steps"])
    assert len(page) < len(found.group(1)) / 5, "the per-step values should not be in the data parsed at once"


def test_the_page_inlines_the_basic_plotly_bundle_of_the_live_charts_version(long_trace):
    """Evaluating the full 4.8 MB plotly.js was most of a long run's page's opening (bench/browser.py --scale): the
    page inlines plotly.js's basic bundle (bars and lines, all the step chart draws), of the plotly.js version the
    live chart gets from the plotly package."""
    from explain.widgets.elements import plotly_basic_js_path, plotly_js_path

    version = re.compile(r"plotly\.js(?: \(basic - minified\))? (v[\d.]+)")
    full, basic = plotly_js_path().read_text(encoding="utf-8"), plotly_basic_js_path().read_text(encoding="utf-8")
    assert "(basic - minified)" in basic[:200]
    assert version.search(basic[:200]).group(1) == version.search(full[:200]).group(1), (
        "explain/data/plotly/plotly-basic.min.js is another plotly.js version than the plotly package's: update it "
        "(explain/data/plotly/README.md)"
    )
    html = export_html(long_trace)
    assert "plotly.js (basic - minified)" in html and full[:2000] not in html
    assert len(basic) < len(full) / 3


@pytest.mark.parametrize(
    "version, linked",
    [
        ("5.0.0", True),
        ("4.57.1", True),
        ("5.0.0.dev0", False),
        ("../../evil", False),
        ("5.0.0/../../x", False),
        ("5.0.0'><script>", False),
        (None, False),
        (5, False),
        ("", False),
    ],
)
def test_the_model_code_link_only_from_a_release_version(version, linked):
    path = "/env/site-packages/transformers/models/llama/modeling_llama.py"
    href = source_link(path, version)
    if linked:
        assert href == (
            f"https://github.com/huggingface/transformers/blob/v{version}/src/transformers/models/llama/"
            "modeling_llama.py"
        )
    else:
        assert href is None
    html = code_html({"backend": "transformers", "source_file": path, "transformers_version": version})
    assert ("<a href=" in html) == linked and "<script>" not in html


@pytest.mark.parametrize(
    "path",
    [
        "/x/transformers/models/../../../../etc/passwd.py",
        "/x/transformers/models/a/b/c.py",
        "/x/transformers/models/llama/modeling_llama.py?x",
        "javascript:alert(1)",
    ],
)
def test_the_model_code_link_only_to_a_modeling_file(path):
    assert source_link(path, "5.0.0") is None
