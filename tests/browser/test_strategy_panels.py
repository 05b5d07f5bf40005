"""The decoding strategies' views (sampling tree, beam tree, drafted vs accepted) in a real JupyterLab, driven by
headless Chromium through playwright, 800 px wide, in the light and the dark theme. One notebook on the embedded
model: four samples, beam search, prompt lookup decoding, then the step-through's forced branch as a sampling tree.
The prompt of the samples is an HTML injection attempt: it must show as text and run nothing. Screenshots go to
test-artifacts/strategy-*.png. Skipped, with the reason, where chromium, playwright or JupyterLab is missing.
"""

from __future__ import annotations

import importlib.util
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--disable-dev-shm-usage"]
EVIL = "<img src=x onerror=alert(1)> Once upon a time"

if not os.path.exists(CHROMIUM):
    pytest.skip("chromium is not installed (Debian: apt-get install chromium); the browser test needs it",
                allow_module_level=True)
if importlib.util.find_spec("playwright") is None:
    pytest.skip("playwright is not installed (pip install playwright; the browser comes from apt)",
                allow_module_level=True)
if importlib.util.find_spec("jupyterlab") is None:
    pytest.skip("jupyterlab is not installed (pip install jupyterlab)", allow_module_level=True)

from playwright.sync_api import sync_playwright  # noqa: E402

CELLS = [
    "import torch, explain\nfrom explain.widgets import SamplingTree, BeamTree, DraftView\n"
    "pipe = explain.pipeline('text-generation')",
    f"torch.manual_seed(3)\nout = pipe({EVIL!r}, max_new_tokens=10, num_return_sequences=4, temperature=1.0)\n"
    "SamplingTree(pipe)",
    "pipe('The capital of France is', max_new_tokens=6, num_beams=3, num_return_sequences=2, do_sample=False)\n"
    "BeamTree(pipe)",
    "pipe('Copy this sentence: Paris is the capital of France.\\nCopy: Paris is', max_new_tokens=20, "
    "do_sample=False, prompt_lookup_num_tokens=3)\nDraftView(pipe)",
    "run = pipe.start('The best way to learn is', max_new_tokens=8, do_sample=False, keep_logits=True)\nrun.run(4)\n"
    "branch = run.force(1, run.steps[1]['probs_top']['ids'][2])\nbranch.run()\nrun.run()\nSamplingTree(run)",
]
VIEWS = {"sampling-tree": (1, ".explain-st"), "beam-tree": (2, ".explain-bt"), "drafts": (3, ".explain-dv"),
         "forced-branch-tree": (4, ".explain-st")}


def _notebook(cells) -> dict:
    return {"nbformat": 4, "nbformat_minor": 5,
            "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
            "cells": [{"cell_type": "code", "id": f"cell{i}", "metadata": {}, "execution_count": None,
                       "outputs": [], "source": source} for i, source in enumerate(cells)]}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    root = tmp_path_factory.mktemp("strategy-lab")
    (root / "strategies.ipynb").write_text(json.dumps(_notebook(CELLS)))
    settings = root / ".settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text(json.dumps({"fetchNews": "false",
                                                                             "checkForUpdates": False}))
    port, token = _free_port(), secrets.token_hex(16)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "JUPYTERLAB_SETTINGS_DIR": str(root / ".settings"),
           "JUPYTERLAB_WORKSPACES_DIR": str(root / ".workspaces"), "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    log = open(root / "jupyter.log", "w")
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyter", "lab", "--no-browser", f"--port={port}", "--ip=127.0.0.1",
         f"--ServerApp.token={token}", f"--ServerApp.root_dir={root}", "--LabApp.expose_app_in_browser=True",
         "--ServerApp.disable_check_xsrf=True"] + (["--allow-root"] if os.geteuid() == 0 else []),
        cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + 60
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status?token={token}", timeout=2)
                break
            except OSError:
                if server.poll() is not None or time.time() > deadline:
                    raise RuntimeError("JupyterLab did not start:\n" + (root / "jupyter.log").read_text()[-3000:])
                time.sleep(0.3)
        yield {"url": f"http://127.0.0.1:{port}", "token": token}
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)  # the server's own process group: it and its kernel
            try:
                server.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
        log.close()


def _cell(page, index):
    return page.locator(".jp-Notebook .jp-Cell").nth(index)


def test_strategy_views_light_and_dark(lab):
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        page = browser.new_context(viewport={"width": 800, "height": 1000}).new_page()
        dialogs = []
        page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
        try:
            page.goto(f"{lab['url']}/lab/tree/strategies.ipynb?token={lab['token']}")
            page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
            page.wait_for_function("() => window.jupyterapp?.shell?.currentWidget?.sessionContext?.session?.kernel"
                                   "?.status === 'idle'", timeout=60_000)
            page.evaluate("() => { window.jupyterapp.commands.execute('application:toggle-left-area'); "
                          "window.jupyterapp.commands.execute('notebook:run-all-cells'); }")
            for name, (index, selector) in VIEWS.items():
                _cell(page, index).locator(selector).first.wait_for(timeout=300_000)
            page.wait_for_function("() => document.querySelectorAll('.explain-bt-rank tr').length > 1",
                                   timeout=120_000)
            errors = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")
            assert errors.count() == 0 or "Error" not in errors.first.inner_text()

            tree = _cell(page, 1).locator(".explain-st").first
            assert tree.locator(".explain-st-split").count() >= 1, "four samples and no branch point"
            assert tree.locator(".explain-st-badge").count() >= 4
            assert EVIL.split(">")[0] in tree.inner_text()  # the prompt shows as text
            beams = _cell(page, 2).locator(".explain-bt").first
            assert beams.locator("svg .explain-bt-node.running").count() >= 3
            assert beams.locator("svg .explain-bt-edge.best").count() >= 2, "no returned path drawn"
            assert beams.locator(".explain-bt-rank tr.returned").count() == 2
            drafts = _cell(page, 3).locator(".explain-dv").first
            assert drafts.locator(".explain-dv-chip.accepted").count() >= 1, "prompt lookup accepted nothing"
            assert "drafted tokens accepted" in drafts.inner_text()
            labels = drafts.locator(".explain-dv-label").all_inner_texts()
            assert any(label.startswith("rounds ") for label in labels), labels  # idle rounds in one row
            forced = _cell(page, 4).locator(".explain-st").first
            assert "branch 1" in forced.inner_text() and forced.locator(".explain-st-forced").count() == 1
            assert dialogs == [] and page.locator("img[src='x']").count() == 0

            colors = {}
            for theme, command in (("light", "JupyterLab Light"), ("dark", "JupyterLab Dark")):
                page.evaluate(f"() => window.jupyterapp.commands.execute('apputils:change-theme', "
                              f"{{theme: '{command}'}})")
                page.wait_for_function(f"() => document.body.dataset.jpThemeLight === "
                                       f"'{'true' if theme == 'light' else 'false'}'", timeout=30_000)
                time.sleep(1.0)
                for name, (index, selector) in VIEWS.items():
                    view = _cell(page, index).locator(selector).first
                    view.scroll_into_view_if_needed()
                    view.screenshot(path=str(ARTIFACTS / f"strategy-{name}-{theme}.png"))
                colors[theme] = tree.evaluate("e => getComputedStyle(e).color")
            assert colors["light"] != colors["dark"], colors  # the views follow the theme's variables
        finally:
            page.screenshot(path=str(ARTIFACTS / "strategy-views-last.png"))
            browser.close()
