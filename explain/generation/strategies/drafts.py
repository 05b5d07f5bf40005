"""Where assisted decoding's draft tokens come from: a smaller assistant model (transformers'
AssistedCandidateGenerator) or the prompt itself (PromptLookupCandidateGenerator), both in
transformers/generation/candidate_generator.py. Each proposes tokens for the target model to verify in one forward
pass; `propose(ids)` returns a Draft, `update(accepted, drafted)` adapts the next draft's length."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ...models.cache import KVCache
from ...stages.placement import input_device


@dataclass
class Draft:
    tokens: list[int]
    logits: torch.Tensor | None  # (len(tokens), vocab): the assistant's processed scores (speculative sampling)
    stop: str  # why the draft ended here
    probs: list[float] | None = None  # the assistant's probability of each of its tokens
    budget: int = 0  # the most tokens this draft could hold
    lookup: dict = field(default_factory=dict)  # prompt lookup: the n-gram matched and where


class AssistantDraft:
    """A smaller model (same vocabulary) drafts greedily, or by sampling when the call samples, up to
    num_assistant_tokens tokens; it stops early at EOS or when its confidence in a token falls below
    assistant_confidence_threshold (transformers' ConfidenceCriteria). It keeps its own KV cache.

    Its logits processors are the ones transformers' assistant generate() ends up with: the model's own list
    without MinLength (AssistedCandidateGenerator.__init__), passed as `logits_processor`, then, because
    _get_logits_processor merges that list before it appends the warpers, the warpers built again from the copied
    generation config (`appended`): when sampling, the draft is tempered twice (temperature 0.7 acts as 0.49)."""

    source = "assistant"

    def __init__(
        self,
        model,
        processors: list,
        appended: list,
        eos: list[int],
        do_sample: bool,
        max_length: int,
        min_length: int,
        num_tokens: int,
        schedule: str,
        threshold: float | None,
        min_new_tokens=None,
    ):
        self.model, self.eos, self.do_sample = model, list(eos), do_sample
        self.set_processors(processors, appended)
        self.min_new_tokens = min_new_tokens  # the processor class for a draft that must not end too soon
        self.max_length, self.min_length = max_length, min_length or 0
        self.num_tokens, self.schedule, self.threshold = num_tokens, schedule, threshold
        self.device = input_device(model)  # where inputs go (with offload, the first parameter may be meta)
        self.cache = KVCache()
        self.fed: list[int] = []  # the tokens whose keys and values are in self.cache

    def set_processors(self, processors: list, appended: list) -> None:
        self.given = [p for p in processors if p.name != "min_length"]
        self.appended = list(appended)

    def processors_for(self, length: int, minimum: int) -> list:
        """This draft's processors; with `minimum` new tokens required, the assistant's own MinNewTokens joins in
        its place (unless the model's list already has one, which takes precedence, as in transformers' merge)."""
        processors = self.given
        if minimum > 0 and self.eos and not any(p.name == "min_new_tokens" for p in processors):
            own = self.min_new_tokens(length, minimum, self.eos)
            at = next((i for i, p in enumerate(processors) if p.order > own.order), len(processors))
            processors = processors[:at] + [own] + processors[at:]
        return processors + self.appended

    @torch.inference_mode()
    def _logits(self, ids: list[int]) -> torch.Tensor:
        """The assistant's next-token logits after `ids` (1, vocab), feeding only what its cache lacks."""
        common = 0
        while common < min(len(self.fed), len(ids) - 1) and self.fed[common] == ids[common]:
            common += 1
        self.cache.crop(common)
        new = ids[common:]
        out = self.model(torch.tensor([new], dtype=torch.long, device=self.device), cache=self.cache, logits_to_keep=1)
        self.fed = ids[:common] + new
        return out.logits[:, -1, :].to(device=self.device, dtype=torch.float32)  # (1, vocab)

    @torch.inference_mode()
    def propose(self, ids: list[int]) -> Draft:
        budget = min(int(self.num_tokens), self.max_length - len(ids) - 1)  # _calculate_new_tokens
        minimum = max(min(budget, self.min_length - len(ids)), 0)
        if budget <= 0:
            return Draft([], None, "no room: the target's next token reaches max_length", budget=max(budget, 0))
        sequence, tokens, rows, probs = list(ids), [], [], []
        stop = "num_assistant_tokens"
        processors = self.processors_for(len(ids), minimum)
        logits = self._logits(sequence)
        while True:
            scores = logits
            for processor in processors:
                scores = processor(torch.tensor([sequence], device=self.device), scores)
            distribution = torch.softmax(scores, dim=-1)
            if self.do_sample:
                token = int(torch.multinomial(distribution, num_samples=1)[0, 0])
            else:
                token = int(torch.argmax(scores, dim=-1)[0])
            sequence.append(token)
            tokens.append(token)
            rows.append(scores[0])
            probs.append(float(distribution[0, token]))
            if len(tokens) >= budget:
                stop = "num_assistant_tokens"
                break
            if token in self.eos:
                stop = "eos"
                break
            if self.threshold and probs[-1] < self.threshold:  # ConfidenceCriteria
                stop = "confidence"
                break
            logits = self._logits(sequence)
        return Draft(tokens, torch.stack(rows), stop, probs, budget)

    def update(self, accepted: int, drafted: int) -> None:
        """transformers' heuristic schedule: two more tokens after a fully accepted draft, one fewer otherwise."""
        if self.schedule in ("heuristic", "heuristic_transient"):
            self.num_tokens = self.num_tokens + 2 if accepted == drafted else max(1, self.num_tokens - 1)


class PromptLookupDraft:
    """Prompt lookup decoding: find the last few tokens (an n-gram of max_matching_ngram_size tokens down to 1)
    earlier in the text, and propose the tokens that followed them there, up to prompt_lookup_num_tokens. A token the
    logits processors forbid (scored -inf on a row of ones) ends the draft; so does EOS."""

    source = "prompt_lookup"

    def __init__(
        self,
        processors: list,
        eos: list[int],
        num_tokens: int,
        ngram_size: int,
        max_length: int,
        vocab_size: int,
        device,
    ):
        self.processors, self.eos = processors, list(eos)
        self.num_tokens, self.ngram_size, self.max_length = num_tokens, ngram_size, max_length
        self.vocab_size, self.device = vocab_size, device

    def _allowed(self, ids: torch.Tensor, chosen: list[int]) -> list[int]:
        """The first tokens of `chosen` that no processor forbids (each checked after the ones before it)."""
        fake = torch.ones((1, self.vocab_size), dtype=torch.float32, device=self.device)
        sequence = ids
        for index, token in enumerate(chosen):
            scores = fake
            for processor in self.processors:
                scores = processor(sequence, scores)
            value = scores[0, token]
            if value == -float("inf") or value == torch.finfo(value.dtype).min:
                return chosen[:index]
            sequence = torch.cat([ids, torch.tensor([chosen[: index + 1]], device=self.device)], dim=1)
        return chosen

    @torch.inference_mode()
    def propose(self, ids_list: list[int]) -> Draft:
        length = len(ids_list)
        if self.max_length == length + 1:
            return Draft([], None, "no room: the target's next token reaches max_length", budget=0)
        ids = torch.tensor([ids_list], dtype=torch.long, device=self.device)  # (1, L)
        for size in range(min(self.ngram_size, length - 1), 0, -1):
            windows = ids.unfold(dimension=1, size=size, step=1)  # (1, L - size + 1, size)
            matches = (windows == ids[0, -size:]).all(dim=2)  # (1, windows)
            for start in matches.nonzero(as_tuple=True)[1].tolist():  # left to right, as transformers looks
                begin = start + size
                end = min(begin + self.num_tokens, length, self.max_length)
                if begin >= end:
                    continue
                chosen = self._allowed(ids, ids_list[begin:end])
                if not chosen:
                    continue
                stop = "the match's continuation ends" if len(chosen) == end - begin else "a processor forbids the next"
                eos_at = next((i for i, t in enumerate(chosen) if t in self.eos), None)
                if eos_at is not None:
                    chosen, stop = chosen[:eos_at], "eos"
                lookup = {"ngram": ids_list[length - size :], "match_start": start, "copied_from": begin}
                # an empty draft (EOS first) ends the search: transformers then takes an ordinary step
                return Draft(chosen, None, stop, None, self.num_tokens, lookup)
        return Draft([], None, "no match: the last tokens appear nowhere earlier", budget=self.num_tokens)

    def update(self, accepted: int, drafted: int) -> None:
        return None
