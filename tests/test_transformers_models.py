"""backend="transformers" on architectures explain does not implement: tiny random models written by transformers.

Gemma 2, Phi-3, GPT-NeoX, OPT and Falcon, each saved to a folder by transformers itself (config.json,
model.safetensors, generation_config.json) with the embedded model's tokenizer files, loaded offline through
explain.pipeline(..., backend="transformers"):

  every stage's events      registry, config (files and config), tokenizer, weights, placement; then per call
                            tokenization, generation (settings, prefill, steps, end) and decoding
  live and replayed         the dashboard state folded from the live trace equals the one from the saved file
  sampling under a seed     the same tokens as transformers' own pipeline on the same model, and as a step-through
Then: explain.attach on a pipeline built with transformers, a device_map="auto" whose max_memory forces offload
(accelerate's hooks, the placement event), trust_remote_code marked, and bad input (an ExplainError naming the fix,
nothing written into the Hugging Face cache).
"""

from __future__ import annotations

import json
import os
import shutil

import pytest
import torch

transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()
transformers.logging.disable_progress_bar()

import explain  # noqa: E402
from explain.errors import (  # noqa: E402
    ArgumentError,
    CorruptFileError,
    ExplainError,
    NotCachedError,
    UnknownTaskError,
    UnsupportedError,
)
from explain.widgets import Dashboard  # noqa: E402
from explain.widgets.state import DashboardState  # noqa: E402

LOADING = ("registry", "config", "tokenizer", "weights", "placement")
SMALL = dict(
    hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=128
)
ARCHITECTURES = {  # explain implements none of these (explain/models/)
    "gemma2": lambda ids: transformers.Gemma2Config(
        **SMALL, num_key_value_heads=2, head_dim=8, sliding_window=16, **ids
    ),
    "phi3": lambda ids: transformers.Phi3Config(
        **SMALL, num_key_value_heads=2, pad_token_id=ids["eos_token_id"], **ids
    ),
    "gpt_neox": lambda ids: transformers.GPTNeoXConfig(**SMALL, **ids),
    "opt": lambda ids: transformers.OPTConfig(
        hidden_size=32,
        ffn_dim=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=128,
        word_embed_proj_dim=32,
        pad_token_id=ids["eos_token_id"],
        **ids,
    ),
    "falcon": lambda ids: transformers.FalconConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        new_decoder_architecture=False,
        multi_query=True,
        **ids,
    ),
}
MODEL_CLASSES = {
    "gemma2": "Gemma2ForCausalLM",
    "phi3": "Phi3ForCausalLM",
    "gpt_neox": "GPTNeoXForCausalLM",
    "opt": "OPTForCausalLM",
    "falcon": "FalconForCausalLM",
}


@pytest.fixture(scope="module")
def folders(tmp_path_factory, embedded_pipe) -> dict:
    """architecture -> a folder transformers wrote: a tiny random model and the embedded model's tokenizer."""
    tokenizer = embedded_pipe.tokenizer
    ids = dict(
        vocab_size=tokenizer.vocab_size, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id
    )
    out = {}
    for name, make in ARCHITECTURES.items():
        torch.manual_seed(0)
        model = transformers.AutoModelForCausalLM.from_config(make(ids)).eval()
        folder = tmp_path_factory.mktemp(name)
        model.save_pretrained(folder)
        tokenizer.save(folder)
        out[name] = str(folder)
    return out


@pytest.fixture(scope="module")
def pipes(folders) -> dict:
    return {
        name: explain.pipeline("text-generation", model=folder, backend="transformers")
        for name, folder in folders.items()
    }


def stages_of(trace, run) -> set:
    return {e.stage for e in trace.events if e.run == run}


