"""The places inside transformers.pipeline() that the loading observer listens at, and a context that listens.

Each point is a module-level name that transformers looks up at call time, so replacing it for the duration of one
pipeline() call sees every call there and changes nothing else: the replacement calls the original with the same
arguments and returns what it returned. Restored on exit, even when loading fails.

A transformers release that moves one of these names fails `check()` with the list of what moved (and the test of
the patch points fails), instead of silently tracing less.
"""

from __future__ import annotations

import importlib
from contextlib import contextmanager

# (module, name): what the observer learns there
POINTS = {
    (
        "transformers.pipelines",
        "check_task",
    ): "the task lookup: normalised task, pipeline class, model classes, default",
    ("transformers.pipelines", "AutoConfig"): "the config stage: AutoConfig.from_pretrained and what it returned",
    ("transformers.pipelines", "load_model"): "the weights and placement stages: from_pretrained of the model class",
    ("transformers.pipelines", "_resolve_tokenizer"): "the tokenizer stage: AutoTokenizer.from_pretrained",
    ("transformers.utils.hub", "cached_files"): "every Hub file resolved: repo, filename, revision, commit, cache",
    ("transformers.modeling_utils", "_get_resolved_checkpoint_files"): "the weights files (a local folder's too)",
    ("transformers.modeling_utils", "log_state_dict_report"): "the loading report: missing, unexpected, mismatched",
    ("transformers.modeling_utils", "_get_device_map"): "the device map transformers computed (device_map=...)",
    ("transformers.integrations.accelerate", "infer_auto_device_map"): "accelerate's plan and the max_memory it got",
    ("transformers.modeling_utils", "accelerate_dispatch"): "accelerate's dispatch: hooks, offload",
    ("transformers.core_model_loading", "tqdm"): "the progress of loading the weights, tensor by tensor",
}


def check() -> None:
    missing = []
    for module_name, name in POINTS:
        module = importlib.import_module(module_name)
        if not hasattr(module, name):
            missing.append(f"{module_name}.{name}")
    if missing:
        import transformers

        raise RuntimeError(
            f"transformers {transformers.__version__} no longer has {', '.join(missing)}; the "
            "transformers backend cannot observe its loading (explain/backends/transformers/patches.py)"
        )


@contextmanager
def listening(replacements: dict):
    """Replace each (module, name) in `replacements` by `make(original)` for the duration of the block."""
    check()
    saved = []
    try:
        for (module_name, name), make in replacements.items():
            module = importlib.import_module(module_name)
            original = getattr(module, name)
            saved.append((module, name, original))
            setattr(module, name, make(original))
        yield
    finally:
        for module, name, original in reversed(saved):
            setattr(module, name, original)
