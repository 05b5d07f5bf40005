"""A real JupyterLab 4 (and Notebook 7, served by the same server) with Debian's chromium, driven by playwright.

`lab` starts one server for the session, its kernels importing this checkout; `browser` is one chromium;
`notebook(cells, ...)` writes a notebook and opens it in a new page with its own kernel. Skipped, with the reason,
where chromium, playwright or JupyterLab is missing. Screenshots go to test-artifacts/.

    apt-get install chromium && pip install -e ".[test]" && pytest tests/browser -v
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import urllib.request

import pytest
from browser_support import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, FRONT_ENDS, ROOT, Notebook, notebook_json  # noqa: F401

MISSING = None
if not os.path.exists(CHROMIUM):
    MISSING = "chromium is not installed (Debian: apt-get install chromium); the browser tests need it"
elif importlib.util.find_spec("playwright") is None:
    MISSING = (
        "playwright is not installed (pip install playwright; the browser comes from apt, never `playwright install`)"
    )
elif importlib.util.find_spec("jupyterlab") is None:
    MISSING = "jupyterlab is not installed (pip install jupyterlab)"


def pytest_collection_modifyitems(config, items):
    if MISSING:
        skip = pytest.mark.skip(reason=MISSING)
        for item in items:
            if "tests/browser" in str(item.fspath).replace(os.sep, "/"):
                item.add_marker(skip)


@pytest.fixture(scope="session")
def lab(tmp_path_factory):
    """One JupyterLab for the session (bench/browser.py's server), its kernels importing this checkout; it must be
    up within 60 s."""
    sys.path.insert(0, str(ROOT))  # bench/ is a folder of the repository, not an installed package
    from bench.browser import jupyter_lab

    root = tmp_path_factory.mktemp("lab")
    with jupyter_lab(str(root), str(ROOT), start_timeout=60) as server:
        yield {**server, "root": root}


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def open_notebook(lab, browser, request):
    """open_notebook(name, cells, front_end="jupyterlab", width=1400) -> Notebook, its kernel idle. After the test:
    a screenshot of each page (test-artifacts/<name>-last.png), its page closed and its kernel shut down, so the
    next test does not share the machine with it."""
    opened = []

    def open_(
        name: str,
        cells,
        front_end: str = "jupyterlab",
        width: int = 1400,
        height: int = 1000,
        init_script: str | None = None,
    ) -> Notebook:
        if front_end == "notebook7" and importlib.util.find_spec("notebook") is None:
            pytest.skip("Notebook 7 is not installed (pip install 'notebook>=7')")
        (lab["root"] / f"{name}.ipynb").write_text(json.dumps(notebook_json(cells)))
        context = browser.new_context(viewport={"width": width, "height": height})
        if init_script:
            context.add_init_script(init_script)
        page = context.new_page()
        notebook = Notebook(page, front_end)
        opened.append((name, context, notebook))

        def on_dialog(dialog):
            notebook.dialogs.append(dialog.message)
            dialog.dismiss()

        page.on("dialog", on_dialog)
        page.on("pageerror", lambda error: notebook.errors.append(str(error)))
        # a workspace of its own (reset), so the page does not reopen the notebooks of earlier tests
        workspace = f"/lab/workspaces/{name}/tree/" if front_end == "jupyterlab" else FRONT_ENDS[front_end]
        page.goto(f"{lab['url']}{workspace}{name}.ipynb?reset&token={lab['token']}")
        page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
        notebook.wait_idle()
        return notebook

    yield open_
    for name, context, notebook in opened:
        try:
            notebook.page.screenshot(path=str(ARTIFACTS / f"{name}-last.png"))
        except Exception:  # noqa: BLE001 - the page may be gone already
            pass
        context.close()
    shutdown_kernels(lab)


def shutdown_kernels(lab) -> None:
    """Shut every kernel of the server down (its REST API), so tests do not pile up models in memory."""
    headers = {"Authorization": f"token {lab['token']}"}
    request = urllib.request.Request(f"{lab['url']}/api/kernels", headers=headers)
    with urllib.request.urlopen(request, timeout=10) as response:
        kernels = json.load(response)
    for kernel in kernels:
        urllib.request.urlopen(
            urllib.request.Request(f"{lab['url']}/api/kernels/{kernel['id']}", method="DELETE", headers=headers),
            timeout=30,
        )
