"""Assisted (speculative) decoding: a cheap source drafts several tokens, the model checks them all in one forward
pass and keeps them up to the first one it would not have produced, plus one token of its own
(GenerationMixin._assisted_decoding, transformers/generation/utils.py). The draft comes from a smaller model of the
same vocabulary (assistant_model=) or from the text itself (prompt_lookup_num_tokens=), drafts.py.

Greedy: a drafted token is kept when it is the model's argmax at its position, so the text is exactly plain greedy
decoding of the model, only with fewer forward passes. Sampling with an assistant model: speculative sampling
(_speculative_sampling): keep drafted token x with probability min(1, p(x) / q(x)), and at the first rejection draw
from max(0, p - q) renormalised; the text follows the model's distribution. Sampling with prompt lookup: each
position is sampled from the model and a drafted token is kept when the draw equals it.

Each round emits generation/draft (what was drafted, what the model picked, how many were accepted, why the first
rejected one was rejected) and then one generation/step per new token, as one sequence's steps.
"""

from __future__ import annotations

import math
import time

import torch

from ..knobs import Knob, number
from ..processors import build_processors
from ..processors.registry import MERGE_ORDER, PROCESSORS
from ..rows import float32_list, processor_record
from .base import DecodingStrategy, Run, set_by_call, timed
from .drafts import AssistantDraft, PromptLookupDraft
from .registry import register

ASSISTANT_SETTINGS = ("num_assistant_tokens", "num_assistant_tokens_schedule", "assistant_confidence_threshold")


def assistant_model_of(value):
    """The explain model of an assistant given as an explain pipeline or its .model, else None."""
    model = getattr(value, "model", value)
    if isinstance(model, torch.nn.Module) and type(model).__module__.startswith("explain.models"):
        return model
    return None


def check_assistant(value, vocab_size=None) -> str | None:
    model = assistant_model_of(value)
    if model is None:
        return (
            f'must be an explain pipeline (explain.pipeline("text-generation", model=...)) or its .model, got '
            f"{type(value).__name__}; load the assistant with explain so that its drafts are traced too"
        )
    size = getattr(model.config, "vocab_size", None)
    if vocab_size is not None and size != vocab_size:
        return (
            f"has a vocabulary of {size} tokens and the model {vocab_size}: assisted decoding compares token ids, "
            "so both need the same tokenizer (transformers' universal assisted decoding, for two tokenizers, is "
            "not in explain); pick an assistant of the same family, or use prompt_lookup_num_tokens="
        )
    return None


def assistant_label(value) -> str:
    model = assistant_model_of(value)
    parameters = sum(p.numel() for p in model.parameters())
    name = getattr(value, "name_or_path", None)
    return f"{name + ': ' if name else ''}{type(model).__name__}, {parameters / 1e6:.1f} M parameters"


def check_schedule(value, vocab_size=None) -> str | None:
    if value in ("constant", "heuristic", "heuristic_transient"):
        return None
    return f'must be "constant", "heuristic" or "heuristic_transient", got {value!r}'


def rejection_record(index: int, drafted: int, chose: int, probs, token_text, how: str = "ranks first") -> dict:
    """The draft event's `rejection`: the first drafted token the model did not keep, at `index` of the round,
    with both tokens' probabilities under the model (`probs`: one row per drafted position) and a sentence saying
    why. Both producers write it (the transformers backend's DraftWatch too)."""
    return {
        "index": index,
        "drafted_id": drafted,
        "target_id": chose,
        "target_prob": float(probs[index, chose]),
        "drafted_prob": float(probs[index, drafted]),
        "reason": f"at drafted token {index + 1} the model {how} {token_text(chose)!r} "
        f"(p {float(probs[index, chose]):.3f}), not the drafted "
        f"{token_text(drafted)!r} (p {float(probs[index, drafted]):.3f})",
    }


