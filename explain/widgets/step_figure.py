"""The step view: one plotly FigureWidget showing what happened at one step, and curves over all steps.

Top rows, left to right: the model's logits for the top candidates, the scores after each logits processor
(repetition penalty, temperature, top-k, top-p, ...), the probabilities the token was drawn from, and, on
request, a what-if distribution; the chosen token is orange. Bottom row: the chosen token's probability,
the entropy of the distribution and the time of each step, with the selected step ringed.

The figure is built once with a fixed set of axis slots. Each redraw computes the properties it wants,
sends only those that changed, in one `plotly_update` (no per-property validation), so redrawing during
generation stays cheap.
"""

from __future__ import annotations

import math
from html import escape

import plotly.graph_objects as go

from .state import visible

CANDIDATES = 8  # bars per panel
SLOTS = 10  # model + up to 7 processors + probabilities + what-if
COLUMNS = 4  # panels per row; more wrap to a second row
CURVES = (("p(chosen token)", "#0969da", ".2f"), ("entropy (bits)", "#8250df", ".2f"),
          ("step time (ms)", "#57606a", ".0f"))
CHOSEN, OTHER_LOGIT, OTHER_PROB, WHAT_IF = "#e8590c", "#8fb3de", "#0969da", "#2da44e"
MARGIN = {"l": 96, "r": 24, "t": 8, "b": 44}
TITLE, PANEL, TICKS, CURVE = 26, 168, 30, 120  # pixel heights: a title, a panel of bars, its axis, the curves
GRID = "rgba(128,128,128,0.18)"


def _axis(n: int, letter: str) -> str:
    return f"{letter}axis{n if n > 1 else ''}"


def _ref(n: int, letter: str) -> str:
    return f"{letter}{n if n > 1 else ''}"


def label(text: str, width: int = 12) -> str:
    """A token as a tick label: whitespace visible, shortened, and escaped (plotly reads a little HTML)."""
    shown = visible(text)
    if len(shown) > width:
        shown = shown[: width - 1] + "\u2026"
    return escape(shown, quote=False)


def processor_title(processor: dict) -> str:
    args = {k: v for k, v in (processor.get("args") or {}).items() if not isinstance(v, (list, dict))}
    name = processor.get("name", "processor").replace("_", "-")
    values = [f"{v:g}" if isinstance(v, float) else str(v) for v in args.values()]
    title = f"{name} {' '.join(values)}".strip()
    if processor.get("removed"):
        title += f" (keeps {processor.get('kept')})"
    return title


def panels(step: dict, what_if: dict | None = None) -> list[dict]:
    """The panels of one step: {title, ids, values, kind: logit|prob|what-if, chosen}."""
    chosen = step.get("token_id")
    top = step.get("logits_top") or {"ids": [], "values": []}
    result = [{"title": "model logits", "ids": top["ids"], "values": top["values"], "kind": "logit",
               "chosen": chosen}]
    for processor in step.get("processors") or []:
        title = processor_title(processor)
        if processor.get("top") is None:
            result.append(dict(result[-1], title=title + ": no change"))
        else:
            result.append({"title": title, "ids": processor["top"]["ids"], "values": processor["top"]["values"],
                           "kind": "logit", "chosen": chosen})
    probs = step.get("probs_top") or {"ids": [], "values": []}
    kept = [(i, v) for i, v in zip(probs["ids"], probs["values"]) if v > 0]
    result.append({"title": "probabilities, " + ("sampled" if step.get("method") == "sample" else "greedy: the top"),
                   "ids": [i for i, _ in kept], "values": [v for _, v in kept], "kind": "prob", "chosen": chosen})
    if what_if is not None:
        s = what_if.get("settings", {})
        knobs = (f"T {s.get('temperature'):g}, k {s.get('top_k')}, p {s.get('top_p'):g}" if s.get("do_sample")
                 else "greedy")
        if s.get("repetition_penalty") not in (None, 1.0):
            knobs += f", rep {s['repetition_penalty']:g}"
        kept = [(i, v) for i, v in zip(what_if["ids"], what_if["probs"]) if v > 0]
        result.append({"title": f"what if? {knobs}", "ids": [i for i, _ in kept], "values": [v for _, v in kept],
                       "kind": "what-if", "chosen": what_if.get("recorded_token")})
    return result


