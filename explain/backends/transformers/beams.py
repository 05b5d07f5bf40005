"""Beam search and beam sampling traced on transformers' own generate(): the generation/beams and
generation/ranking events the explain backend emits (explain/generation/strategies/beam.py), read from
transformers' loop instead of computed beside it.

GenerationMixin._beam_search (transformers/generation/utils.py) runs each step through helper methods on the model:

    log_probs = logits_processor(flat_running_sequences, log_softmax(logits))          # per beam, processed
    topk_log_probs, topk_running_sequences, topk_running_beam_indices = self._get_top_k_continuations(...)
    next_token_hits_stopping_criteria = stopping_criteria(topk_running_sequences ...)  # per candidate
    running_sequences, running_beam_scores, running_beam_indices = self._get_running_beams_for_next_iteration(...)
    sequences, beam_scores, beam_indices, is_sent_finished = self._update_finished_beams(...)
    ...
    this_peer_finished = not self._beam_search_has_unfinished_sequences(...)

`BeamWatch.shadow(model)` shadows these helpers on the model instance (as hooks.observing shadows the processor and
criteria builders): each calls transformers' own method and hands its arguments and results to the watch, which
writes one generation/beams event per step and generation/ranking at the end. Which candidates went on running and
which entered the finished list are the indices transformers itself gathered with (its `_gather_beams` calls inside
the two helpers), so nothing is re-decided here.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from ...generation.strategies.assisted import rejection_record
from .records import cache_record, stop_reason

BEAM_MODES = ("beam_search", "beam_sample")


def _floats(values: torch.Tensor) -> list[float]:
    return [float(np.format_float_positional(v, unique=True, trim="-")) for v in values.float().cpu().numpy().ravel()]


class BeamWatch:
    """One beam search of a traced call: what transformers' helpers computed, step by step, as explain's events."""

    def __init__(self, generation, config):
        self.generation = generation
        self.num_beams = int(config.num_beams)
        self.count = int(config.num_return_sequences or 1)
        self.length_penalty = float(config.length_penalty)
        self.early_stopping = config.early_stopping
        self.method = "beam_sample" if config.do_sample else "beam_search"
        self._step: dict = {}
        self._gathered: list | None = None  # the indices transformers' _gather_beams is called with, while watched
        self.final: dict | None = None

    def strategy(self) -> dict:
        """The settings event's "strategy", as the explain backend's registry describes beam search."""
        from ...generation.strategies.beam import BeamSearch

        settings = {
            "num_beams": self.num_beams,
            "length_penalty": self.length_penalty,
            "early_stopping": self.early_stopping,
            "do_sample": self.method == "beam_sample",
        }
        return BeamSearch.record(settings)

    # -- what the shadowed helpers report ----------------------------------------------------------------------
    def on_log_probs(self, log_probs: torch.Tensor) -> None:
        """The processed log-probabilities of every running beam, (num_beams, vocab)."""
        self._step = {"log_probs": log_probs.detach().float().cpu(), "clock": time.perf_counter()}

    def on_criteria(self, reasons: list[str | None]) -> None:
        self._step["reasons"] = reasons

    def shadow(self, model) -> dict:
        """The helpers of _beam_search, each wrapped to report here: name -> replacement (set on the instance)."""
        top_k = model._get_top_k_continuations
        running = model._get_running_beams_for_next_iteration
        update = model._update_finished_beams
        unfinished = model._beam_search_has_unfinished_sequences
        gather = model._gather_beams

        def gather_beams(tensor, indices):
            if self._gathered is not None:
                self._gathered.append(indices)
            return gather(tensor, indices)

        def get_top_k_continuations(*args, **kwargs):
            out = top_k(*args, **kwargs)
            self._step.update(
                topk=[t.detach().cpu() for t in out],
                cur_len=int(kwargs["cur_len"]),
                prompt=int(kwargs["decoder_prompt_len"]),
            )
            return out

        def get_running_beams(*args, **kwargs):
            self._gathered = []
            try:
                out = running(*args, **kwargs)
            finally:
                kept, self._gathered = self._gathered, None
            self._step.update(keep=kept[0][0].tolist() if kept else [], running=[t.detach().cpu() for t in out])
            return out

        def update_finished_beams(*args, **kwargs):
            self._gathered = []
            try:
                out = update(*args, **kwargs)
            finally:
                merged, self._gathered = self._gathered, None
            self._step.update(merged=merged[0][0].tolist() if merged else [], finished=[t.detach().cpu() for t in out])
            return out

        def has_unfinished(*args, **kwargs):
            going = unfinished(*args, **kwargs)
            self.on_step_end(args, kwargs, bool(going))
            return going

        return {
            "_gather_beams": gather_beams,
            "_get_top_k_continuations": get_top_k_continuations,
            "_get_running_beams_for_next_iteration": get_running_beams,
            "_update_finished_beams": update_finished_beams,
            "_beam_search_has_unfinished_sequences": has_unfinished,
        }

    # -- one step, and the end ---------------------------------------------------------------------------------
    def on_step_end(self, args, kwargs, going: bool) -> None:
        generation, step = self.generation, self._step
        if generation.finished or "topk" not in step or "finished" not in step:
            return
        names = ("is_early_stop_heuristic_unsatisfied", "is_sent_finished", "next_token_hits_stopping_criteria")
        state = dict(zip(names, args, strict=False)) | {k: v for k, v in kwargs.items() if k in names}
        record = self._record(len(generation.steps), step)
        generation.steps.append(record)
        done = None
        if not going:
            hits = state["next_token_hits_stopping_criteria"]
            if bool(torch.all(hits)):
                reason = next((r for r in step.get("reasons", []) if r), "max_length")
                done = reason, f"every candidate met a stopping criterion ({reason})"
            elif not bool(torch.any(state["is_early_stop_heuristic_unsatisfied"])):
                done = (
                    "no_improvement",
                    "no running beam can beat the worst finished one (the early-stopping heuristic)",
                )
            else:
                done = "all_finished", f"{self.num_beams} sequences have finished (early_stopping=True)"
            record["done"] = done[1]
            self.final = step
            generation._finish(done[0])
            self._settle(step)
        duration = generation._forward.get("forward_time", 0.0) + time.perf_counter() - step["clock"]
        generation.trace.emit(
            "generation",
            "beams",
            record,
            run=generation.run_id,
            start=generation._forward.get("start", time.time()),
            duration=duration,
        )
        if done is not None:
            generation.trace.emit("generation", "ranking", self.ranking(done[1]), run=generation.run_id)

    def _record(self, index: int, step: dict) -> dict:
        texts: dict[int, str] = {}  # the texts of the ids this step names
        cur_len, prompt = step["cur_len"], step["prompt"]
        topk_log_probs, topk_sequences, topk_paths = (t[0] for t in step["topk"])  # batch of one
        k_count = topk_log_probs.shape[0]
        generation = self.generation
        previous = generation.steps[-1]["running"] if generation.steps else [{"score": 0.0}]
        beams = []
        for beam, before in enumerate(previous):
            values, ids = torch.topk(step["log_probs"][beam], min(k_count, step["log_probs"].shape[-1]))
            keep = torch.isfinite(values)
            ids_list = ids[keep].tolist()
            for token_id in ids_list:
                texts.setdefault(token_id, generation.token_text(token_id))
            beams.append(
                {"beam": beam, "score": before["score"], "top": {"ids": ids_list, "values": _floats(values[keep])}}
            )
        reasons = step.get("reasons") or [None] * k_count
        kept_at = {int(k): slot for slot, k in enumerate(step.get("keep", []))}
        added = {int(i) - self.num_beams for i in step.get("merged", []) if int(i) >= self.num_beams}
        generated = cur_len + 1 - prompt
        candidates = []
        for k in range(k_count):
            token = int(topk_sequences[k, cur_len])
            texts.setdefault(token, generation.token_text(token))
            score = float(topk_log_probs[k])
            entry = {
                "beam": int(topk_paths[k, cur_len - prompt]) % self.num_beams,
                "token_id": token,
                "score": score,
                "finished": reasons[k],
                "kept": kept_at.get(k) if reasons[k] is None else None,
                "added": k in added,
            }
            if reasons[k] is not None:
                entry["normalized"] = score / generated**self.length_penalty
            candidates.append(entry)
        running_sequences, running_scores, running_paths = (t[0] for t in step["running"])
        running = [
            {
                "parent": int(running_paths[slot, cur_len - prompt]) % self.num_beams,
                "token_id": int(running_sequences[slot, cur_len]),
                "score": float(running_scores[slot]),
            }
            for slot in range(self.num_beams)
        ]
        _, beam_scores, beam_paths, is_finished = (t[0] for t in step["finished"])
        finished = [
            {"score": float(beam_scores[slot]), "length": int((beam_paths[slot] >= 0).sum())}
            for slot in range(self.num_beams)
            if bool(is_finished[slot])
        ]
        return {
            "step": index,
            "position": cur_len,
            "method": self.method,
            "beams": beams,
            "candidates": candidates,
            "running": running,
            "finished": finished,
            "length_penalty": self.length_penalty,
            "generated_length": generated,
            "kv_cache": generation._forward.get("kv_cache", cache_record(generation.cache)),
            "forward": generation._forward.get("forward") or ("prefill" if index == 0 else "decode"),
            "forward_time": generation._forward.get("forward_time"),
            "token_texts": {str(k): v for k, v in texts.items()},
        }

    def _hypotheses(self, step: dict) -> list[dict]:
        prompt = step["prompt"]
        sequences, beam_scores, beam_paths, is_finished = (t[0] for t in step["finished"])
        found = []
        for rank in range(self.num_beams):
            if not bool(is_finished[rank]):
                continue
            length = int((beam_paths[rank] >= 0).sum())
            ids = sequences[rank, prompt : prompt + length].tolist()
            score = float(beam_scores[rank])
            found.append(
                {
                    "rank": rank,
                    "ids": ids,
                    "text": self.generation.tokenizer.decode(ids, skip_special_tokens=True),
                    "score": score,
                    "log_prob": score * length**self.length_penalty,
                    "length": length,
                    "path": [int(p) % self.num_beams for p in beam_paths[rank, :length].tolist()],
                    "returned": rank < self.count,
                }
            )
        return found

    def _settle(self, step: dict) -> None:
        """The run's ids become the best finished sequence, and its sequences the ones generate() returns (the
        first num_return_sequences, cut to the longest of them)."""
        prompt = step["prompt"]
        sequences, _, beam_paths, _ = (t[0] for t in step["finished"])
        lengths = [int((beam_paths[slot] >= 0).sum()) for slot in range(self.num_beams)]
        longest = max(lengths[: self.count] + [0])
        self.generation.beam_sequences = sequences[: self.count, : prompt + longest].tolist()
        self.generation.input_ids = sequences[:1, : prompt + lengths[0]].clone()

    def ranking(self, reason: str) -> dict:
        step = self.final or self._step
        return {
            "hypotheses": self._hypotheses(step),
            "num_return_sequences": self.count,
            "num_beams": self.num_beams,
            "length_penalty": self.length_penalty,
            "early_stopping": self.early_stopping,
            "reason": reason,
            "steps": len(self.generation.steps),
        }


def candidate_reasons(criteria, input_ids: torch.Tensor, scores, **kwargs) -> tuple[torch.Tensor, list[str | None]]:
    """transformers' criteria on every candidate row, one criterion at a time (its own list code): the combined
    result, and each row's stop reason (None: not finished)."""
    from transformers.generation.stopping_criteria import StoppingCriteriaList

    is_done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
    fired: list[list] = [[] for _ in range(input_ids.shape[0])]
    for criterion in criteria:
        done = StoppingCriteriaList([criterion])(input_ids, scores, **kwargs)
        is_done = is_done | done
        for row in torch.nonzero(done).flatten().tolist():
            fired[row].append(criterion)
    return is_done, [stop_reason(f) for f in fired]


