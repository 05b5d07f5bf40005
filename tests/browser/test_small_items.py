"""Issue 26's small items, drawn in chromium on a bare page (the modules as the page gets them, no kernel), light and
dark, 1400 and 800 px: the selected step's ring is not clipped at the chart's edge; a one-step run's step axis shows
step 0 alone (not -0.5..1.5); the temperature panel's title shows T; the beam tree's pruned labels are readable in
the dark theme. Screenshots in test-artifacts/small-*.png.
"""

from __future__ import annotations

import json

import pytest
from browser_support import ARTIFACTS

from explain.widgets.base import HERE, module_source
from explain.widgets.elements import plotly_js_path
from explain.widgets.step_chart import chart_curves, chart_step

THEMES = {
    "light": "background: #ffffff; --jp-layout-color0: #ffffff; --jp-layout-color1: #ffffff; "
    "--jp-ui-font-color1: rgba(0,0,0,0.87); --jp-ui-font-color2: rgba(0,0,0,0.54);",
    "dark": "background: #111111; --jp-layout-color0: #111111; --jp-layout-color1: #212121; "
    "--jp-ui-font-color1: rgba(255,255,255,0.87); --jp-ui-font-color2: rgba(255,255,255,0.54); "
    "--jp-border-color1: #616161;",
}
CASES = [(theme, width) for theme in THEMES for width in (1400, 800)]


@pytest.fixture(scope="module")
def bare(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    styles = "".join((HERE / name).read_text() for name in ("widgets.css", "strategy_views.css"))
    page.set_content(f"<html><head><style>{styles}</style></head><body><div id='host'></div></body></html>")
    page.add_script_tag(path=str(plotly_js_path()))
    page.add_script_tag(content="window.explainModules = {};")
    for name in ("chart.js", "beam_tree.js"):
        page.add_script_tag(
            type="module",
            content=module_source(name).replace("export default", f"window.explainModules['{name}'] ="),
        )
    yield page
    context.close()


def show(page, name: str, values: dict, theme: str, width: int) -> None:
    page.evaluate(f"""() => {{
        document.body.setAttribute('style', 'margin: 0; {THEMES[theme]}');
        const host = document.getElementById('host');
        host.style.width = '{width}px';
        host.replaceChildren();
        const values = {json.dumps(values)};
        const model = {{ get: (k) => values[k], set() {{}}, save_changes() {{}}, on() {{}}, off() {{}} }};
        window.explainModules['{name}'].render({{ model, el: host }});
    }}""")


def step(index: int, temperature: float = 0.7) -> dict:
    top = {"ids": [1, 2, 3], "values": [3.0, 2.0, 1.0]}
    return {
        "step": index, "position": 5 + index, "token_id": 1, "token": " a", "method": "sample", "logit": 3.0,
        "rank": 1, "prob": 0.6, "raw_prob": 0.5, "entropy_bits": 1.2, "forward_time": 0.01,
        "token_texts": {"1": " a", "2": " b", "3": " c"}, "logits_top": top,
        "processors": [{"name": "temperature", "title": "temperature", "args": {"temperature": temperature},
                        "removed": 0, "kept": 3, "changed": 3, "top": top, "token_score": 3.0, "token_rank": 1}],
        "probs_top": {"ids": [1, 2, 3], "values": [0.6, 0.3, 0.1]},
    }  # fmt: skip


def wait_drawn(page) -> None:
    page.wait_for_function("() => window.Plotly && document.querySelector('#host .explain-chart')?.dataset.drawn")


@pytest.mark.parametrize(("theme", "width"), CASES)
def test_the_step_chart_small_items(bare, theme, width):
    page = bare
    page.wait_for_function("() => window.explainModules && window.explainModules['chart.js'] && window.Plotly")
    # a one-step run: the step axis is step 0 alone; the temperature panel says T
    steps = [step(0)]
    show(page, "chart.js", {"step": chart_step(steps[0]), "curves": chart_curves(steps), "selected": 0}, theme, width)
    wait_drawn(page)
    page.screenshot(path=str(ARTIFACTS / f"small-one-step-{theme}-{width}px.png"), full_page=True)
    ticks = page.evaluate(  # the three curves' step axes (the step's panels are axes 1-3)
        "() => [...document.querySelectorAll('#host g.x4tick text, #host g.x5tick text, #host g.x6tick text')]"
        ".map((t) => t.textContent)"
    )
    assert ticks == ["0", "0", "0"], ticks  # step 0 alone: not -0.5, 0.5, 1, 1.5
    titles = page.evaluate(
        "() => [...document.querySelectorAll('#host .explain-chart-title')].map((t) => t.textContent)"
    )
    assert any(t.startswith("temperature 0.7") for t in titles), titles
    page.screenshot(path=str(ARTIFACTS / f"small-one-step-{theme}-{width}px.png"), full_page=True)

    # 60 steps, the last selected: its ring is inside the chart, not clipped at its right edge
    steps = [step(i) for i in range(60)]
    show(page, "chart.js", {"step": chart_step(steps[-1]), "curves": chart_curves(steps), "selected": 59}, theme, width)
    wait_drawn(page)
    rings = page.evaluate("""() => {
        const chart = document.querySelector('#host .main-svg').getBoundingClientRect();
        const curves = document.querySelector('#host .explain-chart-curves');
        const rings = [...document.querySelectorAll('#host .explain-chart-rings circle')];
        // where plotly itself puts step 59 and each curve's value there, from its axes (px in the curves' figure)
        const layout = curves._fullLayout, at = (axis, v) => layout[axis]._offset + layout[axis].l2p(v);
        const expected = curves.data.map((trace) => [at(trace.xaxis.replace('x', 'xaxis'), trace.x[59]),
                                                     at(trace.yaxis.replace('y', 'yaxis'), trace.y[59])]);
        return {expected, centres: rings.map((r) => [+r.getAttribute('cx'), +r.getAttribute('cy')]),
                clipped: rings.map((r) => r.getBoundingClientRect())
                    .filter((b) => b.right > chart.right + 0.5 || b.left < chart.left)};
    }""")
    assert len(rings["centres"]) == 3 and rings["clipped"] == [], rings  # a ring on each curve, none cut off
    for (x, y), (ex, ey) in zip(rings["centres"], rings["expected"], strict=True):
        assert abs(x - ex) < 1 and abs(y - ey) < 1, rings  # on the curve's point of the selected step
    page.screenshot(path=str(ARTIFACTS / f"small-ring-{theme}-{width}px.png"), full_page=True)


def luminance(rgba: list[float], background: list[float]) -> float:
    r, g, b, a = rgba
    mixed = [a * c + (1 - a) * bg for c, bg in zip((r, g, b), background, strict=True)]
    lin = [(c / 255) / 12.92 if c / 255 <= 0.03928 else ((c / 255 + 0.055) / 1.055) ** 2.4 for c in mixed]
    return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]


