"""What the browser tests share: paths, chromium's flags, and a Notebook helper (fixtures are in conftest.py)."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--disable-dev-shm-usage"]
FRONT_ENDS = {"jupyterlab": "/lab/tree/", "notebook7": "/notebooks/"}  # the same server serves both
THEMES = {"light": "JupyterLab Light", "dark": "JupyterLab Dark"}

def notebook_json(cells) -> dict:
    return {"nbformat": 4, "nbformat_minor": 5,
            "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
            "cells": [{"cell_type": "code", "id": f"cell{i}", "metadata": {}, "execution_count": None,
                       "outputs": [], "source": source} for i, source in enumerate(cells)]}


class Notebook:
    """One open notebook: its page, and helpers that run cells and read the dashboard."""

    def __init__(self, page, front_end: str):
        self.page, self.front_end = page, front_end
        self.dialogs: list[str] = []
        self.errors: list[str] = []

    def cell(self, index):
        return self.page.locator(".jp-Notebook .jp-Cell").nth(index)

    def run_all(self) -> None:
        self.page.evaluate("() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); }")  # not awaited

    def run_cell(self, index: int) -> None:
        self.page.evaluate(f"() => {{ const nb = window.jupyterapp.shell.currentWidget.content; "
                           f"nb.activeCellIndex = {index}; window.jupyterapp.commands.execute('notebook:run-cell'); }}")

    def cell_done(self, index: int) -> str:
        return (f"() => {{ const c = document.querySelectorAll('.jp-Notebook .jp-Cell')[{index}]; "
                f"return c && /\\[\\d+\\]/.test(c.querySelector('.jp-InputPrompt').textContent); }}")

    def wait_cell(self, index: int, timeout: float = 300) -> None:
        self.page.wait_for_function(self.cell_done(index), timeout=timeout * 1000)

    def wait_idle(self, timeout: float = 120) -> None:
        self.page.wait_for_function("() => window.jupyterapp.shell.currentWidget.sessionContext.session.kernel"
                                    ".status === 'idle'", timeout=timeout * 1000)

    def theme(self, name: str) -> None:
        """Switch JupyterLab's theme ("light" or "dark") and wait until the page has it."""
        self.page.evaluate(f"() => window.jupyterapp.commands.execute('apputils:change-theme', "
                           f"{{theme: {json.dumps(THEMES[name])}}})")
        light = "true" if name == "light" else "false"
        self.page.wait_for_function(f"() => document.body.dataset.jpThemeLight === '{light}'", timeout=30_000)
        time.sleep(0.8)  # the views redraw on the next animation frames

    def output_text(self, index: int) -> str:
        return self.cell(index).locator(".jp-OutputArea").first.inner_text()

    def screenshot(self, locator, name: str) -> Path:
        path = ARTIFACTS / f"{name}.png"
        locator.scroll_into_view_if_needed()
        time.sleep(0.3)
        locator.screenshot(path=str(path))
        return path
