"""The pipeline's stages, in order, with what each one is: the one list every view and producer loops over."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Stage:
    name: str
    phase: str  # "loading": once, when the pipeline is built (run 0); "call": every call of the pipeline
    title: str
    description: str


STAGE_LIST = (
    Stage(
        "registry",
        "loading",
        "Task registry",
        "the task name is looked up in transformers' table of pipelines, which names the pipeline class, the "
        "model class and the default model",
    ),
    Stage(
        "config",
        "loading",
        "Config",
        "the model's files are resolved from a local folder or the Hugging Face cache, then config.json (or a "
        "GGUF file's metadata) gives the architecture and its sizes",
    ),
    Stage(
        "tokenizer",
        "loading",
        "Tokenizer",
        "the vocabulary, merges, special tokens and chat template are read into a tokenizer",
    ),
    Stage(
        "weights",
        "loading",
        "Weights",
        "every tensor of the checkpoint is read, checked against the architecture and cast to the dtype",
    ),
    Stage("placement", "loading", "Placement", "each module's weights are put on a device (accelerate's device map)"),
    Stage(
        "tokenization",
        "call",
        "Tokenization",
        "the prompt (through the chat template, for a list of messages) becomes token ids",
    ),
    Stage(
        "generation",
        "call",
        "Generation",
        "one forward pass of the model per new token: logits, logits processors, the token picked",
    ),
    Stage("decoding", "call", "Decoding", "the new token ids become text"),
)
STAGES = tuple(stage.name for stage in STAGE_LIST)
STAGE_INFO = {stage.name: stage for stage in STAGE_LIST}
LOADING_STAGES = tuple(stage.name for stage in STAGE_LIST if stage.phase == "loading")
CALL_STAGES = tuple(stage.name for stage in STAGE_LIST if stage.phase == "call")