@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_loads_with_every_loading_stage(pipes, folders, name):
    pipe = pipes[name]
    assert isinstance(pipe, transformers.TextGenerationPipeline)  # transformers' own pipeline class, traced
    assert type(pipe.model).__name__ == MODEL_CLASSES[name]
    trace = pipe.trace
    assert stages_of(trace, 0) == set(LOADING)
    (lookup,) = trace.filter("registry", "lookup")
    assert lookup.data["task"] == "text-generation" and lookup.data["model_class"] == "AutoModelForCausalLM"
    assert lookup.data["pipeline_class"] == "TextGenerationPipeline" and lookup.data["backend"] == "transformers"
    assert (
        lookup.data["default_model"] == transformers.pipelines.SUPPORTED_TASKS["text-generation"]["default"]["model"][0]
    )
    files = {e.data["filename"]: e.data for e in trace.filter("config", "file") if not e.data.get("absent")}
    for filename in ("config.json", "model.safetensors", "tokenizer.json", "generation_config.json"):
        assert files[filename]["cache"] == "local folder" and files[filename]["size"] == os.path.getsize(
            os.path.join(folders[name], filename)
        )
    assert files["model.safetensors"]["stage"] == "weights" and files["tokenizer.json"]["stage"] == "tokenizer"
    (config,) = trace.filter("config", "config")
    assert config.data["architecture"] == MODEL_CLASSES[name] and config.data["model_type"] == name
    assert config.data["config_class"] == type(pipe.model.config).__name__
    assert config.data["has_generation_config_file"] is True
    (weights,) = trace.filter("weights", "load")
    assert (
        weights.data["format"] == "safetensors" and weights.data["missing"] == [] and weights.data["unexpected"] == []
    )
    assert weights.data["parameters"] == sum(p.numel() for p in pipe.model.parameters())
    assert weights.data["source_file"] == transformers.models.__path__[0] + f"/{name}/modeling_{name}.py"
    assert trace.meta["source_file"] == weights.data["source_file"] and trace.meta["backend"] == "transformers"
    (placement,) = trace.filter("placement", "place")
    assert placement.data["devices"] == ["cpu"] and placement.data["hooks"]["count"] == 0
    (tokenizer,) = trace.filter("tokenizer", "load")
    assert tokenizer.data["source"] == "tokenizer.json" and tokenizer.data["vocab_size"] == len(pipe.tokenizer)


@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_generates_with_every_stage_live_and_replayed(pipes, name, tmp_path):
    pipe = pipes[name]
    output = pipe("Once upon a time", max_new_tokens=6, do_sample=False)
    run = pipe.trace.run
    assert stages_of(pipe.trace, run) == {"tokenization", "generation", "decoding"}
    kinds = [e.kind for e in pipe.trace.filter("generation", run=run)]
    assert kinds == ["settings", "prefill"] + ["step"] * 6 + ["end"]
    steps = [e.data for e in pipe.trace.filter("generation", "step", run)]
    (decode,) = pipe.trace.filter("decoding", "decode", run)
    assert decode.data["ids"] == [s["token_id"] for s in steps]
    assert output == [{"generated_text": "Once upon a time" + decode.data["text"]}]
    assert [s["kv_cache"]["length"] for s in steps] == [4 + i for i in range(6)] or name == "gemma2"
    assert steps[-1]["stop_reason"] == "max_length"
    path = pipe.trace.save(tmp_path / "trace.json")
    live, replayed = (
        DashboardState.from_trace(pipe.trace, run),
        DashboardState.from_trace(explain.Trace.load(path), run),
    )
    assert live.stage_rows() == replayed.stage_rows()
    assert live.generated_tokens() == replayed.generated_tokens() and len(live.generated_tokens()) == 6
    assert all(row["status"] == "done" for row in live.stage_rows())


