"""The decoding strategies' pictures (explain.features.trees) and views (explain.widgets.strategy_views) in Python, on
the tiny random Llama: the sampling tree holds every sampled sequence exactly once, branching where they differ; the
beam tree holds each step's beams and marks the returned paths; the draft rounds add up to the run's acceptance; the
views follow a live pipeline and replay a saved trace; the dashboard shows the strategy's panel; the step-through
advances every beam. tests/browser/test_strategy_views.py draws them in a real JupyterLab.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

pytest.importorskip("anywidget")

import explain  # noqa: E402
from explain.features.trees import beam_tree, draft_rounds, sampling_tree  # noqa: E402
from explain.trace import Trace  # noqa: E402
from explain.widgets import BeamTree, DashboardState, DraftView, SamplingTree  # noqa: E402
from explain.widgets.strategy_views import PANELS, dashboard_views, panel_values  # noqa: E402

PROMPT = "The cat sat on the mat and the cat"


@pytest.fixture(scope="module")
def pipe(tiny_llama):
    return explain.pipeline("text-generation", model=tiny_llama.folder)


def run_events(pipe):
    return pipe.trace.filter(run=pipe.last_generation.run_id)


def paths(tree: dict) -> dict[int, list[str]]:
    """Each sequence's tokens read back from the tree: its segments from the root down."""
    segments = tree["segments"]
    found: dict[int, list[str]] = {}

    def walk(index: int, so_far: list[str]):
        segment = segments[index]
        tokens = so_far + [t[0] for t in segment["tokens"]]
        for name in segment["ends"]:
            found[int(name)] = tokens
        for child in segment["children"]:
            walk(child, tokens)

    walk(0, [])
    return found


def test_sampling_tree_holds_every_sequence_once(pipe):
    torch.manual_seed(2)
    pipe(PROMPT, do_sample=True, num_return_sequences=5, max_new_tokens=8, top_k=3)
    generation = pipe.last_generation
    tree = sampling_tree(run_events(pipe), PROMPT)
    assert tree["kind"] == "samples" and tree["count"] == 5
    expected = {
        row: [pipe.tokenizer.decode([t]) for t in ids[generation.prompt_length :]]
        for row, ids in enumerate(generation.sequences)
    }
    assert paths(tree) == expected
    for segment in tree["segments"]:
        if segment["split"]:  # a branch point: the tokens taken there are in its distribution's top (top_k=3)
            split = segment["split"]
            assert set(int(t) for t in split["taken"]) <= set(split["ids"]) and len(split["taken"]) >= 2
            assert sum(len(t["sequences"]) for t in split["taken"].values()) == len(segment["sequences"])
            assert split["probs"] == sorted(split["probs"], reverse=True)
    assert len({tuple(v) for v in expected.values()}) == len([s for s in tree["segments"] if s["ends"]])


def test_sampling_tree_of_a_forced_branch(pipe):
    run = pipe.start(PROMPT, max_new_tokens=5, do_sample=False, keep_logits=True)
    run.run(3)
    other = run.steps[1]["probs_top"]["ids"][1]
    branch = run.force(1, other)
    branch.run()
    run.run()
    tree = sampling_tree(pipe.trace.filter(run=run.run_id))
    assert tree["kind"] == "branches" and tree["count"] == 2 and tree["forks"]["1"]["step"] == 1
    split = next(s["split"] for s in tree["segments"] if s["split"])
    assert split["step"] == 1 and split["taken"][str(other)]["forced"]


def test_beam_tree_marks_the_returned_paths(pipe):
    pipe(PROMPT, num_beams=3, num_return_sequences=2, max_new_tokens=5, do_sample=False)
    generation = pipe.last_generation
    tree = beam_tree(run_events(pipe), PROMPT)
    assert len(tree["levels"]) == len(generation.steps) + 1
    assert tree["levels"][0][0]["kind"] == "root"
    for level in tree["levels"][1:-1]:
        assert sorted(n["slot"] for n in level if n["kind"] == "running") == [0, 1, 2]
    last = tree["levels"][-1]
    assert not [n for n in last if n["kind"] == "running"]  # every candidate reached max_length
    finished = [n for n in last if n["kind"] == "finished"]
    assert len(finished) == 3 and sorted(r for n in finished for r in n["ranks"]) == [0, 1, 2]
    assert sum(bool(n.get("returned")) for n in finished) == 2
    returned = [h for h in tree["ranking"]["hypotheses"] if h["returned"]]
    assert [h["ids"] for h in returned] == [s[generation.prompt_length :] for s in generation.sequences]
    assert tree["label"].startswith("beam search: 3 beams")


