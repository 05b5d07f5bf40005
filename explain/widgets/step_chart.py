"""The step chart's data: what happened at one step, as panels of bars, and three curves over all steps.

One panel per stage of the step, in order: the model's logits for the top candidates, the scores after each
logits processor (repetition penalty, temperature, top-k, top-p, ...: as many panels as the step has
processors), the probabilities the token was drawn from, and, on request, a what-if distribution. The chosen
token is in every panel: among the bars when it is in the top `CANDIDATES`, else as an extra bar below a gap,
labelled with its rank. Curves: the chosen token's probability, the entropy and the time of each step.

This module only computes plain data (numbers checked to be numbers, text as text); chart.js draws it with
plotly.js, in the notebook and in an exported page alike, sizing the panels to the page's width and colouring
them from the page's theme.
"""

from __future__ import annotations

from .safe import integer, number, text

CANDIDATES = 8  # bars per panel, besides the chosen token's own bar when it is outside them


def _words(step: dict) -> dict:
    texts = step.get("token_texts")
    return texts if isinstance(texts, dict) else {}


def word(texts: dict, token_id) -> str:
    """A token's text from a step's token_texts (str keys, as JSON has them), or #id when not recorded."""
    found = texts.get(str(token_id), texts.get(token_id))
    return text(found) if found is not None else f"#{token_id}"


def processor_title(processor: dict) -> str:
    """`top-k 50 (keeps 53: ties with the 50th score stay)`: the processor, its knobs, what it kept."""
    args = processor.get("args") if isinstance(processor.get("args"), dict) else {}
    values = [f"{v:g}" if isinstance(v, float) else text(v) for v in args.values() if not isinstance(v, (list, dict))]
    named = processor.get("title") if isinstance(processor.get("title"), str) and processor["title"] else None
    name = named or text(processor.get("name"), "processor").replace("_", "-")
    title = f"{name} {' '.join(values)}".strip()  # the knob's value in the title: "temperature 0.7"
    kept, removed = integer(processor.get("kept")), integer(processor.get("removed"))
    if removed:
        k = integer((processor.get("args") or {}).get("top_k")) if isinstance(processor.get("args"), dict) else None
        if processor.get("name") == "top_k" and k is not None and kept is not None and kept > k:
            title += f" (keeps {kept}: {kept - k} more tie with the {_ordinal(k)} score)"
        elif kept is not None:
            title += f" (keeps {kept})"
    return title


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _top(record) -> tuple[list, list]:
    if not isinstance(record, dict):
        return [], []
    ids, values = record.get("ids"), record.get("values")
    if not isinstance(ids, list) or not isinstance(values, list):
        return [], []
    return ids, values