@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_looks_inside_every_architecture(pipes, name):
    """capture="inside" on the transformers backend: each step's lens and attention, replayed on transformers'
    forward from its Cache. The lens's last layer reads the step's own logits (Gemma 2 caps its logits with a tanh
    after the head, which the lens does not apply: the difference is reported, not hidden)."""
    pipe = pipes[name]
    implementation = pipe.model.config._attn_implementation
    generation = pipe.start("Once upon a time", max_new_tokens=3, do_sample=False, capture="inside")
    generation.run()
    pipe.finish(generation)
    looks = [e.data for e in pipe.trace.filter("generation", "inspect", generation.run_id)]
    assert [look["step"] for look in looks] == [0, 1, 2]
    layers = pipe.model.config.num_hidden_layers
    for look, step in zip(looks, generation.steps, strict=True):
        assert (
            look["token_id"] == step["token_id"]
            and look["context_ids"] == generation.input_ids[0, : step["position"]].tolist()
        )
        assert len(look["lens"]["layers"]) == layers + 1
        assert len(look["attention"]["heads"]) == layers and look["attention"]["positions"] == step["position"]
        assert all(abs(sum(row) - 1) < 1e-4 for layer in look["attention"]["heads"] for row in layer)
        if name == "gemma2":
            assert look["lens"]["last_layer_difference"] > 0  # the soft cap
        else:
            assert look["lens"]["last_layer_difference"] < 1e-4
            assert look["lens"]["layers"][-1]["chosen_rank"] == step["rank"]
    assert pipe.model.config._attn_implementation == implementation  # eager only for the attention pass


@pytest.mark.parametrize("name", ["gemma2", "opt"])
def test_sampling_under_a_seed_equals_transformers(pipes, name):
    """The traced call, transformers' own pipeline on the same model and a step-through: the same tokens."""
    pipe = pipes[name]
    plain = transformers.TextGenerationPipeline(model=pipe.model, tokenizer=pipe.tokenizer)
    kwargs = dict(do_sample=True, temperature=0.9, top_k=20, top_p=0.9, repetition_penalty=1.2, max_new_tokens=10)
    torch.manual_seed(7)
    expected = plain("A cat", **kwargs)
    torch.manual_seed(7)
    assert pipe("A cat", **kwargs) == expected
    traced = [s.data["token_id"] for s in pipe.trace.filter("generation", "step", pipe.trace.run)]
    torch.manual_seed(7)
    generation = pipe.start("A cat", **kwargs).run()
    assert generation.generated_ids == traced
    assert [p["name"] for p in generation.steps[0]["processors"]] == [
        "repetition_penalty",
        "temperature",
        "top_k",
        "top_p",
    ]


def test_attach_traces_a_pipeline_built_outside_explain(folders):
    tpipe = transformers.pipeline("text-generation", model=folders["phi3"], max_new_tokens=4, do_sample=False)
    pipe = explain.attach(tpipe)
    assert pipe.model is tpipe.model and pipe.tokenizer is tpipe.tokenizer  # no copy of the weights
    assert pipe.trace.filter(run=0) == [] and "outside explain" in pipe.trace.meta["built_by"]
    output = pipe("Hello")
    assert output == tpipe("Hello")  # the max_new_tokens=4 given to transformers.pipeline applies to both
    assert len(pipe.trace.filter("generation", "step")) == 4
    assert {e.stage for e in pipe.trace.events} == {"tokenization", "generation", "decoding"}
    state = DashboardState.from_trace(pipe.trace, 1)
    assert state.finished and state.stop_reason == "max_length"
    with pytest.raises(ExplainError, match="text-generation pipeline"):
        explain.attach(object())


def test_device_map_auto_on_one_cpu(folders):
    """device_map="auto" with no max_memory: transformers gives accelerate a share of the free memory (a float of
    bytes), recorded in whole bytes; everything fits the CPU, nothing is offloaded."""
    pipe = explain.pipeline("text-generation", model=folders["phi3"], backend="transformers", device_map="auto")
    (placement,) = pipe.trace.filter("placement", "place")
    data = placement.data
    assert data["strategy"] == "auto" and data["devices"] == ["cpu"] and data["offloaded"] == []
    assert isinstance(data["max_memory"]["cpu"], int) and data["max_memory"]["cpu"] > 0
    assert data["main_device"] == "cpu" and set(data["execution_devices"].values()) == {"cpu"}


