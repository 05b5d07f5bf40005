"""chart.js, the step chart, drawn by plotly.js in chromium on a bare page (no JupyterLab, no kernel: seconds).

The step data comes from step_chart.chart_step, as in the notebook: a step whose chosen token is outside the top
candidates of every panel, with 22 logits processors. At 700, 800 and 1400 px wide, light and dark: every panel is
drawn, no two panels overlap, nothing runs past the chart's width, the chosen token has its orange bar in every
panel (below a gap, labelled with its rank), and the text follows the theme's colour.
"""

from __future__ import annotations

import json

import pytest

from explain.widgets.step_chart import chart_curves, chart_step
from explain.widgets.views import plotly_js_path

from browser_support import ARTIFACTS, ROOT

CHART_JS = ROOT / "explain" / "widgets" / "chart.js"
CSS = ROOT / "explain" / "widgets" / "widgets.css"
DARK = "--jp-layout-color0: #111111; --jp-ui-font-color1: #eeeeee; --jp-ui-font-color2: #bbbbbb;"
CHOSEN = 42


def synthetic_step(processors: int) -> dict:
    """A sampled step whose chosen token (id 42) is the 30th logit, outside every panel's top 8."""
    top = {"ids": list(range(20)), "values": [20.0 - i * 0.5 for i in range(20)]}
    texts = {str(i): f" w{i}" for i in range(20)} | {str(CHOSEN): " chosen<b>"}
    step = {"step": 3, "position": 12, "token_id": CHOSEN, "token": " chosen<b>", "method": "sample", "logit": 5.0,
            "rank": 30, "prob": 0.004, "raw_prob": 0.0001, "entropy_bits": 5.1, "token_texts": texts,
            "logits_top": top, "processors": [],
            "probs_top": {"ids": list(range(10)), "values": [0.2 - i * 0.015 for i in range(10)]}}
    for n in range(processors):
        step["processors"].append({"name": f"processor_{n}", "args": {"value": n / 10}, "removed": n, "kept": 100 - n,
                                   "changed": 5, "top": None if n == 3 else top, "token_score": 5.0 - n / 100,
                                   "token_rank": 30 - n % 5})
    return step


@pytest.fixture(scope="module")
def chart_page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.set_content(f"<html><head><style>{CSS.read_text()}</style></head><body style='margin: 0'>"
                     "<div id='host' style='width: 1400px'></div></body></html>")
    page.add_script_tag(path=str(plotly_js_path()))
    page.add_script_tag(type="module", content=CHART_JS.read_text() + """
window.explainChart = { geometry, figure, render: (values) => {
  const host = document.getElementById("host");
  host.replaceChildren();
  const model = { get: (k) => values[k], set() {}, save_changes() {}, on() {}, off() {}, widget_manager: null };
  return render({ model, el: host });
} };""")
    page.wait_for_function("() => window.explainChart && window.Plotly")
    page.errors = errors
    yield page
    context.close()


def draw(page, step, curves, width: int, dark: bool = False) -> dict:
    page.evaluate(f"""() => {{
        const host = document.getElementById('host');
        host.style.width = '{width}px';
        document.body.setAttribute('style', 'margin: 0; {DARK if dark else ''}');
        document.body.style.background = '{'#111111' if dark else '#ffffff'}';
        window.explainChart.render({json.dumps({"step": step, "curves": curves, "message": "no step yet"})});
    }}""")
    page.wait_for_function("() => document.querySelector('#host .explain-chart')?.dataset.drawn")
    return page.evaluate("""() => {
        const plot = document.querySelector('#host .js-plotly-plot');
        if (!plot) return {drawn: document.querySelector('#host .explain-chart').dataset.drawn,
                           message: document.querySelector('#host .explain-chart-empty').textContent};
        const box = plot.getBoundingClientRect();
        const rect = (e) => { const r = e.getBoundingClientRect(); return [r.left, r.top, r.right, r.bottom]; };
        const union = (boxes) => boxes.filter((b) => b[2] > b[0]).reduce((a, b) =>
            [Math.min(a[0], b[0]), Math.min(a[1], b[1]), Math.max(a[2], b[2]), Math.max(a[3], b[3])]);
        // a panel is what it draws: its bars with their numbers, and its token labels (the subplot's <g> also
        // holds full-size layers, so its own box says nothing)
        const subplots = [...plot.querySelectorAll('.cartesianlayer > .subplot')].map((g) => ({
            name: [...g.classList].find((c) => c !== 'subplot'),
            bars: [...g.querySelectorAll('.bars path')].map((p) => p.style.fill),
            labels: [...g.querySelectorAll('.yaxislayer-above text')].map((t) => t.textContent),
            labelFill: g.querySelector('.yaxislayer-above text')?.style.fill,
            box: union([...g.querySelectorAll('.bars path, .bartext, .yaxislayer-above text, .scatterlayer .trace path')].map(rect))}));
        const titles = [...plot.querySelectorAll('.annotation')].map((a) => ({text: a.textContent, box: rect(a)}));
        return {width: box.width, right: box.right, left: box.left, subplots, titles,
                columns: +document.querySelector('#host .explain-chart').dataset.columns,
                overflow: document.getElementById('host').scrollWidth - document.getElementById('host').clientWidth};
    }""")


