"""explain.plan_device_map against the references: accelerate's infer_auto_device_map and compute_module_sizes
called directly on a meta model, transformers' from_pretrained(device_map="auto").hf_device_map on a tiny
checkpoint, transformers' own _get_device_map on the shipped configs and hardware profiles, and the published
parameter counts of the shipped configs."""

from __future__ import annotations

import json
import os

import pytest
import torch
from accelerate import init_empty_weights
from accelerate.utils import CustomDtype, compute_module_sizes, infer_auto_device_map

import explain
from explain.__main__ import main
from explain.device_plan import Plan, plan_device_map, profiles, shipped
from explain.device_plan.memory import HardwareError, parse_max_memory
from explain.device_plan.source import ModelSourceError
from explain.models import model_class

GiB = 2**30
CONFIGS = os.path.join(os.path.dirname(explain.__file__), "data", "configs")


def shipped_config(repo: str) -> dict:
    with open(os.path.join(CONFIGS, repo.replace("/", "--") + ".json")) as f:
        return json.load(f)


def meta_model(config: dict):
    """The test's own meta model: explain's class under accelerate's init_empty_weights, tied as transformers ties."""
    cls = model_class(config)
    with init_empty_weights():
        model = cls(cls.config_class.from_dict(config))
    if config.get("tie_word_embeddings", cls.config_class.tie_word_embeddings):
        for target, source in cls.tied_weights.items():
            owner, _, name = target.rpartition(".")
            setattr(model.get_submodule(owner), name, model.get_parameter(source))
    return model


# -- the map is accelerate's -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "repo, dtype, max_memory, strategy",
    [
        (
            "meta-llama/Llama-3.1-8B",
            torch.bfloat16,
            {0: 8 * GiB, "cpu": 30 * GiB},
            "auto",
        ),  # one GPU: nothing to balance
        ("meta-llama/Llama-3.1-8B", torch.float32, {0: 8 * GiB, 1: 8 * GiB, "cpu": 10 * GiB}, "sequential"),
        ("HuggingFaceTB/SmolLM2-135M", torch.float32, {"cpu": 200 * 2**20, "disk": 10 * GiB}, "auto"),  # tied
        ("openai-community/gpt2", torch.float16, {0: 100 * 2**20, "cpu": GiB}, "auto"),
        ("Qwen/Qwen2.5-0.5B", torch.bfloat16, {"mps": 600 * 2**20}, "auto"),
    ],
)
def test_device_map_and_sizes_are_accelerates(repo, dtype, max_memory, strategy):
    config = shipped_config(repo)
    model = meta_model(config)
    layer = [type(m).__name__ for m in model.modules() if type(m).__name__.endswith(("DecoderLayer", "Block"))][0]
    expected = infer_auto_device_map(model, max_memory=dict(max_memory), no_split_module_classes=[layer], dtype=dtype)
    plan = plan_device_map(repo, max_memory=max_memory, dtype=str(dtype), strategy=strategy)
    assert plan.device_map == dict(expected)
    assert plan.module_sizes == dict(compute_module_sizes(model, dtype=dtype))
    assert plan.no_split_module_classes == [layer]


