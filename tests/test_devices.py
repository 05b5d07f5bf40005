"""Device handling, tested without a GPU.

- Every model file creates its tensors on the device of its inputs: a forward on the meta device (weights and ids
  on meta) must not produce one tensor on the CPU (a `torch.tensor(...)` or mask built without device= would, and
  on a GPU that is a host-to-device copy per step, or an error).
- Placement with accelerate's hooks: a module offloaded by dispatch_model keeps its weights elsewhere (its
  parameters become meta tensors) and runs on the main device; the placement facts say so, and generation still
  finds where its inputs go. On this machine the offload goes to disk and runs on the CPU: the same hooks that
  keep a GPU model's "cpu" modules in CPU RAM and run them on the GPU.
- device_map="auto" gets the map transformers' from_pretrained computes (its headroom and GPU balancing), for GPU
  budgets this machine does not have (accelerate plans for any device names; nothing is moved).
"""

from __future__ import annotations

import pytest
import torch
from accelerate import dispatch_model, init_empty_weights
from torch.utils._python_dispatch import TorchDispatchMode

import explain
from explain import models
from explain.models.cache import KVCache
from explain.stages.placement import execution, input_device, plan
from explain.trace import Trace

SMALL = dict(
    vocab_size=100,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=64,
    bos_token_id=1,
    eos_token_id=2,
    rms_norm_eps=1e-6,
)
CONFIGS = {
    "llama3-rope": dict(
        SMALL,
        architectures=["LlamaForCausalLM"],
        model_type="llama",
        rope_scaling={
            "rope_type": "llama3",
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 16,
        },
    ),
    "mistral": dict(SMALL, architectures=["MistralForCausalLM"], model_type="mistral", sliding_window=48),
    "qwen2": dict(SMALL, architectures=["Qwen2ForCausalLM"], model_type="qwen2"),
    "qwen3": dict(SMALL, architectures=["Qwen3ForCausalLM"], model_type="qwen3", head_dim=32),
    "smollm3": dict(SMALL, architectures=["SmolLM3ForCausalLM"], model_type="smollm3", num_hidden_layers=4),
    "gpt2": dict(
        architectures=["GPT2LMHeadModel"],
        model_type="gpt2",
        n_layer=2,
        n_embd=64,
        n_head=4,
        vocab_size=100,
        n_positions=64,
    ),
}


class DevicesOfResults(TorchDispatchMode):
    """Records every operator whose result lands on a device other than `expected`."""

    def __init__(self, expected: str):
        super().__init__()
        self.expected, self.strays = expected, list[str]()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(tensor, torch.Tensor) and tensor.device.type != self.expected:
                self.strays.append(f"{func} -> {tensor.device} {tuple(tensor.shape)}")
        return out


@pytest.mark.parametrize("name", list(CONFIGS))
def test_every_tensor_of_a_forward_is_made_on_the_inputs_device(name):
    config = CONFIGS[name]
    cls = models.model_class(config)
    with torch.device("meta"):
        model = cls(cls.config_class.from_dict(config)).eval()
    assert {p.device.type for p in model.parameters()} == {"meta"}
    ids = torch.zeros(1, 6, dtype=torch.long, device="meta")
    with torch.inference_mode(), DevicesOfResults("meta") as seen:
        cache = KVCache()
        model(ids[:, :4], cache=cache)  # prefill
        model(ids[:, 4:5], cache=cache, logits_to_keep=1)  # one decode step
        model(ids[:, :3], cache=KVCache(), output_attentions=True)  # the eager path the views use
        chunk = KVCache()
        model(ids[:, :2], cache=chunk)
        out = model(ids[:, 2:5], cache=chunk)  # several new queries after a cached prefix: the mask path
    assert out.logits.device.type == "meta" and out.logits.shape[:2] == (1, 3)
    assert seen.strays == [], f"{name}: tensors made off the inputs' device:\n" + "\n".join(seen.strays)


# -- placement with accelerate's hooks -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny(tiny_llama):
    """explain's pipeline on the session's tiny Llama (2 layers, CPU, float32)."""
    return explain.pipeline(model=tiny_llama.folder)


def dispatched_copy(pipe, device_map: dict, folder) -> torch.nn.Module:
    """A second copy of the pipeline's model, dispatched by accelerate with `device_map` (disk: offloaded)."""
    cls = type(pipe.model)
    model = cls(pipe.model.config).eval()
    model.load_state_dict(pipe.model.state_dict())
    return dispatch_model(model, device_map=device_map, offload_dir=str(folder))


def test_offloaded_modules_run_on_the_main_device_and_placement_says_so(tiny, tmp_path):
    device_map = {
        "model.embed_tokens": "disk",
        "model.layers.0": "cpu",
        "model.layers.1": "disk",
        "model.norm": "cpu",
        "model.rotary_emb": "cpu",
        "lm_head": "disk",
    }
    model = dispatched_copy(tiny, device_map, tmp_path)
    # the first parameter is an offloaded meta tensor: inputs must still go where the hooks run the model
    assert next(model.parameters()).device.type == "meta"
    assert input_device(model) == torch.device("cpu")
    facts = execution(model, device_map)
    assert facts["main_device"] == "cpu"
    assert facts["offloaded"] == ["model.embed_tokens", "model.layers.1", "lm_head"]
    assert facts["execution_devices"] == dict.fromkeys(device_map, "cpu")
    assert all(p.device.type == "cpu" for p in model.model.layers[0].parameters())


