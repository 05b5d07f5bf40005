"""Classifier-free guidance, as transformers runs it for a decoder-only model (UnbatchedClassifierFreeGuidance-
LogitsProcessor): a second, "unconditional" sequence runs through the same model with its own KV cache, and the
next-token log-probabilities are pushed away from it:

    guided = guidance_scale * (log p(x | prompt) - log p(x | unconditional)) + log p(x | unconditional)

The unconditional sequence starts with negative_prompt_ids, or else with the prompt's last token only, and then
follows the generated tokens: each step feeds it the last new token, one forward of one token, as transformers does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from ..knobs import Knob, Slider, as_plain_ids, number, token_id_problem
from .base import LogitsProcessor, require
from .registry import register

if TYPE_CHECKING:  # for the annotation only: the code below imports it where it runs, as before
    from ...models.cache import KVCache


def flat_ids(value) -> list[int]:
    """negative_prompt_ids as a tensor (1, T) or (T,), or as lists -> [ids]."""
    ids = as_plain_ids(value)
    if isinstance(ids, list) and len(ids) == 1 and isinstance(ids[0], list):
        ids = ids[0]
    return ids


def check_negative_prompt(value, vocab_size=None) -> str | None:
    try:
        ids = flat_ids(value)
    except TypeError:
        ids = None
    if not isinstance(ids, list) or not ids or not all(isinstance(i, int) for i in ids):
        return (
            f"must be the token ids of one negative prompt (a list, or a tensor of shape (1, T)), got {value!r}; "
            "tokenize it with pipe.tokenizer.encode(text)"
        )
    for token in ids:
        problem = token_id_problem(token, vocab_size, within=True)
        if problem:
            return problem
    return None


def check_mask(value, vocab_size=None) -> str | None:
    try:
        mask = flat_ids(value)
    except TypeError:
        mask = None
    if isinstance(mask, list) and mask and all(m == 1 for m in mask):
        return None
    return (
        f"must be all ones, got {value!r}: explain runs one sequence and never pads, so a mask can only say "
        '"attend to every token"; leave it out'
    )


@register
class UnbatchedClassifierFreeGuidanceLogitsProcessor(LogitsProcessor):
    name, title, order = "guidance_scale", "classifier-free guidance", 10
    description = "pushes the log-probabilities away from those of an unconditional sequence (one extra forward a step)"
    knobs = (
        Knob(
            "guidance_scale",
            None,
            "float",
            "classifier-free guidance: above 1 follows the prompt more closely "
            "(an extra forward of the model each step)",
            check=number(),
            widget=Slider(1.0, 3.0, 0.1, "guidance scale", off=1.0),
        ),
        Knob(
            "negative_prompt_ids",
            None,
            "json",
            "token ids of the unconditional (negative) prompt for guidance (default: the prompt's last token)",
            check=check_negative_prompt,
            convert=flat_ids,
        ),
        Knob(
            "negative_prompt_attention_mask",
            None,
            "json",
            "attention mask of the negative prompt (ones only)",
            check=check_mask,
            convert=flat_ids,
            cli=False,
        ),
    )

    def __init__(
        self, guidance_scale: float, model, prompt_length: int, unconditional_ids: list[int] | None = None, device="cpu"
    ):
        require(self.knobs[0], guidance_scale)
        self.guidance_scale, self.model, self.prompt_length = guidance_scale, model, int(prompt_length)
        self.unconditional_ids = None if unconditional_ids is None else list(unconditional_ids)
        self.device = device
        self.cache: KVCache | None = None
        self.fed: list[int] = []  # the unconditional tokens whose keys and values are in self.cache
        self.last_logits: torch.Tensor | None = None  # the logits after self.fed

    @classmethod
    def build(cls, settings, context):
        scale = settings.get("guidance_scale")
        if scale is None or scale == 1:
            return None
        return cls(scale, context.model, context.prompt_length, settings.get("negative_prompt_ids"), context.device)

    def args(self):
        return {
            "guidance_scale": self.guidance_scale,
            "unconditional_start": self.unconditional_ids
            if self.unconditional_ids is not None
            else "the prompt's last token",
        }

    def unconditional_sequence(self, input_ids: torch.Tensor) -> tuple[list[int], int]:
        """(the unconditional tokens for this text, how many of them the first forward takes at once)."""
        first = self.unconditional_ids
        if first is None:
            first = input_ids[0, self.prompt_length - 1 : self.prompt_length].tolist()
        return first + input_ids[0, self.prompt_length :].tolist(), len(first)

    @torch.inference_mode()
    def _feed(self, ids: list[int]) -> None:
        out = self.model(torch.tensor([ids], dtype=torch.long, device=self.device), cache=self.cache, logits_to_keep=1)
        self.fed = self.fed + ids
        self.last_logits = out.logits[:, -1, :]  # (1, vocab), in the model's dtype, as transformers takes them

    def unconditional_logits(self, input_ids: torch.Tensor) -> torch.Tensor:
        """The model's next-token logits after the unconditional sequence. The cache follows the text: a later step
        feeds one token; a what-if or a forced branch rewinds the cache to the tokens it shares and goes on from
        there."""
        from ...models.cache import KVCache

        target, first = self.unconditional_sequence(input_ids)
        if self.fed == target and self.last_logits is not None:
            return self.last_logits
        common = 0
        while common < min(len(self.fed), len(target)) and self.fed[common] == target[common]:
            common += 1
        common = min(common, len(target) - 1)  # the last token is fed again to get its logits
        if common < first or self.cache is None:
            self.cache, self.fed = KVCache(), []
            self._feed(target[:first])
            common = first
        else:
            self.cache.crop(common)
            self.fed = self.fed[:common]
        for token in target[common:]:
            self._feed([token])
        assert self.last_logits is not None  # _feed set it: target holds at least one token
        return self.last_logits

    def __call__(self, input_ids, scores):
        scores = torch.nn.functional.log_softmax(scores, dim=-1)
        unconditional = torch.nn.functional.log_softmax(self.unconditional_logits(input_ids), dim=-1)
        return self.guidance_scale * (scores - unconditional) + unconditional