def test_device_map_auto_with_max_memory_offloads(embedded_pipe, tmp_path):
    """On a CPU-only machine, a max_memory too small for the weights makes accelerate put the rest on disk; the
    model runs through accelerate's hooks, which load each offloaded module at its forward. (transformers' pipeline
    takes its device from the first module of the map, so the map must start on the CPU, not on disk: a GPT-NeoX
    whose layers are large next to its embedding, 16 MB for the CPU.)"""
    tokenizer = embedded_pipe.tokenizer
    config = transformers.GPTNeoXConfig(
        hidden_size=32,
        intermediate_size=8192,
        num_hidden_layers=4,
        num_attention_heads=4,
        max_position_embeddings=128,
        vocab_size=tokenizer.vocab_size,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(0)
    folder = tmp_path / "neox"
    transformers.AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    tokenizer.save(folder)
    offload = tmp_path / "offload"
    pipe = explain.pipeline(
        "text-generation",
        model=str(folder),
        backend="transformers",
        device_map="auto",
        model_kwargs={"max_memory": {"cpu": "16MB"}, "offload_folder": str(offload)},
    )
    (placement,) = pipe.trace.filter("placement", "place")
    data = placement.data
    assert data["strategy"] == "auto" and data["max_memory_asked"] == {"cpu": "16MB"}
    assert data["devices"] == ["cpu", "disk"] and data["offload_folder"] == str(offload)
    assert data["device_map"] == pipe.model.hf_device_map
    assert data["device_map"]["gpt_neox.embed_in"] == "cpu" and data["device_map"]["lm_head"] == "disk"
    # offloaded: the modules whose weights accelerate copies in at each forward (a disk entry with no weights, the
    # rotary embedding, has nothing to copy)
    assert sorted(data["offloaded"]) == sorted(
        k
        for k, v in pipe.model.hf_device_map.items()
        if v == "disk" and any(True for _ in pipe.model.get_submodule(k).parameters())
    )
    assert data["main_device"] == "cpu" and set(data["execution_devices"]) == set(data["device_map"])
    assert 0 < data["bytes_per_device"]["cpu"] and 0 < data["bytes_per_device"]["disk"]
    assert data["hooks"]["count"] > 0 and data["hooks"]["offloading_modules"] > 0
    assert data["hooks"]["classes"].get("AlignDevicesHook")
    assert data["max_memory"]["cpu"] == 16_000_000  # what accelerate's infer_auto_device_map was given
    assert "offloaded" in data["reason"]
    output = pipe("Hi", max_new_tokens=3, do_sample=False)
    reference = transformers.AutoModelForCausalLM.from_pretrained(folder).eval()
    ids = pipe.tokenizer("Hi", return_tensors="pt")["input_ids"]
    expected = reference.generate(ids, max_new_tokens=3, do_sample=False)[0, ids.shape[1] :]
    assert [s.data["token_id"] for s in pipe.trace.filter("generation", "step")] == expected.tolist()
    assert output[0]["generated_text"].startswith("Hi")


MODELING_CODE = """from transformers import LlamaConfig, LlamaForCausalLM


class ShoutConfig(LlamaConfig):
    model_type = "shout_llama"


class ShoutForCausalLM(LlamaForCausalLM):
    config_class = ShoutConfig
"""


@pytest.mark.parametrize(
    "argument, fix", [({"quantization": "int8"}, "quantization_config"), ({"adapter": "some/folder"}, "adapter folder")]
)
def test_explains_own_quantization_and_adapter_are_refused_naming_transformers_way(argument, fix):
    with pytest.raises(ArgumentError, match=fix):
        explain.pipeline("text-generation", model="any/model", backend="transformers", **argument)


def test_a_peft_adapter_loads_as_transformers_loads_it(tiny_llama, tmp_path):
    """A LoRA adapter folder (adapter_config.json naming a local base model): transformers loads the base, then the
    adapter (PeftAdapterMixin); the traced pipeline generates what transformers.pipeline generates, weights/load
    names the base's file and the adapter's settings, and weights/adapter the adapter's folder."""
    peft = pytest.importorskip("peft")
    base = transformers.LlamaForCausalLM.from_pretrained(tiny_llama.folder)
    torch.manual_seed(1)
    lora = peft.get_peft_model(
        base, peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    )  # random B: the adapter changes logits
    folder = tmp_path / "adapter"
    lora.save_pretrained(folder)
    tiny_llama.tokenizer.save(folder)
    settings = json.loads((folder / "adapter_config.json").read_text())
    (folder / "adapter_config.json").write_text(json.dumps(dict(settings, base_model_name_or_path=tiny_llama.folder)))
    reference = transformers.pipeline("text-generation", model=str(folder))
    pipe = explain.pipeline("text-generation", model=str(folder), backend="transformers")
    kwargs = dict(max_new_tokens=6, do_sample=False)
    assert pipe("Hello", **kwargs) == reference("Hello", **kwargs)
    plain = transformers.pipeline("text-generation", model=tiny_llama.folder)
    assert pipe("Hello", **kwargs) != plain("Hello", **kwargs)  # the adapter is in the forward
    (weights,) = pipe.trace.filter("weights", "load")
    assert weights.data["files"] == ["model.safetensors"]  # the base model's; the adapter's file has its own event
    (adapter,) = pipe.trace.filter("weights", "adapter")
    assert adapter.data["path"] == str(folder) and adapter.data["r"] == 4 and adapter.data["layers"] == 4  # 2 x q, v
    assert weights.data["adapters"] == {
        "default": {
            "peft_type": "LORA",
            "r": 4,
            "lora_alpha": 8,
            "target_modules": ["q_proj", "v_proj"],
            "base_model": tiny_llama.folder,
        }
    }
    assert weights.data["parameters"] == sum(p.numel() for p in pipe.model.parameters())


def test_remote_code_runs_when_asked_and_is_marked(tiny_llama, tmp_path):
    """A folder whose config names its own Python code (auto_map): the transformers backend refuses it as
    transformers does, unless trust_remote_code=True; then transformers imports that code, and the trace, its
    events and the dashboard say that remote code ran."""
    folder = tmp_path / "shout"
    shutil.copytree(tiny_llama.folder, folder)
    (folder / "modeling_shout.py").write_text(MODELING_CODE)
    config = json.loads((folder / "config.json").read_text())
    config.update(
        model_type="shout_llama",
        architectures=["ShoutForCausalLM"],
        auto_map={
            "AutoConfig": "modeling_shout.ShoutConfig",
            "AutoModelForCausalLM": "modeling_shout.ShoutForCausalLM",
        },
    )
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ExplainError, match="trust_remote_code=True"):
        explain.pipeline("text-generation", model=str(folder), backend="transformers")
    pipe = explain.pipeline("text-generation", model=str(folder), backend="transformers", trust_remote_code=True)
    assert type(pipe.model).__name__ == "ShoutForCausalLM" and type(pipe.model).__module__.startswith(
        "transformers_modules"
    )
    weights = pipe.trace.filter("weights", "load")[0].data
    assert weights["remote_code"] is True and weights["source_file"].endswith("modeling_shout.py")
    assert pipe.trace.filter("config", "config")[0].data["remote_code"] is True
    assert pipe.trace.meta["remote_code"] is True
    pipe("Hi", max_new_tokens=2, do_sample=False)
    dashboard = Dashboard(pipe)
    try:
        assert "remote code ran" in dashboard.header.value and "modeling_shout.py" in dashboard.header.value
    finally:
        dashboard.close()


