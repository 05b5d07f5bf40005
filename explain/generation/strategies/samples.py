"""Several sampled sequences of one prompt (num_return_sequences > 1, do_sample=True), drawn as transformers draws
them: generate() repeats the prompt into a batch of n rows (_expand_inputs_for_generation, repeat_interleave), runs
the model on the whole batch, applies the processors to the (n, vocab) scores and draws every row's next token with
one torch.multinomial on the (n, vocab) probabilities (GenerationMixin._sample). A row that has finished keeps being
drawn (the draw is on the whole batch) but gets the pad token instead. So under one seed the n sequences are the ones
transformers returns, and a single sampled sequence is not the first of them (its draw is of shape (1, vocab)).

Each step emits one generation/step per row still running, with `sequence` = the row: the same record one sequence
gets (logits, processors, probabilities), so the dashboard shows sequence 0 and the sampling tree draws them all.
"""

from __future__ import annotations

import math
import time

import torch

from ..knobs import Knob, number
from ..rows import float32_list, processor_record, sampled
from .base import DecodingStrategy, Run, timed
from .registry import register


@register
class SampleSequences(DecodingStrategy):
    name, title, order = "samples", "several samples", 30
    description = "n sequences drawn at once from one prompt: a batch of n rows, one multinomial draw per step"
    source = "transformers/generation/utils.py, GenerationMixin._sample with the prompt expanded to n rows"
    knobs = (
        Knob(
            "num_return_sequences",
            1,
            "int",
            "how many sequences to return (sampled, or the best beams)",
            check=number(1, integer=True),
            live=False,
        ),
    )

    @classmethod
    def applies(cls, settings):
        return (settings.get("num_return_sequences") or 1) > 1

    @classmethod
    def mode(cls, settings):
        return "sample"

    @classmethod
    def label(cls, settings):
        return f"sampling {settings['num_return_sequences']} sequences"

    @classmethod
    def settings_problem(cls, settings):
        n = settings.get("num_return_sequences") or 1
        if n > 1 and (settings.get("num_beams") or 1) == 1 and not settings.get("do_sample"):
            return (
                f"num_return_sequences={n} with greedy decoding: greedy decoding gives one sequence, and "
                'transformers refuses this ("Greedy methods (do_sample != True) without beam search do not '
                f'support `num_return_sequences` different than 1"); set do_sample=True to draw {n} samples, '
                f"or num_beams={max(n, 2)} for the {n} best beams"
            )
        if cls.applies(settings) and settings.get("guidance_scale") not in (None, 1):
            return (
                "guidance_scale runs classifier-free guidance on one sequence in explain (its unconditional "
                "sequence follows that one text); with num_return_sequences > 1 leave guidance_scale out, or "
                "call the pipeline once per sample"
            )
        return None

    @classmethod
    def run_class(cls):
        return SampledSequences


class SampledSequences(Run):
    title = "sampling several sequences"

    def __init__(self, model, tokenizer, prompt_ids, settings, trace, run, **options):
        count = settings["num_return_sequences"]
        super().__init__(model, tokenizer, prompt_ids, settings, trace, run, rows=count, **options)
        self.count = count
        self.input_ids = self.prompt_ids.repeat(count, 1)  # (n, T): the prompt in every row
        self.running = [True] * count
        self.stop_reasons: list[str | None] = [None] * count
        self.printed = [""] * count  # each row's decoded text that is complete (no half UTF-8 character)
        pad = self.settings.get("pad_token_id")
        self.pad = pad if pad is not None else (self.eos[0] if self.eos else None)  # _prepare_special_tokens
        if self.settings["max_length"] <= self.prompt_length:
            self._finish("max_length")

    @property
    def sequences(self) -> list[list[int]]:
        return self.input_ids.tolist()

    @torch.inference_mode()
    def step(self) -> dict:
        """One token for every row: emits a generation/step per row still running; returns the batch's record."""
        self.refuse_if_finished()
        start, t0 = timed()
        index = len(self.steps)
        if index == 0:
            raw = self.forward(self.input_ids)[:, -1]  # (n, vocab): the prompt, once per row, as generate() runs it
            forward = "prefill"
            self.emit_prefill(start, time.perf_counter() - t0, self.prompt_length * self.count)
        else:
            raw = self.forward(self.input_ids[:, -1:])[:, -1]  # (n, vocab): each row's last token
            forward = "decode"
        forward_time = time.perf_counter() - t0
        scores, outputs = raw, []
        for processor in self.processors:  # on the whole batch, as transformers' LogitsProcessorList runs
            before = scores
            scores = processor(self.input_ids, scores)
            outputs.append((before, scores))
        probs = torch.softmax(scores, dim=-1)  # (n, vocab)
        if self.settings.get("do_sample"):
            tokens = sampled(probs).squeeze(1)  # (n,): one draw for the whole batch
        else:
            tokens = torch.argmax(scores, dim=-1)
        running = torch.tensor(self.running, device=self.device)
        if self.eos and self.pad is not None:  # finished rows get the pad token (has_eos_stopping_criteria)
            tokens = torch.where(running, tokens, torch.full_like(tokens, self.pad))
        position = self.input_ids.shape[1]
        self.input_ids = torch.cat([self.input_ids, tokens[:, None]], dim=1)  # (n, T + 1)
        records = []
        for row in range(self.count):
            if not self.running[row]:
                continue
            record = self._row_record(
                row, index, position, raw, outputs, probs, int(tokens[row]), forward, forward_time
            )
            reason = self.stop_reason_of(self.input_ids[row].tolist(), row)
            if reason is not None:
                self.running[row], self.stop_reasons[row] = False, reason
                record["stop_reason"] = reason
            records.append(record)
        return self.end_rows_step(index, forward, forward_time, tokens, records, start, t0)

    def _row_record(self, row, index, position, raw, outputs, probs, token, forward, forward_time) -> dict:
        """Row `row`'s generation/step record: the fields one sequence's step has, and `sequence`."""
        texts: dict[int, str] = {}
        processors = []
        for processor, (before, after) in zip(self.processors, outputs, strict=True):
            processors.append(
                processor_record(
                    processor, before[row], after[row], lambda now: self.top(now, self.run_options.top_count, texts)
                )
            )
        p = probs[row]
        entropy = float(-(p[p > 0] * p[p > 0].log()).sum()) / math.log(2)
        top_probs, top_ids = torch.topk(p, min(10, p.numel()))
        for token_id in top_ids.tolist():
            texts.setdefault(token_id, self.token_text(token_id))
        full = self.tokenizer.decode(self.input_ids[row, self.prompt_length :].tolist(), skip_special_tokens=False)
        piece = ""
        if not full.endswith("\ufffd"):
            piece, self.printed[row] = full[len(self.printed[row]) :], full
        logits = raw[row]
        return {
            "step": index,
            "position": position,
            "branch": self.branch,
            "sequence": row,
            "logits_top": self.top(logits, self.run_options.top_count, texts),
            "processors": processors,
            "probs_top": {"ids": top_ids.tolist(), "values": float32_list(top_probs)},
            "token_id": token,
            "token": self.token_text(token),
            "text": piece,
            "method": "sample" if self.settings.get("do_sample") else "greedy",
            "prob": float(p[token]),
            "raw_prob": float(torch.softmax(logits, dim=-1)[token]),
            "logit": float(logits[token]),
            "rank": int((logits > logits[token]).sum()) + 1,
            "entropy_bits": entropy,
            "kv_cache": {"length": len(self.cache), "bytes": self.cache.nbytes},
            "forward": forward,
            "forward_time": forward_time,
            "token_texts": {str(k): v for k, v in texts.items()},
        }
