"""TracedTextGenerationPipeline: transformers' own TextGenerationPipeline, its three stages traced.

    preprocess   -> tokenization/encode   the pipeline's own output (ids, attention mask), the chat-template text
    _forward     -> generation/settings, prefill, step..., end    generate() watched by hooks.observing
    postprocess  -> decoding/decode        what the pipeline returns (return_full_text, the chat with the answer)

Each override calls transformers' method and records what it returned; the pipeline computes exactly what
transformers.TextGenerationPipeline computes (it is one: isinstance checks, save_pretrained, ... all work).
`start(prompt, ...)` runs preprocess and sets up a TransformersGeneration to advance token by token.
"""

from __future__ import annotations

import os
import time
from collections import deque

from transformers import TextGenerationPipeline
from transformers.pipelines.text_generation import ReturnType
from transformers.tokenization_utils_tokenizers import TokenizersBackend
from transformers.utils.chat_template_utils import Chat, is_valid_message

from ...errors import ArgumentError, ExplainError
from ...generation.arguments import generation_config_values
from ...generation.ending import emit_decode, emit_end, finish_by_hand, role_segments
from ...generation.options import (
    LONG_PROMPT_TOKENS,
    RUN_OPTIONS,
    ModelSize,
    RunOptions,
    check_fit,
    check_limits,
    check_prompt_ids,
    rows_of,
)
from ...generation.rows import NOT_A_DISTRIBUTION
from ...generation.settings import SETTINGS, knobs_transformers_lacks, transformers_lacks, validate
from ...inputs import check_batch_size
from ...stages.tokenizer import check_normalizer, rust_call
from ...trace import Trace
from .generation import TransformersGeneration


