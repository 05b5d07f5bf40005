"""backend="transformers" with transformers' own quantization configs and peft adapters, in explain's weights events.

The tiny random Llama (tests/conftest.py) loaded by transformers with TorchAoConfig (torchao's int8 and int4 weight-only
configs that run on a CPU) and QuantoConfig(weights="int8"): the weights/quantize event has the explain backend's
schema, its bytes equal an independent count of the quantized tensors' inner tensors and of the checkpoint file, the
views draw it, explain.compare runs across the backends. A LoRA adapter made here by peft, loaded by transformers
(model=<the adapter folder>), gives the weights/adapter event the explain backend gives for the same adapter.
BitsAndBytesConfig (no GPU here) and a quantization_config with a GGUF file fail with explain's clear errors.
"""

from __future__ import annotations

import copy
import os

import pytest
import safetensors.torch
import torch

transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()
transformers.logging.disable_progress_bar()

from tiny_files import make_lora  # noqa: E402

import explain  # noqa: E402
from explain.errors import ExplainError, UnsupportedError  # noqa: E402
from explain.trace import Trace  # noqa: E402

PROMPT = "Once upon a time"
LINEARS = 14  # 2 layers x (q, k, v, o, gate, up, down); lm_head is left in float by transformers
# the inner tensors each quantized class stores, by their own attribute names (not through __tensor_flatten__)
INNER = {
    "Int8Tensor": ("qdata", "scale", "zero_point"),
    "Int4OpaqueTensor": ("qdata", "scale_and_zero"),
    "WeightQBytesTensor": ("_data", "_scale"),
}


def _configs():
    torchao = pytest.importorskip("torchao")  # noqa: F841
    pytest.importorskip("optimum.quanto")
    from torchao.prototype.quantization.int4 import PrototypeInt4WeightOnlyConfig
    from torchao.quantization import Int8WeightOnlyConfig

    return {
        "torchao int8": (transformers.TorchAoConfig(Int8WeightOnlyConfig()), torch.float32, "Int8Tensor"),
        # torchao 0.18's int4 for a CPU: Int4OpaqueTensor, torch's _weight_int4pack_mm_for_cpu (bfloat16)
        "torchao int4": (
            transformers.TorchAoConfig(PrototypeInt4WeightOnlyConfig(group_size=32)),
            torch.bfloat16,
            "Int4OpaqueTensor",
        ),
        "quanto int8": (transformers.QuantoConfig(weights="int8"), torch.float32, "WeightQBytesTensor"),
    }


@pytest.fixture(scope="module")
def quantized(tiny_llama):
    """name -> (the transformers-backend pipeline, its tensor class), each loaded once."""
    return {
        name: (
            explain.pipeline(
                "text-generation",
                model=tiny_llama.folder,
                backend="transformers",
                dtype=dtype,
                model_kwargs={"quantization_config": config},
            ),
            kind,
        )
        for name, (config, dtype, kind) in _configs().items()
    }


def independent_bytes(model) -> tuple[int, int]:
    """(bytes of the quantized weights' inner tensors, bytes of the other parameters and persistent buffers),
    counted by the classes' own attribute names; tied tensors once. Non-persistent buffers (rotary inv_freq) are
    computed, not weights: left out, as the explain backend's event leaves them out."""
    quantized, plain, seen = 0, 0, set()
    persistent = [
        buffer
        for module in model.modules()
        for name, buffer in module.named_buffers(recurse=False)
        if name not in module._non_persistent_buffers_set
    ]
    for tensor in list(model.parameters()) + persistent:
        if id(tensor) in seen:
            continue
        seen.add(id(tensor))
        data = tensor.data if isinstance(tensor, torch.nn.Parameter) else tensor
        names = INNER.get(type(data).__name__)
        if names is None:
            plain += data.numel() * data.element_size()
        else:
            quantized += sum(getattr(data, name).nbytes for name in names if getattr(data, name) is not None)
    return quantized, plain


