"""A trace as one self-contained HTML page: the dashboard's views, interactive, with no kernel, network or CDN.

    explain.export(pipe, "run.html")              # a pipeline, an explain.Trace, or a saved trace's path
    python -m explain export run.json run.html

The page is built from the same state and views as the live dashboard: a DashboardState per run, and each view of
the registry (views.VIEWS) drawn by its own `draw` for the newest step and, for the views that read the selection,
for every step a reader may click. The page carries the dashboard's ES modules, its CSS and plotly.js inline (the
basic bundle, bars and lines, that explain ships in explain/data/plotly/: a quarter of the full bundle, which took
most of a long run's page's opening time to evaluate); a small script (export.js) gives each module an in-page model
with those values.
A teacher can mail it or put it on a website: it needs nothing else.

A page's values for the newest step are parsed when it opens; each step's own values are one line of JSON, parsed
when a reader selects that step, so a run of thousands of steps opens as fast as a short one.

The page is safe to open whatever the trace holds: values reach it as JSON inside a <script type="application/json">
with every `<` escaped, the modules write text with textContent, the HTML views escape every value in Python, and
a Content-Security-Policy lets only the page's own scripts run and forbids every request (no images, no fetches).
"""

from __future__ import annotations

import datetime
import json
import os
import pathlib
import secrets

from ..errors import ExplainError
from ..trace import Trace
from ..utils.files import save_file, writable_target
from .base import HERE, module_source
from .elements import plotly_basic_js_path
from .safe import esc
from .state import DashboardState
from .static import summary_html
from .views import SELECTION, VIEWS, Scene

# JupyterLab's theme variables the views read, for a page outside JupyterLab: light, and dark when <body> says so
THEME_CSS = """
:root, body[data-jp-theme-light="true"] { color-scheme: light;
  --jp-layout-color0: #ffffff; --jp-layout-color1: #ffffff; --jp-layout-color2: #eeeeee;
  --jp-ui-font-color1: rgba(0, 0, 0, 0.87); --jp-ui-font-color2: rgba(0, 0, 0, 0.54);
  --jp-ui-font-color3: rgba(0, 0, 0, 0.38); --jp-border-color1: #bdbdbd; --jp-border-color2: #e0e0e0; }
body[data-jp-theme-light="false"] { color-scheme: dark;
  --jp-layout-color0: #111111; --jp-layout-color1: #212121; --jp-layout-color2: #424242;
  --jp-ui-font-color1: rgba(255, 255, 255, 0.87); --jp-ui-font-color2: rgba(255, 255, 255, 0.54);
  --jp-ui-font-color3: rgba(255, 255, 255, 0.38); --jp-border-color1: #616161; --jp-border-color2: #424242; }
:root { --jp-ui-font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
  --jp-code-font-family: "DejaVu Sans Mono", Menlo, Consolas, monospace; }
body { margin: 0; background: var(--jp-layout-color0); color: var(--jp-ui-font-color1);
  font-family: var(--jp-ui-font-family); }
#explain-root { max-width: 1400px; margin: 0 auto; padding: 12px 16px 32px; }
.explain-export-bar { display: flex; flex-wrap: wrap; gap: 12px; align-items: center; margin-bottom: 6px; }
.explain-export-bar select, .explain-export-bar button { font: inherit; color: inherit;
  background: var(--jp-layout-color1); border: 1px solid var(--jp-border-color1); border-radius: 4px;
  padding: 2px 6px; }
.explain-view { margin: 2px 0; }
"""


def _trace(source) -> Trace:
    if isinstance(source, Trace):
        return source
    if isinstance(source, (str, os.PathLike)):
        return Trace.load(source)
    trace = getattr(source, "trace", None)
    if isinstance(trace, Trace):
        return trace
    raise ExplainError(
        f"explain.export needs a pipeline from explain.pipeline(...), an explain.Trace or the path of "
        f"a saved trace, got {type(source).__name__}"
    )


def _page(state: DashboardState, meta: dict) -> dict:
    """Every view's values for the newest step, and, for the views that read the selection, what differs per step."""
    values = {view.name: view.draw(Scene(state, meta=meta)) for view in VIEWS}
    steps = {}
    for view in VIEWS:
        if SELECTION not in view.reads:
            continue
        table = []
        for index in range(len(state.steps())):
            drawn = view.draw(Scene(state, selected=index, meta=meta))
            table.append({k: v for k, v in drawn.items() if v != values[view.name].get(k)})
        steps[view.name] = table
    return {"values": values, "steps": steps}


