"""The dashboard as plain HTML, for places with no widget front end (nbconvert HTML, a GitHub preview).

Built from a DashboardState (so from the trace), with every value escaped, numbers included: a prompt can hold
anything, `<script>` included, and a shared trace file can hold markup in any field (a step's rank, a token id);
all of it must show as text. Readable without its inline styles, which some renderers strip.

`StaticFallback` gives a widget that summary where its live view cannot draw. A reopened notebook has no widget
models (the kernel that made them is gone), and JupyterLab, which always prefers the widget view of an output
bundle over its text/html, writes "Error displaying widget: model not found" in its place. So a StaticFallback
displays two outputs: the widget (widget view, text/html, text/plain: the bundle every other front end reads) and,
right after it, `fallback_html`: the summary and "re-run this cell to make it live", hidden, with a style sheet
that in JupyterLab and Notebook 7 shows it (and hides the error) only when the widget before it failed to draw.
"""

from __future__ import annotations

from .safe import esc, fmt, number
from .state import DashboardState, visible

MAX_STEP_ROWS = 200


def prob_color(p: float | None) -> str:
    """Red (unlikely) to green (confident), translucent so text stays readable on light and dark themes."""
    p = number(p)
    if p is None:
        return "rgba(128,128,128,0.25)"
    return f"hsla({120 * max(0.0, min(1.0, p)):.0f}, 75%, 45%, 0.28)"


def summary_html(state: DashboardState, title: str = "explain") -> str:
    parts = [
        '<div class="explain-static" style="font-family: system-ui, sans-serif; font-size: 13px; '
        'line-height: 1.45; max-width: 1000px">'
    ]
    model = state.model_name()
    heading = f"{title}: the text-generation pipeline" + (f" of {model}" if model else "")
    if state.run:
        heading += f", call {state.run}"  # escaped below, with the rest of the heading
    parts.append(f"<h3 style='margin: 4px 0'>{esc(heading)}</h3>")
    parts.append(_timeline(state))
    if state.encode is not None:
        parts.append(_prompt(state))
    if state.settings is not None:
        parts.append(_generated(state))
        parts.append(_steps(state))
    parts.append(
        "<p style='color: grey; font-size: 11px'>Static summary of the trace; run the notebook with "
        "ipywidgets to get the interactive dashboard.</p></div>"
    )
    return "".join(parts)


def _timeline(state: DashboardState) -> str:
    rows = [
        "<table style='border-collapse: collapse'><thead><tr><th style='text-align:left'>stage</th>"
        "<th style='text-align:right; padding: 0 8px'>time</th><th style='text-align:left'>facts</th></tr>"
        "</thead><tbody>"
    ]
    for row in state.stage_rows():
        facts = " · ".join(f for f in row["facts"] if f) or ("waiting" if row["status"] == "waiting" else "")
        rows.append(
            f"<tr><td><b>{esc(row['stage'])}</b></td>"
            f"<td style='text-align:right; padding: 0 8px; white-space: nowrap'>"
            f"{esc(row['time'])}</td><td style='text-align:left'>{esc(facts)}</td></tr>"
        )
    rows.append("</tbody></table>")
    return "".join(rows)


def _prompt(state: DashboardState) -> str:
    chips = []
    for text, token_id, start, end, special, role in state.prompt_tokens():
        hover = (
            f"id {token_id} · characters {start}-{end}"
            + (f" · {role}" if role else "")
            + (" · special token" if special else "")
        )
        style = "border: 1px dashed #c60; font-weight: bold" if special else "border: 1px solid #bbb"
        chips.append(
            f"<code title='{esc(hover)}' style='{style}; margin: 1px; padding: 0 2px; display: "
            f"inline-block'>{esc(visible(str(text)))}<sub style='color: grey'>{fmt(token_id)}</sub></code>"
        )
    count = fmt(state.encode.data.get("count", len(chips)))
    kind = "chat template" if state.encode.data.get("kind_of_input") == "chat" else "text"
    note = (
        f"<div style='color: #9a6700'>{esc(state.prompt_caption())}</div>"
        if state.encode.data.get("chat_template_skipped")
        else ""
    )
    return f"<h4 style='margin: 8px 0 2px'>Prompt: {count} tokens ({esc(kind)})</h4>{note}<div>{''.join(chips)}</div>"


def _generated(state: DashboardState) -> str:
    spans = []
    for i, (text, prob, forced) in enumerate(state.generated_tokens()):
        hover = f"step {i} · p = {fmt(prob, '.3f')}"
        if forced:
            hover += " · forced"
        spans.append(
            f"<span title='{hover}' style='background: {prob_color(prob)}"
            f"{'; outline: 2px solid #c60' if forced else ''}'>{esc(text)}</span>"
        )
    steps = state.steps()
    status = f"{len(steps)} tokens" + (f", stopped by {state.stop_reason}" if state.stop_reason else "")
    return (
        f"<h4 style='margin: 8px 0 2px'>Generated text ({esc(status)}), each token shaded by its probability "
        f"(red unlikely, green confident)</h4><div style='white-space: pre-wrap; border: 1px solid #ddd; "
        f"padding: 4px'>{''.join(spans)}</div>"
    )


