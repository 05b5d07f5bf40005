"""The workshop's lessons as static pages to re-read after the day: `python -m explain lessons OUT_DIR`.

Each notebook runs top to bottom in a fresh kernel, one after another, as a learner who tried every exercise (its
`tried = False` reads `tried = True`, so the solutions show their answers), and is written as one HTML page with
nbconvert: the code, its printed outputs, plots and tables. A live view (a widget) needs a kernel, so the page shows
the static HTML a view carries beside its widget (the dashboard's summary, the weights and quantization panels: what
nbconvert and GitHub show), else the view's one-line summary (the strategy trees: its run and what it drew); a
progress bar is named, not shown at the 0% it started from. The widget's own entry is dropped, and with it
nbconvert's "Error displaying widget" for a widget whose state a page cannot hold. Nothing is downloaded when the
pages open: no CDN, no widget manager.

Beside each lesson's page, every pipeline the lesson called gets explain.export's offline page (every call, every
view of the dashboard, interactive, no kernel or network: `<lesson>-views-N.html`), linked at the end of the lesson's
page and from index.html. The build records copies of each pipeline's events as the lesson runs (a cell it adds
before the lesson's first and takes out of the page), so a lesson that frees its pipeline still has its views.

The lessons write their scratch folders (lesson 00's bfloat16 copy of the model) into one temporary working
folder, removed at the end. The build prints each lesson's time and the cells that ran longer than 3 seconds.
"""

from __future__ import annotations

import datetime
import glob
import html
import json
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, field

from ..errors import ArgumentError, ExplainError

WIDGET = "application/vnd.jupyter.widget-view+json"
LONG_CELL_SECONDS = 3.0
# cells the build adds around a lesson, and takes out of its page: the first records the events of every pipeline the
# lesson makes (copies of its trace's events, not the pipeline, which the lesson frees), the last writes each
# pipeline's calls as explain.export's offline page (every view, interactive, no kernel)
RECORD = """\
import explain as _build_explain
_build_recorded = []
_build_pipeline = _build_explain.pipeline
def _build_recording_pipeline(*args, **kwargs):
    pipe = _build_pipeline(*args, **kwargs)
    events = []
    pipe.trace.subscribe(events.append, replay=True)
    _build_recorded.append((events, pipe.trace.meta))
    return pipe
_build_explain.pipeline = _build_recording_pipeline
"""
EXPORT = """\
import json as _build_json, os as _build_os
_build_written = []
for _build_events, _build_meta in _build_recorded:
    if any(event.run > 0 for event in _build_events):  # a pipeline that was called
        _build_name = {stem!r} + f"-views-{{len(_build_written) + 1}}.html"
        _build_trace = _build_explain.Trace(_build_events, _build_meta)
        _build_explain.export(_build_trace, _build_os.path.join({out!r}, _build_name))
        _build_written.append(_build_name)
print("EXPLAIN-BUILD-VIEWS", _build_json.dumps(_build_written))
"""
PROGRESS_BAR = re.compile(r"\|\s*\d+/\d+ \[")  # tqdm's "| 0/272 [00:00<?, ?it/s]"


@dataclass
class Built:
    """One lesson's page: where it was written, how long the lesson ran, and its cells that ran over 3 s."""

    notebook: str
    page: str
    seconds: float
    long_cells: list[tuple[int, float, str]] = field(default_factory=list)  # (cell index, seconds, first line)
    views: list[str] = field(default_factory=list)  # explain.export's page of each pipeline the lesson called


def lesson_paths(folder: str, only: list[str] | None = None) -> list[str]:
    """The notebooks of `folder` in their order (00_..., 01_...); `only` keeps those whose name starts with one of
    its entries ("03" or "03_tensors_and_shapes")."""
    if not os.path.isdir(folder):
        raise ArgumentError(
            f"--notebooks {folder} is not a folder; name the folder that holds the lessons (notebooks/ of a checkout)"
        )
    paths = sorted(glob.glob(os.path.join(folder, "*.ipynb")))
    if only:
        paths = [p for p in paths if any(os.path.basename(p).startswith(name) for name in only)]
    if not paths:
        wanted = f" starting with {', '.join(only)}" if only else ""
        raise ArgumentError(f"no notebook{wanted} in {folder}; name the lessons' folder (notebooks/ of a checkout)")
    return paths


def static_views(notebook) -> int:
    """Drops each output's widget entry, keeping the static HTML (or image) the view carries beside it; returns how
    many widget entries were dropped. The notebook's saved widget state goes too: a page
    cannot run the widgets' JavaScript without a kernel."""
    dropped = 0
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            if WIDGET in data:
                del data[WIDGET]
                dropped += 1
                if any(kind == "text/html" or kind.startswith("image/") for kind in data):
                    continue  # the view's own static form (explain's views carry one)
                text = str(data.get("text/plain", ""))
                if PROGRESS_BAR.search(text):  # tqdm's text is the bar as it started ("0%"): not what happened
                    text = "(a progress bar: it filled while the cell ran)"
                else:  # a view without a static form: its text says what it showed (its run, its summary)
                    text = (text + "\n" if text else "") + "(a live view: it draws in the running notebook)"
                data.clear()
                data["text/plain"] = text
    notebook.metadata.pop("widgets", None)
    return dropped


