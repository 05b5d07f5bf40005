"""The workshop notebooks run top to bottom, offline, on the embedded model (CI executes every one).

Each notebook runs in a fresh kernel that inherits this session's environment: HF_HUB_OFFLINE=1 and the
temporary HF_HOME that provision() seeded, so a notebook that tried to download anything would fail here.
"""

from __future__ import annotations

import glob
import os

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOKS = sorted(glob.glob(os.path.join(os.path.dirname(__file__), "..", "notebooks", "*.ipynb")))
LESSONS = ["00_quickstart", "01_registry_and_config", "02_tokenization_and_chat_templates",
           "03_weights_dtypes_quantization", "04_device_map_auto", "05_generation_step_by_step", "06_sampling_knobs",
           "10_inside_the_model"]


def test_every_lesson_is_there():
    assert [os.path.basename(p)[:-6] for p in NOTEBOOKS] == LESSONS


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[os.path.basename(p)[:-6] for p in NOTEBOOKS])
def test_committed_without_outputs(path):
    notebook = nbformat.read(path, as_version=4)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{path}: commit notebooks without outputs"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[os.path.basename(p)[:-6] for p in NOTEBOOKS])
def test_notebook_runs_offline(path, provisioned, tmp_path):
    notebook = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError, naming the cell, on any error
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    # every lesson shows a view: a widget, or (04) the device plan's HTML with its per-device bars
    views = [o for o in outputs if "application/vnd.jupyter.widget-view+json" in o.get("data", {})
             or 'class="xdp"' in o.get("data", {}).get("text/html", "")]
    assert views, f"{os.path.basename(path)} displays no view"
