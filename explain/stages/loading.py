"""One `explain.pipeline(...)` call's loading, as the stages fill it in.

Every loading stage has the same shape, `run(loading: Loading, trace: Trace) -> None`: it reads what the call asked
for and what the stages before it found, emits its stage's events into `trace`, and writes what it found onto
`loading` for the stages after it. pipeline() (explain/pipeline.py) checks the arguments, makes one Loading and runs
the stages in order; a new stage is one module with a `run` and one entry in pipeline.LOADING_STAGES.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..trace import Trace
from . import hub


@dataclass
class Loading:
    """The call's checked arguments, then each stage's findings, in the order the stages fill them in.

    A field that holds different kinds of values (a repo id or a folder, a dtype or its name) or one that a stage
    fills with a library's object is typed Any: the stage that reads it knows what the stage before it put there."""

    # -- what the call asked for (pipeline() has checked each) --------------------------------------------------------
    task: str
    model: Any = None  # a repo id or folder; None: the task's default (the registry stage names it)
    revision: str | None = None
    token: Any = None
    gguf_file: str | None = None
    config: Any = None  # config= of the call: a config.json path or a repo whose config.json to use
    tokenizer: Any = None  # tokenizer= of the call: an explain Tokenizer, a repo or folder, or None
    dtype: Any = "auto"
    dtype_argument: str = "dtype"  # which argument gave the dtype, for the weights/load event
    dtype_warnings: list = field(default_factory=list)
    device: Any = None
    device_map: Any = None
    max_memory: dict | None = None  # in bytes
    quantization: Any = None  # the explain.quantization Method, or None
    adapter: Any = None  # a PEFT LoRA folder, or None
    generation_defaults: dict = field(default_factory=dict)  # every knob's transformers default (generation layer)
    # -- what the stages found, in their order ---------------------------------------------------------------------
    found: dict | None = None  # registry: the registry/lookup event's data
    uses_default: bool = False  # no model= was given: the task's default (the embedded model) is used
    gguf_path: str | None = None  # config: the GGUF file, when the weights come from one
    config_path: str | None = None
    config_dict: dict | None = None
    generation: dict | None = None  # the model's generation defaults, and where each came from
    generation_sources: dict | None = None
    reader: Any = None  # the open GGUF reader, parsed once by the config stage, reused by the next ones
    model_class: Any = None  # config: the explain.models class (its config_class, tied_weights)
    loaded_tokenizer: Any = None  # tokenizer: the explain Tokenizer
    torch_dtype: Any = None  # weights: the dtype the tensors are in
    tied: dict = field(default_factory=dict)
    quantizer: Any = None
    module: Any = None  # weights: the model, then placement: the model placed
    state: dict | None = None  # the state dict between the weights and placement stages
    quantized: Any = None  # placement: the quantization facts of a quantized load
    adapted: Any = None  # the adapter's facts, when one was applied

    def resolve(self, filename: str, trace: Trace, required: bool = True, named_by: str | None = None) -> str | None:
        """A local path for one of the model's files (hub.resolve), with its `config/file` event."""
        return hub.resolve(
            self.model,
            filename,
            revision=self.revision,
            token=self.token,
            trace=trace,
            required=required,
            named_by=named_by,
        )
