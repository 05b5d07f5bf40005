"""The dashboard as plain HTML, for places with no widget front end (nbconvert HTML, a GitHub preview).

Built from a DashboardState (so from the trace), with every piece of prompt and token text escaped: a
prompt can hold anything, `<script>` included, and must show as text. Readable without its inline styles,
which some renderers strip.
"""

from __future__ import annotations

from html import escape

from .state import DashboardState, visible

MAX_STEP_ROWS = 200


def prob_color(p: float | None) -> str:
    """Red (unlikely) to green (confident), translucent so text stays readable on light and dark themes."""
    if p is None:
        return "rgba(128,128,128,0.25)"
    return f"hsla({120 * max(0.0, min(1.0, p)):.0f}, 75%, 45%, 0.28)"


def _e(value) -> str:
    return escape(str(value), quote=True)


def summary_html(state: DashboardState, title: str = "explain") -> str:
    parts = [f'<div class="explain-static" style="font-family: system-ui, sans-serif; font-size: 13px; '
             f'line-height: 1.45; max-width: 1000px">']
    model = state.model_name()
    heading = f"{title}: the text-generation pipeline" + (f" of {model}" if model else "")
    if state.run:
        heading += f", call {state.run}"
    parts.append(f"<h3 style='margin: 4px 0'>{_e(heading)}</h3>")
    parts.append(_timeline(state))
    if state.encode is not None:
        parts.append(_prompt(state))
    if state.settings is not None:
        parts.append(_generated(state))
        parts.append(_steps(state))
    parts.append("<p style='color: grey; font-size: 11px'>Static summary of the trace; run the notebook with "
                 "ipywidgets to get the interactive dashboard.</p></div>")
    return "".join(parts)


def _timeline(state: DashboardState) -> str:
    rows = ["<table style='border-collapse: collapse'><thead><tr><th style='text-align:left'>stage</th>"
            "<th style='text-align:right; padding: 0 8px'>time</th><th style='text-align:left'>facts</th></tr>"
            "</thead><tbody>"]
    for row in state.stage_rows():
        facts = " · ".join(f for f in row["facts"] if f) or ("waiting" if row["status"] == "waiting" else "")
        rows.append(f"<tr><td><b>{_e(row['stage'])}</b></td>"
                    f"<td style='text-align:right; padding: 0 8px; white-space: nowrap'>"
                    f"{_e(row['time'])}</td><td>{_e(facts)}</td></tr>")
    rows.append("</tbody></table>")
    return "".join(rows)


def _prompt(state: DashboardState) -> str:
    chips = []
    for text, token_id, start, end, special, role in state.prompt_tokens():
        hover = f"id {token_id} · characters {start}-{end}" + (f" · {role}" if role else "") + \
                (" · special token" if special else "")
        style = "border: 1px dashed #c60; font-weight: bold" if special else "border: 1px solid #bbb"
        chips.append(f"<code title='{_e(hover)}' style='{style}; margin: 1px; padding: 0 2px; display: "
                     f"inline-block'>{_e(visible(text))}<sub style='color: grey'>{token_id}</sub></code>")
    count = state.encode.data.get("count", len(chips))
    kind = "chat template" if state.encode.data.get("kind_of_input") == "chat" else "text"
    note = (f"<div style='color: #9a6700'>{_e(state.prompt_caption())}</div>"
            if state.encode.data.get("chat_template_skipped") else "")
    return (f"<h4 style='margin: 8px 0 2px'>Prompt: {count} tokens ({_e(kind)})</h4>{note}"
            f"<div>{''.join(chips)}</div>")


def _generated(state: DashboardState) -> str:
    spans = []
    for i, (text, prob, forced) in enumerate(state.generated_tokens()):
        hover = f"step {i} · p = {prob:.3f}" if prob is not None else f"step {i}"
        if forced:
            hover += " · forced"
        spans.append(f"<span title='{_e(hover)}' style='background: {prob_color(prob)}"
                     f"{'; outline: 2px solid #c60' if forced else ''}'>{_e(text)}</span>")
    steps = state.steps()
    status = f"{len(steps)} tokens" + (f", stopped by {state.stop_reason}" if state.stop_reason else "")
    return (f"<h4 style='margin: 8px 0 2px'>Generated text ({_e(status)}), each token shaded by its probability "
            f"(red unlikely, green confident)</h4><div style='white-space: pre-wrap; border: 1px solid #ddd; "
            f"padding: 4px'>{''.join(spans)}</div>")


def _steps(state: DashboardState) -> str:
    steps = state.steps()
    if not steps:
        return ""
    rows = ["<details><summary>Every step: the chosen token and the runners-up</summary>"
            "<table style='border-collapse: collapse; font-size: 12px'><thead><tr><th>step</th><th>token</th>"
            "<th>p</th><th>rank</th><th>entropy</th><th>runners-up</th></tr></thead><tbody>"]
    for step in steps[:MAX_STEP_ROWS]:
        texts = step.get("token_texts", {})
        top = step.get("probs_top", {"ids": [], "values": []})
        runners = [f"{visible(texts.get(str(i), texts.get(i, '?')))} {v:.2f}"
                   for i, v in zip(top["ids"], top["values"]) if i != step.get("token_id")][:3]
        prob = step.get("prob")
        rows.append(f"<tr><td>{step.get('step')}</td><td><code>{_e(visible(step.get('token', '')))}</code></td>"
                    f"<td>{'' if prob is None else f'{prob:.3f}'}</td><td>{_e(step.get('rank', ''))}</td>"
                    f"<td>{step.get('entropy_bits', 0):.2f} bits</td><td>{_e('   '.join(runners))}</td></tr>")
    rows.append("</tbody></table>")
    if len(steps) > MAX_STEP_ROWS:
        rows.append(f"<p>… and {len(steps) - MAX_STEP_ROWS} more steps in the trace.</p>")
    rows.append("</details>")
    return "".join(rows)
