"""Every drawn view derives the one widget base (explain/widgets/base.py) and starts with prelude.js, the strategy
panels included: made to give up on every model (anywidget's 2 s limit, as on a busy page), a sampling tree shown
before its call still fills in when the call runs (heal), light and dark, 1400 and 800 px. Before the base, the
panels subclassed anywidget.AnyWidget directly and stayed at "no sequence yet". Screenshots in
test-artifacts/base-*.png.
"""

from __future__ import annotations

# anywidget gives a model 2 s to load its module, then drops every message to it (tests/browser/test_dashboard.py)
ANYWIDGET_GIVES_UP = """
const timeout = AbortSignal.timeout.bind(AbortSignal);
AbortSignal.timeout = (ms) => ms === 2000 ? timeout(1) : timeout(ms);
"""
GAVE_UP = "[anywidget] Failed to initialize model."
CELLS = [
    "import torch, explain\nfrom explain.widgets import SamplingTree\npipe = explain.pipeline('text-generation')",
    "explain.show(pipe)",  # the dashboard's chart loads plotly.js: a long task in the page, as in real use
    "SamplingTree(pipe)",
    "torch.manual_seed(0)\nout = pipe('Once upon a time', max_new_tokens=6, num_return_sequences=3, do_sample=True)",
]


def test_a_strategy_panel_recovers_when_anywidget_gave_up(open_notebook):
    notebook = open_notebook("widget-base", CELLS, init_script=ANYWIDGET_GIVES_UP)
    page = notebook.page
    notebook.run_all()
    notebook.wait_cell(len(CELLS) - 1, timeout=300)
    tree = notebook.cell(2).locator(".explain-st").first
    page.wait_for_function(
        "() => document.querySelectorAll('.jp-Notebook .jp-Cell')[2].querySelectorAll('.explain-st-badge').length >= 3",
        timeout=60_000,
    )
    assert "3 sampled sequences" in tree.inner_text()
    assert GAVE_UP in notebook.errors, "anywidget did not give up on the model: the test tested nothing"
    for width in (1400, 800):
        page.set_viewport_size({"width": width, "height": 1000})
        for theme in ("light", "dark"):
            notebook.theme(theme)
            assert tree.locator(".explain-st-split").count() >= 1
            notebook.screenshot(tree, f"base-sampling-tree-{theme}-{width}px")
    notebook.theme("light")
