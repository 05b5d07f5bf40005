"""Drop-in at the edges (issue 24): the pipeline arguments people pass to transformers.pipeline(), on both backends.

Each test makes the same call on transformers' own pipeline (the reference), on explain's backend and on
backend="transformers", over a tiny random Llama and a tiny random GPT-2 written by transformers itself, and asserts
the same result; where transformers raises, both backends raise. The arguments: bad words naming only EOS,
eos_token_id=-1, prefix= with max_length=, a config's prefix, max_length=None, max_length with max_new_tokens,
handle_long_generation="hole" against the tokenizer's model_max_length, continue_final_message with a template that
changes the message, sampling over a list / generator / Dataset under one seed, generation_config=, streamer=
(TextStreamer, TextIteratorStreamer on another thread), stopping_criteria=, max_time=, generate_kwargs=,
tokenizer_encode_kwargs=, truncation=, return_dict_in_generate with output_scores, skip_special_tokens and
clean_up_tokenization_spaces, top_p=0 / top_p >= 1 / typical_p >= 1 (filters generate() skips or runs as it does)
and a float pad_token_id.
"""

from __future__ import annotations

import json
import os
import threading
import warnings

import pytest
import torch

transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()
transformers.logging.disable_progress_bar()

from transformers import StoppingCriteria  # noqa: E402

import explain  # noqa: E402
from explain.errors import ExplainError  # noqa: E402

PROMPT = "The cat sat on"
LONG = "one two three four five six seven eight nine ten eleven twelve thirteen fourteen"
CHAT = [{"role": "user", "content": "Say hi"}, {"role": "assistant", "content": "Hello  "}]
TEMPLATE = (  # SmolLM2's layout; FILTER is applied to each message's content
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] FILTER }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def write(folder, model, tokenizer, config_extra=None, tokenizer_extra=None) -> str:
    """A model folder written by transformers, with explain's tokenizer files and optional JSON additions."""
    model.save_pretrained(folder)
    tokenizer.save(folder)
    for name, extra in (("config.json", config_extra), ("tokenizer_config.json", tokenizer_extra)):
        if extra:
            path = os.path.join(folder, name)
            with open(path) as f:
                data = json.load(f)
            data.update(extra)
            with open(path, "w") as f:
                json.dump(data, f)
    template = os.path.join(folder, "chat_template.jinja")
    if tokenizer_extra and "chat_template" in tokenizer_extra and os.path.exists(template):
        os.remove(template)  # the template of tokenizer_config.json is the one both read
    return str(folder)