def test_draft_rounds_add_up(pipe):
    pipe("a b c d a b c d a b", prompt_lookup_num_tokens=3, max_new_tokens=10, do_sample=False)
    rounds = draft_rounds(run_events(pipe))
    acceptance = pipe.last_generation.acceptance
    assert (rounds["drafted"], rounds["accepted"], rounds["forwards"]) == (
        acceptance["drafted"],
        acceptance["accepted"],
        acceptance["rounds"],
    )
    assert rounds["tokens"] == len(pipe.last_generation.generated_ids) and rounds["source"] == "prompt_lookup"


def test_views_follow_the_pipeline_and_replay_a_file(tiny_llama, tmp_path):
    pipe = explain.pipeline("text-generation", model=tiny_llama.folder)  # a trace of its own: no beam search yet
    pipe("a b c a b", prompt_lookup_num_tokens=2, max_new_tokens=3, do_sample=False)
    torch.manual_seed(0)
    pipe(PROMPT, do_sample=True, num_return_sequences=3, max_new_tokens=4)
    samples = pipe.last_generation.run_id
    beams, drafts, following = BeamTree(pipe), DraftView(pipe), SamplingTree(pipe, follow=True)
    tree = SamplingTree(pipe)
    assert tree.run == samples and tree.data["count"] == 3 and "3 sampled sequences" in tree.caption
    assert beams.run is None and "no beam search yet" in beams.caption  # made before its call: it waits for it
    pipe(PROMPT, num_beams=2, max_new_tokens=3, do_sample=False)
    beams.sink.flush()
    first_beams = beams.run
    assert first_beams == pipe.last_generation.run_id and len(beams.data["levels"]) == 4
    assert tree.run == samples  # a beam search has nothing for the sampling tree: it stays on the samples
    torch.manual_seed(1)
    pipe(PROMPT, do_sample=True, num_return_sequences=2, max_new_tokens=3)
    pipe(PROMPT, num_beams=3, max_new_tokens=3, do_sample=False)
    for view in (tree, following, beams):
        view.sink.flush()
    assert tree.run == samples and beams.run == first_beams  # each shows its call
    assert following.run == pipe.last_generation.run_id - 1 and following.data["count"] == 2  # follow=True moves
    assert drafts.run is not None and drafts.data["rounds"]  # the prompt lookup call before the samples
    path = tmp_path / "trace.json"
    pipe.trace.save(path)
    replay = BeamTree(Trace.load(path), run=beams.run)
    assert replay.data == beams.data
    for view in (tree, beams, drafts, replay, following):
        view.close()
    with pytest.raises(TypeError, match="needs a pipeline"):
        SamplingTree("not a trace")


def test_panel_values_and_the_dashboard_registration_point(pipe):
    pipe(PROMPT, num_beams=2, max_new_tokens=3, do_sample=False)
    events = run_events(pipe)
    assert [panel_values(name, events)["shown"] for name in PANELS] == [False, True, False]
    # a stand-in for explain/widgets/views.py's registry (View, RUN, STEPS): what dashboard_views needs of it
    views = SimpleNamespace(View=type("View", (), {}), RUN="run", STEPS="steps")
    made = dashboard_views(views)
    assert [v.name for v in made] == ["sampling_tree", "beam_tree", "drafts"]
    scene = SimpleNamespace(state=DashboardState.from_trace(pipe.trace, pipe.last_generation.run_id))
    values = made[1].draw(scene)
    assert values["shown"] and values["data"] == beam_tree(events, values["data"]["prompt"])
    assert not made[0].draw(scene)["shown"] and type(made[2].create()).__name__ == "DraftsElement"


def test_the_dashboard_shows_the_strategy_panel(pipe):
    pytest.importorskip("plotly")
    from explain.widgets import Dashboard

    dashboard = Dashboard(pipe)
    try:
        pipe(PROMPT, num_beams=2, max_new_tokens=3, do_sample=False)
        dashboard.sink.flush()
        shown = [name for name in PANELS if dashboard.parts[name].layout.display != "none"]
        assert shown == ["beam_tree"]
        assert len(dashboard.parts["beam_tree"].data["levels"]) == 4, "the prompt and the 3 steps of the beams"
        pipe(PROMPT, max_new_tokens=2, do_sample=False)  # one sequence: no strategy panel, nor its title
        dashboard.sink.flush()
        assert all(dashboard.parts[name].layout.display == "none" for name in PANELS)
        assert all(dashboard.sections[name].layout.display == "none" for name in PANELS)
    finally:
        dashboard.close()


def test_step_through_advances_every_beam(pipe):
    pytest.importorskip("plotly")
    controller = explain.step_through(pipe, PROMPT, num_beams=3, max_new_tokens=4, do_sample=False)
    try:
        generation = controller.generation
        assert controller.next_button.description == "Next step"
        controller.next_button.click()
        assert len(generation.steps) == 1 and len(generation.steps[0]["running"]) == 3
        controller.next_button.click()
        assert len(generation.steps) == 2
    finally:
        controller.close()
