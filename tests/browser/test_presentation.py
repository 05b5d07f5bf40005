"""Presentation mode in JupyterLab and chromium: explain.presentation(True) makes every view of the dashboard legible
on a projector (body text at least 18 px, the step chart's labels and the beam tree scaled with it, the controls
too), nothing runs past the output, light and dark, 1400 and 800 px; the dashboard's button turns it off again.
Screenshots in test-artifacts/presentation-*.png.
"""

from __future__ import annotations

CELLS = [
    "import explain, explain.widgets\npipe = explain.pipeline('text-generation')\n"
    "out = pipe('The capital of France is', max_new_tokens=4, do_sample=False)\n"
    "explain.widgets.Dashboard(pipe.trace, runs={1})",
    "out = pipe('The capital of France is', max_new_tokens=4, num_beams=2, do_sample=False)\n"
    "explain.widgets.BeamTree(pipe)",
    "explain.presentation(True)",
]
SIZES = """() => {
  const d = document.querySelector('.explain-dashboard');
  const px = (selector) => {
    const e = d.querySelector(selector);
    return e ? parseFloat(getComputedStyle(e).fontSize) : null;
  };
  const tick = d.querySelector('.explain-chart .ytick text');
  const svg = document.querySelector('.explain-bt-svg');
  return { text: px('.explain-gen-text'), body: px('.explain-header'), muted: px('.explain-muted'),
    caption: px('.explain-caption'), timeline: px('.explain-tl-stage'), button: px('.explain-present-button'),
    tick: tick ? parseFloat(tick.style.fontSize) : null,
    tree: svg ? svg.getBoundingClientRect().width / Number(svg.getAttribute('width')) : null,
    overflow: d.scrollWidth - d.clientWidth,
    wide: [...d.querySelectorAll('*')]
      .filter((e) => e.getBoundingClientRect().right > d.getBoundingClientRect().right + 2)
      .slice(0, 4).map((e) => `${e.tagName}.${e.className && e.className.baseVal === undefined ? e.className : ''}`) };
}"""


def test_presentation_mode_scales_every_view(open_notebook):
    notebook = open_notebook("presentation", CELLS, height=1000)
    page = notebook.page
    for index in (0, 1):
        notebook.run_cell(index)
        notebook.wait_cell(index, timeout=300)
    page.wait_for_function(
        "() => /done/.test(document.querySelector('.explain-dashboard .explain-status')?.textContent || '')",
        timeout=60_000,
    )
    page.locator(".explain-bt-svg").first.wait_for(timeout=60_000)
    page.locator(".explain-dashboard .explain-chart .ytick text").first.wait_for(timeout=60_000)
    before = page.evaluate(SIZES)
    assert before["body"] < 18 and before["tree"] == 1, before  # without it: today's sizes

    notebook.run_cell(2)
    notebook.wait_cell(2)
    page.wait_for_function("() => document.body.dataset.explainPresentation === 'true'", timeout=30_000)
    for width in (1400, 800):
        page.set_viewport_size({"width": width, "height": 1000})
        for theme in ("light", "dark"):
            notebook.theme(theme)
            page.locator(".explain-dashboard .explain-chart").first.scroll_into_view_if_needed()  # it draws on screen
            page.wait_for_function(  # redrawn for this width and scale
                "() => { const c = document.querySelector('.explain-dashboard .explain-chart');"
                " const svg = c?.querySelector('.svg-container');"
                " return svg && svg.getBoundingClientRect().width <= c.clientWidth + 1"
                " && parseFloat(c.querySelector('.ytick text')?.style.fontSize) >= 18; }",
                timeout=30_000,
            )
            sizes = page.evaluate(SIZES)
            where = f"{theme}, {width} px: {sizes}"
            for name in ("text", "body", "muted", "caption", "timeline", "button", "tick"):
                assert sizes[name] >= 18, where  # legible from the back of a room
            assert abs(sizes["tree"] - 1.5) < 0.01, where  # the beam tree scaled with the text, boxes and all
            assert sizes["overflow"] <= 2, where  # nothing runs past the output
            dashboard = page.locator(".explain-dashboard").first
            notebook.screenshot(dashboard, f"presentation-{theme}-{width}px")
            notebook.screenshot(dashboard.locator(".explain-chart").first, f"presentation-chart-{theme}-{width}px")
            notebook.screenshot(notebook.cell(1).locator(".explain-bt").first, f"presentation-beams-{theme}-{width}px")

    page.locator(".explain-present-button").first.click()  # the dashboard's switch turns it off
    page.wait_for_function("() => document.body.dataset.explainPresentation === 'false'", timeout=30_000)
    after = page.evaluate(SIZES)
    assert after["body"] == before["body"] and after["tree"] == 1, after
    notebook.theme("light")  # JupyterLab keeps the theme in its settings: the next tests start light
