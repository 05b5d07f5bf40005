"""bench.gpu's results as a summary (in the JSON) and a markdown page: one table per section, the checks, the
targets. Sections not run yet, skipped or broken say so in their row, so a partial file reads as one."""

from __future__ import annotations

LABELS = {
    "explain_traced": "explain, traced (default capture)",
    "explain_untraced": "explain, tracing off",
    "explain_widget": "explain + live widget sink",
    "transformers": "transformers generate",
}
SECTION_TITLES = {
    "weights": "Weights",
    "load": "Cold load (fresh process, the seed's call)",
    "speed": "Speed, side by side",
    "fidelity": "Fidelity (bfloat16, greedy)",
    "offload": 'device_map="auto" with part of the model on the CPU',
    "backend": "The transformers backend",
}


def summary(results: dict) -> dict:
    sections = results.get("sections", {})
    checks = {}
    if sections.get("fidelity", {}).get("status") == "ok":
        checks["fidelity"] = sections["fidelity"]["passed"]
    if sections.get("offload", {}).get("status") == "ok":
        checks["placement"] = sections["offload"]["passed"]
    targets = sections.get("speed", {}).get("targets", []) if sections.get("speed", {}).get("status") == "ok" else []
    return {
        "sections": {name: entry.get("status") for name, entry in sections.items()},
        "sections_ok": all(entry.get("status") in ("ok", "not available") for entry in sections.values()),
        "checks": checks,
        "checks_passed": all(checks.values()) if checks else None,
        "targets": {t["key"]: {"value": t["value"], "met": t["met"], "rule": t["rule"]} for t in targets},
    }


def _num(value, digits=1, suffix=""):
    return "n/a" if value is None else f"{value:,.{digits}f}{suffix}"


def _gb(value):
    return "n/a" if value is None else f"{value / 1e9:,.2f} GB"


def markdown(results: dict, json_name: str) -> str:
    m, s = results["machine"], results["settings"]
    where = m.get("gpu") or f"{m.get('cpu')} ({m.get('cpus')} CPUs, no GPU)"
    lines = [
        f"# explain on {where}, {results['date']}{' (smoke run)' if s.get('smoke') else ''}",
        "",
        f"The seed's call with random weights in {'a tiny Llama of' if s.get('smoke') else ''} "
        f"Llama-3.1-8B-Instruct's {'structure' if s.get('smoke') else 'shapes'}, bfloat16, "
        f"`{_placement(s)}`. torch {m['torch']} (CUDA {m.get('cuda')}), transformers {m['transformers']}, "
        f"accelerate {m['accelerate']}, explain {m['explain']}. Raw numbers: [{json_name}]({json_name}).",
        "",
    ]
    sections = results.get("sections", {})
    for name, title in SECTION_TITLES.items():
        entry = sections.get(name)
        lines += [f"## {title}", ""]
        if entry is None:
            lines += ["not run", ""]
            continue
        if entry["status"] != "ok":
            reason = entry.get("reason") or entry.get("error") or ""
            lines += [f"**{entry['status']}**: {reason}", ""]
            continue
        lines += globals()[f"_{name}"](entry, s) + ["", f"({entry['seconds']:.1f} s)", ""]
    summary = results.get("summary") or {}
    lines += ["## Checks and targets", "", "| what | value | rule | met |", "|---|---:|---|---|"]
    for key, passed in (summary.get("checks") or {}).items():
        lines.append(f"| {key} check | | see its section | {'yes' if passed else '**no**'} |")
    for key, target in (summary.get("targets") or {}).items():
        value = target["value"]
        met = {True: "yes", False: "**no**", None: "not measured"}[target["met"]]
        lines.append(f"| {key.replace('_', ' ')} | {_num(value, 2)} | {target['rule']} | {met} |")
    return "\n".join(lines) + "\n"


def _placement(settings) -> str:
    placement = settings.get("placement") or {}
    return ", ".join(f"{k}={v!r}" for k, v in placement.items())