@pytest.mark.parametrize("name", ["torchao int8", "torchao int4", "quanto int8"])
def test_quantize_event_is_measured(quantized, tiny_llama, name):
    pipe, kind = quantized[name]
    data = pipe.trace.last("weights", "quantize").data  # checked against WeightsQuantize as it was emitted
    assert data["backend"] == "transformers" and data["method"] == name.split()[0]
    assert sum(data["modules"].values()) == LINEARS and all(kind in key for key in data["modules"])
    assert kind in data["kernels"] and data["conversions"][0]["tensors"] == LINEARS
    assert not data["conversions"][0]["float_round_trip"]  # from the float32 checkpoint, quantized once
    assert list(data["left_in_float"]) == ["lm_head.weight"]
    assert "get_keys_to_not_convert" in data["left_in_float"]["lm_head.weight"]
    # bytes_after: the real storage, against a count by attribute names
    quantized_bytes, plain_bytes = independent_bytes(pipe.model)
    assert data["total_after"] == quantized_bytes + plain_bytes == sum(data["bytes_after"].values())
    inner = sum(v for k, v in data["bytes_after"].items() if not k.startswith(("float32", "bfloat16")))
    assert inner == quantized_bytes
    linear_parameters = sum(
        m.weight.numel() for n, m in pipe.model.named_modules() if isinstance(m, torch.nn.Linear) and n != "lm_head"
    )
    bits = 8 * quantized_bytes / linear_parameters
    assert (8 <= bits < 10) if "int8" in name else (4 <= bits < 6)  # integers plus their scales (and zeros)
    # bytes_before: what model.safetensors holds, read independently
    stored = safetensors.torch.load_file(os.path.join(tiny_llama.folder, "model.safetensors"))
    assert data["bytes_before"] == {"float32": sum(t.nbytes for t in stored.values())}
    assert data["total_after"] < data["total_before"]
    assert data["parameters"] == sum(t.numel() for t in stored.values())
    assert data["ratio_to_float32"] == data["total_after"] / (4 * data["parameters"])
    # the weights and placement events count the same bytes (explain.compare reads placement's)
    computed = sum(
        buffer.nbytes
        for module in pipe.model.modules()
        for name, buffer in module.named_buffers(recurse=False)
        if name in module._non_persistent_buffers_set
    )
    assert pipe.trace.last("weights", "load").data["bytes"] == data["total_after"] + computed
    assert (
        sum(pipe.trace.last("placement", "place").data["bytes_per_device"].values()) == data["total_after"] + computed
    )


def test_tied_output_head_is_named(tiny_llama, tmp_path):
    """SmolLM2 ties lm_head to the embedding: the float head is listed under its own name, saying it is tied."""
    config = copy.deepcopy(tiny_llama.model.config)
    config.tie_word_embeddings = True
    torch.manual_seed(0)
    transformers.LlamaForCausalLM(config).save_pretrained(tmp_path)
    tiny_llama.tokenizer.save(tmp_path)
    pipe = explain.pipeline(
        "text-generation",
        model=str(tmp_path),
        backend="transformers",
        model_kwargs={"quantization_config": transformers.QuantoConfig(weights="int8")},
    )
    data = pipe.trace.last("weights", "quantize").data
    assert list(data["left_in_float"]) == ["lm_head.weight"]
    assert data["left_in_float"]["lm_head.weight"].startswith("tied to model.embed_tokens.weight: ")
    assert data["parameters"] == sum(p.numel() for p in pipe.model.parameters())  # the tied tensor once


def test_a_checkpoint_saved_quantized(quantized, tiny_llama, tmp_path):
    """torchao's int8 saved by save_pretrained and loaded again: bytes_before is the file's int8 and float parts."""
    pipe, _ = quantized["torchao int8"]
    pipe.model.save_pretrained(tmp_path)
    tiny_llama.tokenizer.save(tmp_path)
    again = explain.pipeline("text-generation", model=str(tmp_path), backend="transformers")
    data, first = again.trace.last("weights", "quantize").data, pipe.trace.last("weights", "quantize").data
    assert "read as saved by TorchAoHfQuantizer" in data["summary"]
    stored = safetensors.torch.load_file(os.path.join(tmp_path, "model.safetensors"))
    by_dtype = {}
    for tensor in stored.values():
        by_dtype[str(tensor.dtype).removeprefix("torch.")] = (
            by_dtype.get(str(tensor.dtype).removeprefix("torch."), 0) + tensor.nbytes
        )
    assert data["bytes_before"] == by_dtype and "int8" in by_dtype
    assert data["total_after"] == first["total_after"] and data["modules"] == first["modules"]
    assert data["conversions"][0]["from"] == "stored in parts"


