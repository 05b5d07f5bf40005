"""The dashboard shows every run truthfully (issue 26), checked on the state and the views the page draws (the
browser tests in tests/browser/test_truth.py check the same on screen): beam search fills the text and the step view
with the returned beams and says it is beam sampling; several samples are each one pick away, and a click in a
tree opens that step of that sequence; a removed token is removed (probability 0), the branch points list the most
likely removed tokens by raw logit; a run, branch or sequence change is a new key the chart draws at once; the
exported page carries each sequence; a click on a bar of a step-through's chart forces that token and goes on."""

from __future__ import annotations

import math

import pytest
import torch

pytest.importorskip("ipywidgets")

from explain.features.trees import sampling_tree  # noqa: E402
from explain.widgets import Dashboard, StepThrough  # noqa: E402
from explain.widgets.export import export_data  # noqa: E402
from explain.widgets.state import DashboardState  # noqa: E402
from explain.widgets.views import Scene, TextView, strategy_note  # noqa: E402

PROMPT = "The capital of France is"


@pytest.fixture(scope="module")
def pipe(embedded_pipe):
    return embedded_pipe


def _run_state(pipe) -> DashboardState:
    return DashboardState.from_trace(pipe.trace, run=pipe.trace.run)


def test_beam_search_fills_the_text_and_the_step_view_with_each_returned_beam(pipe):
    out = pipe(PROMPT, max_new_tokens=4, num_beams=3, num_return_sequences=2, do_sample=False)
    state = _run_state(pipe)
    ranking = next(e.data for e in pipe.trace.filter("generation", "ranking", pipe.trace.run))
    returned = [h for h in ranking["hypotheses"] if h["returned"]]
    assert sorted(state.sequences) == [0, 1] and state.several
    for number, hypothesis in enumerate(returned):
        assert state.pick_sequence(number)
        steps = state.steps()
        assert [s["token_id"] for s in steps] == hypothesis["ids"]  # the beam's own tokens, step by step
        assert PROMPT + state.text() == out[number]["generated_text"]  # what the call returned
        assert TextView().draw(Scene(state))["tokens"], "the text view is empty for a beam"
        for t, step in enumerate(steps):  # each step is what the beam it extended scored
            beam = next(b for b in state.beams[t]["beams"] if b["beam"] == hypothesis["path"][t])
            values = dict(zip(beam["top"]["ids"], beam["top"]["values"], strict=True))
            if step["token_id"] in values:
                assert step["prob"] == pytest.approx(math.exp(values[step["token_id"]]))
    assert state.finished and state.stop_reason
    assert state.sequence_label(0).startswith("beam #0")
    assert strategy_note(state) == ""  # do_sample=False: plain beam search, nothing to warn about


def test_beam_sampling_by_the_pipelines_default_is_said_in_the_header_and_the_text(pipe):
    torch.manual_seed(0)
    pipe(PROMPT, max_new_tokens=2, num_beams=2)  # do_sample comes from the pipeline's defaults
    dashboard = Dashboard(pipe.trace)
    try:
        note = strategy_note(dashboard.state)
        assert "beam sampling" in note and "do_sample=True" in note and "default" in note
        assert "beam sampling" in dashboard.header.value and "beam sampling" in dashboard.text.status
        assert "0 tokens" not in dashboard.header.value and dashboard.text.tokens
    finally:
        dashboard.close()


def test_several_samples_each_one_pick_away_and_a_tree_click_opens_that_step(pipe):
    torch.manual_seed(1)
    out = pipe(PROMPT, max_new_tokens=5, num_return_sequences=3, do_sample=True)
    dashboard = Dashboard(pipe.trace)
    try:
        picker = dashboard.sequence_picker
        assert picker.layout.display == "flex" and [v for _, v in picker.options] == [0, 1, 2]
        for number in (2, 1, 0):
            picker.value = number
            assert PROMPT + dashboard.state.text() == out[number]["generated_text"]
            steps = dashboard.state.steps()
            assert [t[0] for t in dashboard.text.tokens] == [s["token"] for s in steps]
            assert dashboard.text.key.endswith(f":{number}") and dashboard.chart.key == dashboard.text.key
        tree = dashboard.parts["sampling_tree"]
        assert tree.selected["sequence"] == 0
        tree.clicked = {"sequence": 2, "step": 3, "n": 1}  # what sampling_tree.js writes on a click
        assert dashboard.state.sequence == 2 and dashboard.text.selected == 3 and picker.value == 2
        assert dashboard.chart.step["index"] == 3 and tree.selected == {"sequence": 2, "branch": 0, "step": 3}
        data = export_data(pipe.trace, run=pipe.trace.run)  # the exported page has a page per sequence
        assert [k["key"] for k in data["keys"]] == [
            f"{pipe.trace.run}:0",
            f"{pipe.trace.run}:0:1",
            f"{pipe.trace.run}:0:2",
        ]
    finally:
        dashboard.close()


