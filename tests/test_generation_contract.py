"""The run contract both producers keep: every run has the Generation interface (generation/contract.py), a run's
options are checked once with one message per mistake (generation/options.py), the end of a run is emitted by one
emitter (generation/ending.py), and a processor transformers lacks is refused on backend="transformers" with
explain's own message and gets no widget in the step-through there."""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING

import pytest

transformers = pytest.importorskip("transformers")

import explain  # noqa: E402
from explain.errors import ArgumentError, ExplainError  # noqa: E402
from explain.generation.contract import GenerationInterface  # noqa: E402
from explain.generation.knobs import Knob  # noqa: E402
from explain.generation.options import DEFAULT_TRACE_TOP  # noqa: E402
from explain.generation.processors import PROCESSORS, LogitsProcessor, register  # noqa: E402
from explain.generation.processors.top_h import TopHLogitsWarper  # noqa: E402
from explain.generation.strategies import choose  # noqa: E402
from explain.generation.strategies import registry as strategies  # noqa: E402

PROMPT = "The capital of France is"


@pytest.fixture(scope="module")
def ours(tiny_llama):
    return explain.pipeline("text-generation", model=tiny_llama.folder)


@pytest.fixture(scope="module")
def theirs(tiny_llama):
    return explain.pipeline("text-generation", model=tiny_llama.folder, backend="transformers")


def interface_members() -> tuple[list[str], list[str]]:
    """(data members and properties, methods) of the protocol."""
    methods = [
        name
        for name, value in vars(GenerationInterface).items()
        if inspect.isfunction(value) and not name.startswith("_")
    ]
    data = [
        *GenerationInterface.__annotations__,
        *(name for name, value in vars(GenerationInterface).items() if isinstance(value, property)),
    ]
    return data, methods


def runs(ours, theirs):
    """One run of each kind: the explain backend's one sequence, each decoding strategy's, the transformers
    backend's."""
    call = dict(max_new_tokens=3, do_sample=False)
    return {
        "one sequence": ours.start(PROMPT, **call),
        "samples": ours.start(PROMPT, max_new_tokens=3, do_sample=True, num_return_sequences=2),
        "beam search": ours.start(PROMPT, num_beams=2, **call),
        "assisted": ours.start(PROMPT, prompt_lookup_num_tokens=2, **call),
        "transformers": theirs.start(PROMPT, **call),
    }


def test_every_run_of_both_producers_has_the_generation_interface(ours, theirs):
    data, methods = interface_members()
    assert {"step", "run", "set_settings", "what_if", "force", "inspect", "token_text"} <= set(methods)
    assert {"run_id", "branch", "steps", "settings", "finished", "stop_reason", "raw_logits", "sequences"} <= set(data)
    strategies_run = set()
    for what, generation in runs(ours, theirs).items():
        assert isinstance(generation, GenerationInterface), what
        if what == "transformers":
            assert type(generation).__name__ == "TransformersGeneration"
        else:
            strategies_run.add(choose(generation.settings).__name__)
        for name in data:
            assert hasattr(generation, name), (what, name)
        for name in methods:  # each method takes the protocol's parameters, by the same names
            wanted = inspect.signature(getattr(GenerationInterface, name)).parameters
            given = inspect.signature(getattr(type(generation), name)).parameters
            for parameter in wanted:
                assert parameter in given or any(p.kind is p.VAR_KEYWORD for p in given.values()), (what, name)
        assert generation.run(1) is generation and len(generation.steps) == 1, what
        assert generation.trace_top == generation.run_options.trace_top == DEFAULT_TRACE_TOP
    # every registered strategy has a run in runs() (a new one fails here until it is added); HubOnly refuses every
    # call, naming the Hub repository to use
    assert strategies_run == {cls.__name__ for cls in strategies.ordered()} - {"HubOnly"}


if TYPE_CHECKING:  # the same, for a type checker: each implementation is assignable to the protocol
    from explain.backends.transformers.generation import TransformersGeneration
    from explain.generation.loop import Generation
    from explain.generation.strategies.assisted import AssistedRun
    from explain.generation.strategies.beam import BeamSearchRun
    from explain.generation.strategies.samples import SampledSequences

    def _assignable(
        a: Generation, b: SampledSequences, c: BeamSearchRun, d: AssistedRun, e: TransformersGeneration
    ) -> list[GenerationInterface]:
        return [a, b, c, d, e]


