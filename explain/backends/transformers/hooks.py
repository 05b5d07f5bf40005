"""How the transformers backend watches generate() without changing what it computes.

generate() builds two lists each call (transformers/generation/utils.py, GenerationMixin.generate, step 8):
`self._get_logits_processor(...)` -> a LogitsProcessorList and `self._get_stopping_criteria(...)` -> a
StoppingCriteriaList, then its decoding loop (`_sample`) calls them once per token:

    next_token_scores = logits_processor(input_ids, next_token_logits)      # raw logits in, processed out
    ... argmax or torch.multinomial(softmax(next_token_scores)) ...
    input_ids = torch.cat([input_ids, next_tokens[:, None]], dim=-1)
    unfinished_sequences = unfinished_sequences & ~stopping_criteria(input_ids, scores)

`observing(model, recorder)` shadows the two builder methods on the model instance for the duration of one
generate() call: each returns the list transformers built, in a recording subclass that runs the same processors
(and criteria) in the same order through transformers' own list code, one element at a time, and reports each
result to the recorder. Forward hooks (torch's register_forward_pre_hook / register_forward_hook) time each forward
and hand over transformers' own Cache object. Nothing is re-implemented: the chain, the token choice and the loop
are transformers'.
"""

from __future__ import annotations

import inspect
import time
from contextlib import contextmanager
from typing import cast

import torch
from transformers import GenerationConfig
from transformers.generation.logits_process import LogitsProcessorList
from transformers.generation.stopping_criteria import StoppingCriteria, StoppingCriteriaList

from ...errors import UnsupportedError


class RecordingProcessorList(LogitsProcessorList):
    """The processor list generate() built, same processors, same order; each one's effect goes to the recorder."""

    def __init__(self, processors, recorder):
        super().__init__(processors)
        self.recorder = recorder

    def __call__(self, input_ids: torch.LongTensor, scores: torch.Tensor, **kwargs) -> torch.Tensor:
        self.recorder.on_logits(input_ids, scores)
        for processor in self:
            before = scores.clone()  # a processor may work in place; the record needs what it received
            scores = LogitsProcessorList([processor])(input_ids, scores, **kwargs)  # transformers' own dispatch
            self.recorder.on_processor(processor, input_ids, before, scores)
        self.recorder.on_scores(scores)
        return scores


class RecordingCriteriaList(StoppingCriteriaList):
    """The stopping criteria generate() built; which of them fired goes to the recorder with the new token."""

    def __init__(self, criteria, recorder):
        super().__init__(criteria)
        self.recorder = recorder

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        is_done = torch.full((input_ids.shape[0],), False, device=input_ids.device, dtype=torch.bool)
        fired, dones = [], []
        for criterion in self:
            done = StoppingCriteriaList([criterion])(input_ids, scores, **kwargs)  # transformers' own code
            is_done = is_done | done
            dones.append(done)
            if bool(done[0]):
                fired.append(criterion)
        if input_ids.shape[0] > 1:  # a batch: which criteria fired for each row
            rows = torch.stack(dones, dim=1).tolist() if dones else [[] for _ in range(input_ids.shape[0])]
            per_row = [[c for c, hit in zip(self, row, strict=False) if hit] for row in rows]
            self.recorder.on_token(input_ids, fired, per_row)
        else:
            self.recorder.on_token(input_ids, fired)
        return cast(torch.BoolTensor, is_done)  # transformers annotates the legacy BoolTensor; a bool Tensor is one


class BeamProcessorList(LogitsProcessorList):
    """The processor list of a beam search: transformers' own list call; the processed log-probabilities of every
    running beam go to the beam watch (beams.py)."""

    def __init__(self, processors, watch):
        super().__init__(processors)
        self.watch = watch

    def __call__(self, input_ids: torch.LongTensor, scores: torch.Tensor, **kwargs) -> torch.Tensor:
        scores = super().__call__(input_ids, scores, **kwargs)
        self.watch.on_log_probs(scores)
        return scores


