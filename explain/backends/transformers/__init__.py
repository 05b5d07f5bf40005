"""backend="transformers": the real transformers.pipeline(), traced in explain's events.

    build.py           explain.pipeline(..., backend="transformers") and explain.attach(tpipe)
    loading.py         the loading stages, observed inside transformers.pipeline() (patches.py lists where)
    facts.py           what transformers built (config, tokenizer, model, device map), as event data
    quantized.py       transformers' quantized weights (torchao, quanto) and peft's LoRA layers, as weights events
    pipeline_class.py  TracedTextGenerationPipeline: transformers' TextGenerationPipeline, its stages traced
    generation.py      TransformersGeneration: one call's steps; step-through over the real generate()
    hooks.py           the recording processor list, stopping criteria and forward hooks around generate()
    records.py         processors, settings, caches and stop reasons as explain's records
    errors.py          transformers' loading errors reworded as explain's

Importing this package imports transformers; `import explain` does not import this package.
"""

from .build import attach, pipeline
from .generation import TransformersGeneration
from .pipeline_class import TracedTextGenerationPipeline

__all__ = ["pipeline", "attach", "TracedTextGenerationPipeline", "TransformersGeneration"]