@pytest.mark.parametrize("dtype, quantised", [("int8", torch.int8), ("4bit", CustomDtype.INT4)])
def test_quantised_linear_weights_as_transformers_counts_them(dtype, quantised):
    config = shipped_config("meta-llama/Llama-3.1-8B")
    model = meta_model(config)
    special = {
        f"{name}.weight": quantised
        for name, m in model.named_modules()
        if isinstance(m, torch.nn.Linear) and name != "lm_head"
    }  # transformers keeps the LM head in 16 bit
    max_memory = {0: 6 * GiB, "cpu": 30 * GiB}
    plan = plan_device_map("meta-llama/Llama-3.1-8B", max_memory=max_memory, dtype=dtype)
    # bitsandbytes' adjust_max_memory keeps 10% of every device free
    assert plan.max_memory == {k: v * 0.9 for k, v in max_memory.items()}
    expected = infer_auto_device_map(
        model,
        max_memory=dict(plan.max_memory),
        no_split_module_classes=["LlamaDecoderLayer"],
        dtype=torch.bfloat16,
        special_dtypes=special,
    )
    assert plan.device_map == dict(expected)
    sizes = compute_module_sizes(model, dtype=torch.bfloat16, special_dtypes=special)
    assert plan.module_sizes == dict(sizes)
    per_weight = {"int8": 1, "4bit": 0.5}[dtype]
    assert plan.module_sizes["model.layers.0.mlp.up_proj"] == 4096 * 14336 * per_weight
    assert plan.module_sizes["model.embed_tokens"] == 128256 * 4096 * 2  # embeddings stay 16-bit
    assert plan.module_sizes["lm_head"] == 128256 * 4096 * 2


# -- the map is transformers' ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def transformers_folders(tmp_path_factory):
    """Tiny Llamas written by transformers: untied and tied (8 layers, so a budget can cut between layers)."""
    import transformers

    folders = {}
    for tied in (False, True):
        config = transformers.LlamaConfig(
            vocab_size=512,
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=8,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=128,
            tie_word_embeddings=tied,
        )
        torch.manual_seed(0)
        folder = tmp_path_factory.mktemp(f"tiny-llama-tied-{tied}")
        transformers.LlamaForCausalLM(config).save_pretrained(folder)
        folders[tied] = str(folder)
    return folders


@pytest.mark.parametrize("tied", [False, True])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("fraction", [0.3, 0.65])
def test_device_map_equals_from_pretrained(transformers_folders, tmp_path, tied, dtype, fraction):
    # This machine has no GPU, so the budget is CPU RAM plus disk, small enough that the later layers go to disk.
    # transformers accepts such a CPU-only map: it needs an offload_folder only for weights it must re-save, and the
    # disk-offloaded safetensors are read in place. (Without a "disk" entry accelerate appends one anyway.)
    import transformers

    folder = transformers_folders[tied]
    total = plan_device_map(folder, max_memory={"cpu": 10 * GiB}, dtype=dtype).module_sizes[""]
    max_memory = {"cpu": int(total * fraction), "disk": 10 * GiB}
    plan = plan_device_map(folder, max_memory=max_memory, dtype=dtype)
    model = transformers.AutoModelForCausalLM.from_pretrained(
        folder,
        device_map="auto",
        max_memory=dict(max_memory),
        offload_folder=str(tmp_path),
        dtype=getattr(torch, dtype),
    )
    assert plan.device_map == model.hf_device_map
    assert set(plan.device_map.values()) == {"cpu", "disk"}  # a map worth comparing


def transformers_meta(repo: str):
    import transformers

    config = shipped_config(repo)
    hf_config = transformers.CONFIG_MAPPING[config["model_type"]](
        **{k: v for k, v in config.items() if k != "model_type"}
    )
    with torch.device("meta"):  # from_pretrained builds the model the same way, in the dtype asked for
        return transformers.AutoModelForCausalLM.from_config(hf_config, dtype=torch.bfloat16)


