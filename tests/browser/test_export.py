"""explain.export: one HTML file with the dashboard's views, opened in chromium from disk with the network cut.

The page must draw every view with nothing but itself (every request other than the file itself is refused and
none may even be attempted), be interactive (a click on a token shows its step; the picker shows a forced branch;
the theme follows light and dark), and show a hostile trace's markup as text. Screenshots go to test-artifacts/.
"""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
import torch
from browser_support import ARTIFACTS, CHART_PROBE, CHOSEN_FILLS, ROOT, check_chart_layout, rgb

import explain
from explain.trace import Trace

EVIL = ("<img src=x onerror=alert(1)>", "<svg onload=alert(2)>", "<script>alert(3)</script>")


@pytest.fixture(scope="module")
def traces(embedded_pipe, tmp_path_factory):
    """A saved trace with a sampled chat call and a forced branch, its page, and a hostile copy and its page."""
    folder = tmp_path_factory.mktemp("export")
    pipe = embedded_pipe
    torch.manual_seed(0)
    pipe(
        [{"role": "user", "content": "Write a story about a cat"}],
        max_new_tokens=16,
        do_sample=True,
        temperature=1.8,
        top_k=80,
        top_p=0.98,
    )
    generation = pipe.start("The capital of France is", max_new_tokens=8, do_sample=False, keep_logits=True)
    generation.run()
    branch = generation.force(2, generation.steps[2]["probs_top"]["ids"][1])
    branch.run()
    pipe.finish(branch)
    prompt_tokens = len(pipe.trace.last("tokenization", "encode").data["ids"])  # the greedy call's prompt
    path = folder / "run.json"
    pipe.trace.save(path)
    page = explain.export(pipe, folder / "run.html")
    hostile = Trace.load(path)
    for event in hostile.events:
        d = event.data
        if event.kind == "step":
            d.update(
                step=EVIL[2],
                rank=EVIL[1],
                prob=EVIL[0],
                position=EVIL[0],
                entropy_bits=EVIL[1],
                token=EVIL[0],
                text=EVIL[0],
                stop_reason=EVIL[2],
            )
            d["token_texts"] = {k: EVIL[1] for k in d.get("token_texts", {})}
        elif event.kind == "encode":
            d.update(count=EVIL[0], text=EVIL[2] + d.get("text", ""))
        elif event.kind == "lookup":
            d.update(model_used=EVIL[2])
    hostile_page = explain.export(hostile, folder / "hostile.html")
    return {
        "trace": path,
        "page": page,
        "hostile": hostile_page,
        "run": pipe.trace.run,
        "folder": folder,
        "prompt_tokens": prompt_tokens,
    }


def _open(browser, path, width=1400, dark=False):
    context = browser.new_context(viewport={"width": width, "height": 1400}, color_scheme="dark" if dark else "light")
    requests, refused, dialogs, errors = [], [], [], []

    def route(route):
        url = route.request.url
        if url.startswith("file:"):
            route.continue_()
        else:
            refused.append(url)
            route.abort()

    context.route("**/*", route)
    page = context.new_page()
    page.on("request", lambda request: requests.append(request.url))
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.goto(path.as_uri() if hasattr(path, "as_uri") else f"file://{path}")
    page.wait_for_selector("body[data-explain-ready='true']", timeout=30_000)
    page.wait_for_function("() => document.querySelector('.explain-chart')?.dataset.drawn > 0", timeout=30_000)
    page.seen = {"requests": requests, "refused": refused, "dialogs": dialogs, "errors": errors}
    return context, page