def tiny_model(kind: str, tokenizer):
    torch.manual_seed(0)
    if kind == "llama":
        config = transformers.LlamaConfig(
            vocab_size=tokenizer.vocab_size,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=128,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
        return transformers.LlamaForCausalLM(config).eval()
    config = transformers.GPT2Config(
        vocab_size=tokenizer.vocab_size,
        n_positions=128,
        n_embd=32,
        n_layer=2,
        n_head=4,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    return transformers.GPT2LMHeadModel(config).eval()


class Three:
    """transformers' pipeline (the reference), explain's backend and backend="transformers" over one folder."""

    def __init__(self, folder: str):
        self.folder = folder
        self.reference = transformers.pipeline("text-generation", model=folder)
        self.ours = explain.pipeline("text-generation", model=folder)
        self.theirs = explain.pipeline("text-generation", model=folder, backend="transformers")

    def all(self):
        return (("reference", self.reference), ("explain", self.ours), ("transformers", self.theirs))

    def same(self, prompt, seed: int | None = None, **kwargs):
        """The three results of one call; asserts they are equal and returns the reference's."""
        results = {}
        for name, pipe in self.all():
            if seed is not None:
                torch.manual_seed(seed)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                results[name] = pipe(prompt, **kwargs)
        assert results["explain"] == results["reference"], (results["explain"], results["reference"])
        assert results["transformers"] == results["reference"], (results["transformers"], results["reference"])
        return results["reference"]

    def end(self, pipe) -> dict:
        return pipe.trace.filter("generation", "end", pipe.trace.run)[0].data

    def settings(self, pipe) -> dict:
        return pipe.trace.filter("generation", "settings", pipe.trace.run)[0].data


@pytest.fixture(scope="module")
def tokenizer(embedded_pipe):
    return embedded_pipe.tokenizer


@pytest.fixture(scope="module", params=["llama", "gpt2"])
def three(request, tmp_path_factory, tokenizer):
    model = tiny_model(request.param, tokenizer)
    return Three(write(tmp_path_factory.mktemp(f"dropin-{request.param}"), model, tokenizer))


@pytest.fixture(scope="module")
def llama(tmp_path_factory, tokenizer):
    return tiny_model("llama", tokenizer)


def folder_with(tmp_path, model, tokenizer, config=None, tokenizer_config=None) -> Three:
    return Three(write(tmp_path / "model", model, tokenizer, config, tokenizer_config))


def eos_bias(tokenizer) -> dict:
    """sequence_bias that makes EOS the certain next token (a random model rarely writes it)."""
    return {(tokenizer.eos_token_id,): 100.0}


# -- differences listed in the issue ------------------------------------------------------------------------------


def test_bad_words_of_only_eos_runs_and_leaves_eos_possible(three, tokenizer):
    eos = tokenizer.eos_token_id
    bias = eos_bias(tokenizer)
    out = three.same(PROMPT, do_sample=False, max_new_tokens=6, bad_words_ids=[[eos]], sequence_bias=bias)
    assert out == [{"generated_text": PROMPT}]  # EOS stays possible: the biased EOS ends the run at once
    for pipe in (three.ours, three.theirs):
        assert three.end(pipe)["stop_reason"] == "eos" and three.end(pipe)["new_tokens"] == 1
    plain = three.same(PROMPT, do_sample=False, max_new_tokens=6, bad_words_ids=[[eos]])
    assert plain == three.same(PROMPT, do_sample=False, max_new_tokens=6)  # the processor has nothing to do


def test_eos_token_id_minus_one_switches_eos_off(three, tokenizer):
    kwargs = dict(do_sample=False, max_new_tokens=5, sequence_bias=eos_bias(tokenizer), skip_special_tokens=False)
    out = three.same(PROMPT, eos_token_id=-1, **kwargs)
    assert out == [{"generated_text": PROMPT + tokenizer.eos_token * 5}]  # every token EOS, none stops the run
    for pipe in (three.ours, three.theirs):
        assert three.end(pipe)["stop_reason"] == "max_length" and three.end(pipe)["new_tokens"] == 5
    assert three.same(PROMPT, **kwargs) == [{"generated_text": PROMPT + tokenizer.eos_token}]  # left out: EOS stops


def test_prefix_with_max_length_counts_the_prefix(three, tokenizer):
    prefix = "Once upon a time, "
    prefix_length = len(tokenizer.encode(prefix, add_special_tokens=False))
    three.same(PROMPT, do_sample=False, max_length=12, prefix=prefix)
    prompt_tokens = three.settings(three.ours)["prompt_tokens"]
    for pipe in (three.ours, three.theirs):
        assert three.settings(pipe)["settings"]["max_length"] == 12 + prefix_length
    assert three.end(three.ours)["new_tokens"] == 12 + prefix_length - prompt_tokens
    # max_length truncates the prompt too (transformers hands it to the tokenizer): a long prompt keeps 12 tokens
    three.same(LONG, do_sample=False, max_length=12, prefix=prefix)
    assert three.settings(three.ours)["prompt_tokens"] == 12


def test_max_length_cuts_a_text_prompt_but_not_a_chat(three):
    """transformers hands max_length to the tokenizer too: a text prompt is cut to it (and then has no room to
    generate, which both refuse); apply_chat_template does not truncate unless asked."""
    chat = [{"role": "user", "content": "Say hi"}]
    length = len(three.reference.tokenizer.apply_chat_template(chat, add_generation_prompt=True)["input_ids"])
    three.same(chat, do_sample=False, max_length=length + 3)
    assert three.end(three.ours)["new_tokens"] == 3 and three.settings(three.ours)["prompt_tokens"] == length
    with pytest.raises(ValueError, match="Input length of input_ids is 5"):
        three.reference(LONG, do_sample=False, max_length=5)
    for pipe in (three.ours, three.theirs):
        with pytest.raises(ExplainError, match="max_length"):
            pipe(LONG, do_sample=False, max_length=5)


def test_a_config_prefix_is_put_before_text_prompts(tmp_path, llama, tokenizer):
    three = folder_with(tmp_path, llama, tokenizer, config={"prefix": "In the beginning "})
    three.same(PROMPT, do_sample=False, max_new_tokens=4)
    for pipe in (three.ours, three.theirs):
        encode = pipe.trace.filter("tokenization", "encode", pipe.trace.run)[0].data
        assert encode["text"].startswith("In the beginning")
    three.same(PROMPT, do_sample=False, max_new_tokens=4, prefix="")  # the call's prefix wins


def test_max_length_none_runs_and_both_lengths_warn_which_wins(three):
    three.same(PROMPT, do_sample=False, max_length=None, max_new_tokens=3)
    three.same(PROMPT, do_sample=False, max_length=12, max_new_tokens=3)
    with pytest.warns(UserWarning, match=r"Both `max_new_tokens` \(=3\) and `max_length`.*`max_new_tokens` will take"):
        three.ours(PROMPT, do_sample=False, max_length=12, max_new_tokens=3)
    assert three.end(three.ours)["new_tokens"] == 3


def test_hole_measures_against_the_tokenizers_model_max_length(tmp_path, llama, tokenizer):
    three = folder_with(tmp_path, llama, tokenizer, tokenizer_config={"model_max_length": 12})
    three.same(LONG, do_sample=False, max_new_tokens=4, handle_long_generation="hole")
    assert three.settings(three.ours)["prompt_tokens"] == 8  # 12 - 4, though the model has 128 positions
    assert three.settings(three.ours)["hole"]["kept"] == 8
    with pytest.raises(ValueError, match="cannot use `hole`"):
        three.reference(LONG, do_sample=False, max_new_tokens=12, handle_long_generation="hole")
    for pipe in (three.ours, three.theirs):
        with pytest.raises(ExplainError):
            pipe(LONG, do_sample=False, max_new_tokens=12, handle_long_generation="hole")


def test_continue_final_message_cuts_where_transformers_cuts(tmp_path, llama, tokenizer):
    template = TEMPLATE.replace("FILTER", "| trim")
    three = folder_with(tmp_path, llama, tokenizer, tokenizer_config={"chat_template": template})
    out = three.same(CHAT, do_sample=False, max_new_tokens=3)
    assert out[0]["generated_text"][-1]["content"].startswith("Hello  ")
    ids = [p.trace.filter("tokenization", "encode", p.trace.run)[0].data["ids"] for p in (three.ours, three.theirs)]
    assert ids[0] == ids[1]
    rendered = three.reference.tokenizer.apply_chat_template(CHAT, continue_final_message=True, tokenize=False)
    assert three.ours.trace.filter("tokenization", "encode", three.ours.trace.run)[0].data["text"] == rendered


def test_continue_final_message_raises_where_transformers_raises(tmp_path, llama, tokenizer):
    template = TEMPLATE.replace("FILTER", "| upper")
    three = folder_with(tmp_path, llama, tokenizer, tokenizer_config={"chat_template": template})
    with pytest.raises(ValueError, match="final message does not appear in the chat"):
        three.reference(CHAT, do_sample=False, max_new_tokens=3)
    for pipe in (three.ours, three.theirs):
        with pytest.raises(ExplainError, match="final message does not appear in the chat"):
            pipe(CHAT, do_sample=False, max_new_tokens=3)
    three.same(CHAT, do_sample=False, max_new_tokens=3, continue_final_message=False)  # the fix the message names


def test_sampling_over_a_list_a_generator_and_a_dataset_is_reproducible(three):
    from transformers.pipelines.pt_utils import KeyDataset

    prompts = [PROMPT, "A dog", "Hello world"]
    kwargs = dict(do_sample=True, max_new_tokens=4)
    expected = three.same(prompts, seed=3, **kwargs)
    for make in (lambda: (p for p in prompts), lambda: KeyDataset([{"text": p} for p in prompts], "text")):
        results = {}
        for name, pipe in three.all():
            torch.manual_seed(3)
            iterator = pipe(make(), **kwargs)
            assert not isinstance(iterator, list)  # an iterator, consumed on demand, as transformers returns
            results[name] = list(iterator)
        assert results["explain"] == results["reference"] == results["transformers"] == expected


def test_a_generator_of_messages_is_one_chat_and_an_empty_one_runs_nothing(three):
    messages = [{"role": "user", "content": "Say hi"}]
    results = {name: pipe((m for m in messages), do_sample=False, max_new_tokens=3) for name, pipe in three.all()}
    assert results["explain"] == results["reference"] == results["transformers"]
    assert isinstance(results["reference"], list) and results["reference"][0]["generated_text"][0] == messages[0]
    for _, pipe in three.all():
        assert list(pipe((p for p in []), max_new_tokens=3)) == []


def test_per_dimension_rope_factors_are_accepted(tmp_path, tokenizer):
    half = 4  # head_dim 8: one factor per rotary dimension pair
    config = transformers.LlamaConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        rope_parameters={
            "rope_type": "longrope",
            "rope_theta": 10000.0,
            "long_factor": [1.0, 1.5, 2.0, 2.5][:half],
            "short_factor": [1.0, 1.1, 1.2, 1.3][:half],
            "original_max_position_embeddings": 16,
        },
    )
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(config).eval()
    three = Three(write(tmp_path / "longrope", model, tokenizer))
    three.same(LONG, do_sample=False, max_new_tokens=4)


# -- arguments explain refused as unknown -------------------------------------------------------------------------


def test_generation_config_is_merged_and_named_as_the_source(three):
    config = transformers.GenerationConfig(max_new_tokens=3, do_sample=False, repetition_penalty=1.5)
    three.same(PROMPT, generation_config=config)
    three.same(PROMPT, generation_config=config, max_new_tokens=5)  # the call's argument wins over it
    three.same(PROMPT, generation_config=config)
    for pipe in (three.ours, three.theirs):
        sources = three.settings(pipe)["sources"]
        assert sources["repetition_penalty"] == "generation_config argument", sources
        assert three.settings(pipe)["settings"]["repetition_penalty"] == 1.5
    assert three.end(three.ours)["new_tokens"] == 3


def test_a_call_generation_config_replaces_the_constructions_settings(three):
    """transformers' _prepare_generate_kwargs: settings given at construction apply to every call, unless the call
    passes a generation_config, which then replaces them."""
    built = dict(repetition_penalty=3.0, max_new_tokens=5)
    pipes = (
        transformers.pipeline("text-generation", model=three.folder, **built),
        explain.pipeline("text-generation", model=three.folder, **built),
        explain.pipeline("text-generation", model=three.folder, backend="transformers", **built),
    )
    config = transformers.GenerationConfig(do_sample=False, max_new_tokens=4)
    outputs = [pipe(PROMPT, generation_config=config) for pipe in pipes]
    assert outputs[1] == outputs[0] == outputs[2] == three.same(PROMPT, do_sample=False, max_new_tokens=4)
    with_built = [pipe(PROMPT, do_sample=False) for pipe in pipes]
    assert with_built[1] == with_built[0] == with_built[2] != outputs[0]  # without it, the construction's apply
    for pipe in pipes[1:]:
        settings = pipe.trace.filter("generation", "settings", pipe.trace.run)[0].data["settings"]
        assert settings["repetition_penalty"] == 3.0


def test_streamers_get_the_same_pieces_in_the_same_order(three):
    class Pieces(transformers.TextStreamer):
        def __init__(self, tokenizer, **kwargs):
            super().__init__(tokenizer, **kwargs)
            self.pieces: list[tuple[str, bool]] = []

        def on_finalized_text(self, text, stream_end=False):
            self.pieces.append((text, stream_end))

    tokenizer = three.reference.tokenizer
    pieces = {}
    for name, pipe in three.all():
        streamer = Pieces(tokenizer, skip_prompt=True)
        pipe(PROMPT, do_sample=False, max_new_tokens=6, streamer=streamer)
        pieces[name] = streamer.pieces
    assert pieces["explain"] == pieces["reference"] == pieces["transformers"]
    assert pieces["reference"][-1][1]  # end() ran
    threaded = {}
    for name, pipe in three.all():
        streamer = transformers.TextIteratorStreamer(tokenizer)
        kwargs = dict(do_sample=False, max_new_tokens=6, streamer=streamer)
        worker = threading.Thread(target=pipe, args=(PROMPT,), kwargs=kwargs)
        worker.start()
        threaded[name] = list(streamer)
        worker.join()
    assert threaded["explain"] == threaded["reference"] == threaded["transformers"]
    assert "".join(threaded["reference"]).startswith(PROMPT)


class StopAtThree(StoppingCriteria):
    """Stops every row once it has three new tokens."""

    def __init__(self, prompt_length):
        self.prompt_length = prompt_length

    def __call__(self, input_ids, scores, **kwargs):
        return torch.full((input_ids.shape[0],), input_ids.shape[1] >= self.prompt_length + 3, dtype=torch.bool)


def test_a_stopping_criterion_stops_and_names_the_stop(three):
    length = len(three.reference.tokenizer(PROMPT)["input_ids"])
    criteria = transformers.StoppingCriteriaList([StopAtThree(length)])
    three.same(PROMPT, do_sample=False, max_new_tokens=8, stopping_criteria=criteria)
    for pipe in (three.ours, three.theirs):
        assert three.end(pipe)["stop_reason"] == "StopAtThree" and three.end(pipe)["new_tokens"] == 3


def test_criteria_and_max_time_stop_several_samples_and_batches(three):
    length = len(three.reference.tokenizer(PROMPT)["input_ids"])
    samples = dict(do_sample=True, num_return_sequences=2, max_new_tokens=8)
    out = three.same(PROMPT, seed=2, stopping_criteria=[StopAtThree(length)], **samples)
    assert len(out) == 2 and three.end(three.ours)["stop_reason"] == "StopAtThree"
    three.same(PROMPT, seed=2, max_time=0.0, **samples)
    assert three.end(three.ours)["stop_reason"] == "max_time" and three.end(three.ours)["new_tokens"] == 1
    if three.reference.tokenizer.pad_token_id is not None:  # a batch of two prompts of different lengths
        three.same([PROMPT, "A"], do_sample=False, max_new_tokens=4, max_time=0.0, batch_size=2)
        assert three.end(three.ours)["stop_reason"] == "max_time"


def test_criteria_and_max_time_stop_beam_search_and_assisted_decoding(three):
    """generate() checks its stopping criteria on every candidate of a beam-search step (a candidate that meets one
    is finished, as at EOS) and once a round in assisted decoding: the same texts on both backends."""
    length = len(three.reference.tokenizer(PROMPT)["input_ids"])
    beams = dict(do_sample=False, num_beams=2, max_new_tokens=6)
    three.same(PROMPT, max_time=10.0, **beams)  # not reached: the search as without it
    three.same(PROMPT, max_time=0.0, **beams)  # past it after the first step: every candidate finishes
    assert three.end(three.ours)["new_tokens"] == 1
    out = three.same(PROMPT, stopping_criteria=[StopAtThree(length)], num_return_sequences=2, **beams)
    assert len(out) == 2 and all(
        len(three.reference.tokenizer(o["generated_text"])["input_ids"]) <= length + 3 for o in out
    )
    lookup = dict(do_sample=False, prompt_lookup_num_tokens=3, max_new_tokens=10)
    three.same(
        PROMPT + PROMPT,
        stopping_criteria=[StopAtThree(len(three.reference.tokenizer(PROMPT + PROMPT)["input_ids"]))],
        **lookup,
    )
    assert three.end(three.ours)["stop_reason"] == "StopAtThree"
    three.same(PROMPT + PROMPT, max_time=0.0, **lookup)
    assert three.end(three.ours)["stop_reason"] == "max_time"


def test_max_time_stops_with_its_reason(three):
    three.same(PROMPT, do_sample=False, max_new_tokens=8, max_time=0.0)  # past it after the first token
    for pipe in (three.ours, three.theirs):
        assert three.end(pipe)["stop_reason"] == "max_time" and three.end(pipe)["new_tokens"] == 1


def test_generate_kwargs_is_refused_as_transformers_refuses_it(three):
    with pytest.raises(ValueError, match="generate_kwargs"):
        three.reference(PROMPT, generate_kwargs={"max_new_tokens": 3})
    for pipe in (three.ours, three.theirs):
        with pytest.raises(ExplainError, match="generate_kwargs"):
            pipe(PROMPT, generate_kwargs={"max_new_tokens": 3})


def test_tokenizer_arguments(three):
    three.same(LONG, do_sample=False, max_new_tokens=3, tokenizer_encode_kwargs={"max_length": 5, "truncation": True})
    assert three.settings(three.ours)["prompt_tokens"] == 5
    three.same(LONG, do_sample=False, max_new_tokens=3, truncation=True)
    three.same(PROMPT, do_sample=False, max_new_tokens=3, tokenizer_encode_kwargs={"add_special_tokens": False})


def test_return_dict_in_generate_with_scores_as_the_pipeline_returns_them(three):
    results = {}
    for name, pipe in three.all():
        kwargs = dict(return_dict_in_generate=True, output_scores=True)
        results[name] = pipe(PROMPT, do_sample=False, max_new_tokens=3, **kwargs)
    reference = results["reference"][0]
    assert set(reference) == {"generated_text", "scores"} and len(reference["scores"]) == 3
    for name in ("explain", "transformers"):
        ours = results[name][0]
        assert set(ours) == set(reference) and ours["generated_text"] == reference["generated_text"]
        assert torch.allclose(torch.tensor(ours["scores"]), torch.tensor(reference["scores"]), atol=1e-4)
    three.same(PROMPT, do_sample=False, max_new_tokens=3, output_scores=True)  # without the dict: nothing added
    # per-step scores of beam search (generate() returns them per beam): explain says so and where they are
    with pytest.raises(ExplainError, match='output_scores with beam search.*backend="transformers"'):
        three.ours(
            PROMPT, do_sample=False, num_beams=2, max_new_tokens=3, return_dict_in_generate=True, output_scores=True
        )


def test_skip_special_tokens_and_clean_up_as_the_caller_asks(three, tokenizer):
    kwargs = dict(do_sample=False, max_new_tokens=3, sequence_bias=eos_bias(tokenizer))
    assert three.same(PROMPT, skip_special_tokens=False, **kwargs) == [{"generated_text": PROMPT + tokenizer.eos_token}]
    for pipe in (three.ours, three.theirs):
        decode = pipe.trace.filter("decoding", "decode", pipe.trace.run)[0].data
        assert decode["skip_special_tokens"] is False and decode["text"] == tokenizer.eos_token
    three.same(PROMPT + " , isn't it .", do_sample=False, max_new_tokens=3, clean_up_tokenization_spaces=True)


def test_import_explain_never_imports_transformers():
    import subprocess
    import sys

    code = "import sys, explain; explain.pipeline; print('transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# -- item 4: both backends run what transformers runs, with its answer ------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(top_p=0.0),
        dict(top_p=1.5),
        dict(typical_p=1.5),
        dict(typical_p=1.0),
        dict(epsilon_cutoff=1.0),
        dict(eta_cutoff=-0.1),
        dict(eta_cutoff=0.05),
    ],
    ids=["top_p=0", "top_p=1.5", "typical_p=1.5", "typical_p=1", "epsilon=1", "eta=-0.1", "eta=0.05"],
)
def test_both_backends_run_the_sampling_filters_transformers_runs(three, kwargs):
    """generate() builds TopPLogitsWarper only for top_p < 1.0 (0 keeps only the top token), TypicalLogitsWarper
    only for typical_p < 1.0 and the epsilon / eta warpers only for 0 < cutoff < 1: both backends run these calls,
    sampled under one seed, with transformers' answer."""
    call = dict(do_sample=True, max_new_tokens=4, **kwargs)
    three.same([PROMPT, "A dog"], seed=1, **call)
    processors = {p["name"] for p in three.settings(three.ours)["processors"]}
    name = next(iter(kwargs))
    assert (name in processors) == (0.0 <= kwargs[name] < 1.0)  # it runs only where transformers builds it
    if kwargs == dict(top_p=0.0):  # only the most likely token survives: sampling gives the greedy answer
        assert three.same(PROMPT, seed=2, **call) == three.same(PROMPT, do_sample=False, max_new_tokens=4)