def test_generation_on_an_offloaded_model_equals_the_plain_one(tiny, tmp_path):
    from explain.generation import Generation
    from explain.generation.settings import resolve

    device_map = {
        "model.embed_tokens": "disk",
        "model.layers.0": "cpu",
        "model.layers.1": "disk",
        "model.norm": "cpu",
        "model.rotary_emb": "cpu",
        "lm_head": "cpu",
    }
    model = dispatched_copy(tiny, device_map, tmp_path)
    ids = tiny.tokenizer.encode("The quick brown fox")
    settings, _ = resolve(
        {"max_new_tokens": 6, "do_sample": False},
        tiny.generation_config,
        tiny.generation_config_source,
        len(ids),
        128,
        tiny.tokenizer.pad_token_id,
    )
    first, second = Trace(), Trace()
    plain = Generation(tiny.model, tiny.tokenizer, ids, settings, first, first.new_run()).run()
    offloaded = Generation(model, tiny.tokenizer, ids, settings, second, second.new_run()).run()
    assert offloaded.device == torch.device("cpu")
    assert offloaded.generated_ids == plain.generated_ids
    assert [s["logits_top"] for s in offloaded.steps] == [s["logits_top"] for s in plain.steps]


def test_one_device_needs_no_hooks(tiny):
    data = tiny.trace.last("placement", "place").data
    assert data["main_device"] == "cpu" and data["offloaded"] == []
    assert data["execution_devices"] == {"": "cpu"}


# -- device_map="auto" as transformers computes it -----------------------------------------------------------------
LLAMA_8B = "meta-llama--Llama-3.1-8B-Instruct.json"
GiB = 2**30


def llama_8b_config() -> dict:
    import json
    import os

    with open(os.path.join(os.path.dirname(explain.__file__), "data", "configs", LLAMA_8B)) as f:
        return json.load(f)


def transformers_meta(config: dict):
    import transformers

    hf_config = transformers.LlamaConfig(**{k: v for k, v in config.items() if k != "model_type"})
    with torch.device("meta"):
        return transformers.AutoModelForCausalLM.from_config(hf_config, dtype=torch.bfloat16)


@pytest.fixture
def gpus_here(monkeypatch):
    """Let placement name CUDA devices (it checks they exist before planning); nothing is moved in these tests."""
    import explain.stages.placement as placement

    monkeypatch.setattr(placement, "_available", lambda device: (True, ""))


@pytest.mark.parametrize(
    "max_memory, strategy",
    [
        ({0: 12 * GiB, "cpu": 60 * GiB}, "auto"),  # the benchmark's offload: part of the model on the CPU
        ({0: 6 * GiB, 1: 9 * GiB, 2: 9 * GiB, "cpu": 20 * GiB}, "auto"),  # balanced over three GPUs
        ({0: 6 * GiB, 1: 9 * GiB, "cpu": 20 * GiB}, "sequential"),
        ({0: 6 * GiB, 1: 9 * GiB, "cpu": 20 * GiB}, "balanced_low_0"),
    ],
)
def test_placement_plans_what_from_pretrained_plans(gpus_here, max_memory, strategy):
    import transformers.integrations.accelerate as hf_accelerate

    config = llama_8b_config()
    cls = models.model_class(config)
    with init_empty_weights():
        skeleton = cls(cls.config_class.from_dict(config))
    facts = plan(skeleton, torch.bfloat16, device_map=strategy, max_memory=dict(max_memory))
    expected = dict(hf_accelerate._get_device_map(transformers_meta(config), strategy, dict(max_memory), None))
    assert facts["device_map"] == expected
    assert len(set(expected.values())) > 1  # a map worth comparing


def test_placement_keeps_transformers_headroom_when_no_max_memory_is_given(gpus_here, monkeypatch):
    """One 16 GiB GPU, no max_memory: transformers plans with 90% of it (and 90% of the CPU RAM); a plan with
    all of it would put more layers on the GPU than from_pretrained does."""
    import transformers.integrations.accelerate as hf_accelerate

    import explain.stages.placement as placement

    memory = {0: 16 * GiB, "cpu": 64 * GiB}
    real = hf_accelerate.accelerate_max_memory
    monkeypatch.setattr(
        hf_accelerate,
        "accelerate_max_memory",
        lambda max_memory=None: dict(memory) if max_memory is None else real(max_memory),
    )
    monkeypatch.setattr(
        placement, "get_max_memory", lambda max_memory=None: dict(memory) if max_memory is None else real(max_memory)
    )
    config = llama_8b_config()
    cls = models.model_class(config)
    with init_empty_weights():
        skeleton = cls(cls.config_class.from_dict(config))
    facts = plan(skeleton, torch.bfloat16, device_map="auto")
    expected = dict(hf_accelerate._get_device_map(transformers_meta(config), "auto", None, None))
    assert facts["device_map"] == expected and "cpu" in expected.values()
    assert facts["budget"][0] == pytest.approx(0.9 * memory[0]) and facts["max_memory"] == memory
    assert any("10%" in step for step in facts["headroom"])
