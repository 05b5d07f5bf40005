"""The registry of logits processors: every processor transformers' generate() builds for a decoder-only model, in
its order and with its defaults; everything that lists generation knobs (settings, validation, the pipeline's
arguments, the model's generation defaults, the CLI) derived from it; one clear error per mistake.
A 10-token random Llama stands in for a model where transformers has to build its own list; nothing else loads.
"""

from __future__ import annotations

import contextlib
import io
import math

import pytest
import torch
import transformers
from transformers.generation import logits_process as hf

from explain.errors import ExplainError
from explain.generation import KNOBS, SETTINGS
from explain.generation.knobs import Knob
from explain.generation.processors import PROCESSORS, LogitsProcessor, build_processors, knobs, ordered, register
from explain.generation.processors.custom import CallProcessor
from explain.generation.settings import GENERATE_DEFAULTS, LIVE_SETTINGS, resolve, validate, warnings_for
from explain.stages.config import generation_config
from explain.text_generation import GENERATE_ARGUMENTS

transformers.logging.set_verbosity_error()
VOCAB = 10


@pytest.fixture(scope="module")
def tiny_model():
    config = transformers.LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=64,
        bos_token_id=0,
        eos_token_id=9,
        pad_token_id=0,
    )
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(config).eval()
    model.generation_config = transformers.GenerationConfig(bos_token_id=0, eos_token_id=9, pad_token_id=0)
    return model


def transformers_processors(model, arguments: dict, input_ids: torch.Tensor) -> list:
    """The LogitsProcessorList a real generate() call builds (captured while it generates one token)."""
    captured = []
    original = model._get_logits_processor

    def capture(*args, **kwargs):
        captured.extend(original(*args, **kwargs))
        return transformers.LogitsProcessorList(captured)

    model._get_logits_processor = capture
    try:
        model.generate(input_ids, attention_mask=torch.ones_like(input_ids), max_new_tokens=1, **arguments)
    finally:
        del model._get_logits_processor
    return captured


class AddOne(hf.LogitsProcessor):
    """A processor of the caller's own."""

    def __call__(self, input_ids, scores):
        return scores + 1


def allow_all(batch_id, input_ids):
    return list(range(VOCAB))


EVERYTHING = dict(  # every knob that builds a processor, at once
    do_sample=True,
    guidance_scale=1.5,
    sequence_bias=[[[2], 1.0], [[3, 4], -2.0]],
    encoder_repetition_penalty=1.3,
    repetition_penalty=1.2,
    no_repeat_ngram_size=2,
    encoder_no_repeat_ngram_size=3,
    bad_words_ids=[[5, 6]],
    min_length=6,
    min_new_tokens=2,
    prefix_allowed_tokens_fn=allow_all,
    forced_bos_token_id=1,
    forced_eos_token_id=9,
    remove_invalid_values=True,
    exponential_decay_length_penalty=(2, 1.5),
    suppress_tokens=[7],
    begin_suppress_tokens=[8],
    temperature=0.7,
    top_h=0.9,
    top_k=5,
    top_p=0.9,
    min_p=0.05,
    typical_p=0.9,
    epsilon_cutoff=0.01,
    eta_cutoff=0.01,
    watermarking_config={"bias": 1.5},
    renormalize_logits=True,
)
MIXES = {
    "everything": EVERYTHING,
    "everything, greedy": {**EVERYTHING, "do_sample": False},  # no warpers; the watermark and renormalize stay
    "SynthID and your processors": dict(
        do_sample=True,
        temperature=1.0,
        repetition_penalty=1.1,
        top_k=4,
        watermarking_config="synthid",
        logits_processor="mine",
    ),
}


def explain_only_knobs() -> set[str]:
    """The knobs of processors transformers lacks (transformers_class = None): generate() has no such argument."""
    return {knob.name for cls in ordered() if cls.transformers_class is None for knob in cls.knobs}


def arguments_for(mix: dict) -> tuple[dict, dict]:
    """(generate() arguments for transformers, the same for explain) for a mix. An explain-only processor's knob
    goes to explain alone."""
    theirs, mine = {k: v for k, v in mix.items() if k not in explain_only_knobs()}, dict(mix)
    if mix.get("watermarking_config") == "synthid":
        theirs["watermarking_config"] = transformers.SynthIDTextWatermarkingConfig(ngram_len=2, keys=[3, 5])
        mine["watermarking_config"] = {"type": "SynthIDTextWatermarkingConfig", "ngram_len": 2, "keys": [3, 5]}
    if mix.get("logits_processor") == "mine":
        penalty = hf.RepetitionPenaltyLogitsProcessor(1.5)  # takes the place of the built one, in its place
        theirs["logits_processor"] = mine["logits_processor"] = transformers.LogitsProcessorList([AddOne(), penalty])
    return theirs, mine


