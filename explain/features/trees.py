"""The decoding strategies' pictures as plain data, folded from one run's events (no display library here):

    sampling_tree(events)  several sequences (samples, or a step-through's forced branches) as a prefix tree that
                           branches where they diverge, each branch point with the distribution it was drawn from
    beam_tree(events)      beam search: each step's running, finished and pruned hypotheses, and the final ranking
    draft_rounds(events)   assisted decoding: each round's drafted tokens, how many were accepted, and why not more

`events` are a run's events in order (explain.Trace.filter(run=...)), live or loaded from a file; the widgets in
explain/widgets/strategy_views.py draw what these return.
"""

from __future__ import annotations

from typing import Any

from ..trace import Event

DISTRIBUTION_TOP = 8  # candidates shown at a branch point


def _sequences(events: list[Event]) -> tuple[dict[int, list[dict]], dict[int, dict], str]:
    """Each sequence's steps: several samples (by `sequence`), else the forced branches of a step-through (by
    `branch`, a forced branch being its parent's steps up to the fork, then its own). Returns (sequences, forks,
    what they are)."""
    samples: dict[int, list[dict]] = {}
    branches: dict[int, list[dict]] = {0: []}
    forks: dict[int, dict] = {}
    for event in events:
        if event.stage != "generation":
            continue
        data = event.data
        if event.kind == "step" and "sequence" in data:
            samples.setdefault(data["sequence"], []).append(data)
        elif event.kind == "step":
            branches.setdefault(data.get("branch", 0), []).append(data)
        elif event.kind == "force":
            parent = branches.get(data["from_branch"], [])
            if data["step"] < len(parent):
                forced = dict(
                    parent[data["step"]],
                    token_id=data["token_id"],
                    token=data["token"],
                    forced=True,
                    branch=data["branch"],
                )
                forced.pop("stop_reason", None)
                branches[data["branch"]] = parent[: data["step"]] + [forced]
                forks[data["branch"]] = data
    if samples:
        return dict(sorted(samples.items())), {}, "samples"
    return branches, forks, "branches" if forks else "one sequence"


def _distribution(step: dict) -> dict:
    """The top of the distribution a step drew from: ids, probabilities and texts. Tokens a processor removed
    have probability exactly 0: when fewer than DISTRIBUTION_TOP tokens kept a chance, the rest of the rows are
    the most likely removed tokens by the model's raw logits (`removed` True), not whichever zeros topk returned."""
    texts = step.get("token_texts", {})
    pairs = list(zip(step["probs_top"]["ids"], step["probs_top"]["values"], strict=False))
    kept = [(i, p) for i, p in pairs if p > 0][:DISTRIBUTION_TOP]
    shown = {i for i, _ in kept}
    removed: list[tuple[int, float]] = []
    for token_id in (step.get("logits_top") or {}).get("ids", []):
        if len(kept) + len(removed) >= DISTRIBUTION_TOP:
            break
        if token_id not in shown:
            shown.add(token_id)
            removed.append((token_id, 0.0))
    rows = kept + removed
    return {
        "ids": [i for i, _ in rows],
        "probs": [p for _, p in rows],
        "removed": [False] * len(kept) + [True] * len(removed),
        "texts": [texts.get(str(i), f"#{i}") for i, _ in rows],
        "step": step["step"],
    }


def sampling_tree(events: list[Event], prompt: str = "") -> dict:
    """The sequences as a prefix tree of segments: a segment is a run of tokens every sequence through it shares;
    where they part, the segment ends with the distribution of that step and which tokens the sequences took."""
    sequences, forks, kind = _sequences(events)
    sequences = {k: v for k, v in sequences.items() if v}
    segments: list[dict] = []

    def build(names: list[int], start: int, parent: int | None) -> int:
        segment: dict[str, Any] = {
            "id": len(segments),
            "parent": parent,
            "sequences": names,
            "start": start,
            "tokens": [],
            "children": [],
            "split": None,
            "ends": {},
        }
        segments.append(segment)
        step = start
        while True:
            alive = [n for n in names if step < len(sequences[n])]
            for n in names:
                if step == len(sequences[n]):
                    last = sequences[n][-1] if sequences[n] else {}
                    segment["ends"][str(n)] = last.get("stop_reason") or "running"
            if not alive:
                return segment["id"]
            by_token: dict[int, list[int]] = {}
            for n in alive:
                by_token.setdefault(sequences[n][step]["token_id"], []).append(n)
            if len(by_token) == 1 and len(alive) == len(names):
                record = sequences[alive[0]][step]
                segment["tokens"].append([record["token"], record.get("prob"), bool(record.get("forced"))])
                step += 1
                continue
            if len(by_token) == 1:  # some sequences ended here; the others go on together
                segment["children"].append(build(alive, step, segment["id"]))
                return segment["id"]
            unforced = [sequences[n][step] for n in alive if not sequences[n][step].get("forced")]
            split = _distribution((unforced or [sequences[alive[0]][step]])[0])
            split["taken"] = {}
            for token, group in by_token.items():
                child = build(group, step, segment["id"])
                segment["children"].append(child)
                first = sequences[group[0]][step]
                split["taken"][str(token)] = {
                    "segment": child,
                    "sequences": group,
                    "forced": bool(first.get("forced")),
                    "text": first["token"],
                    "prob": first.get("prob"),
                }
            segment["split"] = split
            return segment["id"]

    if sequences:
        build(sorted(sequences), 0, None)
    return {
        "kind": kind,
        "prompt": prompt,
        "count": len(sequences),
        "segments": segments,
        "forks": {str(b): {"step": f["step"], "token": f["token"]} for b, f in forks.items()},
    }


