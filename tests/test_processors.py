"""Logits processors on micro tensors: a vocabulary of 10, ramp logits, exact masks; then each one against the
transformers class of the same name on random rows (ties and -inf included), and the order generate() builds.
No model is loaded here: these run in well under a second.
"""

from __future__ import annotations

import math

import pytest
import torch
import transformers
from transformers.generation import logits_process as hf

from explain.errors import ExplainError
from explain.generation import processors as ours
from explain.generation.processors import build_processors
from explain.generation.settings import GENERATE_DEFAULTS

transformers.logging.set_verbosity_error()

VOCAB = 10
INF = float("inf")
RAMP = torch.arange(VOCAB, dtype=torch.float32)[None]  # (1, 10): logit i = i, so token 9 is the most likely
IDS = torch.tensor([[1, 3, 3]])  # (1, 3): a "prompt" that has seen tokens 1 and 3


def kept(scores: torch.Tensor) -> list[int]:
    return torch.isfinite(scores[0]).nonzero().flatten().tolist()


# -- exact results on the ramp ---------------------------------------------------------------------------
def test_temperature_divides():
    out = ours.TemperatureLogitsWarper(2.0)(IDS, RAMP)
    assert torch.equal(out, RAMP / 2)


def test_top_k_keeps_the_k_highest():
    assert kept(ours.TopKLogitsWarper(3)(IDS, RAMP)) == [7, 8, 9]
    assert kept(ours.TopKLogitsWarper(100)(IDS, RAMP)) == list(range(VOCAB))  # k beyond the vocabulary keeps all


def test_top_p_keeps_the_smallest_nucleus():
    # softmax(0..9): p9 = 0.632, p8 = 0.233 -> together 0.865 >= 0.8; the other eight add up to 0.135 <= 0.2
    assert kept(ours.TopPLogitsWarper(0.8)(IDS, RAMP)) == [8, 9]
    assert kept(ours.TopPLogitsWarper(0.5)(IDS, RAMP)) == [9]
    assert kept(ours.TopPLogitsWarper(1.0)(IDS, RAMP)) == list(range(VOCAB))


def test_min_p_is_relative_to_the_top_token():
    # p_i / p_9 = e^(i - 9) >= 0.1  <=>  i >= 9 - ln 10 = 6.7
    assert kept(ours.MinPLogitsWarper(0.1)(IDS, RAMP)) == [7, 8, 9]
    assert kept(ours.MinPLogitsWarper(0.0)(IDS, RAMP)) == list(range(VOCAB))


def test_repetition_penalty_divides_positive_and_multiplies_negative():
    scores = RAMP - 5  # token 1 -> -4, token 3 -> -2, token 7 -> 2
    out = ours.RepetitionPenaltyLogitsProcessor(2.0)(torch.tensor([[1, 3, 7]]), scores)
    expected = scores.clone()
    expected[0, 1], expected[0, 3], expected[0, 7] = -8.0, -4.0, 1.0
    assert torch.equal(out, expected)


def test_min_length_blocks_eos_until_the_whole_sequence_is_long_enough():
    block = ours.MinLengthLogitsProcessor(min_length=4, eos_token_ids=[9])
    assert kept(block(IDS, RAMP)) == list(range(9))  # 3 tokens < 4: EOS (9) is impossible
    assert torch.equal(block(torch.tensor([[1, 3, 3, 5]]), RAMP), RAMP)


def test_min_new_tokens_counts_only_new_tokens():
    block = ours.MinNewTokensLengthLogitsProcessor(prompt_length=3, min_new_tokens=2, eos_token_ids=[8, 9])
    assert kept(block(torch.tensor([[1, 3, 3, 5]]), RAMP)) == list(range(8))  # 1 new token < 2
    assert torch.equal(block(torch.tensor([[1, 3, 3, 5, 6]]), RAMP), RAMP)