def test_remote_code_flag_without_remote_code(folders):
    """trust_remote_code=True: the explain backend refuses it; the transformers backend passes it to transformers
    (a folder without code loads transformers' own classes, so no remote code ran, and the trace says so)."""
    with pytest.raises(UnsupportedError, match="trust_remote_code"):
        explain.pipeline("text-generation", model=folders["opt"], trust_remote_code=True)
    pipe = explain.pipeline("text-generation", model=folders["opt"], backend="transformers", trust_remote_code=True)
    assert pipe.trace.filter("registry", "lookup")[0].data["trust_remote_code"] is True
    assert (
        pipe.trace.meta["remote_code"] is False and pipe.trace.filter("weights", "load")[0].data["remote_code"] is False
    )


# -- bad input: an ExplainError naming the fix, nothing written into the cache ------------------------------------


@pytest.fixture
def untouched_cache(provisioned, cache_listing):
    before = cache_listing()
    yield
    assert cache_listing() == before, "a failed load wrote into the Hugging Face cache"


@pytest.fixture
def broken(folders, tmp_path):
    copy = tmp_path / "model"
    shutil.copytree(folders["opt"], copy)
    return copy


def refused(error_class, *words, **arguments) -> str:
    with pytest.raises(error_class) as caught:
        explain.pipeline(backend="transformers", **arguments)
    message = str(caught.value)
    for word in words:
        assert word in message, f"{word!r} not in: {message}"
    return message


