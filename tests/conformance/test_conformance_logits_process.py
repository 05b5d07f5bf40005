"""transformers' tests/generation/test_logits_process.py as the specification of explain's processors
(explain/generation/processors/): each test below feeds the inputs of the transformers test of the same name to
explain's processor and to transformers' own, asserts that the two give the same scores, and asserts what the
transformers test asserts, on explain's output. Processors are plain tensors in and out, so the backend does not
enter here: backend="transformers" runs transformers' own classes (checked against the same inputs by the
comparison). Which of transformers' tests apply, and why the others do not: docs/conformance.md.

One representation differs by design: explain's warpers always filter with -inf (transformers' default
`filter_value`; the pipeline has no argument for another), so where a transformers test passes filter_value=0.0
and counts the entries that are not 0.0, the test here counts the finite entries: the same tokens kept.
"""

from __future__ import annotations

import pytest
import torch
from transformers.generation import logits_process as theirs

from explain.generation.processors import guidance, length, normalization, penalties, sequence_bias, warpers
from explain.generation.processors.constraints import InfNanRemoveLogitsProcessor, PrefixConstrainedLogitsProcessor
from explain.generation.processors.top_h import TopHLogitsWarper


def uniform(batch_size: int, length: int) -> torch.Tensor:
    return torch.ones((batch_size, length), dtype=torch.float) / length


def ids(shape, vocab_size: int, seed: int = 0) -> torch.Tensor:
    """transformers' ids_tensor: random ids, here under a seed."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab_size, shape, generator=generator)


def same(ours, reference, input_ids, scores) -> torch.Tensor:
    """explain's processor and transformers' on copies of the same inputs: equal scores (and -inf in the same
    places); returns explain's, and checks neither changed the scores it was given in place."""
    before = scores.clone()
    mine = ours(None if input_ids is None else input_ids.clone(), scores.clone())
    expected = reference(None if input_ids is None else input_ids.clone(), scores.clone())
    torch.testing.assert_close(mine, expected, rtol=1e-5, atol=1e-6)
    assert torch.equal(torch.isinf(mine), torch.isinf(expected))
    mine_again = ours(input_ids, scores)
    assert torch.equal(scores, before), "explain's processor changed its input in place"
    return mine_again


def test_min_length_dist_processor():
    ours = length.MinLengthLogitsProcessor(10, [0])
    reference = theirs.MinLengthLogitsProcessor(min_length=10, eos_token_id=0, device="cpu")
    out = same(ours, reference, ids((4, 5), 20), uniform(4, 20))
    assert out[:, 0].tolist() == 4 * [-float("inf")]
    out = same(ours, reference, ids((4, 15), 20), uniform(4, 20))
    assert not torch.isinf(out).any()


@pytest.mark.parametrize("eos_token_id", [0, [0, 18]], ids=["one EOS", "two EOS"])
def test_new_min_length_dist_processor(eos_token_id):
    eos = [eos_token_id] if isinstance(eos_token_id, int) else eos_token_id
    ours = length.MinNewTokensLengthLogitsProcessor(5, 3, eos)
    reference = theirs.MinNewTokensLengthLogitsProcessor(
        prompt_length_to_skip=5, min_new_tokens=3, eos_token_id=eos_token_id, device="cpu"
    )
    expected = 4 * len(eos) * [-float("inf")]
    for current, suppressed in ((5, True), (2, True), (6, True), (7, True), (8, False), (15, False)):
        out = same(ours, reference, ids((4, current), 20), uniform(4, 20))
        if suppressed:
            assert out[:, eos].flatten().tolist() == expected
        else:
            assert not torch.isinf(out).any()