@pytest.mark.parametrize("kwargs", [dict(top_p=-0.1), dict(typical_p=0.0)], ids=["top_p=-0.1", "typical_p=0"])
def test_the_sampling_filters_transformers_refuses_are_refused(three, kwargs):
    with pytest.raises(ValueError, match="has to be a float > 0"):
        three.reference(PROMPT, do_sample=True, max_new_tokens=2, **kwargs)
    with pytest.raises(ExplainError, match=f"{next(iter(kwargs))} must be a number"):
        three.ours(PROMPT, do_sample=True, max_new_tokens=2, **kwargs)


def test_a_float_pad_token_id_pads_as_transformers_pads(three, tokenizer):
    """generate() makes pad_token_id a torch.long tensor (65.7 -> 65): the samples that end early are padded with
    it. Both backends run the call, pad with 65 and give transformers' answer."""
    call = dict(do_sample=True, max_new_tokens=5, num_return_sequences=4, return_tensors=True)
    call["sequence_bias"] = {(tokenizer.eos_token_id,): 2.0}  # EOS likely enough that some samples end early
    for seed in range(8):
        out = three.same(PROMPT, seed=seed, pad_token_id=65.7, **call)
        padded = [ids for ids in (o["generated_token_ids"] for o in out) if ids[-1] == 65]
        if padded and len(padded) < len(out):
            break
    else:
        pytest.fail("no seed gave samples ending at different steps")
    assert out == three.same(PROMPT, seed=seed, pad_token_id=65, **call)
    assert three.settings(three.ours)["settings"]["pad_token_id"] == 65  # what the trace shows
    with pytest.raises(RuntimeError, match="cannot be converted"):  # what torch refuses, explain refuses clearly
        three.reference(PROMPT, pad_token_id=float("nan"), **call)
    with pytest.raises(ExplainError, match="pad_token_id must be a token id"):
        three.ours(PROMPT, pad_token_id=float("nan"), **call)


def test_a_call_transformers_refuses_raises_its_error_with_explains_reading(three):
    with pytest.raises(ValueError, match="`penalty` has to be a strictly positive float") as theirs:
        three.reference(PROMPT, do_sample=False, max_new_tokens=3, repetition_penalty=0.0)
    with pytest.raises(ExplainError) as error:
        three.theirs(PROMPT, do_sample=False, max_new_tokens=3, repetition_penalty=0.0)
    message = str(error.value)
    assert f"transformers refused this call (ValueError: {theirs.value})" in message
    assert "explain's reading: repetition_penalty must be a finite number > 0" in message
    assert isinstance(error.value.__cause__, ValueError)
    with pytest.raises(TypeError, match="can only concatenate str"):  # the class of transformers' error is kept
        three.theirs([PROMPT, [{"role": "user", "content": "Hi"}]], max_new_tokens=2)