@pytest.mark.filterwarnings("ignore::UserWarning")  # one new token cannot reach min_length; the replaced penalty
@pytest.mark.parametrize("name", list(MIXES))
def test_every_processor_in_generates_order_and_arithmetic(tiny_model, name):
    check_mix(tiny_model, MIXES[name], every=name == "everything")


def check_mix(tiny_model, mix: dict, every: bool = False, registered_late: dict | None = None) -> list:
    """The processors explain builds for a mix, in transformers' order with transformers' arithmetic; `every`: the
    mix builds every registered processor but the alternatives (SynthID, your own). `registered_late`: settings of a
    processor registered after the settings table was built (a test's own), put into the resolved settings."""
    input_ids = torch.tensor([[1, 2, 3, 4]])
    theirs_arguments, mine_arguments = arguments_for(mix)
    theirs = transformers_processors(tiny_model, theirs_arguments, input_ids)
    settings, _ = resolve(
        {**mine_arguments, "max_new_tokens": 1},
        {"eos_token_id": 9},
        {"eos_token_id": "model config"},
        prompt_length=4,
        max_position_embeddings=64,
        pad_token_id=0,
        vocab_size=VOCAB,
    )
    settings.update(registered_late or {})
    built = build_processors(settings, prompt_length=4, prompt_ids=input_ids, vocab_size=VOCAB)
    # a processor transformers lacks is built in its place (order) but has no counterpart in theirs: its arithmetic
    # is tested on its own (test_processors_more.py), its presence here
    mine = [p for p in built if type(p).transformers_class is not None]
    if every:
        assert {type(p).__name__ for p in built} == {cls.__name__ for cls in PROCESSORS.values()} - {
            "SynthIDTextWatermarkLogitsProcessor",
            "CallProcessor",
        }
    assert [p.transformers_class_name if isinstance(p, CallProcessor) else type(p).__name__ for p in mine] == [
        type(p).__name__ for p in theirs
    ]
    _, scores = torch.zeros(1), torch.randn(1, VOCAB, generator=torch.Generator().manual_seed(7))
    for processor, reference in zip(mine, theirs, strict=True):
        expected = reference(input_ids, scores.clone())
        # guidance runs a model, and SynthID's captured instance already took its step in generate(): both are
        # compared step after step in test_processors_more.py
        if processor.name not in ("guidance_scale", "watermarking_config_synthid"):
            assert torch.equal(processor(input_ids, scores), expected), type(processor).__name__
        scores = expected
    return built


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_a_processor_transformers_lacks_joins_the_mix_with_its_knob_alone(tiny_model):
    """The processor recipe's tests for a processor only explain has: its knob in EVERYTHING builds it in its order,
    transformers gets the rest of the mix (generate() would refuse the knob), and the rest still matches."""

    @register
    class ThirdLogitsWarper(LogitsProcessor):
        name, title, order, sampling_only = "third_logits", "a third of the logits", 186, True
        transformers_class = None
        knobs = (Knob("third_logits", None, "bool", "divide every logit by 3", sampling_only=True),)

        @classmethod
        def build(cls, settings, context):
            return cls() if settings.get("third_logits") else None

        def __call__(self, input_ids, scores):
            return scores / 3

    try:
        built = check_mix(tiny_model, EVERYTHING, every=True, registered_late={"third_logits": True})
        names = [p.name for p in built]
        assert names.index("top_h") < names.index("third_logits") < names.index("top_k")  # orders 180 < 186 < 190
        assert torch.equal(built[names.index("third_logits")](None, torch.ones(1, VOCAB)), torch.ones(1, VOCAB) / 3)
    finally:
        PROCESSORS.pop("third_logits")
    assert "third_logits" not in knobs()


def test_defaults_are_transformers_defaults():
    """GenerationConfig's defaults, as generate() fills them in; None where it leaves a field unset."""
    defaults = transformers.GenerationConfig._get_default_generation_params()
    unset = transformers.GenerationConfig()
    for name, knob in KNOBS.items():
        assert knob.default == defaults.get(name, getattr(unset, name, None)), name


