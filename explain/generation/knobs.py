"""A generation knob: one argument of generate(), declared once with its default, its check and its widget.

Every place that lists generation arguments reads these declarations: settings resolution and validation
(generation/settings.py), Generation.set_settings and what_if, the pipeline's accepted arguments, the model's
generation defaults (explain/stages/config.py), the CLI flags of `python -m explain generate` and the step-through
controller.
The knobs that turn a logits processor on are declared on the processor's class (generation/processors/); the
few that are not about a processor (lengths, stopping, special tokens, do_sample) are declared here.

Defaults are transformers' own: GenerationConfig._get_default_generation_params() for the ones it fills in,
None for the rest (transformers/generation/configuration_utils.py).
"""

from __future__ import annotations

import difflib
import math
import numbers
import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol


class Check(Protocol):
    """(value, vocabulary size or None) -> what is wrong, or None; the vocabulary size may be left out."""

    def __call__(self, value: Any, vocab_size: int | None = None) -> str | None: ...


@dataclass(frozen=True)
class Slider:
    """How the step-through controller shows a knob. `off` is the position meaning "not set" (the knob's default)."""

    minimum: float
    maximum: float
    step: float
    label: str
    off: float | None = None
    main: bool = False  # in the first row (the knobs every lesson uses); the others sit under "more knobs"
    format: str = ".2f"


@dataclass(frozen=True)
class Toggle:
    label: str
    main: bool = False


@dataclass(frozen=True)
class Knob:
    name: str
    default: Any
    kind: str  # "int", "float", "bool", "json" (lists and dicts, given as JSON on the command line), "object"
    help: str  # one line: the CLI help, the widget tooltip
    check: Check | None = None  # the one place the value is checked; its message names the fix
    convert: Callable[[Any], Any] | None = None  # to a plain, JSON-able form (after the check passed)
    live: bool = True  # may change between steps (set_settings) and be tried on a recorded step (what_if)
    cli: bool = True  # a flag of `python -m explain generate`
    widget: Slider | Toggle | None = None
    sampling_only: bool = False  # set from the processor that reads it

    def problem(self, value, vocab_size: int | None = None) -> str | None:
        """What is wrong with `value` for this knob (a sentence naming the fix), or None."""
        if value is None or self.check is None:
            return None
        return self.check(value, vocab_size)


def suggest_name(name: str, names) -> str:
    """ "; did you mean 'x'?" for a misspelt name, else the list of known names."""
    names = list(names)
    close = difflib.get_close_matches(str(name), names, n=1)
    return f"; did you mean {close[0]!r}?" if close else f"; known: {', '.join(names)}"


# -- checks, each returning what is wrong and the fix ---------------------------------------------------------
def is_integer(value) -> bool:
    if isinstance(value, bool):
        return False
    try:
        operator.index(value)
    except TypeError:
        return False
    return True


def is_number(value) -> bool:
    return not isinstance(value, bool) and isinstance(value, numbers.Real)


def number(
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    integer: bool = False,
    fix: str = "",
) -> Check:
    """A finite number (or integer) in a range, e.g. number(0, 1, low_open=True) is (0, 1]."""
    what = "an integer" if integer else "a finite number"
    if low is not None and high is not None:
        what += f" in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    elif low is not None:
        what += f" {'>' if low_open else '>='} {low:g}"
    tail = f"; {fix}" if fix else ""

    def check(value, vocab_size=None):
        ok = is_integer(value) if integer else is_number(value)
        if ok and not integer:
            ok = math.isfinite(float(value))
        if ok and low is not None:
            ok = value > low if low_open else value >= low
        if ok and high is not None:
            ok = value < high if high_open else value <= high
        return None if ok else f"must be {what}, got {value!r}{tail}"

    return check


def check_pad_token_id(value, vocab_size=None) -> str | None:
    """An integer, or a number generate() turns into one (torch.tensor(value, dtype=torch.long) truncates 2.7 to 2);
    NaN, infinities and numbers past int64 are what torch refuses."""
    if is_integer(value) or (is_number(value) and math.isfinite(value) and abs(value) < 2**63):
        return None
    return f"must be a token id (an integer), got {value!r}; pass the padding token's id (pipe.tokenizer.pad_token_id)"


def token_id_problem(value, vocab_size: int | None, within: bool = False) -> str | None:
    """What is wrong with a token id; `within` words it for an item of a list ("holds 12, which is ...")."""
    if not is_integer(value):
        problem = "a token id (an integer)"
    elif value < 0:
        problem = "a token id (0 or more)"
        if not within:
            return (
                f'must be {problem}, got {value!r}; -1 is not "none" here: leave the argument out (or pass None) '
                "instead"
            )
    elif vocab_size is not None and value >= vocab_size:
        problem = f"a token id below the vocabulary size {vocab_size}"
    else:
        return None
    return f"holds {value!r}, which is not {problem}" if within else f"must be {problem}, got {value!r}"