def beam_tree(events: list[Event], prompt: str = "") -> dict:
    """Beam search step by step: levels of nodes (level 0 the prompt, level t + 1 what step t made), each running
    beam, finished and pruned candidate linked to the beam it extends; then the final ranking. A node on a finished
    hypothesis's path has its `ranks`, and `returned` when the call returns one of them."""
    levels: list[list[dict]] = [[{"slot": 0, "parent": None, "kind": "root", "text": prompt, "score": 0.0}]]
    ranking, done, settings = None, None, dict[str, Any]()
    for event in events:
        if event.stage != "generation":
            continue
        if event.kind == "beams":
            data, texts = event.data, event.data["token_texts"]
            nodes = []
            for slot, beam in enumerate(data["running"]):
                if beam["score"] > -1e8:  # a slot that holds a live beam
                    nodes.append(
                        {
                            "slot": slot,
                            "parent": beam["parent"],
                            "kind": "running",
                            "token_id": beam["token_id"],
                            "text": texts.get(str(beam["token_id"]), "?"),
                            "score": beam["score"],
                        }
                    )
            for candidate in data["candidates"]:
                if candidate["kept"] is not None:
                    continue
                kind = (
                    "finished"
                    if candidate["finished"] and candidate["added"]
                    else "ended"
                    if candidate["finished"]
                    else "pruned"
                )
                node = {
                    "slot": None,
                    "parent": candidate["beam"],
                    "kind": kind,
                    "token_id": candidate["token_id"],
                    "text": texts.get(str(candidate["token_id"]), "?"),
                    "score": candidate["score"],
                    "reason": candidate["finished"],
                }
                if "normalized" in candidate:
                    node["normalized"] = candidate["normalized"]
                nodes.append(node)
            levels.append(nodes)
            settings.update(length_penalty=data["length_penalty"], method=data["method"])
            done = data.get("done", done)
        elif event.kind == "ranking":
            ranking = event.data
        elif event.kind == "settings" and "strategy" in event.data:
            settings["label"] = event.data["strategy"]["label"]
    if ranking is not None:
        for hypothesis in ranking["hypotheses"]:  # mark each returned hypothesis's nodes
            path, length = hypothesis["path"], hypothesis["length"]
            for level in range(1, length):
                for node in levels[level]:
                    if node["kind"] == "running" and node["slot"] == path[level]:
                        node.setdefault("ranks", []).append(hypothesis["rank"])
                        node["returned"] = node.get("returned", False) or hypothesis["returned"]
            for node in levels[length] if length < len(levels) else []:
                if (
                    node["kind"] == "finished"
                    and node["parent"] == path[length - 1]
                    and node["token_id"] == (hypothesis["ids"] or [None])[-1]
                    and abs(node.get("normalized", 0) - hypothesis["score"]) < 1e-6 * max(1, abs(hypothesis["score"]))
                ):
                    node.setdefault("ranks", []).append(hypothesis["rank"])
                    node["returned"] = node.get("returned", False) or hypothesis["returned"]
    return {"prompt": prompt, "levels": levels, "ranking": ranking, "done": done, **settings}


def draft_rounds(events: list[Event]) -> dict:
    """Assisted decoding round by round, and the acceptance rate so far."""
    rounds = [e.data for e in events if e.stage == "generation" and e.kind == "draft"]
    drafted = sum(len(r["drafted"]) for r in rounds)
    accepted = sum(r["accepted"] for r in rounds)
    tokens = sum(len(r["new_ids"]) for r in rounds)
    source = rounds[0]["source"] if rounds else None
    return {
        "rounds": rounds,
        "drafted": drafted,
        "accepted": accepted,
        "tokens": tokens,
        "source": source,
        "rate": accepted / drafted if drafted else None,
        "forwards": len(rounds),
    }