def _seconds(cell) -> float | None:
    timing = cell.metadata.get("execution", {})
    if "iopub.execute_input" not in timing or "shell.execute_reply" not in timing:
        return None
    start, end = (
        datetime.datetime.fromisoformat(timing[key].replace("Z", "+00:00"))
        for key in ("iopub.execute_input", "shell.execute_reply")
    )
    return (end - start).total_seconds()


def build_one(path: str, out_dir: str, workdir: str, timeout: int = 900) -> Built:
    """Executes the notebook at `path` in a fresh kernel (cwd `workdir`) and writes OUT_DIR/<name>.html."""
    import nbclient
    import nbconvert
    import nbformat

    notebook = nbformat.read(path, as_version=4)
    for cell in notebook.cells:  # a learner who tried: the solutions print their answers on the page
        if cell.cell_type == "code":
            cell.source = cell.source.replace("tried = False", "tried = True")
    stem = os.path.basename(path)[: -len(".ipynb")]
    notebook.cells.insert(0, nbformat.v4.new_code_cell(RECORD))
    notebook.cells.append(nbformat.v4.new_code_cell(EXPORT.format(stem=stem, out=os.path.abspath(out_dir))))
    client = nbclient.NotebookClient(
        notebook, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": workdir}}
    )
    start = time.perf_counter()
    try:
        client.execute()
    except nbclient.exceptions.CellExecutionError as error:
        raise ExplainError(f"{os.path.basename(path)} failed while building its page: {error}") from None
    seconds = time.perf_counter() - start
    notebook.cells.pop(0)
    printed = "".join(output.get("text", "") for output in notebook.cells.pop().outputs)
    views = json.loads(printed.split("EXPLAIN-BUILD-VIEWS", 1)[1])
    if views:
        links = ", ".join(f"[{name[len(stem) + 1 : -len('.html')]}]({name})" for name in views)
        notebook.cells.append(
            nbformat.v4.new_markdown_cell(
                f"**Offline views** of this lesson's pipelines (every call, every view, interactive; no kernel): "
                f"{links}"
            )
        )
    long_cells = []
    for index, cell in enumerate(notebook.cells):
        ran = _seconds(cell) if cell.cell_type == "code" else None
        if ran is not None and ran > LONG_CELL_SECONDS:
            long_cells.append((index, ran, cell.source.splitlines()[0] if cell.source else ""))
    static_views(notebook)
    text, _ = nbconvert.HTMLExporter(template_name="lab").from_notebook_node(notebook)
    page = os.path.join(out_dir, stem + ".html")
    with open(page, "w", encoding="utf-8") as f:
        f.write(text)
    return Built(path, page, seconds, long_cells, [os.path.join(out_dir, name) for name in views])


def build(out_dir: str, notebooks: str = "notebooks", only: list[str] | None = None, timeout: int = 900, echo=print):
    """Every lesson of `notebooks`, executed one at a time, as OUT_DIR/<lesson>.html plus an index.html."""
    paths = lesson_paths(notebooks, only)
    try:
        import nbclient  # noqa: F401
        import nbconvert  # noqa: F401
    except ImportError as error:
        raise ExplainError(
            f'building the lessons needs the notebook extra ({error}): pip install "explain[notebook]"'
        ) from None
    os.makedirs(out_dir, exist_ok=True)
    workdir = tempfile.mkdtemp(prefix="explain-lessons-")
    built = []
    try:
        for path in paths:
            echo(f"{os.path.basename(path)}: running ...", flush=True)
            one = build_one(path, out_dir, workdir, timeout)
            built.append(one)
            echo(f"  wrote {one.page} (ran {one.seconds:.0f} s) and {len(one.views)} offline views", flush=True)
            for index, ran, first in one.long_cells:
                echo(f"  cell {index}: {ran:.1f} s  {first[:70]}", flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    links = "\n".join(
        f'<li><a href="{html.escape(os.path.basename(b.page))}">{html.escape(os.path.basename(b.notebook))}</a>'
        + "".join(f' · <a href="{html.escape(os.path.basename(v))}">views {i}</a>' for i, v in enumerate(b.views, 1))
        + "</li>"
        for b in built
    )
    with open(os.path.join(out_dir, "index.html"), "w", encoding="utf-8") as f:
        f.write(f'<!doctype html><meta charset="utf-8"><title>explain: the lessons</title><ul>\n{links}\n</ul>\n')
    return built