def token_id(value, vocab_size=None) -> str | None:
    return token_id_problem(value, vocab_size)


def token_ids(value, vocab_size=None) -> str | None:
    """One token id or a list of them (eos_token_id, forced_eos_token_id)."""
    if isinstance(value, (list, tuple)):
        if not value:
            return "must be a token id or a non-empty list of token ids, got an empty list; leave it out instead"
        return next((p for p in (token_id_problem(item, vocab_size, within=True) for item in value) if p), None)
    return token_id_problem(value, vocab_size)


def eos_token_ids(value, vocab_size=None) -> str | None:
    """eos_token_id: token ids as token_ids checks them, and negative integers too, which name no token: transformers'
    own tests pass eos_token_id=-1 to switch the end-of-sequence stop off (its criterion never matches)."""
    values = value if isinstance(value, (list, tuple)) else [value]
    if values and all(is_integer(item) and item < 0 for item in values):
        return None
    if isinstance(value, (list, tuple)):
        kept = [item for item in value if not (is_integer(item) and item < 0)]
        return token_ids(kept, vocab_size)
    return token_ids(value, vocab_size)


def token_list(value, vocab_size=None) -> str | None:
    """A list of token ids (suppress_tokens)."""
    if not isinstance(value, (list, tuple)):
        return f"must be a list of token ids, got {value!r}; for one token write [{value!r}]"
    return next((p for p in (token_id_problem(item, vocab_size, within=True) for item in value) if p), None)


def boolean(value, vocab_size=None) -> str | None:
    return None if isinstance(value, bool) else f"must be True or False, got {value!r}"


def as_plain_ids(value):
    """A tensor, array or tuple of ids -> a plain list of ints (what the trace can hold)."""
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        return [as_plain_ids(v) for v in value]
    return operator.index(value)


def stop_strings(value, vocab_size=None) -> str | None:
    strings = [value] if isinstance(value, str) else value
    if not isinstance(strings, (list, tuple)) or not all(isinstance(s, str) for s in strings):
        return f"must be a string or a list of strings, got {value!r}"
    if not strings:
        return f"must hold at least one string, got {value!r}; pass None for no stop strings"
    if any(s == "" for s in strings):
        return (
            f"must hold only non-empty strings, got {value!r}: an empty string is found everywhere, so it would "
            'stop every run at once (transformers fails on it with "substring not found"); remove it, or pass '
            "None for no stop strings"
        )
    return None


def max_new_tokens(value, vocab_size=None) -> str | None:
    if value == 0 and is_integer(value):  # transformers' GenerationConfig.validate refuses it too
        return (
            "must be at least 1, got 0; to only see how the prompt is tokenized, use "
            "pipe.tokenizer.encode_with_details(text)"
        )
    return number(0, integer=True)(value)


# -- the knobs that are not a logits processor's ------------------------------------------------------------
GENERAL = (
    Knob(
        "max_new_tokens",
        None,
        "int",
        "the most tokens to generate, not counting the prompt",
        check=max_new_tokens,
        live=False,
    ),
    Knob(
        "max_length",
        20,
        "int",
        "the most tokens in all, prompt included (prefer max_new_tokens)",
        check=number(0, integer=True),
        live=False,
    ),
    Knob(
        "do_sample",
        False,
        "bool",
        "draw the next token at random from the probabilities instead of taking the most likely one",
        check=boolean,
        widget=Toggle("sample (do_sample)", main=True),
    ),
    Knob(
        "stop_strings",
        None,
        "json",
        "stop once the text ends with one of these strings",
        check=stop_strings,
        live=False,
    ),
    Knob(
        "eos_token_id",
        None,
        "json",
        "the end-of-sequence token id(s): generating one stops the run (-1: no token, EOS switched off)",
        check=eos_token_ids,
        live=False,
    ),
    Knob(
        "pad_token_id",
        None,
        "int",
        "the padding token id (explain never pads; kept for the record)",
        check=check_pad_token_id,
        convert=int,  # transformers makes it a torch.long tensor: 2.7 -> 2
        live=False,
    ),
    Knob(
        "max_time",
        None,
        "float",
        "the most seconds the run may take: it stops after the first token generated past it (MaxTimeCriteria)",
        check=number(0, fix="pass a number of seconds, or leave it out"),
        live=False,
    ),
    Knob("bos_token_id", None, "int", "the beginning-of-sequence token id", check=number(integer=True), live=False),
)