@pytest.mark.parametrize(
    "repo, hardware",
    [
        ("meta-llama/Llama-3.1-8B", "colab-t4"),
        ("meta-llama/Llama-3.1-8B", "apple-m-16gb"),
        ("meta-llama/Llama-3.1-70B", "2x-a100-80gb"),
        ("meta-llama/Llama-3.1-70B", "8x-a100-80gb"),
        ("Qwen/Qwen2.5-7B", "2x-a100-80gb"),
        ("HuggingFaceTB/SmolLM2-1.7B", "cpu-8gb"),
        ("openai-community/gpt2", "2x-a100-80gb"),
    ],
)
def test_hardware_profile_equals_transformers_get_device_map(monkeypatch, repo, hardware):
    """On the profile's machine, from_pretrained(device_map=...) with no max_memory: transformers asks accelerate's
    get_max_memory() for the free memory (here: the profile's), keeps headroom, balances the GPUs, then places."""
    import transformers.integrations.accelerate as hf_accelerate

    real = hf_accelerate.accelerate_max_memory
    memory = profiles()[hardware]["memory"]
    monkeypatch.setattr(
        hf_accelerate,
        "accelerate_max_memory",
        lambda max_memory=None: dict(memory) if max_memory is None else real(max_memory),
    )
    model = transformers_meta(repo)
    for strategy in ("auto", "balanced_low_0", "sequential"):
        expected = dict(hf_accelerate._get_device_map(model, strategy, None, None))
        expected.pop("transformer.drop", None)  # transformers' GPT-2 has a Dropout module (no weights); explain's not
        plan = plan_device_map(repo, hardware=hardware, dtype="bfloat16", strategy=strategy)
        assert plan.device_map == expected, strategy


def test_explicit_multi_gpu_max_memory_equals_transformers():
    import transformers.integrations.accelerate as hf_accelerate

    model = transformers_meta("meta-llama/Llama-3.1-8B")
    max_memory = {0: 6 * GiB, 1: 9 * GiB, 2: 9 * GiB, "cpu": 20 * GiB}
    expected = hf_accelerate._get_device_map(model, "auto", dict(max_memory), None)
    plan = plan_device_map("meta-llama/Llama-3.1-8B", max_memory=max_memory, dtype="bf16")
    assert plan.device_map == dict(expected)


# -- sizes, parameters, KV cache ---------------------------------------------------------------------------------------
PUBLISHED = {  # parameters, as the model cards and the Hub count them
    "meta-llama/Llama-3.1-8B": 8.03e9,
    "meta-llama/Llama-3.1-8B-Instruct": 8.03e9,
    "meta-llama/Llama-3.1-70B": 70.55e9,
    "meta-llama/Llama-3.1-70B-Instruct": 70.55e9,
    "mistralai/Mistral-7B-v0.1": 7.24e9,
    "mistralai/Mistral-7B-Instruct-v0.3": 7.25e9,
    "Qwen/Qwen2.5-7B": 7.62e9,
    "Qwen/Qwen2.5-7B-Instruct": 7.62e9,
    "Qwen/Qwen2.5-0.5B": 0.494e9,
    "Qwen/Qwen2.5-0.5B-Instruct": 0.494e9,
    "HuggingFaceTB/SmolLM2-135M": 134.5e6,
    "HuggingFaceTB/SmolLM2-135M-Instruct": 134.5e6,
    "HuggingFaceTB/SmolLM2-360M": 361.8e6,
    "HuggingFaceTB/SmolLM2-360M-Instruct": 361.8e6,
    "HuggingFaceTB/SmolLM2-1.7B": 1.71e9,
    "HuggingFaceTB/SmolLM2-1.7B-Instruct": 1.71e9,
    "HuggingFaceTB/SmolLM3-3B": 3.08e9,
    "openai-community/gpt2": 124.4e6,
}


def test_every_shipped_config_has_a_published_count():
    assert set(shipped()) == set(PUBLISHED)


@pytest.mark.parametrize("repo", sorted(PUBLISHED))
def test_parameter_counts_match_published_sizes(repo):
    plan = plan_device_map(repo, max_memory={"cpu": 2000 * GiB})
    assert plan.parameters == pytest.approx(PUBLISHED[repo], rel=0.01)  # a tied embedding counted twice fails this
    assert plan.module_sizes[""] == sum(u["bytes"] for u in plan.units)


def test_tied_embeddings_are_counted_once():
    plan = plan_device_map("HuggingFaceTB/SmolLM2-135M", max_memory={"cpu": 10 * GiB}, dtype="float32")
    assert plan.parameters == 134_515_008
    head = next(u for u in plan.units if u["name"] == "lm_head")
    assert head["bytes"] == 0 and head["tied_to"] == "model.embed_tokens" and head["parameters"] == 0
    assert "tied: shares model.embed_tokens" in str(plan)


