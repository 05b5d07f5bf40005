"""chart.js, the step chart, drawn by plotly.js in chromium on a bare page (no JupyterLab, no kernel: seconds).

The step data comes from step_chart.chart_step, as in the notebook: a step whose chosen token is outside the top
candidates of every panel, with 22 logits processors. At 700, 800 and 1400 px wide, light and dark: every panel is
drawn, no two panels overlap, nothing runs past the chart's width, the chosen token has its orange bar in every
panel (below a gap, labelled with its rank), and the text follows the theme's colour.
"""

from __future__ import annotations

import json

import pytest
from browser_support import ARTIFACTS, CHART_PROBE, CHOSEN_FILLS, ROOT, check_chart_layout

from explain.widgets.base import module_source
from explain.widgets.elements import plotly_js_path
from explain.widgets.step_chart import chart_curves, chart_step

CHART_JS = ROOT / "explain" / "widgets" / "chart.js"
CSS = ROOT / "explain" / "widgets" / "widgets.css"
DARK = "--jp-layout-color0: #111111; --jp-ui-font-color1: #eeeeee; --jp-ui-font-color2: #bbbbbb;"
CHOSEN = 42


def synthetic_step(processors: int) -> dict:
    """A sampled step whose chosen token (id 42) is the 30th logit, outside every panel's top 8."""
    top = {"ids": list(range(20)), "values": [20.0 - i * 0.5 for i in range(20)]}
    texts = {str(i): f" w{i}" for i in range(20)} | {str(CHOSEN): " chosen<b>", "1": " \"&'"}  # shown as typed
    entries: list[dict] = []
    step = {
        "step": 3,
        "position": 12,
        "token_id": CHOSEN,
        "token": " chosen<b>",
        "method": "sample",
        "logit": 5.0,
        "rank": 30,
        "prob": 0.004,
        "raw_prob": 0.0001,
        "entropy_bits": 5.1,
        "token_texts": texts,
        "logits_top": top,
        "processors": entries,
        "probs_top": {"ids": list(range(10)), "values": [0.2 - i * 0.015 for i in range(10)]},
    }
    for n in range(processors):
        entries.append(
            {
                "name": f"processor_{n}",
                "args": {"value": n / 10},
                "removed": n,
                "kept": 100 - n,
                "changed": 5,
                "top": None if n == 3 else top,
                "token_score": 5.0 - n / 100,
                "token_rank": 30 - n % 5,
            }
        )
    return step


@pytest.fixture(scope="module")
def chart_page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.set_content(
        f"<html><head><style>{CSS.read_text()}</style></head><body style='margin: 0'>"
        "<div id='host' style='width: 1400px'></div></body></html>"
    )
    page.add_script_tag(path=str(plotly_js_path()))
    page.add_script_tag(
        type="module",
        content=module_source(CHART_JS.name)  # the module as the page gets it: prelude.js, then chart.js
        + """
window.explainChart = { geometry, figure, drawWait, nextGap, render: (values) => {
  const host = document.getElementById("host");
  host.replaceChildren();
  const model = { get: (k) => values[k], set() {}, save_changes() {}, on() {}, off() {}, widget_manager: null };
  return render({ model, el: host });
}, renderModel: (model) => { // a model whose handlers a test calls, as a widget model does with a message
  const host = document.getElementById("host");
  host.replaceChildren();
  return render({ model, el: host });
} };""",
    )
    page.wait_for_function("() => window.explainChart && window.Plotly")
    page.errors = errors
    yield page
    context.close()


def draw(page, step, curves, width: int, dark: bool = False, selected: int = -1) -> dict:
    page.evaluate(f"""() => {{
        const host = document.getElementById('host');
        host.style.width = '{width}px';
        document.body.setAttribute('style', 'margin: 0; {DARK if dark else ""}');
        document.body.style.background = '{"#111111" if dark else "#ffffff"}';
        window.explainChart.render({
        json.dumps({"step": step, "curves": curves, "selected": selected, "message": "no step yet"})
    });
    }}""")
    page.wait_for_function("() => document.querySelector('#host .explain-chart')?.dataset.drawn")
    seen = page.evaluate(CHART_PROBE, page.query_selector("#host .explain-chart"))
    seen["overflow"] = page.evaluate(
        "() => document.getElementById('host').scrollWidth - document.getElementById('host').clientWidth"
    )
    return seen