@register
class AssistedDecoding(DecodingStrategy):
    name, title, order = "assisted", "assisted decoding", 10
    description = (
        "a cheap draft (a smaller model, or the prompt) proposes several tokens; the model checks them "
        "in one forward pass and keeps those it agrees with, plus one of its own"
    )
    source = (
        "transformers/generation/utils.py, GenerationMixin._assisted_decoding; candidates from "
        "generation/candidate_generator.py"
    )
    knobs = (
        Knob(
            "assistant_model",
            None,
            "object",
            "a smaller explain pipeline (or its .model) of the same vocabulary "
            "that drafts tokens for the model to check",
            check=check_assistant,
            live=False,
            cli=False,
        ),
        Knob(
            "prompt_lookup_num_tokens",
            None,
            "int",
            "prompt lookup decoding: draft up to this many tokens by "
            "copying what followed the last tokens earlier in the text",
            check=number(1, integer=True),
            live=False,
        ),
        Knob(
            "max_matching_ngram_size",
            None,
            "int",
            "prompt lookup: the longest n-gram looked up (default 2)",
            check=number(1, integer=True),
            live=False,
        ),
        Knob(
            "num_assistant_tokens",
            20,
            "int",
            "assisted decoding: the assistant drafts up to this many tokens "
            "(transformers reads it from the assistant's generation config)",
            check=number(1, integer=True),
            live=False,
        ),
        Knob(
            "num_assistant_tokens_schedule",
            "constant",
            "json",
            'assisted decoding: "constant", or '
            '"heuristic" (+2 after a fully accepted draft, -1 otherwise; from the assistant\'s generation config)',
            check=check_schedule,
            live=False,
        ),
        Knob(
            "assistant_confidence_threshold",
            0.4,
            "float",
            "assisted decoding: the assistant stops drafting at a "
            "token it gives less than this probability (from the assistant's generation config)",
            check=number(0, 1),
            live=False,
        ),
    )

    @classmethod
    def applies(cls, settings):
        drafted = settings.get("assistant_model") is not None or settings.get("prompt_lookup_num_tokens") is not None
        return drafted and (settings.get("num_beams") or 1) == 1

    @classmethod
    def mode(cls, settings):
        return "assisted_generation"

    @classmethod
    def label(cls, settings):
        how = "sampling" if settings.get("do_sample") else "greedy"
        if settings.get("prompt_lookup_num_tokens") is not None:
            return (
                f"assisted decoding ({how}): prompt lookup, up to {settings['prompt_lookup_num_tokens']} "
                f"tokens copied after a matching {settings.get('max_matching_ngram_size') or 2}-gram"
            )
        return f"assisted decoding ({how}): drafts by {assistant_label(settings['assistant_model'])}"

    @classmethod
    def settings_problem(cls, settings):
        if not cls.applies(settings):
            return None
        count = settings.get("num_return_sequences") or 1
        if count > 1:
            return (
                f"num_return_sequences has to be 1 with assisted decoding (transformers refuses {count}: the "
                "draft and the check follow one sequence); leave num_return_sequences out, or drop the "
                "assistant to sample several sequences"
            )
        if settings.get("guidance_scale") not in (None, 1):
            return (
                "guidance_scale runs classifier-free guidance step by step in explain; with assisted decoding "
                "leave guidance_scale out"
            )
        return None

    @classmethod
    def warnings(cls, settings, sources):
        found = []
        if not cls.applies(settings):
            return found
        if settings.get("prompt_lookup_num_tokens") is not None and settings.get("assistant_model") is not None:
            found.append(
                "both prompt_lookup_num_tokens and assistant_model are set: transformers drafts by prompt "
                "lookup then and never runs the assistant; drop one of them"
            )
        for name in ASSISTANT_SETTINGS:
            if set_by_call(settings, sources, name):
                found.append(
                    f"{name}={settings[name]!r} has no effect in the call: transformers reads it from the "
                    "assistant model's generation config (AssistedCandidateGenerator); set it there, e.g. "
                    f"assistant_pipe.generation_config[{name!r}] = {settings[name]!r}"
                )
        return found

    @classmethod
    def plain(cls, settings: dict) -> dict:
        """The settings as the trace shows them: the assistant as a label, not an object."""
        if settings.get("assistant_model") is None:
            return settings
        return {**settings, "assistant_model": assistant_label(settings["assistant_model"])}

    @classmethod
    def run_class(cls):
        return AssistedRun