def test_everything_that_lists_knobs_reads_the_registry():
    assert SETTINGS == tuple(KNOBS) == tuple(GENERATE_DEFAULTS)
    assert set(SETTINGS) <= set(GENERATE_ARGUMENTS)  # the pipeline's arguments (and explain.pipeline's defaults)
    values, sources = generation_config({"eos_token_id": 2}, {"typical_p": 0.5}, GENERATE_DEFAULTS)
    assert set(KNOBS) <= set(values) and values["typical_p"] == 0.5 and sources["typical_p"] == "generation_config.json"
    assert sources["eta_cutoff"] == "transformers default" and values["eos_token_id"] == 2
    every_knob = {knob.name for cls in ordered() for knob in cls.knobs}
    assert every_knob <= set(LIVE_SETTINGS)  # every processor's knob can change between steps
    assert {"max_new_tokens", "stop_strings", "eos_token_id"}.isdisjoint(LIVE_SETTINGS)


def test_cli_has_one_flag_per_knob():
    from explain.__main__ import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        main(["generate", "--help"])
    for name, knob in KNOBS.items():
        assert (f"--{name.replace('_', '-')}" in out.getvalue()) == knob.cli, name


def test_model_generation_config_values_reach_the_settings_with_their_source():
    settings, sources = resolve(
        {"do_sample": True},
        {"typical_p": 0.8, "no_repeat_ngram_size": 3},
        {"typical_p": "generation_config.json", "no_repeat_ngram_size": "generation_config.json"},
        prompt_length=3,
        max_position_embeddings=64,
        pad_token_id=None,
        vocab_size=VOCAB,
    )
    assert settings["typical_p"] == 0.8 and sources["typical_p"] == "generation_config.json"
    assert sources["eta_cutoff"] == "generate() default" and sources["watermarking_config"] == "generate() default"
    with pytest.raises(ExplainError, match=r"typical_p \(set by the generation_config.json\) must be"):
        resolve({"do_sample": True}, {"typical_p": 0.0}, {"typical_p": "generation_config.json"}, 3, 64, None)