def test_a_step_records_the_default_top_on_both_backends(ours, theirs):
    """trace_top's default lives in one place (generation/options.py); both backends record that many."""
    for pipe in (ours, theirs):
        pipe(PROMPT, max_new_tokens=1, do_sample=False)
        step = pipe.trace.last("generation", "step", run=pipe.trace.run).data
        assert len(step["logits_top"]["ids"]) == DEFAULT_TRACE_TOP


@pytest.mark.parametrize(
    "name, value, message",
    [
        ("trace_top", 0, 'trace_top must be a positive integer or "all", got 0'),
        ("trace_top", True, 'trace_top must be a positive integer or "all", got True'),
        ("trace_top", "top", "trace_top must be a positive integer or \"all\", got 'top'"),
        ("trace_top", 2.5, 'trace_top must be a positive integer or "all", got 2.5'),
        ("keep_logits", "yes", "keep_logits must be True, False or a positive number of steps, got 'yes'"),
        ("keep_logits", -2, "keep_logits must be True, False or a positive number of steps, got -2"),
        ("capture", "everything", "capture='everything' is not a capture mode; use None"),
    ],
)
def test_a_bad_run_option_gets_one_message_on_both_backends_before_any_work(ours, theirs, name, value, message):
    for pipe in (ours, theirs):
        for entry in (pipe, pipe.start):
            events = len(pipe.trace)
            with pytest.raises(ArgumentError) as error:
                entry(PROMPT, max_new_tokens=2, **{name: value})
            assert str(error.value).startswith(message), (pipe, str(error.value))
            assert not pipe.trace.events[events:], "refused before tokenizing or generating"


def test_a_strategy_of_several_sequences_refuses_whole_rows_and_looking_inside(ours):
    with pytest.raises(ExplainError, match=r'trace_top="all" keeps whole rows of one sequence; beam search runs'):
        ours(PROMPT, max_new_tokens=2, num_beams=2, trace_top="all")
    with pytest.raises(ExplainError, match="capture='inside' records inside the model for one sequence"):
        ours(PROMPT, max_new_tokens=2, num_return_sequences=2, do_sample=True, capture="inside")


def test_both_backends_end_a_run_with_the_same_events(ours, theirs):
    """One emitter writes generation/end and decoding/decode for both; finishing a finished run emits nothing."""
    chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there"}]
    ends, decodes, encodes = [], [], []
    for pipe in (ours, theirs):
        pipe(chat, max_new_tokens=3, do_sample=False)
        run = pipe.trace.run
        ends.append(pipe.trace.last("generation", "end", run=run).data)
        decodes.append(pipe.trace.last("decoding", "decode", run=run).data)
        encodes.append(pipe.trace.last("tokenization", "encode", run=run).data)
        count = len(pipe.trace)
        assert pipe.finish(pipe.last_generation) == pipe.last_generation.output_text
        assert len(pipe.trace) == count
    shared = ("stop_reason", "interrupted", "new_tokens", "prompt_tokens", "branch")
    assert [{k: end[k] for k in shared} for end in ends][0] == {k: ends[1][k] for k in shared}
    assert all(end["tokens_per_s"] > 0 and end["prefill_time"] > 0 for end in ends)
    shared = ("ids", "text", "text_with_special", "stop_reason", "interrupted", "skip_special_tokens", "branch")
    assert {k: decodes[0][k] for k in shared} == {k: decodes[1][k] for k in shared}
    assert encodes[0]["segments"] == encodes[1]["segments"]
    assert [s["role"] for s in encodes[0]["segments"]] == ["system", "user", "generation prompt"]
    assert ends[0]["sequences"] == 1 and ends[1]["stopping_criteria"]  # what only one producer knows


def test_max_new_tokens_effective_is_the_same_on_both_backends(ours, theirs):
    for pipe in (ours, theirs):
        pipe(PROMPT, max_length=12, do_sample=False)
        settings = pipe.trace.last("generation", "settings", run=pipe.trace.run).data["settings"]
        prompt = pipe.trace.last("tokenization", "encode", run=pipe.trace.run).data["count"]
        assert settings["max_new_tokens_effective"] == 12 - prompt


