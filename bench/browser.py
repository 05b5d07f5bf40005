"""`python -m bench.browser`: the live dashboard's cost in a real browser, and its time to first display.

JupyterLab (this machine's) in Debian's chromium through playwright, one kernel running the embedded model. The
in-process benchmark (`python -m bench`) measures the widget sink with no front end; here the page really draws
what the kernel sends, on the same machine, as a teacher's laptop does. Rounds alternate the same call (greedy, N
new tokens, EOS held off with min_new_tokens) with no dashboard, and with a dashboard displayed and on screen.
For each call: its wall-clock tokens/s (from its trace's end event: every step, the dashboard's share included),
the websocket frames and bytes the page received, and the time the page spent drawing the step chart. The cost is
1 - (tokens/s with) / (tokens/s without), from the medians; target at most 5%.

Time to first display: from the moment a cell is sent to the moment its view is on the page (the dashboard's
stage timeline drawn), for explain.show in a fresh kernel (imports included), a step-through, and explain.show
again once warm; target under 2 s. Loading is visible: from the moment `pipe = explain.pipeline(...)` is sent (explain
imported, nothing loaded yet) to its loading stages on the page; target at most 1 s.

Scale (`--scale STEPS`, default 1000; 0 skips it): a run of STEPS steps, made from a real sampled call of the
embedded model (REAL_STEPS of them) whose step events are repeated with new step numbers (running 1,000 real steps
takes minutes here).
Measured: a click on a token of the replayed run to its step drawn in the step chart (the kernel's round trip and
the chart's draw, median and worst of the clicks; target at most 100 ms); the live dashboard fed the run's events at
LIVE_RATE steps a second, several times the embedded model's speed here, and how far the page fell behind (worst
lag in seconds, and the time from the last step to the page showing it); the run's exported page opened in
chromium to its chart drawn (target at most 3 s), and a click there.

    python -m bench.browser [--tokens 64] [--rounds 3] [--scale 1000] [--explain-path OTHER] [--out bench/results]

Writes <date>-<machine>-browser.json and .md, and browser-latest.md. `--explain-path` measures another checkout
of explain (the kernel imports it first), to compare before and after a change.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from typing import Any

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(REPO, "bench", "results")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
PROMPT = "The history of the printing press begins"
REAL_STEPS = 32  # the real sampled steps the scale run repeats (a click opens one the page has not drawn yet)
TARGETS = {"cost_percent": 5.0, "first_display_s": 2.0, "loading_paint_s": 1.0, "click_ms": 100.0, "export_open_s": 3.0}
LIVE_RATE = 20.0  # steps a second the live dashboard is fed in the scale section (the embedded model: ~2-5 here)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def jupyter_lab(root: str, explain_path: str = REPO, settings: dict | None = None, start_timeout: float = 90):
    """A JupyterLab server on a free local port, serving `root`, its kernels importing explain from explain_path,
    every cell rendered (no virtual scrolling) and no news checks. Yields {"url", "token", "root"}; the server and
    its kernels are stopped on exit. tests/browser/conftest.py's `lab` is this server."""
    settings_dir = os.path.join(root, ".settings")
    for name, values in {
        "@jupyterlab/apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},
        "@jupyterlab/notebook-extension/tracker": {"windowingMode": "none"},
        **(settings or {}),
    }.items():
        folder, plugin = os.path.join(settings_dir, *name.split("/")[:-1]), name.split("/")[-1]
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, f"{plugin}.jupyterlab-settings"), "w") as f:
            json.dump(values, f)
    port, token = _free_port(), secrets.token_hex(16)
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "JUPYTERLAB_SETTINGS_DIR": settings_dir,
        "JUPYTERLAB_WORKSPACES_DIR": os.path.join(root, ".workspaces"),
        "PYTHONPATH": explain_path,
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
    }
    log = open(os.path.join(root, "jupyter.log"), "w")
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jupyter",
            "lab",
            "--no-browser",
            f"--port={port}",
            "--ip=127.0.0.1",
            f"--ServerApp.token={token}",
            f"--ServerApp.root_dir={root}",
            "--LabApp.expose_app_in_browser=True",
            "--JupyterNotebookApp.expose_app_in_browser=True",
            "--ServerApp.disable_check_xsrf=True",
        ]
        + (["--allow-root"] if os.geteuid() == 0 else []),
        cwd=root,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.time() + start_timeout
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status?token={token}", timeout=2)
                break
            except OSError:
                if server.poll() is not None or time.time() > deadline:
                    with open(os.path.join(root, "jupyter.log")) as f:
                        raise RuntimeError("JupyterLab did not start:\n" + f.read()[-3000:]) from None
                time.sleep(0.3)
        yield {"url": f"http://127.0.0.1:{port}", "token": token, "root": root}
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)  # the server's own process group: it and its kernels
            try:
                server.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
        log.close()


