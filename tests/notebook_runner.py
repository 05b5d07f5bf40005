"""The workshop notebooks, executed in the background while the rest of the suite runs.

Executing the twelve lessons takes about half of the suite's time, and each kernel runs on one thread (the tests
set OMP_NUM_THREADS=1), so run one after another in the main process they leave CI's second core idle. Instead the
session starts them at its first test, one kernel at a time on a thread of their own, and each
test_notebook_runs_offline waits for its own notebook's result and checks it then.

Each kernel gets a snapshot of the session's environment taken at the start (a test that changes os.environ later
does not reach it) and an HF_HOME of its own, hard-linked from the session's provisioned cache, so whatever a
notebook writes into its cache never shows in the session's (tests/conftest.py's `cache_untouched` compares the
session's cache before and after).

Each code cell is timed as it runs (CellTiming: its seconds, and how long it showed nothing), for
test_no_cell_is_silent_for_long.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass

# the kernel's peak resident memory, read from /proc at the end
PEAK_CELL = "print('VmHWM', [line.split()[1] for line in open('/proc/self/status') if line.startswith('VmHWM')][0])"


# what tells a learner the cell is getting on: printed text, a display, an error, a cleared output; an update of a
# display, or of a widget (a live view filling in, a tqdm bar moving), counts only where this cell shows it (a
# dashboard displayed earlier that fills in while this cell generates is out of sight). Not stderr: there the
# libraries' warnings go (importing transformers prints torch's), which say nothing of what the cell is doing, and in
# a kernel with ipywidgets tqdm's bars are widgets
SHOWN = {"display_data", "execute_result", "error", "clear_output"}
WIDGET = "application/vnd.jupyter.widget-view+json"


@dataclass
class CellTiming:
    """One code cell as it ran: `seconds` from the kernel starting it to its end, `silent` from its start to its
    first output (all of `seconds` when it showed nothing), `longest_gap` the longest stretch without an output
    (first output included). Measured on the kernel's own message timestamps, so a busy test process reading them
    late does not count."""

    index: int
    source: str
    seconds: float
    silent: float
    longest_gap: float


def _when(msg: dict) -> float:
    return msg["header"]["date"].timestamp()  # jupyter_client parses it into an aware datetime


def _models(value) -> list[str]:
    """The widget model ids a widget's state refers to (its children, its layout, ...)."""
    if isinstance(value, str):
        return [value[len("IPY_MODEL_") :]] if value.startswith("IPY_MODEL_") else []
    if isinstance(value, (list, tuple)):
        return [model for item in value for model in _models(item)]
    if isinstance(value, dict):
        return [model for item in value.values() for model in _models(item)]
    return []


def timed_client(notebook, **options):
    """An nbclient.NotebookClient that records each code cell's CellTiming in its `timings`."""
    import nbclient

    class TimedClient(nbclient.NotebookClient):
        timings: list[CellTiming]
        running: dict | None = None

        def _visible(self, msg: dict, cell, cell_index: int) -> bool:
            """Whether a message changes what this cell shows."""
            kind, content = msg["msg_type"], msg["content"]
            if kind in SHOWN or (kind == "stream" and content.get("name") == "stdout"):
                return True
            if kind == "update_display_data":
                display_id = str((content.get("transient") or {}).get("display_id"))
                return cell_index in self._display_id_map.get(display_id, {})
            if kind != "comm_msg" or content.get("data", {}).get("method") != "update":
                return False
            # a widget shown in this cell, or one inside it (a bar of a tqdm HBox, a dashboard's panel)
            seen, todo = set(), [o["data"][WIDGET]["model_id"] for o in cell.outputs if WIDGET in o.get("data", {})]
            while todo:
                model = todo.pop()
                if model not in seen:
                    seen.add(model)
                    todo.extend(_models(self.widget_state.get(model, {})))
            return content["comm_id"] in seen

        def process_message(self, msg, cell, cell_index):
            kind, now = msg["msg_type"], _when(msg)
            state = msg["content"].get("execution_state") if kind == "status" else None
            if state == "busy":
                self.running = {"start": now, "last": now, "first": None, "gap": 0.0}
            elif self.running is not None and state is None and self._visible(msg, cell, cell_index):
                running = self.running
                running["gap"] = max(running["gap"], now - running["last"])
                running["last"] = now
                running["first"] = running["first"] if running["first"] is not None else now
            elif state == "idle" and self.running is not None:
                running, self.running = self.running, None
                first = running["first"] if running["first"] is not None else now
                gap = max(running["gap"], now - running["last"])
                self.timings.append(
                    CellTiming(cell_index, cell.source, now - running["start"], first - running["start"], gap)
                )
            return super().process_message(msg, cell, cell_index)

    client = TimedClient(notebook, **options)
    client.timings = []
    return client


@dataclass
class Ran:
    """A notebook as executed: with its outputs, the kernel's peak in MiB, the seconds it ran, each code cell's
    CellTiming."""

    notebook: object
    peak_mib: float
    seconds: float
    cells: list[CellTiming]


def execute(path: str, env: dict, workdir: str) -> Ran:
    """Run the notebook at `path` top to bottom as a learner who tried each exercise; raises nbclient's
    CellExecutionError, naming the cell, on any error."""
    import nbformat

    notebook = nbformat.read(path, as_version=4)
    for cell in notebook.cells:  # a learner who tried: every solution runs, so its answer is checked too
        cell.source = cell.source.replace("tried = False", "tried = True")
    notebook.cells.append(nbformat.v4.new_code_cell(PEAK_CELL))
    client = timed_client(notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": workdir}})
    start = time.perf_counter()
    client.execute(env=env)
    peak_mib = int(notebook.cells.pop().outputs[0].text.split()[1]) / 1024
    cells = [timing for timing in client.timings if timing.index < len(notebook.cells)]  # not the peak's cell
    return Ran(notebook, peak_mib, time.perf_counter() - start, cells)


class BackgroundNotebooks:
    """Executes `paths` in order on one daemon thread; result(path) waits for that notebook."""

    def __init__(self, paths: list[str], hf_home: str):
        self.root = tempfile.mkdtemp(prefix="explain-tests-notebooks-")
        home = os.path.join(self.root, "hf-home")
        shutil.copytree(hf_home, home, symlinks=True, copy_function=os.link)
        self.env = {**os.environ, "HF_HOME": home}
        self.futures: dict[str, Future] = {path: Future() for path in paths}
        self.stopped = False
        self.thread = threading.Thread(target=self._run, name="notebooks", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        for index, (path, future) in enumerate(self.futures.items()):
            if self.stopped or not future.set_running_or_notify_cancel():
                continue
            try:
                workdir = os.path.join(self.root, f"run-{index}")
                os.makedirs(workdir)
                future.set_result(execute(path, self.env, workdir))
            except BaseException as error:  # reported by the notebook's own test, in the main thread
                future.set_exception(error)

    def result(self, path: str):
        return self.futures[path].result()

    def close(self) -> None:
        """At the session's end: notebooks not started are cancelled (an interrupted or -x session)."""
        self.stopped = True
        for future in self.futures.values():
            future.cancel()
        self.thread.join(timeout=5)  # an interrupted session: the kernel exits with its parent (ipykernel polls it)
        shutil.rmtree(self.root, ignore_errors=True)
