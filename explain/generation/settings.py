"""Which generation settings a call ends up with, where each came from, and whether they are valid.

Priority, as in transformers 5 (TextGenerationPipeline + GenerationMixin._prepare_generation_config):
  1. the call's arguments (and those given to explain.pipeline(...) at construction, unless the call passes a
     generation_config, which replaces them)
  1b. the values a generation_config= argument sets (a GenerationConfig: its values that are not None)
  2. the model's generation config (generation_config.json, or the token ids of config.json)
  3. the pipeline's defaults for what neither set: max_new_tokens=256, do_sample=True, temperature=0.7
     (temperature only when sampling; max_new_tokens not when max_length was given)
  4. generate()'s global defaults: max_length=20 new tokens, top_k=50, top_p=1.0, ...

The settings are the knobs of generation/knobs.py, of every registered logits processor and of every decoding
strategy: this module lists none.
"""

from __future__ import annotations

from ..errors import ExplainError
from .ending import max_new_tokens_effective
from .knobs import suggest_name
from .processors import knobs, ordered
from .processors import transformers_lacks as processor_lacks
from .processors.base import eos_ids  # noqa: F401  (the loop's import)
from .strategies import registry as strategies

KNOBS = {**knobs(), **strategies.strategy_knobs()}  # name -> Knob: every generate() argument explain takes: the
# general ones and each processor's in transformers' order, then each decoding strategy's
SETTINGS = tuple(KNOBS)
GENERATE_DEFAULTS = {name: knob.default for name, knob in KNOBS.items()}
PIPELINE_DEFAULTS = {"max_new_tokens": 256, "do_sample": True, "temperature": 0.7}
SAMPLING_SETTINGS = {name for name, knob in KNOBS.items() if knob.sampling_only}
LIVE_SETTINGS = tuple(name for name, knob in KNOBS.items() if knob.live)  # may change between steps


def transformers_lacks(name: str) -> str | None:
    """Why backend="transformers" cannot take the knob `name` (a knob of a processor or a decoding strategy only
    explain has: explain's message, naming the explain backend), or None."""
    return processor_lacks(name) or strategies.transformers_lacks(name)


def knobs_transformers_lacks() -> tuple[str, ...]:
    """The knobs backend="transformers" refuses (the registries as they are now: a class registered late counts)."""
    names = [knob.name for cls in ordered() for knob in cls.knobs]
    names += [knob.name for strategy in strategies.ordered() for knob in strategy.knobs]
    return tuple(dict.fromkeys(name for name in names if transformers_lacks(name)))


def unknown_argument(name: str, allowed, what: str = "generation argument") -> ExplainError:
    return ExplainError(f"unknown {what} {name!r}" + suggest_name(name, allowed))


def resolve(
    call: dict,
    model_generation: dict,
    model_sources: dict,
    prompt_length: int,
    max_position_embeddings: int | None,
    pad_token_id: int | None,
    vocab_size: int | None = None,
    user_config: dict | None = None,
    prefix_length: int = 0,
) -> tuple[dict, dict]:
    """Returns (settings, source of each). Lengths are resolved to a total max_length as generate() does.
    `user_config`: the values of the call's generation_config=; `prefix_length`: the tokens of the pipeline's
    prefix=, which a total max_length / min_length the call set is raised by (TextGenerationPipeline._forward)."""
    for key in call:
        if key not in KNOBS:
            raise unknown_argument(key, SETTINGS)
    model_set = {
        k: v
        for k, v in model_generation.items()
        if k in KNOBS and v is not None and model_sources.get(k) != "transformers default"
    }
    settings, source = {}, {}
    for key, value in call.items():
        settings[key], source[key] = value, "call"
    for key, value in (user_config or {}).items():
        if key not in settings and key in KNOBS:
            settings[key], source[key] = value, "generation_config argument"
    for key, value in model_set.items():
        if key not in settings:
            settings[key], source[key] = value, model_sources.get(key, "model generation config")
    set_before_pipeline = dict(settings)
    sampling = {**PIPELINE_DEFAULTS, **set_before_pipeline}.get("do_sample")
    for key, value in PIPELINE_DEFAULTS.items():
        if key in settings or (key == "max_new_tokens" and "max_length" in settings):
            continue
        if key in SAMPLING_SETTINGS and not sampling:
            continue
        settings[key], source[key] = value, "text-generation pipeline default"
    if pad_token_id is not None and "pad_token_id" not in settings:
        settings["pad_token_id"], source["pad_token_id"] = pad_token_id, "tokenizer pad token"
    for key, value in GENERATE_DEFAULTS.items():
        if key not in settings:
            settings[key], source[key] = value, "generate() default"
    settings = validate(settings, vocab_size, source)
    if prefix_length:  # a total length the call set counts the prefix too (TextGenerationPipeline._forward)
        for length, new_tokens in (("max_length", "max_new_tokens"), ("min_length", "min_new_tokens")):
            if source.get(length) not in (None, "generate() default") and settings.get(new_tokens) is None:
                settings[length] += prefix_length
                source[length] = f"{source[length]} + prefix length {prefix_length}"
    if settings["max_new_tokens"] is not None and source["max_length"] != "generate() default":
        source["max_length (ignored)"] = f"{settings['max_length']}) (set by the {source['max_length']}"
    # lengths: max_new_tokens wins over max_length; a default max_length means 20 *new* tokens
    if settings["max_new_tokens"] is not None:
        settings["max_length"], source["max_length"] = (
            settings["max_new_tokens"] + prompt_length,
            f"max_new_tokens ({source['max_new_tokens']}) + prompt length {prompt_length}",
        )
    elif source["max_length"] == "generate() default":
        settings["max_length"] = settings["max_length"] + prompt_length
        if max_position_embeddings:
            settings["max_length"] = min(settings["max_length"], max_position_embeddings)
        source["max_length"] = f"generate() default: 20 new tokens + prompt length {prompt_length}"
    if settings["max_length"] <= prompt_length:  # generate() refuses this too (_validate_generated_length)
        raise ExplainError(
            f"the prompt is {prompt_length} tokens but max_length={settings['max_length']} "
            f"({source['max_length']}) counts the prompt too, so no token is left to generate; "
            "raise max_length, or better, set max_new_tokens (the number of new tokens)"
        )
    if settings["min_new_tokens"] is not None:
        settings["min_length"] = settings["min_new_tokens"] + prompt_length
    settings["max_new_tokens_effective"] = max_new_tokens_effective(settings["max_length"], prompt_length)
    return settings, source


