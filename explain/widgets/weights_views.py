"""Views of what quantization and adapters cost and save, and of a comparison of two pipelines.

    explain.show(explain.compare(full, quantized, prompt))   # CompareView
    explain.widgets.QuantizationView(pipe)                   # bytes per storage type, before and after
    explain.widgets.AdapterView(pipe)                        # adapted layers, rank, alpha, size of each change

Each is built from event data only (weights/quantize, weights/adapter, generation/compare), so a saved trace
shows the same; a header of escaped HTML and a plotly figure, and a static HTML summary where widgets do not run.
"""

from __future__ import annotations

from html import escape

import ipywidgets as widgets
import plotly.graph_objects as go

from ..trace import Trace
from ..utils.units import size_text
from .dashboard import StaticFallback
from .state import visible

AGREE, DISAGREE, BEFORE, AFTER = "#0969da", "#e8590c", "#8fb3de", "#2da44e"
LAYOUT = {"margin": {"l": 70, "r": 20, "t": 30, "b": 40}, "template": "plotly_white", "font": {"size": 12}}


def _e(value) -> str:
    return escape(str(value), quote=True)


def _event(source, stage: str, kind: str) -> dict:
    """The data of the last `stage/kind` event of a pipeline, a Trace, or the data itself."""
    if isinstance(source, dict):
        return source
    trace = source if isinstance(source, Trace) else getattr(source, "trace", None)
    event = trace.last(stage, kind) if isinstance(trace, Trace) else None
    if event is None:
        raise ValueError(
            f"no {stage}/{kind} event to show: load the pipeline with "
            f"{'quantization=' if kind == 'quantize' else 'adapter='}"
        )
    return event.data


class _View(StaticFallback, widgets.VBox):
    def __init__(self, header: str, figure: go.FigureWidget | None, footer: str = ""):
        self.html = f"<div class='explain-w'>{header}</div>"
        self.footer = f"<div class='explain-w'>{footer}</div>" if footer else ""
        children = [widgets.HTML(self.html)] + ([figure] if figure is not None else [])
        children += [widgets.HTML(self.footer)] if footer else []
        self.figure = figure
        super().__init__(children=children)

    def _static_html(self) -> str:
        return self.html + self.footer


class CompareView(_View):
    """Two pipelines on one prompt: per step the KL divergence (orange where the top-1 tokens differ), the
    probability each gives A's token, and the two texts from where they part."""

    def __init__(self, comparison):
        data = (
            _event(comparison, "generation", "compare")  # a pipeline, a (saved) Trace or the event's data
            if isinstance(comparison, (dict, Trace)) or hasattr(comparison, "trace")
            else comparison.to_dict()
        )
        self.data = data
        steps, summary = data["steps"], data["summary"]
        x = [s["step"] for s in steps]
        hover = [f"step {s['step']}: A {visible(s['text_a'])!r}, B's top-1 {visible(s['text_b'])!r}" for s in steps]
        figure = go.FigureWidget(
            layout={
                **LAYOUT,
                "height": 380,
                "showlegend": True,
                "legend": {"orientation": "h", "y": 1.12},
                "xaxis": {"domain": [0, 1], "anchor": "y", "title": "step"},
                "yaxis": {"domain": [0.55, 1], "title": "KL(A||B), nats"},
                "xaxis2": {"domain": [0, 1], "anchor": "y2", "matches": "x", "showticklabels": False},
                "yaxis2": {"domain": [0, 0.42], "title": "p(A's token)", "range": [0, 1.05]},
            }
        )
        figure.add_bar(
            x=x,
            y=[s["kl"] for s in steps],
            name="KL (orange: top-1 differs)",
            hovertext=hover,
            marker_color=[AGREE if s["agree"] else DISAGREE for s in steps],
        )
        figure.add_scatter(
            x=x,
            y=[s["p_a"] for s in steps],
            name=f"A: {data['labels'][0]}",
            mode="lines+markers",
            xaxis="x2",
            yaxis="y2",
            line_color=AGREE,
            hovertext=hover,
        )
        figure.add_scatter(
            x=x,
            y=[s["p_b"] for s in steps],
            name=f"B: {data['labels'][1]}",
            mode="lines+markers",
            xaxis="x2",
            yaxis="y2",
            line_color=DISAGREE,
            hovertext=hover,
        )
        sizes, speeds = summary.get("weight_bytes") or [None, None], summary.get("decode_tokens_per_s") or [None, None]
        facts = [
            f"top-1 agreement {summary['agreeing_steps']}/{summary['steps']} steps ({summary['agreement']:.0%})",
            f"mean KL {summary['mean_kl']:.4f} nats (max {summary['max_kl']:.4f} at step {summary['max_kl_step']})",
        ]
        if all(sizes):
            facts.append(f"weights {size_text(sizes[0])} vs {size_text(sizes[1])} ({sizes[1] / sizes[0]:.2f}x)")
        if all(speeds):
            facts.append(f"decode {speeds[0]:.1f} vs {speeds[1]:.1f} tokens/s ({speeds[1] / speeds[0]:.2f}x)")
        header = (
            f"<div class='explain-caption'>A: {_e(data['labels'][0])} &nbsp;vs&nbsp; B: {_e(data['labels'][1])}"
            "</div><div class='explain-tl-facts'>"
            + "".join(f"<span class='explain-fact'>{_e(f)}</span>" for f in facts)
            + "</div>"
        )
        super().__init__(header, figure, _texts(data))

    def __repr__(self) -> str:
        return f"explain.widgets.CompareView({self.data['labels'][0]!r} vs {self.data['labels'][1]!r})"