IMPORTS = """import json, statistics, time, torch, explain
from IPython.display import display
torch.set_num_threads(1)"""
LOAD = "pipe = explain.pipeline('text-generation')"  # its loading stages' first paint is measured
SETUP = f"""PROMPT = {PROMPT!r}

def call(n):
    pipe(PROMPT, max_new_tokens=n, min_new_tokens=n, do_sample=False)
    end = pipe.trace.last('generation', 'end')
    print('RESULT ' + json.dumps({{'tokens_per_s': end.data['tokens_per_s'], 'tokens': end.data['new_tokens'],
                                   'forward_tokens_per_s': end.data['decode_tokens_per_s']}}))

call(8)  # warm-up: every code path once"""
# the cells before the calls, by what they are for: the bench runs them by name
FIRST_CELLS = {
    "imports": IMPORTS,
    "load": LOAD,
    "setup": SETUP,
    "show, fresh kernel": "explain.show(pipe)",
    "step_through": "st = explain.step_through(pipe, PROMPT, max_new_tokens=20)\nst",
    "show, warm": "explain.show(pipe)",
    "close": "for ref in list(explain.widgets._shown.values()):\n    ref() is not None and ref().close()\nst.close()",
}
CELL = {name: index for index, name in enumerate(FIRST_CELLS)}


def _cells(tokens: int, rounds: int) -> tuple[list[str], list[tuple[str, int]]]:
    cells = list(FIRST_CELLS.values())
    plan = []
    # the previous call's dashboard closed either way: a "with" call has exactly one live dashboard (two "with" calls
    # in a row left the first one following the pipeline: two dashboards, then one in the "without" call after them)
    close = "try:\n    view.close()\nexcept NameError:\n    pass\n"
    for round_ in range(rounds):
        for with_view in (False, True) if round_ % 2 == 0 else (True, False):  # the order alternates
            if with_view:
                cells.append(f"{close}view = explain.widgets.Dashboard(pipe)\ndisplay(view)\ncall({tokens})")
            else:
                cells.append(f"{close}call({tokens})")
            plan.append(("with" if with_view else "without", len(cells) - 1))
    return cells, plan


def _notebook(cells) -> dict:
    return {
        "nbformat": 4,
        "nbformat_minor": 5,
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
        "cells": [
            {
                "cell_type": "code",
                "id": f"cell{i}",
                "metadata": {},
                "execution_count": None,
                "outputs": [],
                "source": source,
            }
            for i, source in enumerate(cells)
        ],
    }


# every draw of the step charts in a cell during its call, summed over its views: the end of a call replaces the
# output's view (widgets/static.py's _refresh_displays), so the view on the page then has drawn once, whatever the
# call's own view drew while it streamed
COUNT_DRAWS = """(index) => {
    if (window.__benchObserver) window.__benchObserver.disconnect(); // the last call's, if it was a "without" call
    const cell = document.querySelectorAll('.jp-Notebook .jp-Cell')[index];
    const tally = window.__benchDraws = {draws: 0, ms: 0};
    window.__benchObserver = new MutationObserver((records) => {
        for (const r of records) {
            if (r.attributeName === 'data-draws') tally.draws += 1;
            else tally.ms += (+r.target.getAttribute('data-draw-ms') || 0) - (+r.oldValue || 0);
        }
    });
    window.__benchObserver.observe(cell, {subtree: true, attributes: true, attributeOldValue: true,
                                          attributeFilter: ['data-draws', 'data-draw-ms']});
}"""

