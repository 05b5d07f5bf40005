"""The tokenizer stage: text to token ids and back, and chat messages to a prompt.

A `Tokenizer` wraps a `tokenizers.Tokenizer` (the Rust library transformers' fast tokenizers use), built
either from a folder's tokenizer.json or from the vocabulary and merges stored in a GGUF file, the way
transformers builds it, so ids, decoded text and chat prompts are the ones transformers gives.

    tokenizer = load_tokenizer("SmolLM2-135M-Instruct.Q4_1.gguf", trace=trace)
    tokenizer.encode_with_details("Hello world")   # ids, tokens, offsets, special
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Mapping

from tokenizers import AddedToken, Regex, decoders, models, pre_tokenizers, processors
from tokenizers import Tokenizer as Backend

from ..errors import CorruptFileError, ExplainError, UnsupportedError
from ..trace import Trace
from . import hub
from .chat_template import render
from .loading import Loading

TOKENIZER_JSON_LIMIT = 256 * 2**20  # the biggest tokenizer.json files (262k-token vocabularies) are ~35 MB
CONTINUE_TAG = "CONTINUE_FINAL_MESSAGE_TAG "  # transformers' marker (chat_template_utils.py, render_jinja_template)
NO_LIMIT = int(1e30)  # transformers' VERY_LARGE_INTEGER: the model_max_length of a tokenizer that states none
NAMED_TOKENS = ("bos_token", "eos_token", "unk_token", "pad_token")  # in transformers' order
CONTROL, USER_DEFINED = 3, 4  # llama.cpp's token_type values for special and added tokens
REASONING_FIELDS = ("reasoning_content", "thinking", "reasoning")  # names transformers copies a message's reasoning to

# The split regex llama.cpp's tokenizer.ggml.pre names, as transformers' GGUF_PRE_TOKENIZER_SPLITS maps them.
# Any other name (gpt2, smollm, ...) keeps GPT-2's own ByteLevel regex.
LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
QWEN35_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}"
    r"| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
TEKKEN_SPLIT = (
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+"
    r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*"
    r"|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
GPT4O_SPLIT = (
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+"
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
    r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*"
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
    r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
GGUF_PRE_TOKENIZER_SPLITS = {
    **dict.fromkeys(
        (
            "llama3",
            "llama-v3",
            "llama-bpe",
            "falcon3",
            "falcon-h1",
            "pixtral",
            "midm-2.0",
            "lfm2",
            "jina-v5-nano",
            "dbrx",
            "smaug-bpe",
        ),
        LLAMA3_SPLIT,
    ),
    **dict.fromkeys(("qwen2", "deepseek-r1-qwen", "kormo", "f2llmv2", "megrez"), QWEN2_SPLIT),
    **dict.fromkeys(("gpt-4o", "llama4", "kanana2", "talkie", "minimax-m2"), GPT4O_SPLIT),
    "qwen35": QWEN35_SPLIT,
    "tekken": TEKKEN_SPLIT,
}


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte alphabet: every byte spelled as a printable character (the space byte is 'Ġ')."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), 256)]
    unprintable = [byte for byte in range(256) if byte not in printable]  # these move past the first 256 code points
    return {**{byte: chr(byte) for byte in printable}, **{byte: chr(256 + n) for n, byte in enumerate(unprintable)}}


MAX_NORMALIZED = 20_000_000  # characters a tokenizer's normalizer may make of one text (a 1 MB prompt 20 times over)
PROBE = 64  # distinct characters normalized at a time to measure the normalizer's growth


def check_normalizer(backend: Backend, text: str, source: str) -> None:
    """Refuse a text that `backend`'s normalizer would grow past MAX_NORMALIZED characters, measured on the text's
    distinct characters, a few at a time, before the whole text is normalized (a tokenizer.json whose Replace turns
    each "a" into 100,000 characters asked for gigabytes and was killed for memory)."""
    if backend.normalizer is None or not text:
        return
    distinct, growth = "".join(dict.fromkeys(text)), 1.0
    for start in range(0, len(distinct), PROBE):
        chunk = distinct[start : start + PROBE]
        growth = max(growth, len(rust_call(lambda c=chunk: backend.normalizer.normalize_str(c), source)) / len(chunk))
        if growth * len(text) > MAX_NORMALIZED:
            raise UnsupportedError(
                f"{source}: its normalizer makes up to {growth:,.0f} characters of each character of this text "
                f"({len(text):,} characters would become about {growth * len(text):,.0f}, more than explain "
                f"tokenizes: {MAX_NORMALIZED:,}); the file is broken or hostile: use the model's own tokenizer.json"
            )


def rust_call(work, source: str):
    """Run `work` (a call into the tokenizers library); its own error (a plain `Exception`, as the Rust side raises)
    or a Rust panic (pyo3's PanicException, a BaseException) becomes a CorruptFileError naming the tokenizer file.
    Python's own errors (a TypeError from a wrong input, say) pass unchanged: they are about the call, not the file.
    Ctrl-C stays Ctrl-C."""
    try:
        return work()
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as error:  # noqa: BLE001  pyo3_runtime.PanicException is no Exception
        if isinstance(error, ExplainError) or (isinstance(error, Exception) and type(error) is not Exception):
            raise
        first = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
        raise CorruptFileError(
            f"{source} cannot tokenize this text: the tokenizers library stopped with {first!r} (a pre-tokenizer "
            "regular expression that backtracks without end, or a broken normalizer); the file is broken or "
            "hostile: use the model's own tokenizer.json"
        ) from None


def encode_bounded(backend: Backend, text: str, source: str, **options):
    """backend.encode(text, **options), its work bounded (check_normalizer) and its failures named (_rust)."""
    check_normalizer(backend, text, source)
    return rust_call(lambda: backend.encode(text, **options), source)


class Tokenizer:
    """A tokenizers.Tokenizer plus what transformers keeps beside it: named special tokens and the chat template."""

    def __init__(
        self,
        backend: Backend,
        *,
        bos_token: str | None = None,
        eos_token: str | None = None,
        pad_token: str | None = None,
        unk_token: str | None = None,
        chat_template: str | dict | None = None,
        add_bos_token: bool | None = None,
        add_eos_token: bool | None = None,
        model_max_length: int = NO_LIMIT,
        source: str = "tokenizer.json",
        extra_special_tokens=(),
        num_merges: int | None = None,
        clean_up_tokenization_spaces: bool = False,
        chat_template_source: str | dict | None = None,
    ):
        self.backend = backend
        self.bos_token, self.eos_token, self.pad_token, self.unk_token = bos_token, eos_token, pad_token, unk_token
        self.extra_special_tokens = [t for t in extra_special_tokens if t not in self.special_tokens_map.values()]
        # A dict of templates is keyed by name; "default" is the one used when none is asked for (transformers' rule)
        self.chat_templates = dict(chat_template) if isinstance(chat_template, dict) else {}
        self.chat_template = self.chat_templates.get("default") if isinstance(chat_template, dict) else chat_template
        # where each template came from (a file, a GGUF field), named when a template fails
        sources = (
            chat_template_source
            if isinstance(chat_template_source, dict)
            else {"default": chat_template_source or "the tokenizer's chat_template"}
        )
        self.chat_template_sources = {
            name: sources.get(name, sources.get("default")) for name in (self.chat_templates or {"default": None})
        }
        self.model_max_length = model_max_length
        self.source = source
        self.num_merges = num_merges
        self.clean_up_tokenization_spaces = clean_up_tokenization_spaces
        added = {token.content for token in backend.get_added_tokens_decoder().values()}
        backend.add_tokens([AddedToken(t, special=True) for t in self.all_special_tokens if t not in added])
        if add_bos_token is not None or add_eos_token is not None or backend.post_processor is None:
            # the flags are stated (a GGUF states them): add BOS/EOS as transformers' update_post_processor does
            self.add_bos_token = bool(add_bos_token) and bos_token is not None
            self.add_eos_token = bool(add_eos_token) and eos_token is not None
            backend.post_processor = self._template_processor()
        else:  # keep tokenizer.json's own post-processor, and report what it really does
            ids = backend.encode("", add_special_tokens=True).ids
            self.add_bos_token = bool(ids) and ids[0] == self.bos_token_id
            self.add_eos_token = len(ids) > self.add_bos_token and ids[-1] == self.eos_token_id

    def _template_processor(self) -> processors.TemplateProcessing:
        """transformers' update_post_processor: BOS before and EOS after the text, as the flags say."""
        bos, eos = self.add_bos_token, self.add_eos_token
        single = f"{self.bos_token + ':0 ' if bos else ''}$A:0{' ' + self.eos_token + ':0' if eos else ''}"
        pair = f"{single}{' ' + self.bos_token + ':1' if bos else ''} $B:1{' ' + self.eos_token + ':1' if eos else ''}"
        special = [(self.bos_token, self.bos_token_id)] if bos else []
        special += [(self.eos_token, self.eos_token_id)] if eos else []
        return processors.TemplateProcessing(single=single, pair=pair, special_tokens=special)

    # -- special tokens ---------------------------------------------------------------------------
    def _id(self, token: str | None) -> int | None:
        return None if token is None else self.backend.token_to_id(token)

    bos_token_id = property(lambda self: self._id(self.bos_token))
    eos_token_id = property(lambda self: self._id(self.eos_token))
    pad_token_id = property(lambda self: self._id(self.pad_token))
    unk_token_id = property(lambda self: self._id(self.unk_token))

    @property
    def special_tokens_map(self) -> dict[str, str]:
        """The named special tokens that are set; the chat template sees these as variables."""
        return {name: getattr(self, name) for name in NAMED_TOKENS if getattr(self, name) is not None}

    @property
    def all_special_tokens(self) -> list[str]:
        return list(dict.fromkeys([*self.special_tokens_map.values(), *self.extra_special_tokens]))

    @property
    def all_special_ids(self) -> list[int | None]:
        return [self._id(token) for token in self.all_special_tokens]

    @property
    def vocab_size(self) -> int:
        """Size of the id space: the model's vocabulary plus added tokens."""
        return self.backend.get_vocab_size(with_added_tokens=True)

    def __len__(self) -> int:
        return self.vocab_size

    def get_vocab(self) -> dict[str, int]:
        """Every token (added ones too) -> its id, as transformers' tokenizers give it."""
        return self.backend.get_vocab(with_added_tokens=True)

    # -- text to ids and back ---------------------------------------------------------------------
    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return encode_bounded(self.backend, text, self.source, add_special_tokens=add_special_tokens).ids

    def encode_with_details(self, text: str, add_special_tokens: bool = True) -> dict:
        """The show-your-work encode: each token's id, its spelling in the vocabulary, the characters of
        `text` it came from (start, end), and whether it is a special token."""
        encoding = encode_bounded(self.backend, text, self.source, add_special_tokens=add_special_tokens)
        special_ids = {i for i, added in self.backend.get_added_tokens_decoder().items() if added.special}
        return {
            "ids": list(encoding.ids),
            "tokens": list(encoding.tokens),
            "offsets": [list(pair) for pair in encoding.offsets],
            "special": [i in special_ids for i in encoding.ids],
        }

    def decode(self, ids, skip_special_tokens: bool = False, clean_up_tokenization_spaces: bool | None = None) -> str:
        """Bytes of the tokens joined, then read as UTF-8; a split character shows as U+FFFD, as in transformers.
        clean_up_tokenization_spaces=None follows the tokenizer's own setting, as transformers' decode does."""
        ids = [int(i) for i in (ids if hasattr(ids, "__iter__") else [ids])]  # a list, a tensor or one id
        text = self.backend.decode(ids, skip_special_tokens=skip_special_tokens)
        clean_up = clean_up_tokenization_spaces
        if clean_up is None:
            clean_up = self.clean_up_tokenization_spaces
        if clean_up and type(self.backend.model).__name__ != "BPE":  # transformers skips BPE
            for spaced, joined in (
                (" .", "."),
                (" ?", "?"),
                (" !", "!"),
                (" ,", ","),
                (" ' ", "'"),
                (" n't", "n't"),
                (" 'm", "'m"),
                (" 's", "'s"),
                (" 've", "'ve"),
                (" 're", "'re"),
            ):
                text = text.replace(spaced, joined)
        return text

    def convert_ids_to_tokens(self, ids) -> list[str | None]:
        return [self.backend.id_to_token(int(i)) for i in ids]

    def convert_tokens_to_ids(self, tokens) -> list[int | None]:
        return [self.backend.token_to_id(token) for token in tokens]

    # -- chat template ----------------------------------------------------------------------------
    def apply_chat_template(
        self,
        messages,
        add_generation_prompt: bool = False,
        tokenize: bool = True,
        chat_template: str | None = None,
        return_dict: bool = True,
        continue_final_message: bool = False,
        **kwargs,
    ):
        """Render messages into one prompt with the model's jinja template, as transformers 5 does, with its
        defaults (tokenization_utils_base.py, apply_chat_template: tokenize=True, return_dict=True):
        {"input_ids": [...], "attention_mask": [1, ...]}, the ids encoded with add_special_tokens=False (the
        template writes them); return_dict=False gives the ids alone, tokenize=False the prompt string."""
        if chat_template in self.chat_templates:
            template, source = self.chat_templates[chat_template], self.chat_template_sources[chat_template]
        elif chat_template is not None:
            template, source = chat_template, "the chat_template= argument"
        else:
            template, source = self.chat_template, self.chat_template_sources.get("default")
        if template is None:
            names = f" (only templates named {sorted(self.chat_templates)})" if self.chat_templates else ""
            raise ExplainError(
                f"this tokenizer has no chat template{names}, so chat messages cannot be turned into a "
                "prompt; pass a plain string prompt instead, or a template with chat_template=..."
            )
        if not messages or isinstance(messages, str):
            raise ExplainError(
                "a chat template needs a non-empty list of messages like [{'role': 'user', 'content': "
                "'Hi'}]; a plain string prompt goes to encode() as it is"
            )
        if any(callable(tool) for tool in kwargs.get("tools") or ()):
            raise UnsupportedError("pass tools as JSON-schema dicts; explain does not turn functions into schemas")
        chat = []
        for message in _plain(messages):
            if not isinstance(message, dict):
                raise ExplainError(f"a chat message is a dict with 'role' and 'content', not {message!r}")
            message = {key: value for key, value in message.items() if value is not None}
            reasoning = next((message[k] for k in REASONING_FIELDS if message.get(k) is not None), None)
            if reasoning is not None:  # templates read one of these names; transformers fills them all
                message = {"thinking": reasoning, **message, "reasoning_content": reasoning}
            chat.append(message)
        variables = {**self.special_tokens_map, **_plain(kwargs)}  # caller's variables win, as in transformers
        variables.setdefault("tools", None)
        variables.setdefault("documents", None)
        final = None
        if continue_final_message:  # transformers tags the final message's end, renders, and cuts at the tag
            final = chat[-1].get("content")
            if not isinstance(final, str):
                raise ExplainError(
                    'continue_final_message is set but the final message has no "content" to continue; give it '
                    "some text, or pass continue_final_message=False"
                )
            if "content" not in template:
                raise ExplainError(
                    'continue_final_message is set but the chat template reads no "content" field, so the final '
                    "message cannot be continued (transformers refuses this too); pass continue_final_message=False"
                )
            chat[-1] = {**chat[-1], "content": final + CONTINUE_TAG}
        text = render(template, source, messages=chat, add_generation_prompt=add_generation_prompt, **variables)
        if final is not None:
            text = cut_at_continue_tag(text, final)
        if not tokenize:
            return text
        ids = self.encode(text, add_special_tokens=False)
        # a plain dict where transformers returns a BatchEncoding: the same keys, indexed the same way
        return {"input_ids": ids, "attention_mask": [1] * len(ids)} if return_dict else ids

    # -- loading and saving -----------------------------------------------------------------------
    @classmethod
    def from_gguf(cls, path_or_reader) -> Tokenizer:
        """Rebuild the tokenizer a GGUF file describes, as transformers' GGUF loader does. Only byte-level BPE
        (tokenizer.ggml.model 'gpt2': SmolLM2, Qwen, Llama-3 and others) is supported."""
        reader, path = _open_gguf(path_or_reader)
        meta = {
            name[len("tokenizer.") :]: field.contents()
            for name, field in reader.fields.items()
            if name.startswith("tokenizer.")
        }
        kind = meta.get("ggml.model")
        if kind is None:
            raise ExplainError(
                f"{path} holds no tokenizer (no tokenizer.ggml.model); load one from a folder "
                "with tokenizer.json instead"
            )
        if kind != "gpt2":
            raise UnsupportedError(
                f"{path} states tokenizer.ggml.model {kind!r}; explain builds GGUF tokenizers "
                "only for 'gpt2' (byte-level BPE, as in SmolLM2, Qwen, Llama 3). Use the model's "
                "folder with tokenizer.json instead"
            )
        tokens, types = meta.get("ggml.tokens") or [], meta.get("ggml.token_type") or []
        merges = meta.get("ggml.merges")
        if not tokens or not merges:
            raise CorruptFileError(
                f"{path} states a byte-level BPE tokenizer but lacks its "
                f"{'tokenizer.ggml.tokens' if not tokens else 'tokenizer.ggml.merges'}"
            )
        # The file spells tokens in GPT-2's byte alphabet ('Ġthe'); respell any written as raw text (a plain
        # space, a CJK character) from their UTF-8 bytes, as transformers does
        spelling = bytes_to_unicode()
        alphabet = set(spelling.values())
        vocab = {
            token if set(token) <= alphabet else "".join(spelling[b] for b in token.encode("utf-8")): index
            for index, token in enumerate(tokens)
        }
        backend = Backend(
            models.BPE(
                vocab=vocab,
                merges=[tuple(m.split(" ")) for m in merges],
                dropout=None,
                continuing_subword_prefix="",
                end_of_word_suffix="",
                fuse_unk=False,
            )
        )
        split = GGUF_PRE_TOKENIZER_SPLITS.get(meta.get("ggml.pre"))
        if split is None:
            backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        else:
            backend.pre_tokenizer = pre_tokenizers.Sequence(
                [
                    pre_tokenizers.Split(Regex(split), behavior="isolated"),
                    pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
                ]
            )
        backend.decoder = decoders.ByteLevel()
        # CONTROL tokens become special added tokens (kept whole, skipped by skip_special_tokens); a control
        # token spelled outside the byte alphabet is a llama.cpp mislabel that transformers skips too
        backend.add_special_tokens(
            [
                AddedToken(t, normalized=False, special=True)
                for t, kind in zip(tokens, types, strict=False)
                if kind == CONTROL and set(t) <= alphabet
            ]
        )
        backend.add_tokens(
            [
                AddedToken(t, normalized=False, special=False)
                for t, kind in zip(tokens, types, strict=False)
                if kind == USER_DEFINED and t in vocab
            ]
        )

        def named(key):
            index = meta.get(f"ggml.{key}_token_id")
            if index is not None and not 0 <= index < len(tokens):
                raise CorruptFileError(f"{path}: tokenizer.ggml.{key}_token_id {index} is outside the vocabulary")
            return None if index is None else tokens[index]

        return cls(
            backend,
            bos_token=named("bos"),
            eos_token=named("eos"),
            unk_token=named("unknown"),
            pad_token=named("padding"),
            chat_template=meta.get("chat_template"),
            add_bos_token=bool(meta.get("ggml.add_bos_token", False)),
            add_eos_token=bool(meta.get("ggml.add_eos_token", False)),
            source="gguf",
            num_merges=len(merges),
            chat_template_source=f"{path} (its tokenizer.chat_template)",
        )

    @classmethod
    def from_folder(cls, folder) -> Tokenizer:
        """tokenizer.json, with tokenizer_config.json, special_tokens_map.json and chat_template.jinja if present.
        As in transformers 5, tokenizer.json's post-processor decides whether BOS/EOS are added: the config's
        add_bos_token/add_eos_token are ignored."""
        folder = os.fspath(folder)
        file = os.path.join(folder, "tokenizer.json")
        if not os.path.isfile(file):
            found = ", ".join(sorted(os.listdir(folder))) if os.path.isdir(folder) else "the folder does not exist"
            raise ExplainError(
                f"{folder} has no tokenizer.json (found: {found or 'nothing'}). explain needs "
                "tokenizer.json; slow tokenizers (sentencepiece tokenizer.model, vocab.json + "
                "merges.txt only) are not supported. Convert one with transformers: "
                "AutoTokenizer.from_pretrained(folder).save_pretrained(folder)"
            )
        _inside(folder, file)
        if os.path.getsize(file) > TOKENIZER_JSON_LIMIT:
            raise CorruptFileError(
                f"{file} is {os.path.getsize(file) / 2**20:.0f} MiB; no tokenizer.json is that big "
                f"(explain reads at most {TOKENIZER_JSON_LIMIT // 2**20} MiB): get it again"
            )
        with open(file, "rb") as f:
            text = f.read().decode("utf-8", errors="replace")
        try:
            spec = json.loads(text)
            backend = Backend.from_str(text)
        except Exception as error:
            raise CorruptFileError(
                f"{file} is not a readable tokenizer.json (truncated or not what its name says: "
                f"{error}); download or save it again"
            ) from None
        config_file = os.path.join(folder, "tokenizer_config.json")
        config = _read_json(folder, config_file)
        mapped = _read_json(folder, os.path.join(folder, "special_tokens_map.json"))
        chat_template, template_source = config.get("chat_template"), config_file
        if isinstance(chat_template, list):  # named templates: [{"name": ..., "template": ...}]
            if not all(
                isinstance(e, dict) and isinstance(e.get("name"), str) and isinstance(e.get("template"), str)
                for e in chat_template
            ):
                raise CorruptFileError(
                    f'{config_file}: "chat_template" is a list but not of {{"name": ..., '
                    '"template": ...}} entries; save the tokenizer again'
                )
            chat_template = {entry["name"]: entry["template"] for entry in chat_template}
        elif chat_template is not None and not isinstance(chat_template, str):
            raise CorruptFileError(
                f'{config_file}: "chat_template" is a {type(chat_template).__name__}, not a '
                "jinja template (a string); save the tokenizer again"
            )
        files = _template_files(folder)  # where transformers 5 saves them; they win over the config's
        if files:
            chat_template = {name: text for name, (text, _) in files.items()}
            template_source = {name: path for name, (_, path) in files.items()}
            if set(files) == {"default"}:
                chat_template, template_source = chat_template["default"], template_source["default"]
        extra = (
            config.get("extra_special_tokens")
            or config.get("additional_special_tokens")
            or mapped.get("additional_special_tokens")
            or []
        )
        extra = list(extra.values()) if isinstance(extra, dict) else extra
        if not isinstance(extra, list):
            raise CorruptFileError(
                f"{config_file}: the extra special tokens are {extra!r}, not a list of tokens; save the tokenizer again"
            )
        named = {name: _content(config.get(name, mapped.get(name)), config_file, name) for name in NAMED_TOKENS}
        length = config.get("model_max_length")
        if length is not None and (
            isinstance(length, bool) or not isinstance(length, (int, float)) or not 0 < length < float("inf")
        ):
            raise CorruptFileError(
                f'{config_file}: "model_max_length" is {length!r}, not a number of tokens; '
                "correct it or save the tokenizer again"
            )
        merges = spec.get("model", {}).get("merges") if isinstance(spec.get("model"), dict) else None
        return cls(
            backend,
            **named,
            chat_template=chat_template,
            model_max_length=min(int(length), NO_LIMIT) if length else NO_LIMIT,
            source="tokenizer.json",
            extra_special_tokens=[_content(t, config_file, "extra special tokens") for t in extra],
            num_merges=len(merges) if isinstance(merges, list) else None,
            clean_up_tokenization_spaces=config.get("clean_up_tokenization_spaces") is True,
            chat_template_source=template_source,
        )

    def save(self, folder) -> str:
        """Write tokenizer.json, tokenizer_config.json and special_tokens_map.json that transformers'
        AutoTokenizer.from_pretrained(folder) loads into the same tokenizer."""
        folder = os.fspath(folder)
        os.makedirs(folder, exist_ok=True)
        self.backend.save(os.path.join(folder, "tokenizer.json"))
        config = {
            "tokenizer_class": "PreTrainedTokenizerFast",
            **self.special_tokens_map,
            "add_bos_token": self.add_bos_token,
            "add_eos_token": self.add_eos_token,
            "model_max_length": self.model_max_length,
            "clean_up_tokenization_spaces": self.clean_up_tokenization_spaces,
        }
        if self.extra_special_tokens:
            config["extra_special_tokens"] = self.extra_special_tokens
        if self.chat_templates:
            config["chat_template"] = [{"name": name, "template": text} for name, text in self.chat_templates.items()]
        elif self.chat_template is not None:
            config["chat_template"] = self.chat_template
        mapped = dict(self.special_tokens_map)
        if self.extra_special_tokens:
            mapped["additional_special_tokens"] = self.extra_special_tokens
        for name, record in (("tokenizer_config.json", config), ("special_tokens_map.json", mapped)):
            with open(os.path.join(folder, name), "w", encoding="utf-8") as f:
                json.dump(record, f, indent=2, ensure_ascii=False)
        return folder

    # -- showing ----------------------------------------------------------------------------------
    def describe(self) -> dict:
        """Plain JSON values: what this tokenizer is made of, for the tokenizer/load event."""
        added = self.backend.get_added_tokens_decoder()
        return {
            "source": self.source,
            "model": type(self.backend.model).__name__,
            "vocab_size": self.vocab_size,
            "num_merges": self.num_merges,
            "special_tokens": {
                name: {"token": token, "id": self._id(token)} for name, token in self.special_tokens_map.items()
            },
            "added_tokens": [{"id": i, "token": t.content, "special": t.special} for i, t in sorted(added.items())],
            "add_bos_token": self.add_bos_token,
            "add_eos_token": self.add_eos_token,
            "model_max_length": None if self.model_max_length >= NO_LIMIT else self.model_max_length,
            "has_chat_template": self.chat_template is not None,
            "chat_template": self.chat_template,
            "normalizer": _component_name(self.backend.normalizer),
            "pre_tokenizer": _component_name(self.backend.pre_tokenizer),
            "post_processor": _component_name(self.backend.post_processor),
            "decoder": _component_name(self.backend.decoder),
        }

    def __repr__(self) -> str:
        return (
            f"Tokenizer({self.source}, {self.vocab_size} tokens, bos={self.bos_token!r}, eos={self.eos_token!r}, "
            f"chat_template={'yes' if self.chat_template else 'no'})"
        )


def load_tokenizer(source, trace=None) -> Tokenizer:
    """A tokenizer from a GGUF file or a folder with tokenizer.json; with a trace, emit one tokenizer/load event."""
    path = os.fspath(source) if isinstance(source, (str, os.PathLike)) else None
    if path is not None and not os.path.exists(path):
        raise ExplainError(f"no file or folder at {path}; pass a GGUF file or a folder with tokenizer.json")
    load = Tokenizer.from_folder if path is not None and os.path.isdir(path) else Tokenizer.from_gguf
    if trace is None:
        return load(source)
    with trace.span("tokenizer", "load", path=path) as data:
        t0 = time.perf_counter()
        tokenizer = load(source)
        data.update(tokenizer.describe(), seconds=time.perf_counter() - t0)
    return tokenizer


# -- helpers --------------------------------------------------------------------------------------
def cut_at_continue_tag(text: str, final: str) -> str:
    """The rendered chat cut where the final message's tagged end is, so the model continues that message, as
    transformers' render_jinja_template cuts it; a template that changed the message (| upper, | replace) leaves it
    nowhere to cut, and transformers raises: so does explain."""
    if final.strip() not in text or CONTINUE_TAG.strip() not in text:
        raise ExplainError(
            "continue_final_message is set but the final message does not appear in the chat after applying the "
            f"chat template (transformers raises the same ValueError): the template changes the message's text "
            f"(a filter such as | upper or | replace), so there is no place to continue it from. Final message: "
            f"{final.strip()[:80]!r}. Pass continue_final_message=False (the model answers after it), or use a "
            "template that writes the message as it is"
        )
    at = text.rindex(CONTINUE_TAG.strip())
    if text[at : at + len(CONTINUE_TAG)] == CONTINUE_TAG:  # the template kept the spacing: cut at the tag
        return text[:at]
    return text[:at].rstrip()  # the template trimmed the message's end (| trim): cut at the tag, trailing space off


def _plain(value):
    """What a template may see: plain JSON-like values (transformers' _plain_template_data); anything else
    becomes a placeholder naming its type."""
    if value is None or type(value) in (str, int, float, bool):
        return value
    for base in (str, int, float):
        if isinstance(value, base):
            return getattr(base, f"__{base.__name__}__")(value)
    if isinstance(value, Mapping):
        return {_plain(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_plain(v) for v in value)
    if type(value).__module__ == "numpy" and getattr(value, "shape", None) == ():  # numpy scalars
        return _plain(value.item())
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if callable(getattr(value, "model_dump", None)):  # pydantic messages
        return _plain(value.model_dump())
    return f"<{type(value).__name__}>"


def _open_gguf(path_or_reader):
    if not isinstance(path_or_reader, (str, os.PathLike)):
        return path_or_reader, (
            getattr(path_or_reader, "filename", None)
            or getattr(getattr(path_or_reader, "data", None), "filename", "the GGUF file")
        )
    from .config import gguf_reader

    path = os.fspath(path_or_reader)
    if not os.path.isfile(path):
        raise ExplainError(f"no GGUF file at {path}")
    return gguf_reader(path), path


def _inside(folder, file) -> str:
    from .hub import inside_folder

    return inside_folder(folder, file)


def _read_json(folder, file) -> dict:
    """An optional JSON file of the folder: {} when it is not there."""
    if not os.path.lexists(file):
        return {}
    _inside(folder, file)
    try:
        if os.path.getsize(file) > TOKENIZER_JSON_LIMIT:
            raise CorruptFileError(
                f"{file} is {os.path.getsize(file) / 2**20:.0f} MiB, not a tokenizer's settings; get it again"
            )
        with open(file, encoding="utf-8") as f:
            value = json.load(f)
    except FileNotFoundError:
        return {}
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as error:
        raise CorruptFileError(
            f"{file} is truncated or not JSON ({error or 'nested too deeply'}); download or save it again"
        ) from None
    except OSError as error:
        raise CorruptFileError(f"{file} cannot be read ({error.strerror or error})") from None
    if not isinstance(value, dict):
        raise CorruptFileError(f"{file} holds JSON but not an object; download or save it again")
    return value


def _template_files(folder) -> dict[str, tuple[str, str]]:
    """chat_template.jinja as "default", and additional_chat_templates/NAME.jinja by name: name -> (text, path)."""
    extra = os.path.join(folder, "additional_chat_templates")
    files = {
        "default": os.path.join(folder, "chat_template.jinja"),
        **{
            name.removesuffix(".jinja"): os.path.join(extra, name)
            for name in (sorted(os.listdir(extra)) if os.path.isdir(extra) else [])
            if name.endswith(".jinja")
        },
    }
    found = {}
    for name, file in files.items():
        if os.path.lexists(file):
            _inside(folder, file)
        if os.path.isfile(file):
            if os.path.getsize(file) > TOKENIZER_JSON_LIMIT:
                raise CorruptFileError(f"{file} is {os.path.getsize(file) / 2**20:.0f} MiB, not a chat template")
            with open(file, "rb") as f:
                found[name] = (f.read().decode("utf-8", errors="replace"), file)
    return found


def _content(token, file=None, key=None):
    """A special token as saved: a string, or an AddedToken record {"content": ...}; anything else names the file."""
    content = token.get("content") if isinstance(token, dict) else token
    if content is not None and not isinstance(content, str):
        raise CorruptFileError(
            f'{file}: {key} is {token!r}, not a token (a string, or {{"content": ...}}); correct '
            "it or save the tokenizer again"
        )
    return content


def _component_name(component) -> str | None:
    """'ByteLevel', or 'Sequence(Split, ByteLevel)' for a normalizer/pre-tokenizer/decoder of the tokenizers library."""
    if component is None:
        return None
    spec = json.loads(component.__getstate__())
    parts = next(
        (
            v
            for k, v in spec.items()
            if k != "type" and isinstance(v, list) and v and all(isinstance(p, dict) and "type" in p for p in v)
        ),
        None,
    )
    return f"{spec['type']}({', '.join(p['type'] for p in parts)})" if parts else spec["type"]


component_name = _component_name  # public: the transformers backend names its tokenizer's components the same way


def run(loading: Loading, trace: Trace) -> None:
    """The tokenizer stage: tokenizer= as given, tokenizer.json (and its optional files) or the GGUF vocabulary the
    config stage parsed (tokenizer/load)."""
    tokenizer = loading.tokenizer
    if isinstance(tokenizer, Tokenizer):
        loading.loaded_tokenizer = tokenizer
    else:
        if tokenizer is not None:
            source = hub.resolve(
                tokenizer, "tokenizer.json", revision=loading.revision, token=loading.token, trace=trace
            )
            source = os.path.dirname(source)
        elif loading.gguf_path is not None:
            source = loading.reader  # the GGUF file is parsed once, in the config stage
        else:
            source = os.path.dirname(loading.resolve("tokenizer.json", trace))
            for optional in ("tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja"):
                loading.resolve(optional, trace, required=False)
        loading.loaded_tokenizer = load_tokenizer(source, trace=trace)
    if loading.reader is not None:  # the weights need only the tensor table: let the metadata's ~250,000 parsed
        loading.reader.fields.clear()  # slices go (vocabulary and merges, ~130 MiB of Python objects) before them