# -- against transformers, random rows -------------------------------------------------------------------
def random_rows(seed: int, batch: int = 4, vocab: int = 50) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, scores): scores rounded to a coarse grid so ties are common, some -inf, one row all equal."""
    generator = torch.Generator().manual_seed(seed)
    scores = (torch.randn(batch, vocab, generator=generator) * 3).round() / 2  # (B, V), many ties
    scores[torch.rand(batch, vocab, generator=generator) < 0.15] = -INF
    scores[0, :5] = scores[0].max()  # a tie at the top
    scores[-1] = 1.5  # a flat row
    input_ids = torch.randint(0, vocab, (batch, 7), generator=generator)  # (B, T)
    return input_ids, scores


CLASSES = [  # (explain processor, transformers processor), same arguments
    (lambda: ours.TemperatureLogitsWarper(0.7), lambda: hf.TemperatureLogitsWarper(0.7)),
    (lambda: ours.TemperatureLogitsWarper(1.6), lambda: hf.TemperatureLogitsWarper(1.6)),
    (lambda: ours.TopKLogitsWarper(1), lambda: hf.TopKLogitsWarper(1)),
    (lambda: ours.TopKLogitsWarper(7), lambda: hf.TopKLogitsWarper(7)),
    (lambda: ours.TopKLogitsWarper(7, min_tokens_to_keep=9), lambda: hf.TopKLogitsWarper(7, min_tokens_to_keep=9)),
    (lambda: ours.TopPLogitsWarper(0.3), lambda: hf.TopPLogitsWarper(0.3)),
    (lambda: ours.TopPLogitsWarper(0.9), lambda: hf.TopPLogitsWarper(0.9)),
    (lambda: ours.TopPLogitsWarper(0.9, min_tokens_to_keep=3), lambda: hf.TopPLogitsWarper(0.9, min_tokens_to_keep=3)),
    (lambda: ours.MinPLogitsWarper(0.05), lambda: hf.MinPLogitsWarper(0.05)),
    (lambda: ours.MinPLogitsWarper(0.5), lambda: hf.MinPLogitsWarper(0.5)),
    (lambda: ours.MinPLogitsWarper(0.9, min_tokens_to_keep=4), lambda: hf.MinPLogitsWarper(0.9, min_tokens_to_keep=4)),
    (lambda: ours.RepetitionPenaltyLogitsProcessor(1.3), lambda: hf.RepetitionPenaltyLogitsProcessor(1.3)),
    (lambda: ours.RepetitionPenaltyLogitsProcessor(0.5), lambda: hf.RepetitionPenaltyLogitsProcessor(0.5)),
    (lambda: ours.MinLengthLogitsProcessor(9, [3, 4]), lambda: hf.MinLengthLogitsProcessor(9, [3, 4])),
    (lambda: ours.MinLengthLogitsProcessor(5, [3]), lambda: hf.MinLengthLogitsProcessor(5, 3)),
    (lambda: ours.MinNewTokensLengthLogitsProcessor(4, 5, [2]), lambda: hf.MinNewTokensLengthLogitsProcessor(4, 5, 2)),
    (lambda: ours.MinNewTokensLengthLogitsProcessor(4, 2, [2]), lambda: hf.MinNewTokensLengthLogitsProcessor(4, 2, 2)),
]


@pytest.mark.parametrize(
    "make_ours, make_theirs", CLASSES, ids=[f"{type(m()).__name__}-{i}" for i, (m, _) in enumerate(CLASSES)]
)
def test_processor_equals_transformers(make_ours, make_theirs):
    processor, reference = make_ours(), make_theirs()
    assert type(processor).__name__ == type(reference).__name__  # the same name, the same job
    for seed in range(5):
        input_ids, scores = random_rows(seed)
        before = scores.clone()
        out = processor(input_ids, scores)
        assert torch.equal(scores, before), "the processor changed its input in place"
        assert out is not scores
        expected = reference(input_ids, scores.clone())
        assert torch.equal(out, expected), f"seed {seed}: {out} != {expected}"


def test_processors_keep_at_least_one_token_on_an_all_minus_inf_but_one_row():
    scores = torch.full((1, VOCAB), -INF)
    scores[0, 4] = 0.0
    for processor in (ours.TopKLogitsWarper(3), ours.TopPLogitsWarper(0.1), ours.MinPLogitsWarper(0.9)):
        assert kept(processor(IDS, scores)) == [4], processor


# -- the list generate() builds, in its order ----------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_model():
    """A 10-token random Llama: only here so that transformers' generate() builds its processor list."""
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