RUN_AND_WATCH = """([index, selector, limit]) => new Promise((resolve) => {
    const app = window.jupyterapp, notebook = app.shell.currentWidget.content;
    const started = performance.now();
    const done = (ms) => { observer.disconnect(); resolve(ms); };
    const observer = new MutationObserver(() => {
        const cell = document.querySelectorAll('.jp-Notebook .jp-Cell')[index];
        if (cell && cell.querySelector(selector)) done(performance.now() - started);
    });
    observer.observe(document.body, {subtree: true, childList: true});
    if (limit) setTimeout(() => done(null), limit);  // never shown (a checkout without that view)
    notebook.activeCellIndex = index;
    app.commands.execute('notebook:run-cell');
})"""


def start_cell(page, index: int) -> None:
    """Run the notebook's cell `index` as a reader would (its run-cell command); returns at once."""
    page.evaluate(
        f"() => {{ const nb = window.jupyterapp.shell.currentWidget.content; nb.activeCellIndex = {index}; "
        f"window.jupyterapp.commands.execute('notebook:run-cell'); }}"
    )


def wait_cell(page, index: int, timeout: float = 900) -> None:
    """Until cell `index` has run (its prompt shows a number)."""
    page.wait_for_function(
        f"() => {{ const c = document.querySelectorAll('.jp-Notebook .jp-Cell')[{index}]; "
        f"return c && /\\[\\d+\\]/.test(c.querySelector('.jp-InputPrompt').textContent); }}",
        timeout=timeout * 1000,
        polling=100,  # not every frame: a page polled each frame draws a frame each vsync (its CSS animations
        # with it), which no reader's page does: about 0.3 s of the page's CPU a call here
    )


def measure(args) -> dict:
    from playwright.sync_api import sync_playwright

    cells, plan = _cells(args.tokens, args.rounds)
    root = tempfile.mkdtemp(prefix="explain-bench-browser-")
    with open(os.path.join(root, "bench.ipynb"), "w") as f:
        json.dump(_notebook(cells), f)
    frames = {"count": 0, "bytes": 0}

    def on_socket(ws):
        def received(payload):
            frames["count"] += 1
            frames["bytes"] += len(payload)

        ws.on("framereceived", received)

    results: dict[str, Any] = {"first_display_ms": {}, "calls": []}
    try:
        with jupyter_lab(root, args.explain_path) as lab, sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
            page = browser.new_page(viewport={"width": 1400, "height": 2200})
            page.on("websocket", on_socket)
            page.goto(f"{lab['url']}/lab/workspaces/bench/tree/bench.ipynb?reset&token={lab['token']}")
            page.wait_for_function(
                "() => window.jupyterapp?.shell?.currentWidget?.sessionContext?.session?.kernel?.status === 'idle'",
                timeout=120_000,
            )

            def run(index: int) -> None:
                start_cell(page, index)
                wait_cell(page, index)

            def output(index: int) -> str:
                return page.locator(".jp-Notebook .jp-Cell").nth(index).locator(".jp-OutputArea").first.inner_text()

            run(CELL["imports"])
            # explain.pipeline(...) in a notebook: cell sent -> its loading stages on the page (target within 1 s)
            results["loading_paint_ms"] = page.evaluate(
                RUN_AND_WATCH, [CELL["load"], ".explain-loading-stage", 120_000]
            )
            wait_cell(page, CELL["load"])
            run(CELL["setup"])
            for name in ("show, fresh kernel", "step_through", "show, warm"):
                page.locator(".jp-Notebook .jp-Cell").nth(CELL[name]).scroll_into_view_if_needed()
                results["first_display_ms"][name] = page.evaluate(RUN_AND_WATCH, [CELL[name], ".explain-tl-row", 0])
                wait_cell(page, CELL[name])
            run(CELL["close"])
            for kind, index in plan:
                page.locator(".jp-Notebook .jp-Cell").nth(index).scroll_into_view_if_needed()
                frames.update(count=0, bytes=0)
                page.evaluate(COUNT_DRAWS, index)
                run(index)
                found = re.search(r"RESULT (\{.*\})", output(index))
                if not found:
                    raise RuntimeError(f"cell {index} printed no result:\n{output(index)[-2000:]}")
                record = {
                    "kind": kind,
                    **json.loads(found.group(1)),
                    "frames": frames["count"],
                    "frame_bytes": frames["bytes"],
                }
                charts = page.locator(".jp-Notebook .jp-Cell").nth(index).locator(".explain-chart")
                if kind == "with" and charts.count():  # (a checkout from before chart.js has no .explain-chart)
                    data = page.evaluate("() => { window.__benchObserver.disconnect(); return window.__benchDraws; }")
                    visible = charts.first.evaluate("(c) => c.getBoundingClientRect().height > 0")
                    record.update(chart_draws=data["draws"], chart_draw_ms=data["ms"], chart_visible=visible)
                results["calls"].append(record)
            browser.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return results


