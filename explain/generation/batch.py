"""Several prompts in one batch, as transformers' pipeline runs a list with batch_size > 1.

The pipeline tokenizes each prompt on its own (preprocess), then its DataLoader collates batch_size of them with
pad_collate_fn (pipelines/base.py): every row is padded on the left with the tokenizer's pad token to the longest
prompt's length, and the attention mask says which tokens are real (1) and which are padding (0).
generate() then runs the whole batch with one forward per step (GenerationMixin._sample):

- the position ids come from the mask (a padded row starts at position 0 where its text starts), and attention
  never looks at a pad (the model files' positions_from_mask and padding_mask);
- the logits processors see the (rows, vocab) scores and the padded input_ids, pads included (a repetition
  penalty therefore also lowers the pad token in a padded row, as in transformers);
- one argmax or one torch.multinomial draws every row's token at once;
- a row that is done (EOS, a stop string) keeps being computed and gets pad_token_id instead of its token, until
  every row is done or the length runs out; the attention mask grows by a 1 per step for every row, as
  _update_model_kwargs_for_generation grows it.

num_return_sequences=n repeats every prompt into n rows first (_expand_inputs_for_generation: row b's samples are
rows b*n .. b*n+n-1). Each step emits one generation/step per row still running, with `sequence` (its row in the
batch's output) and `batch_row` (its prompt's index in the call's list).
"""

from __future__ import annotations

import math
import time

import torch

from ..errors import ExplainError
from ..stages.placement import synchronize
from .rows import float32_list
from .strategies.base import Run, timed

LOG2 = math.log(2)