def test_temperature_dist_warper():
    scores = uniform(2, 20)
    scores[1, 5] = (1 / 20) + 0.1
    scores[1, 10] = (1 / 20) - 0.4
    probs = torch.softmax(scores, dim=-1)
    sharp = torch.softmax(
        same(warpers.TemperatureLogitsWarper(0.5), theirs.TemperatureLogitsWarper(0.5), None, scores), -1
    )
    smooth = torch.softmax(
        same(warpers.TemperatureLogitsWarper(1.3), theirs.TemperatureLogitsWarper(1.3), None, scores), -1
    )
    torch.testing.assert_close(probs[0], sharp[0], rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(probs[0], smooth[0], rtol=1e-3, atol=1e-3)
    assert probs[1].max() < sharp[1].max() and probs[1].min() > sharp[1].min()
    assert probs[1].max() > smooth[1].max() and probs[1].min() < smooth[1].min()


def test_repetition_penalty_dist_process():
    input_ids = torch.tensor([[0, 1], [5, 0]])
    scores = uniform(2, 10)
    scores[0, 0] = -(1 / 10)
    scores[1, 5] = 4 / 10
    out = same(
        penalties.RepetitionPenaltyLogitsProcessor(2.0), theirs.RepetitionPenaltyLogitsProcessor(2.0), input_ids, scores
    )
    assert out[0, 0].item() == pytest.approx(-(1 / 10) * 2)
    assert out[0, 1].item() == pytest.approx((1 / 10) / 2)
    assert out[1, 0].item() == pytest.approx((1 / 10) / 2)
    assert out[1, 5].item() == pytest.approx((4 / 10) / 2)


def test_encoder_repetition_penalty_dist_process():
    input_ids = torch.tensor([[0, 1], [5, 0]])
    scores = uniform(2, 10)
    scores[0, 0] = -(1 / 10)
    scores[1, 5] = 4 / 10
    out = same(
        penalties.EncoderRepetitionPenaltyLogitsProcessor(2.0, input_ids),
        theirs.EncoderRepetitionPenaltyLogitsProcessor(penalty=2.0, encoder_input_ids=input_ids),
        input_ids,
        scores,
    )
    assert out[0, 0].item() == pytest.approx(-(1 / 10) / 2)
    assert out[0, 1].item() == pytest.approx((1 / 10) * 2)
    assert out[1, 0].item() == pytest.approx((1 / 10) * 2)
    assert out[1, 5].item() == pytest.approx((4 / 10) * 2)
    assert out[0, 2].item() == pytest.approx(1 / 10) and out[1, 2].item() == pytest.approx(1 / 10)


def ramp(batch_size: int, vocab_size: int) -> torch.Tensor:
    return torch.arange(vocab_size, dtype=torch.float).unsqueeze(0).repeat(batch_size, 1)


def extreme_ramp() -> torch.Tensor:
    logits = ramp(2, 10) - 5
    logits[1] = logits[1] * 100.0
    return logits


def test_top_k_dist_warper():
    logits = ramp(2, 10)
    logits[1:, :5] = logits[1:, :5] + 10
    out = same(warpers.TopKLogitsWarper(3), theirs.TopKLogitsWarper(3), None, logits)
    assert torch.isinf(out[0]).tolist() == 7 * [True] + 3 * [False]
    assert torch.isinf(out[1]).tolist() == 2 * [True] + 3 * [False] + 5 * [True]
    safety, reference = (
        warpers.TopKLogitsWarper(1, min_tokens_to_keep=3),
        theirs.TopKLogitsWarper(1, min_tokens_to_keep=3),
    )
    assert (~torch.isfinite(same(safety, reference, None, uniform(2, 5)))).sum(-1).tolist() == [0, 0]
    assert (~torch.isfinite(same(safety, reference, None, ramp(2, 5)))).sum(-1).tolist() == [2, 2]


def test_top_p_dist_warper():
    dist = torch.log(torch.tensor([[0.3, 0.1, 0.1, 0.5], [0.15, 0.3, 0.3, 0.25]]))
    out = torch.exp(same(warpers.TopPLogitsWarper(0.8), theirs.TopPLogitsWarper(0.8), None, dist))
    expected = torch.tensor([[0.3, 0.0, 0.0, 0.5], [0.0, 0.3, 0.3, 0.25]])
    torch.testing.assert_close(out, expected, rtol=1e-3, atol=1e-3)
    kept = same(
        warpers.TopPLogitsWarper(0.9, min_tokens_to_keep=2),
        theirs.TopPLogitsWarper(0.9, min_tokens_to_keep=2),
        None,
        extreme_ramp(),
    )
    assert torch.isfinite(kept).sum(-1).tolist() == [3, 2]


@pytest.mark.parametrize(
    "probs, top_h, expected",
    [
        ([0.97, 0.01, 0.01, 0.01], 0.3, [0.97, 0.0, 0.0, 0.0]),
        ([0.4, 0.3, 0.2, 0.1], 0.7, [0.4, 0.3, 0.0, 0.0]),
        ([0.25, 0.25, 0.25, 0.25], 1.0, [0.25, 0.25, 0.25, 0.25]),
        ([0.75, 0.25, 0.0, 0.0], 0.4, [0.75, 0.0, 0.0, 0.0]),
    ],
    ids=["peaked", "skewed", "uniform", "zeros"],
)
def test_top_h_dist_warper(probs, top_h, expected):
    dist = torch.log(torch.tensor([probs]))
    out = torch.exp(same(TopHLogitsWarper(top_h), theirs.TopHLogitsWarper(top_h=top_h), None, dist))
    torch.testing.assert_close(out, torch.tensor([expected]), rtol=1e-3, atol=1e-3)


def test_min_p_dist_warper():
    dist = torch.log(torch.tensor([[0.9, 0.0274, 0.047, 0.0274], [0.15, 0.3, 0.3, 0.25], [0.97, 0.01, 0.01, 0.01]]))
    out = torch.exp(same(warpers.MinPLogitsWarper(0.05), theirs.MinPLogitsWarper(0.05), None, dist))
    expected = torch.tensor([[0.9, 0.0, 0.047, 0.0], [0.15, 0.3, 0.3, 0.25], [0.97, 0.0, 0.0, 0.0]])
    torch.testing.assert_close(out, expected, rtol=1e-3, atol=1e-3)
    kept = same(
        warpers.MinPLogitsWarper(0.9, min_tokens_to_keep=2),
        theirs.MinPLogitsWarper(0.9, min_tokens_to_keep=2),
        None,
        extreme_ramp(),
    )
    assert torch.isfinite(kept).sum(-1).tolist() == [2, 2]


def test_typical_dist_warper():
    dist = torch.log(torch.tensor([[0.97, 0.01, 0.01, 0.01], [0.4, 0.2, 0.2, 0.2]]))
    out = torch.exp(same(warpers.TypicalLogitsWarper(0.5), theirs.TypicalLogitsWarper(0.5), None, dist))
    expected = torch.tensor([[0.97, 0.0, 0.0, 0.0], [0.0, 0.2, 0.2, 0.2]])
    torch.testing.assert_close(out, expected, rtol=1e-3, atol=1e-3)
    safety = same(
        warpers.TypicalLogitsWarper(0.5, min_tokens_to_keep=3),
        theirs.TypicalLogitsWarper(mass=0.5, min_tokens_to_keep=3),
        None,
        uniform(2, 5),
    )
    assert (~torch.isfinite(safety)).sum(-1).tolist() == [0, 0]
    kept = same(
        warpers.TypicalLogitsWarper(0.7, min_tokens_to_keep=2),
        theirs.TypicalLogitsWarper(0.7, min_tokens_to_keep=2),
        None,
        extreme_ramp(),
    )
    assert torch.isfinite(kept).sum(-1).tolist() == [2, 2]


def test_epsilon_dist_warper():
    dist = torch.log(torch.tensor([[0.87, 0.099, 0.001, 0.03], [0.4, 0.299, 0.101, 0.2]]))
    out = torch.exp(same(warpers.EpsilonLogitsWarper(0.1), theirs.EpsilonLogitsWarper(0.1), None, dist))
    expected = torch.tensor([[0.87, 0, 0, 0], [0.4, 0.299, 0.101, 0.2]])
    torch.testing.assert_close(out, expected, rtol=1e-3, atol=1e-3)
    kept = same(
        warpers.EpsilonLogitsWarper(5e-2, min_tokens_to_keep=2),
        theirs.EpsilonLogitsWarper(5e-2, min_tokens_to_keep=2),
        None,
        extreme_ramp(),
    )
    assert torch.isfinite(kept).sum(-1).tolist() == [3, 2]


def test_eta_dist_warper():
    dist = torch.log(torch.tensor([[0.0, 0.1, 0.8, 0.1], [0.01, 0.04, 0.9, 0.05]]))
    out = torch.exp(same(warpers.EtaLogitsWarper(0.0625), theirs.EtaLogitsWarper(0.0625, device="cpu"), None, dist))
    expected = torch.tensor([[0.0, 0.1, 0.8, 0.1], [0.0, 0.0, 0.9, 0.0]])
    torch.testing.assert_close(out, expected, rtol=1e-3, atol=1e-3)
    kept = same(
        warpers.EtaLogitsWarper(0.1, min_tokens_to_keep=2),
        theirs.EtaLogitsWarper(0.1, min_tokens_to_keep=2, device="cpu"),
        None,
        extreme_ramp(),
    )
    assert torch.isfinite(kept).sum(-1).tolist() == [2, 2]


def test_no_repeat_ngram_dist_processor():
    input_ids = torch.tensor([[1, 1, 2, 1], [0, 1, 0, 1]])
    scores = uniform(2, 3)
    two = same(penalties.NoRepeatNGramLogitsProcessor(2), theirs.NoRepeatNGramLogitsProcessor(2), input_ids, scores)
    three = same(penalties.NoRepeatNGramLogitsProcessor(3), theirs.NoRepeatNGramLogitsProcessor(3), input_ids, scores)
    assert torch.isinf(two).tolist() == [[False, True, True], [True, False, False]]
    assert torch.isinf(three).tolist() == [[False, False, False], [True, False, False]]


def test_no_repeat_ngram_dist_processor_banned_token_reappears():
    input_ids = torch.tensor([[1, 2, 5, 7, 8, 5, 1, 2]])
    out = same(
        penalties.NoRepeatNGramLogitsProcessor(3), theirs.NoRepeatNGramLogitsProcessor(3), input_ids, uniform(1, 10)
    )
    assert torch.isinf(out).nonzero()[:, 1].tolist() == [5]


def test_no_repeat_ngram_dist_processor_sequence_shorter_than_ngram():
    input_ids = torch.tensor([[1, 2], [0, 1]])
    out = same(
        penalties.NoRepeatNGramLogitsProcessor(3), theirs.NoRepeatNGramLogitsProcessor(3), input_ids, uniform(2, 3)
    )
    assert not torch.isinf(out).any()


def test_encoder_no_repeat_ngram_dist_processor():
    """The decoder-only form: the "encoder" ids are the prompt (one prompt, two rows of it, as two beams)."""
    prompt = torch.tensor([1, 2, 1, 1])
    input_ids = torch.tensor([[1, 2, 1], [8, 0, 2]])
    scores = uniform(2, 3)
    two = same(
        penalties.EncoderNoRepeatNGramLogitsProcessor(2, prompt[None]),
        theirs.EncoderNoRepeatNGramLogitsProcessor(2, encoder_input_ids=prompt),
        input_ids,
        scores,
    )
    three = same(
        penalties.EncoderNoRepeatNGramLogitsProcessor(3, prompt[None]),
        theirs.EncoderNoRepeatNGramLogitsProcessor(3, encoder_input_ids=prompt),
        input_ids,
        scores,
    )
    assert torch.isinf(two).tolist() == [[False, True, True], [False, True, False]]
    assert torch.isinf(three).tolist() == [[False, True, False], [False, False, False]]


def test_no_bad_words_dist_processor():
    input_ids = torch.tensor([[0, 1, 3, 1], [0, 1, 0, 1]])
    bad = [[1], [4], [1, 0], [0, 1, 2], [1, 3, 1, 3]]
    scores = uniform(2, 5)
    out = same(
        sequence_bias.NoBadWordsLogitsProcessor(bad, [4]),
        theirs.NoBadWordsLogitsProcessor(bad_words_ids=bad, eos_token_id=4),
        input_ids,
        scores,
    )
    assert torch.isinf(out).tolist() == [[True, True, False, True, False], [True, True, True, False, False]]


def test_no_bad_words_dist_processor_only_eos():
    """test_no_bad_words_dist_processor's edge case: bad words naming only the EOS token leave the scores as they
    are (transformers 5 runs it, and so does explain)."""
    input_ids = torch.tensor([[0, 1, 3, 1], [0, 1, 0, 1]])
    scores = uniform(2, 5)
    edge = same(
        sequence_bias.NoBadWordsLogitsProcessor([[4]], [4]),
        theirs.NoBadWordsLogitsProcessor(bad_words_ids=[[4]], eos_token_id=4),
        input_ids,
        scores,
    )
    torch.testing.assert_close(scores, edge, rtol=1e-3, atol=1e-3)


def test_bias_dist_processor():
    input_ids = torch.tensor([[0, 1, 3, 1], [0, 1, 0, 1]])
    bias = {(1,): 100.0, (4,): 100.0, (1, 0): -100.0, (0, 1, 2): -100.0, (1, 3, 1, 3): -100.0}
    bias[(1, 3, 1, 3, 1, 3)] = -100.0
    out = same(
        sequence_bias.SequenceBiasLogitsProcessor(bias),
        theirs.SequenceBiasLogitsProcessor(sequence_bias=bias),
        input_ids,
        torch.zeros((2, 5)),
    )
    assert out.tolist() == [[-100.0, 100.0, 0.0, -100.0, 100.0], [-100.0, 100.0, -100.0, 0.0, 100.0]]


def test_processor_list():
    """One processor after another equals the list (explain's list is a plain sequence of calls): explain's seven
    processors in a row equal transformers' LogitsProcessorList of the same seven."""
    input_ids = ids((4, 10), 15)
    scores = uniform(4, 15)
    ours = [
        length.MinLengthLogitsProcessor(10, [0]),
        warpers.TemperatureLogitsWarper(0.5),
        penalties.RepetitionPenaltyLogitsProcessor(2.0),
        warpers.TopKLogitsWarper(3),
        warpers.TopPLogitsWarper(0.8),
        penalties.NoRepeatNGramLogitsProcessor(2),
        sequence_bias.NoBadWordsLogitsProcessor([[1]], [0]),
    ]
    reference = theirs.LogitsProcessorList(
        [
            theirs.MinLengthLogitsProcessor(min_length=10, eos_token_id=0, device="cpu"),
            theirs.TemperatureLogitsWarper(temperature=0.5),
            theirs.RepetitionPenaltyLogitsProcessor(penalty=2.0),
            theirs.TopKLogitsWarper(3),
            theirs.TopPLogitsWarper(0.8),
            theirs.NoRepeatNGramLogitsProcessor(2),
            theirs.NoBadWordsLogitsProcessor(bad_words_ids=[[1]], eos_token_id=0),
        ]
    )
    mine = scores.clone()
    for processor in ours:
        mine = processor(input_ids, mine)
    torch.testing.assert_close(mine, reference(input_ids.clone(), scores.clone()), rtol=1e-3, atol=1e-3)
    assert input_ids.tolist() == ids((4, 10), 15).tolist()  # input_ids are never changed


def test_prefix_constrained_logits_processor():
    input_ids = torch.tensor([[0, 1, 3, 1], [0, 1, 0, 1]])

    def allowed(batch_id, _):
        return [[0, 1], [2, 3]][batch_id]

    out = same(
        PrefixConstrainedLogitsProcessor(allowed, 1),
        theirs.PrefixConstrainedLogitsProcessor(allowed, 1),
        input_ids,
        uniform(2, 5),
    )
    assert torch.isinf(out).tolist() == [[False, False, True, True, True], [True, True, False, False, True]]
    with pytest.raises(ValueError):
        PrefixConstrainedLogitsProcessor(lambda batch_id, _: [], 1)(input_ids, uniform(2, 5))


def test_forced_bos_token_logits_processor():
    ours, reference = length.ForcedBOSTokenLogitsProcessor(0), theirs.ForcedBOSTokenLogitsProcessor(bos_token_id=0)
    out = same(ours, reference, ids((4, 1), 20), uniform(4, 20))
    assert torch.isneginf(out[:, 1:]).all() and out[:, 0].tolist() == 4 * [0]
    assert not torch.isinf(same(ours, reference, ids((4, 4), 20), uniform(4, 20))).any()


def test_forced_eos_token_logits_processor():
    ours = length.ForcedEOSTokenLogitsProcessor(5, 0)
    reference = theirs.ForcedEOSTokenLogitsProcessor(max_length=5, eos_token_id=0, device="cpu")
    out = same(ours, reference, ids((4, 4), 20), uniform(4, 20))
    assert torch.isneginf(out[:, 1:]).all() and out[:, 0].tolist() == 4 * [0]
    assert not torch.isinf(same(ours, reference, ids((4, 3), 20), uniform(4, 20))).any()


def test_remove_nan_inf_logits_processor():
    scores = torch.tensor([[0.0, 0.7, 0.8, float("nan")], [0.1, float("inf"), 0.3, float("-inf")]])
    mine = InfNanRemoveLogitsProcessor()(ids((2, 4), 20), scores.clone())
    expected = theirs.InfNanRemoveLogitsProcessor()(ids((2, 4), 20), scores.clone())
    assert torch.equal(mine, expected)
    big, small = torch.finfo(mine.dtype).max, torch.finfo(mine.dtype).min
    assert torch.allclose(mine, torch.tensor([[0.0, 0.7, 0.8, 0.0], [0.1, big, 0.3, small]]), atol=1e-6)
    assert torch.isnan(scores).any()  # not changed in place


def test_exponential_decay_length_penalty():
    ours = length.ExponentialDecayLengthPenalty((5, 1.1), [0], 2)
    reference = theirs.ExponentialDecayLengthPenalty(
        exponential_decay_length_penalty=(5, 1.1), eos_token_id=0, input_ids_seq_length=2
    )
    scores = uniform(4, 20)
    before = same(ours, reference, ids((4, 2), 20), scores)
    assert before[:, 0].tolist() == scores[:, 0].tolist()
    after = same(ours, reference, ids((4, 20), 20), scores)
    assert torch.gt(after[:, 0], scores[:, 0]).all()
    negative = torch.neg(uniform(4, 20))
    after = same(ours, reference, ids((4, 20), 20), negative)
    assert torch.gt(after[:, 0], negative[:, 0]).all()


def test_normalization():
    scores = torch.tensor([[-23.18, -29.96, -43.54, 47.77], [-33.58, -26.87, -32.96, 22.51]])
    out = same(normalization.LogitNormalization(), theirs.LogitNormalization(), None, scores).exp()
    assert out.sum(dim=-1).allclose(torch.ones(2))
    assert out.allclose(scores.softmax(dim=-1))


def test_classifier_free_guidance():
    """explain's guidance runs the model on the unconditional ids itself (a model of explain's); here a model
    whose logits are fixed, as transformers' test uses, on both: the mix is log_softmax(uncond) + scale *
    (log_softmax(cond) - log_softmax(uncond))."""
    uncond, cond = torch.tensor([[[1.0, 0, 1.5]]]), torch.tensor([[[1.0, 1.0, 1.0]]])

    def lsm(x):
        return torch.nn.functional.log_softmax(x, dim=-1)

    expected = (lsm(uncond) + 1.5 * (lsm(cond) - lsm(uncond)))[0, -1]

    class Fixed(torch.nn.Module):  # explain's call: model(ids, cache=..., logits_to_keep=...) -> .logits
        def forward(self, input_ids, *args, **kwargs):
            return type("Out", (), {"logits": uncond})()

    ours = guidance.UnbatchedClassifierFreeGuidanceLogitsProcessor(1.5, Fixed(), 1, [0])
    try:
        mine = ours(torch.LongTensor([[0]]), cond[:, -1].clone())[0]
    except (TypeError, AttributeError) as error:  # explain's guidance needs explain's model (its KV cache)
        pytest.skip(f"explain's guidance runs on explain's model only ({error}); covered by tests/test_processors.py")
    for i in range(3):
        assert mine[i].item() == pytest.approx(expected[i].item(), abs=1e-6)


def test_watermarking_processor():
    """explain's WatermarkLogitsProcessor: the settings transformers refuses are refused (a ValueError), and the
    greenlist of the last token gets the bias, as in transformers (the same scores on the same input)."""
    from explain.generation.processors.watermark import WatermarkLogitsProcessor

    with pytest.raises(ValueError):
        theirs.WatermarkLogitsProcessor(vocab_size=20, device="cpu", seeding_scheme="hash")
    with pytest.raises(ValueError):
        WatermarkLogitsProcessor(vocab_size=20, device="cpu", seeding_scheme="hash")
    with pytest.raises(ValueError):
        theirs.WatermarkLogitsProcessor(vocab_size=20, device="cpu", greenlist_ratio=1.2)
    with pytest.raises(ValueError):
        WatermarkLogitsProcessor(vocab_size=20, device="cpu", greenlist_ratio=1.2)
    input_ids = ids((3, 5), 20)
    input_ids[:, -1] = 10
    scores = uniform(3, 20)
    ours = WatermarkLogitsProcessor(vocab_size=20, device="cpu")
    out = same(ours, theirs.WatermarkLogitsProcessor(vocab_size=20, device="cpu"), input_ids, scores)
    assert (out[:, 1] == scores[:, -1] + ours.bias).all()  # transformers' greenlist id on a CPU