def test_kv_cache_formula_and_where_it_lives():
    plan = plan_device_map("meta-llama/Llama-3.1-8B-Instruct", hardware="colab-t4", dtype="bfloat16", context=4096)
    kv = plan.kv_cache
    assert kv["bytes"] == 2 * 32 * 8 * 128 * 2 * 4096 * 1 == 512 * 2**20
    # the layers offloaded to cpu run on cuda:0 (accelerate's hooks), so their cache is there too
    assert set(kv["per_device"]) == {0} and any(u["device"] == "cpu" and u["layer"] for u in plan.units)
    assert (
        plan_device_map("meta-llama/Llama-3.1-8B", hardware="colab-t4", context=1024, batch=4).kv_cache["bytes"]
        == kv["bytes"]
    )
    gpt2 = plan_device_map("gpt2", hardware="cpu-16gb")  # default context: min(4096, n_positions)
    assert gpt2.kv_cache["context"] == 1024 and gpt2.kv_cache["bytes"] == 2 * 12 * 12 * 64 * 4 * 1024
    mistral = plan_device_map("mistralai/Mistral-7B-v0.1", hardware="a100-80gb", context=16384)
    assert mistral.kv_cache["bytes"] == 2 * 32 * 8 * 128 * 2 * 4096  # a sliding window of 4096 caps the cache


def test_headroom_as_transformers_keeps_it():
    plan = plan_device_map("meta-llama/Llama-3.1-8B", hardware="colab-t4", dtype="bf16")
    assert plan.memory == {0: 15 * GiB, "cpu": 12 * GiB}
    assert plan.max_memory == {0: 15 * GiB * 0.9, "cpu": 12 * GiB * 0.9}
    given = plan_device_map("meta-llama/Llama-3.1-8B", max_memory={0: "15GiB", "cpu": "12GiB"}, dtype="bf16")
    assert given.max_memory == given.memory == {0: 15 * GiB, "cpu": 12 * GiB}  # an explicit budget is taken as is


# -- verdicts and suggestions ------------------------------------------------------------------------------------------
def test_fits_offloads_and_does_not_fit():
    assert plan_device_map("HuggingFaceTB/SmolLM2-135M", hardware="colab-t4").status == "fits"
    offloaded = plan_device_map("meta-llama/Llama-3.1-8B", hardware="colab-t4", dtype="bfloat16")
    assert offloaded.status == "fits with cpu offload" and offloaded.fits
    assert offloaded.suggestions[0] == {**offloaded.suggestions[0], "change": "dtype='int8'", "status": "fits"}


def test_a_model_that_fits_nowhere_says_so_with_the_smallest_fix():
    plan = plan_device_map("meta-llama/Llama-3.1-70B", hardware="cpu-8gb", dtype="bfloat16")
    assert plan.status == "does not fit" and not plan.fits
    assert plan.device_bytes["disk"] > 100 * GiB
    assert "go to disk" in plan.reasons[0]
    first = plan.suggestions[0]
    assert first["fits"] and first["change"].startswith("hardware=")
    again = plan_device_map("meta-llama/Llama-3.1-70B", dtype="bfloat16", **first["arguments"])  # it was re-planned
    assert again.status == "fits"
    assert plan.suggestions[-1]["change"] == "offload to disk"
    text = str(plan)
    assert "DOES NOT FIT" in text and "smallest change first" in text and first["change"] in text


def test_kv_cache_overflow_suggests_a_shorter_context():
    plan = plan_device_map(
        "meta-llama/Llama-3.1-8B", max_memory={0: "17GiB", "cpu": "1GiB"}, dtype="bf16", context=131072, batch=1
    )
    assert not plan.device_bytes.get("disk") and plan.status == "does not fit"
    assert "KV cache" in " ".join(plan.reasons)
    first = plan.suggestions[0]
    assert first["change"].startswith("context=") and first["fits"]
    assert plan_device_map(
        "meta-llama/Llama-3.1-8B", max_memory={0: "17GiB", "cpu": "1GiB"}, dtype="bf16", **first["arguments"]
    ).fits


