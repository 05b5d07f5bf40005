"""The registry of logits processors, and build_processors(): the list transformers' generate() builds, in its order.

Every module of this package registers its classes with `@register`; the package imports all its modules, so a new
processor is one class in one file (plus its tests). `order` is the class's place in transformers'
GenerationMixin._get_logits_processor (transformers/generation/utils.py, 5.24), a decoder-only model, one beam:

     10 guidance_scale            UnbatchedClassifierFreeGuidanceLogitsProcessor
     20 sequence_bias             SequenceBiasLogitsProcessor
     30 encoder_repetition_penalty  EncoderRepetitionPenaltyLogitsProcessor (the "encoder" input is the prompt)
     40 repetition_penalty        RepetitionPenaltyLogitsProcessor
     50 no_repeat_ngram_size      NoRepeatNGramLogitsProcessor
     60 encoder_no_repeat_ngram_size  EncoderNoRepeatNGramLogitsProcessor (n-grams of the prompt)
     70 bad_words_ids             NoBadWordsLogitsProcessor
     80 min_length                MinLengthLogitsProcessor
     90 min_new_tokens            MinNewTokensLengthLogitsProcessor
    100 prefix_allowed_tokens_fn  PrefixConstrainedLogitsProcessor
    110 forced_bos_token_id       ForcedBOSTokenLogitsProcessor
    120 forced_eos_token_id       ForcedEOSTokenLogitsProcessor
    130 remove_invalid_values     InfNanRemoveLogitsProcessor
    140 exponential_decay_length_penalty  ExponentialDecayLengthPenalty
    150 suppress_tokens           SuppressTokensLogitsProcessor
    160 begin_suppress_tokens     SuppressTokensAtBeginLogitsProcessor
    --- the call's own `logits_processor` list is merged here (_merge_criteria_processor_list) ---
    170.. only when do_sample: temperature, top_h, top_k, top_p, min_p, typical_p, epsilon_cutoff, eta_cutoff
    900 watermarking_config       WatermarkLogitsProcessor / SynthIDTextWatermarkLogitsProcessor
    999 renormalize_logits        LogitNormalization (always last)

Left out, because transformers only builds them for encoder-decoder models or other modes: forced_decoder_ids /
Whisper's processors, constraints and force_words_ids (constrained beam search, moved to the Hub), diversity_penalty
(group beam search, moved to the Hub), DoLa, contrastive search. length_penalty and early_stopping are not
processors: they are beam search's knobs (explain/generation/strategies/beam.py).
"""

from __future__ import annotations

import warnings
from typing import Any

from ..knobs import GENERAL, Knob
from .base import BuildContext, LogitsProcessor

PROCESSORS: dict[str, type[LogitsProcessor]] = {}  # name -> class, filled by @register as the modules import
MERGE_ORDER = 165  # the call's `logits_processor` list joins after the processors ordered below this


def register(cls: type[LogitsProcessor]) -> type[LogitsProcessor]:
    for other in PROCESSORS.values():
        if other.name == cls.name or other.order == cls.order:
            raise ValueError(f"{cls.__name__} has the name or order of {other.__name__}; each must be unique")
    for knob in cls.knobs:
        if cls.sampling_only and not knob.sampling_only:
            raise ValueError(f"{cls.__name__}.{knob.name} must be declared sampling_only=True like its processor")
    PROCESSORS[cls.name] = cls
    return cls


def ordered() -> list[type[LogitsProcessor]]:
    return sorted(PROCESSORS.values(), key=lambda cls: cls.order)


def knobs() -> dict[str, Knob]:
    """Every generation knob by name: the general ones, then each processor's, in transformers' order."""
    table = {knob.name: knob for knob in GENERAL}
    for cls in ordered():
        for knob in cls.knobs:
            if knob.name in table and table[knob.name] is not knob:
                raise ValueError(f"knob {knob.name!r} is declared twice ({cls.__name__}); declare it once")
            table[knob.name] = knob
    return table


def transformers_lacks(name: str) -> str | None:
    """Why backend="transformers" cannot take the knob `name`: it belongs to a processor only explain has (its
    class declares transformers_class = None); None when transformers has it (or it is no processor's knob)."""
    for cls in ordered():
        if cls.transformers_class is None and any(knob.name == name for knob in cls.knobs):
            return (
                f"{name} is a knob of {cls.title} ({cls.__name__}), a logits processor that explain has and "
                f'transformers\' generate() does not: run it with backend="explain" (the default), or leave '
                f"{name} out"
            )
    return None


def build_processors(
    settings: dict,
    prompt_length: int,
    *,
    prompt_ids=None,
    model=None,
    vocab_size=None,
    device="cpu",
    num_beams: int = 1,
    min_tokens_to_keep: int = 1,
) -> list[LogitsProcessor]:
    """The processors transformers' generate() builds for these (validated, resolved) settings, in its order.
    `num_beams`: the rows each prompt has (beams or sampled sequences); `min_tokens_to_keep`: what the warpers
    keep (transformers: the EOS count + 1 in beam search)."""
    context = BuildContext(
        prompt_length=prompt_length,
        prompt_ids=prompt_ids,
        vocab_size=vocab_size,
        model=model,
        device=device,
        num_beams=num_beams,
        min_tokens_to_keep=min_tokens_to_keep,
    )
    processors: list[LogitsProcessor] = []
    merged = False
    for cls in ordered():
        if cls.order > MERGE_ORDER and not merged:
            processors, merged = merge_custom(processors, settings.get("logits_processor")), True
        if cls.sampling_only and not settings.get("do_sample"):
            continue
        processor = cls.build(settings, context)
        if processor is not None:
            processors.append(processor)
    if not merged:
        processors = merge_custom(processors, settings.get("logits_processor"))
    return processors


def merge_custom(processors: list, custom) -> list:
    """transformers' _merge_criteria_processor_list: a processor of the call's own list replaces the built one of the
    same class, in its place (transformers warns); the others follow the built ones."""
    if not custom:
        return processors
    # custom.py's CallProcessor, found as registered (no import); Any: its constructor and attributes are its own
    call_processor: Any = PROCESSORS["logits_processor"]
    wrapped = [call_processor(p) for p in custom]
    result, used = [], set()
    for processor in processors:
        same = next((w for w in wrapped if w.transformers_class_name == processor.transformers_class), None)
        if same is not None:
            warnings.warn(
                f"your logits processor {same.label} takes the place of the {processor.transformers_class} "
                f"that {processor.name} would build (transformers does the same, with this warning)",
                stacklevel=2,
            )
            same.replaces = processor.name
            result.append(same)
            used.add(id(same))
        else:
            result.append(processor)
    return result + [w for w in wrapped if id(w) not in used]