class TracedTextGenerationPipeline(TextGenerationPipeline):
    """A transformers TextGenerationPipeline whose calls emit explain's events into `self.trace`."""

    def __init__(self, *args, trace: Trace | None = None, **kwargs):
        self.trace = trace if trace is not None else Trace()
        config = self.trace.last("config", "config")  # emitted while transformers loaded the model, if it did
        self.generation_config_source = (
            "model generation config"
            if config is None
            else "generation_config.json"
            if config.data.get("has_generation_config_file")
            else "model config"
        )
        self.last_generation: TransformersGeneration | None = None
        self.token_texts: dict[int, str] = {}
        # the run ids preprocess reserved, in order, for the _forward that follows each (transformers' iterator
        # runs preprocess, _forward, postprocess item after item; model_inputs may not carry other values)
        self._runs: deque[int] = deque()
        self._reserved_run: int | None = None  # a run id start(run=...) was handed, for its preprocess
        # a list run with batch_size > 1: how many prompts go in one batch, and how many preprocess has seen (the
        # prompts of one batch share one run, as the explain backend runs a batch)
        self._batch_size_now, self._items_seen = 1, 0
        self._batch_rows: deque[list[int]] = deque()  # each batch's prompt indices, for its _forward
        super().__init__(*args, **kwargs)

    @classmethod
    def following(cls, pipeline: TextGenerationPipeline, trace: Trace | None = None) -> TracedTextGenerationPipeline:
        """A traced pipeline over an already-built one: the same model, tokenizer and device (no copy of the
        weights), with the generation and call parameters it was built with."""
        if not isinstance(pipeline, TextGenerationPipeline):
            raise ExplainError(
                f"explain.attach traces a transformers text-generation pipeline, got "
                f'{type(pipeline).__name__}; build one with transformers.pipeline("text-generation", '
                "model=...)"
            )
        device = None if getattr(pipeline.model, "hf_device_map", None) is not None else pipeline.device
        traced = cls(
            model=pipeline.model,
            tokenizer=pipeline.tokenizer,
            task=pipeline.task,
            device=device,
            trace=trace,
            assistant_model=pipeline.assistant_model,
            assistant_tokenizer=pipeline.assistant_tokenizer,
        )
        # what the user gave transformers.pipeline(...) beyond the components: generate() arguments and call options
        traced._generate_kwargs = dict(pipeline._generate_kwargs)
        traced._preprocess_params = dict(pipeline._preprocess_params)
        traced._forward_params = dict(pipeline._forward_params)
        traced._postprocess_params = dict(pipeline._postprocess_params)
        traced._batch_size, traced._num_workers = pipeline._batch_size, pipeline._num_workers
        return traced

    def __repr__(self) -> str:
        return (
            f"explain.TracedTextGenerationPipeline({type(self.model).__name__}, dtype="
            f"{str(self.model.dtype).replace('torch.', '')}, device={self.device}, {len(self.trace)} trace events)"
        )

    def token_text(self, token_id: int) -> str:
        """One token decoded on its own (special tokens kept), remembered: the step records name tokens by it."""
        text = self.token_texts.get(token_id)
        if text is None:
            self.remember_texts([token_id])
            text = self.token_texts[token_id]
        return text

    def decode_ids(self, ids: list[int], skip_special_tokens: bool = False) -> str:
        """tokenizer.decode(ids), through the Rust backend when that is all transformers' decode would do."""
        if (
            type(self.tokenizer)._decode is TokenizersBackend._decode
            and not self.tokenizer.clean_up_tokenization_spaces
        ):
            return self.tokenizer.backend_tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)
        return self.tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)

    def remember_texts(self, token_ids) -> None:
        """Decode the ids not seen yet, each on its own. A fast tokenizer that cleans up no spaces decodes exactly
        as its Rust backend does (TokenizersBackend._decode), so the ids go straight to the backend (about 1 us an
        id, against 40 us through transformers' decode; decode_batch is slower still: it starts threads)."""
        new = [i for i in dict.fromkeys(token_ids) if i not in self.token_texts]
        if not new:
            return
        if (
            type(self.tokenizer)._decode is TokenizersBackend._decode
            and not self.tokenizer.clean_up_tokenization_spaces
        ):
            decode = self.tokenizer.backend_tokenizer.decode
            texts = [decode([i], skip_special_tokens=False) for i in new]
        else:
            texts = [self.tokenizer.decode([i], skip_special_tokens=False) for i in new]
        self.token_texts.update(zip(new, texts, strict=True))

    # -- parameters ----------------------------------------------------------------------------------------------
    @property
    def knobs_unavailable(self) -> tuple[str, ...]:
        """The knobs of processors and strategies only explain has (the step-through hides their widgets)."""
        return knobs_transformers_lacks()

    def _sanitize_parameters(self, **kwargs):
        for name in kwargs:  # else generate() fails later with its raw "model_kwargs are not used"
            problem = transformers_lacks(name)
            if problem:
                raise ArgumentError(problem)
        given = {name: kwargs.pop(name) for name in RUN_OPTIONS if name in kwargs}
        preprocess, forward, postprocess = super()._sanitize_parameters(**kwargs)
        RunOptions.from_call(given)  # checked here, before any work (construction and call options merge later)
        forward.update({name: value for name, value in given.items() if value is not None})
        return preprocess, forward, postprocess

    def _sources(self, call: dict, generate_kwargs: dict, prompt_length: int) -> dict:
        """Where each setting came from, in explain's words: the call (or the pipeline's construction), the model's
        generation config, the text-generation pipeline's defaults, generate()'s defaults."""
        model_set = self.model.generation_config.to_diff_dict()
        user = generation_config_values(call.get("generation_config"))  # it replaces the construction's settings
        constructed = {} if call.get("generation_config") is not None else self._generate_kwargs
        sources = {}
        for key in SETTINGS:
            if key in call or key in constructed:
                sources[key] = "call"
            elif key in user:
                sources[key] = "generation_config argument"
            elif key in self._generation_defaults and key in generate_kwargs and key not in model_set:
                sources[key] = "tokenizer pad token" if key == "pad_token_id" else "text-generation pipeline default"
            elif key in model_set:
                sources[key] = self.generation_config_source
            else:
                sources[key] = "generate() default"
        set_somewhere = generate_kwargs | model_set | user
        if sources["max_new_tokens"] != "generate() default" and "max_new_tokens" in set_somewhere:
            sources["max_length"] = f"max_new_tokens ({sources['max_new_tokens']}) + prompt length {prompt_length}"
        elif sources["max_length"] == "generate() default":
            sources["max_length"] = f"generate() default: 20 new tokens + prompt length {prompt_length}"
        return sources

    # -- the three stages ----------------------------------------------------------------------------------------
    def __call__(self, text_inputs, *args, **kwargs):
        self._runs.clear()  # a run reserved by a call that failed before its _forward is not this call's
        self._batch_rows.clear()
        batch_size = kwargs.get("batch_size", self._batch_size)
        single = isinstance(text_inputs, str) or (
            isinstance(text_inputs, (list, tuple)) and bool(text_inputs) and is_valid_message(text_inputs[0])
        )
        if not single:  # a list, a Dataset or a generator: transformers' DataLoader reads batch_size
            check_batch_size(batch_size)  # explain's message for what the DataLoader would refuse
        self._batch_size_now, self._items_seen = (batch_size or 1) if not single else 1, 0
        try:
            return super().__call__(text_inputs, *args, **kwargs)
        except ExplainError:
            raise
        except (ValueError, TypeError, IndexError, OverflowError) as error:  # transformers refused the call
            raise refused(error, kwargs) from error

    def preprocess(self, prompt_text, **params):
        batching, item = self._batch_size_now > 1, self._items_seen
        self._items_seen += 1
        if batching and item % self._batch_size_now:  # the next prompt of a batch: the batch's run
            run = self._runs[-1]
        else:
            run, self._reserved_run = (self._reserved_run or self.trace.new_run()), None
        start, t0 = time.time(), time.perf_counter()
        inputs = self._bounded_preprocess(prompt_text, params)
        if inputs["input_ids"] is not None and inputs["input_ids"].shape[-1] > LONG_PROMPT_TOKENS:  # before its details
            self._check_fit(inputs["input_ids"], {"num_beams": 1, "num_return_sequences": 1, "max_new_tokens": 1}, 1)
        data = self._encode_record(prompt_text, inputs, params)
        if batching:
            data["batch_row"] = item
        self.trace.emit("tokenization", "encode", data, run=run, start=start, duration=time.perf_counter() - t0)
        if batching and item % self._batch_size_now:
            self._batch_rows[-1].append(item)
        else:
            self._runs.append(run)
            self._batch_rows.append([item])
        return inputs

    def _bounded_preprocess(self, prompt_text, params):
        """transformers' preprocess, with the tokenizer's work bounded and its Rust errors named as the explain
        backend names them (stages/tokenizer.check_normalizer, a regex panic as a CorruptFileError)."""
        backend = getattr(self.tokenizer, "backend_tokenizer", None)
        if backend is None:  # a slow (Python) tokenizer: nothing of Rust's to bound
            return super().preprocess(prompt_text, **params)
        source = os.path.join(str(self.tokenizer.name_or_path), "tokenizer.json")
        texts = [m.get("content") for m in prompt_text.messages] if isinstance(prompt_text, Chat) else [prompt_text]
        check_normalizer(backend, "".join(t for t in texts if isinstance(t, str)), source)
        return rust_call(lambda: super(TracedTextGenerationPipeline, self).preprocess(prompt_text, **params), source)

    def _encode_record(self, prompt, inputs, params) -> dict:
        ids = inputs["input_ids"][0].tolist()
        mask = inputs.get("attention_mask")
        data = {
            "ids": ids,
            "count": len(ids),
            "attention_mask": mask[0].tolist() if mask is not None else None,
            "tokens": self.tokenizer.convert_ids_to_tokens(ids),
        }
        if isinstance(prompt, Chat):
            messages = [dict(m) for m in prompt.messages]
            continue_final = params.get("continue_final_message")
            if continue_final is None:
                continue_final = messages[-1]["role"] == "assistant"
            text = self.tokenizer.apply_chat_template(
                messages,
                add_generation_prompt=not continue_final,
                continue_final_message=continue_final,
                tokenize=False,
                tools=params.get("tools"),
                documents=params.get("documents"),
            )
            add_special = False
            data.update(
                kind_of_input="chat",
                chat_template_text=text,
                messages=messages,
                segments=tokenizer_role_segments(self.tokenizer, messages, text),
                add_generation_prompt=not continue_final,
                continue_final_message=continue_final,
            )
        else:
            text = (params.get("prefix") or "") + prompt
            add_special = params.get("add_special_tokens")
            add_special = True if add_special is None else add_special
            data.update(kind_of_input="text", chat_template_text=None, segments=None)
        data.update(text=text, add_special_tokens=add_special, **self._offsets(text, ids, add_special))
        special = set(self.tokenizer.all_special_ids)
        data["special"] = [i in special for i in ids]
        return data

    def _offsets(self, text: str, ids: list, add_special: bool) -> dict:
        """Each token's characters in `text`, from the fast tokenizer's offsets, when re-encoding gives the ids the
        pipeline made (a "hole" cut the prompt's start: the offsets of the kept end)."""
        try:
            encoding = self.tokenizer(text, add_special_tokens=add_special, return_offsets_mapping=True)
        except (NotImplementedError, ValueError, TypeError):  # a slow (Python) tokenizer has no offsets
            return {"offsets": None}
        full = encoding["input_ids"]
        if full[len(full) - len(ids) :] != ids:
            return {"offsets": None}
        offsets = [list(pair) for pair in encoding["offset_mapping"][len(full) - len(ids) :]]
        out = {"offsets": offsets}
        if len(full) > len(ids):
            out["hole"] = {"prompt_tokens": len(full), "kept": len(ids), "dropped": len(full) - len(ids)}
        return out

    def _forward(self, model_inputs, **generate_kwargs):
        rows = self._batch_rows.popleft() if self._batch_rows else None
        generation = self._generation(model_inputs, generate_kwargs)
        ids = model_inputs["input_ids"]
        if rows is not None and len(rows) > 1 and ids is not None and ids.shape[0] == len(rows):
            self._start_batch(generation, rows, model_inputs.get("attention_mask"))
        start, t0 = time.time(), time.perf_counter()
        interrupted = False
        try:
            with generation.watching():
                outputs = super()._forward(model_inputs, **generate_kwargs)
        except KeyboardInterrupt:
            interrupted = True
            generation._finish("interrupted")
            raise
        except RuntimeError as error:  # torch.multinomial on NaN weights' logits: explain's message
            if "probability tensor contains" in str(error):
                raise ExplainError(NOT_A_DISTRIBUTION) from error
            raise
        finally:
            self._end(generation, start, time.perf_counter() - t0, interrupted)
            if interrupted:  # postprocess will not run
                self._decode(generation.generated_ids, generation, skip_special_tokens=True, interrupted=True)
        return outputs

    def _generation(self, model_inputs, generate_kwargs: dict) -> TransformersGeneration:
        """A TransformersGeneration for this call (its explain options taken out of `generate_kwargs`)."""
        run_options = RunOptions.from_call({name: generate_kwargs.pop(name, None) for name in RUN_OPTIONS})
        call = dict(generate_kwargs)
        check_limits(call)  # explain's own checks stop here: what transformers accepts, it runs (issue 24)
        ids = model_inputs["input_ids"]
        prepared = self._prepare_generate_kwargs({k: v for k, v in generate_kwargs.items() if k != "prefix_length"})
        if ids is not None and ids.numel():
            self._check_fit(ids, {**call, **prepared}, run_options.top_count)
        run = self._runs.popleft() if self._runs else self.trace.new_run()
        generation = TransformersGeneration(
            self,
            ids.detach().to("cpu") if ids is not None else None,
            {},
            run=run,
            run_options=run_options,
            sources=self._sources(call, prepared, ids.shape[1]),
        )
        generation.prompt_text = model_inputs.get("prompt_text")
        generation.assistant_model = call.get("assistant_model", self.assistant_model)
        generation.assistant_tokenizer = call.get("assistant_tokenizer", self.assistant_tokenizer)
        self.last_generation = generation
        return generation

    def _check_fit(self, ids, settings: dict, top: int) -> None:
        """Before generate(): every prompt id has a row in the model (else a raw IndexError mid-call), and the rows,
        prompt and new tokens fit the free memory (generation/options.check_fit), as the explain backend checks."""
        config = self.model.config.get_text_config() if hasattr(self.model.config, "get_text_config") else None
        values = (config or self.model.config).to_dict()
        largest = int(ids.max())
        check_prompt_ids(largest, values.get("vocab_size"), self.tokenizer.convert_ids_to_tokens(largest))
        generation_config = self.model.generation_config
        merged = {
            key: settings[key] if settings.get(key) is not None else getattr(generation_config, key, None)
            for key in ("num_beams", "num_return_sequences", "max_new_tokens", "max_length", "do_sample")
        }
        prompt = ids.shape[-1]
        new_tokens = merged["max_new_tokens"] or max(1, (merged["max_length"] or 20) - prompt)
        size = ModelSize.of(values, self.model.dtype.itemsize, self.device)
        beam_sample = bool(merged["do_sample"]) and (merged["num_beams"] or 1) > 1
        check_fit(size, rows_of(merged, ids.shape[0]), prompt, new_tokens, top, beam_sample=beam_sample)

    def _start_batch(self, generation: TransformersGeneration, rows: list[int], mask) -> None:
        """A batch of prompts: each row traced (generation.start_batch), and the collation transformers did
        (pad_collate_fn: padding side, pad token, the mask) recorded as the explain backend records it."""
        generation.start_batch(rows, mask.detach().to("cpu") if mask is not None else None)
        width = generation.prompt_length
        ids = generation.input_ids.tolist()
        lengths = generation.row_lengths
        pad = self.tokenizer.pad_token_id
        generation.batch_note = {
            "index": rows[0],
            "size": rows[-1] + 1,
            "batch_size": self._batch_size_now,
            "rows": rows,
            "padding_side": self.tokenizer.padding_side,
            "pad_token_id": pad,
            "width": width,
            "prompt_lengths": lengths,
            "note": f"batch_size={self._batch_size_now}: prompts {rows[0]}..{rows[-1]} of the list padded on the "
            f"{self.tokenizer.padding_side} to {width} tokens by transformers' pad_collate_fn and generated "
            "together",
        }
        mask_rows = mask.tolist() if mask is not None else [[1] * width for _ in rows]
        self.trace.emit(
            "tokenization",
            "pad",
            {
                "side": self.tokenizer.padding_side,
                "pad_token_id": pad,
                "pad_token": self.tokenizer.pad_token,
                "width": width,
                "rows": [
                    {"batch_row": row, "ids": ids[i], "pads": width - lengths[i], "attention_mask": mask_rows[i]}
                    for i, row in enumerate(rows)
                ],
                "source": "transformers/pipelines/base.py: pad_collate_fn, _pad (the DataLoader's collate_fn); "
                'TextGenerationPipeline.__init__ turns a tokenizer\'s padding_side "right" into "left"',
            },
            run=generation.run_id,
        )

    def postprocess(self, model_outputs, **params):
        records = super().postprocess(model_outputs, **params)
        sequence = model_outputs["generated_sequence"][0][0].tolist()
        prompt = model_outputs["input_ids"]
        generated = sequence[prompt.shape[-1] if prompt is not None else 0 :]
        skip = params.get("skip_special_tokens")
        return_type = params.get("return_type", ReturnType.FULL_TEXT)
        generation, facts = self.last_generation, {}
        if generation is not None and generation.batched:  # the items of a batch come here in their row order
            decoded = getattr(generation, "rows_decoded", 0)
            generation.rows_decoded = decoded + 1
            facts["batch_row"] = generation.batch_rows[min(decoded, len(generation.batch_rows) - 1)]
        self._decode(
            generated,
            self.last_generation,
            skip_special_tokens=True if skip is None else skip,
            **facts,
            clean_up=params.get("clean_up_tokenization_spaces"),
            output=records,
            return_full_text=return_type == ReturnType.FULL_TEXT,
            return_tensors=return_type == ReturnType.TENSORS,
        )
        return records

    def _decode(
        self, ids, generation, skip_special_tokens: bool, interrupted: bool = False, clean_up=None, **facts
    ) -> str:
        def decode(ids, skip):  # the postprocess's options shape the text; the text with special tokens is plain
            options = {"clean_up_tokenization_spaces": clean_up} if skip == skip_special_tokens else {}
            return self.tokenizer.decode(ids, skip_special_tokens=skip, **options)

        return emit_decode(self.trace, generation, decode, ids, skip_special_tokens, interrupted, **facts)

    def _end(self, generation: TransformersGeneration, start: float, duration: float, interrupted: bool) -> None:
        emit_end(
            generation,
            start,
            duration,
            interrupted,
            stopping_criteria=generation.criteria_names,
            steps_traced=generation.steps_traced,
        )

    # -- step by step --------------------------------------------------------------------------------------------
    def start(self, text_inputs, *, run: int | None = None, **kwargs) -> TransformersGeneration:
        """Preprocess and set up a generation without running it: advance it with .step() / .run().

        `run` is a run id reserved beforehand with pipe.trace.new_run() (a view that wants to know its run's id
        before the first event); by default the call reserves a new one."""
        if isinstance(text_inputs, (list, tuple)) and text_inputs and is_valid_message(text_inputs[0]):
            text_inputs = Chat(text_inputs)  # as Pipeline.__call__ reads a list of messages
        elif not isinstance(text_inputs, str):
            raise ExplainError("start() takes one prompt: a string or a chat (a list of {'role', 'content'} dicts)")
        preprocess, forward, postprocess = self._sanitize_parameters(**kwargs)
        preprocess = {**self._preprocess_params, **preprocess}
        forward = {**self._forward_params, **forward}
        self._runs.clear()
        self._reserved_run = run
        try:
            model_inputs = self.preprocess(text_inputs, **preprocess)
        finally:
            self._reserved_run = None
        generation = self._generation(model_inputs, forward)
        prefix_length = forward.pop("prefix_length", 0)
        generate_kwargs = self._prepare_generate_kwargs(forward)
        if prefix_length:  # as TextGenerationPipeline._forward: totals include the prefix
            params = self._get_set_generation_params(generate_kwargs)
            for length, new_tokens in (("max_length", "max_new_tokens"), ("min_length", "min_new_tokens")):
                if length in params and new_tokens not in params:
                    generate_kwargs[length] = params[length] + prefix_length
        generation.generate_kwargs = generate_kwargs
        generation.options = {**self._postprocess_params, **postprocess}
        generation.prepare()
        return generation

    def finish(self, generation: TransformersGeneration) -> str | None:
        """Close a run advanced by hand: generation/end and decoding/decode as a call emits them; returns the text.
        A run ends once: finishing it again returns the same text and emits nothing."""

        def end(start: float, duration: float) -> None:
            self._end(generation, start, duration, interrupted=False)
            skip = generation.options.get("skip_special_tokens")
            clean_up = generation.options.get("clean_up_tokenization_spaces")
            skip = True if skip is None else skip
            self._decode(generation.generated_ids, generation, skip_special_tokens=skip, clean_up=clean_up)

        return finish_by_hand(generation, end)


def refused(error: Exception, kwargs: dict) -> ExplainError:
    """transformers' own refusal of a call, as an ExplainError that is also of its class (a TypeError stays one),
    its message first, then what explain makes of the settings when it has something to say."""
    try:
        validate({k: v for k, v in kwargs.items() if k in SETTINGS})
        context = ""
    except ExplainError as problem:
        context = f"; explain's reading: {problem}"
    cls = type("TransformersRefusal", (ExplainError, type(error)), {})
    return cls(
        f'transformers refused this call ({type(error).__name__}: {error}){context}. backend="transformers" runs '
        "transformers' own pipeline, so this is its answer; change the call as its message says"
    )


def tokenizer_role_segments(tokenizer, messages: list, text: str) -> list | None:
    """Character ranges of each message in the rendered template, as the explain backend finds them."""
    return role_segments(
        lambda prefix: tokenizer.apply_chat_template(prefix, add_generation_prompt=False, tokenize=False),
        messages,
        text,
    )