def test_the_page_works_alone_and_offline(browser, traces):
    from pathlib import Path

    context, page = _open(browser, Path(traces["page"]))
    try:
        seen = page.seen
        assert seen["refused"] == [], f"the page asked the network for {seen['refused']}"
        assert all(url.startswith(("file:", "blob:", "data:")) for url in seen["requests"]), seen["requests"]
        assert seen["errors"] == [] and seen["dialogs"] == [], (seen["errors"], seen["dialogs"])
        # every view drew: timeline, prompt chips, text, caption, chart (as in the notebook)
        assert page.locator(".explain-tl-row.explain-status-done").count() == 8
        assert page.locator(".explain-chip").count() == traces["prompt_tokens"] >= 5  # one chip per prompt token
        tokens = page.locator(".explain-gen-text .explain-token")
        assert tokens.count() == 8  # the newest call first: the greedy one, its original branch
        chart = page.locator(".explain-chart").first
        bars = check_chart_layout(chart.evaluate(CHART_PROBE), "exported page")
        assert len(bars) >= 2 and all(sum(f in CHOSEN_FILLS for f in p["bars"]) == 1 for p in bars)
        page.screenshot(path=str(ARTIFACTS / "export-light.png"), full_page=True)
        # interactive: a click shows that token's step, in the caption and the chart
        tokens.nth(3).click()
        page.wait_for_function("() => document.querySelector('.explain-chart').dataset.step === '3'", timeout=10_000)
        assert "Step 3" in page.locator(".explain-step-caption").first.inner_text()
        # the picker: the forced branch of the same call, then the sampled call
        options = page.locator(".explain-export-picker option").all_inner_texts()
        assert options[0] == f"call {traces['run']}" and any("branch 1: forced at step 2" in o for o in options)
        page.select_option(".explain-export-picker", label=next(o for o in options if "branch 1" in o))
        page.wait_for_function("() => document.querySelector('.explain-gen-text .explain-token.forced')")
        page.select_option(".explain-export-picker", label=f"call {traces['run'] - 1}")
        page.wait_for_function("() => document.querySelectorAll('.explain-gen-text .explain-token').length === 16")
        # the theme: dark on request, and the chart's text follows
        page.locator(".explain-export-theme").click()  # auto -> light
        page.locator(".explain-export-theme").click()  # light -> dark
        page.wait_for_function("() => document.body.dataset.jpThemeLight === 'false'")
        page.wait_for_timeout(500)
        fill = chart.evaluate(CHART_PROBE)["subplots"][0]["labelFill"]
        assert rgb(fill) == (255, 255, 255), fill
        page.screenshot(path=str(ARTIFACTS / "export-dark.png"), full_page=True)
        assert seen["refused"] == [] and seen["errors"] == []
    finally:
        context.close()


def test_the_page_follows_a_dark_system_and_narrow_screens(browser, traces):
    from pathlib import Path

    context, page = _open(browser, Path(traces["page"]), width=700, dark=True)
    try:
        assert page.evaluate("() => document.body.dataset.jpThemeLight") == "false"
        seen = page.locator(".explain-chart").first.evaluate(CHART_PROBE)
        check_chart_layout(seen, "exported page at 700 px")
        assert page.evaluate("() => document.documentElement.scrollWidth <= window.innerWidth")
        page.screenshot(path=str(ARTIFACTS / "export-dark-700px.png"), full_page=True)
    finally:
        context.close()


def test_a_hostile_trace_exports_as_text(browser, traces):
    from pathlib import Path

    html = Path(traces["hostile"]).read_text()
    for markup in EVIL:
        assert markup not in html, f"{markup} is in the page's source as markup"
    context, page = _open(browser, Path(traces["hostile"]))
    try:
        assert page.seen["dialogs"] == [], page.seen["dialogs"]
        assert page.locator("img[src='x'], svg[onload]").count() == 0
        assert EVIL[0] in page.locator(".explain-gen-text").first.inner_text()  # the markup, as text
        assert EVIL[2] in page.locator(".explain-header").first.inner_text()
        page.locator(".explain-gen-text .explain-token").nth(1).click()
        page.wait_for_timeout(300)
        caption = page.locator(".explain-step-caption").first.inner_text()
        assert EVIL[2] in caption and EVIL[1] in caption
        assert page.seen["refused"] == [] and page.seen["dialogs"] == []
        page.screenshot(path=str(ARTIFACTS / "export-hostile.png"), full_page=True)
    finally:
        context.close()


def test_the_command_line_writes_the_page(traces, tmp_path):
    out = tmp_path / "cli.html"
    done = subprocess.run(
        [sys.executable, "-m", "explain", "export", str(traces["trace"]), str(out)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert re.match(rf"wrote {re.escape(str(out))} \(\d+\.\d MiB\)", done.stdout)
    assert "explain-data" in out.read_text()
    missing = subprocess.run(
        [sys.executable, "-m", "explain", "export", str(tmp_path / "none.json"), str(out)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1 and "no trace file" in missing.stderr
    folder = subprocess.run(
        [sys.executable, "-m", "explain", "export", str(traces["trace"]), str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert folder.returncode == 2 and "is a folder" in folder.stderr