def export_data(trace: Trace, run: int | None = None) -> dict:
    """What the page shows: a page of values per (run, branch), in the order of the picker."""
    runs = list(dict.fromkeys(e.run for e in trace.events if isinstance(e.run, int) and e.run > 0))
    if run is not None:
        if run not in runs:
            raise ExplainError(f"the trace has no call {run}; its calls are {runs or 'none (loading only)'}")
        runs = [run]
    keys, pages = [], {}
    for number in reversed(runs or [None]):  # the newest call first, as the live dashboard shows it
        state = DashboardState.from_trace(trace, run=number)
        branches = [0] + sorted(b for b in state.branches if b in state.forks)
        for branch in branches:
            state.branch = branch
            key = f"{number or 0}:{branch}"
            fork = state.forks.get(branch, {})
            label = (f"call {number}" if number else "loading") + (
                f", branch {branch}: forced at step {fork.get('step')}" if branch else ""
            )
            if len(state.sequences) > 1 and not branch:
                label += f", {state.sequence_label(0)}"
            keys.append({"key": key, "label": label})
            pages[key] = _page(state, trace.meta)
        for sequence in sorted(state.sequences)[1:]:  # several samples, batch rows or returned beams: one page each
            state.pick_sequence(sequence)
            key = f"{number or 0}:0:{sequence}"
            keys.append({"key": key, "label": f"call {number}, {state.sequence_label(sequence)}"})
            pages[key] = _page(state, trace.meta)
        state.pick_sequence(0)
    views = [{"name": v.name, "module": v.module, "section": list(v.section) if v.section else None} for v in VIEWS]
    note = (
        f"exported by explain on {datetime.date.today().isoformat()}: no kernel, no network; click a token "
        "to see its step"
    )
    return {"keys": keys, "pages": pages, "views": views, "note": note}


def _json_for_script(value) -> str:
    """JSON that cannot end its <script> element or open a comment, whatever the trace's strings hold."""
    text = json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return (
        text.replace("&", "\\u0026")
        .replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("\u2028", "\\u2028")
        .replace("\u2029", "\\u2029")
    )


def _script_source(text: str) -> str:
    return text.replace("</script", "<\\/script").replace("<!--", "<\\!--")


def _split_steps(data: dict) -> tuple[dict, list[str]]:
    """The page's data without its per-step tables, and each page's tables as lines of JSON, one step a line.

    A reader clicks a few tokens of a 7,000-step run: the page parses one line when its step is selected, instead
    of every step's values (most of the page) before it can draw."""
    pages, lines = {}, []
    for key in data["keys"]:
        page = data["pages"][key["key"]]
        names = list(page["steps"])
        count = max((len(table) for table in page["steps"].values()), default=0)
        rows = (
            {name: page["steps"][name][index] for name in names if index < len(page["steps"][name])}
            for index in range(count)
        )
        lines.append("\n".join(_json_for_script(row) for row in rows))
        pages[key["key"]] = {"values": page["values"], "step_views": names}
    return {**data, "pages": pages}, lines


def export_html(source, run: int | None = None) -> str:
    """The page as a string (see export)."""
    trace = _trace(source)
    data, step_lines = _split_steps(export_data(trace, run))
    modules = {view["module"]: module_source(view["module"]) for view in data["views"] if view["module"]}
    sheets = list(dict.fromkeys(["widgets.css"] + [view.css for view in VIEWS if view.css]))  # panels may share one
    styles = "".join((HERE / name).read_text(encoding="utf-8") for name in dict.fromkeys(sheets))
    nonce = secrets.token_urlsafe(18)
    state = DashboardState.from_trace(trace, run=run if run is not None else (trace.run or None))
    model = state.model_name() or "a saved trace"
    policy = (
        f"default-src 'none'; script-src 'nonce-{nonce}' blob:; style-src 'unsafe-inline'; "
        "img-src data: blob:; font-src data:; connect-src 'none'; base-uri 'none'; form-action 'none'"
    )
    return "".join(
        [
            "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>",
            f"<meta http-equiv='Content-Security-Policy' content=\"{policy}\">",
            "<meta name='viewport' content='width=device-width, initial-scale=1'>",
            f"<title>explain: {esc(model)}</title>",
            f"<style>{THEME_CSS}{styles}</style>",
            f"<script nonce='{nonce}'>{_script_source(plotly_basic_js_path().read_text(encoding='utf-8'))}</script>",
            f"<script type='application/json' id='explain-data'>{_json_for_script(data)}</script>",
            *(
                f"<script type='application/json' id='explain-steps-{number}'>{lines}</script>"
                for number, lines in enumerate(step_lines)
            ),  # the n-th picker entry's steps, one JSON line each
            f"<script type='application/json' id='explain-modules'>{_json_for_script(modules)}</script>",
            "</head><body data-jp-theme-light='true'><div id='explain-root'>",
            summary_html(state),  # what a reader sees without JavaScript (and until the views have drawn)
            "</div>",
            f"<script nonce='{nonce}' type='module'>{_script_source(module_source('export.js'))}"
            "</script></body></html>\n",
        ]
    )


def export(source, path: str | os.PathLike, run: int | None = None) -> str:
    """Write `source`'s dashboard (a pipeline, a Trace, or a saved trace's path) as one HTML page at `path`.

    Every call of the trace is in the page (a picker chooses the call and its forced branches), or only `run`.
    The file is replaced atomically: a failed export leaves an older one intact. Returns the path."""
    path = pathlib.Path(os.fspath(path))
    if path.is_dir():
        raise ExplainError(f"{path} is a folder; give the HTML file's path, e.g. {path / 'run.html'}")
    writable_target(path, "the page")  # a device, a FIFO or a missing folder: refused before the page is built
    html = export_html(source, run)
    return save_file(str(path), html, "the page")  # atomic; a disk error is an ExplainError naming the path
