"""PEFT LoRA adapters (explain.adapters) give the outputs peft + transformers give on the same base and adapter.

Adapters are made here by peft itself (get_peft_model + save_pretrained) on the tiny random Llama and on the
embedded model; init_lora_weights=False makes B non-zero, so an adapter really changes the outputs.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import safetensors.torch
import torch
from tiny_files import make_lora

import explain
from explain.adapters import LoraLinear, load_adapter
from explain.errors import CorruptFileError, ExplainError, UnsupportedError

peft = pytest.importorskip("peft")
transformers = pytest.importorskip("transformers")

PROMPT = "Write a story about a cat"


make_adapter = make_lora  # peft's adapter on a copy of a model, saved to a folder (tests/tiny_files.py)


@pytest.fixture(scope="module")
def tiny_adapter(tiny_llama, tmp_path_factory):
    folder = tmp_path_factory.mktemp("lora")
    return str(folder), make_adapter(tiny_llama.model, folder)


def prompt_ids(tokenizer) -> torch.Tensor:
    return torch.tensor([tokenizer.encode(PROMPT)])  # (1, T)


def test_adapter_logits_equal_peft(tiny_llama, tiny_adapter):
    folder, peft_model = tiny_adapter
    pipe = explain.pipeline("text-generation", model=tiny_llama.folder, adapter=folder)
    ids = prompt_ids(tiny_llama.tokenizer)
    with torch.no_grad():
        expected, got = peft_model(ids).logits, pipe.model(ids).logits
        base = tiny_llama.model(ids).logits
    assert torch.allclose(got, expected, atol=1e-5, rtol=0)
    assert (got - base).abs().max() > 1e-2  # the adapter changes the outputs
    assert pipe.adapter.applied_with.startswith("peft ")
    assert "adapter=" in repr(pipe)


def test_adapter_generation_equals_peft(tiny_llama, tiny_adapter):
    folder, peft_model = tiny_adapter
    pipe = explain.pipeline("text-generation", model=tiny_llama.folder, adapter=folder)
    ids = prompt_ids(tiny_llama.tokenizer)
    expected = peft_model.generate(
        input_ids=ids,
        attention_mask=torch.ones_like(ids),
        max_new_tokens=8,
        do_sample=False,
        eos_token_id=None,
        pad_token_id=0,
    )[0, ids.shape[1] :].tolist()
    got = pipe(PROMPT, max_new_tokens=8, do_sample=False, eos_token_id=None, return_tensors=True)
    assert got[0]["generated_token_ids"][ids.shape[1] :] == expected


def test_readable_lora_equals_peft(tiny_llama, tiny_adapter):
    folder, peft_model = tiny_adapter
    pipe = explain.pipeline("text-generation", model=tiny_llama.folder)
    adapter = load_adapter(pipe.model, folder, pipe.trace, apply_with="explain")
    assert isinstance(pipe.model.model.layers[0].self_attn.q_proj, LoraLinear)
    ids = prompt_ids(tiny_llama.tokenizer)
    with torch.no_grad():
        assert torch.allclose(pipe.model(ids).logits, peft_model(ids).logits, atol=1e-5, rtol=0)
    layer = pipe.model.model.layers[1].mlp.down_proj
    reference = peft_model.base_model.model.model.layers[1].mlp.down_proj
    assert torch.allclose(layer.delta_weight(), reference.get_delta_weight("default"), atol=1e-6)
    assert "LoraLinear" in adapter.applied_with


@pytest.mark.parametrize(
    "options", [{"use_rslora": True}, {"alpha_pattern": {"down_proj": 2}, "rank_pattern": {"q_proj": 2}}]
)
def test_lora_options_equal_peft(tiny_llama, tmp_path, options):
    peft_model = make_adapter(tiny_llama.model, tmp_path, **options)
    ids = prompt_ids(tiny_llama.tokenizer)
    with torch.no_grad():
        expected = peft_model(ids).logits
        for apply_with in ("peft", "explain"):
            pipe = explain.pipeline("text-generation", model=tiny_llama.folder)
            load_adapter(pipe.model, str(tmp_path), pipe.trace, apply_with=apply_with)
            assert torch.allclose(pipe.model(ids).logits, expected, atol=1e-5, rtol=0), apply_with


def test_adapter_event(tiny_llama, tiny_adapter):
    folder, _ = tiny_adapter
    pipe = explain.pipeline("text-generation", model=tiny_llama.folder, adapter=folder)
    (event,) = pipe.trace.filter("weights", "adapter", run=0)
    data = event.data
    assert data["r"] == 4 and data["lora_alpha"] == 8 and data["layers"] == 2 * 3
    assert data["target_modules"] == ["down_proj", "q_proj", "v_proj"]
    q = next(m for m in data["modules"] if m["module"] == "model.layers.0.self_attn.q_proj")
    assert q["parameters"] == 4 * 32 + 32 * 4 and q["scaling"] == 2.0 and q["base_layer"] == "Linear"
    with open(os.path.join(folder, "adapter_config.json")) as f:
        assert data["base_model_name_or_path"] == json.load(f).get("base_model_name_or_path")
    base = sum(p.numel() for p in tiny_llama.model.parameters())
    assert data["base_parameters"] == base and data["adapter_parameters"] == sum(
        m["parameters"] for m in data["modules"]
    )
    assert data["share_of_base"] == data["adapter_parameters"] / base
    layer = pipe.model.model.layers[0].self_attn.q_proj
    delta = layer.get_delta_weight("default")
    assert q["delta_norm"] == pytest.approx(float(delta.norm()), rel=1e-4)
    assert q["relative_change"] == pytest.approx(float(delta.norm() / layer.base_layer.weight.norm()), rel=1e-4)


@pytest.mark.parametrize("apply_with", ["peft", "explain"])
def test_merge_and_unmerge(tiny_llama, tiny_adapter, apply_with):
    folder, peft_model = tiny_adapter
    pipe = explain.pipeline("text-generation", model=tiny_llama.folder)
    adapter = load_adapter(pipe.model, folder, pipe.trace, apply_with=apply_with)
    ids = prompt_ids(tiny_llama.tokenizer)
    base_weight = tiny_llama.model.model.layers[0].self_attn.v_proj.weight
    with torch.no_grad():
        unmerged = pipe.model(ids).logits
        adapter.merge()
        merged_weight = pipe.model.model.layers[0].self_attn.v_proj.base_layer.weight.clone()
        merged = pipe.model(ids).logits
        adapter.unmerge()
    delta = peft_model.base_model.model.model.layers[0].self_attn.v_proj.get_delta_weight("default")
    assert torch.allclose(merged_weight, base_weight + delta, atol=1e-6)  # W + (alpha / r) B A
    assert torch.allclose(merged, unmerged, atol=1e-5, rtol=0)
    assert torch.allclose(pipe.model.model.layers[0].self_attn.v_proj.base_layer.weight, base_weight, atol=1e-6)
    assert [e.data["merged"] for e in pipe.trace.filter("weights", "adapter_merge")] == [True, False]


def test_adapter_on_quantized_layers(tiny_llama, tiny_adapter):
    """peft cannot wrap explain's Int8Linear: the readable LoraLinear adds B(A x) to the quantized product."""
    folder, peft_model = tiny_adapter
    base = explain.pipeline("text-generation", model=tiny_llama.folder, quantization="int8", dtype="float32")
    pipe = explain.pipeline(
        "text-generation", model=tiny_llama.folder, quantization="int8", dtype="float32", adapter=folder
    )
    assert "peft cannot wrap Int8Linear" in pipe.adapter.applied_with
    layer = pipe.model.model.layers[0].self_attn.q_proj
    x = torch.randn(2, 32)
    reference = peft_model.base_model.model.model.layers[0].self_attn.q_proj
    with torch.no_grad():
        expected = base.model.model.layers[0].self_attn.q_proj(x) + x @ reference.get_delta_weight("default").t()
        assert torch.allclose(layer(x), expected, atol=1e-5)
    with pytest.raises(ExplainError, match="cannot merge into quantized layers"):
        pipe.adapter.merge()


