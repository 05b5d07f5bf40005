"""The processors beyond the first seven, on micro tensors (a vocabulary of 10, ramp logits, exact masks), then each
against the transformers class of the same name: on random rows for the stateless ones, step after step for those
that carry state in transformers (guidance's second sequence, SynthID's context history). No real model is loaded.
"""

from __future__ import annotations

import math
from typing import cast

import pytest
import torch
import transformers
from transformers.generation import logits_process as hf

from explain.errors import ExplainError
from explain.generation import processors as ours
from explain.models.cache import KVCache

transformers.logging.set_verbosity_error()

VOCAB = 10
INF = float("inf")
RAMP = torch.arange(VOCAB, dtype=torch.float32)[None]  # (1, 10): logit i = i; softmax: p9 .632, p8 .233, p7 .086
IDS = torch.tensor([[1, 3, 3]])  # (1, 3)


def kept(scores: torch.Tensor) -> list[int]:
    return torch.isfinite(scores[0]).nonzero().flatten().tolist()


def everything_but(*tokens) -> list[int]:
    return [i for i in range(VOCAB) if i not in tokens]


# -- exact results on the ramp ---------------------------------------------------------------------------
def test_no_repeat_ngram_forbids_completing_a_seen_ngram():
    assert kept(ours.NoRepeatNGramLogitsProcessor(2)(IDS, RAMP)) == everything_but(3)  # "3 3" was seen after "3"
    assert kept(ours.NoRepeatNGramLogitsProcessor(3)(torch.tensor([[3, 3, 5, 3, 3]]), RAMP)) == everything_but(5)
    assert torch.equal(ours.NoRepeatNGramLogitsProcessor(4)(IDS, RAMP), RAMP)  # no 4-gram yet


def test_encoder_no_repeat_ngram_forbids_only_the_prompts_ngrams():
    block = ours.EncoderNoRepeatNGramLogitsProcessor(2, encoder_input_ids=torch.tensor([[1, 3, 3]]))
    assert kept(block(torch.tensor([[1, 3, 3, 1]]), RAMP)) == everything_but(3)  # the prompt had "1 3"
    assert torch.equal(block(torch.tensor([[1, 3, 3, 7]]), RAMP), RAMP)  # nothing followed 7 in the prompt


def test_encoder_repetition_penalty_favours_the_prompts_tokens():
    scores = RAMP - 5  # token 1 -> -4, token 3 -> -2, token 7 -> 2
    out = ours.EncoderRepetitionPenaltyLogitsProcessor(2.0, encoder_input_ids=torch.tensor([[1, 3, 7]]))(IDS, scores)
    expected = scores.clone()
    expected[0, 1], expected[0, 3], expected[0, 7] = -2.0, -1.0, 4.0  # closer to 0 if negative, doubled if positive
    assert torch.equal(out, expected)


def test_sequence_bias_adds_to_the_token_that_completes_a_sequence():
    bias = ours.SequenceBiasLogitsProcessor([[[9], -5.0], [[3, 4], 10.0], [[1, 4], 100.0]])
    out = bias(IDS, RAMP)  # the text ends with 3, so (3, 4) can be completed and (1, 4) cannot
    expected = RAMP.clone()
    expected[0, 9], expected[0, 4] = 4.0, 14.0
    assert torch.equal(out, expected)


def test_bad_words_forbid_completing_them_but_never_eos_alone():
    assert kept(ours.NoBadWordsLogitsProcessor([[9], [3, 8], [1, 2]])(IDS, RAMP)) == everything_but(8, 9)
    assert kept(ours.NoBadWordsLogitsProcessor([[9], [3, 8]], eos_token_ids=[9])(IDS, RAMP)) == everything_but(8)