# -- one clear error per mistake ------------------------------------------------------------------------------
BAD = [  # (call, words of the message); each checked with a 10-token vocabulary and a 3-token prompt
    (dict(stop_strings=""), ["stop_strings", "empty string", "stop every run"]),  # issue 15: stopped after 1 token
    (dict(stop_strings=["end", ""]), ["stop_strings", "non-empty"]),
    (dict(stop_strings=[]), ["stop_strings", "at least one string", "None"]),
    (dict(stop_strings=5), ["stop_strings", "a string or a list of strings", "5"]),  # issue 15: a raw TypeError
    (dict(do_sample=True, temperature=math.inf), ["temperature", "finite", "inf"]),  # issue 15: accepted
    (dict(do_sample=True, temperature=float("nan")), ["temperature", "finite"]),
    (dict(repetition_penalty=math.inf), ["repetition_penalty", "finite", "1.0 means no penalty"]),  # issue 15
    (dict(eos_token_id=-2.0), ["eos_token_id", "integer"]),  # -1 (an integer) switches EOS off, as in transformers
    (dict(eos_token_id=[2, 10]), ["eos_token_id", "10", "vocabulary size 10"]),
    (dict(eos_token_id=2.5), ["eos_token_id", "integer"]),
    (dict(no_repeat_ngram_size=-2), ["no_repeat_ngram_size", "integer >= 0", "0 turns it off"]),
    (dict(no_repeat_ngram_size=1.5), ["no_repeat_ngram_size", "integer"]),
    (dict(do_sample=True, typical_p=0.0), ["typical_p", "> 0", "1.0 turns it off"]),  # 1.5: transformers skips it
    (dict(do_sample=True, top_p=-0.5), ["top_p", ">= 0", "1.0 keeps every token"]),  # 0 and 1.5 run (test_dropin)
    (dict(pad_token_id=float("inf")), ["pad_token_id", "token id", "inf"]),  # 2.7 runs as 2, as in transformers
    (dict(do_sample=True, epsilon_cutoff="3e-4"), ["epsilon_cutoff", "a number", "'3e-4'"]),  # 1.0 runs: skipped
    (dict(do_sample=True, eta_cutoff="x"), ["eta_cutoff", "a number", "'x'"]),  # -0.1 runs: skipped as well
    (dict(do_sample=True, top_h=0), ["top_h", "(0, 1]"]),
    (dict(do_sample=True, top_k=-1), ["top_k", "positive integer", "0 to turn top-k off"]),
    (dict(encoder_repetition_penalty=0), ["encoder_repetition_penalty", "> 0"]),
    (dict(bad_words_ids=[]), ["bad_words_ids", "non-empty"]),
    (dict(bad_words_ids=[[1, 2], []]), ["bad_words_ids", "non-empty list of token ids"]),
    (dict(bad_words_ids=[[12]]), ["bad_words_ids", "12", "vocabulary size 10"]),
    (dict(sequence_bias={(1, 2): "a lot"}), ["sequence_bias", "a bias is a number"]),
    (dict(sequence_bias=[[1, 2.0]]), ["sequence_bias", "non-empty list of token ids"]),
    (dict(suppress_tokens=3), ["suppress_tokens", "list of token ids", "[3]"]),
    (dict(suppress_tokens=[9], forced_eos_token_id=9), ["forced_eos_token_id", "suppress_tokens", "no token"]),
    (dict(forced_bos_token_id=-1), ["forced_bos_token_id", "-1"]),
    (dict(exponential_decay_length_penalty=(5,)), ["exponential_decay_length_penalty", "(start, decay factor)"]),
    (
        dict(exponential_decay_length_penalty=(5, 1.2), eos_token_id=None),
        ["exponential_decay_length_penalty", "eos_token_id"],
    ),
    (dict(remove_invalid_values="yes"), ["remove_invalid_values", "True or False"]),
    (dict(guidance_scale=math.inf), ["guidance_scale", "finite"]),
    (dict(negative_prompt_ids="no"), ["negative_prompt_ids", "pipe.tokenizer.encode"]),
    (dict(negative_prompt_attention_mask=[[1, 0]]), ["negative_prompt_attention_mask", "all ones"]),
    (dict(watermarking_config={"seeding_scheme": "hash"}), ["watermarking_config", "lefthash"]),
    (dict(watermarking_config={"ngram_len": 3, "keys": [1]}), ["watermarking_config", "SynthIDTextWatermarkingConfig"]),
    (dict(watermarking_config={"greenlist": 0.5}), ["watermarking_config", "did you mean 'greenlist_ratio'"]),
    (dict(watermarking_config={"type": "SynthIDTextWatermarkingConfig", "ngram_len": 2}), ["keys"]),
    (dict(prefix_allowed_tokens_fn=[1, 2]), ["prefix_allowed_tokens_fn", "function"]),
    (dict(logits_processor=lambda ids, scores: scores), ["logits_processor", "list of logits processors"]),
    (dict(typical=0.5), ["typical", "did you mean 'typical_p'"]),
]


@pytest.mark.parametrize("call, words", BAD, ids=[str(call)[:60] for call, _ in BAD])
def test_a_mistake_gets_one_message_naming_the_argument_and_the_fix(call, words):
    with pytest.raises(ExplainError) as error:
        resolve(
            call,
            {"eos_token_id": 9},
            {"eos_token_id": "model config"},
            prompt_length=3,
            max_position_embeddings=64,
            pad_token_id=None,
            vocab_size=VOCAB,
        )
    for word in words:
        assert word in str(error.value), str(error.value)


def test_sampling_knobs_are_checked_only_when_sampling_and_warned_about():
    """transformers builds the warpers only when sampling: a greedy run ignores them, and warns if the call set one."""
    settings, sources = resolve({"do_sample": False, "typical_p": 7.0}, {}, {}, 3, 64, None, VOCAB)
    assert settings["typical_p"] == 7.0
    assert any("typical_p=7.0 has no effect" in w for w in warnings_for(settings, sources))


def test_plain_forms_for_the_trace():
    settings = validate(
        {
            "negative_prompt_ids": torch.tensor([[4, 5]]),
            "sequence_bias": {(1, 2): 3},
            "watermarking_config": transformers.WatermarkingConfig(bias=1.0),
        },
        VOCAB,
    )
    assert settings["negative_prompt_ids"] == [4, 5] and settings["sequence_bias"] == [[[1, 2], 3.0]]
    assert settings["watermarking_config"] == {
        "type": "WatermarkingConfig",
        "greenlist_ratio": 0.25,
        "bias": 1.0,
        "hashing_key": 15485863,
        "seeding_scheme": "lefthash",
        "context_width": 1,
    }
