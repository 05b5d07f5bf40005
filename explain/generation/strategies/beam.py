"""Beam search (num_beams > 1), as transformers 5 runs it (GenerationMixin._beam_search, transformers/generation/
utils.py): keep the num_beams running sequences whose summed log-probabilities are highest, and a list of num_beams
finished ones, ranked by their sum divided by length ** length_penalty.

One step, for one prompt (the batch dimension of transformers' tensors is 1 here and left out):
  a. the model on each running beam's last token -> log_softmax -> the logits processors   (num_beams, vocab)
  b. add each beam's running score; take the K best (beam, token) pairs over all beams
                                                                              K = max(2, 1 + #EOS) * num_beams
     (torch.topk, or with do_sample=True, torch.multinomial without replacement: "beam sample")
  c. a pair whose sequence now meets a stopping criterion (EOS, max_length, a stop string, max_time, the call's
     stopping_criteria) is finished
  d. the num_beams best unfinished pairs are the next running beams (the KV cache is reordered to follow them)
  e. the finished pairs among the first num_beams join the finished list, scored sum / length ** length_penalty,
     and the list keeps its num_beams best
  f. stop when no running beam can beat the worst finished one (the early-stopping heuristic), or early_stopping=True
     and num_beams have finished, or every candidate met a stopping criterion
The call returns the first num_return_sequences of the finished list, their scores are generate()'s
`sequences_scores`. Each step emits generation/beams (every beam's top candidates, which pairs were kept, finished,
pruned); the end emits generation/ranking (the finished list, ranked, with length_penalty applied).
"""

from __future__ import annotations

import time

import torch

from ..knobs import Knob, number
from ..rows import sampled
from .base import DecodingStrategy, Run, set_by_call, timed
from .registry import register

LOST = -1.0e9  # transformers' score for "cannot be chosen"


def check_early_stopping(value, vocab_size=None) -> str | None:
    if value in (True, False, "never"):
        return None
    return (
        f"must be True (stop when num_beams sequences have finished), False (stop when no running beam can "
        f'beat the finished ones) or "never" (the canonical beam search), got {value!r}'
    )


@register
class BeamSearch(DecodingStrategy):
    name, title, order = "beam_search", "beam search", 20
    description = (
        "keeps the num_beams most likely sequences at every step; returns the best finished ones, "
        "scored by log-probability / length ** length_penalty"
    )
    source = "transformers/generation/utils.py, GenerationMixin._beam_search"
    knobs = (
        Knob(
            "num_beams",
            1,
            "int",
            "beam search: how many sequences to keep at every step (1: no beam search)",
            check=number(1, integer=True),
            live=False,
        ),
        Knob(
            "length_penalty",
            1.0,
            "float",
            "beam search: a finished sequence's score is its log-probability / "
            "length ** length_penalty (above 0 favours longer ones)",
            check=number(),
            live=False,
        ),
        Knob(
            "early_stopping",
            False,
            "json",
            "beam search: True stops once num_beams sequences have finished; "
            'False stops when no running beam can beat them; "never" runs to the end',
            check=check_early_stopping,
            live=False,
        ),
    )

    @classmethod
    def applies(cls, settings):
        return (settings.get("num_beams") or 1) > 1

    @classmethod
    def mode(cls, settings):
        return "beam_sample" if settings.get("do_sample") else "beam_search"

    @classmethod
    def label(cls, settings):
        how = "beam sampling" if settings.get("do_sample") else "beam search"
        return (
            f"{how}: {settings['num_beams']} beams, length_penalty {settings['length_penalty']}, "
            f"early_stopping {settings['early_stopping']}"
        )

    @classmethod
    def settings_problem(cls, settings):
        beams, count = settings.get("num_beams") or 1, settings.get("num_return_sequences") or 1
        if beams > 1 and count > beams:
            return (
                f"num_return_sequences ({count}) has to be smaller or equal to num_beams ({beams}), as "
                f"transformers requires: beam search returns its best finished beams; raise num_beams to {count}"
            )
        if beams > 1 and settings.get("guidance_scale") not in (None, 1):
            return (
                "guidance_scale runs classifier-free guidance on one sequence in explain; with beam search "
                "leave guidance_scale out"
            )
        return None

    @classmethod
    def warnings(cls, settings, sources):
        found = []
        beams = settings.get("num_beams") or 1
        if beams == 1:  # GenerationConfig.validate's minor issues
            if set_by_call(settings, sources, "early_stopping") and settings["early_stopping"] is not False:
                found.append(
                    f"early_stopping={settings['early_stopping']!r} has no effect with num_beams=1 (it is "
                    "a beam search setting): set num_beams > 1, or leave it out"
                )
            if set_by_call(settings, sources, "length_penalty") and settings["length_penalty"] != 1.0:
                found.append(
                    f"length_penalty={settings['length_penalty']!r} has no effect with num_beams=1 (it "
                    "scores finished beams): set num_beams > 1, or leave it out"
                )
        elif settings.get("assistant_model") is not None or settings.get("prompt_lookup_num_tokens") is not None:
            found.append(
                "assistant_model / prompt_lookup_num_tokens is ignored with num_beams > 1: transformers "
                "runs assisted decoding only with greedy decoding or sampling, so this call runs beam "
                "search (as generate() does, with a warning); set num_beams=1 for assisted decoding"
            )
        return found

    @classmethod
    def run_class(cls):
        return BeamSearchRun


