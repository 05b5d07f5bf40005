"""What the browser tests share: paths, chromium's flags, and a Notebook helper (fixtures are in conftest.py)."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
FRONT_ENDS = {"jupyterlab": "/lab/tree/", "notebook7": "/notebooks/"}  # the same server serves both
THEMES = {"light": "JupyterLab Light", "dark": "JupyterLab Dark"}


def notebook_json(cells) -> dict:
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
        self.page.evaluate(
            f"() => {{ const nb = window.jupyterapp.shell.currentWidget.content; "
            f"nb.activeCellIndex = {index}; window.jupyterapp.commands.execute('notebook:run-cell'); }}"
        )

    def cell_done(self, index: int) -> str:
        return (
            f"() => {{ const c = document.querySelectorAll('.jp-Notebook .jp-Cell')[{index}]; "
            f"return c && /\\[\\d+\\]/.test(c.querySelector('.jp-InputPrompt').textContent); }}"
        )

    def wait_cell(self, index: int, timeout: float = 300) -> None:
        self.page.wait_for_function(self.cell_done(index), timeout=timeout * 1000)

    def wait_idle(self, timeout: float = 120) -> None:
        self.page.wait_for_function(
            "() => window.jupyterapp?.shell?.currentWidget?.sessionContext?.session?.kernel?.status === 'idle'",
            timeout=timeout * 1000,
        )

    def theme(self, name: str) -> None:
        """Switch JupyterLab's theme ("light" or "dark") and wait until the page has it."""
        self.page.evaluate(
            f"() => window.jupyterapp.commands.execute('apputils:change-theme', {{theme: {json.dumps(THEMES[name])}}})"
        )
        light = "true" if name == "light" else "false"
        self.page.wait_for_function(f"() => document.body.dataset.jpThemeLight === '{light}'", timeout=30_000)
        time.sleep(0.8)  # the views redraw on the next animation frames

    def output_text(self, index: int) -> str:
        return self.cell(index).locator(".jp-OutputArea").first.inner_text()

    def screenshot(self, locator, name: str) -> Path:
        """The element as it is on screen: scrolled to the top of the notebook, the viewport clipped to it (an
        element screenshot of JupyterLab's inner scroll area would paint the page's toolbars over it)."""
        path = ARTIFACTS / f"{name}.png"
        locator.evaluate("""(e) => {
            let scroller = e.parentElement;
            const scrolls = (s) => /(auto|scroll)/.test(getComputedStyle(s).overflowY)
                && s.scrollHeight > s.clientHeight + 1;
            while (scroller && !scrolls(scroller)) scroller = scroller.parentElement;
            const top = scroller ? scroller.getBoundingClientRect().top : 0;
            if (scroller) scroller.scrollTop += e.getBoundingClientRect().top - top - 4;
        }""")
        time.sleep(0.8)  # views out of sight redraw when they come into view
        box = locator.bounding_box()
        viewport = self.page.viewport_size
        top = max(0, box["y"])
        clip = {
            "x": max(0, box["x"]),
            "y": top,
            "width": min(box["width"], viewport["width"] - max(0, box["x"])),
            "height": max(1, min(box["height"], viewport["height"] - top)),
        }
        self.page.screenshot(path=str(path), clip=clip)
        return path


# What a drawn step chart shows, read from its SVG: per panel (plotly subplot) the bar colours, the token labels and
# their colour, and the box of what it draws (its bars, their numbers, its labels: the subplot's <g> also holds
# full-size layers, so its own box says nothing); the titles' boxes (HTML over the figures). Called with the
# .explain-chart element, whose two plotly figures (the step's panels, then the curves over all steps) are read as
# one.
CHART_PROBE = """(chart) => {
    const plots = [...chart.querySelectorAll('.js-plotly-plot')];
    if (!plots.length) return {drawn: chart.dataset.drawn, subplots: [], titles: [],
                               message: chart.querySelector('.explain-chart-empty').textContent};
    const boxes = plots.map((p) => p.getBoundingClientRect());
    const box = {width: Math.max(...boxes.map((b) => b.width)), left: Math.min(...boxes.map((b) => b.left)),
                 right: Math.max(...boxes.map((b) => b.right))};
    const rect = (e) => { const r = e.getBoundingClientRect(); return [r.left, r.top, r.right, r.bottom]; };
    const union = (boxes) => boxes.filter((b) => b[2] > b[0]).reduce((a, b) =>
        [Math.min(a[0], b[0]), Math.min(a[1], b[1]), Math.max(a[2], b[2]), Math.max(a[3], b[3])],
        [1e9, 1e9, -1e9, -1e9]);
    const subplots = plots.flatMap((p) => [...p.querySelectorAll('.cartesianlayer > .subplot')]).map((g) => ({
        name: [...g.classList].find((c) => c !== 'subplot'),
        bars: [...g.querySelectorAll('.bars path')].map((p) => p.style.fill),
        labels: [...g.querySelectorAll('.yaxislayer-above text')].map((t) => t.textContent),
        labelFill: g.querySelector('.yaxislayer-above text')?.style.fill,
        box: union([...g.querySelectorAll('.bars path, .textpoint, .yaxislayer-above text, .scatterlayer .trace path')]
                   .map(rect))}));
    const titles = [...chart.querySelectorAll('.explain-chart-title')]
        .map((a) => ({text: a.textContent, box: rect(a)}));
    return {drawn: chart.dataset.drawn, width: box.width, right: box.right, left: box.left, subplots, titles,
            columns: +chart.dataset.columns, step: chart.dataset.step,
            overflow: chart.scrollWidth - chart.clientWidth};
}"""
CHOSEN_FILLS = ("rgb(217, 72, 15)", "rgb(240, 136, 62)")  # chart.js's chosen-token orange, light and dark


def overlap(a, b, slack: float = 1.0) -> bool:
    return a[0] < b[2] - slack and b[0] < a[2] - slack and a[1] < b[3] - slack and b[1] < a[3] - slack


def check_chart_layout(seen: dict, where: str) -> list[dict]:
    """Assert that no two panels or titles overlap and nothing runs past the chart; returns the bar panels."""
    subplots, titles = seen["subplots"], seen["titles"]
    for a in range(len(subplots)):
        for b in range(a + 1, len(subplots)):
            assert not overlap(subplots[a]["box"], subplots[b]["box"]), (
                f"{where}: panel {subplots[a]['name']} overlaps {subplots[b]['name']}"
            )
    for a in range(len(titles)):
        for b in range(a + 1, len(titles)):
            assert not overlap(titles[a]["box"], titles[b]["box"]), (
                f"{where}: titles {titles[a]['text']!r} and {titles[b]['text']!r} overlap"
            )
    assert all(s["box"][2] <= seen["right"] + 1 and s["box"][0] >= seen["left"] - 1 for s in subplots), (
        f"{where}: a panel runs past the chart's edge"
    )
    assert seen["overflow"] <= 0, f"{where}: the chart is wider than its place"
    return [s for s in subplots if s["bars"] and s["labels"]]


def rgb(color: str) -> tuple:
    """The red, green and blue of a CSS colour as the browser writes it (plotly moves the alpha to fill-opacity)."""
    import re

    return tuple(int(float(v)) for v in re.findall(r"[\d.]+", color or "")[:3])
