"""One generation run, advanced one token at a time, every step traced.

A step is what transformers' sampling loop does once: take the next-token logits (from the prefill forward
for the first step, else a forward of the last token through the KV cache), run the logits processors,
pick a token (argmax, or torch.multinomial on the softmax when sampling, exactly as transformers draws),
append it, check the stopping criteria. Because the state lives in this object, a run can pause between steps
(the step-through controller), change its knobs, ask "what if" of a recorded step, or branch with a forced token.
"""

from __future__ import annotations

import math
import time
import warnings

import torch

from ..errors import ExplainError
from ..models.cache import KVCache
from ..stages.placement import input_device, synchronize
from ..trace import Trace
from .contract import RunState, index_argument, no_prompt_tokens
from .options import DEFAULT_TRACE_TOP, RunOptions
from .processors import build_processors
from .rows import all_rows_warning, encode_row, float32_list, processor_record, sampled
from .settings import KNOBS, LIVE_SETTINGS, context_window_warnings, eos_ids, unknown_argument, validate
from .stopping import StopStrings


def context_window_message(context: int, length: int, learned: bool) -> str:
    """Why a run stops at, or goes past, the model's context window (max_position_embeddings)."""
    if learned:
        return (
            f"stopped at the context window: the model learned one position embedding for each of its {context} "
            f"positions (max_position_embeddings), and the next token would need position {context}, which "
            "has none (transformers' generate fails there with an IndexError)"
        )
    return (
        f"the sequence is {length} tokens, past the model's context window of {context} positions "
        "(max_position_embeddings): its rotary positions go on, as transformers' generate goes on after its "
        '"friendly reminder" warning, but the model was not trained this far and may write worse text'
    )


def _read(*tensors: torch.Tensor) -> list[torch.Tensor]:
    """Several tensors brought to the host in one copy, as float32: on a GPU each read waits for the device, so a
    step reads once what it needs rather than once per number. Token ids (< 2**24) are exact in float32."""
    host = torch.cat([t.reshape(-1).to(torch.float32) for t in tensors]).cpu()
    return list(host.split([t.numel() for t in tensors]))