class AssistedRun(Run):
    title = "assisted decoding"

    def __init__(self, model, tokenizer, prompt_ids, settings, trace, run, **options):
        super().__init__(model, tokenizer, prompt_ids, settings, trace, run, **options)
        self.input_ids = self.prompt_ids.clone()  # (1, T)
        self.do_sample = bool(self.settings.get("do_sample"))
        self.rounds: list[dict] = []
        self.printed = ""
        self.drafter = self._drafter()
        if self.settings["max_length"] <= self.prompt_length:
            self._finish("max_length")

    def _drafter(self):
        settings = self.settings
        if settings.get("prompt_lookup_num_tokens") is not None:  # transformers checks prompt lookup first
            return PromptLookupDraft(
                self.processors,
                self.eos,
                settings["prompt_lookup_num_tokens"],
                settings.get("max_matching_ngram_size") or 2,
                settings["max_length"],
                self.model.config.vocab_size,
                self.device,
            )
        assistant = settings["assistant_model"]
        own = dict(getattr(assistant, "generation_config", None) or {})  # a pipeline's; a bare model: the defaults
        self.assistant_settings = {
            name: own.get(name, default)
            for name, default in (
                ("num_assistant_tokens", 20),
                ("num_assistant_tokens_schedule", "constant"),
                ("assistant_confidence_threshold", 0.4),
            )
        }
        return AssistantDraft(
            assistant_model_of(assistant),
            self.processors,
            self._appended(self.settings),
            self.eos,
            self.do_sample,
            settings["max_length"],
            settings.get("min_length") or 0,
            self.assistant_settings["num_assistant_tokens"],
            self.assistant_settings["num_assistant_tokens_schedule"],
            self.assistant_settings["assistant_confidence_threshold"],
            min_new_tokens=PROCESSORS["min_new_tokens"],
        )

    def _appended(self, settings: dict) -> list:
        """The processors the assistant's generate() appends after merging the model's list: those transformers
        builds after the merge point (the warpers when sampling, watermarking, renormalisation), built again."""
        return [
            p
            for p in build_processors(
                settings,
                self.prompt_length,
                prompt_ids=self.prompt_ids,
                model=self.model,
                vocab_size=self.model.config.vocab_size,
                device=self.device,
            )
            if p.order > MERGE_ORDER
        ]

    @property
    def sequences(self) -> list[list[int]]:
        return self.input_ids.tolist()

    @property
    def acceptance(self) -> dict:
        """Drafted tokens, accepted ones and their ratio over the run so far."""
        drafted = sum(len(r["drafted"]) for r in self.rounds)
        accepted = sum(r["accepted"] for r in self.rounds)
        return {
            "drafted": drafted,
            "accepted": accepted,
            "rate": accepted / drafted if drafted else None,
            "rounds": len(self.rounds),
            "tokens": len(self.steps),
        }

    # -- one round: draft, check, keep ----------------------------------------------------------------
    @torch.inference_mode()
    def step(self) -> dict:
        """One round: draft, verify in one forward pass, keep the agreed tokens plus one; returns generation/draft."""
        self.refuse_if_finished()
        start, t0 = timed()
        length = self.input_ids.shape[1]
        draft = self.drafter.propose(self.input_ids[0].tolist())
        draft_time = time.perf_counter() - t0
        count = len(draft.tokens)
        candidate = (
            torch.cat([self.input_ids, torch.tensor([draft.tokens], dtype=torch.long, device=self.device)], dim=1)
            if count
            else self.input_ids
        )  # (1, T + k)
        t1 = time.perf_counter()
        first = len(self.cache) == 0
        raw = self.forward(candidate[:, len(self.cache) :], keep=count + 1)[0]  # (k + 1, vocab)
        if first:
            self.emit_prefill(start, time.perf_counter() - t1, candidate.shape[1])
        verify_time = time.perf_counter() - t1
        outputs, processed = [], []
        for i in range(count + 1):  # each position's scores with the text before it, as generate() does
            scores, steps = raw[i : i + 1], []
            for processor in self.processors:
                before = scores
                scores = processor(candidate[:, : length + i], scores)
                steps.append((before[0], scores[0]))
            outputs.append(steps)
            processed.append(scores[0])
        processed = torch.stack(processed)  # (k + 1, vocab)
        probs = torch.softmax(processed, dim=-1)
        valid, accepted, picked, rejection = self._select(draft, processed, probs)
        budget = self.settings["max_length"] - length  # never past max_length, and nothing after EOS
        valid = valid[:budget]
        eos_at = next((i for i, t in enumerate(valid) if t in self.eos), None)
        if eos_at is not None:
            valid = valid[: eos_at + 1]
        accepted = len(valid) - 1
        self.input_ids = torch.cat([self.input_ids, torch.tensor([valid], device=self.device)], dim=1)
        self.cache.crop(length + accepted)  # forget the keys of the rejected draft tokens
        self.drafter.update(accepted, count)
        texts: dict[int, str] = {t: self.token_text(t) for t in draft.tokens + valid + picked}
        record = {
            "round": len(self.rounds),
            "position": length,
            "source": self.drafter.source,
            "drafted": draft.tokens,
            "draft_probs": draft.probs,
            "draft_stop": draft.stop,
            "budget": draft.budget,
            "target_ids": picked,
            "target_probs": [float(probs[i, t]) for i, t in enumerate(draft.tokens)],
            "accepted": accepted,
            "new_ids": valid,
            "rejection": rejection,
            "method": "sample" if self.do_sample else "greedy",
            "draft_time": draft_time,
            "verify_time": verify_time,
            "token_texts": {str(k): v for k, v in texts.items()},
        }
        if draft.lookup:
            record["lookup"] = draft.lookup
        self.rounds.append(record)
        self.trace.emit("generation", "draft", record, run=self.run_id, start=start, duration=time.perf_counter() - t0)
        share = (time.perf_counter() - t0) / len(valid)  # the round's time, shared by its new tokens
        for i, token in enumerate(valid):
            self._emit_step(i, length, token, raw[i], outputs[i], probs[i], i < accepted, first, share, record)
        return record

    def _select(self, draft, processed, probs) -> tuple[list[int], int, list[int], dict | None]:
        """(the tokens to keep, how many drafted ones were accepted, what the model picked at each position, why the
        first drafted token that was not kept was rejected)."""
        tokens, count = draft.tokens, len(draft.tokens)
        if self.do_sample and draft.logits is not None and count:
            return self._speculative(draft, probs)
        if self.do_sample:
            picked = torch.multinomial(probs, num_samples=1).squeeze(1).tolist()  # (k + 1,): one draw a position
        else:
            picked = torch.argmax(processed, dim=-1).tolist()
        accepted = 0
        while accepted < count and tokens[accepted] == picked[accepted]:
            accepted += 1
        rejection = None
        if accepted < count:
            how = "drew" if self.do_sample else "ranks first"
            rejection = rejection_record(accepted, tokens[accepted], picked[accepted], probs, self.token_text, how)
        return picked[: accepted + 1], accepted, picked, rejection

    def _speculative(self, draft, probs) -> tuple[list[int], int, list[int], dict | None]:
        """Speculative sampling (transformers' _speculative_sampling): keep drafted x with probability
        min(1, p(x) / q(x)); at the first rejection draw from max(0, p - q), renormalised."""
        tokens, count = draft.tokens, len(draft.tokens)
        q = torch.softmax(draft.logits, dim=-1)  # (k, vocab): the assistant's distributions
        index = torch.arange(count)
        q_i, p_i = q[index, tokens], probs[index, tokens]  # (k,)
        ratio = p_i / q_i
        random = torch.rand_like(ratio)  # (k,)
        kept = random <= ratio
        accepted = int(((~kept).cumsum(dim=-1) < 1).sum())
        if accepted < count:
            residual = torch.clamp(probs[accepted] - q[accepted], min=0)
            residual = residual / residual.sum()
        else:
            residual = probs[accepted]
        last = int(torch.multinomial(residual[None], num_samples=1)[0, 0])
        rejection = None
        if accepted < count:
            drafted = tokens[accepted]
            rejection = {
                "index": accepted,
                "drafted_id": drafted,
                "target_id": last,
                "target_prob": float(probs[accepted, last]),
                "drafted_prob": float(p_i[accepted]),
                "draft_prob": float(q_i[accepted]),
                "ratio": float(ratio[accepted]),
                "random": float(random[accepted]),
                "reason": f"kept with probability p/q = {float(p_i[accepted]):.3f}/{float(q_i[accepted]):.3f}"
                f" = {float(ratio[accepted]):.3f}, and the uniform draw was "
                f"{float(random[accepted]):.3f}; the model's token {self.token_text(last)!r} was "
                "drawn from max(0, p - q) instead",
            }
        return tokens[:accepted] + [last], accepted, tokens[:accepted] + [last], rejection

    def _emit_step(self, i, length, token, logits, steps, p, drafted, first, share, round_record) -> None:
        texts: dict[int, str] = {}
        processors = [
            processor_record(processor, before, after, lambda now: self.top(now, self.trace_top, texts))
            for processor, (before, after) in zip(self.processors, steps, strict=True)
        ]
        top_probs, top_ids = torch.topk(p, min(10, p.numel()))
        for token_id in top_ids.tolist():
            texts.setdefault(token_id, self.token_text(token_id))
        full = self.tokenizer.decode(
            self.input_ids[0, self.prompt_length : length + i + 1].tolist(), skip_special_tokens=False
        )
        piece = ""
        if not full.endswith("\ufffd"):
            piece, self.printed = full[len(self.printed) :], full
        entropy = float(-(p[p > 0] * p[p > 0].log()).sum()) / math.log(2)
        record = {
            "step": len(self.steps),
            "position": length + i,
            "branch": self.branch,
            "logits_top": self.top(logits, self.trace_top, texts),
            "processors": processors,
            "probs_top": {"ids": top_ids.tolist(), "values": float32_list(top_probs)},
            "token_id": token,
            "token": self.token_text(token),
            "text": piece,
            "method": round_record["method"],
            "prob": float(p[token]),
            "raw_prob": float(torch.softmax(logits, dim=-1)[token]),
            "logit": float(logits[token]),
            "rank": int((logits > logits[token]).sum()) + 1,
            "entropy_bits": entropy,
            "kv_cache": {"length": len(self.cache), "bytes": self.cache.nbytes},
            "forward": "prefill" if first and i == 0 else "decode",
            "forward_time": share,
            "token_texts": {str(k): v for k, v in texts.items()},
            "round": round_record["round"],
            "drafted": drafted,
        }
        if i == len(round_record["new_ids"]) - 1:
            # the round's end: generate() checks its stopping criteria once a round (_assisted_decoding)
            reason = self.stop_reason_of(self.input_ids[0].tolist(), row=0)
            if reason is not None:
                record["stop_reason"] = reason
                self._finish(reason)
        self.steps.append(record)
        self.trace.emit("generation", "step", record, run=self.run_id, duration=0.0)

    def set_settings(self, **knobs) -> None:
        super().set_settings(**knobs)
        if isinstance(self.drafter, AssistantDraft):
            self.drafter.set_processors(self.processors, self._appended(self.settings))
        else:
            self.drafter.processors = self.processors
