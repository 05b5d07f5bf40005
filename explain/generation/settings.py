"""Which generation settings a call ends up with, and where each came from.

Priority, as in transformers 5 (TextGenerationPipeline + GenerationMixin._prepare_generation_config):
  1. the call's arguments (and those given to explain.pipeline(...) at construction)
  2. the model's generation config (generation_config.json, or the token ids of config.json)
  3. the pipeline's defaults for what neither set: max_new_tokens=256, do_sample=True, temperature=0.7
     (temperature only when sampling; max_new_tokens not when max_length was given)
  4. generate()'s global defaults: max_length=20 new tokens, top_k=50, top_p=1.0, ...
"""

from __future__ import annotations

import difflib

from ..errors import ExplainError

GENERATE_DEFAULTS = {"max_length": 20, "min_length": 0, "do_sample": False, "temperature": 1.0, "top_k": 50,
                     "top_p": 1.0, "repetition_penalty": 1.0, "max_new_tokens": None, "min_new_tokens": None,
                     "min_p": None, "stop_strings": None, "eos_token_id": None, "pad_token_id": None,
                     "bos_token_id": None}
PIPELINE_DEFAULTS = {"max_new_tokens": 256, "do_sample": True, "temperature": 0.7}
SAMPLING_SETTINGS = {"temperature", "top_k", "top_p", "min_p"}
SETTINGS = tuple(GENERATE_DEFAULTS)


def resolve(call: dict, model_generation: dict, model_sources: dict, prompt_length: int,
            max_position_embeddings: int | None, pad_token_id: int | None) -> tuple[dict, dict]:
    """Returns (settings, source of each). Lengths are resolved to a total max_length as generate() does."""
    unknown = [k for k in call if k not in SETTINGS]
    if unknown:
        close = difflib.get_close_matches(unknown[0], SETTINGS, n=1)
        raise ExplainError(f"unknown generation argument {unknown[0]!r}"
                           + (f"; did you mean {close[0]!r}?" if close else f"; known: {', '.join(SETTINGS)}"))
    model_set = {k: v for k, v in model_generation.items()
                 if k in SETTINGS and v is not None and model_sources.get(k) != "transformers default"}
    settings, source = {}, {}
    for key, value in call.items():
        settings[key], source[key] = value, "call"
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
    validate(settings)
    # lengths: max_new_tokens wins over max_length; a default max_length means 20 *new* tokens
    if settings["max_new_tokens"] is not None:
        settings["max_length"], source["max_length"] = settings["max_new_tokens"] + prompt_length, \
            f"max_new_tokens ({source['max_new_tokens']}) + prompt length {prompt_length}"
    elif source["max_length"] == "generate() default":
        settings["max_length"] = settings["max_length"] + prompt_length
        if max_position_embeddings:
            settings["max_length"] = min(settings["max_length"], max_position_embeddings)
        source["max_length"] = f"generate() default: 20 new tokens + prompt length {prompt_length}"
    if settings["max_length"] <= prompt_length:  # generate() refuses this too (_validate_generated_length)
        raise ExplainError(f"the prompt is {prompt_length} tokens but max_length={settings['max_length']} "
                           f"({source['max_length']}) counts the prompt too, so no token is left to generate; "
                           "raise max_length, or better, set max_new_tokens (the number of new tokens)")
    if settings["min_new_tokens"] is not None:
        settings["min_length"] = settings["min_new_tokens"] + prompt_length
    settings["max_new_tokens_effective"] = max(settings["max_length"] - prompt_length, 0)
    return settings, source


def validate(settings: dict) -> None:
    """The checks whose failure has a clear fix; each names the argument."""
    for key in ("max_new_tokens", "max_length", "min_new_tokens", "min_length"):
        value = settings.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
            raise ExplainError(f"{key} must be a non-negative integer, got {value!r}")
    if settings.get("max_new_tokens") == 0:  # transformers' GenerationConfig.validate refuses it too
        raise ExplainError("max_new_tokens must be at least 1, got 0; to only see how the prompt is tokenized, "
                           "use pipe.tokenizer.encode_with_details(text)")
    if settings.get("do_sample"):
        temperature = settings.get("temperature")
        if temperature is not None and (not isinstance(temperature, (int, float)) or temperature <= 0):
            raise ExplainError(f"temperature must be > 0 when sampling, got {temperature!r}; for greedy decoding "
                               "(always the most likely token) use do_sample=False")
    top_p = settings.get("top_p")
    if top_p is not None and (not isinstance(top_p, (int, float)) or not 0 < top_p <= 1):
        raise ExplainError(f"top_p must be in (0, 1], got {top_p!r}; top_p=1.0 disables nucleus filtering")
    top_k = settings.get("top_k")
    if top_k is not None and (not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 0):
        raise ExplainError(f"top_k must be a non-negative integer, got {top_k!r}; 0 disables it")
    penalty = settings.get("repetition_penalty")
    if penalty is not None and (not isinstance(penalty, (int, float)) or penalty <= 0):
        raise ExplainError(f"repetition_penalty must be > 0, got {penalty!r}; 1.0 means no penalty")
    stops = settings.get("stop_strings")
    if stops is not None and not (isinstance(stops, str) or all(isinstance(s, str) and s for s in stops)):
        raise ExplainError(f"stop_strings must be a string or a list of non-empty strings, got {stops!r}")


def eos_ids(settings: dict) -> list[int]:
    eos = settings.get("eos_token_id")
    return [] if eos is None else ([eos] if isinstance(eos, int) else list(eos))


def context_window_warnings(prompt_length: int, max_length: int, context: int, learned_positions: bool) -> list[str]:
    """What a call will meet at the model's context window (max_position_embeddings), said before it runs.

    A model with rotary positions can go on past the window, and transformers lets it (MaxLengthCriteria warns
    once the length passes it); a model with learned positions (GPT-2) has no embedding past it, so explain stops
    there (transformers' generate fails with an IndexError)."""
    if learned_positions:
        if max_length <= context:
            return []
        return [f"this call stops at the context window: the model has {context} learned positions "
                f"(max_position_embeddings), so the prompt's {prompt_length} tokens leave room for "
                f"{context - prompt_length} new tokens of the {max_length - prompt_length} asked for "
                "(stop reason \"context_window\")"]
    if prompt_length > context:
        return [f"the prompt is {prompt_length} tokens, longer than the model's context window of {context} "
                "positions (max_position_embeddings); transformers runs it anyway, and so does explain, but the "
                "model was not trained on positions this far and may write worse text"]
    if max_length > context:
        return [f"this call may run past the model's context window of {context} positions "
                f"(max_position_embeddings): the prompt's {prompt_length} tokens plus up to "
                f"{max_length - prompt_length} new ones. Past it the rotary positions go on, as in transformers "
                "(which warns when it gets there), but the model was not trained this far"]
    return []