@pytest.mark.parametrize(("theme", "width"), CASES)
def test_pruned_beam_labels_are_readable(bare, theme, width):
    page = bare
    page.wait_for_function("() => window.explainModules && window.explainModules['beam_tree.js']")
    root = {"kind": "root", "text": "The capital of France is"}
    levels = [
        [root],
        [
            {"kind": "running", "slot": 0, "text": " Paris", "token_id": 1, "score": -0.3, "parent": None},
            {"kind": "pruned", "text": " London", "token_id": 2, "score": -4.4, "parent": None},
        ],
    ]
    show(page, "beam_tree.js", {"data": {"levels": levels}, "caption": "call 1: 1 step"}, theme, width)
    page.locator("#host .explain-bt-node.pruned").first.wait_for()
    background = [255.0, 255.0, 255.0] if theme == "light" else [17.0, 17.0, 17.0]
    for part in ("explain-bt-tok", "explain-bt-score"):
        color, opacity = page.evaluate(f"""() => {{
            const t = document.querySelector('#host .explain-bt-node.pruned .{part}');
            let opacity = 1;
            for (let e = t; e; e = e.parentElement) opacity *= Number(getComputedStyle(e).opacity);
            return [getComputedStyle(t).fill, opacity];
        }}""")
        values = [float(v) for v in color[color.index("(") + 1 : -1].split(",")]
        rgba = values[:3] + [(values[3] if len(values) > 3 else 1.0) * opacity]
        light, dark = sorted([luminance(rgba, background), luminance([*background, 1.0], background)], reverse=True)
        contrast = (light + 0.05) / (dark + 0.05)
        assert contrast >= 4.5, f"{part} in {theme}: {color} x {opacity:.2f} = contrast {contrast:.1f}"
    page.locator("#host .explain-bt").screenshot(path=str(ARTIFACTS / f"small-pruned-{theme}-{width}px.png"))