def overlap(a, b, slack=1.0) -> bool:
    return a[0] < b[2] - slack and b[0] < a[2] - slack and a[1] < b[3] - slack and b[1] < a[3] - slack


@pytest.mark.parametrize("processors", [2, 22])
def test_every_panel_has_room_and_the_chosen_token(chart_page, processors):
    step = chart_step(synthetic_step(processors))
    panels = step["panels"]
    assert len(panels) == processors + 2  # logits, each processor, probabilities: no fixed number of slots
    assert all(p["extra"] and p["extra"]["id"] == CHOSEN for p in panels)  # outside the top 8 everywhere
    curves = chart_curves([{"step": i, "prob": 0.5, "entropy_bits": 2.0, "forward_time": 0.02} for i in range(6)], 5)
    for width in (700, 800, 1400):
        for dark in (False, True):
            seen = draw(chart_page, step, curves, width, dark)
            bars = [s for s in seen["subplots"] if s["bars"] and s["labels"]]
            assert len(bars) == len(panels), f"{width}px: {len(bars)} panels drawn of {len(panels)}"
            for a in range(len(seen["subplots"])):
                for b in range(a + 1, len(seen["subplots"])):
                    assert not overlap(seen["subplots"][a]["box"], seen["subplots"][b]["box"]), (
                        f"{width}px: {seen['subplots'][a]['name']} overlaps {seen['subplots'][b]['name']}")
            for a in range(len(seen["titles"])):
                for b in range(a + 1, len(seen["titles"])):
                    assert not overlap(seen["titles"][a]["box"], seen["titles"][b]["box"]), (
                        f"{width}px: titles {seen['titles'][a]['text']!r} and {seen['titles'][b]['text']!r} overlap")
            assert all(s["box"][2] <= seen["right"] + 1 and s["box"][0] >= seen["left"] - 1
                       for s in seen["subplots"]), f"{width}px: a panel runs past the chart"
            assert seen["overflow"] <= 0
            for panel in bars:  # the chosen token: an orange bar, labelled with its rank, below the gap
                assert sum(1 for fill in panel["bars"] if fill in ("rgb(217, 72, 15)", "rgb(240, 136, 62)")) == 1
                assert any(label.startswith("#") and "\u2423chosen" in label for label in panel["labels"]), panel["labels"]
                assert "\u22ee" in panel["labels"]
            expected = "rgb(238, 238, 238)" if dark else "rgb(31, 35, 40)"
            assert bars[0]["labelFill"] == expected, f"token labels in {bars[0]['labelFill']}, theme text {expected}"
            assert seen["columns"] >= (4 if width == 1400 else 2)
            if processors == 22:
                chart_page.screenshot(full_page=True,
                                      path=str(ARTIFACTS / f"chart-22-processors-{width}px-{'dark' if dark else 'light'}.png"))
    assert chart_page.errors == []


def test_no_step_shows_a_line_not_empty_axes(chart_page):
    seen = draw(chart_page, chart_step(None), chart_curves([], None), 800)
    assert seen["drawn"] == "empty" and seen["message"] == "no step yet"
    assert chart_page.locator("#host .js-plotly-plot .subplot").count() == 0