def _geometry(count: int) -> tuple[int, list[tuple[list[float], list[float]]], list[float], dict]:
    """Figure height, (x domain, y domain) per panel, the curves' y domain, and where titles go, in paper units."""
    rows = max(1, math.ceil(count / COLUMNS))
    columns = min(max(count, 1), COLUMNS)
    row_height = TITLE + PANEL + TICKS
    plot = rows * row_height + TITLE + CURVE + TICKS + 10
    gap = 0.085
    width = (1 - gap * (columns - 1)) / columns
    boxes = []
    for index in range(count):
        row, column = divmod(index, columns)
        top = plot - row * row_height - TITLE
        left = column * (width + gap)
        boxes.append(([left, left + width], [(top - PANEL) / plot, top / plot]))
    curve_top = plot - rows * row_height - TITLE
    return plot + MARGIN["t"] + MARGIN["b"], boxes, [0, curve_top / plot], {"row": TITLE / plot}


def _title(text: str, x: float, y: float, anchor: str = "center") -> dict:
    return {"text": f"<b>{text}</b>", "x": x, "y": y, "xref": "paper", "yref": "paper", "xanchor": anchor,
            "yanchor": "bottom", "showarrow": False, "font": {"size": 12}}


class StepFigure:
    """Owns the FigureWidget (`.widget`) and turns step records into plotly updates."""

    def __init__(self):
        layout = {"margin": MARGIN, "showlegend": False, "bargap": 0.3, "plot_bgcolor": "rgba(0,0,0,0)",
                  "paper_bgcolor": "rgba(0,0,0,0)", "font": {"size": 11}, "hoverlabel": {"font": {"size": 12}},
                  "annotations": [], "dragmode": False}
        data = []
        for slot in range(SLOTS):
            n = slot + 1
            layout[_axis(n, "x")] = {"domain": [0, 1], "anchor": _ref(n, "y"), "visible": False, "zeroline": False,
                                     "fixedrange": True, "gridcolor": GRID, "nticks": 4}
            layout[_axis(n, "y")] = {"domain": [0.5, 1], "anchor": _ref(n, "x"), "visible": False,
                                     "range": [CANDIDATES - 0.5, -0.5], "fixedrange": True, "tickmode": "array",
                                     "tickvals": [], "ticktext": [], "tickfont": {"family": "monospace", "size": 11},
                                     "showgrid": False}
            data.append({"type": "bar", "orientation": "h", "x": [], "y": [], "xaxis": _ref(n, "x"),
                         "yaxis": _ref(n, "y"), "visible": False, "textposition": "inside", "insidetextanchor": "end",
                         "textfont": {"size": 10}, "cliponaxis": True, "hovertemplate": "%{customdata}<extra></extra>",
                         "marker": {"color": []}})
        for i, (title, color, number) in enumerate(CURVES):
            n = SLOTS + 1 + i
            left = i * (1 / 3 + 0.02)
            layout[_axis(n, "x")] = {"domain": [left, left + 1 / 3 - 0.04], "anchor": _ref(n, "y"), "zeroline": False,
                                     "title": {"text": "step", "font": {"size": 11}, "standoff": 4},
                                     "gridcolor": GRID, "rangemode": "tozero", "fixedrange": True}
            layout[_axis(n, "y")] = {"domain": [0, 0.3], "anchor": _ref(n, "x"), "zeroline": False, "gridcolor": GRID,
                                     "rangemode": "tozero", "fixedrange": True, "nticks": 4}
            data.append({"type": "scatter", "mode": "lines+markers", "x": [], "y": [], "xaxis": _ref(n, "x"),
                         "yaxis": _ref(n, "y"), "line": {"color": color, "width": 1.5}, "marker": {"size": 4},
                         "hovertemplate": f"step %{{x}}<br>{title}: %{{y:{number}}}<extra></extra>"})
        for i in range(len(CURVES)):
            n = SLOTS + 1 + i
            data.append({"type": "scatter", "mode": "markers", "x": [], "y": [], "xaxis": _ref(n, "x"),
                         "yaxis": _ref(n, "y"), "hoverinfo": "skip",
                         "marker": {"size": 13, "color": "rgba(0,0,0,0)", "line": {"color": CHOSEN, "width": 2.5}}})
        self.widget = go.FigureWidget(data=data, layout=layout)
        # responsive: plotly follows window resizes (timeline.js sends one once the figure has rendered),
        # so the figure takes the notebook's width rather than plotly's default 700 px
        self.widget._config = {"responsive": True, "displayModeBar": False}
        self._layout_sent: dict = {}
        self._traces_sent: dict[int, dict] = {}
        self.panel_titles: list[str] = []
        self.show_step(None)

    # -- sending only what changed -----------------------------------------------------------------------
    def _update(self, traces: dict[int, dict], layout: dict) -> None:
        relayout = {k: v for k, v in layout.items() if self._layout_sent.get(k, ...) != v}
        changed = [i for i, props in traces.items() if self._traces_sent.get(i) != props]
        restyle = {}
        if changed:
            keys = sorted({k for i in changed for k in traces[i]})
            restyle = {k: [traces[i].get(k) for i in changed] for k in keys}
        if not relayout and not restyle:
            return
        self.widget.plotly_update(restyle_data=restyle or None, relayout_data=relayout or None,
                                  trace_indexes=changed or None)
        self._layout_sent.update(relayout)
        for i in changed:
            self._traces_sent[i] = traces[i]

    # -- the candidates of one step ----------------------------------------------------------------------
    def show_step(self, step: dict | None, what_if: dict | None = None) -> None:
        shown = panels(step, what_if)[:SLOTS] if step else []
        height, boxes, curves, _ = _geometry(len(shown))
        layout: dict = {"height": height}
        traces: dict[int, dict] = {}
        titles = []
        texts = dict(step.get("token_texts", {})) if step else {}
        if what_if is not None:
            texts.update({str(i): t for i, t in zip(what_if["ids"], what_if["tokens"])})
        for slot in range(SLOTS):
            n = slot + 1
            x_axis, y_axis = _axis(n, "x"), _axis(n, "y")
            if slot >= len(shown):
                traces[slot] = {"visible": False}
                layout[f"{x_axis}.visible"] = layout[f"{y_axis}.visible"] = False
                continue
            panel = shown[slot]
            ids, values = panel["ids"][:CANDIDATES], panel["values"][:CANDIDATES]
            words = [texts.get(str(i), texts.get(i, f"#{i}")) for i in ids]
            is_prob = panel["kind"] != "logit"
            other = WHAT_IF if panel["kind"] == "what-if" else OTHER_PROB if is_prob else OTHER_LOGIT
            traces[slot] = {
                "visible": True, "x": values, "y": list(range(len(ids))),
                "marker.color": [CHOSEN if i == panel["chosen"] else other for i in ids],
                "text": [f"{v:.0%}" if is_prob else f"{v:.1f}" for v in values],
                "customdata": [f"{label(w, 40)} (id {i})<br>{'probability' if is_prob else 'score'} {v:.4g}"
                               + ("<br>the chosen token" if i == panel["chosen"] else "")
                               for w, i, v in zip(words, ids, values)]}
            x_domain, y_domain = boxes[slot]
            layout[f"{x_axis}.visible"] = layout[f"{y_axis}.visible"] = True
            layout[f"{x_axis}.domain"], layout[f"{y_axis}.domain"] = x_domain, y_domain
            layout[f"{y_axis}.tickvals"] = list(range(len(ids)))
            layout[f"{y_axis}.ticktext"] = [f"<b>{label(w)}</b>" if i == panel["chosen"] else label(w)
                                            for w, i in zip(words, ids)]
            if is_prob:
                layout[f"{x_axis}.range"] = [0, max(values, default=1) * 1.05 or 1]
                layout[f"{x_axis}.tickformat"] = ".0%"
            else:  # logits are far from zero: start the bars near the smallest shown, so differences show
                low, high = min(values, default=0), max(values, default=1)
                span = (high - low) or 1.0
                layout[f"{x_axis}.range"] = [low - 0.4 * span, high + 0.05 * span]
                layout[f"{x_axis}.tickformat"] = ""
            titles.append(_title(f"{slot + 1}. {escape(panel['title'], quote=False)}", sum(x_domain) / 2,
                                 y_domain[1] + 0.012))
        for i in range(len(CURVES)):
            layout[f"{_axis(SLOTS + 1 + i, 'y')}.domain"] = curves
        curve_titles = [_title(title, i * (1 / 3 + 0.02), curves[1] + 0.012, "left")
                        for i, (title, _, _) in enumerate(CURVES)]
        layout["annotations"] = curve_titles + titles
        self.panel_titles = [p["title"] for p in shown]
        self._update(traces, layout)

    # -- curves over the steps -----------------------------------------------------------------------------
    def show_curves(self, steps: list[dict], selected: int | None) -> None:
        x = [s.get("step", i) for i, s in enumerate(steps)]
        series = [[s.get("prob") for s in steps], [s.get("entropy_bits") for s in steps],
                  [round(1000 * (s.get("forward_time") or 0.0), 1) for s in steps]]
        traces = {}
        for i, values in enumerate(series):
            traces[SLOTS + i] = {"x": x, "y": values}
            mark = selected is not None and 0 <= selected < len(steps)
            traces[SLOTS + len(CURVES) + i] = {"x": [x[selected]] if mark else [],
                                               "y": [values[selected]] if mark else []}
        self._update(traces, {})