class DraftWatch:
    """Greedy assisted decoding of one prompt, drafted by prompt lookup or by an assistant model, in a traced call:
    each round of transformers' _assisted_decoding as the explain backend's generation/draft, then a
    generation/step per token it added. The drafted tokens are what transformers' candidate generator proposed
    (PromptLookupCandidateGenerator or AssistedCandidateGenerator: its get_candidates, shadowed on the generator
    generate() built), the checked scores are the processor list's output at every drafted position (hooks.py's
    recording list), the kept tokens are the ids the stopping criteria see after the round. With prompt lookup, why
    the draft ended there and the n-gram it matched are described by explain's own PromptLookupDraft on the same ids;
    with an assistant model, the draft's probabilities are the softmax of the processed scores the assistant's own
    generate() returned with its tokens (the candidate logits), its budget is the generator's
    (_calculate_new_tokens, from num_assistant_tokens before the round) and why it ended is read from them: the
    budget filled, EOS, or a token under assistant_confidence_threshold (ConfidenceCriteria)."""

    def __init__(self, generation, config):
        from ...generation.strategies.drafts import PromptLookupDraft

        self.generation = generation
        self.source = "prompt_lookup" if config.prompt_lookup_num_tokens is not None else "assistant"
        eos = config._eos_token_tensor.reshape(-1).tolist() if config._eos_token_tensor is not None else []
        self.eos = eos
        self.describer = (
            PromptLookupDraft(
                [],
                eos,
                int(config.prompt_lookup_num_tokens),
                int(config.max_matching_ngram_size or 2),
                int(config.max_length),
                int(generation.model.config.get_text_config().vocab_size),
                "cpu",
            )
            if self.source == "prompt_lookup"
            else None
        )
        self.rounds: list[dict] = []
        self.pendings: list[dict] = []
        self._round: dict = {}

    def shadow(self, model) -> dict:
        build = model._get_candidate_generator

        def get_candidate_generator(*args, **kwargs):
            generator = build(*args, **kwargs)
            propose = generator.get_candidates

            def get_candidates(input_ids, **more):
                length = input_ids.shape[1]
                before = self._assistant_state(generator, length) if self.describer is None else {}
                t0 = time.perf_counter()
                out = propose(input_ids, **more)
                self.pendings = []  # the lookup ran the processor list on rows of ones to vet its tokens: not these
                self._round = {
                    "length": length,
                    "ids": input_ids[0].tolist(),
                    "drafted": out[0][0, length:].tolist(),
                    "draft_time": time.perf_counter() - t0,
                    "start": time.time(),
                    "clock": time.perf_counter(),
                }
                if self.describer is None:
                    self._round["assistant"] = self._assistant_draft(before, self._round["drafted"], out[1])
                return out

            generator.get_candidates = get_candidates
            return generator

        return {"_get_candidate_generator": get_candidate_generator}

    @staticmethod
    def _assistant_state(generator, length: int) -> dict:
        """What the assistant's round starts from: its budget (transformers' _calculate_new_tokens, before
        get_candidates runs) and the confidence threshold its ConfidenceCriteria will use."""
        budget = min(int(generator.num_assistant_tokens), int(generator.main_model_max_length) - length - 1)
        threshold = getattr(generator.generation_config, "assistant_confidence_threshold", None)
        return {"budget": budget, "threshold": threshold}

    def _assistant_draft(self, before: dict, drafted: list[int], logits) -> dict:
        """The assistant's draft as the explain backend's AssistantDraft describes it: probabilities, budget, stop."""
        budget = before["budget"]
        if budget <= 0:
            return {"probs": None, "stop": "no room: the target's next token reaches max_length", "budget": 0}
        probs = None
        if logits is not None and drafted:
            distribution = torch.softmax(logits[0].detach().to("cpu", torch.float32), dim=-1)  # (k, vocab)
            probs = [float(distribution[i, token]) for i, token in enumerate(drafted)]
        stop = "num_assistant_tokens"
        if drafted and len(drafted) < budget:
            if drafted[-1] in self.eos:
                stop = "eos"
            elif before["threshold"] and probs is not None and probs[-1] < before["threshold"]:
                stop = "confidence"
        return {"probs": probs, "stop": stop, "budget": budget}

    def on_logits(self, logits: torch.Tensor) -> None:
        """The verifying forward's logits (hooks.py's forward hook): the rows of the drafted positions, which are the
        scores transformers checks when it has no processor to run (it then never calls the list)."""
        if self._round:
            count = len(self._round["drafted"]) + 1
            self._round["logits"] = logits[0, -count:].detach().to("cpu", torch.float32)

    def on_round_end(self, input_ids: torch.Tensor, fired: list) -> None:
        generation, state = self.generation, self._round
        if generation.finished or not state:
            return
        length, drafted = state["length"], state["drafted"]
        if not self.pendings and "logits" in state:  # no processors: the raw logits are the checked scores
            self.pendings = [
                {
                    "raw": row[None],
                    "processors": [],
                    "token_texts": {},
                    "start": state["start"],
                    "clock": state["clock"],
                }
                for row in state["logits"]
            ]
        full = input_ids[:1].detach().to("cpu")
        new_ids = full[0, length:].tolist()
        accepted = len(new_ids) - 1
        processed = torch.stack([p.get("scores", p["raw"])[0].float().cpu() for p in self.pendings])
        probs = torch.softmax(processed, dim=-1)
        picked = torch.argmax(processed, dim=-1).tolist()
        rejection = None
        if accepted < len(drafted):
            rejection = rejection_record(accepted, drafted[accepted], picked[accepted], probs, generation.token_text)
        if self.describer is not None:
            described = self.describer.propose(state["ids"])
            draft = {"probs": None, "stop": described.stop, "budget": described.budget, "lookup": described.lookup}
        else:
            draft = state["assistant"]
        texts = {t: generation.token_text(t) for t in drafted + new_ids + picked}
        record = {
            "round": len(self.rounds),
            "position": length,
            "source": self.source,
            "drafted": drafted,
            "draft_probs": draft["probs"],
            "draft_stop": draft["stop"],
            "budget": draft["budget"],
            "target_ids": picked,
            "target_probs": [float(probs[i, t]) for i, t in enumerate(drafted)],
            "accepted": accepted,
            "new_ids": new_ids,
            "rejection": rejection,
            "method": "greedy",
            "draft_time": state["draft_time"],
            "verify_time": generation._forward.get("forward_time") or 0.0,
            "token_texts": {str(k): v for k, v in texts.items()},
        }
        if draft.get("lookup"):
            record["lookup"] = draft["lookup"]
        self.rounds.append(record)
        generation.trace.emit(
            "generation",
            "draft",
            record,
            run=generation.run_id,
            start=state["start"],
            duration=time.perf_counter() - state["clock"],
        )
        first = len(self.rounds) == 1
        for i, token in enumerate(new_ids):
            generation.input_ids = full[:, : length + i + 1]
            step = generation._record(self.pendings[i], token, "greedy")
            step.update(
                forward="prefill" if first and i == 0 else "decode", round=record["round"], drafted=i < accepted
            )
            if i == len(new_ids) - 1:
                reason = stop_reason(fired)
                if reason is not None:
                    step["stopped_by"] = [type(c).__name__ for c in fired]
                    generation._finish(reason, step)
            generation.steps.append(step)
            generation.trace.emit("generation", "step", step, run=generation.run_id, duration=0.0)
        self._round = {}

    @property
    def acceptance(self) -> dict:
        drafted = sum(len(r["drafted"]) for r in self.rounds)
        accepted = sum(r["accepted"] for r in self.rounds)
        return {
            "drafted": drafted,
            "accepted": accepted,
            "rate": accepted / drafted if drafted else None,
            "rounds": len(self.rounds),
            "tokens": len(self.generation.steps),
        }
