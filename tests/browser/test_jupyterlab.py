"""The dashboard in a real JupyterLab and in Notebook 7, driven by headless Chromium through playwright.

One notebook, run top to bottom on the embedded model: a live dashboard that must change while the cell
generating 60 tokens is still running, then a step-through whose "Next token" adds exactly one token, on a
prompt that is an HTML injection attempt (it must show as text and run nothing). Screenshots go to
test-artifacts/. The server, the browser and the skips are in conftest.py.
"""

from __future__ import annotations

import re
import time

import pytest
from browser_support import ARTIFACTS, FRONT_ENDS

EVIL = "<img src=x onerror=alert(1)>"

CELLS = [
    "import explain\npipe = explain.pipeline('text-generation')",
    "explain.show(pipe)",
    "out = pipe([{'role': 'user', 'content': 'Write a story about a cat'}], max_new_tokens=60, do_sample=False)\n"
    "print('FINAL:' + out[0]['generated_text'][-1]['content'])",
    "import torch\ntorch.manual_seed(1)  # its first two tokens are line breaks: they must be clickable too\n"
    f"st = explain.step_through(pipe, {EVIL!r}, max_new_tokens=30, do_sample=True, temperature=0.8, top_k=20, "
    "top_p=0.9)\nst",
]


@pytest.fixture(params=list(FRONT_ENDS))
def page(open_notebook, request):
    front_end = request.param
    notebook = open_notebook(f"live-{front_end}", CELLS, front_end=front_end)
    page = notebook.page
    page.dialogs = notebook.dialogs
    page.front_end = front_end
    return page


def _cell(page, index):
    return page.locator(".jp-Notebook .jp-Cell").nth(index)


def _dashboard_reading(page) -> tuple[int, str]:
    dashboard = page.locator(".explain-dashboard").first
    count = dashboard.locator(".explain-gen-count").first.inner_text(timeout=5_000)
    text = dashboard.locator(".explain-gen-text").first.inner_text(timeout=5_000)
    return int(count or 0), text


# Records, inside the page, every change of the dashboard's step count and text together with whether cell 2 is
# still running ("[*]" prompt). Polling from Python missed the run on a busy machine: each poll is several round
# trips, and 60 tokens take a few seconds.
WATCH = """() => {
    window.explainSeen = [];
    const read = () => {
        const dashboard = document.querySelector('.explain-dashboard');
        const cell = document.querySelectorAll('.jp-Notebook .jp-Cell')[2];
        if (!dashboard || !cell) return;
        const count = parseInt(dashboard.querySelector('.explain-gen-count')?.textContent || '0') || 0;
        const text = dashboard.querySelector('.explain-gen-text')?.textContent || '';
        const busy = /\\*/.test(cell.querySelector('.jp-InputPrompt')?.textContent || '');
        const last = window.explainSeen[window.explainSeen.length - 1];
        if (!last || last.count !== count || last.text !== text || last.busy !== busy)
            window.explainSeen.push({count, text, busy});
    };
    new MutationObserver(read).observe(document.body, {subtree: true, childList: true, characterData: true});
}"""
CELL2_DONE = (
    "() => { const c = document.querySelectorAll('.jp-Notebook .jp-Cell')[2]; return c && "
    "!/\\*/.test(c.querySelector('.jp-InputPrompt').textContent) && "
    "c.querySelector('.jp-OutputArea-output') !== null; }"
)