class BeamCriteriaList(StoppingCriteriaList):
    """The stopping criteria of a beam search, run on every candidate: each one's stop reason goes to the watch."""

    def __init__(self, criteria, watch):
        super().__init__(criteria)
        self.watch = watch

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        from .beams import candidate_reasons

        is_done, reasons = candidate_reasons(self, input_ids, scores, **kwargs)
        self.watch.on_criteria(reasons)
        return cast(torch.BoolTensor, is_done)


class PauseAfterOneToken(StoppingCriteria):
    """A stopping criterion (generate's public extension point) that ends a generate() call after one new token,
    so a step-through advances the real generate() one token at a time. It is never reported as a stop reason."""

    def __call__(self, input_ids, scores, **kwargs) -> torch.BoolTensor:
        return cast(torch.BoolTensor, torch.ones(input_ids.shape[0], dtype=torch.bool, device=input_ids.device))


@contextmanager
def observing(model, recorder):
    """Watch one generate() call of `model`: processors, criteria and forwards report to `recorder`.

    The two builders are shadowed on this model instance only (another model generating meanwhile is not touched)
    and removed on exit, even when generate() raises."""
    build_processors = model._get_logits_processor  # the bound method generate() would call
    build_criteria = model._get_stopping_criteria

    def logits_processor(*args, **kwargs):
        processors = build_processors(*args, **kwargs)
        arguments = inspect.signature(build_processors).bind_partial(*args, **kwargs).arguments
        traced = recorder.on_settings(arguments["generation_config"], processors, arguments)
        watch = getattr(recorder, "beam_watch", None)
        if watch is not None:  # beam search: its helpers report each step (beams.py)
            for name, replacement in watch.shadow(model).items():
                setattr(model, name, replacement)
                shadowed[name] = replacement
            return BeamProcessorList(processors, watch)
        drafts = getattr(recorder, "draft_watch", None)
        if drafts is not None:  # prompt lookup: its candidate generator reports each draft (beams.py)
            for name, replacement in drafts.shadow(model).items():
                setattr(model, name, replacement)
                shadowed[name] = replacement
            return RecordingProcessorList(processors, recorder)
        if not traced:
            return processors  # a decoding mode whose steps are not traced
        return RecordingProcessorList(processors, recorder)

    def stopping_criteria(*args, **kwargs):
        criteria = build_criteria(*args, **kwargs)
        recorder.on_criteria(criteria)
        watch = getattr(recorder, "beam_watch", None)
        if watch is not None:
            return BeamCriteriaList(criteria, watch)
        if getattr(recorder, "draft_watch", None) is not None:
            return RecordingCriteriaList(criteria, recorder)
        if not recorder.traces_steps:
            return criteria
        return RecordingCriteriaList(criteria, recorder)

    def before_forward(module, args, kwargs):
        recorder.on_forward_start(kwargs.get("input_ids"), kwargs.get("cache"), time.perf_counter())

    def after_forward(module, args, kwargs, output):
        cache = getattr(output, "cache", None) if not isinstance(output, tuple) else None
        drafts = getattr(recorder, "draft_watch", None)
        if drafts is not None and getattr(output, "logits", None) is not None:
            drafts.on_logits(output.logits)
        recorder.on_forward_end(cache if cache is not None else kwargs.get("cache"), time.perf_counter())

    shadowed = {"_get_logits_processor": logits_processor, "_get_stopping_criteria": stopping_criteria}
    for name, replacement in list(shadowed.items()):
        if name in vars(model):
            raise UnsupportedError(
                f"a traced generate() is already running on this {type(model).__name__} (its "
                f"{name} is shadowed): the transformers backend traces one call at a time per "
                'model; call the pipeline from one thread, or use backend="explain", which '
                "takes calls from several threads"
            )
        setattr(model, name, replacement)
    handles = [
        model.register_forward_pre_hook(before_forward, with_kwargs=True),
        model.register_forward_hook(after_forward, with_kwargs=True),
    ]
    try:
        yield recorder
    finally:
        for handle in handles:
            handle.remove()
        for name in list(shadowed):
            vars(model).pop(name, None)


def generation_mode(config: GenerationConfig, assistant_model=None) -> str:
    """transformers' name of the decoding mode ("greedy_search", "sample", "beam_search", ...)."""
    mode = config.get_generation_mode(assistant_model)
    return getattr(mode, "value", str(mode))