def test_removed_tokens_are_zero_and_the_most_likely_removed_are_listed(pipe):
    torch.manual_seed(2)
    pipe(PROMPT, max_new_tokens=4, num_return_sequences=4, do_sample=True, top_k=3, temperature=2.0)
    events = pipe.trace.filter(run=pipe.trace.run)
    tree = sampling_tree(events)
    splits = [s["split"] for s in tree["segments"] if s["split"]]
    assert splits, "four samples with top_k=3 at temperature 2 never parted"
    steps = {(e.data["sequence"], e.data["step"]): e.data for e in events if e.kind == "step"}
    for split in splits:
        kept = [p for p, removed in zip(split["probs"], split["removed"], strict=True) if not removed]
        assert 0 < len(kept) <= 3 and all(p > 0 for p in kept)
        removed = [i for i, r in zip(split["ids"], split["removed"], strict=True) if r]
        assert all(p == 0 for p, r in zip(split["probs"], split["removed"], strict=True) if r)
        first = min(n for taken in split["taken"].values() for n in taken["sequences"])  # the one drawn from
        step = steps[(first, split["step"])]
        by_logit = [i for i in step["logits_top"]["ids"] if i not in split["ids"][: len(kept)]]
        assert removed == by_logit[: len(removed)]  # the most likely removed ones, in the order of the raw logits


def test_a_bar_click_in_a_step_through_forces_that_token_and_goes_on(pipe):
    st = StepThrough(pipe, PROMPT, max_new_tokens=6, do_sample=False)
    try:
        st.run(3)
        st.dashboard.select(1)
        assert st.dashboard.chart.forkable
        other = next(i for i in st.generation.steps[1]["probs_top"]["ids"] if i != st.generation.steps[1]["token_id"])
        st.dashboard.chart.clicked = {"step": 1, "token_id": other, "n": 1}  # what chart.js writes on a click
        branch = st.generation
        assert branch.branch == 1 and branch.steps[1]["token_id"] == other and branch.steps[1]["forced"]
        assert branch.finished and len(branch.steps) == 6  # forced, then on to the run's limit
        assert st.dashboard.state.branch == 1 and len(st.dashboard.text.tokens) == 6
    finally:
        st.close()


def test_knobs_changed_for_a_what_if_are_said_where_they_apply(pipe):
    st = StepThrough(pipe, PROMPT, max_new_tokens=6, do_sample=False)
    try:
        st.run(2)
        assert st.knob_note.value == ""
        st.do_sample.value, st.temperature.value = True, 0.5
        st.what_if(1)
        assert "do_sample=True" in st.knob_note.value and "temperature=0.5" in st.knob_note.value
        assert "from step 2" in st.knob_note.value
        st.run()
        assert st.generation.steps[2]["method"] == "sample" and "applied" in st.knob_note.value
    finally:
        st.close()


def test_a_running_beam_search_shows_its_best_running_beam(pipe):
    pipe(PROMPT, max_new_tokens=4, num_beams=3, do_sample=False)
    events = pipe.trace.filter(run=pipe.trace.run)
    beams = [e for e in events if e.kind == "beams"]
    state = DashboardState()
    for event in events:
        state.apply(event)
        if event is beams[1]:  # mid-search: slot 0's tokens, traced back through the parents
            running = beams[1].data["running"][0]
            parent = beams[0].data["running"][running["parent"]]
            assert [s["token_id"] for s in state.steps()] == [parent["token_id"], running["token_id"]]
            assert "best running beam" in TextView().draw(Scene(state))["status"]
    assert [s["token_id"] for s in state.steps()] == pipe.trace.last("decoding", "decode").data["ids"]
