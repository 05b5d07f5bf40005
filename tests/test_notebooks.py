"""The workshop notebooks run top to bottom, offline, on the embedded model (CI executes every one), each within
the memory of a small notebook server; each has the parts a lesson needs.

Each notebook runs in a fresh kernel with this session's environment (HF_HUB_OFFLINE=1) and a copy of the temporary
HF_HOME that provision() seeded, so a notebook that tried to download anything would fail here. The kernels run in
the background from the session's first test, while the other tests run (tests/notebook_runner.py).
Memory is a test (the kernel's peak resident memory, read from /proc at the end); speed is not (docs/workshop.md
gives the measured times).
"""

from __future__ import annotations

import glob
import json
import os
import re
import sys

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOKS = sorted(glob.glob(os.path.join(os.path.dirname(__file__), "..", "notebooks", "*.ipynb")))
LESSONS = [
    "00_quickstart",
    "01_registry_and_config",
    "02_tokenization_and_chat_templates",
    "03_tensors_and_shapes",
    "04_weights_dtypes_quantization",
    "05_device_map_auto",
    "06_generation_step_by_step",
    "07_sampling_knobs",
    "08_decoding_strategies",
    "09_transformers_backend",
    "10_inside_the_model",
    "11_quantization_and_adapters",
]
# A Binder kernel is guaranteed 1 GB (953 MiB); a lesson holds one model in bfloat16 at a time: measured peaks are
# 765-872 MiB, loading included (docs/workshop.md lists them). VmHWM counts the memory-mapped GGUF's resident pages
# too (the loader drops each tensor's once read: formats/gguf_format.release_pages).
KERNEL_PEAK_MIB = 950
# sentences a review found wrong and the lessons corrected (issue 27): they do not come back
CORRECTED = {
    "01_registry_and_config": ["a two-layer feed-forward network"],
    "02_tokenization_and_chat_templates": [
        "fewest vocabulary entries the merges can build",
        "this vocabulary has no merge of two digits, so",
    ],
    "05_device_map_auto": ["fills the devices in order (GPU 0, GPU 1, ..., then CPU, then\ndisk)"],
    "06_generation_step_by_step": ["all 36 of the prompt's tokens", "by 36"],
    "09_transformers_backend": ["the 50 it keeps"],
    "11_quantization_and_adapters": ["with small random numbers (an untrained adapter"],
}
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
    a summary, the same in plain transformers (an executed cell compared with explain's result), and links to the
    transformers source lines it explains. Every solution is written as `#@title Solution` + a check of `tried`: it
    starts with its output collapsed and a Colab form view, and prints its answer only once the learner set
    `tried = True`, a hint before."""
    notebook = nbformat.read(path, as_version=4)
    markdown = [c.source for c in notebook.cells if c.cell_type == "markdown"]
    assert "**You will learn to**" in markdown[0] or "**By the end you can**" in markdown[0], (
        "the first cell states the learning goals"
    )
    assert any("Try it first" in text for text in markdown)
    solutions = [
        c for c in notebook.cells if c.cell_type == "code" and c.metadata.get("jupyter", {}).get("source_hidden")
    ]
    assert solutions, "an exercise's solution is a collapsed cell"
    # every lesson has exercise cells (a learner's cell ending in `tried = False`), each followed by its solution
    exercises = [i for i, c in enumerate(notebook.cells) if c.cell_type == "code" and "tried = False" in c.source]
    assert exercises, "a lesson has exercise cells"
    for cell in solutions:
        assert cell.source.startswith("#@title Solution"), "every hidden solution uses the one gating pattern"
        assert cell.metadata["jupyter"] == {"source_hidden": True, "outputs_hidden": True}
        assert cell.metadata["cellView"] == "form"
        # JupyterLab shows a collapsed cell's output once it runs: the answer prints only after the learner's
        # `tried = True`, so Shift-Enter or Run All through the lesson does not give it away; a solution run before
        # its exercise (no `tried` yet) prints a hint instead of failing with a NameError
        lines = cell.source.splitlines()
        assert lines[1] == 'if not globals().get("tried"):' and "else:" in lines[2:5], "the one gating pattern"
        printed: list[str] = []
        namespace = {"print": lambda *words, out=printed, **_: out.append(" ".join(map(str, words)))}
        exec(compile(cell.source, path, "exec"), namespace)  # noqa: S102 (the lesson's own cell, as a kernel runs it)
        assert printed and "tried = True" in printed[0], "run before its exercise, a solution prints a hint"
    assert any("## Summary" in text for text in markdown)
    heading = [
        i
        for i, c in enumerate(notebook.cells)
        if c.cell_type == "markdown" and "The same in plain transformers" in c.source
    ]
    assert heading, "the lesson ends with the plain-transformers code"
    # a runnable twin: executed cells after the heading that run transformers and compare with explain's result
    twins = [c.source for c in notebook.cells[heading[-1] + 1 :] if c.cell_type == "code"]
    blocks = re.findall(r"```python\n(.*?)```", notebook.cells[heading[-1]].source, re.DOTALL)
    assert not blocks, "the plain-transformers code is an executed cell, not a markdown block"
    assert twins and any("transformers" in t for t in twins) and any("assert" in t for t in twins), (
        "the plain-transformers twin runs and is compared with explain's result in the cell"
    )
    assert SOURCE_LINK.search("\n".join(markdown)), "the lesson links the transformers source lines it explains"
    assert not [text for text in markdown if re.search(r"\{[a-z_]+\(", text)], "a source link left unrendered"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the kernel's peak memory from /proc")
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[os.path.basename(p)[:-6] for p in NOTEBOOKS])
def test_notebook_runs_offline(path, notebooks_in_background):
    """Executed in the background from the session's start (tests/notebook_runner.py); checked here."""
    notebook, peak_mib, seconds = notebooks_in_background.result(path)  # raises CellExecutionError, naming the cell
    print(f"{os.path.basename(path)}: kernel peak {peak_mib:.0f} MiB, ran {seconds:.0f} s (beside other tests)")
    assert peak_mib < KERNEL_PEAK_MIB, (
        f"{os.path.basename(path)} peaked at {peak_mib:.0f} MiB; a lesson must fit a "
        f"1 GB kernel: bfloat16, one model at a time, free what it is done with"
    )
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    # every lesson shows a view: a widget, or (05) the device plan's HTML with its per-device bars
    views = [
        o
        for o in outputs
        if "application/vnd.jupyter.widget-view+json" in o.get("data", {})
        or 'class="xdp"' in o.get("data", {}).get("text/html", "")
    ]
    assert views, f"{os.path.basename(path)} displays no view"


@pytest.mark.parametrize("lesson", sorted(CORRECTED))
def test_corrected_sentences_stay_corrected(lesson):
    with open(os.path.join(os.path.dirname(__file__), "..", "notebooks", f"{lesson}.ipynb"), encoding="utf-8") as f:
        text = "".join("".join(cell["source"]) for cell in json.load(f)["cells"])
    for sentence in CORRECTED[lesson]:
        assert sentence not in text, f"{lesson}: {sentence!r} was corrected (issue 27)"


def test_what_the_lessons_teach_holds_in_the_installed_sources():
    """Facts the lessons state about transformers and peft, checked against the installed packages (each lesson
    cites the file and line); the lessons' own cells check the rest on the real model as they run."""
    import inspect

    import torch

    from explain.stages.tokenizer import GGUF_PRE_TOKENIZER_SPLITS as OURS

    transformers = pytest.importorskip("transformers")
    from transformers.generation.logits_process import TopKLogitsWarper
    from transformers.integrations.gguf.gguf_tokenizer_mapping import (
        GGUF_PRE_TOKENIZER_SPLITS,
    )

    # 02: the GGUF names the smollm pre-tokenizer (digits isolated first); the loader's table has no split for it,
    # so transformers (and explain, which copies the table) keep ByteLevel alone: the digit step is dropped
    assert "smollm" not in GGUF_PRE_TOKENIZER_SPLITS and OURS.keys() == GGUF_PRE_TOKENIZER_SPLITS.keys()
    # 02: transformers 5's apply_chat_template returns the ids and their mask unless told otherwise
    defaults = inspect.signature(transformers.PreTrainedTokenizerBase.apply_chat_template).parameters
    assert defaults["tokenize"].default is True and defaults["return_dict"].default is True
    # 09: top_k keeps every token tied with the k-th largest score (it removes only those strictly below)
    kept = TopKLogitsWarper(top_k=2)(None, torch.tensor([[3.0, 2.0, 2.0, 2.0, 1.0]]))
    assert torch.isfinite(kept).sum() == 4
    # 11: a new LoRA adapter starts with B = 0 (A random), so an untrained adapter changes nothing
    peft = pytest.importorskip("peft")
    model = peft.get_peft_model(torch.nn.Sequential(torch.nn.Linear(8, 8)), peft.LoraConfig(r=2, target_modules=["0"]))
    layer = model.base_model.model[0]
    assert torch.count_nonzero(layer.lora_B["default"].weight) == 0
    assert torch.count_nonzero(layer.lora_A["default"].weight) > 0
    x = torch.randn(3, 8)
    assert torch.equal(model(x), layer.base_layer(x))


def test_the_seed_models_generation_config_ships_and_overrides_the_pipelines_defaults():
    """Lesson 07: Llama 3.1 8B Instruct's generation_config.json ships with explain (the public file's values), and
    the pipeline's defaults apply only where it sets nothing, in explain as in transformers' pipeline."""
    from types import SimpleNamespace

    transformers = pytest.importorskip("transformers")

    import explain
    from explain.generation.settings import GENERATE_DEFAULTS, resolve
    from explain.stages.config import generation_config

    data = os.path.join(os.path.dirname(explain.__file__), "data")
    name = "meta-llama--Llama-3.1-8B-Instruct.json"
    with open(os.path.join(data, "generation_configs", name), encoding="utf-8") as f:
        shipped = json.load(f)
    with open(os.path.join(data, "configs", name), encoding="utf-8") as f:
        config = json.load(f)
    assert shipped == {
        "bos_token_id": 128000,
        "do_sample": True,
        "eos_token_id": [128001, 128008, 128009],
        "temperature": 0.6,
        "top_p": 0.9,
        "transformers_version": "4.42.3",
    }
    assert (config["bos_token_id"], config["eos_token_id"]) == (shipped["bos_token_id"], shipped["eos_token_id"])
    settings, sources = resolve(
        {},
        *generation_config(config, shipped, GENERATE_DEFAULTS),
        prompt_length=5,
        max_position_embeddings=config["max_position_embeddings"],
        pad_token_id=None,
    )
    pipeline = transformers.TextGenerationPipeline
    defaults = pipeline._default_generation_config.to_diff_dict()
    defaults.pop("transformers_version", None)
    model = SimpleNamespace(generation_config=transformers.GenerationConfig.from_dict(shipped))
    stand_in = SimpleNamespace(model=model, _generate_kwargs={}, _generation_defaults=defaults)
    stand_in._get_set_generation_params = lambda kwargs: pipeline._get_set_generation_params(stand_in, kwargs)
    added = pipeline._prepare_generate_kwargs(stand_in, {})
    assert added == {"max_new_tokens": 256}
    assert added == {k: settings[k] for k, source in sources.items() if source == "text-generation pipeline default"}
    assert (settings["temperature"], settings["top_p"]) == (0.6, 0.9)
    assert settings["eos_token_id"] == [128001, 128008, 128009]


def _minutes(clock: str) -> int:
    hours, minutes = clock.split(":")
    return int(hours) * 60 + int(minutes)


def test_the_guides_schedule_is_the_lessons_own_estimates():
    """docs/workshop.md's two schedules: each lesson's slot is the time its header states (*About N minutes*), every
    lesson has one slot, the slots follow each other without gaps, and the core takes exactly 3 hours."""
    headers = {}
    for path in NOTEBOOKS:
        first = nbformat.read(path, as_version=4).cells[0].source
        found = re.search(r"\*About (\d+) minutes", first)
        assert found, f"{os.path.basename(path)} states its length under its goals (*About N minutes*)"
        headers[os.path.basename(path)[:2]] = int(found.group(1))
    with open(os.path.join(os.path.dirname(__file__), "..", "docs", "workshop.md"), encoding="utf-8") as f:
        guide = f.read()
    core = guide[guide.index("## Order and timing") : guide.index("## Exercises and answers")]
    second = guide[guide.index("## The second session") : guide.index("**10. Exercises**")]
    slots = {}
    for name, section in (("core", core), ("second", second)):
        rows = re.findall(r"^\| (\d+:\d\d)-(\d+:\d\d) \| ([^|]+) \|", section, re.MULTILINE)
        assert rows and rows[0][0] == "0:00", name
        for (start, end, slot), following in zip(rows, rows[1:] + [(None,) * 3], strict=False):
            assert following[0] in (None, end), f"{name}: the slot after {slot!r} starts at {end}"
            lesson = re.match(r"(\d\d) ", slot)
            if lesson:
                assert lesson.group(1) not in slots, f"lesson {lesson.group(1)} has two slots"
                slots[lesson.group(1)] = _minutes(end) - _minutes(start)
        if name == "core":
            assert rows[-1][1] == "3:00", "the core workshop takes 3 hours"
    assert slots == headers, "each slot is the lesson's own estimate"