@pytest.mark.parametrize("processors", [2, 22])
def test_every_panel_has_room_and_the_chosen_token(chart_page, processors):
    step = chart_step(synthetic_step(processors))
    panels = step["panels"]
    assert len(panels) == processors + 2  # logits, each processor, probabilities: no fixed number of slots
    assert all(p["extra"] and p["extra"]["id"] == CHOSEN for p in panels)  # outside the top 8 everywhere
    curves = chart_curves([{"step": i, "prob": 0.5, "entropy_bits": 2.0, "forward_time": 0.02} for i in range(6)])
    for width in (700, 800, 1400):
        for dark in (False, True):
            seen = draw(chart_page, step, curves, width, dark, selected=5)
            bars = check_chart_layout(seen, f"{width}px {'dark' if dark else 'light'}")
            assert len(bars) == len(panels), f"{width}px: {len(bars)} panels drawn of {len(panels)}"
            for panel in bars:  # the chosen token: an orange bar, labelled with its rank, below the gap
                assert sum(1 for fill in panel["bars"] if fill in CHOSEN_FILLS) == 1
                assert any(label.startswith("#") and "\u2423chosen" in label for label in panel["labels"]), panel[
                    "labels"
                ]
                assert "\u22ee" in panel["labels"]
            assert "\u2423\"&'" in bars[0]["labels"], bars[0]["labels"]  # quotes and & as they are, no entity
            expected = "rgb(238, 238, 238)" if dark else "rgb(31, 35, 40)"
            assert bars[0]["labelFill"] == expected, f"token labels in {bars[0]['labelFill']}, theme text {expected}"
            assert seen["columns"] >= (4 if width == 1400 else 2)
            if processors == 22:
                name = f"chart-22-processors-{width}px-{'dark' if dark else 'light'}.png"
                chart_page.screenshot(full_page=True, path=str(ARTIFACTS / name))
    assert chart_page.errors == []


def test_no_step_shows_a_line_not_empty_axes(chart_page):
    seen = draw(chart_page, chart_step(None), chart_curves([]), 800)
    assert seen["drawn"] == "empty" and seen["message"] == "no step yet"
    assert chart_page.locator("#host .js-plotly-plot .subplot").count() == 0


def test_a_click_redraws_the_step_alone(chart_page):
    """A click (a message bringing another step and selection, the curves unchanged): the step's panels are drawn
    again before the page's next frame, the curves over all steps are not, the rings move to the new step's points
    on the curves, and the chart keeps its height."""
    curves = chart_curves(
        [
            {"step": i, "prob": 0.3 + (i % 7) / 10, "entropy_bits": 1 + i % 3, "forward_time": 0.01 + i / 1e4}
            for i in range(60)
        ]
    )
    first, second = synthetic_step(2), synthetic_step(2)
    second["step"], second["token_texts"] = 40, {k: f"{v}!" for k, v in second["token_texts"].items()}
    seen = chart_page.evaluate(
        """async ([first, second, curves]) => {
        const host = document.getElementById('host');
        host.style.width = '1400px';
        document.body.setAttribute('style', 'margin: 0');
        host.replaceChildren();
        const values = {step: first, curves, selected: 3, message: '', key: 'k', forkable: false};
        const handlers = {};
        const model = {get: (k) => values[k], set() {}, save_changes() {}, widget_manager: null,
                       on: (name, h) => { handlers[name] = h; }, off() {}};
        const reacted = [], react = Plotly.react;
        Plotly.react = function (div, ...rest) {
            reacted.push(div.classList.contains('explain-chart-curves') ? 'curves' : 'panels');
            return react.call(this, div, ...rest);
        };
        try {
            window.explainChart.renderModel(model);
            const chart = host.querySelector('.explain-chart');
            await new Promise((resolve) => { const look = () => chart.dataset.drawn ? resolve() : setTimeout(look, 20);
                                             look(); });
            const before = {height: chart.getBoundingClientRect().height, reacted: reacted.length};
            // one message: its values first, then each change's handler, as a widget model takes it
            values.step = second; values.selected = 40;
            handlers['change:step'](); handlers['change:selected']();
            await null; await null; // the end of that task: no animation frame has run
            const now = {step: chart.dataset.step, height: chart.getBoundingClientRect().height,
                         reacted: reacted.slice(before.reacted)};
            const plot = host.querySelector('.explain-chart-curves'), layout = plot._fullLayout;
            const at = (axis, v) => layout[axis]._offset + layout[axis].l2p(v);
            now.expected = plot.data.map((t) => [at(t.xaxis.replace('x', 'xaxis'), t.x[40]),
                                                 at(t.yaxis.replace('y', 'yaxis'), t.y[40])]);
            now.rings = [...host.querySelectorAll('.explain-chart-rings circle')]
                .map((r) => [+r.getAttribute('cx'), +r.getAttribute('cy')]);
            const panels = '.explain-chart-plot:not(.explain-chart-curves) .yaxislayer-above text';
            now.labels = [...host.querySelectorAll(panels)].map((t) => t.textContent);
            return {before, now};
        } finally {
            Plotly.react = react;
        }
    }""",
        [chart_step(first), chart_step(second), curves],
    )
    before, now = seen["before"], seen["now"]
    assert now["step"] == "40", now  # drawn within the message's task
    assert now["reacted"] == ["panels"], now["reacted"]  # the step's panels alone, not the curves
    assert any(label.endswith("!") for label in now["labels"]), now["labels"]  # the new step's tokens
    assert len(now["rings"]) == 3, now
    for (x, y), (ex, ey) in zip(now["rings"], now["expected"], strict=True):
        assert abs(x - ex) < 1 and abs(y - ey) < 1, now  # on each curve's point of step 40
    assert now["height"] == before["height"]  # the same panels: the page below does not move
    assert chart_page.errors == []


