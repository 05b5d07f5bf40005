"""Stop strings as transformers' StopStringCriteria reads them: on the tokens' own bytes, at the last token.

Every decoding strategy checks its sequences with one `StopStrings` (transformers builds one StopStringCriteria
per generate() call and applies it to every row, every beam candidate, every assisted step).
"""

from __future__ import annotations

import json
import re

from ..stages.tokenizer import bytes_to_unicode

BYTE_DECODER = {char: byte for byte, char in bytes_to_unicode().items()}


def byte_mode(tokenizer) -> str | None:
    """How StopStringCriteria reads token spellings: "byte_level" (GPT-2 alphabet), "byte_fallback" (<0xNN>) or None."""
    decoder = getattr(getattr(tokenizer, "backend", None), "decoder", None)
    if decoder is None:
        return None
    try:
        state = json.dumps(json.loads(decoder.__getstate__()))
    except (TypeError, ValueError, AttributeError):
        return "byte_level" if type(decoder).__name__ == "ByteLevel" else None
    if '"type": "ByteFallback"' in state:
        return "byte_fallback"
    return "byte_level" if '"type": "ByteLevel"' in state else None


class StopStrings:
    """The stop strings of one run, and the bytes of each token seen (cached)."""

    def __init__(self, tokenizer, strings):
        self.tokenizer = tokenizer
        self.strings: list[str] = [] if strings is None else ([strings] if isinstance(strings, str) else list(strings))
        self._bytes: dict[int, bytes] = {}
        self._mode: str | None = byte_mode(tokenizer) if self.strings else None

    def __bool__(self) -> bool:
        return bool(self.strings)

    def completes(self, ids: list[int]) -> bool:
        """transformers' StopStringCriteria: a stop string counts when it ends inside the last token. The text is
        the tokens' own bytes, prompt included, so a stop string begun in the prompt and ended by a new token stops
        (and one that a later token merely extends does not stop again)."""
        if not self.strings or not ids:
            return False
        stops = [s.encode("utf-8") for s in self.strings]
        last = self.token_bytes(ids[-1])
        tail, used = last, 1
        while len(tail) < max(map(len, stops)) + len(last) and used < len(ids):  # enough to hold any stop string
            used += 1
            tail = self.token_bytes(ids[-used]) + tail
        last_start = len(tail) - len(last)
        for stop in stops:
            start = tail.find(stop)
            while start != -1:
                if start + len(stop) > last_start:  # the match reaches into the last token
                    return True
                start = tail.find(stop, start + 1)
        return False

    def token_bytes(self, token_id: int) -> bytes:
        """A token's bytes, as StopStringCriteria reads the vocabulary: byte-level BPE spellings ('Ġcat') and
        byte-fallback tokens ('<0xE2>') give their raw bytes, so a character split across tokens still matches."""
        if token_id not in self._bytes:
            spelling = self.tokenizer.convert_ids_to_tokens([token_id])[0] or ""
            if self._mode == "byte_level" and all(c in BYTE_DECODER for c in spelling):
                value = bytes(BYTE_DECODER[c] for c in spelling)
            elif self._mode == "byte_fallback" and re.fullmatch(r"<0x[0-9A-Fa-f]{2}>", spelling):
                value = bytes([int(spelling[3:5], 16)])
            else:
                value = self.tokenizer.decode([token_id], skip_special_tokens=False).encode("utf-8")
            self._bytes[token_id] = value
        return self._bytes[token_id]
