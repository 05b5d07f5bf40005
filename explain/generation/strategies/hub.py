"""The decoding modes transformers 5 no longer runs in its core: generate() loads them from a Hub `custom_generate`
repository (code from the Hub, with trust_remote_code=True). explain does not run Hub code, so each is refused with
a message naming the repository and what to use instead. The table is transformers' GENERATION_MODES_MAPPING
(transformers/generation/utils.py) and GenerationConfig.get_generation_mode (generation/configuration_utils.py)."""

from __future__ import annotations

from ..knobs import Knob, number
from .base import DecodingStrategy, set_by_call
from .registry import register


def anything(value, vocab_size=None):
    return None


HUB_MODES = {  # the argument that selects the mode -> (its name, the Hub repository, what to use in explain)
    "num_beam_groups": (
        "group beam search",
        "transformers-community/group-beam-search",
        "num_beams=... for plain beam search, or do_sample=True with num_return_sequences=... for varied sequences",
    ),
    "penalty_alpha": (
        "contrastive search",
        "transformers-community/contrastive-search",
        "greedy decoding with repetition_penalty or no_repeat_ngram_size, or sampling",
    ),
    "dola_layers": ("DoLa decoding", "transformers-community/dola", "greedy decoding or sampling"),
    "constraints": (
        "constrained beam search",
        "transformers-community/constrained-beam-search",
        "prefix_allowed_tokens_fn=... or sequence_bias=... to steer the tokens",
    ),
    "force_words_ids": (
        "constrained beam search",
        "transformers-community/constrained-beam-search",
        "prefix_allowed_tokens_fn=... or sequence_bias=... to steer the tokens",
    ),
}


@register
class HubOnly(DecodingStrategy):
    """Never runs: it refuses the arguments that select a mode transformers moved to the Hub."""

    name, title, order = "hub_only", "a mode on the Hub", 0
    description = "decoding modes transformers 5 runs from Hub custom_generate repositories; explain refuses them"
    source = "transformers/generation/utils.py, GENERATION_MODES_MAPPING and GenerationMixin._get_deprecated_gen_repo"
    knobs = (
        Knob(
            "num_beam_groups",
            1,
            "int",
            "group beam search (on the Hub in transformers 5; refused above 1)",
            check=number(1, integer=True),
            live=False,
        ),
        Knob(
            "diversity_penalty",
            0.0,
            "float",
            "group beam search's diversity penalty (acts only with num_beam_groups > 1)",
            check=number(),
            live=False,
        ),
        Knob(
            "penalty_alpha",
            None,
            "float",
            "contrastive search (on the Hub in transformers 5; refused)",
            check=number(),
            live=False,
        ),
        Knob(
            "dola_layers",
            None,
            "json",
            "DoLa decoding (on the Hub in transformers 5; refused)",
            check=anything,
            live=False,
        ),
        Knob(
            "constraints",
            None,
            "object",
            "constrained beam search (on the Hub in transformers 5; refused)",
            check=anything,
            live=False,
            cli=False,
        ),
        Knob(
            "force_words_ids",
            None,
            "json",
            "constrained beam search (on the Hub in transformers 5; refused)",
            check=anything,
            live=False,
        ),
        Knob(
            "custom_generate",
            None,
            "object",
            "a Hub repository's own generate(); explain does not run Hub code",
            check=anything,
            live=False,
            cli=False,
        ),
        Knob(
            "assistant_early_exit",
            None,
            "int",
            "self-speculative decoding with an early-exit layer (refused: explain's models have no early-exit head)",
            check=number(1, integer=True),
            live=False,
        ),
    )

    @classmethod
    def applies(cls, settings):
        return False

    @classmethod
    def settings_problem(cls, settings):
        for name, (mode, repo, instead) in HUB_MODES.items():
            value = settings.get(name)
            # only this argument's own test runs (dola_layers="high" is no number to compare with 1)
            if name == "num_beam_groups":
                selects = value is not None and value > 1
            elif name == "penalty_alpha":
                selects = (
                    value is not None
                    and value > 0
                    and not settings.get("do_sample")
                    and (settings.get("top_k") or 0) > 1
                )
            else:
                selects = value is not None
            if selects:
                return (
                    f"{name}={value!r} selects {mode}, which transformers 5 no longer runs in generate() itself: "
                    f"it loads it from the Hub repository {repo} (custom_generate={repo!r}, "
                    "trust_remote_code=True), code explain does not run. Use " + instead + " instead."
                )
        if settings.get("custom_generate") is not None:
            return (
                "custom_generate runs a generate() function from a Hub repository (or your own callable); explain "
                "traces transformers' own strategies only: greedy, sampling, beam search, assisted decoding. "
                "Leave custom_generate out."
            )
        if settings.get("assistant_early_exit") is not None:
            return (
                "assistant_early_exit drafts tokens with the model's own first layers and an early-exit head, "
                "which explain's models do not have; use assistant_model=<a smaller explain pipeline> or "
                "prompt_lookup_num_tokens=... for assisted decoding."
            )
        return None

    @classmethod
    def warnings(cls, settings, sources):
        if set_by_call(settings, sources, "diversity_penalty") and settings["diversity_penalty"] != 0.0:
            return [
                f"diversity_penalty={settings['diversity_penalty']!r} has no effect: it only acts in group beam "
                "search (num_beam_groups > 1), which transformers 5 moved to the Hub "
                "(transformers-community/group-beam-search); leave it out"
            ]
        return []

    @classmethod
    def run_class(cls):
        raise NotImplementedError("HubOnly never runs")
