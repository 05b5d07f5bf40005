"""The dashboard as plain HTML, for places with no widget front end (nbconvert HTML, a GitHub preview).

Built from a DashboardState (so from the trace), with every value escaped, numbers included: a prompt can hold
anything, `<script>` included, and a shared trace file can hold markup in any field (a step's rank, a token id);
all of it must show as text. Readable without its inline styles, which some renderers strip.
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
            f"{esc(row['time'])}</td><td>{esc(facts)}</td></tr>"
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