def test_forced_first_and_last_tokens():
    forced = ours.ForcedBOSTokenLogitsProcessor(5)(torch.tensor([[0]]), RAMP)
    assert kept(forced) == [5] and forced[0, 5] == 0
    assert torch.equal(ours.ForcedBOSTokenLogitsProcessor(5)(IDS, RAMP), RAMP)  # only after a one-token text
    last = ours.ForcedEOSTokenLogitsProcessor(max_length=4, eos_token_id=9)(IDS, RAMP)  # 3 tokens: one place left
    assert kept(last) == [9] and last[0, 9] == 0
    assert torch.equal(ours.ForcedEOSTokenLogitsProcessor(max_length=5, eos_token_id=9)(IDS, RAMP), RAMP)


def test_remove_invalid_values_makes_every_score_finite():
    scores = torch.tensor([[math.nan, INF, -INF, 1.0]])
    out = ours.InfNanRemoveLogitsProcessor()(IDS, scores)
    assert out.tolist() == [[0.0, torch.finfo(torch.float32).max, torch.finfo(torch.float32).min, 1.0]]


def test_exponential_decay_raises_eos_after_the_start():
    decay = ours.ExponentialDecayLengthPenalty((1, 2.0), eos_token_ids=[9], prompt_length=2)  # from 3 tokens on
    assert torch.equal(decay(IDS, RAMP), RAMP)  # 3 tokens: not yet past the start
    assert decay(torch.tensor([[1, 3, 3, 3]]), RAMP)[0, 9] == 9 + 9 * (2**1 - 1)
    assert decay(torch.tensor([[1, 3, 3, 3, 3]]), RAMP)[0, 9] == 9 + 9 * (2**2 - 1)
    assert decay(torch.tensor([[1, 3, 3, 3]]), RAMP - 10)[0, 9] == 0.0  # -1 + |-1| * 1: negative logits grow too


def test_suppress_tokens_always_and_at_the_beginning():
    assert kept(ours.SuppressTokensLogitsProcessor([2, 9])(IDS, RAMP)) == everything_but(2, 9)
    begin = ours.SuppressTokensAtBeginLogitsProcessor([9], begin_index=3)
    assert kept(begin(IDS, RAMP)) == everything_but(9)
    assert torch.equal(begin(torch.tensor([[1, 3, 3, 4]]), RAMP), RAMP)


def test_prefix_allowed_tokens_keeps_only_what_the_function_allows():
    allow = ours.PrefixConstrainedLogitsProcessor(lambda batch_id, ids: [2, 5])
    out = allow(IDS, RAMP)
    assert kept(out) == [2, 5] and out[0, 5] == 5.0
    impossible = RAMP.clone()
    impossible[0, [2, 5]] = -INF  # every allowed token already impossible: forced to 0 so the constraint holds
    assert allow(IDS, impossible)[0].tolist() == [0.0 if i in (2, 5) else -INF for i in range(VOCAB)]
    with pytest.raises(ExplainError, match="returned no token"):
        ours.PrefixConstrainedLogitsProcessor(lambda batch_id, ids: [])(IDS, RAMP)


def test_renormalize_turns_scores_into_log_probabilities():
    out = ours.LogitNormalization()(IDS, RAMP)
    assert torch.allclose(out.exp().sum(), torch.tensor(1.0)) and torch.allclose(out - out[0, 0], RAMP)


def test_epsilon_cutoff_removes_tokens_below_epsilon():
    assert kept(ours.EpsilonLogitsWarper(0.01)(IDS, RAMP)) == [5, 6, 7, 8, 9]  # p5 = .0116, p4 = .0043


def test_eta_cutoff_adapts_to_the_entropy():
    # the ramp's entropy is 1.040 nats: sqrt(eta) * e^-1.04 = 0.112 for eta 0.1, so the cutoff is eta itself
    assert kept(ours.EtaLogitsWarper(0.1)(IDS, RAMP)) == [8, 9]
    assert kept(ours.EtaLogitsWarper(0.0009)(IDS, RAMP)) == [3, 4, 5, 6, 7, 8, 9]  # p3 = .0016, p2 = .0006