SCALE_SETUP = """import copy, json, time, torch, explain
from IPython.display import display
from explain.trace import Trace
torch.set_num_threads(1)
pipe = explain.pipeline('text-generation')
torch.manual_seed(0)
REAL = {real}
pipe({prompt!r}, max_new_tokens=REAL, min_new_tokens=REAL, do_sample=True, top_k=20)
RUN = pipe.trace.run
real = pipe.trace.filter('generation', 'step', RUN)
head = [e for e in pipe.trace.events if e.run == 0 or (e.run == RUN and e.stage in ('tokenization', 'generation')
        and e.kind in ('encode', 'settings', 'prefill'))]
end = pipe.trace.last('generation', 'end')

def steps(count):
    made = []
    for index in range(count):
        source = real[index % len(real)]
        data = dict(copy.deepcopy(source.data), step=index, position=real[0].data['position'] + index)
        data.pop('stop_reason', None)
        if index == count - 1:
            data['stop_reason'] = 'max_length'
        made.append((source, data))
    return made

STEPS = {steps}
big = Trace(list(head), pipe.trace.meta)
for source, data in steps(STEPS):
    big.emit('generation', 'step', data, run=RUN, start=source.start, duration=source.duration)
big.emit('generation', 'end', dict(end.data, new_tokens=STEPS), run=RUN, duration=end.duration)
MODEL_RATE = end.data['decode_tokens_per_s']
print('READY ' + json.dumps({{'steps': STEPS, 'model_tokens_per_s': MODEL_RATE}}))"""

SCALE_LIVE = """live = Trace([], pipe.trace.meta)
view = explain.widgets.Dashboard(live)
display(view)"""

SCALE_FEED = """started = time.perf_counter()
for e in head:
    live.emit(e.stage, e.kind, e.data, run=e.run, start=e.start, duration=e.duration)
first = time.perf_counter()
for index, (source, data) in enumerate(steps(STEPS)):
    wait = first + index / {rate} - time.perf_counter()
    if wait > 0:
        time.sleep(wait)
    live.emit('generation', 'step', data, run=RUN, duration=source.duration)
live.emit('generation', 'end', dict(end.data, new_tokens=STEPS), run=RUN, duration=end.duration)
print('FED ' + json.dumps({{'first': first - started, 'seconds': time.perf_counter() - first}}))"""