@pytest.fixture
def explain_only():
    """A processor only explain has, registered for the test: transformers' generate() has no such argument."""

    @register
    class HalveLogitsWarper(LogitsProcessor):
        name, title, order = "halve_logits", "halve the logits", 961
        transformers_class = None
        knobs = (Knob("halve_logits", None, "bool", "halve every logit"),)

        @classmethod
        def build(cls, settings, context):
            return cls() if settings.get("halve_logits") else None

        def __call__(self, input_ids, scores):
            return scores / 2

    try:
        yield HalveLogitsWarper
    finally:
        PROCESSORS.pop("halve_logits")


def test_a_knob_transformers_lacks_is_refused_with_explains_message(theirs, explain_only):
    message = (
        r"halve_logits is a knob of halve the logits \(HalveLogitsWarper\), a logits processor that explain "
        r"has and transformers' generate\(\) does not: run it with backend=\"explain\""
    )
    with pytest.raises(ArgumentError, match=message):  # was transformers' "model_kwargs are not used"
        theirs(PROMPT, max_new_tokens=1, halve_logits=True)
    with pytest.raises(ArgumentError, match=message):
        theirs.start(PROMPT, max_new_tokens=1, halve_logits=True)
    assert "halve_logits" in theirs.knobs_unavailable  # (with any other processor transformers lacks)
    generation = theirs.start(PROMPT, max_new_tokens=2, do_sample=False)
    with pytest.raises(ArgumentError, match=message):
        generation.set_settings(halve_logits=True)


def test_the_step_through_hides_the_slider_of_a_processor_transformers_lacks(ours, theirs, monkeypatch):
    from explain.widgets import StepThrough

    assert hasattr(StepThrough(theirs, PROMPT, max_new_tokens=2, do_sample=False), "top_h")  # transformers has it
    monkeypatch.setattr(TopHLogitsWarper, "transformers_class", None)  # as if transformers had no top-h
    on_transformers = StepThrough(theirs, PROMPT, max_new_tokens=2, do_sample=False)
    on_explain = StepThrough(ours, PROMPT, max_new_tokens=2, do_sample=False)
    assert "top_h" not in on_transformers.knob_widgets and not hasattr(on_transformers, "top_h")
    assert "top_h" not in on_transformers.knobs() and "top_k" in on_transformers.knobs()
    assert "top_h" in on_explain.knob_widgets
    on_transformers.do_sample.value = True  # the knobs it shows still go to the run
    assert on_transformers.generation.settings["do_sample"] is True
    with pytest.raises(ArgumentError, match='top_h is a knob of top-h.*backend="explain"'):
        theirs(PROMPT, max_new_tokens=1, do_sample=True, top_h=0.5)


