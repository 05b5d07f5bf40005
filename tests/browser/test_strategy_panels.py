"""The decoding strategies' views (sampling tree, beam tree, drafted vs accepted) in a real JupyterLab, driven by
headless Chromium through playwright, 800 px wide, in the light and the dark theme. One notebook on the embedded
model: four samples, beam search, prompt lookup decoding, then the step-through's forced branch as a sampling tree.
The prompt of the samples is an HTML injection attempt: it must show as text and run nothing. Screenshots go to
test-artifacts/strategy-*.png. Skipped, with the reason, where chromium, playwright or JupyterLab is missing.
"""

from __future__ import annotations

from browser_support import ARTIFACTS

EVIL = "<img src=x onerror=alert(1)> Once upon a time"

CELLS = [
    "import torch, explain\nfrom explain.widgets import SamplingTree, BeamTree, DraftView\n"
    "pipe = explain.pipeline('text-generation')",
    f"torch.manual_seed(3)\nout = pipe({EVIL!r}, max_new_tokens=10, num_return_sequences=4, temperature=1.0)\n"
    "SamplingTree(pipe)",
    "pipe('The capital of France is', max_new_tokens=6, num_beams=3, num_return_sequences=2, do_sample=False)\n"
    "BeamTree(pipe)",
    "pipe('Copy this sentence: Paris is the capital of France.\\nCopy: Paris is', max_new_tokens=20, "
    "do_sample=False, prompt_lookup_num_tokens=3)\nDraftView(pipe)",
    "run = pipe.start('The best way to learn is', max_new_tokens=8, do_sample=False, keep_logits=True)\nrun.run(4)\n"
    "branch = run.force(1, run.steps[1]['probs_top']['ids'][2])\nbranch.run()\nrun.run()\nSamplingTree(run)",
]
VIEWS = {
    "sampling-tree": (1, ".explain-st"),
    "beam-tree": (2, ".explain-bt"),
    "drafts": (3, ".explain-dv"),
    "forced-branch-tree": (4, ".explain-st"),
}


def test_strategy_views_light_and_dark(open_notebook):
    notebook = open_notebook("strategies", CELLS, width=800)
    page, cell = notebook.page, notebook.cell
    page.evaluate("() => window.jupyterapp.commands.execute('application:toggle-left-area')")
    notebook.run_all()
    for index, selector in VIEWS.values():
        cell(index).locator(selector).first.wait_for(timeout=300_000)
    page.wait_for_function("() => document.querySelectorAll('.explain-bt-rank tr').length > 1", timeout=120_000)
    errors = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")
    assert errors.count() == 0 or "Error" not in errors.first.inner_text()

    tree = cell(1).locator(".explain-st").first
    assert tree.locator(".explain-st-split").count() >= 1, "four samples and no branch point"
    assert tree.locator(".explain-st-badge").count() >= 4
    assert EVIL.split(">")[0] in tree.inner_text()  # the prompt shows as text
    beams = cell(2).locator(".explain-bt").first
    assert beams.locator("svg .explain-bt-node.running").count() >= 3
    assert beams.locator("svg .explain-bt-edge.best").count() >= 2, "no returned path drawn"
    assert beams.locator(".explain-bt-rank tr.returned").count() == 2
    drafts = cell(3).locator(".explain-dv").first
    assert drafts.locator(".explain-dv-chip.accepted").count() >= 1, "prompt lookup accepted nothing"
    assert "drafted tokens accepted" in drafts.inner_text()
    labels = drafts.locator(".explain-dv-label").all_inner_texts()
    assert any(label.startswith("rounds ") for label in labels), labels  # idle rounds in one row
    forced = cell(4).locator(".explain-st").first
    assert "branch 1" in forced.inner_text() and forced.locator(".explain-st-forced").count() == 1
    assert notebook.dialogs == [] and page.locator("img[src='x']").count() == 0

    colors = {}
    for theme in ("light", "dark"):
        notebook.theme(theme)
        for name, (index, selector) in VIEWS.items():
            view = cell(index).locator(selector).first
            view.scroll_into_view_if_needed()
            view.screenshot(path=str(ARTIFACTS / f"strategy-{name}-{theme}.png"))
        colors[theme] = tree.evaluate("e => getComputedStyle(e).color")
    assert colors["light"] != colors["dark"], colors  # the views follow the theme's variables
