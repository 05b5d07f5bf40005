"""Quantized weights run for real (explain.quantization), on the embedded GGUF file and on tiny random models.

  blocks     the file's Q4_1 / Q8_0 bytes read as integers and scales give exactly gguf's own dequantization
  kernels    each quantized layer's product equals a float32 product with the dequantized weight, within a
             tolerance derived from the format (below)
  pipeline   quantization="gguf" keeps all 210 matrices in 4 bits, says what it stored and what it saved, and
             generates what the float32 model generates; int8 / int4 quantize any folder on load
  errors     an unknown method, a method the source cannot feed, a device or torch that cannot run it

Tolerances. A float32 dot product of K terms computed in any order differs from another order by at most
K * 2^-24 * sum_k |x_k w_k| (each partial sum rounds once, relative 2^-24); the kernel's weight (q - 8) * d +
(m + 8d) differs from the format's d * q + m by a few float32 roundings of |d (q - 8)| + |m + 8d|. So the exact
form is held to (K + 4) * 2^-24 * sum_k |x_k| (|d (q - 8)| + |m + 8d|). The fast form rounds x, d and m + 8d to
bfloat16 (relative 2^-9 each) and the output to bfloat16: it is held to 2^-6 times the same sum, plus 2^-8 |y|.
"""

from __future__ import annotations

import sys

import gguf
import numpy as np
import pytest
import torch
from gguf.quants import dequantize

import explain
from explain.errors import ExplainError, UnsupportedError
from explain.formats.gguf_format import release_pages, reverse_permute
from explain.quantization import (
    METHODS,
    BlockInt8Linear,
    Int4Linear,
    Int8Linear,
    QuantizedLinear,
    check,
    quantize_q4_1,
    unpack,
)
from explain.quantization import methods as quantization_methods
from explain.quantization.blocks import permute_rows

PARAMETERS = 134_515_008


@pytest.fixture(scope="module")
def reader(embedded_gguf):
    return gguf.GGUFReader(embedded_gguf)


def gguf_tensor(reader, name):
    return next(t for t in reader.tensors if t.name == name)


def blocks_of(tensor):
    return unpack(tensor.data, tensor.tensor_type.name, rows=int(tensor.shape[-1]))


def bound(x: torch.Tensor, blocks, factor: float) -> torch.Tensor:
    """factor * sum_k |x_k| (|d (q - 8)| + |zero|): the scale of every rounding in one output (see the docstring)."""
    scales = blocks.scales.repeat_interleave(32, dim=1)
    zeros = (blocks.minimums.repeat_interleave(32, dim=1) + 8 * scales) if blocks.kind == "Q4_1" else 0 * scales
    magnitude = (scales * (blocks.values.float() - 8)).abs() + zeros.abs()  # (N, K)
    return factor * (x.abs().float() @ magnitude.t())


# -- blocks ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["blk.0.attn_q.weight", "blk.29.ffn_down.weight", "token_embd.weight"])
def test_blocks_equal_gguf_dequantize(reader, name):
    tensor = gguf_tensor(reader, name)
    blocks = blocks_of(tensor)
    assert blocks.kind == tensor.tensor_type.name
    assert torch.equal(blocks.dequantize(), torch.from_numpy(dequantize(tensor.data, tensor.tensor_type)))


def test_q4_0_blocks_equal_gguf_dequantize():
    weights = np.random.default_rng(0).standard_normal((48, 96)).astype(np.float32)
    raw = gguf.quants.quantize(weights, gguf.GGMLQuantizationType.Q4_0)
    blocks = unpack(raw, "Q4_0")
    assert torch.equal(blocks.dequantize(), torch.from_numpy(dequantize(raw, gguf.GGMLQuantizationType.Q4_0)))


def test_integers_are_the_stored_nibbles(reader):
    """The first block of blk.0.attn_q.weight decoded by hand (as notebook 03 does) gives the same integers."""
    tensor = gguf_tensor(reader, "blk.0.attn_q.weight")
    raw = tensor.data[0, :20].tobytes()
    packed = np.frombuffer(raw[4:20], dtype=np.uint8)
    by_hand = np.concatenate([packed & 0x0F, packed >> 4])
    blocks = blocks_of(tensor)
    assert blocks.values[0, :32].tolist() == by_hand.tolist()
    assert blocks.scales[0, 0] == np.frombuffer(raw[0:2], dtype=np.float16)[0]
    assert blocks.minimums[0, 0] == np.frombuffer(raw[2:4], dtype=np.float16)[0]


def test_permuted_blocks_are_the_models_rows(reader, embedded_pipe):
    """q/k rows are permuted whole (blocks and their scales move together): the result is the float32 model's q_proj."""
    tensor = gguf_tensor(reader, "blk.3.attn_k.weight")
    heads = embedded_pipe.config["num_key_value_heads"]
    blocks = permute_rows(blocks_of(tensor), lambda a: reverse_permute(a, heads))
    expected = embedded_pipe.model.model.layers[3].self_attn.k_proj.weight
    assert torch.equal(blocks.dequantize(), expected)