def test_a_strategy_transformers_lacks_runs_on_explain_and_is_refused_on_transformers(ours, theirs, monkeypatch):
    """The strategy recipe end to end with a throwaway strategy only explain has (in_transformers = False): choose()
    picks it, the explain backend runs it (its settings event names it), backend="transformers" refuses its knob
    with explain's message before any work and lists it in knobs_unavailable; then it is taken back."""
    from explain import text_generation
    from explain.generation import settings as settings_table
    from explain.generation.knobs import boolean
    from explain.generation.strategies.base import DecodingStrategy

    knob = Knob("least_likely", None, "bool", "pick the least likely token", check=boolean, live=False)

    class Negate:  # turns greedy's argmax into an argmin
        name, title = "negate", "negate"

        def args(self):
            return {}

        def __call__(self, input_ids, scores):
            return -scores

    @strategies.register
    class LeastLikely(DecodingStrategy):
        name, title, order, in_transformers = "least_likely", "least likely", 91, False
        description, source = "the least likely token each step", "explain only"
        knobs = (knob,)

        @classmethod
        def applies(cls, settings):
            return bool(settings.get("least_likely")) and not settings.get("do_sample")

        @classmethod
        def run_class(cls):
            from explain.generation.loop import Generation

            class LeastLikelyRun(Generation):
                def _build_processors(self, settings):
                    return super()._build_processors(settings) + [Negate()]

            return LeastLikelyRun

    # the settings tables are built when explain.generation is imported; a strategy registered now joins them here
    monkeypatch.setitem(settings_table.KNOBS, knob.name, knob)
    monkeypatch.setitem(settings_table.GENERATE_DEFAULTS, knob.name, None)
    monkeypatch.setattr(settings_table, "SETTINGS", (*settings_table.SETTINGS, knob.name))
    monkeypatch.setattr(text_generation, "GENERATE_ARGUMENTS", (*text_generation.GENERATE_ARGUMENTS, knob.name))
    try:
        generation = ours.start(PROMPT, max_new_tokens=3, do_sample=False, keep_logits=True, least_likely=True).run()
        settings = ours.trace.last("generation", "settings", run=generation.run_id).data
        assert settings["strategy"]["name"] == "least_likely" and len(generation.steps) == 3
        for step, raw in zip(generation.steps, generation.raw_logits, strict=True):
            assert step["token_id"] == int(raw.argmin())
        message = (
            r"least_likely is a knob of least likely \(LeastLikely\), a decoding strategy that explain has "
            r"and transformers' generate\(\) does not: run it with backend=\"explain\""
        )
        with pytest.raises(ArgumentError, match=message):  # was transformers' "model_kwargs are not used"
            theirs(PROMPT, max_new_tokens=1, least_likely=True)
        assert "least_likely" in theirs.knobs_unavailable
    finally:
        strategies.STRATEGIES.pop("LeastLikely")
    assert strategies.transformers_lacks("least_likely") is None and "least_likely" not in theirs.knobs_unavailable


def test_both_backends_check_force_and_what_if_arguments_alike(ours, theirs):
    """The checks every run shares (contract.RunState): a finished run, a step or token id that is not an integer,
    a step not generated, a token outside the vocabulary, what-if without kept logits."""
    import numpy as np

    for pipe in (ours, theirs):
        generation = pipe.start(PROMPT, max_new_tokens=2, do_sample=False, keep_logits=True).run()
        vocab = (
            generation.model.config.get_text_config().vocab_size
            if pipe is theirs
            else generation.model.config.vocab_size
        )
        with pytest.raises(
            ExplainError, match=r"this generation has finished \(max_length\); start a new call or reset"
        ):
            generation.step()
        with pytest.raises(ExplainError, match=r"the token id must be an integer \(an int\), got 1.0 of type float"):
            generation.force(0, 1.0)
        with pytest.raises(ExplainError, match=r"step 2 has not been generated; steps 0..1 exist"):
            generation.force(2, 5)
        with pytest.raises(ExplainError, match=rf"token id {vocab} is outside the vocabulary \(0..{vocab - 1}\)"):
            generation.force(0, vocab)
        branch = generation.force(np.int64(1), np.int64(5))  # numpy integers are integers, on both backends
        assert branch.steps[-1]["token_id"] == 5 and branch.branch != generation.branch
        assert generation.what_if(np.int64(0), temperature=0.5)["step"] == 0
        plain = pipe.start(PROMPT, max_new_tokens=1, do_sample=False).run()
        with pytest.raises(
            ExplainError, match="what-if needs the raw logits of each step: create the run with keep_logits=True"
        ):
            plain.what_if(0, top_k=3)


def test_a_bound_in_limits_is_refused_by_both_backends_with_one_message(ours, theirs, monkeypatch):
    """options.LIMITS is the one place for resource bounds: a name added there is refused by both producers."""
    from explain.generation import options

    monkeypatch.setitem(options.LIMITS, "num_beams", (2, "each beam is a row of the batch"))
    for pipe in (ours, theirs):
        with pytest.raises(
            ArgumentError,
            match=r"^num_beams=3 is more than explain runs here \(each beam is a "
            r"row of the batch\); num_beams=2 or less fits$",
        ):
            pipe(PROMPT, max_new_tokens=2, num_beams=3, do_sample=False)
        pipe(PROMPT, max_new_tokens=1, num_beams=2, do_sample=False)  # at the bound: runs