def _weights(e, s):
    made = (
        "reused from an earlier run"
        if e["reused"]
        else (
            f"written in {e['seconds']:.1f} s (drawn on {e['drawn_on']} {e['draw_s']:.1f} s, "
            f"saved {e['save_s']:.1f} s, {_gb(e['bytes_per_s'])}/s)"
        )
    )
    return [
        f"{e['parameters'] / 1e9:.3f} B parameters, {_gb(e['bytes'])} in {e['shards']} safetensors shard(s), "
        f"{made}. Folder: `{e['folder']}`."
    ]


def _load(e, s):
    rows = ["| library | cold load s | of which imports s | peak RSS | GPU peak |", "|---|---:|---:|---:|---:|"]
    for name in ("explain", "transformers"):
        r = e[name]
        rows.append(
            f"| {name} | {r['load_s']:.2f} | {r['pid_start_to_import_s']:.2f} | "
            f"{_gb(r['peak_rss_after_load_bytes'])} | {_gb(r.get('gpu_peak_allocated_bytes'))} |"
        )
    rows += ["", f"explain's cold load is {e['explain_vs_transformers']:.2f}x transformers'."]
    return rows


def _speed(e, s):
    rows = [
        f"Loaded in this process: explain {e['in_process_load_s']['explain']:.1f} s, transformers "
        f"{e['in_process_load_s']['transformers']:.1f} s. Placement: {e['placement'].get('reason')}.",
        "",
    ]
    seed = e["seed_call"]
    rows += [
        f'The seed\'s generation, `pipe("Write a story about a cat", max_length={s["seed_max_length"]})` (sampling, '
        f"{', '.join(seed['explain'].get('processors') or [])}): explain {seed['explain']['new_tokens']} tokens "
        f"in {seed['explain']['seconds']:.2f} s ({seed['explain']['tokens_per_s']:.1f} tokens/s), transformers "
        f"{seed['transformers']['new_tokens']} in {seed['transformers']['seconds']:.2f} s "
        f"({seed['transformers']['tokens_per_s']:.1f} tokens/s).",
        "",
        f"Decode, {s['new_tokens']} tokens x {s['prompts']} prompt(s), greedy, EOS off, turns rotating:",
        "",
        "| contender | tokens/s | median ms/token | vs tracing off | vs transformers | model forward ms | "
        "loop and trace ms |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    decode = e["decode"]
    base = decode["explain_untraced"].get("median_tokens_per_s")
    ref = decode["transformers"].get("median_tokens_per_s")
    for name, d in decode.items():
        if not d.get("available"):
            rows.append(f"| {LABELS[name]} | {d.get('reason') or 'not available'} | | | | | |")
            continue
        rate = d["median_tokens_per_s"]
        rows.append(
            f"| {LABELS[name]} | {d['tokens_per_s']:.1f} | {d['median_ms_per_token']:.2f} | "
            f"{_num(rate / base if base else None, 3, 'x')} | {_num(rate / ref if ref else None, 2, 'x')} | "
            f"{_num(d.get('forward_ms_per_token'), 2)} | {_num(d.get('outside_forward_ms_per_token'), 2)} |"
        )
    rows += [
        "",
        f"Prefill of {s['prefill_tokens']} tokens (median of {s['prefill_repeats']}):",
        "",
        "| contender | prefill s | prompt tokens/s |",
        "|---|---:|---:|",
    ]
    for name, p in e["prefill"].items():
        rows.append(f"| {LABELS[name]} | {p['prefill_s']:.4f} | {p['prompt_tokens_per_s']:,.0f} |")
    f = e["forward_breakdown"]
    rows += [
        "",
        f"One decode forward (median of {f['repeats']}): explain {_num(f['explain_forward_ms'], 2)} ms, "
        f"transformers {_num(f['transformers_forward_ms'], 2)} ms; the {f['linears']} matrix-vector products "
        f"alone {_num(f['linear_only_ms'], 2)} ms ({f['linear_weight_bytes'] / 1e9:.2f} GB of weights).",
    ]
    syncs = e["host_syncs"]
    rows += [
        "",
        f"Host syncs per decode step of explain's loop: greedy {syncs['greedy']['syncs_per_decode_step']}, "
        f"the seed's sampling ({', '.join(syncs['seed_sampling']['processors'])}) "
        f"{syncs['seed_sampling']['syncs_per_decode_step']}; trace size "
        f"{e['trace_bytes_per_step']['bytes_per_step']:,.0f} bytes per step.",
    ]
    agreement = e.get("agreement_with_transformers", {}).get("explain_traced")
    if agreement:
        rows.append(
            f"Greedy tokens equal to transformers' in {agreement['identical_runs']} of {agreement['runs']} "
            f"decode run(s) (first differences at {agreement['first_difference_at']})."
        )
    return rows


def _fidelity(e, s):
    t, g = e["tolerance"], e["greedy"]
    rows = [
        f"Tolerance {t['tolerance']:.4g} = 2 x k x sigma with u = 2^-8, R = 2 x {t['layers']} + 1 = "
        f"{t['roundings']} roundings, rms(z) = {t['logit_rms']:.3g}, max |z| = {t['logit_peak']:.3g}, "
        f"sigma = {t['sigma']:.3g}, k = {t['k']:.2f} ({t['rows']} rows x {t['vocab']:,} logits); see "
        "bench/fidelity.py.",
        "",
        "| check | result | passed |",
        "|---|---|---|",
        f"| greedy ids, {g['tokens']} tokens | {g['equal_tokens']} equal"
        + (
            f", first difference at {g['first_difference_at']} (transformers preferred its pick by "
            f"{g['reference_gap']:.3g})"
            if g["first_difference_at"] is not None
            else ""
        )
        + f" | {'yes' if g['passed'] else '**no**'} |",
    ]
    for key, label in (
        ("decode_logits", "logits of each decode step"),
        ("teacher_forced_logits", "logits on the same sequence, one forward"),
    ):
        d = e[key]
        rows.append(
            f"| {label} ({d['rows']} rows) | max {d['max']:.4g}, rms {d['rms']:.3g} | "
            f"{'yes' if d['within_tolerance'] else '**no**'} |"
        )
    noise = e.get("noise_model") or {}
    if noise.get("checked"):
        for name in ("explain", "transformers"):
            n = noise[name]
            rows.append(
                f"| {name}'s bfloat16 - float32 (the derivation's noise) | rms {n['rms']:.3g} = "
                f"{n['rms_ratio']:.2f} x predicted, max {n['max']:.3g} (bound {n['bound']:.3g}) | "
                f"{'yes' if n['passed'] else '**no**'} |"
            )
    else:
        rows.append(f"| the derivation's noise model | not checked: {noise.get('reason')} | |")
    return rows


def _offload(e, s):
    event, checks = e["explain_event"], e["checks"]
    rows = [
        e["note"] + ".",
        "",
        f"Plan equal to transformers' hf_device_map: {'yes' if e['plan_equals_transformers'] else '**no**'}. "
        f"Stored: {', '.join(f'{k} {v / 1e9:.2f} GB' for k, v in (event.get('bytes_per_device') or {}).items())}; "
        f"offloaded modules (weights in CPU RAM, run on {event.get('main_device')}): "
        f"{len(event.get('offloaded') or [])}; accelerate hooks on explain's model: {e['explain_hooks']}.",
        "Placement event against the real devices: "
        f"{'matches' if checks['passed'] else '**differs**: ' + '; '.join(checks['mismatches'][:5])}.",
        "",
        "| library | load s | tokens/s | median ms/token |",
        "|---|---:|---:|---:|",
    ]
    for name, d in e["decode"].items():
        rows.append(
            f"| {LABELS.get(name, name)} | {e['load_s']['explain' if name.startswith('explain') else name]:.1f}"
            f" | {_num(d['tokens_per_s'], 2)} | {_num(d['median_ms_per_token'], 1)} |"
        )
    rows.append(f"\nSame greedy tokens: {'yes' if e['ids_equal'] else 'no'}.")
    return rows


def _backend(e, s):
    rows = [f"Loaded in {e['load_s']:.1f} s ({e['type']})."]
    for name in ("greedy", "seed_call"):
        if name in e:
            rows.append(
                f"- {name}: {e[name]['total_tokens']} tokens in {e[name]['seconds']:.2f} s"
                + (f", {e[name]['step_events']} step events" if "step_events" in e[name] else "")
            )
    return rows
