"""The pipeline arguments that are not a generation knob, read as transformers' TextGenerationPipeline reads them.

    generation_config=GenerationConfig(...)   its set values sit between the call's and the model's (generate()'s
                                              _prepare_generation_config); construction-time settings step aside
    streamer=TextStreamer(tokenizer)          put(prompt ids), put(each new token), end(), as generate() calls it
    stopping_criteria=[criterion, ...]        criterion(input_ids, scores) -> stop? after each token; the stop
                                              reason is the criterion's class name
    truncation=, max_length=, tokenizer_encode_kwargs=   the tokenizer's arguments in preprocess (max_length is
                                              also generate()'s, and truncates the prompt as transformers does)
    text_inputs as a generator, a torch Dataset or KeyDataset: an iterator of results, as transformers returns

transformers is never imported: a GenerationConfig, a streamer and a criterion are recognised by what they do.
"""

from __future__ import annotations

import types

import torch

from ..errors import ArgumentError, ExplainError
from .knobs import suggest_name

# the settings of a GenerationConfig the pipeline returns in each record when return_dict_in_generate=True
RECORD_OUTPUTS = ("return_dict_in_generate", "output_scores", "output_logits")
TOKENIZER_OPTIONS = ("add_special_tokens", "truncation", "padding", "max_length")

GENERATE_KWARGS = (
    "generate_kwargs= is passed by transformers' pipeline to generate() as one argument named generate_kwargs, "
    "which generate() refuses (ValueError: The following `model_kwargs` are not used by the model: "
    "['generate_kwargs']); pass the settings themselves, e.g. pipe(prompt, max_new_tokens=20)"
)


def generation_config_values(value) -> dict:
    """The values a GenerationConfig sets (not None), as generate() reads a generation_config= argument."""
    if value is None:
        return {}
    to_dict = getattr(value, "to_dict", None)
    if not callable(to_dict) or not callable(getattr(value, "to_diff_dict", None)):
        raise ArgumentError(
            f"generation_config={value!r:.60} is not a GenerationConfig; pass "
            "transformers.GenerationConfig(max_new_tokens=..., ...) or the settings themselves as arguments"
        )
    return {key: item for key, item in to_dict().items() if item is not None and key != "transformers_version"}


def check_streamer(value) -> None:
    if value is not None and not (callable(getattr(value, "put", None)) and callable(getattr(value, "end", None))):
        raise ArgumentError(
            f"streamer={value!r:.60} has no put() and end(); pass a transformers.TextStreamer(tokenizer), a "
            "TextIteratorStreamer, or an object with put(token_ids) and end()"
        )


def criteria_list(value) -> list:
    """stopping_criteria as a list of criteria (a StoppingCriteriaList is a list; one criterion alone is taken)."""
    if value is None:
        return []
    items = list(value) if isinstance(value, (list, tuple)) else [value]
    for item in items:
        if not callable(item):
            raise ArgumentError(
                f"stopping_criteria holds {item!r:.60}, which is not callable; a criterion is called as "
                "criterion(input_ids, scores) and returns whether to stop (transformers' StoppingCriteria)"
            )
    return items


def is_stream(inputs) -> bool:
    """A generator, or a torch Dataset (KeyDataset included): transformers' pipeline returns an iterator for them."""
    if isinstance(inputs, types.GeneratorType):
        return True
    from torch.utils.data import Dataset

    return isinstance(inputs, Dataset)


def tokenizer_options(options: dict, max_length) -> dict:
    """The tokenizer's arguments of a call, as TextGenerationPipeline.preprocess builds them: add_special_tokens,
    truncation, padding and the call's max_length, then tokenizer_encode_kwargs on top."""
    found = {"add_special_tokens": options.get("add_special_tokens"), "max_length": max_length}
    found.update(truncation=options.get("truncation"), padding=options.get("padding"))
    found = {key: value for key, value in found.items() if value is not None}
    extra = options.get("tokenizer_encode_kwargs") or {}
    if not isinstance(extra, dict):
        raise ArgumentError(
            f"tokenizer_encode_kwargs={extra!r:.60} is not a dict; pass the tokenizer's arguments as a dict, "
            'e.g. tokenizer_encode_kwargs={"truncation": True, "max_length": 64}'
        )
    found.update(extra)
    return found


