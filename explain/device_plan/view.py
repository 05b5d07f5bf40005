"""Two views of a Plan: plain text for a terminal (`print(plan)`), HTML for a notebook (`plan` as a cell's value).

Plain HTML and CSS, no widget library; every string from the model or the caller goes through html.escape.
"""

from __future__ import annotations

import html as _html

from ..utils.units import size_text
from .memory import device_label

COLOURS = {"cpu": "#e8a33d", "mps": "#9b6ad6", "disk": "#c8553d"}
GPU_COLOURS = ("#3d7be8", "#2fa37a", "#5bb8d6", "#6c7fd9", "#3aa0a0", "#4f9a4f", "#2f6fb0", "#7aa5e8")
STATUS_COLOURS = {"fits": "#2f9a5a", "fits with cpu offload": "#c98a1b", "does not fit": "#c8553d"}


def colour(device) -> str:
    if isinstance(device, int):
        return GPU_COLOURS[device % len(GPU_COLOURS)]
    return COLOURS.get(str(device), "#888888")


def groups(plan) -> list:
    """Units with consecutive decoder layers on one device folded into a range: (label, device, bytes, count, each)."""
    rows: list[dict] = []
    for unit in plan.units:
        last = rows[-1] if rows else None
        if (
            last is not None
            and unit["layer"]
            and last["layer"]
            and last["device"] == unit["device"]
            and last["each"] == unit["bytes"]
        ):
            last["names"].append(unit["name"])
            last["bytes"] = None if unit["bytes"] is None else last["bytes"] + unit["bytes"]
            continue
        rows.append(
            {
                "names": [unit["name"]],
                "device": unit["device"],
                "bytes": unit["bytes"],
                "each": unit["bytes"],
                "layer": unit["layer"],
                "tied_to": unit["tied_to"],
            }
        )
    out = []
    for row in rows:
        names = row["names"]
        label = names[0]
        if len(names) > 1:
            prefix, _, first = names[0].rpartition(".")
            label = f"{prefix}.{first}-{names[-1].rpartition('.')[2]}"
        out.append(
            {
                "label": label,
                "device": row["device"],
                "bytes": row["bytes"],
                "count": len(names),
                "each": row["each"],
                "tied_to": row["tied_to"],
            }
        )
    return out


def _bytes_cell(row) -> str:
    if row["bytes"] is None:  # a replayed trace without its model: sizes unknown
        return f"{row['count']} layers" if row["count"] > 1 else "-"
    if row["tied_to"] and not row["bytes"]:
        return f"0 B (tied: shares {row['tied_to']})"
    if row["count"] > 1:
        return f"{row['count']} x {size_text(row['each'])} = {size_text(row['bytes'])}"
    return size_text(row["bytes"])


def device_rows(plan) -> list:
    """One row per device: what it has, what accelerate was allowed, the weights and KV cache it holds."""
    kv = (plan.kv_cache or {}).get("per_device", {})
    rows = []
    for device in plan.devices:
        weights, cache = plan.device_bytes.get(device, 0), kv.get(device, 0)
        has = plan.memory.get(device)
        if device == "disk" and not weights:
            continue
        rows.append(
            {
                "device": device,
                "label": device_label(device),
                "weights": weights,
                "kv": cache,
                "has": has,
                "allowed": plan.max_memory.get(device),
                "used": weights + cache,
            }
        )
    return rows


def kv_formula(kv: dict) -> str:
    return (
        f"{kv['layers']} layers x 2 (K and V) x {kv['kv_heads']} kv heads x {kv['head_dim']} head_dim x "
        f"{kv['element_bytes']} bytes x {kv['context']} tokens x batch {kv['batch']} = {size_text(kv['bytes'])}"
    )


def header(plan) -> list:
    if plan.parameters is None:
        count = "parameter count not recorded"
    elif plan.parameters >= 1e9:
        count = f"{plan.parameters / 1e9:.2f} B parameters"
    else:
        count = f"{plan.parameters / 1e6:.1f} M parameters"
    return [
        f"{plan.architecture}, {count}, {plan.dtype}; config: {plan.where}",
        f"hardware: {plan.hardware} - {plan.hardware_description}",
        f"device_map={plan.strategy!r}, decoder layers kept whole: {', '.join(plan.no_split_module_classes) or '-'}",
    ]