def test_quantized_model_runs_close_to_float(quantized, tiny_llama):
    ids = torch.tensor([tiny_llama.tokenizer.encode(PROMPT)])
    with torch.no_grad():
        reference = tiny_llama.model(ids).logits
        for name, (pipe, _) in quantized.items():
            logits = pipe.model(ids).logits.float()
            scale = reference.abs().max()
            difference = (logits - reference).abs().max() / scale
            assert 0 < difference < (0.05 if "int8" in name else 0.25), name  # really quantized, still the model


def test_compare_across_backends(quantized, tiny_llama):
    full = explain.pipeline("text-generation", model=tiny_llama.folder)
    tf_full = explain.pipeline("text-generation", model=tiny_llama.folder, backend="transformers")
    same = explain.compare(full, tf_full, PROMPT, max_new_tokens=6)
    assert same.summary["agreement"] == 1 and same.summary["mean_kl"] < 1e-8 and same.first_divergence is None
    assert same.labels == ["float32", "transformers float32"]
    int8, _ = quantized["torchao int8"]
    forward = explain.compare(full, int8, PROMPT, max_new_tokens=6)
    back = explain.compare(int8, full, PROMPT, max_new_tokens=6)
    for comparison in (forward, back):
        assert 0 < comparison.summary["mean_kl"] < 1e-2 and comparison.summary["steps"] == 6
    assert forward.labels[1].startswith("transformers torchao (TorchAoConfig(Int8WeightOnlyConfig)")
    sizes = forward.summary["weight_bytes"]
    assert sizes[1] == sum(int8.trace.last("placement", "place").data["bytes_per_device"].values()) < sizes[0]
    assert (
        int8.trace.last("generation", "compare").data["summary"]["mean_kl"] == forward.summary["mean_kl"]
    )  # B's trace


def test_views_of_quantized_transformers_pipes(quantized, tmp_path):
    from explain.utils.units import size_text
    from explain.widgets import CompareView, QuantizationView

    pipe, _ = quantized["torchao int4"]
    data = pipe.trace.last("weights", "quantize").data
    for source in (pipe, Trace.load(pipe.trace.save(tmp_path / "int4.json"))):
        view = QuantizationView(source)
        bars = {bar.name: list(bar.x) for bar in view.figure.data}
        assert list(view.figure.data[0].y) == ["in the file", "in memory, quantized", "float32 (for scale)"]
        assert bars["qdata (uint8)"][1] == pytest.approx(data["bytes_after"]["qdata (uint8)"] / 2**20)
        html = view._static_html()
        assert "quantization_config=TorchAoConfig(PrototypeInt4WeightOnlyConfig, group_size=32)" in html
        assert f"{size_text(data['total_after'])} in memory" in html and "lm_head.weight" in html
        assert "transformers&#x27; get_keys_to_not_convert" in html  # escaped
    int8, _ = quantized["quanto int8"]
    comparison = explain.compare(int8, pipe, PROMPT, max_new_tokens=4)
    html = CompareView(Trace.load(pipe.trace.save(tmp_path / "compare.json")))._static_html()
    assert "A: transformers quanto (QuantoConfig(weights=int8); float32 activations)" in html
    assert f"top-1 agreement {comparison.summary['agreeing_steps']}/4 steps" in html


def test_attached_quantized_pipeline(quantized):
    pipe, _ = quantized["quanto int8"]
    tpipe = transformers.pipeline("text-generation", model=pipe.model, tokenizer=pipe.tokenizer)
    attached = explain.attach(tpipe)
    data = attached.trace.last("weights", "quantize").data
    assert data["given"] and "bytes_before" not in data  # the files are not known: no invented number
    assert data["total_after"] == pipe.trace.last("weights", "quantize").data["total_after"]


# -- adapters ----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def lora(tiny_llama, tmp_path_factory):
    """A LoRA adapter made by peft on the tiny Llama, its adapter_config.json naming the tiny Llama's folder."""
    pytest.importorskip("peft")
    folder = tmp_path_factory.mktemp("tf-lora")
    return str(folder), make_lora(tiny_llama.model, folder, base=tiny_llama.folder)


