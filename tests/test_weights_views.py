"""The views of quantization, adapters and comparisons (explain.widgets.weights_views), built with no front end."""

from __future__ import annotations

import pytest

import explain
from explain.features.compare import Comparison

pytest.importorskip("ipywidgets")
pytest.importorskip("plotly")

from explain.widgets import AdapterView, CompareView, QuantizationView  # noqa: E402

EVIL = "<img src=x onerror=alert(1)>"


def comparison(first=True) -> Comparison:
    steps = [
        {
            "step": i,
            "token_a": i,
            "text_a": EVIL if i == 1 else f"a{i}",
            "top1_a": i,
            "top1_b": i + (i == 2),
            "text_b": f"b{i}",
            "agree": i != 2,
            "kl": 0.01 * i,
            "p_a": 0.5,
            "p_b": 0.4,
        }
        for i in range(4)
    ]
    return Comparison(
        prompt=EVIL,
        labels=["float32", f"gguf {EVIL}"],
        steps=steps,
        texts=[f"same {EVIL} then A", f"same {EVIL} then B"],
        ids=[[0, 1, 2, 3], [0, 1, 9, 3]],
        first_divergence={"step": 2, "character": 5 + len(EVIL) + 6, "token_a": 2, "token_b": 9} if first else None,
        summary={
            "agreement": 0.75,
            "agreeing_steps": 3,
            "steps": 4,
            "mean_kl": 0.015,
            "max_kl": 0.03,
            "max_kl_step": 3,
            "weight_bytes": [400, 100],
            "decode_tokens_per_s": [10.0, 25.0],
        },
    )


def test_compare_view_draws_the_steps_and_escapes_text():
    view = CompareView(comparison())
    kl, p_a, p_b = view.figure.data
    assert list(kl.y) == [0.0, 0.01, 0.02, 0.03] and list(kl.marker.color).count("#e8590c") == 1
    assert list(p_a.y) == [0.5] * 4 and list(p_b.y) == [0.4] * 4
    html = view._static_html()
    assert EVIL not in html and escape_of(EVIL) in html
    assert "top-1 agreement 3/4 steps (75%)" in html and "0.25x" in html and "2.50x" in html
    assert "The texts part at step 2" in html and html.count("<mark") == 2
    bundle = view._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle and bundle["text/html"] == html


def test_compare_view_of_identical_texts():
    assert "Both generated the same text" in CompareView(comparison(first=False))._static_html()


def escape_of(text: str) -> str:
    from html import escape

    return escape(text, quote=True)


def test_quantization_view_of_the_real_model(gguf_pipe):
    view = QuantizationView(gguf_pipe)
    data = gguf_pipe.quantization
    bars = {bar.name: list(bar.x) for bar in view.figure.data}
    assert bars["Q4_1"][0] == pytest.approx(data["bytes_before"]["Q4_1"] / 2**20)
    assert bars["int4 values"][1] == pytest.approx(data["bytes_after"]["int4 values"] / 2**20)
    assert bars["float32"][2] == pytest.approx(data["float32_bytes"] / 2**20)
    html = view._static_html()
    assert "0.23x of float32" in html and "210 x Q4_1" in html and "yes: Embedding is a lookup table" in html


def test_adapter_view(tiny_llama, tmp_path):
    peft = pytest.importorskip("peft")
    import copy

    import torch

    torch.manual_seed(0)
    peft.get_peft_model(
        copy.deepcopy(tiny_llama.model),
        peft.LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj"], init_lora_weights=False),
    ).save_pretrained(tmp_path)
    pipe = explain.pipeline("text-generation", model=tiny_llama.folder, adapter=str(tmp_path))
    view = AdapterView(pipe)
    (bar,) = view.figure.data
    assert list(bar.x) == ["L0.q_proj", "L1.q_proj"]
    data = pipe.trace.last("weights", "adapter").data
    assert list(bar.y) == [m["relative_change"] for m in data["modules"]]
    html = view._static_html()
    assert "r = 2, alpha = 4" in html and "2 layers" in html and f"{data['adapter_parameters']:,} parameters" in html


def test_views_need_their_event(tiny_llama):
    pipe = explain.pipeline("text-generation", model=tiny_llama.folder)
    with pytest.raises(ValueError, match="no weights/quantize event.*quantization="):
        QuantizationView(pipe)
    with pytest.raises(ValueError, match="no weights/adapter event.*adapter="):
        AdapterView(pipe)