def transformers_processors(model, settings: dict, input_ids: torch.Tensor) -> list:
    """The LogitsProcessorList a real generate() call builds for these settings (captured, one token generated)."""
    captured = []
    original = model._get_logits_processor

    def capture(*args, **kwargs):
        captured.extend(original(*args, **kwargs))
        return transformers.LogitsProcessorList(captured)

    model._get_logits_processor = capture
    try:
        model.generate(input_ids, attention_mask=torch.ones_like(input_ids), max_new_tokens=1, **settings)
    finally:
        del model._get_logits_processor
    return captured


SETTINGS_MIXES = [
    dict(
        do_sample=True,
        temperature=0.7,
        top_k=20,
        top_p=0.9,
        min_p=0.05,
        repetition_penalty=1.2,
        min_length=6,
        min_new_tokens=2,
    ),
    dict(do_sample=True, temperature=0.7),  # the pipeline defaults: temperature, then generate()'s top_k=50
    dict(do_sample=True, temperature=1.0, top_k=0, top_p=1.0),  # every warper off
    dict(do_sample=False, temperature=0.3, top_k=5, repetition_penalty=1.5, min_new_tokens=3),  # greedy: no warpers
    dict(do_sample=True, top_p=0.5, min_p=0.2, repetition_penalty=0.8),
]


@pytest.mark.filterwarnings("ignore:Unfeasible length constraints")  # one new token cannot reach min_length
@pytest.mark.parametrize("mix", SETTINGS_MIXES, ids=lambda m: ",".join(f"{k}={v}" for k, v in m.items()))
def test_processor_order_and_arguments_equal_generate(tiny_model, mix):
    input_ids = torch.tensor([[1, 2, 3, 4]])
    theirs = transformers_processors(tiny_model, mix, input_ids)
    assert theirs or mix.get("top_k") == 0  # captured: generate() really built them
    settings = {**GENERATE_DEFAULTS, "eos_token_id": 9, **mix}
    settings["min_length"] = mix.get("min_length", 0)
    if mix.get("min_new_tokens") is not None:  # as resolve() does: min_new_tokens also sets a total min_length
        settings["min_length"] = mix["min_new_tokens"] + input_ids.shape[1]
    mine = build_processors(settings, prompt_length=input_ids.shape[1])
    assert [type(p).__name__ for p in mine] == [type(p).__name__ for p in theirs]
    # and they compute the same thing, one after the other, on a random row
    _, scores = random_rows(7, batch=1, vocab=VOCAB)
    for processor, reference in zip(mine, theirs, strict=True):
        out, expected = processor(input_ids, scores), reference(input_ids, scores.clone())
        assert torch.equal(out, expected), type(processor).__name__
        scores = out


# -- arguments: each processor checks its own and the message says the fix ---------------------------
@pytest.mark.parametrize(
    "make, words",
    [
        (lambda: ours.TemperatureLogitsWarper(0), ["temperature", "do_sample=False"]),
        (lambda: ours.TemperatureLogitsWarper(-1.0), ["temperature", "strictly positive"]),
        (lambda: ours.TopKLogitsWarper(-3), ["top_k", "positive integer"]),
        (lambda: ours.TopPLogitsWarper(-0.1), ["top_p", ">= 0"]),  # 0 keeps the top token, as transformers' class
        (lambda: ours.TopPLogitsWarper(1.5), ["top_p", "at most 1", "1.0 keeps every token"]),
        (lambda: ours.TypicalLogitsWarper(0.0), ["typical_p", "> 0"]),
        (lambda: ours.TypicalLogitsWarper(1.0), ["typical_p", "below 1", "1.0 turns it off"]),
        (lambda: ours.EpsilonLogitsWarper(1.0), ["epsilon_cutoff", "(0, 1)"]),  # as transformers' class
        (lambda: ours.EtaLogitsWarper(0.0), ["eta_cutoff", "(0, 1)", "0 turns it off"]),
        (lambda: ours.MinPLogitsWarper(2.0), ["min_p", "[0, 1]"]),
        (lambda: ours.RepetitionPenaltyLogitsProcessor(0.0), ["repetition_penalty", "1.0 means no penalty"]),
    ],
)
def test_bad_arguments_say_the_fix(make, words):
    with pytest.raises(ExplainError) as error:
        make()
    for word in words:
        assert word in str(error.value)


def test_processor_reprs_and_args_are_plain():
    processor = ours.TopPLogitsWarper(0.9)
    assert repr(processor) == "TopPLogitsWarper(top_p=0.9)"
    assert processor.args() == {"top_p": 0.9} and not math.isnan(processor.top_p)