def _steps(state: DashboardState) -> str:
    steps = state.steps()
    if not steps:
        return ""
    rows = [
        "<details><summary>Every step: the chosen token and the runners-up</summary>"
        "<table style='border-collapse: collapse; font-size: 12px'><thead><tr><th>step</th><th>token</th>"
        "<th>p</th><th>rank</th><th>entropy</th><th>runners-up</th></tr></thead><tbody>"
    ]
    for step in steps[:MAX_STEP_ROWS]:
        texts = step.get("token_texts") if isinstance(step.get("token_texts"), dict) else {}
        top = step.get("probs_top") if isinstance(step.get("probs_top"), dict) else {}
        runners = [
            f"{esc(visible(str(texts.get(str(i), '?'))))} {fmt(v, '.2f')}"
            for i, v in zip(top.get("ids") or [], top.get("values") or [], strict=False)
            if i != step.get("token_id")
        ][:3]
        rows.append(
            f"<tr><td>{fmt(step.get('step'))}</td><td><code>{esc(visible(str(step.get('token', ''))))}"
            f"</code></td><td>{fmt(step.get('prob'), '.3f', '')}</td><td>{fmt(step.get('rank'), '', '')}</td>"
            f"<td>{fmt(step.get('entropy_bits'), '.2f')} bits</td><td>{'   '.join(runners)}</td></tr>"
        )
    rows.append("</tbody></table>")
    if len(steps) > MAX_STEP_ROWS:
        rows.append(f"<p>… and {len(steps) - MAX_STEP_ROWS} more steps in the trace.</p>")
    rows.append("</details>")
    return "".join(rows)


RERUN = "re-run this cell to make it live"
# JupyterLab's widget renderer marks its output node `jupyter-widgets` only when it failed (its own view is a child)
_WIDGET_FAILED = ".jp-OutputArea-child:has(> .jp-OutputArea-output.jupyter-widgets)"
# the summary, a top-level element of its output's HTML. Each :has() looks only at children (>, +), never at all
# descendants: Chrome re-checks a :has() with a descendant in it on every change inside the outputs (each redraw of
# the step chart), which made every style recalculation of a click's redraw about twice as slow
_FALLBACK = "> .jp-OutputArea-output > .explain-fallback"
FALLBACK_STYLE = (
    "<style>"
    # hidden while the widget before it draws (or loads); its whole output, so it takes no room
    f".jp-OutputArea-child:has({_FALLBACK}) {{ display: none; }}"
    # the widget failed to draw (no model: a reopened notebook): the summary instead of JupyterLab's error
    f"{_WIDGET_FAILED} + .jp-OutputArea-child:has({_FALLBACK}) {{ display: flex; }}"
    f"{_WIDGET_FAILED} + .jp-OutputArea-child {_FALLBACK} {{ display: block !important; }}"
    f"{_WIDGET_FAILED}:has(+ .jp-OutputArea-child {_FALLBACK}) {{ display: none; }}"
    "</style>"
)


def fallback_html(summary: str) -> str:
    """What a widget's second output holds (see the module docstring): the summary and one line saying how to make
    it live, hidden unless JupyterLab failed to draw the widget before it."""
    return (
        f"{FALLBACK_STYLE}<div class='explain-fallback' style='display: none'>"
        f"<p class='explain-rerun' style='margin: 2px 0 4px; font-weight: 600'>\u27f3 {RERUN}</p>{summary}</div>"
    )


class StaticFallback:
    """A widget whose display also carries a static text/html summary, refreshed through its display id, and whose
    summary replaces JupyterLab's error where the widget cannot draw (fallback_html)."""

    def _static_html(self) -> str:
        raise NotImplementedError

    def _repr_mimebundle_(self, include=None, exclude=None, **kwargs):
        bundle = {"text/plain": repr(self), "text/html": self._static_html()}
        if getattr(self, "_view_name", None) is not None:
            bundle["application/vnd.jupyter.widget-view+json"] = {
                "version_major": 2,
                "version_minor": 0,
                "model_id": self.model_id,
            }
        return bundle

    def _fallback_bundle(self) -> dict:
        return {"text/html": fallback_html(self._static_html())}

    def _ipython_display_(self, **kwargs):
        from IPython.display import display

        handle = display(self._repr_mimebundle_(), raw=True, display_id=True)
        fallback = display(self._fallback_bundle(), raw=True, display_id=True)
        self._display_handles = [h for h in getattr(self, "_display_handles", []) if h is not None] + [handle]
        self._fallback_handles = [h for h in getattr(self, "_fallback_handles", []) if h is not None] + [fallback]

    def _refresh_displays(self) -> None:
        """Re-send both outputs to every place this widget was displayed, so the static HTML is up to date."""
        handles = [h for h in getattr(self, "_display_handles", []) if h is not None]
        if handles:
            bundle = self._repr_mimebundle_()
            for handle in handles:
                handle.update(bundle, raw=True)
        fallbacks = [h for h in getattr(self, "_fallback_handles", []) if h is not None]
        if fallbacks:
            bundle = self._fallback_bundle()
            for handle in fallbacks:
                handle.update(bundle, raw=True)
