"""A notebook reopened without its kernel, in JupyterLab and chromium: explain's outputs never read "Error displaying
widget: model not found". Without saved widget state each output shows its static summary and "re-run this cell to
make it live"; with saved widget state the views draw, and say that their controls cannot work. Light and dark,
1400 and 800 px; screenshots in test-artifacts/reopen-*.png.
"""

from __future__ import annotations

import json
import time
import urllib.request

CELLS = [
    "import explain\npipe = explain.pipeline('text-generation')\nexplain.show(pipe)",
    "out = pipe('Once upon a time', max_new_tokens=4, do_sample=False)",
    "st = explain.step_through(pipe, 'The capital of France is', max_new_tokens=3, do_sample=False)\nst",
]


def shutdown_kernels(lab) -> None:
    """Shut every kernel of the server down (its REST API), as closing JupyterLab's server would."""
    headers = {"Authorization": f"token {lab['token']}"}
    with urllib.request.urlopen(urllib.request.Request(f"{lab['url']}/api/kernels", headers=headers)) as response:
        kernels = json.load(response)
    for kernel in kernels:
        url = f"{lab['url']}/api/kernels/{kernel['id']}"
        urllib.request.urlopen(urllib.request.Request(url, method="DELETE", headers=headers), timeout=30)


SAVE_STATE = ("@jupyter-widgets", "jupyterlab-manager", "plugin.jupyterlab-settings")
ERROR = "Error displaying widget"


def _run_save_and_reopen(notebook, lab, name: str) -> None:
    """Run every cell, wait for the dashboard's run to finish, save, shut the kernel down and reload the page."""
    page = notebook.page
    notebook.run_all()
    notebook.wait_cell(len(CELLS) - 1, timeout=300)
    page.wait_for_function(
        "() => /done/.test(document.querySelector('.explain-dashboard .explain-status')?.textContent || '')",
        timeout=60_000,
    )
    assert page.locator(".explain-fallback:visible").count() == 0, "the summary shows under a live view"
    page.evaluate("() => window.jupyterapp.commands.execute('docmanager:save')")
    path = lab["root"] / f"{name}.ipynb"
    deadline = time.time() + 30
    while "explain-fallback" not in path.read_text() and time.time() < deadline:
        time.sleep(0.5)
    saved = json.loads(path.read_text())
    assert any("explain-fallback" in json.dumps(c["outputs"]) for c in saved["cells"]), "the notebook was not saved"
    shutdown_kernels(lab)  # the kernel that made the widgets is gone, as after closing JupyterLab
    page.reload()
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
    notebook.wait_idle()  # JupyterLab started a new kernel: it has none of the widgets


def _check_in_both_themes_and_widths(notebook, name: str, check) -> None:
    page = notebook.page
    for width in (1400, 800):
        page.set_viewport_size({"width": width, "height": 1000})
        for theme in ("light", "dark"):
            notebook.theme(theme)
            check()
            notebook.screenshot(page.locator(".jp-Notebook").first, f"reopen-{name}-{theme}-{width}px")


def test_reopened_without_saved_state_shows_the_summary(open_notebook, lab):
    notebook = open_notebook("reopen_plain", CELLS)
    _run_save_and_reopen(notebook, lab, "reopen_plain")
    page = notebook.page
    page.locator(".explain-fallback").first.wait_for(state="visible", timeout=60_000)

    def check():
        assert page.get_by_text(ERROR).filter(visible=True).count() == 0, "JupyterLab's error shows"
        fallbacks = page.locator(".explain-fallback:visible")
        assert fallbacks.count() == 2, fallbacks.count()  # the dashboard and the step-through, each once
        for i in range(2):
            text = fallbacks.nth(i).inner_text()
            assert text.startswith("\u27f3 re-run this cell to make it live"), text[:80]
        dashboard = fallbacks.nth(0).inner_text()
        assert "Generated text (4 tokens" in dashboard and "Prompt:" in dashboard, dashboard[:400]
        box = fallbacks.nth(0).bounding_box()
        assert box["width"] <= page.viewport_size["width"], box

    _check_in_both_themes_and_widths(notebook, "plain", check)
    notebook.theme("light")  # JupyterLab keeps the theme in its settings: the next tests start light


def test_reopened_with_saved_state_says_the_controls_cannot_work(open_notebook, lab):
    settings = lab["root"].joinpath(".settings", *SAVE_STATE)
    settings.parent.mkdir(parents=True, exist_ok=True)
    settings.write_text(json.dumps({"saveState": True}))
    try:
        notebook = open_notebook("reopen_state", CELLS)
        _run_save_and_reopen(notebook, lab, "reopen_state")
    finally:
        settings.unlink()
    page = notebook.page
    page.locator(".explain-offline-note").first.wait_for(state="visible", timeout=60_000)

    def check():
        assert page.get_by_text(ERROR).filter(visible=True).count() == 0, "JupyterLab's error shows"
        notes = page.locator(".explain-offline-note:visible")
        assert notes.count() == 2, notes.count()  # the dashboard and the step-through, each once
        assert "Re-run this cell to make it live" in notes.first.inner_text()
        assert page.locator(".explain-fallback:visible").count() == 0  # the views drew: no summary besides
        button = page.locator(".explain-step-through .widget-button").first
        assert float(button.evaluate("e => getComputedStyle(e).opacity")) < 0.6  # greyed out, not live-looking
        assert page.locator(".explain-dashboard .explain-token").count() == 4  # the saved run still shows

    _check_in_both_themes_and_widths(notebook, "state", check)
    notebook.theme("light")  # JupyterLab keeps the theme in its settings: the next tests start light