class BatchedSequences(Run):
    """A batch of prompts (token ids, each unpadded), left-padded with `pad_token_id` and generated together.

    `batch_rows[i]` is prompt i's index in the call's list. `prompt_length` is the padded width, as generate()
    sees it: max_length, min_new_tokens and the returned sequences count from there."""

    title = "a batch of prompts"

    def __init__(
        self,
        model,
        tokenizer,
        prompts: list[list[int]],
        settings,
        trace,
        run,
        *,
        pad_token_id: int,
        batch_rows: list[int],
        **options,
    ):
        if any(not prompt for prompt in prompts):
            raise ExplainError(
                "a prompt of the batch has no tokens: this model has no BOS token to start from, so "
                "give every prompt some text"
            )
        width = max(len(prompt) for prompt in prompts)
        padded = [[pad_token_id] * (width - len(prompt)) + list(prompt) for prompt in prompts]
        count = settings.get("num_return_sequences") or 1
        # rows=count: the processors' num_beams (PrefixConstrained's batch_id is row // it), as for samples
        super().__init__(model, tokenizer, padded[0], settings, trace, run, rows=count, **options)
        self.pad, self.count = pad_token_id, count
        self.prompt_lengths = [len(prompt) for prompt in prompts]  # each prompt's own tokens, without padding
        self.prompt_ids = torch.tensor(padded, dtype=torch.long, device=self.device)  # (B, W)
        self.prompt_length = width
        self.processors = self.build_processors(self.settings)  # with the batch's (B, W) prompt ids
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=self.device)
        self.input_ids = self.prompt_ids.repeat_interleave(count, dim=0)  # (B * n, W)
        # None when no row is padded: the forward is then exactly the unbatched one (SDPA's is_causal)
        self.attention_mask = (
            mask.repeat_interleave(count, dim=0) if width * len(prompts) != sum(self.prompt_lengths) else None
        )
        self.batch_rows = [index for index in batch_rows for _ in range(count)]  # output row -> prompt's index
        self.row_lengths = [length for length in self.prompt_lengths for _ in range(count)]
        self.running = [True] * len(self.input_ids)
        self.stop_reasons: list[str | None] = [None] * len(self.input_ids)
        self.printed = [""] * len(self.input_ids)  # each row's decoded text that is complete (no half character)
        if self.settings["max_length"] <= self.prompt_length:
            self._finish("max_length")

    @property
    def sequences(self) -> list[list[int]]:
        """Every row as generate() returns it: left pads, the prompt, the new tokens, pads after the row ended."""
        return self.input_ids.tolist()

    @torch.inference_mode()
    def forward_batch(self, ids: torch.Tensor) -> torch.Tensor:
        """The model on new tokens `ids` (rows, t) with the batch's attention mask: float32 logits (rows, vocab)."""
        out = self.model(ids, cache=self.cache, attention_mask=self.attention_mask, logits_to_keep=1)
        logits = out.logits[:, -1, :].to(device=self.device, dtype=torch.float32)
        synchronize(logits.device)  # the forward's time is the forward's, not the queueing of its kernels
        return logits

    @torch.inference_mode()
    def step(self) -> dict:
        """One token for every row, one forward for the batch: emits a generation/step per row still running;
        returns the batch's record."""
        if self.finished:
            raise ExplainError(f"this generation has finished ({self.stop_reason}); start a new call")
        start, t0 = timed()
        index = len(self.steps)
        if index == 0:
            raw = self.forward_batch(self.input_ids)  # (rows, vocab): every padded prompt at once
            forward = "prefill"
            self.emit_prefill(start, time.perf_counter() - t0, sum(self.row_lengths))
        else:
            raw = self.forward_batch(self.input_ids[:, -1:])  # (rows, vocab): each row's last token
            forward = "decode"
        forward_time = time.perf_counter() - t0
        scores, outputs = raw, []
        for processor in self.processors:  # on the whole batch, as transformers' LogitsProcessorList runs
            before = scores
            scores = processor(self.input_ids, scores)
            outputs.append((before, scores))
        probs = torch.softmax(scores, dim=-1)  # (rows, vocab)
        if self.settings.get("do_sample"):
            tokens = torch.multinomial(probs, num_samples=1).squeeze(1)  # (rows,): one draw for the whole batch
        else:
            tokens = torch.argmax(scores, dim=-1)
        running = torch.tensor(self.running, device=self.device)
        if self.eos:  # a finished row gets the pad token (generate: has_eos_stopping_criteria): generate()'s own
            # pad_token_id (the call's, else the tokenizer's, else the first EOS: _prepare_special_tokens), which may
            # differ from the pad the prompts were collated with (the tokenizer's, pad_collate_fn)
            fill = self.settings.get("pad_token_id")
            fill = self.eos[0] if fill is None else fill
            tokens = torch.where(running, tokens, torch.full_like(tokens, int(fill)))
        self.input_ids = torch.cat([self.input_ids, tokens[:, None]], dim=1)  # (rows, T + 1)
        if self.attention_mask is not None:  # every row's new token is attended to, a finished row's pad too
            self.attention_mask = torch.cat([self.attention_mask, torch.ones_like(tokens)[:, None]], dim=1)
        records = self._records(index, raw, outputs, probs, tokens, forward, forward_time)
        rows = self.input_ids.tolist()
        for record in records:
            row = record["sequence"]
            reason = self.stop_reason_of(rows[row], row)
            if reason is not None:
                self.running[row], self.stop_reasons[row] = False, reason
                record["stop_reason"] = reason
        return self.end_rows_step(index, forward, forward_time, tokens, records, start, t0)

    def _records(self, index, raw, outputs, probs, tokens, forward, forward_time) -> list[dict]:
        """The generation/step record of every running row, the fields one sequence's step has, computed for the
        whole batch at once (one top-k per row set, one copy to the host) rather than row by row."""
        live = [row for row, going in enumerate(self.running) if going]
        if not live:
            return []
        k = min(self.run_options.top_count, raw.shape[-1])
        chosen = tokens[:, None]  # (rows, 1)
        logits_values, logits_ids = torch.topk(raw, k, dim=-1)
        probs_values, probs_ids = torch.topk(probs, min(10, probs.shape[-1]), dim=-1)
        logit = raw.gather(1, chosen)[:, 0]
        facts = torch.stack(
            [
                probs.gather(1, chosen)[:, 0],
                torch.softmax(raw, dim=-1).gather(1, chosen)[:, 0],
                logit,
                (raw > logit[:, None]).sum(-1).float(),
                torch.special.entr(probs).sum(-1),
            ],
            dim=1,
        )  # (rows, 5)
        stages = []  # per processor: (removed, changed, kept, token score, scores above it) and its top k
        for before, after in outputs:
            score = after.gather(1, chosen)[:, 0]
            stages.append(
                (
                    torch.stack(
                        [
                            (torch.isfinite(before) & ~torch.isfinite(after)).sum(-1).float(),
                            (before != after).sum(-1).float(),
                            torch.isfinite(after).sum(-1).float(),
                            score,
                            (after > score[:, None]).sum(-1).float(),
                        ],
                        dim=1,
                    ),
                    torch.topk(after, k, dim=-1),
                )
            )
        # each a copy of the whole (rows, ...) tensor to the host: values stay float32 tensors for float32_list
        host_facts, host_logits_values, host_logits_ids = facts.tolist(), logits_values.cpu(), logits_ids.tolist()
        host_probs_values, host_probs_ids, token_ids = probs_values.cpu(), probs_ids.tolist(), tokens.tolist()
        host_stages = [(counts.tolist(), top[0].cpu(), top[1].tolist()) for counts, top in stages]
        method = "sample" if self.settings.get("do_sample") else "greedy"
        kv_cache = {"length": len(self.cache), "bytes": self.cache.nbytes}
        records = []
        for row in live:
            texts: dict[int, str] = {}
            processors = []
            for processor, (counts, values, ids) in zip(self.processors, host_stages, strict=True):
                removed, changed, kept, score, above = counts[row]
                processors.append(
                    {
                        "name": processor.name,
                        "title": processor.title,
                        "args": processor.args(),
                        "removed": int(removed),
                        "changed": int(changed),
                        "kept": int(kept),
                        "top": self._top(values[row], ids[row], texts) if changed else None,
                        "token_score": score,
                        "token_rank": int(above) + 1,
                    }
                )
            token = token_ids[row]
            prob, raw_prob, logit_value, above, entropy = host_facts[row]
            probs_top = {"ids": host_probs_ids[row], "values": float32_list(host_probs_values[row])}
            for token_id in host_probs_ids[row]:
                texts.setdefault(token_id, self.token_text(token_id))
            full = self.tokenizer.decode(self.input_ids[row, self.prompt_length :].tolist(), skip_special_tokens=False)
            piece = ""
            if not full.endswith("\ufffd"):  # wait for the rest of a multi-byte character
                piece, self.printed[row] = full[len(self.printed[row]) :], full
            records.append(
                {
                    "step": index,
                    "position": self.row_lengths[row] + index,
                    "branch": self.branch,
                    "sequence": row,
                    "batch_row": self.batch_rows[row],
                    "logits_top": self._top(host_logits_values[row], host_logits_ids[row], texts),
                    "processors": processors,
                    "probs_top": probs_top,
                    "token_id": token,
                    "token": self.token_text(token),
                    "text": piece,
                    "method": method,
                    "prob": prob,
                    "raw_prob": raw_prob,
                    "logit": logit_value,
                    "rank": int(above) + 1,
                    "entropy_bits": entropy / LOG2,
                    "kv_cache": kv_cache,
                    "forward": forward,
                    "forward_time": forward_time,
                    "token_texts": {str(k): v for k, v in texts.items()},
                }
            )
        return records

    def _top(self, values: torch.Tensor, ids: list[int], texts: dict) -> dict:
        """A row's top entries, the finite ones (a processor's -inf are not candidates), their texts noted."""
        finite = torch.isfinite(values)
        ids = [token_id for token_id, keep in zip(ids, finite.tolist(), strict=True) if keep]
        for token_id in ids:
            texts[token_id] = self.token_text(token_id)
        return {"ids": ids, "values": float32_list(values[finite])}
