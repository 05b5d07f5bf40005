"""Inside the model (explain.inside): the logit lens, attention weights and input attribution of one generated
token, replayed from the run's own KV cache. Parity with transformers' output_hidden_states and eager
output_attentions for every architecture; the lens's last layer is the step's logits bit for bit; Captum's
attributions pass the completeness axiom and the model-randomisation sanity check."""

from __future__ import annotations

import pytest
import torch
from test_models import CASES, build

from explain import events
from explain.errors import ExplainError
from explain.generation import Generation
from explain.generation.settings import resolve
from explain.inside.replay import decoder_parts, replay
from explain.trace import Trace

PROMPT = [5, 17, 42, 8, 23, 61]


def _run(model, tokenizer, new_tokens=4) -> Generation:
    settings, _ = resolve({"max_new_tokens": new_tokens, "do_sample": False}, {}, {}, len(PROMPT), None, None)
    trace = Trace()
    generation = Generation(model, tokenizer, PROMPT, settings, trace, trace.new_run())
    return generation.run()


@pytest.fixture(scope="module")
def tokenizer(embedded_pipe):
    return embedded_pipe.tokenizer  # decodes the tiny vocabulary's ids 0..99


@pytest.mark.parametrize("name", sorted(CASES))
def test_hidden_states_and_attention_equal_transformers(name, tokenizer):
    """For each step: every layer's hidden state at the new position equals transformers' output_hidden_states
    (whose last entry is after the final norm), the attention weights equal its eager output_attentions, rows sum
    to 1, and the lens's last layer equals the step's logits exactly."""
    ref, our = build(name, attn_implementation="eager")
    generation = _run(our, tokenizer)
    for step in range(len(generation.steps)):
        look = generation.inspect(step)
        position = generation.steps[step]["position"]
        with torch.no_grad():
            expected = ref(generation.input_ids[:, :position], output_hidden_states=True, output_attentions=True)
        seen = replay(generation, step)
        layers = len(expected.hidden_states) - 1
        assert len(seen.hidden_states) == layers + 1
        for index in range(layers):
            torch.testing.assert_close(
                seen.hidden_states[index], expected.hidden_states[index][0, -1], atol=1e-4, rtol=1e-4
            )
        with torch.inference_mode():
            final = decoder_parts(our).final_norm(seen.hidden_states[-1])
        torch.testing.assert_close(final, expected.hidden_states[-1][0, -1], atol=1e-4, rtol=1e-4)
        heads = torch.tensor(look["attention"]["heads"])  # (layers, heads, positions)
        torch.testing.assert_close(
            heads, torch.stack([a[0, :, -1, :] for a in expected.attentions]), atol=1e-4, rtol=1e-3
        )
        assert torch.allclose(heads.sum(-1), torch.ones(heads.shape[:2]), atol=1e-5)
        assert look["lens"]["last_layer_difference"] == 0.0
        last = look["lens"]["layers"][-1]
        assert last["ids"][0] == generation.steps[step]["token_id"] and last["chosen_rank"] == 1  # greedy


def test_the_embedded_model_inside(embedded_pipe, tmp_path):
    pipe = embedded_pipe
    generation = pipe.start("The capital of France is", max_new_tokens=3, do_sample=False).run()
    look = generation.inspect(0)
    lens, attention = look["lens"], look["attention"]
    assert len(lens["layers"]) == 31 and lens["last_layer_difference"] == 0.0  # 30 layers + the embeddings
    assert pipe.tokenizer.decode([lens["layers"][-1]["ids"][0]]) == " Paris" == look["token"]
    assert lens["layers"][-1]["chosen_prob"] == pytest.approx(generation.steps[0]["raw_prob"], abs=1e-6)
    assert (attention["layers"], attention["num_heads"], attention["positions"]) == (30, 9, 5)
    assert attention["sink"] and attention["first_token_share"] > 0.4  # most weight goes to the first token
    assert look["context_tokens"] == ["The", " capital", " of", " France", " is"]
    event = pipe.trace.last("generation", "inspect", run=generation.run_id)
    assert event.data == look
    assert "inside step 0" in events.describe(event) and "on the first token" in events.describe(event)
    again = Trace.load(pipe.trace.save(tmp_path / "inside.json"))
    assert again.last("generation", "inspect", run=generation.run_id).data == look