def test_an_adapter_on_quantized_layers_imports_neither_peft_nor_transformers(tiny_llama, tiny_adapter):
    """peft cannot wrap explain's quantized layers, so it is not imported for them: importing it brings transformers
    and torchao (~90 MB of modules, lesson 11's peak when it loaded its adapted 4-bit model). A fresh interpreter,
    as a kernel is; this session has imported both long before."""
    folder, _ = tiny_adapter
    code = (
        "import sys, explain; "
        "pipe = explain.pipeline('text-generation', model=sys.argv[1], quantization='int8', dtype='float32', "
        "adapter=sys.argv[2]); "
        "print(pipe.adapter.applied_with); "
        "print(sorted(m for m in ('peft', 'transformers', 'torchao') if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, tiny_llama.folder, folder], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    applied_with, imported = done.stdout.strip().splitlines()[-2:]
    assert "peft cannot wrap Int8Linear" in applied_with
    assert imported == "[]"


def test_adapter_on_the_embedded_model_equals_peft_and_transformers(embedded_pipe, tmp_path):
    """transformers' LlamaForCausalLM with the embedded model's weights (test_loading proves them equal to
    transformers' own GGUF load), an adapter made by peft on it, against explain.pipeline(adapter=...)."""
    config = embedded_pipe.config
    reference = transformers.LlamaForCausalLM(
        transformers.LlamaConfig(
            vocab_size=config["vocab_size"],
            hidden_size=config["hidden_size"],
            intermediate_size=config["intermediate_size"],
            num_hidden_layers=config["num_hidden_layers"],
            num_attention_heads=config["num_attention_heads"],
            num_key_value_heads=config["num_key_value_heads"],
            head_dim=config["head_dim"],
            max_position_embeddings=config["max_position_embeddings"],
            rms_norm_eps=config["rms_norm_eps"],
            rope_theta=config["rope_theta"],
            tie_word_embeddings=True,
        )
    ).eval()
    reference.load_state_dict(embedded_pipe.model.state_dict())
    torch.manual_seed(0)
    peft_model = peft.get_peft_model(
        reference,
        peft.LoraConfig(
            r=8, lora_alpha=16, target_modules=["q_proj", "v_proj", "o_proj", "up_proj"], init_lora_weights=False
        ),
    ).eval()
    with torch.no_grad():  # a trained adapter's size: B small, so the text stays language
        for name, parameter in peft_model.named_parameters():
            if "lora_B" in name:
                parameter.mul_(0.05)
    peft_model.save_pretrained(tmp_path)
    pipe = explain.pipeline("text-generation", adapter=str(tmp_path))
    ids = prompt_ids(embedded_pipe.tokenizer)
    with torch.no_grad():
        expected, got = peft_model(ids).logits, pipe.model(ids).logits
        base = embedded_pipe.model(ids).logits
    assert torch.allclose(got, expected, atol=1e-4, rtol=0)
    assert (got - base).abs().max() > 1e-2
    data = pipe.trace.last("weights", "adapter").data
    assert data["layers"] == 30 * 4 and data["base_parameters"] == 134_515_008
    assert data["adapter_parameters"] == 30 * 8 * ((576 + 576) + (576 + 192) + (576 + 576) + (576 + 1536))


# -- bad input --------------------------------------------------------------------------------------------------------
def copy_adapter(tiny_adapter, tmp_path) -> str:
    target = tmp_path / "adapter"
    shutil.copytree(tiny_adapter[0], target)
    return str(target)


def edit_config(folder: str, **changes) -> None:
    path = os.path.join(folder, "adapter_config.json")
    with open(path) as f:
        config = json.load(f)
    config.update(changes)
    with open(path, "w") as f:
        json.dump(config, f)


def test_missing_folder(tiny_llama, tmp_path):
    with pytest.raises(ExplainError, match="is not a folder.*adapter_config.json"):
        explain.pipeline("text-generation", model=tiny_llama.folder, adapter=str(tmp_path / "nowhere"))


def test_missing_config(tiny_llama, tiny_adapter, tmp_path):
    folder = copy_adapter(tiny_adapter, tmp_path)
    os.remove(os.path.join(folder, "adapter_config.json"))
    with pytest.raises(ExplainError, match="has no adapter_config.json"):
        explain.pipeline("text-generation", model=tiny_llama.folder, adapter=folder)


def test_missing_weights_and_a_pickle_is_not_read(tiny_llama, tiny_adapter, tmp_path):
    folder = copy_adapter(tiny_adapter, tmp_path)
    os.rename(os.path.join(folder, "adapter_model.safetensors"), os.path.join(folder, "adapter_model.bin"))
    with pytest.raises(ExplainError, match="no adapter_model.safetensors.*adapter_model.bin.*never a pickle"):
        explain.pipeline("text-generation", model=tiny_llama.folder, adapter=folder)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"peft_type": "IA3"}, "is a 'IA3' adapter; explain applies LoRA adapters"),
        ({"peft_type": "PREFIX_TUNING"}, "'PREFIX_TUNING' adapter"),
        ({"use_dora": True}, "DoRA"),
        ({"modules_to_save": ["lm_head"]}, "modules_to_save"),
        ({"bias": "all"}, "bias='all'"),
    ],
)
def test_other_adapter_kinds_are_refused(tiny_llama, tiny_adapter, tmp_path, changes, message):
    folder = copy_adapter(tiny_adapter, tmp_path)
    edit_config(folder, **changes)
    with pytest.raises(UnsupportedError, match=message):
        explain.pipeline("text-generation", model=tiny_llama.folder, adapter=folder)