def panels(step: dict, what_if: dict | None = None) -> list[dict]:
    """The panels of one step: {title, kind: logit|prob|what-if, ids, values, chosen, chosen_value, chosen_rank}."""
    chosen = integer(step.get("token_id"))
    ids, values = _top(step.get("logits_top"))
    result = [
        {
            "title": text(step.get("logits_title")) if step.get("logits_title") else "model logits (raw scores)",
            "kind": "logit",
            "ids": ids,
            "values": values,
            "chosen": chosen,
            "chosen_value": step.get("logit"),
            "chosen_rank": step.get("rank"),
        }
    ]
    for processor in step.get("processors") or []:
        if not isinstance(processor, dict):
            continue
        title = processor_title(processor)
        if processor.get("top") is None:
            result.append(dict(result[-1], title=title + ": no change"))
            continue
        ids, values = _top(processor.get("top"))
        result.append(
            {
                "title": title,
                "kind": "logit",
                "ids": ids,
                "values": values,
                "chosen": chosen,
                "chosen_value": processor.get("token_score"),
                "chosen_rank": processor.get("token_rank"),
            }
        )
    ids, values = _top(step.get("probs_top"))
    kept = [(i, v) for i, v in zip(ids, values, strict=False) if (number(v) or 0) > 0]
    how = {
        "sample": "sampled from these",
        "beam": "the beam's own; beam search keeps the best sequences, not each step's best token",
    }.get(step.get("method"), "greedy: the top one")
    # softmax keeps the order of the last scores, so the chosen token's rank is the same as after the last processor
    rank = result[-1]["chosen_rank"] if len(result) > 1 else step.get("rank")
    result.append(
        {
            "title": f"probabilities, {how}",
            "kind": "prob",
            "ids": [i for i, _ in kept],
            "values": [v for _, v in kept],
            "chosen": chosen,
            "chosen_value": step.get("prob"),
            "chosen_rank": rank,
        }
    )
    if what_if is not None:
        s = what_if.get("settings", {})
        if s.get("do_sample"):
            knobs = f"T {s.get('temperature'):g}, k {s.get('top_k')}, p {s.get('top_p'):g}"
        else:
            knobs = "greedy"
        if s.get("repetition_penalty") not in (None, 1.0):
            knobs += f", rep {s['repetition_penalty']:g}"
        kept = [
            (i, v)
            for i, v in zip(what_if.get("ids", []), what_if.get("probs", []), strict=False)
            if (number(v) or 0) > 0
        ]
        result.append(
            {
                "title": f"what if? {knobs}",
                "kind": "what-if",
                "ids": [i for i, _ in kept],
                "values": [v for _, v in kept],
                "chosen": integer(what_if.get("recorded_token")),
                "chosen_value": what_if.get("recorded_token_prob"),
                "chosen_rank": what_if.get("recorded_token_rank"),
            }
        )
    return result


def chart_step(step: dict | None, what_if: dict | None = None) -> dict:
    """The step chart's `step` value: {index, panels: [{title, kind, bars: [[word, id, value]], chosen, extra}]}.

    `extra` is the chosen token's own bar, {word, id, value, rank}, when it is not among the bars (its value or
    rank None where an older trace did not record them); every number is a finite float or None."""
    if not step:
        return {"index": None, "panels": []}
    texts = dict(_words(step))
    if step.get("token") is not None and step.get("token_id") is not None:
        texts.setdefault(str(step.get("token_id")), step.get("token"))
    if what_if is not None:
        texts.update({str(i): t for i, t in zip(what_if.get("ids", []), what_if.get("tokens", []), strict=False)})
    out = []
    for panel in panels(step, what_if):
        bars = [
            [word(texts, i), integer(i), number(v)]
            for i, v in zip(panel["ids"][:CANDIDATES], panel["values"][:CANDIDATES], strict=False)
        ]
        chosen = panel["chosen"]
        extra = None
        if chosen is not None and all(bar[1] != chosen for bar in bars):
            extra = {
                "word": word(texts, chosen),
                "id": chosen,
                "value": number(panel["chosen_value"]),
                "rank": integer(panel["chosen_rank"]),
            }
        out.append(
            {"title": text(panel["title"]), "kind": panel["kind"], "bars": bars, "chosen": chosen, "extra": extra}
        )
    return {"index": integer(step.get("step")), "panels": out}


_LAST_CURVES: list = [None, -1, None]  # (steps list, its length, curves): the newest answer, see chart_curves


def chart_curves(steps: list[dict]) -> dict:
    """The curves' value: per step its number, p(chosen), entropy (bits) and time (ms). The answer for the same list
    of the same length is reused: the export draws the chart once per step of a run (7,000 steps made that 7,000 x
    7,000 values), and a run only appends steps, it never changes one."""
    if _LAST_CURVES[0] is steps and _LAST_CURVES[1] == len(steps):
        return _LAST_CURVES[2]
    _LAST_CURVES[:] = [steps, len(steps), _curves(steps)]
    return _LAST_CURVES[2]


def _curves(steps: list[dict]) -> dict:
    return {
        "x": [integer(s.get("step")) if integer(s.get("step")) is not None else i for i, s in enumerate(steps)],
        "p": [number(s.get("prob")) for s in steps],
        "entropy": [number(s.get("entropy_bits")) for s in steps],
        "ms": [
            None if number(s.get("forward_time")) is None else round(1000 * number(s.get("forward_time")), 1)
            for s in steps
        ],
    }