# -- kernels --------------------------------------------------------------------------------------------------------
def resident_kib(path: str) -> int:
    """This process's resident pages of the file at `path`, over all its mappings (/proc/self/smaps), in KiB."""
    total, inside = 0, False
    with open("/proc/self/smaps") as smaps:
        for line in smaps:
            fields = line.split()
            if "-" in fields[0] and len(fields) >= 5:  # a mapping's header: address range, perms, ..., path
                inside = len(fields) >= 6 and fields[-1] == path
            elif inside and fields[0] == "Rss:":
                total += int(fields[1])
    return total


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the resident pages from /proc/self/smaps")
def test_a_read_tensors_pages_leave_the_process_and_its_bytes_stay(embedded_gguf):
    """release_pages drops a tensor's pages of the mapped file from the process (they counted in its peak memory
    while the reader stayed open); reading the tensor again gives the same bytes, back from the file."""
    import os

    path = os.path.realpath(embedded_gguf)
    reader = gguf.GGUFReader(path)  # a reader of its own: the module's may have pages of this tensor resident
    tensor = gguf_tensor(reader, "token_embd.weight")  # Q8_0, 49152 x 576: ~30 MB
    copy = np.array(tensor.data)  # reads every page of the tensor
    touched = resident_kib(path)
    release_pages(tensor)
    released = resident_kib(path)
    assert touched - released >= 0.95 * tensor.n_bytes / 1024, (touched, released, int(tensor.n_bytes))
    assert np.array_equal(np.asarray(tensor.data), copy)
    release_pages(gguf.ReaderTensor(*tensor[:6], copy, tensor.field))  # bytes in memory, no file: nothing to drop


@pytest.mark.parametrize("name", ["blk.0.attn_q.weight", "blk.5.ffn_down.weight"])
def test_int4_exact_form_equals_the_dequantized_product(reader, name):
    blocks = blocks_of(gguf_tensor(reader, name))
    layer = Int4Linear.from_blocks(blocks, torch.float32)
    torch.manual_seed(0)
    x = torch.randn(3, 5, layer.in_features)  # (B, T, K): the layer takes any leading shape
    reference = x @ blocks.dequantize().t()
    got = layer(x)
    assert got.shape == (3, 5, layer.out_features) and got.dtype == torch.float32
    limit = bound(x.reshape(-1, layer.in_features), blocks, (layer.in_features + 4) * 2.0**-24)
    assert ((got - reference).reshape(-1, layer.out_features).abs() <= limit).all()


def test_int4_kernel_weight_is_the_formats(reader):
    blocks = blocks_of(gguf_tensor(reader, "blk.2.ffn_gate.weight"))
    weight = Int4Linear.from_blocks(blocks, torch.float32).dequantized_weight()
    expected = blocks.dequantize()
    zeros = blocks.minimums.repeat_interleave(32, dim=1) + 8 * blocks.scales.repeat_interleave(32, dim=1)
    assert ((weight - expected).abs() <= 4 * 2.0**-24 * (expected.abs() + zeros.abs())).all()


def test_int4_fast_form_within_bfloat16_rounding(reader):
    blocks = blocks_of(gguf_tensor(reader, "blk.7.attn_output.weight"))
    layer = Int4Linear.from_blocks(blocks, torch.bfloat16)
    torch.manual_seed(1)
    x = torch.randn(4, layer.in_features).to(torch.bfloat16)
    reference = x.float() @ blocks.dequantize().t()
    got = layer(x)
    assert got.dtype == torch.bfloat16
    limit = bound(x, blocks, 2.0**-6) + 2.0**-8 * reference.abs()
    assert ((got.float() - reference).abs() <= limit).all()


def test_block_int8_equals_the_dequantized_product(reader):
    tensor = gguf_tensor(reader, "token_embd.weight")
    blocks = unpack(tensor.data[:256], "Q8_0", rows=256)  # 256 rows of the Q8_0 embedding as a 256 x 576 matrix
    layer = BlockInt8Linear.from_blocks(blocks, torch.float32)
    x = torch.randn(2, 576)
    weight = blocks.dequantize()
    assert torch.equal(layer.dequantized_weight(), weight)  # d * q is exact in float32 (11 + 8 significant bits)
    assert torch.allclose(
        layer(x), x @ weight.t(), rtol=0, atol=577 * 2.0**-24 * float((x.abs() @ weight.abs().t()).max())
    )


