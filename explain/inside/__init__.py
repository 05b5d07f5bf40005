"""Inside the model, for one generated token: the logit lens, the attention weights and input attribution.

    look = generation.inspect(3)      # step 3 of a run (pipe.start(...).run(), or the step-through's)
    look["lens"]          # per layer: the top tokens and their probabilities, the chosen token's rank and p
    look["attention"]     # per layer and head: the new position's weights over every context position
    look["attribution"]   # per context position: its share in log p(chosen token) (Captum)

Computed on demand by replaying the step from the run's own KV cache (explain.inside.replay), so a generation
that nobody inspects pays nothing. Each inspection is also emitted as a generation/inspect event, so a saved
trace shows it with no model.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from ..errors import ArgumentError, ExplainError
from ..generation.options import check_limits
from ..generation.rows import float32_list
from ..utils.step_index import step_number, whole_number
from .replay import Parts, decoder_parts, replay

LENS_TOP = 8  # tokens per layer in the lens
WHAT = ("lens", "attention", "attribution")
NOTES = {
    "lens": "The logit lens reads each layer's hidden state through the final norm and the LM head, as if the "
    "model stopped there. Only the last layer is trained to be read this way: early layers are not in the "
    "output's basis yet (a tuned lens fits one probe per layer), so their tokens are hints.",
    "attention": "Where the new position read from, per layer and head. Attention weights are not an explanation "
    "of the choice (Jain and Wallace 2019; Wiegreffe and Pinter 2019): values, MLPs and later layers "
    "transform what is read.",
    "attribution": "How much each context token's embedding moved the log-probability of this one chosen token "
    "(Captum). Local to this token and this context, not a global importance.",
}


@torch.inference_mode()
def _lens(parts: Parts, hidden_states: list[torch.Tensor], chosen: int, raw: torch.Tensor) -> dict:
    stacked = torch.stack(hidden_states)[None]  # (1, layers + 1, hidden_size): every layer in one product
    logits = parts.head(parts.final_norm(stacked))[0].float()  # (layers + 1, vocab_size)
    # the last layer once more in the shape of the model's own last step, (1, 1, hidden_size): the same arithmetic,
    # so it equals the step's logits bit for bit (the batched product may differ in the last bits)
    logits[-1] = parts.head(parts.final_norm(hidden_states[-1][None, None]))[0, 0].float()
    probs = torch.softmax(logits, dim=-1)
    top = torch.topk(probs, LENS_TOP, dim=-1)
    ranks = (logits > logits[:, chosen : chosen + 1]).sum(dim=-1) + 1
    layers = [
        {
            "layer": index,
            "ids": top.indices[index].tolist(),
            "probs": float32_list(top.values[index]),
            "chosen_prob": float(probs[index, chosen]),
            "chosen_rank": int(ranks[index]),
        }
        for index in range(len(hidden_states))
    ]
    return {"layers": layers, "last_layer_difference": float((logits[-1] - raw).abs().max()), "note": NOTES["lens"]}


def _rounded(values: torch.Tensor) -> list:
    """Attention weights to 6 decimals: exact enough for any view, a tenth of the JSON of full float32."""
    return np.round(values.detach().double().cpu().numpy(), 6).tolist()


def _attention(weights: list[torch.Tensor]) -> dict:
    stacked = torch.stack(weights)  # (layers, heads, positions)
    mean = stacked.mean(dim=1)  # (layers, positions): heads averaged
    first = float(mean[:, 0].mean())
    positions = stacked.shape[-1]
    return {
        "heads": _rounded(stacked),
        "mean": _rounded(mean),
        "layers": stacked.shape[0],
        "num_heads": stacked.shape[1],
        "positions": positions,
        "first_token_share": first,
        "uniform_share": 1 / positions,
        "sink": first > 2 / positions and positions > 2,
        "note": NOTES["attention"],
    }


def inspect_step(
    generation,
    step: int,
    what=("lens", "attention"),
    attribution_method: str = "gradient_x_input",
    attribution_steps: int = 32,
    progress=None,
) -> dict:
    """Lens, attention and/or attribution of one step of a run that is still in memory; emits
    generation/inspect with the result."""
    what = (what,) if isinstance(what, str) else what  # what="lens" is one view, not the letters l, e, n, s
    if not isinstance(what, (list, tuple, set, frozenset)) or not all(isinstance(w, str) for w in what):
        raise ExplainError(f"what= names what to compute: one of {', '.join(WHAT)} or a list of them, got {what!r:.60}")
    unknown = [w for w in what if w not in WHAT]
    if unknown:
        raise ExplainError(f"cannot inspect {unknown}; choose from {', '.join(WHAT)}")
    step = step_number(step, len(generation.steps))  # an int, in range (explain/utils/step_index.py)
    if "attribution" in what:
        steps = whole_number(attribution_steps, "attribution_steps")
        if steps < 1:
            raise ArgumentError(f"attribution_steps={steps} is not a number of steps; pass 1 or more (captum uses 50)")
        check_limits({"attribution_steps": steps})
    start, t0 = time.time(), time.perf_counter()
    record = generation.steps[step]
    chosen, position = record["token_id"], record["position"]
    ids = generation.input_ids[0, :position].tolist()
    parts = decoder_parts(generation.model)
    look = {
        "step": step,
        "position": position,
        "branch": generation.branch,
        "token_id": chosen,
        "token": record["token"],
        "context_ids": ids,
        "context_tokens": [generation.token_text(i) for i in ids],
    }
    if "lens" in what or "attention" in what:
        # a producer whose model is not explain's brings its own replay (backend="transformers": its forward, Cache)
        replayed = getattr(generation, "replay_step", None) or (lambda *a, **k: replay(generation, *a, **k))
        seen = replayed(step, attentions="attention" in what)
        if "lens" in what:
            look["lens"] = _lens(parts, seen.hidden_states, chosen, seen.logits)
        if "attention" in what:
            assert seen.attentions is not None  # asked for above
            look["attention"] = _attention(seen.attentions)
    if "lens" in look:
        shown = {i for layer in look["lens"]["layers"] for i in layer["ids"]} | {chosen}
        look["token_texts"] = {str(i): generation.token_text(i) for i in sorted(shown)}
    if "attribution" in what:
        from .attribution import attribute

        look["attribution"] = dict(
            attribute(
                generation.model,
                generation.tokenizer,
                ids,
                chosen,
                parts.embedding,
                attribution_method,
                attribution_steps,
                progress,
            ),
            note=NOTES["attribution"],
        )
    look["seconds"] = time.perf_counter() - t0
    generation.trace.emit("generation", "inspect", look, run=generation.run_id, start=start, duration=look["seconds"])
    return look


__all__ = ["inspect_step", "decoder_parts", "replay", "NOTES", "WHAT"]