# -- text --------------------------------------------------------------------------------------------------------------
def text(plan) -> str:
    lines = [f"Device plan for {plan.name}"] + ["  " + line for line in header(plan)]
    allowed = ", ".join(f"{device_label(d)} {size_text(v)}" for d, v in plan.max_memory.items() if v is not None)
    if allowed:
        lines.append(f"  max_memory given to infer_auto_device_map: {allowed}")
    lines += ["", f"  {'device':<8} {'weights':>11} {'KV cache':>11} {'has':>11}   use"]
    for row in device_rows(plan):
        has = row["has"]
        share = row["used"] / has if has else None
        bar = ""
        if share is not None:
            filled = min(24, round(24 * share))
            bar = "[" + "#" * filled + "-" * (24 - filled) + f"] {share:.0%}" + (" OVER" if share > 1 else "")
        lines.append(
            f"  {row['label']:<8} {size_text(row['weights']):>11} "
            f"{size_text(row['kv']) if row['kv'] else '-':>11} "
            f"{size_text(has) if has is not None else '-':>11}   {bar}"
        )
    lines += ["", "  where each piece goes"]
    table = groups(plan)
    width = max((len(r["label"]) for r in table), default=10) + 2
    for row in table:
        lines.append(f"  {row['label']:<{width}} {device_label(row['device']):<8} {_bytes_cell(row)}")
    if plan.kv_cache:
        lines += ["", f"  KV cache: {kv_formula(plan.kv_cache)}"]
    lines += ["", f"  verdict: {plan.status.upper()}"] + [f"    - {reason}" for reason in plan.reasons]
    if plan.suggestions:
        lines.append("  smallest change first (each one planned again):")
        lines += [f"    - {s['change']}: {s['summary']}" for s in plan.suggestions]
    if plan.notes:
        lines.append("  notes:")
        lines += [f"    - {note}" for note in plan.notes]
    lines += ["", f"  device_map = {plan.device_map!r}"]
    return "\n".join(lines)


# -- HTML --------------------------------------------------------------------------------------------------------------
STYLE = """<style>
.xdp{font-family:system-ui,-apple-system,sans-serif;font-size:13px;line-height:1.4;max-width:980px}
.xdp h4{margin:4px 0 2px 0;font-size:15px}.xdp .sub{color:#666;margin:0 0 8px 0}
.xdp .dev{display:flex;align-items:center;gap:8px;margin:3px 0}
.xdp .name{width:64px;font-family:monospace}.xdp .bar{flex:1;height:16px;background:#eee;border-radius:3px;
display:flex;overflow:hidden;position:relative}
.xdp .seg{height:100%;flex-shrink:0}.xdp .bar.over{outline:2px solid #c8553d}
.xdp .cap{position:absolute;top:-2px;bottom:-2px;width:2px;background:#c8553d}
.xdp .kv{background-image:repeating-linear-gradient(45deg,rgba(255,255,255,.5) 0 3px,
transparent 3px 6px)}.xdp .held{background:repeating-linear-gradient(45deg,#ccc 0 3px,#e4e4e4 3px 6px)}
.xdp .fig{width:260px;font-family:monospace;font-size:12px;color:#333}
.xdp table{border-collapse:collapse;margin:8px 0}
.xdp td,.xdp th{padding:1px 10px 1px 0;text-align:left;font-size:13px}
.xdp td.mono{font-family:monospace}.xdp .chip{display:inline-block;width:10px;height:10px;border-radius:2px;
margin-right:4px;vertical-align:middle}
.xdp .verdict{padding:6px 10px;border-radius:4px;margin:8px 0;color:#fff}.xdp ul{margin:2px 0 6px 18px;padding:0}
.xdp details{margin-top:6px}.xdp pre{white-space:pre-wrap;font-size:11px;margin:4px 0}
</style>"""


def _e(value) -> str:
    return _html.escape(str(value))