def test_explicit_max_memory_without_room_suggests_more_cpu():
    plan = plan_device_map("meta-llama/Llama-3.1-8B", max_memory={0: "8GiB", "cpu": "2GiB"}, dtype="bf16")
    assert plan.status == "does not fit"
    more_cpu = next(s for s in plan.suggestions if s["change"].startswith("max_memory cpu="))
    assert more_cpu["fits"]
    assert plan_device_map("meta-llama/Llama-3.1-8B", dtype="bf16", **more_cpu["arguments"]).fits


# -- bad input ---------------------------------------------------------------------------------------------------------
def test_unknown_profile_lists_the_profiles():
    with pytest.raises(HardwareError) as error:
        plan_device_map("gpt2", hardware="colab")
    message = str(error.value)
    assert "did you mean 'colab-t4'" in message
    assert all(name in message for name in profiles())


@pytest.mark.parametrize("bad", [{0: "8 gigs"}, "0:8GiB", {"gpu": "8GiB"}, {0: -1}, {0: "500mb"}, {}])
def test_malformed_max_memory_says_the_accepted_format(bad):
    with pytest.raises(HardwareError) as error:
        plan_device_map("gpt2", max_memory=bad)
    assert "GiB" in str(error.value) or "MiB" in str(error.value)  # the format, or the exact fix


def test_max_memory_formats():
    assert parse_max_memory("0=8GiB, cpu=500MB,disk=1TB") == {0: 8 * GiB, "cpu": 500 * 10**6, "disk": 10**12}
    assert parse_max_memory({"cpu": 1024, "cuda:1": "1.5KiB", "0": 5}) == {0: 5, 1: 1536, "cpu": 1024}


def test_unknown_model_says_how_to_provide_a_config(hf_home):
    with pytest.raises(ModelSourceError) as error:
        plan_device_map("nobody/no-such-model", hardware="colab-t4")
    message = str(error.value)
    assert "config.json" in message and "hf download nobody/no-such-model config.json" in message
    assert "meta-llama/Llama-3.1-8B" in message  # the shipped configs are listed


def test_bad_arguments():
    with pytest.raises(explain.ExplainError, match="not both"):
        plan_device_map("gpt2", hardware="colab-t4", max_memory={"cpu": 1})
    with pytest.raises(explain.ExplainError, match="strategy"):
        plan_device_map("gpt2", strategy="fastest")
    with pytest.raises(explain.ExplainError, match="dtype"):
        plan_device_map("gpt2", hardware="colab-t4", dtype="int3")


# -- other sources: the cache, a folder, a dict, a module, the real placement ------------------------------------------
def test_config_from_the_hf_cache_and_a_folder(hf_home, tmp_path):
    config = {**shipped_config("HuggingFaceTB/SmolLM2-135M"), "num_hidden_layers": 3}
    snapshot = os.path.join(hf_home, "hub", "models--someone--tiny", "snapshots", "a" * 40)
    os.makedirs(snapshot)
    with open(os.path.join(snapshot, "config.json"), "w") as f:
        json.dump(config, f)
    os.makedirs(os.path.join(hf_home, "hub", "models--someone--tiny", "refs"))
    with open(os.path.join(hf_home, "hub", "models--someone--tiny", "refs", "main"), "w") as f:
        f.write("a" * 40)
    cached = plan_device_map("someone/tiny", hardware="cpu-8gb")
    assert cached.where.startswith("Hugging Face cache") and sum(u["layer"] for u in cached.units) == 3
    with open(tmp_path / "config.json", "w") as f:
        json.dump(config, f)
    assert plan_device_map(str(tmp_path), hardware="cpu-8gb").device_map == cached.device_map
    assert plan_device_map(config, hardware="cpu-8gb").device_map == cached.device_map