def validate(settings: dict, vocab_size: int | None = None, sources: dict | None = None) -> dict:
    """Each knob checked by its own check (a sampling knob only when sampling, as transformers builds warpers only
    then), then the combinations the processors refuse. Returns the settings with values in their plain form
    (tensors to lists, config objects to dicts). One ExplainError per mistake, naming the argument and the fix."""
    sources = sources or {}
    checked = dict(settings)
    for name, value in settings.items():
        knob = KNOBS.get(name)
        if knob is None or value is None or (knob.sampling_only and not settings.get("do_sample")):
            continue
        problem = knob.problem(value, vocab_size)
        if problem:
            origin = sources.get(name)
            where = f" (set by the {origin})" if origin not in (None, "call") else ""
            raise ExplainError(f"{name}{where} {problem}")
        if knob.convert is not None:
            checked[name] = knob.convert(value)
    for cls in ordered():
        problem = cls.settings_problem(checked)
        if problem:
            raise ExplainError(problem)
    problem = strategies.settings_problem(checked)  # a combination the decoding strategy refuses
    if problem:
        raise ExplainError(problem)
    return checked


def warnings_for(settings: dict, sources: dict) -> list[str]:
    """What transformers warns about for these settings (GenerationConfig.validate's minor issues and
    _validate_generated_length): sampling knobs the call set while decoding greedily, a minimum length beyond the
    maximum."""
    found = []
    ignored = sources.pop("max_length (ignored)", None)  # resolve()'s note, not a setting's source
    if ignored is not None:  # transformers' words (generation/utils.py, _prepare_generated_length)
        found.append(
            f"Both `max_new_tokens` (={settings['max_new_tokens']}) and `max_length`(={ignored}) seem to have been "
            "set. `max_new_tokens` will take precedence (transformers' warning): the run generates up to "
            f"{settings['max_new_tokens']} new tokens; pass only one of them"
        )
    if not settings.get("do_sample"):
        for name in sorted(SAMPLING_SETTINGS):
            if sources.get(name) == "call" and settings.get(name) not in (None, KNOBS[name].default):
                found.append(
                    f"do_sample is False, so {name}={settings[name]!r} has no effect (it only acts when "
                    "sampling): set do_sample=True, or leave it out"
                )
    if settings.get("min_length") and settings["min_length"] > settings["max_length"]:
        found.append(
            f"min_length ({settings['min_length']}) is beyond max_length ({settings['max_length']}): "
            "generation stops at max_length anyway"
        )
    for cls in strategies.ordered():  # arguments the decoding mode ignores, as transformers warns about them
        found += cls.warnings(settings, sources)
    return found


def context_window_warnings(prompt_length: int, max_length: int, context: int, learned_positions: bool) -> list[str]:
    """What a call will meet at the model's context window (max_position_embeddings), said before it runs.

    A model with rotary positions can go on past the window, and transformers lets it (MaxLengthCriteria warns
    once the length passes it); a model with learned positions (GPT-2) has no embedding past it, so explain stops
    there (transformers' generate fails with an IndexError)."""
    if learned_positions:
        if max_length <= context:
            return []
        return [
            f"this call stops at the context window: the model has {context} learned positions "
            f"(max_position_embeddings), so the prompt's {prompt_length} tokens leave room for "
            f"{context - prompt_length} new tokens of the {max_length - prompt_length} asked for "
            '(stop reason "context_window")'
        ]
    if prompt_length > context:
        return [
            f"the prompt is {prompt_length} tokens, longer than the model's context window of {context} "
            "positions (max_position_embeddings); transformers runs it anyway, and so does explain, but the "
            "model was not trained on positions this far and may write worse text"
        ]
    if max_length > context:
        return [
            f"this call may run past the model's context window of {context} positions "
            f"(max_position_embeddings): the prompt's {prompt_length} tokens plus up to "
            f"{max_length - prompt_length} new ones. Past it the rotary positions go on, as in transformers "
            "(which warns when it gets there), but the model was not trained this far"
        ]
    return []