@pytest.mark.usefixtures("untouched_cache")
class TestBadInput:
    def test_unknown_task(self):
        refused(
            UnknownTaskError,
            "Unknown task 'text_generation'",
            "Did you mean 'text-generation'",
            task="text_generation",
            model="someone/model",
        )

    def test_task_explain_does_not_trace(self, folders):
        refused(
            UnsupportedError,
            "'text-classification'",
            "explain traces text-generation",
            task="text-classification",
            model=folders["opt"],
        )

    def test_repo_not_in_the_cache_while_offline(self):
        refused(
            NotCachedError,
            "someone/missing-model",
            "Hugging Face cache",
            "pass a local folder",
            model="someone/missing-model",
        )

    def test_truncated_config_json(self, broken):
        (broken / "config.json").write_text('{"model_type": "opt", "hidden_')
        refused(CorruptFileError, "truncated or corrupt", "download it again", model=str(broken))

    def test_truncated_safetensors(self, broken):
        path = broken / "model.safetensors"
        path.write_bytes(path.read_bytes()[:100])
        refused(CorruptFileError, "truncated or corrupt", model=str(broken))

    def test_missing_weights(self, broken):
        os.remove(broken / "model.safetensors")
        refused(ExplainError, "model.safetensors", model=str(broken))

    def test_unknown_architecture(self, broken):
        config = json.loads((broken / "config.json").read_text())
        config.update(model_type="not-a-model", architectures=["NotAModelForCausalLM"])
        (broken / "config.json").write_text(json.dumps(config))
        refused(UnsupportedError, "architecture", "trust_remote_code=True", model=str(broken))

    def test_cuda_on_a_machine_without_it(self, folders):
        if torch.cuda.is_available():
            pytest.skip("this machine has CUDA")
        refused(ExplainError, "cuda", 'device="cpu"', model=folders["opt"], device="cuda")

    def test_unknown_dtype(self, folders):
        refused(ExplainError, "unknown dtype 'float33'", model=folders["opt"], dtype="float33")

    def test_pipeline_class_is_explains(self, folders):
        refused(ExplainError, "pipeline_class", model=folders["opt"], pipeline_class=object)

    def test_bad_generation_setting(self, pipes):
        with pytest.raises(ExplainError, match="do_sample=False"):
            pipes["opt"]("Hi", do_sample=True, temperature=0, max_new_tokens=2)


def test_cli_generate_with_the_transformers_backend(folders, pipes, tmp_path):
    import subprocess
    import sys

    trace_file = tmp_path / "run.json"
    expected = pipes["falcon"]("Hello", do_sample=False, max_new_tokens=5)[0]["generated_text"]
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "explain",
            "generate",
            "Hello",
            "--model",
            folders["falcon"],
            "--backend",
            "transformers",
            "--max-new-tokens",
            "5",
            "--steps",
            "--save-trace",
            str(trace_file),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
    )
    assert run.returncode == 0, run.stderr[-3000:]
    out = run.stdout
    assert out.startswith("backend transformers: FalconForCausalLM from ") and "modeling_falcon.py" in out
    assert expected in out
    for stage in ("registry", "config", "tokenizer", "weights", "placement", "tokenization", "generation", "decoding"):
        assert f" {stage} " in out, f"no {stage} line in the timeline:\n{out}"
    saved = explain.Trace.load(trace_file)
    assert saved.meta["backend"] == "transformers" and len(saved.filter("generation", "step", saved.run)) == 5