def test_attribution_is_complete_and_fails_the_randomisation_check(tokenizer):
    """Integrated gradients' attributions add up to log p(token | prompt) - log p(token | baseline) (the
    completeness axiom), and on a model with re-randomised weights they change (Adebayo et al. 2018)."""
    _, our = build("llama-gqa")
    generation = _run(our, tokenizer, new_tokens=2)
    step = 1
    look = generation.inspect(
        step, what=("attribution",), attribution_method="integrated_gradients", attribution_steps=300
    )
    attribution = look["attribution"]
    ids = torch.tensor([look["context_ids"]])
    token = look["token_id"]
    with torch.no_grad():
        actual = torch.log_softmax(our(ids).logits[0, -1], -1)[token]
        baseline = torch.log_softmax(our(torch.zeros_like(ids)).logits[0, -1], -1)[token]  # token id 0 everywhere
    assert sum(attribution["scores"]) == pytest.approx(float(actual - baseline), rel=0.05, abs=1e-3)
    assert attribution["completeness_gap"] == pytest.approx(
        sum(attribution["scores"]) - float(actual - baseline), abs=1e-5
    )
    coarse = generation.inspect(
        step, what=("attribution",), attribution_method="integrated_gradients", attribution_steps=8
    )["attribution"]
    assert abs(coarse["completeness_gap"]) > abs(attribution["completeness_gap"])  # more steps, closer
    assert abs(sum(attribution["shares"]) - 1) < 1e-5 and attribution["captum"] == "LayerIntegratedGradients"
    simple = generation.inspect(step, what=("attribution",))["attribution"]
    assert simple["captum"] == "LayerGradientXActivation" and len(simple["scores"]) == len(look["context_ids"])
    torch.manual_seed(123)
    for parameter in our.model.layers.parameters():  # cascade the randomisation through every layer
        torch.nn.init.normal_(parameter, std=0.2)
    scrambled = generation.inspect(step, what=("attribution",))["attribution"]
    before, after = torch.tensor(simple["shares"]), torch.tensor(scrambled["shares"])
    assert (before - after).abs().max() > 0.05, "attributions did not depend on the model's weights"


def test_bad_requests_say_what_to_ask(tokenizer):
    _, our = build("gpt2")
    generation = _run(our, tokenizer, new_tokens=2)
    with pytest.raises(ExplainError, match=r"step 5 has not been generated; steps 0..1 exist"):
        generation.inspect(5)
    with pytest.raises(ExplainError, match="cannot inspect \\['heads'\\]; choose from lens, attention, attribution"):
        generation.inspect(0, what=("heads",))
    with pytest.raises(ExplainError, match="unknown attribution method 'shap'"):
        generation.inspect(0, what=("attribution",), attribution_method="shap")


def test_capture_inside_records_every_step_for_replay_with_no_model(embedded_pipe, tmp_path):
    """capture="inside" inspects each step as it is generated; the saved trace's InsideView shows it with no
    model, and says what it cannot do there (attribution needs the model)."""
    from explain.widgets import InsideView

    pipe = embedded_pipe
    pipe("Red, green and", max_new_tokens=3, do_sample=False, capture="inside")
    run = pipe.trace.run
    looks = [e.data for e in pipe.trace.filter("generation", "inspect", run)]
    assert [look["step"] for look in looks] == [0, 1, 2] and all("lens" in look for look in looks)
    replayed = Trace.load(pipe.trace.save(tmp_path / "captured.json"))
    view = InsideView(replayed, step=1, run=run)
    assert view.look == looks[1] and view.status == ""
    view.request = "attribution:gradient_x_input:1"
    assert "needs the model" in view.status and "attribution" not in view.look
    view.show(7)
    assert view.look == {} and 'capture="inside"' in view.status
    with pytest.raises(ExplainError, match="not a capture mode"):
        pipe("Hi", max_new_tokens=1, capture="everything")


def test_the_view_computes_attribution_when_asked(embedded_pipe):
    from explain.widgets import InsideView

    generation = embedded_pipe.start("Two plus two is", max_new_tokens=2, do_sample=False).run()
    view = InsideView(generation, step=1)
    assert set(view.look) >= {"lens", "attention"} and "attribution" not in view.look
    view.request = "attribution:gradient_x_input:1"
    attribution = view.look["attribution"]
    assert attribution["captum"] == "LayerGradientXActivation" and view.status == ""
    assert len(attribution["scores"]) == view.look["position"]