class Generation(RunState):
    """One run of one prompt (the Generation interface, generation/contract.py). `run_id` is the id its call
    reserved (trace.new_run()); every event it emits carries it. A forced branch (force) is another Generation of
    the same run, with its own branch id."""

    def __init__(
        self,
        model,
        tokenizer,
        prompt_ids: list[int],
        settings: dict,
        trace: Trace,
        run: int,
        run_options: RunOptions | None = None,
        branch: int = 0,
        prompt=None,
        options: dict | None = None,
    ):
        if not prompt_ids:
            raise no_prompt_tokens()
        self.start_state(trace, run, run_options, branch)
        self.model, self.tokenizer = model, tokenizer
        self.device = input_device(model)  # where inputs go (with offload, the first parameter may be meta)
        self.settings = dict(settings)
        self.input_ids = torch.tensor([prompt_ids], dtype=torch.long, device=self.device)  # (1, T)
        self.prompt_length = len(prompt_ids)
        self.processors = self._build_processors(self.settings)
        self.eos = set(eos_ids(self.settings))
        self.stop_strings = StopStrings(tokenizer, self.settings.get("stop_strings"))
        self.context = model.config.max_position_embeddings  # every model file's config answers this name
        self.learned_positions = model.learned_positions  # True: no position past the window has an embedding
        self.prompt, self.options = prompt, dict(options or {})  # what the call was given, for its postprocess
        self.criteria = list(self.options.get("criteria") or [])  # the call's stopping_criteria, after explain's
        self.clock_start: float | None = None  # when the first step began: max_time counts from it
        # return_dict_in_generate: the rows generate() returns besides the sequences (output_scores: the processed
        # scores, output_logits: the raw logits), one (vocab,) tensor a step, as the pipeline puts them in its records
        self.outputs: dict[str, list] | None = None
        if self.options.get("return_dict_in_generate"):
            self.outputs = {key: [] for key in ("scores", "logits") if self.options.get(f"output_{key}")}
        if self.trace_top == "all":
            steps = max(self.settings["max_length"] - self.prompt_length, 0)
            self.warnings.append(all_rows_warning(len(self.processors), model.config.vocab_size, steps))
            warnings.warn(
                self.warnings[-1] + f"; pass trace_top={DEFAULT_TRACE_TOP} (the default) to keep only the top entries",
                stacklevel=4,
            )
        self.warnings += context_window_warnings(
            self.prompt_length, self.settings["max_length"], self.context, self.learned_positions
        )
        self.cache = KVCache()
        self.next_logits: torch.Tensor | None = None
        self.past_context_window = False  # set at the step whose token takes the sequence past the window
        if self.settings["max_length"] <= self.prompt_length:
            self._finish("max_length")

    # -- state -----------------------------------------------------------------------------------------
    @property
    def generated_ids(self) -> list[int]:
        return self.input_ids[0, self.prompt_length :].tolist()

    @property
    def text(self) -> str:
        return self.tokenizer.decode(self.generated_ids, skip_special_tokens=False)

    @property
    def sequences(self) -> list[list[int]]:
        """The sequences the call returns, prompt included (one here; every decoding strategy's run has this)."""
        return [self.input_ids[0].tolist()]

    def _build_processors(self, settings: dict) -> list:
        return build_processors(
            settings,
            self.prompt_length,
            prompt_ids=self.input_ids[:, : self.prompt_length],
            model=self.model,
            vocab_size=self.model.config.vocab_size,
            device=self.device,
        )

    # -- the model -------------------------------------------------------------------------------------
    @torch.inference_mode()
    def _forward(self, ids: torch.Tensor) -> torch.Tensor:
        out = self.model(ids, cache=self.cache, logits_to_keep=1)
        # (1, vocab): processors work in fp32, as in transformers, beside input_ids (the head may be on another GPU)
        logits = out.logits[:, -1, :].to(device=self.device, dtype=torch.float32)
        synchronize(logits.device)  # so that the forward's time is the forward's, not the queueing of its kernels
        return logits

    def prefill(self) -> dict:
        start, t0 = time.time(), time.perf_counter()
        self.next_logits = self._forward(self.input_ids)
        duration = time.perf_counter() - t0
        data = {
            "prompt_tokens": self.prompt_length,
            "tokens_per_s": self.prompt_length / max(duration, 1e-9),
            "kv_cache": {"length": len(self.cache), "bytes": self.cache.nbytes},
            "branch": self.branch,
        }
        self.trace.emit("generation", "prefill", data, run=self.run_id, start=start, duration=duration)
        return data

    # -- one step --------------------------------------------------------------------------------------
    def _top(self, scores: torch.Tensor, token_texts: dict) -> dict:
        row = scores[0]
        k = min(self.run_options.top_count, row.numel())
        values, ids = _read(*torch.topk(row, k))  # one read for both
        keep = torch.isfinite(values)
        values, ids = values[keep], ids[keep].long().tolist()
        for token_id in ids:
            token_texts[token_id] = self.token_text(token_id)
        return {"ids": ids, "values": float32_list(values)}

    @torch.inference_mode()
    def step(self) -> dict:
        """Generate one token; emits and returns the step's `generation/step` data."""
        self.refuse_if_finished()
        start, t0 = time.time(), time.perf_counter()
        index = len(self.steps)
        if self.clock_start is None:
            self.clock_start = start
        if self.next_logits is None:
            if index == 0:
                self.prefill()
                forward = "prefill"
            else:
                self.next_logits = self._forward(self.input_ids[:, -1:])
                forward = "decode"
        else:
            forward = "prefill" if index == 0 else "decode"
        forward_time = time.perf_counter() - t0
        raw = self.next_logits
        self.next_logits = None
        if self.raw_logits is not None:
            self.raw_logits.append(raw[0])
        token_texts: dict[int, str] = {}
        record = {
            "step": index,
            "position": self.input_ids.shape[1],
            "branch": self.branch,
            "logits_top": self._top(raw, token_texts),
            "processors": [],
        }
        scores = raw
        outputs = []  # each processor's scores: the chosen token's score and rank, and the rows of trace_top="all"
        for processor in self.processors:
            before = scores
            scores = processor(self.input_ids, scores)
            outputs.append(scores)
            record["processors"].append(
                processor_record(processor, before, scores, lambda after: self._top(after, token_texts))
            )
        probs = torch.softmax(scores, dim=-1)  # (1, vocab), the distribution the token is drawn from
        if self.outputs is not None:
            for key, row in (("scores", scores), ("logits", raw)):
                if key in self.outputs:
                    self.outputs[key].append(row[0].detach().to("cpu", torch.float32))
        if self.trace_top == "all":
            record["rows"] = {
                "logits": encode_row(raw[0]),
                **{p["name"]: encode_row(row[0]) for p, row in zip(record["processors"], outputs, strict=True)},
                "probs": encode_row(probs[0]),
            }
        if self.settings.get("do_sample"):
            chosen = sampled(probs)[0, 0]
            method = "sample"
        else:
            chosen = torch.argmax(scores, dim=-1)[0]
            method = "greedy"
        raw_probs = torch.softmax(raw, dim=-1)
        p = probs[0]
        top_probs, top_ids = torch.topk(p, min(10, p.numel()))
        # the step's numbers in one read: the token, its probabilities and logit, the logits above it, the entropy
        # (entr(p) = -p ln p, and 0 where p is 0)
        facts = torch.stack(
            [
                chosen.to(torch.float32),
                probs[0, chosen],
                raw_probs[0, chosen],
                raw[0, chosen],
                (raw[0] > raw[0, chosen]).sum().to(torch.float32),
                torch.special.entr(p).sum(),
            ]
        )
        # the chosen token after each processor, even outside the top: its score and how many scores are above it
        after = [torch.stack([o[0, chosen].float(), (o[0] > o[0, chosen]).sum().float()]) for o in outputs]
        after = torch.stack(after) if after else raw.new_zeros(0, 2)
        facts, top_probs, top_ids, after = _read(facts, top_probs, top_ids, after)
        token, prob, raw_prob, logit, above, entropy = facts.tolist()
        for entry, (score, higher) in zip(record["processors"], after.view(-1, 2).tolist(), strict=True):
            entry["token_score"], entry["token_rank"] = score, int(higher) + 1
        token, top_ids = int(token), top_ids.long().tolist()
        for token_id in top_ids:
            token_texts.setdefault(token_id, self.token_text(token_id))
        self.input_ids = torch.cat([self.input_ids, chosen.view(1, 1)], dim=1)  # the token never left the device
        ids = self.input_ids[0].tolist()  # one read for the text and the stop strings
        full = self.tokenizer.decode(ids[self.prompt_length :], skip_special_tokens=False)
        piece = ""
        if not full.endswith("\ufffd"):  # wait for the rest of a multi-byte character before printing
            piece, self.printed = full[len(self.printed) :], full
        record.update(
            token_id=token,
            token=self.token_text(token),
            text=piece,
            method=method,
            prob=prob,
            raw_prob=raw_prob,
            logit=logit,
            rank=int(above) + 1,
            entropy_bits=entropy / math.log(2),
            probs_top={"ids": top_ids, "values": float32_list(top_probs)},
            kv_cache={"length": len(self.cache), "bytes": self.cache.nbytes},
            forward=forward,
            forward_time=forward_time,
            token_texts={str(k): v for k, v in token_texts.items()},
        )  # str keys: as JSON has them, live or replayed
        if token in self.eos:
            self._finish("eos", record)
        elif self.input_ids.shape[1] >= self.settings["max_length"]:
            self._finish("max_length", record)
        elif self.learned_positions and self.input_ids.shape[1] >= self.context:
            self._finish("context_window", record)
            record["warnings"] = [context_window_message(self.context, self.input_ids.shape[1], learned=True)]
        elif self.stop_strings.completes(ids):
            self._finish("stop_string", record)
        elif (reason := self.further_stop()) is not None:
            self._finish(reason, record)
        if not self.finished and self.input_ids.shape[1] > self.context and not self.past_context_window:
            # where transformers' MaxLengthCriteria warns (once) and goes on: the next forward is past the window
            self.past_context_window = True
            record["warnings"] = [context_window_message(self.context, self.input_ids.shape[1], learned=False)]
            warnings.warn(record["warnings"][0], UserWarning, stacklevel=2)
        self.steps.append(record)
        self.trace.emit("generation", "step", record, run=self.run_id, start=start, duration=time.perf_counter() - t0)
        if self.capture == "inside":
            self.inspect(index)
        return record

    def further_stop(self) -> str | None:
        """max_time, then the call's stopping_criteria (RunState.criteria_stops), with the scores generate() hands
        them: the kept ones where return_dict_in_generate and output_scores keep them, else None."""
        kept = self.outputs.get("scores") if self.criteria and self.outputs is not None else None
        scores = tuple(row[None] for row in kept) if kept is not None else None
        return self.criteria_stops(self.input_ids, scores)[0]

    # -- looking inside ---------------------------------------------------------------------------------
    def inspect(self, step: int, what=("lens", "attention"), **options) -> dict:
        """The logit lens, attention weights and/or input attribution of step `step` (explain.inside), computed
        by replaying the step from this run's KV cache; what=("lens", "attention", "attribution")."""
        from ..inside import inspect_step  # Captum and the views' helpers load only when asked

        return inspect_step(self, step, what=what, **options)

    # -- knobs, what-if, forcing ------------------------------------------------------------------------
    def _with_knobs(self, knobs: dict, what: str) -> dict:
        """The run's settings with these knobs changed, validated; an unknown, misspelt or fixed knob is refused."""
        for name in knobs:
            if name not in KNOBS:
                raise unknown_argument(name, LIVE_SETTINGS, f"knob for {what}")
            if name not in LIVE_SETTINGS:
                raise ExplainError(
                    f"{name} cannot change {what}: it is fixed when the run starts; start a new run "
                    f"with it (pipe.start(prompt, {name}=...)). Knobs that can change: "
                    f"{', '.join(LIVE_SETTINGS)}"
                )
        settings = validate({**self.settings, **knobs}, self.model.config.vocab_size)
        if "min_new_tokens" in knobs and settings["min_new_tokens"] is not None:
            settings["min_length"] = settings["min_new_tokens"] + self.prompt_length  # as resolve() does
        return settings

    def set_settings(self, **knobs) -> None:
        """Change knobs (temperature, top_k, top_p, repetition_penalty, do_sample, or any other processor's) for
        the next steps; the processors are rebuilt from them."""
        settings = self._with_knobs(knobs, "mid-run")
        self.processors = self._build_processors(settings)
        self.settings = settings

    def what_if(self, step: int, **knobs) -> dict:
        """Re-apply processors built from other knobs to step `step`'s recorded raw logits; nothing is generated."""
        step = index_argument(step, "step")
        scores = self.kept_logits(step)[None].to(self.device)
        settings = self._with_knobs(knobs, "in a what-if")
        ids = self.input_ids[:, : self.steps[step]["position"]]
        with torch.inference_mode():
            for processor in self._build_processors(settings):
                scores = processor(ids, scores)
        return self.what_if_answer(step, settings, knobs, scores)

    def force(self, step: int, token_id: int) -> Generation:
        """A new branch of this run: this run up to `step`, then `token_id` there; this run is left as it was.
        The branch builds its own processors (some keep state: guidance's second sequence)."""
        step, token_id = self.force_arguments(step, token_id, self.model.config.vocab_size)
        position = self.steps[step]["position"]
        branch = Generation(
            self.model,
            self.tokenizer,
            self.input_ids[0, : self.prompt_length].tolist(),
            self.settings,
            self.trace,
            self.run_id,
            self.run_options,
            branch=self.trace.new_branch(self.run_id),
            prompt=self.prompt,
            options=self.options,
        )
        branch.cache.keys, branch.cache.values = list(self.cache.keys), list(self.cache.values)
        branch.cache.crop(position)
        branch.input_ids = torch.cat(
            [self.input_ids[:, :position], torch.tensor([[token_id]], device=self.device)], dim=1
        )
        forced = dict(
            self.steps[step],
            token_id=token_id,
            token=self.token_text(token_id),
            forced=True,
            branch=branch.branch,
            text=None,
        )
        forced.pop("stop_reason", None)
        branch.steps = [dict(s, branch=branch.branch) for s in self.steps[:step]] + [forced]
        branch.raw_logits = self.raw_logits.upto(step) if self.raw_logits is not None else None
        text = branch.text
        branch.printed = text if not text.endswith("\ufffd") else ""
        if token_id in branch.eos or branch.input_ids.shape[1] >= branch.settings["max_length"]:
            branch._finish("eos" if token_id in branch.eos else "max_length", forced)
        elif branch.learned_positions and branch.input_ids.shape[1] >= branch.context:
            branch._finish("context_window", forced)  # the forced step keeps its warning, which says why
        branch.past_context_window = branch.input_ids.shape[1] > branch.context
        self.trace.emit(
            "generation",
            "force",
            {
                "step": step,
                "position": position,
                "token_id": token_id,
                "token": forced["token"],
                "from_branch": self.branch,
                "branch": branch.branch,
                "replaced": self.steps[step]["token_id"],
            },
            run=self.run_id,
        )
        return branch