def test_adapter_for_another_base_names_the_shapes(tiny_llama, tmp_path):
    """An adapter made for a wider model: its first module's shapes and the model's are named."""
    wider = transformers.LlamaForCausalLM(
        transformers.LlamaConfig(
            vocab_size=tiny_llama.tokenizer.vocab_size,
            hidden_size=64,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            tie_word_embeddings=False,
        )
    )
    make_adapter(wider, tmp_path, target_modules=["q_proj"])
    edit_config(str(tmp_path), base_model_name_or_path="someone/wider-llama")
    with pytest.raises(
        ExplainError,
        match=r"does not fit this model: model.layers.0.self_attn.q_proj.lora_A is "
        r"\[4, 64\].*is 32 -> 32, which needs lora_A \[4, 32\].*someone/wider-llama",
    ):
        explain.pipeline("text-generation", model=tiny_llama.folder, adapter=str(tmp_path))


def test_adapter_for_a_deeper_model_names_the_missing_module(tiny_llama, tiny_adapter, tmp_path):
    folder = copy_adapter(tiny_adapter, tmp_path)
    path = os.path.join(folder, "adapter_model.safetensors")
    weights = safetensors.torch.load_file(path)
    weights = {k.replace("layers.1.", "layers.7."): v for k, v in weights.items()}
    safetensors.torch.save_file(weights, path)
    with pytest.raises(ExplainError, match="adapts model.layers.7.*which this model does not have"):
        explain.pipeline("text-generation", model=tiny_llama.folder, adapter=folder)


def test_corrupt_weights(tiny_llama, tiny_adapter, tmp_path):
    folder = copy_adapter(tiny_adapter, tmp_path)
    path = os.path.join(folder, "adapter_model.safetensors")
    with open(path, "r+b") as f:
        f.truncate(100)
    with pytest.raises(CorruptFileError, match="not a readable safetensors file"):
        explain.pipeline("text-generation", model=tiny_llama.folder, adapter=folder)


def test_an_adapted_pipeline_is_not_saved_as_a_plain_folder(tiny_llama, tiny_adapter, tmp_path):
    pipe = explain.pipeline("text-generation", model=tiny_llama.folder, adapter=tiny_adapter[0])
    with pytest.raises(ExplainError, match="a LoRA adapter"):
        pipe.save_pretrained(tmp_path / "out")