def _bars(plan) -> str:
    """Each bar is the device's memory: weights (solid), KV cache (hatched), what transformers keeps free (grey, at
    the end). A device asked to hold more than it has gets a red bar scaled to the need, its capacity marked."""
    out = []
    for row in device_rows(plan):
        has, used = row["has"], row["used"]
        scale = max(has or 0, used) or 1
        segments = [
            (row["weights"], colour(row["device"]), "", f"weights {size_text(row['weights'])}"),
            (row["kv"], colour(row["device"]), " kv", f"KV cache {size_text(row['kv'])}"),
        ]
        held = has - row["allowed"] if has is not None and row["allowed"] is not None else 0
        bar = "".join(
            f'<div class="seg{cls}" style="width:{100 * size / scale:.2f}%;background-color:{fill}" '
            f'title="{_e(tip)}"></div>'
            for size, fill, cls, tip in segments
            if size > 0
        )
        if 0 < held and used + held <= has:
            bar += (
                f'<div class="seg held" style="width:{100 * held / scale:.2f}%;margin-left:auto" title="'
                f'{_e("kept free by transformers: " + size_text(held))}"></div>'
            )
        over = has is not None and used > has
        if over:
            bar += f'<div class="cap" style="left:{100 * has / scale:.2f}%" title="{_e(size_text(has))}"></div>'
        if has is None:
            figure = f"{size_text(row['weights'])} + KV {size_text(row['kv'])}, capacity not recorded"
        else:
            figure = (
                f"{size_text(row['weights'])}"
                + (f" + KV {size_text(row['kv'])}" if row["kv"] else "")
                + f" of {size_text(has)}"
                + (f", {size_text(used - has)} over" if over else "")
            )
        out.append(
            f'<div class="dev"><span class="name">{_e(row["label"])}</span><div class="bar'
            f'{" over" if over else ""}">{bar}</div><span class="fig">{_e(figure)}</span></div>'
        )
    legend = (
        '<p class="sub">solid: weights; hatched: KV cache; grey: kept free by transformers\' headroom rules; '
        "hover a segment for its size</p>"
    )
    return "".join(out) + legend


def _table(plan) -> str:
    body = "".join(
        f'<tr><td class="mono">{_e(row["label"])}</td><td><span class="chip" style="background:'
        f'{colour(row["device"])}"></span>{_e(device_label(row["device"]))}</td><td>{_e(_bytes_cell(row))}</td></tr>'
        for row in groups(plan)
    )
    return f"<table><tr><th>module</th><th>device</th><th>bytes</th></tr>{body}</table>"


def html(plan) -> str:
    parts = [
        STYLE,
        '<div class="xdp">',
        f"<h4>Device plan for {_e(plan.name)}</h4>",
        '<p class="sub">' + "<br>".join(_e(line) for line in header(plan)) + "</p>",
        _bars(plan),
    ]
    if plan.kv_cache:
        parts.append(f'<p class="sub">KV cache (hatched): {_e(kv_formula(plan.kv_cache))}</p>')
    parts.append(_table(plan))
    parts.append(
        f'<div class="verdict" style="background:{STATUS_COLOURS.get(plan.status, "#888")}">'
        f"<b>{_e(plan.status)}</b><ul>" + "".join(f"<li>{_e(r)}</li>" for r in plan.reasons) + "</ul></div>"
    )
    if plan.suggestions:
        parts.append(
            "<b>Smallest change first</b> (each one planned again)<ul>"
            + "".join(f"<li><code>{_e(s['change'])}</code>: {_e(s['summary'])}</li>" for s in plan.suggestions)
            + "</ul>"
        )
    if plan.notes:
        parts.append("<b>Notes</b><ul>" + "".join(f"<li>{_e(n)}</li>" for n in plan.notes) + "</ul>")
    allowed = ", ".join(f"{device_label(d)}: {size_text(v)}" for d, v in plan.max_memory.items() if v is not None)
    parts.append(
        f"<details><summary>device_map, as accelerate returned it</summary><pre>{_e(plan.device_map)}</pre>"
        f"<pre>max_memory given to infer_auto_device_map: {_e(allowed)}</pre></details></div>"
    )
    return "".join(parts)