def test_typical_p_keeps_the_tokens_whose_surprise_is_near_the_entropy():
    # |-ln p - H|: token 8 0.42, token 9 0.58, token 7 1.42 ... so 8 is the most typical, then 9, then 7
    assert kept(ours.TypicalLogitsWarper(0.2)(IDS, RAMP)) == [8]  # the most likely token (9) is not kept
    assert kept(ours.TypicalLogitsWarper(0.5)(IDS, RAMP)) == [8, 9]
    assert kept(ours.TypicalLogitsWarper(0.9)(IDS, RAMP)) == [7, 8, 9]


def test_top_h_keeps_the_top_tokens_within_an_entropy_budget():
    # -p ln p summed from the top: 0.29 (token 9), 0.63 (+8), 0.84 (+7); the budget is top_h * 1.04
    assert kept(ours.TopHLogitsWarper(0.5)(IDS, RAMP)) == [9]
    assert kept(ours.TopHLogitsWarper(0.7)(IDS, RAMP)) == [8, 9]


# -- against transformers, random rows -------------------------------------------------------------------
def random_rows(seed: int, batch: int = 1, vocab: int = 50) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, scores): coarse scores with ties, some -inf; ids with repeats so that n-grams recur."""
    generator = torch.Generator().manual_seed(seed)
    scores = (torch.randn(batch, vocab, generator=generator) * 3).round() / 2  # (B, V)
    scores[torch.rand(batch, vocab, generator=generator) < 0.15] = -INF
    input_ids = torch.randint(0, 6, (batch, 9), generator=generator)  # (B, T), ids 0..5: many repeats
    return input_ids, scores


PROMPT = cast(torch.LongTensor, torch.tensor([[1, 2, 1, 3, 4]]))  # as transformers annotates input ids
STATELESS = [  # (explain processor, transformers processor), same arguments
    (lambda: ours.NoRepeatNGramLogitsProcessor(2), lambda: hf.NoRepeatNGramLogitsProcessor(2)),
    (lambda: ours.NoRepeatNGramLogitsProcessor(3), lambda: hf.NoRepeatNGramLogitsProcessor(3)),
    (
        lambda: ours.EncoderNoRepeatNGramLogitsProcessor(2, PROMPT),
        lambda: hf.EncoderNoRepeatNGramLogitsProcessor(2, PROMPT),
    ),
    (
        lambda: ours.EncoderNoRepeatNGramLogitsProcessor(12, PROMPT),
        lambda: hf.EncoderNoRepeatNGramLogitsProcessor(12, PROMPT),
    ),  # longer than the text: the slice wraps
    (
        lambda: ours.EncoderRepetitionPenaltyLogitsProcessor(1.7, PROMPT),
        lambda: hf.EncoderRepetitionPenaltyLogitsProcessor(1.7, PROMPT),
    ),
    (
        lambda: ours.SequenceBiasLogitsProcessor([[[3], 2.5], [[1, 2], -4.0], [[2, 1, 0], 7.0], [[4, 4], -INF]]),
        lambda: hf.SequenceBiasLogitsProcessor([[[3], 2.5], [[1, 2], -4.0], [[2, 1, 0], 7.0], [[4, 4], -INF]]),
    ),
    (
        lambda: ours.NoBadWordsLogitsProcessor([[3], [1, 2], [0, 0, 5], [7]], eos_token_ids=[7]),
        lambda: hf.NoBadWordsLogitsProcessor([[3], [1, 2], [0, 0, 5], [7]], eos_token_id=7),
    ),
    (lambda: ours.ForcedBOSTokenLogitsProcessor(4), lambda: hf.ForcedBOSTokenLogitsProcessor(4)),
    (lambda: ours.ForcedEOSTokenLogitsProcessor(10, [2, 3]), lambda: hf.ForcedEOSTokenLogitsProcessor(10, [2, 3])),
    (lambda: ours.InfNanRemoveLogitsProcessor(), lambda: hf.InfNanRemoveLogitsProcessor()),
    (
        lambda: ours.ExponentialDecayLengthPenalty((2, 1.3), [2, 5], 4),
        lambda: hf.ExponentialDecayLengthPenalty((2, 1.3), [2, 5], 4),
    ),
    (lambda: ours.SuppressTokensLogitsProcessor([0, 4, 49]), lambda: hf.SuppressTokensLogitsProcessor([0, 4, 49])),
    (
        lambda: ours.SuppressTokensAtBeginLogitsProcessor([1, 2], 9),
        lambda: hf.SuppressTokensAtBeginLogitsProcessor([1, 2], 9),
    ),
    (
        lambda: ours.PrefixConstrainedLogitsProcessor(lambda b, ids: [int(ids[-1]), 7, 30]),
        lambda: hf.PrefixConstrainedLogitsProcessor(lambda b, ids: [int(ids[-1]), 7, 30], 1),
    ),
    (lambda: ours.LogitNormalization(), lambda: hf.LogitNormalization()),
    (lambda: ours.TopHLogitsWarper(0.4), lambda: hf.TopHLogitsWarper(0.4)),
    (lambda: ours.TopHLogitsWarper(0.9), lambda: hf.TopHLogitsWarper(0.9)),
    (lambda: ours.TypicalLogitsWarper(0.3), lambda: hf.TypicalLogitsWarper(0.3)),
    (lambda: ours.TypicalLogitsWarper(0.95), lambda: hf.TypicalLogitsWarper(0.95)),
    (lambda: ours.EpsilonLogitsWarper(0.02), lambda: hf.EpsilonLogitsWarper(0.02)),
    (
        lambda: ours.EpsilonLogitsWarper(0.3, min_tokens_to_keep=3),
        lambda: hf.EpsilonLogitsWarper(0.3, min_tokens_to_keep=3),
    ),
    (lambda: ours.EtaLogitsWarper(0.02), lambda: hf.EtaLogitsWarper(0.02)),
    (lambda: ours.EtaLogitsWarper(0.0003), lambda: hf.EtaLogitsWarper(0.0003)),
    (lambda: ours.WatermarkLogitsProcessor(50, "cpu"), lambda: hf.WatermarkLogitsProcessor(50, "cpu")),
    (
        lambda: ours.WatermarkLogitsProcessor(
            50, "cpu", greenlist_ratio=0.5, bias=3.0, seeding_scheme="selfhash", context_width=3
        ),
        lambda: hf.WatermarkLogitsProcessor(
            50, "cpu", greenlist_ratio=0.5, bias=3.0, seeding_scheme="selfhash", context_width=3
        ),
    ),
]


@pytest.mark.parametrize(
    "make_ours, make_theirs", STATELESS, ids=[f"{type(m()).__name__}-{i}" for i, (m, _) in enumerate(STATELESS)]
)
def test_processor_equals_transformers(make_ours, make_theirs):
    processor, reference = make_ours(), make_theirs()
    assert type(processor).__name__ == type(reference).__name__  # the same name, the same job
    for seed in range(6):
        input_ids, scores = random_rows(seed)
        if seed == 5:
            input_ids = input_ids[:, :1]  # a one-token text (the forced first token's case)
        before = scores.clone()
        out = processor(input_ids, scores)
        assert torch.equal(scores, before), "the processor changed its input in place"
        assert out is not scores
        expected = reference(input_ids, scores.clone())
        assert torch.equal(out, expected), f"seed {seed}: {out} != {expected}"


# -- against transformers, step after step (processors with state) ----------------------------------------
class Output(dict):
    """A model output read both ways: out.logits (explain, transformers) and out.get("cache") (transformers' CFG)."""

    __getattr__ = dict.__getitem__


class MockLM:
    """A language model of a 50-token vocabulary whose last-position logits depend on every token seen, in order:
    sum of W[token] * 0.7 ** (distance). It serves explain's interface (cache=KVCache, logits_to_keep) and the one
    transformers' guidance processor calls (cache=<what it returned before>, attention_mask, use_cache)."""

    def __init__(self, vocab: int = 50):
        self.weights = torch.randn(vocab, vocab, generator=torch.Generator().manual_seed(3))
        self.calls = 0

    def __call__(self, input_ids, cache=None, logits_to_keep=0, attention_mask=None, use_cache=None):
        self.calls += 1
        if isinstance(cache, KVCache):  # explain: the tokens seen are kept as the cache's "keys"
            cache.update(0, input_ids[:, None, :, None].float(), input_ids[:, None, :, None].float())
            seen = cache.keys[0][0, 0, :, 0].long().tolist()
        else:  # transformers: the cache is whatever this returned last time
            seen = (cache or []) + input_ids[0].tolist()
        logits = []
        for end in range(len(seen) - input_ids.shape[1], len(seen)):
            decay = torch.tensor([0.7 ** (end - s) for s in range(end + 1)])
            logits.append((self.weights[seen[: end + 1]] * decay[:, None]).sum(0))
        logits = torch.stack(logits)[None]  # (1, T, V)
        return Output(logits=logits[:, -logits_to_keep:] if logits_to_keep else logits, cache=seen)


def steps(prompt: torch.Tensor, count: int, seed: int):
    """(input_ids, scores) for `count` steps of a text growing from the prompt, with repeats among the tokens."""
    generator = torch.Generator().manual_seed(seed)
    ids = prompt
    for _ in range(count):
        scores = torch.randn(1, 50, generator=generator) * 2
        yield ids, scores
        ids = torch.cat([ids, torch.randint(0, 4, (1, 1), generator=generator)], dim=1)


@pytest.mark.parametrize("negative", [None, [7, 8, 9]])
def test_guidance_equals_transformers_step_after_step(negative):
    model = MockLM()
    prompt = torch.tensor([[5, 6, 7, 8]])
    processor = ours.UnbatchedClassifierFreeGuidanceLogitsProcessor(
        1.5, model, prompt_length=4, unconditional_ids=negative
    )
    reference = hf.UnbatchedClassifierFreeGuidanceLogitsProcessor(
        1.5, model, unconditional_ids=None if negative is None else torch.tensor([negative])
    )
    recorded = []
    for input_ids, scores in steps(prompt, 6, seed=1):
        before = model.calls
        out = processor(input_ids, scores)
        assert model.calls == before + 1  # one forward a step, of one token after the first, as transformers
        assert torch.equal(out, reference(input_ids, scores.clone()))
        recorded.append((input_ids, scores, out))
    # an earlier step again (what-if) and a branch (force): the cache rewinds to what they share
    for input_ids, scores, out in (recorded[2], recorded[5], recorded[0]):
        assert torch.equal(processor(input_ids, scores), out)
    branch = torch.cat([recorded[3][0], torch.tensor([[3, 3]])], dim=1)
    fresh = ours.UnbatchedClassifierFreeGuidanceLogitsProcessor(1.5, model, 4, unconditional_ids=negative)
    assert torch.allclose(processor(branch, recorded[0][1]), fresh(branch, recorded[0][1]), atol=1e-6)


@pytest.mark.parametrize(
    "options",
    [
        dict(ngram_len=3),
        dict(ngram_len=2, context_history_size=3),
        dict(ngram_len=4, skip_first_ngram_calls=True),
        dict(ngram_len=3, debug_mode=True),
    ],
)
def test_synthid_equals_transformers_step_after_step(options):
    keys = [654, 400, 836, 123, 340]
    processor = ours.SynthIDTextWatermarkLogitsProcessor(keys=keys, prompt_length=4, **options)
    reference = hf.SynthIDTextWatermarkLogitsProcessor(
        keys=keys,
        sampling_table_size=2**16,
        sampling_table_seed=0,
        device="cpu",
        **{"context_history_size": 1024, **options},
    )
    outputs = []
    for input_ids, scores in steps(torch.tensor([[9, 9, 9, 9]]), 14, seed=2):  # ids 0..3: contexts repeat
        out = processor(input_ids, scores)
        assert torch.equal(out, reference(input_ids, scores.clone())), input_ids.tolist()
        outputs.append((input_ids, scores, out))
    input_ids, scores, out = outputs[6]  # a what-if on an earlier step gives that step's numbers again
    assert torch.equal(processor(input_ids, scores), out)