def test_a_module_is_planned_as_it_is():
    config = {**shipped_config("HuggingFaceTB/SmolLM2-135M"), "num_hidden_layers": 4}
    module = model_class(config)(model_class(config).config_class.from_dict(config))  # real weights, float32
    plan = plan_device_map(module, max_memory={"cpu": "20MiB", "disk": "1GiB"})
    assert plan.dtype == "float32"
    assert plan.device_map == dict(
        infer_auto_device_map(
            module, max_memory={"cpu": 20 * 2**20, "disk": GiB}, no_split_module_classes=["LlamaDecoderLayer"]
        )
    )


def test_the_real_placement_renders_with_the_same_view(tmp_path):
    from types import SimpleNamespace

    from explain.stages.placement import place
    from explain.trace import Trace

    config = {**shipped_config("HuggingFaceTB/SmolLM2-135M"), "num_hidden_layers": 2, "vocab_size": 1000}
    cls = model_class(config)
    model = cls(cls.config_class.from_dict(config))
    state = {k: v.clone() for k, v in model.state_dict().items() if k != "lm_head.weight"}
    with init_empty_weights():
        empty = cls(cls.config_class.from_dict(config))
    trace = Trace()
    loaded = place(
        empty, state, torch.float32, trace, device_map="auto", max_memory={"cpu": "1GiB"}, tied=dict(cls.tied_weights)
    )
    event = trace.last("placement", "place")
    plan = Plan.from_event(event, model=loaded)
    assert plan.device_map == event.data["device_map"] and plan.hardware == "actual placement"
    assert plan.device_bytes == {"cpu": sum(p.numel() * 4 for p in loaded.parameters())}
    assert plan.kv_cache["per_device"] == {"cpu": 2 * 2 * 3 * 64 * 4 * 4096}
    pipe = SimpleNamespace(model=loaded, trace=trace, name_or_path="tiny")  # what plan_device_map reads of a pipeline
    assert plan_device_map(pipe).device_map == plan.device_map
    assert plan_device_map(pipe, hardware="cpu-8gb").hardware == "cpu-8gb"  # a pipeline's model, planned elsewhere
    trace.save(tmp_path / "trace.json")  # a saved trace, no model: the layer table the event carries
    replayed = Plan.from_event(Trace.load(tmp_path / "trace.json").last("placement", "place"))
    assert replayed.device_map == plan.device_map and "model.layers.0-1" in str(replayed)
    assert "<table>" in replayed._repr_html_()


# -- views -------------------------------------------------------------------------------------------------------------
def test_html_escapes_and_shows_bars_and_layers():
    config = {**shipped_config("HuggingFaceTB/SmolLM2-135M"), "_name_or_path": "<script>alert(1)</script>"}
    plan = plan_device_map(config, max_memory={0: "60MiB", "cpu": "1GiB"}, dtype="bf16")
    page = plan._repr_html_()
    assert "<script>alert" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert page.count('class="dev"') == 2  # a bar for cuda:0 and one for cpu
    assert "model.layers." in page and "cuda:0" in page and "cpu" in page
    assert "<script>alert(1)</script>" in str(plan)  # the terminal view prints the name as it is


def test_command_line(capsys):
    assert main(["plan", "gpt2", "--hardware", "colab-t4", "--dtype", "fp16", "--context", "512"]) == 0
    out = capsys.readouterr().out
    assert "Device plan for gpt2" in out and "FITS" in out and "512 tokens" in out
    assert main(["plan", "meta-llama/Llama-3.1-70B", "--max-memory", "0=8GiB,cpu=30GiB", "--dtype", "4bit"]) == 1
    assert "DOES NOT FIT" in capsys.readouterr().out
    assert main(["plan", "gpt2", "--max-memory", "0=8 gigs"]) == 2
    assert "'8 gigs' is not a size" in capsys.readouterr().err