def test_int8_on_load_layer():
    torch.manual_seed(2)
    weight = torch.randn(48, 64)
    layer = Int8Linear.from_float(weight, torch.float32)
    scales = weight.abs().amax(dim=1) / 127  # symmetric per row
    assert torch.allclose(layer.scales, scales)
    assert (layer.dequantized_weight() - weight).abs().max() <= scales.max() / 2 + 1e-7  # rounding: half a step
    x = torch.randn(3, 64)
    expected = x @ layer.dequantized_weight().t()
    assert torch.allclose(layer(x), expected, rtol=0, atol=68 * 2.0**-24 * float((x.abs() @ weight.abs().t()).max()))


def test_int4_on_load_is_ggufs_q4_1():
    torch.manual_seed(3)
    weight = torch.randn(32, 64)
    blocks = quantize_q4_1(weight)
    raw = gguf.quants.quantize(weight.numpy(), gguf.GGMLQuantizationType.Q4_1)
    assert torch.equal(blocks.dequantize(), torch.from_numpy(dequantize(raw, gguf.GGMLQuantizationType.Q4_1)))
    steps = blocks.scales.repeat_interleave(32, dim=1)
    minimums = blocks.minimums.repeat_interleave(32, dim=1)
    # half a step, plus d and m rounded to float16 after q was chosen (relative 2^-11; q is at most 15)
    assert ((blocks.dequantize() - weight).abs() <= steps / 2 + 2.0**-11 * (15 * steps + minimums.abs()) + 1e-6).all()


# -- the pipeline ---------------------------------------------------------------------------------------------------
def test_gguf_pipeline_runs_every_matrix_in_4_bits(gguf_pipe):
    linears = [m for m in gguf_pipe.model.modules() if isinstance(m, (torch.nn.Linear, QuantizedLinear))]
    quantized = [m for m in linears if isinstance(m, Int4Linear)]
    assert len(quantized) == 210 and all(m.packed_weight.dtype == torch.uint8 for m in quantized)
    assert [type(m).__name__ for m in linears if m not in quantized] == ["Linear"]  # the head, tied to the embedding
    assert gguf_pipe.model.lm_head.weight is gguf_pipe.model.model.embed_tokens.weight
    assert gguf_pipe.dtype == "bfloat16" and "quantization=gguf (fast)" in repr(gguf_pipe)


def test_quantize_event_says_what_was_stored_and_saved(gguf_pipe, reader):
    (event,) = gguf_pipe.trace.filter("weights", "quantize", run=0)
    data = event.data
    assert data["method"] == "gguf" and data["form"] == "fast" and data["compute_dtype"] == "bfloat16"
    stored = {}
    for tensor in reader.tensors:
        stored[tensor.tensor_type.name] = stored.get(tensor.tensor_type.name, 0) + int(tensor.n_bytes)
    assert data["bytes_before"] == stored
    conversions = {c["from"]: c for c in data["conversions"]}
    assert conversions["Q4_1"]["tensors"] == 210 and not conversions["Q4_1"]["float_round_trip"]
    assert conversions["Q8_0"]["float_round_trip"] and "lookup" in conversions["Q8_0"]["reason"]
    assert data["left_in_float"] == {"model.embed_tokens.weight": conversions["Q8_0"]["reason"]}
    model = gguf_pipe.model
    int4 = [m for m in model.modules() if isinstance(m, Int4Linear)]
    assert data["bytes_after"]["int4 values"] == sum(m.packed_weight.nbytes for m in int4) == 53_084_160
    assert data["bytes_after"]["scales and zeros (bfloat16)"] == sum(m.scales_and_zeros.nbytes for m in int4)
    assert data["parameters"] == PARAMETERS and data["float32_bytes"] == PARAMETERS * 4
    assert data["total_after"] == sum(data["bytes_after"].values())
    assert data["ratio_to_float32"] <= 0.3  # the target: at most 0.3x of the float32 weights
    placed = gguf_pipe.trace.filter("placement", "place", run=0)[0].data["bytes_per_device"]
    assert placed == {"cpu": data["total_after"]}
    assert data["process_memory"]["peak_rss_bytes"] >= data["process_memory"]["rss_bytes"] > data["total_after"]
    load = gguf_pipe.trace.filter("weights", "load", run=0)[0].data
    assert load["kept_quantized"] == 211 and load["parameters"] == PARAMETERS and load["missing"] == []


def test_gguf_pipeline_generates_what_float32_does(gguf_pipe, embedded_pipe):
    comparison = explain.compare(
        embedded_pipe, gguf_pipe, "The history of the printing press begins", max_new_tokens=16
    )
    assert comparison.summary["agreement"] >= 0.9  # the target, on this prompt
    assert comparison.summary["mean_kl"] < 0.05