def test_live_dashboard_then_step_through(page):
    started = time.time()
    page.evaluate(WATCH)
    page.evaluate("() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); }")  # not awaited

    # -- live: the step count and the text change while cell 2 (60 tokens) is still running ----------------
    try:
        page.wait_for_function("() => window.explainSeen.some(r => r.busy && r.count >= 10)", timeout=180_000)
        # the viewport, not the element: the run may end (and its output be redrawn) while an element shot waits
        page.screenshot(path=str(ARTIFACTS / f"{page.front_end}-live-running.png"))
    except Exception as error:  # noqa: BLE001 - the assertions below say what was seen
        print(f"no screenshot of the running dashboard: {error}")
    page.wait_for_function(CELL2_DONE, timeout=180_000)
    seen = [(r["count"], r["text"]) for r in page.evaluate("() => window.explainSeen") if r["busy"] and r["count"]]
    counts = sorted({c for c, _ in seen})
    assert len(counts) >= 3, f"the dashboard did not update while the cell ran: counts seen while busy {counts}"
    assert len({t for _, t in seen}) >= 3, "the generated text did not grow while the cell ran"
    assert counts[0] < 60, f"the first update came only at {counts[0]} tokens"

    # -- the final text and the step chart are there ----------------------------------------------------
    final = _cell(page, 2).locator(".jp-OutputArea-output").first.inner_text()
    assert "FINAL:" in final, final
    expected = final.split("FINAL:", 1)[1].strip()
    page.wait_for_function(
        "() => /done/.test(document.querySelector('.explain-dashboard .explain-status')?.textContent || '')",
        timeout=30_000,
    )
    count, text = _dashboard_reading(page)
    assert 1 <= count <= 60
    assert " ".join(expected.split()) in " ".join(text.split()), (expected, text)
    dashboard = page.locator(".explain-dashboard").first
    chart = dashboard.locator(".js-plotly-plot").first
    chart.wait_for(timeout=30_000)
    assert chart.locator(".bars path").count() > 0, "the step chart has no bars"
    assert "probabilities" in dashboard.locator(".explain-chart").first.inner_text()  # a panel's title
    assert dashboard.locator(".explain-chip").count() > 10, "no prompt token chips"
    assert dashboard.locator(".explain-tl-row.explain-status-done").count() == 8, "not every stage is done"
    dashboard.screenshot(path=str(ARTIFACTS / f"{page.front_end}-live-done.png"))

    # -- step-through: one click on Next token adds exactly one token --------------------------------------
    controller = page.locator(".explain-step-through")
    controller.wait_for(timeout=120_000)
    tokens = controller.locator(".explain-gen-text .explain-token")
    next_button = controller.get_by_role("button", name="Next token")
    next_button.wait_for(timeout=30_000)
    page.wait_for_function(
        "() => !/\\*/.test(document.querySelectorAll('.jp-Notebook .jp-Cell')[3]"
        ".querySelector('.jp-InputPrompt').textContent)",
        timeout=60_000,
    )
    before = tokens.count()
    next_button.click()
    page.wait_for_function(
        f"() => document.querySelectorAll('.explain-step-through .explain-gen-text .explain-token').length > {before}",
        timeout=30_000,
    )
    time.sleep(1.0)  # anything more would have arrived by now
    assert tokens.count() == before + 1
    next_button.click()
    page.wait_for_function(
        f"() => document.querySelectorAll('.explain-step-through .explain-gen-text "
        f".explain-token').length > {before + 1}",
        timeout=30_000,
    )
    time.sleep(0.5)
    assert tokens.count() == before + 2
    for _ in range(3):
        count = tokens.count()
        next_button.click()
        page.wait_for_function(
            f"() => document.querySelectorAll('.explain-step-through .explain-gen-text "
            f".explain-token').length > {count}",
            timeout=30_000,
        )
    assert "explain-nl" in (tokens.nth(1).get_attribute("class") or ""), tokens.nth(1).inner_text()
    tokens.nth(1).click()  # a line break, drawn with a visible mark
    page.wait_for_function(
        "() => /Step 1<\\/b>|Step 1 /.test(document.querySelector('.explain-step-through').innerHTML)", timeout=30_000
    )
    controller.get_by_role("button", name=re.compile("What if")).click()
    controller.locator(".explain-chart").first.scroll_into_view_if_needed()  # a chart out of sight waits to redraw
    page.wait_for_function(
        "() => /what if\\?/.test(document.querySelector('.explain-step-through .explain-chart')?.textContent || '')",
        timeout=60_000,
    )
    controller.screenshot(path=str(ARTIFACTS / f"{page.front_end}-step-through.png"))

    # -- the prompt was an HTML injection attempt: it shows as text and ran nothing -------------------------
    assert page.dialogs == [], f"a dialog fired: {page.dialogs}"
    assert page.locator("img[src='x']").count() == 0
    assert controller.get_by_text(EVIL, exact=False).first.is_visible()
    assert EVIL in controller.locator(".explain-gen-text").first.inner_text()
    print(f"browser test: {time.time() - started:.0f} s in the notebook")
