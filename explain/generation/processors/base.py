"""What every logits processor is: `processor(input_ids, scores) -> new scores`, plus what it declares about itself.

A processor class declares
    name         the key of its record in a step (usually the knob that turns it on)
    title        the short human title of its panel in the step view
    description  one line: what it does
    knobs        the generate() arguments it reads (generation/knobs.py), with defaults, checks and widgets
    order        its place in transformers' list (GenerationMixin._get_logits_processor); see registry.py
    sampling_only  True for the warpers transformers applies only when do_sample=True
    transformers_class  the name of the transformers class it mirrors (by default its own: explain's classes carry
                 those names), or None for a processor only explain has: backend="transformers" then refuses its
                 knobs with explain's message (registry.transformers_lacks) and the step-through hides their widgets
and implements
    settings_problem(settings)  refuses a combination transformers refuses or fails on (optional)
    build(settings, context)  transformers' condition for adding it, then the instance (or None)
    __call__(input_ids, scores)  the arithmetic of the transformers class of the same name, on a new tensor
    args()       the arguments worth showing, as plain JSON values
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from ...errors import ExplainError
from ..knobs import Knob

FILTER_VALUE = -float("inf")


@dataclass
class BuildContext:
    """What a processor may need besides the settings: the prompt, the vocabulary, the model (for guidance)."""

    prompt_length: int
    prompt_ids: torch.Tensor | None = None  # (1, T)
    vocab_size: int | None = None
    model: Any = None
    device: Any = "cpu"
    num_beams: int = 1  # sequences per prompt (beams, or sampled sequences): PrefixConstrained's batch_id is row // it
    min_tokens_to_keep: int = 1  # warpers keep this many (transformers: EOS count + 1 in beam search, else 1)


class LogitsProcessor:
    name: ClassVar[str] = "processor"
    title: ClassVar[str] = "processor"
    description: ClassVar[str] = ""
    knobs: ClassVar[tuple[Knob, ...]] = ()
    order: ClassVar[int] = 0
    sampling_only: ClassVar[bool] = False
    transformers_class: ClassVar[str | None] = "LogitsProcessor"

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "transformers_class" not in vars(cls):  # explain's classes carry the names of the classes they mirror
            cls.transformers_class = cls.__name__

    @classmethod
    def build(cls, settings: dict, context: BuildContext) -> LogitsProcessor | None:
        raise NotImplementedError

    @classmethod
    def settings_problem(cls, settings: dict) -> str | None:
        """A mistake in how this processor's knobs combine with the other settings (the message names the fix)."""
        return None

    def args(self) -> dict:
        return {}

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.args().items())})"


def require(knob: Knob, value, vocab_size: int | None = None) -> None:
    """A processor built by hand checks its argument with the knob's own check: one check, one message."""
    problem = knob.problem(value, vocab_size)
    if problem is None and value is None:
        problem = "must be given"
    if problem:
        raise ExplainError(f"{knob.name} {problem}")


def eos_ids(settings: dict) -> list[int]:
    eos = settings.get("eos_token_id")
    return [] if eos is None else ([int(eos)] if not isinstance(eos, (list, tuple)) else [int(e) for e in eos])


def token_mask(scores: torch.Tensor, token_ids) -> torch.Tensor:
    """(vocab,) True at the given ids, as transformers builds it: torch.isin over an arange of the vocabulary."""
    vocab = torch.arange(scores.shape[-1], device=scores.device)
    return torch.isin(vocab, torch.as_tensor(list(token_ids), dtype=torch.long, device=scores.device))