def test_exact_form_logits_equal_float32(embedded_pipe, provisioned):
    exact = explain.pipeline("text-generation", quantization="gguf", dtype=torch.float32)
    assert exact.quantization["form"] == "exact" and exact.dtype == "float32"
    ids = torch.tensor([embedded_pipe.tokenizer.encode("Write a story about a cat")])
    with torch.inference_mode():
        expected = embedded_pipe.model(ids).logits
        got = exact.model(ids).logits
    assert (got - expected).abs().max() < 1e-3  # float32 rounding through 30 layers; logits are O(10)
    assert torch.equal(got.argmax(-1), expected.argmax(-1))


@pytest.mark.parametrize("method, layer", [("int8", Int8Linear), ("int4", Int4Linear)])
def test_on_load_quantization_of_a_folder(tiny_llama, method, layer):
    pipe = explain.pipeline("text-generation", model=tiny_llama.folder, quantization=method)
    model = pipe.model
    quantized = {n for n, m in model.named_modules() if isinstance(m, layer)}
    assert len(quantized) == 2 * 7 and "lm_head" not in quantized
    assert isinstance(model.lm_head, torch.nn.Linear)  # left in float, as transformers' quantizers leave it
    data = pipe.quantization
    assert data["left_in_float"] == {"lm_head.weight": data["left_in_float"]["lm_head.weight"]}
    assert data["compute_dtype"] == "bfloat16" and data["bytes_before"] == {
        "bfloat16": sum(p.numel() * 2 for p in tiny_llama.model.parameters())
    }
    reference = tiny_llama.model.model.layers[1].mlp.up_proj.weight
    got = model.model.layers[1].mlp.up_proj.dequantized_weight().float()
    step = (
        reference.abs().amax(dim=1, keepdim=True) / 127
        if method == "int8"
        else quantize_q4_1(reference.to(torch.bfloat16)).scales.repeat_interleave(32, dim=1)
    )
    assert ((got - reference).abs() <= step / 2 + 2.0**-7 * reference.abs() + 1e-3).all()
    out = pipe("Hello", max_new_tokens=3, do_sample=False)
    assert out[0]["generated_text"].startswith("Hello")


def test_on_load_with_float32_activations(tiny_llama):
    pipe = explain.pipeline("text-generation", model=tiny_llama.folder, quantization="int8", dtype="float32")
    assert pipe.quantization["compute_dtype"] == "float32"
    assert pipe.model.model.layers[0].self_attn.q_proj.scales.dtype == torch.float32


# -- errors -----------------------------------------------------------------------------------------------------------
def test_unknown_method_lists_the_methods(tiny_llama):
    with pytest.raises(ExplainError, match="unknown quantization 'nf4'.*'gguf'.*'int8'.*'int4'"):
        explain.pipeline("text-generation", model=tiny_llama.folder, quantization="nf4")


def test_gguf_method_needs_a_gguf_file(tiny_llama):
    with pytest.raises(ExplainError, match='not loaded from a GGUF file.*"int8" or "int4"'):
        explain.pipeline("text-generation", model=tiny_llama.folder, quantization="gguf")


def test_quantization_runs_on_the_cpu_only():
    with pytest.raises(UnsupportedError, match="runs on the CPU only.*device='cuda:0'.*device=\"cpu\""):
        check("gguf", device="cuda:0")
    with pytest.raises(UnsupportedError, match="device_map puts model.layers.0 on 0"):
        check("int8", device_map={"model.layers.0": 0, "lm_head": "cpu"})
    assert check("int4", device="cpu") is METHODS["int4"]


def test_a_torch_without_the_kernel_is_told_what_runs(tiny_llama, monkeypatch):
    real = quantization_methods.kernel_available

    def without_int4(kernel):
        return (False, "RuntimeError: not built") if "int4" in kernel else real(kernel)

    monkeypatch.setattr(quantization_methods, "kernel_available", without_int4)
    monkeypatch.setattr("explain.quantization.kernel_available", without_int4)
    with pytest.raises(
        UnsupportedError,
        match="needs torch.ops.aten._weight_int4pack_mm_for_cpu.*not built.*this machine runs quantization='int8'",
    ):
        explain.pipeline("text-generation", model=tiny_llama.folder, quantization="int4")


def test_activations_in_a_dtype_the_models_do_not_run_are_refused(tiny_llama):
    """float64 is refused by the loading arguments' check, before the quantizer is built."""
    with pytest.raises(ExplainError, match='float64 is not one explain\'s models run.*"float32", "bfloat16"'):
        explain.pipeline("text-generation", model=tiny_llama.folder, quantization="int8", dtype=torch.float64)


def test_a_quantized_pipeline_is_not_saved_as_a_plain_folder(gguf_pipe, tmp_path):
    with pytest.raises(ExplainError, match="quantized weights.*without quantization="):
        gguf_pipe.save_pretrained(tmp_path / "out")
    assert not (tmp_path / "out").exists()