class BeamSearchRun(Run):
    title = "beam search"

    def __init__(self, model, tokenizer, prompt_ids, settings, trace, run, **options):
        beams = settings["num_beams"]
        eos_count = len(
            [settings["eos_token_id"]]
            if isinstance(settings.get("eos_token_id"), int)
            else settings.get("eos_token_id") or []
        )
        # warpers keep at least #EOS + 1 tokens in beam sampling (GenerationMixin._get_logits_processor)
        super().__init__(
            model, tokenizer, prompt_ids, settings, trace, run, rows=beams, min_tokens_to_keep=eos_count + 1, **options
        )
        self.num_beams, self.count = beams, self.settings["num_return_sequences"]
        self.length_penalty, self.early_stopping = self.settings["length_penalty"], self.settings["early_stopping"]
        self.do_sample = bool(self.settings.get("do_sample"))
        self.beams_to_keep = max(2, 1 + len(self.eos)) * beams  # K: enough that num_beams stay unfinished
        self.top_num_beam_mask = torch.arange(self.beams_to_keep) < beams  # (K,): the first num_beams candidates
        max_length, length = self.settings["max_length"], self.prompt_length
        pad = self.settings.get("pad_token_id")
        fill = (pad or self.eos[0]) if self.eos else -1  # transformers' output_fill_value
        self.running_sequences = torch.full((beams, max_length), fill, dtype=torch.long, device=self.device)
        self.running_sequences[:, :length] = self.prompt_ids  # (num_beams, max_length)
        self.finished_sequences = self.running_sequences.clone()  # the finished list: (num_beams, max_length)
        # only the first beam is live at the start, so the first step does not pick the same token num_beams times
        self.running_scores = torch.full((beams,), LOST, device=self.device)
        self.running_scores[0] = 0.0
        self.beam_scores = torch.full((beams,), LOST, device=self.device)  # the finished list's scores
        self.is_finished = torch.zeros(beams, dtype=torch.bool, device=self.device)  # a slot holds a finished one
        self.improvable = True  # the early-stopping heuristic: a running beam may still beat a finished one
        # per beam, the beam it came from at each step (transformers' beam_indices), -1 where nothing yet
        self.running_paths = torch.full((beams, max_length - length), -1, dtype=torch.long, device=self.device)
        self.finished_paths = self.running_paths.clone()
        self.cur_len = length
        if max_length <= length:
            self._finish("max_length")

    # -- one step of every beam --------------------------------------------------------------------------
    @torch.inference_mode()
    def step(self) -> dict:
        """Advance every beam by one token (Next step in the step-through); emits and returns generation/beams."""
        self.refuse_if_finished()
        start, t0 = timed()
        index, length, prompt = len(self.steps), self.cur_len, self.prompt_length
        if index == 0:
            logits = self.forward(self.running_sequences[:, :length])[:, -1]  # (num_beams, vocab): the prompt
            forward = "prefill"
            self.emit_prefill(start, time.perf_counter() - t0, prompt * self.num_beams)
        else:
            logits = self.forward(self.running_sequences[:, length - 1 : length])[:, -1]  # (num_beams, vocab)
            forward = "decode"
        forward_time = time.perf_counter() - t0
        vocab = logits.shape[-1]
        log_probs = torch.log_softmax(logits, dim=-1)
        for processor in self.processors:  # transformers processes log-probabilities in beam search
            log_probs = processor(self.running_sequences[:, :length], log_probs)
        totals = log_probs + self.running_scores[:, None]  # (num_beams, vocab): each pair's summed log-probability
        flat = totals.reshape(1, -1)  # (1, num_beams * vocab), as transformers flattens the batch's beams
        if self.do_sample:
            chosen = sampled(torch.softmax(flat, dim=-1), self.beams_to_keep)
            top_scores = torch.gather(flat, 1, chosen)
            top_scores, order = top_scores.sort(dim=-1, descending=True)
            chosen = chosen.gather(-1, order)
        else:
            top_scores, chosen = torch.topk(flat, k=self.beams_to_keep)
        top_scores, chosen = top_scores[0], chosen[0]  # (K,)
        source, tokens = chosen // vocab, chosen % vocab  # the beam each pair extends, and its token
        candidates = self.running_sequences[source].clone()  # (K, max_length)
        candidates[:, length] = tokens
        candidate_paths = self.running_paths[source].clone()  # (K, max_length - prompt)
        candidate_paths[:, length - prompt] = source
        reasons = [self.stop_reason_of(candidates[k, : length + 1].tolist()) for k in range(self.beams_to_keep)]
        if self.criteria or self.settings.get("max_time") is not None:  # max_time, stopping_criteria: per candidate
            further = self.criteria_stops(candidates[:, : length + 1])
            reasons = [reason or other for reason, other in zip(reasons, further, strict=True)]
        hits = torch.tensor([r is not None for r in reasons], device=self.device)  # (K,)

        # d. the next running beams: the best num_beams pairs that did not finish
        running_scores = top_scores + hits.float() * LOST
        keep = torch.topk(running_scores, k=self.num_beams)[1]  # (num_beams,)
        self.running_sequences = candidates[keep]
        self.running_scores = running_scores[keep]
        self.running_paths = candidate_paths[keep]

        # e. finished pairs among the first num_beams join the finished list, scored with the length penalty
        generated = length + 1 - prompt
        finished_scores = top_scores / (generated**self.length_penalty)
        full = bool(self.is_finished.all()) and self.early_stopping is True
        finished_scores = finished_scores + float(full) * LOST + float(not self.improvable) * LOST
        just_finished = hits & self.top_num_beam_mask
        finished_scores = finished_scores + (~just_finished).float() * LOST
        merged_scores = torch.cat([self.beam_scores, finished_scores])  # (num_beams + K,)
        best = torch.topk(merged_scores, k=self.num_beams)[1]
        self.finished_sequences = torch.cat([self.finished_sequences, candidates])[best]
        self.beam_scores = merged_scores[best]
        self.finished_paths = torch.cat([self.finished_paths, candidate_paths])[best]
        self.is_finished = torch.cat([self.is_finished, just_finished])[best]
        added = {int(i) - self.num_beams for i in best if i >= self.num_beams}  # candidates that entered the list

        # f. the cache follows the running beams; can the search go on?
        self.cache.reorder(self.running_paths[:, length - prompt])
        self.cur_len = length + 1
        best_possible = self._best_possible(self.running_scores[0])
        worst_finished = float(self.beam_scores.min()) if bool(self.is_finished.any()) else LOST
        self.improvable = self.improvable and best_possible > worst_finished
        record = self._record(
            index,
            length,
            logits,
            log_probs,
            top_scores,
            source,
            tokens,
            reasons,
            keep,
            finished_scores,
            added,
            forward,
            forward_time,
        )
        self.steps.append(record)
        stop = self._stop(hits, reasons)
        if stop is not None:
            record["done"] = stop[1]
            self._finish(stop[0])
        self.trace.emit("generation", "beams", record, run=self.run_id, start=start, duration=time.perf_counter() - t0)
        if stop is not None:
            self.trace.emit("generation", "ranking", self.ranking(stop[1]), run=self.run_id)
        return record

    def _stop(self, hits, reasons) -> tuple[str, str] | None:
        """(stop reason, the sentence that explains it) when the search is over (transformers'
        _beam_search_has_unfinished_sequences), else None."""
        if bool(hits.all()):  # every candidate met a stopping criterion: usually max_length
            reason = next(r for r in reasons if r)
            return reason, f"every candidate met a stopping criterion ({reason})"
        if not self.improvable:
            return "no_improvement", "no running beam can beat the worst finished one (the early-stopping heuristic)"
        if bool(self.is_finished.all()) and self.early_stopping is True:
            return "all_finished", f"{self.num_beams} sequences have finished (early_stopping=True)"
        return None

    def _best_possible(self, best_running: torch.Tensor) -> float:
        """transformers' _check_early_stop_heuristic: the best score the best running beam could still reach."""
        if self.early_stopping == "never" and self.length_penalty > 0.0:
            length = self.settings["max_length"] - self.prompt_length
        else:
            length = self.cur_len - self.prompt_length
        return float(best_running / (length**self.length_penalty))

    # -- what the trace keeps --------------------------------------------------------------------------
    def _record(
        self,
        index,
        length,
        logits,
        log_probs,
        top_scores,
        source,
        tokens,
        reasons,
        keep,
        finished_scores,
        added,
        forward,
        forward_time,
    ) -> dict:
        texts: dict[int, str] = {}
        beams = []
        live = self.steps[-1]["running"] if self.steps else [{"score": 0.0}]  # the first step: only beam 0 is live
        for beam, before in enumerate(live):
            top = self.top(log_probs[beam], self.beams_to_keep, texts)  # its K best: no other pair can be picked
            beams.append({"beam": beam, "score": before["score"], "top": top})
        kept_at = {int(k): slot for slot, k in enumerate(keep.tolist())}
        candidates = []
        generated = length + 1 - self.prompt_length
        for k in range(self.beams_to_keep):
            token = int(tokens[k])
            texts.setdefault(token, self.token_text(token))
            entry = {
                "beam": int(source[k]),
                "token_id": token,
                "score": float(top_scores[k]),
                "finished": reasons[k],
                "kept": kept_at.get(k) if reasons[k] is None else None,
                "added": k in added,
            }
            if reasons[k] is not None:
                entry["normalized"] = float(top_scores[k]) / generated**self.length_penalty
            candidates.append(entry)
        running = [
            {
                "parent": int(self.running_paths[slot, length - self.prompt_length]),
                "token_id": int(self.running_sequences[slot, length]),
                "score": float(self.running_scores[slot]),
            }
            for slot in range(self.num_beams)
        ]
        finished = [
            {"score": float(self.beam_scores[slot]), "length": self._length(slot)}
            for slot in range(self.num_beams)
            if bool(self.is_finished[slot])
        ]
        return {
            "step": index,
            "position": length,
            "method": "beam_sample" if self.do_sample else "beam_search",
            "beams": beams,
            "candidates": candidates,
            "running": running,
            "finished": finished,
            "length_penalty": self.length_penalty,
            "generated_length": generated,
            "kv_cache": {"length": len(self.cache), "bytes": self.cache.nbytes},
            "forward": forward,
            "forward_time": forward_time,
            "token_texts": {str(k): v for k, v in texts.items()},
        }

    def _length(self, slot: int) -> int:
        """New tokens of finished slot `slot` (its path's entries that are set)."""
        return int((self.finished_paths[slot] >= 0).sum())

    def ranking(self, reason: str) -> dict:
        """The finished list, best first, as generate() returns it: the first num_return_sequences are the answer."""
        hypotheses = []
        for rank in range(self.num_beams):
            if not bool(self.is_finished[rank]):
                continue
            length = self._length(rank)
            ids = self.finished_sequences[rank, self.prompt_length : self.prompt_length + length].tolist()
            score = float(self.beam_scores[rank])
            hypotheses.append(
                {
                    "rank": rank,
                    "ids": ids,
                    "text": self.tokenizer.decode(ids, skip_special_tokens=True),
                    "score": score,
                    "log_prob": score * length**self.length_penalty,
                    "length": length,
                    "path": self.finished_paths[rank, :length].tolist(),
                    "returned": rank < self.count,
                }
            )
        return {
            "hypotheses": hypotheses,
            "num_return_sequences": self.count,
            "num_beams": self.num_beams,
            "length_penalty": self.length_penalty,
            "early_stopping": self.early_stopping,
            "reason": reason,
            "steps": len(self.steps),
        }

    @property
    def sequences_scores(self) -> list[float]:
        """generate()'s sequences_scores: the returned sequences' length-penalised scores."""
        return [float(s) for s in self.beam_scores[: self.count]]

    @property
    def sequences(self) -> list[list[int]]:
        """The first num_return_sequences finished sequences, cut to the longest of them, as generate() returns."""
        longest = max([self._length(slot) for slot in range(self.count)] + [0])
        return self.finished_sequences[: self.count, : self.prompt_length + longest].tolist()
