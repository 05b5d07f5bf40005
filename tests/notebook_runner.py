"""The workshop notebooks, executed in the background while the rest of the suite runs.

Executing the twelve lessons takes about half of the suite's time, and each kernel runs on one thread (the tests
set OMP_NUM_THREADS=1), so run one after another in the main process they leave CI's second core idle. Instead the
session starts them at its first test, one kernel at a time on a thread of their own, and each
test_notebook_runs_offline waits for its own notebook's result and checks it then.

Each kernel gets a snapshot of the session's environment taken at the start (a test that changes os.environ later
does not reach it) and an HF_HOME of its own, hard-linked from the session's provisioned cache, so whatever a
notebook writes into its cache never shows in the session's (tests/conftest.py's `cache_untouched` compares the
session's cache before and after).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
from concurrent.futures import Future

# the kernel's peak resident memory, read from /proc at the end
PEAK_CELL = "print('VmHWM', [line.split()[1] for line in open('/proc/self/status') if line.startswith('VmHWM')][0])"


def execute(path: str, env: dict, workdir: str):
    """Run the notebook at `path` top to bottom as a learner who tried each exercise: returns (notebook with its
    outputs, kernel peak in MiB, seconds it ran); raises nbclient's CellExecutionError, naming the cell, on any
    error."""
    import nbclient
    import nbformat

    notebook = nbformat.read(path, as_version=4)
    for cell in notebook.cells:  # a learner who tried: every solution runs, so its answer is checked too
        cell.source = cell.source.replace("tried = False", "tried = True")
    notebook.cells.append(nbformat.v4.new_code_cell(PEAK_CELL))
    client = nbclient.NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": workdir}}
    )
    start = time.perf_counter()
    client.execute(env=env)
    peak_mib = int(notebook.cells.pop().outputs[0].text.split()[1]) / 1024
    return notebook, peak_mib, time.perf_counter() - start


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