def _texts(data: dict) -> str:
    first, texts = data["first_divergence"], data["texts"]
    if first is None:
        return (
            "<div class='explain-muted'>Both generated the same text:</div><div style='white-space: pre-wrap; "
            f"border: 1px solid #ddd; padding: 4px'>{_e(texts[0])}</div>"
        )
    cut = first["character"]
    rows = "".join(
        f"<div><b>{label}</b> <span style='white-space: pre-wrap'>{_e(texts[i][:cut])}<mark "
        f"style='background: {color}33'>{_e(texts[i][cut:])}</mark></span></div>"
        for i, (label, color) in enumerate((("A", AGREE), ("B", DISAGREE)))
    )
    return (
        f"<div class='explain-muted'>The texts part at step {first['step']} (character {cut}); "
        f"from there each is highlighted:</div>{rows}"
    )


class QuantizationView(_View):
    """What quantization kept and what it saved: bytes per storage type in the file, in memory, and float32."""

    def __init__(self, source):
        data = self.data = _event(source, "weights", "quantize")
        in_file = data["method"] == "gguf" or data.get("bytes_before_source") == "checkpoint files"
        bars = [("in the file" if in_file else "as loaded", data["bytes_before"])] if "bytes_before" in data else []
        bars += [
            ("in memory, quantized", data["bytes_after"]),
            ("float32 (for scale)", {"float32": data["float32_bytes"]}),
        ]
        kinds = list(dict.fromkeys(k for _, parts in bars for k in parts))
        figure = go.FigureWidget(
            layout={
                **LAYOUT,
                "height": 240,
                "barmode": "stack",
                "showlegend": True,
                "xaxis": {"title": "MiB"},
                "legend": {"orientation": "h", "y": -0.35},
            }
        )
        for kind in kinds:
            figure.add_bar(
                y=[name for name, _ in bars],
                x=[parts.get(kind, 0) / 2**20 for _, parts in bars],
                name=kind,
                orientation="h",
            )
        memory = data.get("process_memory") or {}
        facts = [
            f"{size_text(data['total_after'])} in memory, {data['ratio_to_float32']:.2f}x of float32",
            f"{data['bits_per_parameter']:.2f} bits per parameter",
            f"activations {data['compute_dtype']}",
        ]
        if memory.get("rss_bytes"):
            facts.append(f"process {size_text(memory['rss_bytes'])}, peak {size_text(memory['peak_rss_bytes'])}")
        asked = (
            f"quantization_config={_e(data['label'].split(';')[0])} (transformers' {_e(data['method'])})"
            if data.get("backend") == "transformers"
            else f"quantization={_e(data['method'])}"
        )
        header = (
            f"<div class='explain-caption'>{asked}: {_e(data['form'])} "
            f"<span class='explain-muted'>{_e(data['label'])}</span></div><div class='explain-tl-facts'>"
            + "".join(f"<span class='explain-fact'>{_e(f)}</span>" for f in facts)
            + "</div>"
        )
        rows = "".join(
            f"<tr><td>{c['tensors']} x {_e(c['from'])}</td><td>{_e(c['to'])}</td><td>"
            f"{'yes: ' + _e(c['reason']) if c['float_round_trip'] else 'no'}</td></tr>"
            for c in data["conversions"]
        )
        floats = (data.get("left_in_float") or {}) if data.get("backend") == "transformers" else {}
        rows += "".join(
            f"<tr><td>{_e(name)}</td><td>left in float</td><td>{_e(why)}</td></tr>"
            for name, why in list(floats.items())[:20]
        )
        footer = (
            "<table style='font-size: 12px'><thead><tr><th style='text-align:left'>stored</th><th "
            "style='text-align:left'>run as</th><th style='text-align:left'>through float?</th></tr></thead>"
            f"<tbody>{rows}</tbody></table>"
        )
        super().__init__(header, figure, footer)

    def __repr__(self) -> str:
        return f"explain.widgets.QuantizationView({self.data['method']!r}, {self.data['form']!r})"