def test_adapter_event_equals_the_explain_backends(tiny_llama, lora):
    folder, _ = lora
    ours = explain.pipeline("text-generation", model=tiny_llama.folder, adapter=folder)
    theirs = explain.pipeline("text-generation", model=folder, backend="transformers")
    a, b = ours.trace.last("weights", "adapter").data, theirs.trace.last("weights", "adapter").data
    assert b["path"] == folder and "transformers' PeftAdapterMixin.load_adapter" in b["applied_with"]
    for key in (
        "r",
        "lora_alpha",
        "use_rslora",
        "target_modules",
        "layers",
        "adapter_parameters",
        "base_parameters",
        "adapter_bytes",
        "base_model_name_or_path",
        "merged",
    ):
        assert a[key] == b[key], key
    modules_a, modules_b = ({m["module"]: m for m in data["modules"]} for data in (a, b))
    assert set(modules_a) == set(modules_b) and len(modules_a) == 6
    for name, module in modules_a.items():
        other = modules_b[name]
        for key in (
            "rank",
            "scaling",
            "in_features",
            "out_features",
            "parameters",
            "bytes",
            "base_parameters",
            "base_layer",
        ):
            assert module[key] == other[key], (name, key)
        for key in ("delta_norm", "weight_norm", "relative_change"):
            assert module[key] == pytest.approx(other[key], rel=1e-6), (name, key)
    assert "adapter_model.safetensors" not in theirs.trace.last("weights", "load").data["files"]
    comparison = explain.compare(ours, theirs, PROMPT, max_new_tokens=5)
    assert comparison.first_divergence is None and comparison.summary["mean_kl"] < 1e-8
    assert comparison.labels == ["float32 + LoRA " + os.path.basename(folder), "transformers float32 + LoRA default"]


def test_adapter_view_of_a_peft_model(lora, tiny_llama, tmp_path):
    from explain.widgets import AdapterView

    _, peft_model = lora
    tpipe = transformers.pipeline("text-generation", model=peft_model, tokenizer=tiny_llama.folder)
    attached = explain.attach(tpipe)
    data = attached.trace.last("weights", "adapter").data
    assert data["given"] and "a peft PeftModel" in data["applied_with"] and data["layers"] == 6
    assert data["modules"][0]["module"] == "model.layers.0.self_attn.q_proj"  # PeftModel's prefix taken off
    for source in (attached, Trace.load(attached.trace.save(tmp_path / "lora.json"))):
        view = AdapterView(source)
        assert list(view.figure.data[0].y) == [m["relative_change"] for m in data["modules"]]
        html = view._static_html()
        assert "r = 4, alpha = 8" in html and "6 layers" in html and "PeftModel" in html


# -- what cannot run here ------------------------------------------------------------------------------------------
def test_bitsandbytes_without_a_gpu_is_refused_clearly(tiny_llama):
    if torch.cuda.is_available():
        pytest.skip("a GPU is here: bitsandbytes may run")
    config = transformers.BitsAndBytesConfig(load_in_4bit=True)
    with pytest.raises(UnsupportedError) as error:
        explain.pipeline(
            "text-generation",
            model=tiny_llama.folder,
            backend="transformers",
            model_kwargs={"quantization_config": config},
        )
    message = str(error.value)
    assert "BitsAndBytesConfig" in message and "bitsandbytes" in message
    assert "TorchAoConfig" in message and "QuantoConfig" in message  # what runs on a CPU


def test_quantization_config_with_a_gguf_file_is_refused(tiny_gguf):
    from torchao.quantization import Int8WeightOnlyConfig

    with pytest.raises(UnsupportedError, match=r"cannot quantize a model it loads from a GGUF file.*save_pretrained"):
        explain.pipeline(
            "text-generation",
            model=os.path.dirname(tiny_gguf),
            gguf_file=os.path.basename(tiny_gguf),
            backend="transformers",
            model_kwargs={"quantization_config": transformers.TorchAoConfig(Int8WeightOnlyConfig())},
        )


def test_explain_options_still_name_the_transformers_way(tiny_llama):
    for option, named in (({"quantization": "int8"}, "quantization_config"), ({"adapter": "x"}, "adapter folder")):
        with pytest.raises(ExplainError, match=named):
            explain.pipeline("text-generation", model=tiny_llama.folder, backend="transformers", **option)