def truncation_length(tokenizer_kwargs: dict, model_max_length: int) -> int | None:
    """How many ids the tokenizer keeps, or None: transformers truncates when max_length is given (truncation not
    said: "longest_first", with a warning) or truncation is on (to model_max_length without a max_length)."""
    truncation = tokenizer_kwargs.get("truncation")
    max_length = tokenizer_kwargs.get("max_length")
    if truncation in (False, "do_not_truncate"):
        return None
    if truncation is None:
        return max_length
    if truncation not in (True, "longest_first", "only_first"):
        raise ArgumentError(
            f"truncation={truncation!r:.60} is not a truncation strategy for one text; pass True, False, "
            '"longest_first" or "only_first"'
        )
    return max_length if max_length is not None else model_max_length


def truncate(details: dict, content: list[int], keep: int, side: str = "right") -> dict:
    """encode_with_details' result cut to `keep` ids as transformers' tokenizer cuts it: the special tokens it added
    around the text (`details` ids = head + content + tail) stay, the text's own ids are cut on `side`."""
    ids = details["ids"]
    if len(ids) <= keep:
        return details
    start = next((i for i in range(len(ids) - len(content) + 1) if ids[i : i + len(content)] == content), 0)
    head, tail = list(range(start)), list(range(start + len(content), len(ids)))
    room = max(keep - len(head) - len(tail), 0)
    body = list(range(start, start + len(content)))
    body = body[:room] if side != "left" else body[len(body) - room :]
    chosen = head + body + tail
    return {key: [value[i] for i in chosen] for key, value in details.items()}


def check_tokenizer_kwargs(found: dict) -> None:
    """The tokenizer arguments explain's tokenizer takes for one text (others are template variables of a chat)."""
    padding = found.get("padding")
    if padding not in (None, False, True, "longest", "do_not_pad"):
        raise ArgumentError(
            f"padding={padding!r:.60}: explain tokenizes one prompt at a time, so only padding to the longest "
            '(True, "longest") or none (False) applies'
        )
    for name in ("max_length",):
        value = found.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ArgumentError(f"{name}={value!r:.60} is not a positive number of tokens; pass one, or leave it out")


def unknown_tokenizer_option(name: str) -> ArgumentError:
    return ArgumentError(f"tokenizer_encode_kwargs holds {name!r}" + suggest_name(name, TOKENIZER_OPTIONS))


def one_sequence_only(strategy, options: dict, batch: bool = False) -> str | None:
    """Why explain cannot return generate()'s per-step outputs for this call (return_dict_in_generate with
    output_scores or output_logits), or None: it returns them for greedy search and sampling of one sequence of
    one prompt. (max_time and stopping_criteria run with every decoding strategy, as generate() runs them.)"""
    if not options.get("return_dict_in_generate"):
        return None
    asked = [name for name in ("output_scores", "output_logits") if options.get(name)]
    if not asked or (strategy.name == "one_sequence" and not batch):
        return None
    what = "a batch of prompts" if batch else strategy.title
    return (
        f"{', '.join(asked)} with {what}: explain returns {'these' if len(asked) > 1 else 'it'} for greedy search "
        'and sampling of one sequence, one prompt at a time; leave it out, or run the call with backend="transformers"'
    )


def decode_options(options: dict) -> tuple[bool, bool | None]:
    """(skip_special_tokens, clean_up_tokenization_spaces) of a call, as TextGenerationPipeline.postprocess reads
    them: skip_special_tokens None is True; clean_up None is the tokenizer's own setting."""
    skip = options.get("skip_special_tokens")
    return (True if skip is None else bool(skip)), options.get("clean_up_tokenization_spaces")


def stream(generation, streamer) -> None:
    """Run `generation`, handing its tokens to `streamer` as generate() does: put(the prompt's ids), put(each step's
    new tokens), end(). Several sequences go as rows (transformers' TextStreamer refuses them: "TextStreamer only
    supports batch size 1"); beam search takes no streamer, as in transformers."""
    if (generation.settings.get("num_beams") or 1) > 1:
        raise ExplainError(
            "`streamer` cannot be used with beam search (transformers' ValueError): a beam's tokens may still be "
            "replaced; pass num_beams=1, or leave the streamer out"
        )
    rows = generation.sequences
    streamer.put(torch.tensor([row[: generation.prompt_length] for row in rows]))
    done = len(rows[0])
    while not generation.finished:
        generation.step()
        rows = generation.sequences
        if len(rows[0]) > done:  # one token a row a step (several a round of assisted decoding)
            new = torch.tensor([row[done:] for row in rows])
            streamer.put(new[0] if len(rows) == 1 and new.shape[1] == 1 else new.squeeze(1) if len(rows) > 1 else new)
            done = len(rows[0])
    streamer.end()