# a click on the token of a step, to that step drawn by the chart (its dataset.step, and nothing waiting)
CLICK_TO_DRAW = """([root, cell, index]) => new Promise((resolve) => {
    const box = cell >= 0 ? document.querySelectorAll('.jp-Notebook .jp-Cell')[cell].querySelector(root)
        : document.querySelector(root);
    const chart = box.querySelector('.explain-chart');
    const span = box.querySelectorAll('.explain-gen-text .explain-token')[index];
    const draws = +chart.dataset.draws || 0, drawMs = +chart.dataset.drawMs || 0;
    const started = performance.now();
    span.click();
    const check = () => {
        if (chart.dataset.step === String(index) && (+chart.dataset.draws || 0) > draws && !chart.dataset.waiting)
            resolve({ms: performance.now() - started, draw_ms: (+chart.dataset.drawMs || 0) - drawMs});
        else if (performance.now() - started > 20000) resolve(null);
        else requestAnimationFrame(check);
    };
    check();
})"""


def measure_scale(args) -> dict:
    """The scale section (see the module docstring): click to draw, the live dashboard's lag, the export's opening."""
    from playwright.sync_api import sync_playwright

    steps = args.scale
    cells = [
        SCALE_SETUP.format(prompt=PROMPT, steps=steps, real=REAL_STEPS),
        "explain.show(big)",
        SCALE_LIVE,
        SCALE_FEED.format(rate=LIVE_RATE),
        "print('EXPORTED ' + json.dumps(explain.export(big, 'big.html')))",
    ]
    root = tempfile.mkdtemp(prefix="explain-bench-scale-")
    with open(os.path.join(root, "scale.ipynb"), "w") as f:
        json.dump(_notebook(cells), f)
    result: dict[str, Any] = {"steps": steps, "live_rate": LIVE_RATE}
    try:
        with jupyter_lab(root, args.explain_path) as lab, sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
            page = browser.new_page(viewport={"width": 1400, "height": 3000})
            page.goto(f"{lab['url']}/lab/workspaces/scale/tree/scale.ipynb?reset&token={lab['token']}")
            page.wait_for_function(
                "() => window.jupyterapp?.shell?.currentWidget?.sessionContext?.session?.kernel?.status === 'idle'",
                timeout=120_000,
            )
            cell = page.locator(".jp-Notebook .jp-Cell")

            def printed(index: int, name: str) -> Any:
                text = cell.nth(index).locator(".jp-OutputArea").first.inner_text()
                found = re.search(rf"^{name} (.+)$", text, re.M)
                if not found:
                    raise RuntimeError(f"cell {index} printed no {name}: {text[-2000:]}")
                return json.loads(found.group(1))

            start_cell(page, 0)
            wait_cell(page, 0)
            result["model_tokens_per_s"] = printed(0, "READY")["model_tokens_per_s"]

            # the replayed run: a click on a token to its step drawn
            start_cell(page, 1)
            wait_cell(page, 1)
            replay = cell.nth(1).locator(".explain-dashboard").first
            replay.scroll_into_view_if_needed()
            page.wait_for_function(
                f"() => document.querySelectorAll('.jp-Cell')[1].querySelectorAll('.explain-token').length === {steps}",
                timeout=120_000,
            )
            page.evaluate(
                "() => { const c = document.querySelectorAll('.jp-Cell')[1].querySelector('.explain-chart');"
                " c.scrollIntoView({block: 'end'}); }"
            )
            page.wait_for_function(
                "() => +(document.querySelectorAll('.jp-Cell')[1].querySelector('.explain-chart').dataset.draws || 0)"
                " > 0",
                timeout=120_000,
            )
            time.sleep(1.0)
            # each click a step whose content (one of the REAL_STEPS real steps) the page has not drawn yet: plotly
            # measures a text it has not seen, the slow case of a real run, where every step is new
            fractions = (0.1, 0.5, 0.9, 0.3, 0.7, 0.2, 0.8, 0.4, 0.6, 0.05)
            targets, drawn = [], {(steps - 1) % REAL_STEPS}  # the last step is on screen already
            for wanted in (int(steps * f) for f in fractions):
                target = wanted  # the nearest step at or before it whose content is new to the page
                while target > 0 and (target % REAL_STEPS in drawn or target in targets):
                    target -= 1
                drawn.add(target % REAL_STEPS)
                targets.append(target)
            clicks = []
            for target in targets:
                clicks.append(page.evaluate(CLICK_TO_DRAW, [".explain-dashboard", 1, target]))
                time.sleep(0.3)
            result["click_ms"] = [c and c["ms"] for c in clicks]
            result["click_chart_draw_ms"] = [c and c["draw_ms"] for c in clicks]  # of which plotly drawing

            # the live dashboard fed at LIVE_RATE steps a second: how far behind the page falls
            start_cell(page, 2)
            wait_cell(page, 2)
            live = cell.nth(2).locator(".explain-dashboard").first
            live.scroll_into_view_if_needed()
            samples = []
            start_cell(page, 3)
            sent = time.perf_counter()
            page.wait_for_function(
                "() => +(document.querySelectorAll('.jp-Cell')[2].querySelector('.explain-gen-count')?.textContent"
                " || 0) > 0",
                timeout=120_000,
            )
            while True:
                shown = page.evaluate(
                    "() => +(document.querySelectorAll('.jp-Cell')[2].querySelector('.explain-gen-count')"
                    ".textContent || 0)"
                )
                samples.append((time.perf_counter() - sent, shown))
                if shown >= steps:
                    break
                if time.perf_counter() - sent > steps / LIVE_RATE + 300:
                    raise RuntimeError(f"the live dashboard showed {shown} of {steps} steps")
                time.sleep(0.25)
            wait_cell(page, 3)
            fed = printed(3, "FED")
            shown_at = samples[-1][0]
            first = samples[0][0]  # the page's first step shown: the clock of the feed starts about there
            lag = max(max(0.0, (t - first) - n / LIVE_RATE) for t, n in samples)
            result["live"] = {
                "feed_seconds": fed["seconds"],
                "page_done_after_s": shown_at - first,
                "behind_at_end_s": max(0.0, (shown_at - first) - fed["seconds"]),
                "worst_lag_s": lag,
                "samples": len(samples),
            }

            # the exported page: opened to its chart drawn, then a click
            start_cell(page, 4)
            wait_cell(page, 4)
            path = printed(4, "EXPORTED")
            path = path if os.path.isabs(path) else os.path.join(root, path)
            result["export_bytes"] = os.path.getsize(path)
            exported = browser.new_page(viewport={"width": 1400, "height": 3000})
            opened = time.perf_counter()
            exported.goto(f"file://{path}")
            exported.wait_for_function(
                "() => document.body.dataset.explainReady === 'true' && "
                "+(document.querySelector('.explain-chart')?.dataset.draws || 0) > 0",
                timeout=120_000,
                polling=20,
            )
            result["export_open_s"] = time.perf_counter() - opened
            result["export_click_ms"] = exported.evaluate(CLICK_TO_DRAW, ["#explain-root", -1, steps // 2])["ms"]
            browser.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return result


def summarize(results: dict) -> dict:
    rate = {
        kind: statistics.median(c["tokens_per_s"] for c in results["calls"] if c["kind"] == kind)
        for kind in ("without", "with")
    }
    cost = 100 * (1 - rate["with"] / rate["without"])
    with_calls = [c for c in results["calls"] if c["kind"] == "with"]
    return {
        "tokens_per_s_without": rate["without"],
        "tokens_per_s_with": rate["with"],
        "cost_percent": cost,
        "frames_per_token": statistics.median(c["frames"] / c["tokens"] for c in with_calls),
        "frame_bytes_per_token": statistics.median(c["frame_bytes"] / c["tokens"] for c in with_calls),
        "chart_draws_per_call": statistics.median(c.get("chart_draws", 0) for c in with_calls),
        "chart_draw_ms_per_call": statistics.median(c.get("chart_draw_ms", 0) for c in with_calls),
        "first_display_s": {k: v / 1000 for k, v in results["first_display_ms"].items()},
        "targets": {
            **scale_targets(results.get("scale")),
            "cost_percent": {
                "target": f"<= {TARGETS['cost_percent']}%",
                "value": cost,
                "met": cost <= TARGETS["cost_percent"],
            },
            **loading_target(results.get("loading_paint_ms")),
            "first_display_s": {
                "target": f"< {TARGETS['first_display_s']} s",
                "value": max(results["first_display_ms"].values()) / 1000,
                "met": max(results["first_display_ms"].values()) / 1000 < TARGETS["first_display_s"],
            },
        },
    }


def loading_target(paint_ms: float | None) -> dict:
    if paint_ms is None:  # never shown (a checkout from before the loading view)
        return {}
    seconds = paint_ms / 1000
    return {
        "loading_paint_s": {
            "target": f"<= {TARGETS['loading_paint_s']:.0f} s",
            "value": seconds,
            "met": seconds <= TARGETS["loading_paint_s"],
        }
    }


def scale_targets(scale: dict | None) -> dict:
    if not scale:
        return {}
    clicks = [c for c in scale["click_ms"] if c is not None]
    worst = max(clicks) if len(clicks) == len(scale["click_ms"]) else float("inf")
    return {
        "click_ms": {"target": f"<= {TARGETS['click_ms']:.0f} ms", "value": worst, "met": worst <= TARGETS["click_ms"]},
        "export_open_s": {
            "target": f"<= {TARGETS['export_open_s']:.0f} s",
            "value": scale["export_open_s"],
            "met": scale["export_open_s"] <= TARGETS["export_open_s"],
        },
    }


def scale_markdown(scale: dict, targets: dict) -> list[str]:
    clicks = sorted(c for c in scale["click_ms"] if c is not None)
    live = scale["live"]
    met = lambda name: "met" if targets[name]["met"] else "missed"  # noqa: E731
    return [
        f"## A run of {scale['steps']:,} steps",
        "",
        f"A real sampled call of the embedded model ({scale['model_tokens_per_s']:.1f} tokens/s here), its step "
        f"events repeated to {scale['steps']:,} steps.",
        "",
        f"- **A click on a token to its step drawn** (replayed run, kernel round trip and chart): median "
        f"{statistics.median(clicks):.0f} ms, worst {targets['click_ms']['value']:.0f} ms over "
        f"{len(scale['click_ms'])} clicks (target {targets['click_ms']['target']}: {met('click_ms')}); of which "
        f"the chart's own drawing (plotly.js) median "
        f"{statistics.median(c for c in scale['click_chart_draw_ms'] if c is not None):.0f} ms, the rest the "
        "kernel's round trip.",
        f"- **The live dashboard** fed {scale['steps']:,} steps at {scale['live_rate']:.0f} steps/s "
        f"({scale['live_rate'] / scale['model_tokens_per_s']:.0f} times the embedded model's speed): the feed took "
        f"{live['feed_seconds']:.1f} s, the page showed the last step {live['page_done_after_s']:.1f} s after its "
        f"first ({live['behind_at_end_s']:.1f} s behind at the end), worst lag {live['worst_lag_s']:.1f} s.",
        f"- **The exported page** ({scale['export_bytes'] / 1e6:.1f} MB) opened to its chart drawn in "
        f"{scale['export_open_s']:.2f} s (target {targets['export_open_s']['target']}: {met('export_open_s')}); "
        f"a click there drew its step in {scale['export_click_ms']:.0f} ms.",
        "",
    ]


def markdown(report: dict) -> str:
    s = report["summary"]
    lines = [
        f"# explain in a real browser, {report['date']}: {report['machine']}",
        "",
        f"JupyterLab {report['versions']['jupyterlab']} in chromium (headless, on the same machine as the "
        f"kernel), the embedded model, greedy, {report['settings']['tokens']} new tokens per call, "
        f"{report['settings']['rounds']} round(s) of a call without and a call with a live dashboard on "
        f"screen (the order alternating). explain from {report['settings']['explain_path']}. Load average "
        f"{report['load_average'][0]:.1f} at the start, {report['load_average'][1]:.1f} at the end.",
        "",
        "| | tokens/s (median) | page frames per token | bytes per token | chart draws per call "
        "| chart draw ms per call |",
        "|---|---:|---:|---:|---:|---:|",
        f"| no dashboard | {s['tokens_per_s_without']:.2f} | | | | |",
        f"| live dashboard on screen | {s['tokens_per_s_with']:.2f} | {s['frames_per_token']:.1f} | "
        f"{s['frame_bytes_per_token']:,.0f} | {s['chart_draws_per_call']:.0f} | "
        f"{s['chart_draw_ms_per_call']:.0f} |",
        "",
        f"**Cost of the live dashboard: {s['cost_percent']:.1f}%** of the tokens/s (target "
        f"{s['targets']['cost_percent']['target']}: "
        f"{'met' if s['targets']['cost_percent']['met'] else 'missed'}).",
        "",
        "Time to first display (cell sent -> its view's stage timeline on the page): "
        + ", ".join(f"{name} {seconds:.2f} s" for name, seconds in s["first_display_s"].items())
        + f" (target {s['targets']['first_display_s']['target']}: "
        f"{'met' if s['targets']['first_display_s']['met'] else 'missed'}).",
        "",
    ]
    if "loading_paint_s" in s["targets"]:
        loading = s["targets"]["loading_paint_s"]
        lines += [
            f"Loading is visible: `explain.pipeline(...)` sent -> its loading stages on the page in "
            f"{loading['value']:.2f} s (target {loading['target']}: {'met' if loading['met'] else 'missed'}).",
            "",
        ]
    lines += [
        "Every call: " + "; ".join(f"{c['kind']} {c['tokens_per_s']:.2f}/s" for c in report["calls"]) + ".",
        "",
    ]
    if report.get("scale"):
        lines += scale_markdown(report["scale"], s["targets"])
    return "\n".join(lines)


def parse(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m bench.browser", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tokens", type=int, default=64, help="new tokens per call (default 64)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of without/with (default 3)")
    parser.add_argument("--explain-path", default=REPO, help="the checkout of explain the kernel imports")
    parser.add_argument("--scale", type=int, default=1000, help="steps of the scale section's run (0: skip it)")
    parser.add_argument("--out", default=RESULTS)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse(argv)
    if not os.path.exists(CHROMIUM):
        print("bench.browser needs chromium (Debian: apt-get install chromium)", file=sys.stderr)
        return 2
    import jupyterlab
    import playwright

    load_start = os.getloadavg()[0]
    results = measure(args)
    if args.scale > 0:
        results["scale"] = measure_scale(args)
    from bench.run import machine

    info = machine()
    report = {
        "format": "explain-bench-browser",
        "version": 1,
        "date": datetime.date.today().isoformat(),
        "machine": f"{info['cpu']}, {info['cpus']} CPUs",
        "machine_slug": info["slug"],
        "versions": {"jupyterlab": jupyterlab.__version__, "playwright": getattr(playwright, "__version__", "?")},
        "settings": {
            "tokens": args.tokens,
            "rounds": args.rounds,
            "scale": args.scale,
            "explain_path": args.explain_path,
        },
        "load_average": [load_start, os.getloadavg()[0]],
        **results,
    }
    report["summary"] = summarize(results)
    os.makedirs(args.out, exist_ok=True)
    stem = os.path.join(args.out, f"{report['date']}-{info['slug']}-browser")
    with open(stem + ".json", "w") as f:
        json.dump(report, f, indent=1)
        f.write("\n")
    text = markdown(report)
    for path in (stem + ".md", os.path.join(args.out, "browser-latest.md")):
        with open(path, "w") as f:
            f.write(text)
    print(text)
    print(f"wrote {stem}.json, {stem}.md", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
