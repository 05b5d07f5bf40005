"""`python -m explain lessons OUT_DIR` writes each lesson, executed, as a static page to re-read after the day.

Built here from a short notebook of the lessons' kind (load a model, print, show a view, the gating pattern), so the
test takes seconds rather than a lesson's minutes: the page holds the executed outputs and the views' static HTML,
and no widget the page could not draw.
"""

from __future__ import annotations

import os
import re

import pytest

nbformat = pytest.importorskip("nbformat")
pytest.importorskip("nbconvert")
pytest.importorskip("nbclient")


def _notebook(folder, model: str) -> None:
    cells = [
        nbformat.v4.new_markdown_cell("# A short lesson\n\n**You will learn to** read a page."),
        nbformat.v4.new_code_cell(
            "import explain\n"
            f"pipe = explain.pipeline('text-generation', model={model!r})\n"
            "out = pipe('Hello', max_new_tokens=3, do_sample=False)\n"
            "text = out[0]['generated_text']\n"
            "print('steps', len(pipe.last_generation.steps), 'from Hello:', text.startswith('Hello'))"
        ),
        nbformat.v4.new_code_cell("explain.show(pipe)"),
        nbformat.v4.new_code_cell("import ipywidgets\nipywidgets.IntSlider(value=3)"),  # no static form of its own
        nbformat.v4.new_code_cell("# your code here\n\n\ntried = False"),
        nbformat.v4.new_code_cell(
            '#@title Solution\nif not globals().get("tried"):\n    print("Not yet")\n'
            'else:\n    print("the answer", 6 * 7)'
        ),
    ]
    nbformat.write(nbformat.v4.new_notebook(cells=cells), os.path.join(folder, "00_short.ipynb"))


def test_a_lesson_builds_into_a_static_page_with_its_outputs_and_views(tiny_folder, tmp_path, capsys):
    from explain.__main__ import main

    notebooks, out = tmp_path / "notebooks", tmp_path / "pages"
    notebooks.mkdir()
    _notebook(notebooks, tiny_folder)
    assert main(["lessons", str(out), "--notebooks", str(notebooks)]) == 0
    printed = capsys.readouterr().out
    assert "00_short.ipynb" in printed and "wrote 1 lesson pages" in printed
    page = (out / "00_short.html").read_text(encoding="utf-8")
    index = (out / "index.html").read_text(encoding="utf-8")
    assert 'href="00_short.html"' in index
    # the executed outputs: the generation's printed line, and the solution's answer (the page shows it as tried)
    assert "steps 3 from Hello: True" in page, "the page holds the cell's printed output"
    assert "<pre>the answer 42" in page and "<pre>Not yet" not in page
    # the dashboard's static HTML stands in for its widget: no widget entry, no widget manager, no error
    assert "application/vnd.jupyter.widget-view+json" not in page
    assert "Error displaying widget" not in page and "widget-state+json" not in page
    assert 'class="explain-static"' in page, "the view's static HTML is on the page"
    assert "IntSlider(value=3)\n(a live view: it draws in the running notebook)" in page, "a view with no static form"
    # the pipeline's calls as explain.export's offline page, linked from the lesson's page and the index
    views = (out / "00_short-views-1.html").read_text(encoding="utf-8")
    assert 'href="00_short-views-1.html"' in page and 'href="00_short-views-1.html"' in index
    assert "exported by explain on" in views and "call 1" in views
    assert "_build_" not in page, "the build's own cells stay off the page"
    body = page[page.index("<body") :]
    assert not re.search(r"\{\{|\}\}|\{%|%\}", body), "an unrendered template placeholder"


def test_the_build_names_a_missing_folder(tmp_path, capsys):
    from explain.__main__ import main

    assert main(["lessons", str(tmp_path / "pages"), "--notebooks", str(tmp_path / "nowhere")]) == 2
    error = capsys.readouterr().err
    assert "nowhere is not a folder" in error and "--notebooks" in error


def test_a_progress_bar_is_named_and_a_view_keeps_its_static_form():
    from explain.features.lessons import static_views

    widget = {"model_id": "x", "version_major": 2, "version_minor": 0}
    shown = [
        {"text/plain": "Loading weights:   0%|          | 0/272 [00:00<?, ?it/s]"},  # tqdm, as it started
        {"text/plain": "Dashboard(...)", "text/html": '<div class="explain-static">3 steps</div>'},
        {"text/plain": "BeamTree(run 5, 'call 5: 12 steps')"},
    ]
    cell = nbformat.v4.new_code_cell("", outputs=[nbformat.v4.new_output("display_data", dict(d)) for d in shown])
    for output in cell.outputs:
        output.data["application/vnd.jupyter.widget-view+json"] = widget
    notebook = nbformat.v4.new_notebook(cells=[cell], metadata={"widgets": {"state": {}}})
    assert static_views(notebook) == 3
    bar, dashboard, tree = (dict(o.data) for o in cell.outputs)
    assert bar == {"text/plain": "(a progress bar: it filled while the cell ran)"}
    assert dashboard == shown[1]
    assert tree == {"text/plain": shown[2]["text/plain"] + "\n(a live view: it draws in the running notebook)"}
    assert "widgets" not in notebook.metadata