class AdapterView(_View):
    """A LoRA adapter: which layers it changes, rank and alpha, its size against the base model, and how large
    each change is (||(alpha / r) B A|| / ||W||, Frobenius norms)."""

    def __init__(self, source, layers: int = 60):
        data = self.data = _event(source, "weights", "adapter")
        modules = data["modules"][:layers]
        names = [
            m["module"].replace("model.layers.", "L").replace(".self_attn", "").replace(".mlp", "") for m in modules
        ]
        figure = go.FigureWidget(
            layout={
                **LAYOUT,
                "height": 260,
                "showlegend": False,
                "yaxis": {"title": "||ΔW|| / ||W||"},
                "xaxis": {"tickangle": -60},
            }
        )
        figure.add_bar(
            x=names,
            y=[m["relative_change"] for m in modules],
            marker_color=AFTER,
            hovertext=[
                f"{m['module']}: rank {m['rank']}, scaling {m['scaling']:g}, {m['parameters']:,} "
                f"parameters ({m['base_layer']} base)"
                for m in modules
            ],
        )
        facts = [
            f"r = {data['r']}, alpha = {data['lora_alpha']}" + (" (rsLoRA)" if data["use_rslora"] else ""),
            f"{data['layers']} layers",
            f"{data['adapter_parameters']:,} parameters = "
            f"{data['share_of_base']:.2%} of the base's {data['base_parameters']:,}",
            f"{size_text(data['adapter_bytes'])} on disk",
        ]
        header = (
            f"<div class='explain-caption'>LoRA adapter {_e(data['adapter'])} <span class='explain-muted'>"
            f"{_e(data['formula'])}</span></div><div class='explain-tl-facts'>"
            + "".join(f"<span class='explain-fact'>{_e(f)}</span>" for f in facts)
            + f"</div><div class='explain-muted'>applied with {_e(data['applied_with'])}</div>"
        )
        more = len(data["modules"]) - len(modules)
        super().__init__(
            header, figure, f"<div class='explain-muted'>… and {more} more layers</div>" if more > 0 else ""
        )

    def __repr__(self) -> str:
        return f"explain.widgets.AdapterView({self.data['adapter']!r}, {self.data['layers']} layers)"