def test_a_redraw_measures_no_text_against_the_page(chart_page):
    """plotly measures a text's box in the page (in JupyterLab, a style and layout pass over the whole notebook) for
    each tick label of an axis that may hide labels past the page's edge (its default for number axes) and for
    each annotation: about 60 measurements in a click's redraw, half its time. Every axis of both figures shows its
    labels where the layout put them, and the titles are HTML over the figures, each panel's and curve's in order,
    as text."""
    step = chart_step(synthetic_step(2))
    curves = chart_curves([{"step": i, "prob": 0.5, "entropy_bits": 2.0, "forward_time": 0.02} for i in range(6)])
    draw(chart_page, step, curves, 1400, selected=5)
    seen = chart_page.evaluate("""() => [...document.querySelectorAll('#host .explain-chart-plot')].map((plot) => {
        const layout = plot._fullLayout;
        const axes = Object.keys(layout).filter((k) => /^[xy]axis\\d*$/.test(k));
        return { axes: axes.map((k) => [k, layout[k].ticklabeloverflow]), annotations: layout.annotations.length,
                 titles: [...plot.parentNode.querySelectorAll('.explain-chart-title')].map((t) => t.textContent) };
    })""")
    bars, over_curves = seen
    assert len(bars["axes"]) == 2 * len(step["panels"]) and len(over_curves["axes"]) == 6, seen
    assert all(overflow == "allow" for figure in seen for _, overflow in figure["axes"]), seen
    assert [figure["annotations"] for figure in seen] == [0, 0], seen
    assert [t.replace("\n", " ") for t in bars["titles"]] == [p["title"] for p in step["panels"]], bars["titles"]
    assert over_curves["titles"] == ["p(chosen token)", "entropy (bits)", "step time (ms)"], over_curves["titles"]
    assert chart_page.errors == []


def test_a_streaming_chart_keeps_its_budget_and_draws_the_newest_step_when_the_stream_stops(chart_page):
    """chart.js's drawWait, the policy for new data while a run streams (ms: 0 or less draws now): a draw that cost
    150 ms (a loaded machine) is followed by 19 times that, 2.85 s, while steps keep coming every 100 ms: drawing
    takes at most 5% of the page's time (the wait was capped at 1 s: 13% on such a machine). When the steps stop, the
    newest is drawn once 3 usual gaps have passed with none (300 ms here), not after the spacing; a paused stream's
    chart is never more than 3 s old; what a reader did is drawn at once. A pause of the reader's (seconds between two
    steps of a step-through) does not stretch the usual gap."""
    seen = chart_page.evaluate("""() => {
        const { drawWait, nextGap } = window.explainChart;
        let gap = 100;
        for (let i = 0; i < 30; i++) gap = nextGap(gap, 100);
        const drawn = { lastDraw: 0, cost: 150, gap };
        const streaming = [500, 1000, 2000, 2800].map((now) => drawWait({ ...drawn, urgent: false, now,
                                                                           lastData: now - 20 }));
        const stopped = [1100, 1250, 1310].map((now) => drawWait({ ...drawn, urgent: false, now, lastData: 1000 }));
        const stale = drawWait({ ...drawn, cost: 1000, urgent: false, now: 3001, lastData: 3000 });
        const urgent = drawWait({ ...drawn, urgent: true, now: 10, lastData: 5 });
        return { gap, streaming, stopped, stale, urgent, paused: nextGap(gap, 60000) };
    }""")
    assert abs(seen["gap"] - 100) < 1e-6 and seen["paused"] == seen["gap"], seen
    assert all(wait > 0 for wait in seen["streaming"]), seen  # steps coming: no draw before 2850 ms
    assert abs(seen["streaming"][-1] - 50) < 1e-6, seen  # at 2800 ms: 50 ms to go (19 x 150 ms after the last draw)
    assert seen["stopped"][0] > 0 and seen["stopped"][1] > 0 and seen["stopped"][2] <= 0, seen  # 300 ms of quiet
    assert seen["stale"] <= 0 and seen["urgent"] <= 0, seen
