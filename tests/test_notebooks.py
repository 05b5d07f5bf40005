"""The workshop notebooks run top to bottom, offline, on the embedded model (CI executes every one), each within
the memory of a small notebook server; each has the parts a lesson needs.

Each notebook runs in a fresh kernel with this session's environment (HF_HUB_OFFLINE=1) and a copy of the temporary
HF_HOME that provision() seeded, so a notebook that tried to download anything would fail here. The kernels run in
the background from the session's first test, while the other tests run (tests/notebook_runner.py).
Memory is a test (the kernel's peak resident memory, read from /proc at the end); speed is not (docs/workshop.md
gives the measured times).
"""

from __future__ import annotations

import ast
import glob
import json
import os
import re
import sys

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOKS = sorted(glob.glob(os.path.join(os.path.dirname(__file__), "..", "notebooks", "*.ipynb")))
LESSONS = ["00_quickstart", "01_registry_and_config", "02_tokenization_and_chat_templates", "03_tensors_and_shapes",
           "04_weights_dtypes_quantization", "05_device_map_auto", "06_generation_step_by_step", "07_sampling_knobs",
           "08_decoding_strategies", "09_transformers_backend", "10_inside_the_model",
           "11_quantization_and_adapters"]
# A Binder kernel is guaranteed 1 GB (953 MiB); a lesson holds one model in bfloat16 at a time: measured peaks are
# 0.73-0.87 GiB, loading included (docs/workshop.md lists them). VmHWM counts the memory-mapped GGUF's pages too.
KERNEL_PEAK_MIB = 950
SOURCE_LINK = re.compile(r"https://github\.com/huggingface/transformers/blob/v[0-9.]+/src/transformers/\S+#L\d+")


def test_every_lesson_is_there():
    assert [os.path.basename(p)[:-6] for p in NOTEBOOKS] == LESSONS


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[os.path.basename(p)[:-6] for p in NOTEBOOKS])
def test_committed_without_outputs(path):
    notebook = nbformat.read(path, as_version=4)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{path}: commit notebooks without outputs"
    with open(path, encoding="utf-8") as f:  # as committed: nbformat.read would fill in missing ids
        assert all("id" in cell for cell in json.load(f)["cells"]), f"{path}: every cell needs a stable id"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[os.path.basename(p)[:-6] for p in NOTEBOOKS])
def test_lesson_has_goals_a_hidden_solution_a_summary_and_the_transformers_code(path):
    """The scaffolding of a lesson: learning goals first, a try-it-first exercise whose solution starts collapsed,
    a summary, the same in plain transformers (code that parses), and links to the transformers source lines it
    explains. A solution written as `#@title Solution` + `if tried:` (lessons 00-07) also starts with its output
    collapsed and a Colab form view, and prints only once the learner set `tried = True`."""
    notebook = nbformat.read(path, as_version=4)
    markdown = [c.source for c in notebook.cells if c.cell_type == "markdown"]
    assert "**You will learn to**" in markdown[0] or "**By the end you can**" in markdown[0], \
        "the first cell states the learning goals"
    assert any("Try it first" in text for text in markdown)
    solutions = [c for c in notebook.cells if c.cell_type == "code" and c.metadata.get("jupyter", {}).get("source_hidden")]
    assert solutions, "an exercise's solution is a collapsed cell"
    for cell in solutions:
        if cell.source.startswith("#@title Solution"):
            assert cell.metadata["jupyter"] == {"source_hidden": True, "outputs_hidden": True}
            assert cell.metadata["cellView"] == "form"
            # JupyterLab shows a collapsed cell's output once it runs: the answer prints only after the learner's
            # `tried = True`, so Shift-Enter or Run All through the lesson does not give it away
            assert cell.source.splitlines()[1] == "if tried:"
            assert any("tried = False" in c.source for c in notebook.cells if c.cell_type == "code")
    assert any("## Summary" in text for text in markdown)
    plain = [text for text in markdown if "## The same in plain transformers" in text]
    assert plain, "the lesson ends with the plain-transformers code"
    blocks = re.findall(r"```python\n(.*?)```", plain[-1], re.S)
    assert blocks and "transformers" in blocks[0]
    for block in blocks:
        ast.parse(block)  # it is real Python (docs/workshop.md says where each was run)
    assert SOURCE_LINK.search("\n".join(markdown)), "the lesson links the transformers source lines it explains"
    assert not [text for text in markdown if re.search(r"\{[a-z_]+\(", text)], "a source link left unrendered"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the kernel's peak memory from /proc")
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[os.path.basename(p)[:-6] for p in NOTEBOOKS])
def test_notebook_runs_offline(path, notebooks_in_background):
    """Executed in the background from the session's start (tests/notebook_runner.py); checked here."""
    notebook, peak_mib, seconds = notebooks_in_background.result(path)  # raises CellExecutionError, naming the cell
    print(f"{os.path.basename(path)}: kernel peak {peak_mib:.0f} MiB, ran {seconds:.0f} s (beside other tests)")
    assert peak_mib < KERNEL_PEAK_MIB, (f"{os.path.basename(path)} peaked at {peak_mib:.0f} MiB; a lesson must fit a "
                                        f"1 GB kernel: bfloat16, one model at a time, free what it is done with")
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    # every lesson shows a view: a widget, or (05) the device plan's HTML with its per-device bars
    views = [o for o in outputs if "application/vnd.jupyter.widget-view+json" in o.get("data", {})
             or 'class="xdp"' in o.get("data", {}).get("text/html", "")]
    assert views, f"{os.path.basename(path)} displays no view"
