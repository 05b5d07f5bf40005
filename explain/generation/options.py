"""What a run is started with besides its generation settings, validated once for both producers.

`RunOptions` holds explain's own call options (trace_top, keep_logits, capture): the explain backend's
TextGenerationPipeline, the transformers backend's and every decoding strategy's run read them from here, so each
has one default and each mistake one message (an ArgumentError naming the argument and the fix).

`LIMITS` is the one place for resource bounds on what a call may ask for (a number of beams, of new tokens, ...):
`check_limits` reads it, and both producers call it once per call, before any work.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ArgumentError
from ..utils.units import size_text

DEFAULT_TRACE_TOP = 20  # the top entries a step records of each row: enough for the views, small in the trace
TOP_WHEN_ALL = DEFAULT_TRACE_TOP  # trace_top="all": the usual top entries, and the whole rows in "rows"
CAPTURES = (None, "default", "inside")  # what each step records besides the default
RUN_OPTIONS = ("trace_top", "keep_logits", "capture")  # explain's own call options (never passed to generate())

# name -> (the largest value a call may ask for, why): bounds that hold whatever the model and the machine. A bound
# added here is refused by both backends with one message (check_limits, too_much). What depends on the model and
# the free memory (rows, prompt tokens, new tokens) is check_fit's.
LIMITS: dict[str, tuple[int, str]] = {
    # captum's integrated gradients builds an n x n float64 matrix of Gauss-Legendre weights (n = steps: 10**7 asked
    # for 728 TiB), and every step is a forward and a backward pass; its own default is 50
    "attribution_steps": (
        4096,
        "each step is a forward and a backward pass, and captum builds an n x n table of step weights "
        "(captum's default is 50; the completeness gap is small by a few hundred)",
    ),
}

LONG_PROMPT = 20_000  # characters: a prompt this long has its tokens counted and checked before its details
LONG_PROMPT_TOKENS = 4_096  # backend="transformers": a prompt of more tokens is checked before its details


def rows_of(settings: dict, batch: int = 1) -> tuple[str, int, int]:
    """The argument that sets how many rows a run computes at once, its value, and the rows each unit of it makes
    (check_fit's `rows`): beams or samples per prompt, times the prompts of a batch."""
    beams, samples = settings.get("num_beams") or 1, settings.get("num_return_sequences") or 1
    if beams > 1:
        return "num_beams", beams, batch
    if samples > 1:
        return "num_return_sequences", samples, batch
    return "batch_size", batch, 1


MULTINOMIAL_CATEGORIES = 2**24  # torch.multinomial's limit: "number of categories cannot exceed 2^24"

# what a run holds per row, in bytes, besides the model (check_fit): the vocabulary-sized rows a step makes (the
# logits in float32, the processors' copies, the softmax, beam search's scores) and the trace's record of a step
VOCAB_COPIES = 8
# one top entry of a row's step record, as Python objects (measured: 10,000 rows grew 11 KB a row-step)
TRACE_ENTRY_BYTES = 500


def trace_top_problem(value) -> str | None:
    if value == "all" and isinstance(value, str):
        return None
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return None
    return f'trace_top must be a positive integer or "all", got {value!r:.60}'


def keep_logits_problem(value) -> str | None:
    if value is None or isinstance(value, bool) or (isinstance(value, int) and value > 0):
        return None
    return f"keep_logits must be True, False or a positive number of steps, got {value!r:.60}"


def capture_problem(value) -> str | None:
    if isinstance(value, (str, type(None))) and value in CAPTURES:
        return None
    return (
        f"capture={value!r:.60} is not a capture mode; use None (the default: tokens, logits and processors) or "
        '"inside" (also each step\'s logit lens and attention weights, for replay with no model; about three '
        "forward passes a step)"
    )


@dataclass(frozen=True)
class RunOptions:
    """explain's own options of one run; invalid values are refused when it is made."""

    trace_top: int | str = DEFAULT_TRACE_TOP  # the top entries recorded per step and row, or "all" (whole rows)
    keep_logits: bool | int = False  # keep each step's raw logits (True: rows.KEEP_LOGITS of them) for what-if/force
    capture: str | None = None  # "inside": each step's logit lens and attention weights too

    def __post_init__(self):
        for problem in (
            trace_top_problem(self.trace_top),
            keep_logits_problem(self.keep_logits),
            capture_problem(self.capture),
        ):
            if problem:
                raise ArgumentError(problem)

    @classmethod
    def from_call(cls, options: dict) -> RunOptions:
        """The run options of a call's keyword arguments (others are ignored); None means "not given"."""
        given = {name: options[name] for name in RUN_OPTIONS if options.get(name) is not None}
        return cls(**given)

    @property
    def top_count(self) -> int:
        """How many top entries a step records of each row (trace_top="all" records the usual top too)."""
        return self.trace_top if isinstance(self.trace_top, int) else TOP_WHEN_ALL


def too_much(name: str, value, largest: int, why: str) -> ArgumentError:
    """The one message of every bound: what was asked, why it cannot be, and the most that can."""
    return ArgumentError(f"{name}={value} is more than explain runs here ({why}); {name}={largest} or less fits")


def check_limits(values: dict) -> None:
    """Refuse a value past its bound in LIMITS (a generation setting or a call option), before any work."""
    for name, (largest, why) in LIMITS.items():
        value = values.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value > largest:
            raise too_much(name, value, largest, why)


@dataclass(frozen=True)
class ModelSize:
    """What one row and one position of a run cost on a model (from its config), and the memory free for them."""

    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab_size: int
    element_bytes: int  # of the activations and the KV cache
    available: int  # bytes free on the run's device

    @classmethod
    def of(cls, config: dict, element_bytes: int, device=None, available: int | None = None) -> ModelSize:
        """From a config.json's keys (Llama's names or GPT-2's); `available` defaults to the device's free memory."""

        def first(*keys, default=1):
            for key in keys:
                value = config.get(key)
                if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                    return value
            return default

        heads = first("num_attention_heads", "n_head")
        hidden = first("hidden_size", "n_embd", default=heads)
        return cls(
            layers=first("num_hidden_layers", "n_layer"),
            heads=heads,
            kv_heads=first("num_key_value_heads", "num_attention_heads", "n_head"),
            head_dim=first("head_dim", default=max(1, hidden // heads)),
            vocab_size=first("vocab_size"),
            element_bytes=element_bytes,
            available=free_memory(device) if available is None else available,
        )

    def needed(self, rows: int, prompt_tokens: int, new_tokens: int, top: int = DEFAULT_TRACE_TOP) -> int:
        """Bytes a run needs at its largest: the KV cache of every position of every row, the prefill's attention
        scores of one layer (rows x heads x prompt^2, float32, and their softmax), the vocabulary-sized rows of a
        step, and the trace's record of every step of every row."""
        positions = prompt_tokens + new_tokens
        cache = rows * positions * self.layers * 2 * self.kv_heads * self.head_dim * self.element_bytes
        scores = rows * self.heads * prompt_tokens * prompt_tokens * 4 * 2
        vocab = rows * self.vocab_size * 4 * VOCAB_COPIES
        record = rows * new_tokens * top * TRACE_ENTRY_BYTES
        return cache + scores + vocab + record


def free_memory(device=None) -> int:
    """Bytes free for a run on `device`: the accelerator's free memory, or the RAM available (as accelerate's
    get_max_memory reads them)."""
    import psutil
    import torch

    kind = getattr(device, "type", None) or str(device or "cpu").split(":")[0]
    if kind == "cuda" and torch.cuda.is_available():
        return torch.cuda.mem_get_info(torch.device(device))[0]
    return psutil.virtual_memory().available


def _largest(fits, value: int, smallest: int) -> int:
    """The largest n in [smallest, value) with fits(n) (fits is monotone); smallest - 1 when none does."""
    low, high = smallest - 1, value  # fits(low) is taken as true, fits(high) is false
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if fits(middle) else (low, middle)
    return low


def check_fit(
    size: ModelSize,
    rows: tuple[str, int, int],
    prompt_tokens: int,
    new_tokens: int,
    top: int = DEFAULT_TRACE_TOP,
    prompt: str = "the prompt",
    beam_sample: bool = False,
) -> None:
    """Refuse, before any work, a run whose rows, prompt or new tokens cannot fit the memory free (ModelSize.needed).
    `rows` is (the argument that sets them, its value, the rows each unit of it makes: a batch's prompts times
    the beams or samples each). The message names the argument whose reduction alone makes the run fit, and the most
    of it that does, in too_much's words."""
    name, value, per = rows
    count = max(1, value) * max(1, per)
    available = size.available
    if beam_sample and count * size.vocab_size > MULTINOMIAL_CATEGORIES:  # one draw from beams x vocabulary
        largest = max(1, MULTINOMIAL_CATEGORIES // (size.vocab_size * max(1, per)))
        why = (
            f"beam sampling draws from num_beams x {size.vocab_size} vocabulary entries at once, and "
            "torch.multinomial takes at most 2^24"
        )
        raise too_much(name, value, largest, why)

    def fits(r=count, p=prompt_tokens, n=new_tokens):
        return size.needed(r, p, n, top) <= available

    if fits():
        return
    need = size.needed(count, prompt_tokens, new_tokens, top)
    why = f"it needs {size_text(need)} of memory and {size_text(available)} is free"
    if value > 1 and fits(r=max(1, per)):
        largest = _largest(lambda v: fits(r=v * max(1, per)), value, 1)
        raise too_much(name, value, largest, why)
    if prompt_tokens > 1 and fits(p=1):
        largest = _largest(lambda t: fits(p=t), prompt_tokens, 1)
        raise ArgumentError(
            f"{prompt} is {prompt_tokens} tokens, more than explain runs here ({why}: the prefill's attention "
            f"grows with the square of the prompt); {largest} tokens or fewer fit: shorten it, or pass "
            'handle_long_generation="hole" with fewer new tokens'
        )
    if new_tokens > 1 and fits(n=1):
        largest = _largest(lambda n: fits(n=n), new_tokens, 1)
        raise too_much("max_new_tokens", new_tokens, largest, why + ", with a KV cache entry for every position")
    raise ArgumentError(
        f"this run ({count} rows, {prompt} of {prompt_tokens} tokens, {new_tokens} new tokens) is more than explain "
        f"runs here ({why}); ask for fewer rows, a shorter prompt and fewer new tokens"
    )


def check_prompt_ids(largest_id: int, vocab_size: int | None, token=None) -> None:
    """Refuse a prompt holding an id the model has no row for (a tokenizer larger than the model's vocabulary):
    the embedding lookup would fail with a raw IndexError mid-call."""
    if vocab_size is not None and largest_id >= vocab_size:
        spelled = f" ({token!r})" if token is not None else ""
        raise ArgumentError(
            f"the tokenizer (tokenizer.json) gave the prompt the id {largest_id}{spelled}, but the model's vocabulary "
            f"has {vocab_size} entries (config.json vocab_size): the tokenizer and the model do not belong together; "
            "load the tokenizer made for this model"
        )
