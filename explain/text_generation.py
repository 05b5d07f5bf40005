"""TextGenerationPipeline: transformers' text-generation pipeline, with the tokenization, generation and
decoding stages traced. Inputs and outputs are those of transformers.TextGenerationPipeline:

    pipe("Once upon a time")                      -> [{"generated_text": "Once upon a time..."}]
    pipe([{"role": "user", "content": "Hi"}])     -> [{"generated_text": [..messages.., {"role": "assistant", ...}]}]
    pipe(["a", "b"])                              -> [[{...}], [{...}]]
    pipe("a", num_return_sequences=3)             -> [{...}, {...}, {...}]   (also num_beams=3, num_return_sequences=3)

The decoding strategy (greedy or sampling of one sequence, several samples, beam search, assisted decoding) is
chosen from the settings as generate() chooses it (explain/generation/strategies/). A list of prompts is answered
one prompt after another, as transformers' pipeline does with its default batch_size=1.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
import warnings

import torch

from .chat_template import TemplateLimitError
from .errors import ArgumentError, ExplainError, interrupted as interrupted_error
from .files import cannot_write, publish
from .generation import SETTINGS, Generation, resolve
from .generation.settings import warnings_for
from .generation.strategies import choose
from .generation.strategies.registry import plain_settings
from .inputs import check_inputs, check_prompt
from .placement import input_device
from .trace import Trace

CALL_OPTIONS = ("return_full_text", "return_text", "return_tensors", "clean_up_tokenization_spaces", "prefix",
                "handle_long_generation", "add_special_tokens", "continue_final_message", "skip_special_tokens",
                "stop_sequence", "tokenizer", "trace_top", "keep_logits", "capture", "batch_size")
BOOLEAN_OPTIONS = ("return_full_text", "return_text", "return_tensors", "clean_up_tokenization_spaces",
                   "add_special_tokens", "continue_final_message", "skip_special_tokens")
GENERATE_ARGUMENTS = tuple(SETTINGS) + CALL_OPTIONS  # SETTINGS: every knob of the processor registry


class TextGenerationPipeline:
    def __init__(self, task, model, tokenizer, config, generation_config, generation_config_source, trace: Trace,
                 name_or_path, dtype, generate_defaults=None, quantization: dict | None = None, adapter=None):
        self.task, self.model, self.tokenizer, self.config = task, model, tokenizer, config
        self.quantization = quantization  # the weights/quantize event's data, or None (explain.quantization)
        self.adapter = adapter  # the applied LoRA adapter (explain.adapters.Adapter), or None
        self.generation_config, self.generation_config_source = generation_config, generation_config_source
        self.trace, self.name_or_path, self.dtype = trace, name_or_path, dtype
        self.generate_defaults = dict(generate_defaults or {})
        self.device = input_device(model)  # where inputs go (with offload, the first parameter may be meta)
        self.last_generation: Generation | None = None

    def __repr__(self):
        extra = f", quantization={self.quantization['method']} ({self.quantization['form']})" if self.quantization else ""
        extra += f", adapter={self.adapter.name!r}" if self.adapter is not None else ""
        return (f"explain.TextGenerationPipeline({self.name_or_path!r}, {self.config['architectures'][0]}, "
                f"dtype={self.dtype}{extra}, device={self.device}, {len(self.trace)} trace events)")

    # -- call ------------------------------------------------------------------------------------------
    def __call__(self, text_inputs, **kwargs):
        if check_inputs(text_inputs):  # a batch: every prompt is checked first, then run one after another
            return [self._one(item, kwargs, batch=(i, len(text_inputs))) for i, item in enumerate(text_inputs)]
        return self._one(text_inputs, kwargs)

    def start(self, text_inputs, *, run: int | None = None, **kwargs) -> Generation:
        """Tokenize and set up a generation without running it: advance it with .step() / .run().

        `run` is a run id reserved beforehand with pipe.trace.new_run() (a view that wants to know its run's
        id before the first event); by default the call reserves a new one. The run is the decoding strategy's:
        a Generation for one sequence; for several samples, beam search or assisted decoding an object with the
        same step() / run() / finished / steps / sequences (a step advances every sequence, every beam, or one
        round of draft and check)."""
        check_prompt(text_inputs)
        options, settings_call = self._split(kwargs)
        return self._prepare(text_inputs, options, settings_call, run)

    def finish(self, generation: Generation) -> str:
        """Close a run advanced by hand (start + step/run): emit generation/end and decoding/decode as a call
        does, with the steps' own time as its duration (not the pauses between them); returns the text.
        A run ends once: finishing it again returns the same text and emits nothing."""
        duration = sum(step["forward_time"] or 0.0 for step in generation.steps)
        self._end(generation, time.time() - duration, duration, interrupted=False)
        return generation.output_text

    def _split(self, kwargs):
        """(pipeline options, generation settings), checked as transformers' _sanitize_parameters checks them."""
        kwargs = {**self.generate_defaults, **kwargs}
        options = {k: kwargs.pop(k) for k in list(kwargs) if k in CALL_OPTIONS}
        given = [k for k in ("return_full_text", "return_text", "return_tensors") if options.get(k) is not None]
        if "return_full_text" in given and len(given) > 1 or given == ["return_text", "return_tensors"]:
            raise ExplainError(f"{given[0]} and {given[1]} are mutually exclusive (as in transformers); pass only one")
        for name in BOOLEAN_OPTIONS:
            value = options.get(name)
            if name in options and value is None:
                del options[name]  # None is "not given", as transformers' _sanitize_parameters reads it
            elif value is not None and not isinstance(value, (bool, int)):  # transformers takes 0 and 1 too
                raise ArgumentError(f"{name}={value!r:.60} is not a boolean; pass True or False")
        if options.get("handle_long_generation") not in (None, "hole"):
            raise ExplainError(f"handle_long_generation={options['handle_long_generation']!r} is not a strategy; "
                               "use None (the default) or \"hole\" (keep only the prompt's last tokens)")
        stop = options.pop("stop_sequence", None)
        if stop is not None:  # the pipeline's name for generate()'s stop_strings
            kwargs["stop_strings"] = [stop] if isinstance(stop, str) else list(stop)
        options.pop("tokenizer", None)  # generate() needs it for stop strings; explain always has its own
        return options, kwargs

    def _prepare(self, prompt, options, settings_call, run: int | None = None, batch=None) -> Generation:
        run = self.trace.new_run() if run is None else run
        ids = self._tokenize(prompt, options, run)
        handle = options.get("handle_long_generation")
        context, learned = self.model.config.max_position_embeddings, self.model.learned_positions
        if learned and handle is None and len(ids) > context:  # rotary positions go on past it, learned ones do not
            raise ExplainError(f"the prompt is {len(ids)} tokens but the model's context window is {context} "
                               "tokens, one learned position embedding each (transformers' generate fails with an "
                               "IndexError here); shorten the prompt, or pass handle_long_generation=\"hole\" to "
                               "keep only its last tokens")
        with self.trace.span("generation", "settings", run=run) as data:
            vocab_size = self.config.get("vocab_size")
            settings, sources = resolve(settings_call, self.generation_config, self.generation_config_source,
                                        len(ids), context, self.tokenizer.pad_token_id, vocab_size)
            new_tokens = settings["max_length"] - len(ids)  # max_new_tokens, or what max_length leaves
            if context and handle == "hole" and len(ids) + new_tokens > context:
                keep = context - new_tokens  # transformers' "hole": drop the prompt's start to leave room
                if keep <= 0:
                    raise ExplainError(f"{new_tokens} new tokens do not fit the context window of {context} "
                                       "even with an empty prompt; ask for fewer new tokens")
                data["hole"] = {"prompt_tokens": len(ids), "kept": keep, "dropped": len(ids) - keep}
                ids = ids[-keep:]
                settings, sources = resolve(settings_call, self.generation_config, self.generation_config_source,
                                            len(ids), context, self.tokenizer.pad_token_id, vocab_size)
            strategy = choose(settings)  # greedy/sampling, several samples, beam search, assisted decoding
            data["strategy"] = strategy.record(settings)
            generation = strategy.run_class()(
                self.model, self.tokenizer, ids, settings, self.trace, run, trace_top=options.get("trace_top", 20),
                keep_logits=options.get("keep_logits", False), capture=options.get("capture"), prompt=prompt,
                options=options)
            if batch is not None:
                data["batch"] = self._batch_note(batch, options)
            for message in warnings_for(settings, sources):  # what transformers warns about these settings
                generation.warnings.append(message)
                warnings.warn(message, stacklevel=4)
            data.update(settings=plain_settings(settings), sources=sources, processors=[
                {"name": p.name, "class": type(p).__name__, "title": p.title, "args": p.args()}
                for p in generation.processors],
                prompt_tokens=len(ids), dtype=self.dtype, device=str(self.device), warnings=generation.warnings,
                context_window=context)
        self.last_generation = generation
        return generation

    @staticmethod
    def _batch_note(batch, options) -> dict:
        """What the trace says about a list of prompts: explain answers them one after another."""
        index, size = batch
        asked = options.get("batch_size") or 1
        note = ("prompts run one after another, as transformers' pipeline runs them with its default batch_size=1"
                if asked == 1 else
                f"batch_size={asked}: transformers would left-pad {min(asked, size)} prompts into one batch; explain "
                "runs them one after another without padding (the same greedy texts; sampled draws differ from a "
                "batched draw)")
        return {"index": index, "size": size, "batch_size": asked, "note": note}

    def _one(self, prompt, kwargs, batch=None):
        options, settings_call = self._split(kwargs)
        generation = self._prepare(prompt, options, settings_call, batch=batch)
        start, t0 = time.time(), time.perf_counter()
        interrupted = False
        try:
            generation.run()
        except KeyboardInterrupt:  # Ctrl-C, Kernel > Interrupt: end the run cleanly (its trace stays whole), then stop
            interrupted = True
            generation._finish("interrupted")
            steps = len(generation.steps)
            raise interrupted_error(f"interrupted at step {steps} of call {generation.run_id}: the {steps} tokens "
                                    "generated so far are kept (pipe.last_generation, pipe.trace)") from None
        finally:
            self._end(generation, start, time.perf_counter() - t0, interrupted)
        return self._postprocess(generation, options)

    # -- stages ----------------------------------------------------------------------------------------
    def _tokenize(self, prompt, options, run: int) -> list[int]:
        with self.trace.span("tokenization", "encode", run=run) as data:
            prefix = options.get("prefix") or ""
            if isinstance(prompt, str):
                text = prefix + prompt
                add_special = options.get("add_special_tokens", True)
                # transformers tokenizes a string as it is (pipelines/text_generation.py:350): a model with a chat
                # template then continues the text instead of answering it; the views say so in one line
                data.update(kind_of_input="text", chat_template_text=None, segments=None,
                            chat_template_skipped=self.tokenizer.chat_template is not None)
            else:
                messages = [dict(m) for m in prompt]
                continue_final = options.get("continue_final_message")
                if continue_final is None:
                    continue_final = messages[-1]["role"] == "assistant"
                text = self.tokenizer.apply_chat_template(messages, add_generation_prompt=not continue_final,
                                                          tokenize=False)
                if continue_final:  # cut after the last message's content, so the model continues it
                    final = messages[-1]["content"]
                    text = text[: text.rindex(final) + len(final)] if final and final in text else text
                add_special = False  # the template writes its own special tokens
                data.update(kind_of_input="chat", chat_template_text=text, messages=messages, chat_template_skipped=False,
                            segments=self._role_segments(messages, text),
                            add_generation_prompt=not continue_final)
            details = self.tokenizer.encode_with_details(text, add_special_tokens=add_special)
            data.update(text=text, ids=details["ids"], tokens=details["tokens"], offsets=details["offsets"],
                        special=details["special"], count=len(details["ids"]), add_special_tokens=add_special)
        if not details["ids"] and self.tokenizer.bos_token_id is None:
            raise ExplainError("the prompt is empty and this model has no BOS token to start from; give it some text")
        return details["ids"] or [self.tokenizer.bos_token_id]

    def _role_segments(self, messages, text):
        """Character ranges of each message in the rendered template (the template is rendered per prefix)."""
        segments, start = [], 0
        for i in range(len(messages)):
            try:
                end = len(self.tokenizer.apply_chat_template(messages[: i + 1], add_generation_prompt=False,
                                                             tokenize=False))
            except TemplateLimitError:  # the same template ran within its limits on the whole chat: say so
                raise
            except Exception:  # a template that refuses partial conversations: no segments, nothing is lost
                return None
            if not text.startswith(text[:end]) or end > len(text):
                return None
            segments.append({"role": messages[i]["role"], "start": start, "end": end})
            start = end
        if start < len(text):
            segments.append({"role": "generation prompt", "start": start, "end": len(text)})
        return segments

    def _end(self, generation: Generation, start, duration, interrupted):
        if generation.ended:  # a run ends once
            return
        generation.ended = True
        steps = generation.steps
        decode_time = sum(s["forward_time"] for s in steps if s["forward"] == "decode")
        decode_steps = sum(1 for s in steps if s["forward"] == "decode")
        prefill = self.trace.last("generation", "prefill", run=generation.run_id)
        self.trace.emit("generation", "end", {
            "stop_reason": generation.stop_reason or ("interrupted" if interrupted else None),
            "interrupted": interrupted, "new_tokens": len(steps), "prompt_tokens": generation.prompt_length,
            "prefill_time": prefill.duration if prefill is not None else None,
            "decode_tokens_per_s": decode_steps / decode_time if decode_steps and decode_time > 0 else None,
            "tokens_per_s": len(steps) / duration if duration > 0 else None, "branch": generation.branch,
            "sequences": len(generation.sequences)},
            run=generation.run_id, start=start, duration=duration)
        with self.trace.span("decoding", "decode", run=generation.run_id) as data:
            ids = generation.generated_ids
            text = self.tokenizer.decode(ids, skip_special_tokens=True)
            data.update(ids=ids, text=text, text_with_special=generation.text, stop_reason=generation.stop_reason,
                        interrupted=interrupted, skip_special_tokens=True, branch=generation.branch)
            sequences = generation.sequences
            if len(sequences) > 1:  # several returned sequences: each decoded, the first is ids/text above
                data["sequences"] = [{"ids": row[generation.prompt_length:],
                                      "text": self.tokenizer.decode(row[generation.prompt_length:],
                                                                    skip_special_tokens=True)} for row in sequences]
        generation.output_text = text

    def _postprocess(self, generation: Generation, options):
        """One record per returned sequence, as transformers' TextGenerationPipeline.postprocess builds them."""
        return [self._record(generation, row, options) for row in generation.sequences]

    def _record(self, generation: Generation, sequence: list[int], options) -> dict:
        if options.get("return_tensors"):
            return {"generated_token_ids": sequence}
        skip = options.get("skip_special_tokens", True)
        text = self.tokenizer.decode(sequence[generation.prompt_length:], skip_special_tokens=skip)
        full = options.get("return_full_text", True) is not False  # return_text only selects text over tensors
        prompt = generation.prompt
        if not full:
            return {"generated_text": text}
        if isinstance(prompt, str):
            return {"generated_text": prompt + text}
        messages = [dict(m) for m in prompt]
        continue_final = options.get("continue_final_message")
        if continue_final is None:
            continue_final = messages[-1]["role"] == "assistant"
        if continue_final:
            messages[-1] = {**messages[-1], "content": messages[-1]["content"] + text}
            return {"generated_text": messages}
        return {"generated_text": messages + [{"role": "assistant", "content": text}]}

    # -- saving ----------------------------------------------------------------------------------------
    def save_pretrained(self, folder: str) -> str:
        """Write a plain Hugging Face folder: config.json, model.safetensors, tokenizer files, generation_config.json.

        Files are written to a temporary folder beside the target and moved in at the end, so a failure leaves
        no half-written model behind.
        """
        from safetensors.torch import save_model
        if self.quantization is not None or self.adapter is not None:
            what = "quantized weights" if self.quantization is not None else "a LoRA adapter"
            raise ExplainError(f"this pipeline runs {what}, which a plain Hugging Face folder cannot hold as they are; "
                               "save the pipeline loaded without quantization= / adapter= (the adapter's own folder "
                               "already holds it)")
        folder = os.path.abspath(folder)
        parent = os.path.dirname(folder)
        if os.path.exists(folder) and os.listdir(folder):
            existing = set(os.listdir(folder)) - {"config.json", "model.safetensors", "tokenizer.json",
                                                   "tokenizer_config.json", "special_tokens_map.json",
                                                   "generation_config.json", "chat_template.jinja"}
            if existing:
                raise ExplainError(f"{folder} already holds other files ({sorted(existing)[:3]}); "
                                   "save into an empty or new folder")
        try:
            os.makedirs(parent, exist_ok=True)
            staging = tempfile.mkdtemp(prefix=".explain-save-", dir=parent)
        except OSError as error:
            raise cannot_write(parent, error) from None
        try:
            config = {k: v for k, v in self.config.items() if not k.startswith("_")}
            config["torch_dtype"] = config["dtype"] = self.dtype
            with open(os.path.join(staging, "config.json"), "w") as f:
                json.dump(config, f, indent=2)
            generation = {k: v for k, v in self.generation_config.items()
                          if v is not None and self.generation_config_source.get(k) != "transformers default"}
            with open(os.path.join(staging, "generation_config.json"), "w") as f:
                json.dump(generation, f, indent=2)
            save_model(self.model, os.path.join(staging, "model.safetensors"), metadata={"format": "pt"})
            self.tokenizer.save(staging)
            os.makedirs(folder, exist_ok=True)
            for name in os.listdir(staging):  # with the mode a new file there gets (safetensors writes 0600)
                publish(os.path.join(staging, name), os.path.join(folder, name))
        except OSError as error:
            raise cannot_write(folder, error) from None
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return folder
