"""A GGUF file's header counted before any reader parses it: the gguf package's GGUFReader reads every metadata
field eagerly into Python objects (a 23 MB array of empty strings cost 28 s and 2 GB), so explain walks the header
itself first, with the counts and lengths the file states checked against caps before anything is allocated, and
the tensors' extents checked against the file's size (a truncated file, refused before transformers' reader fails
with a raw ValueError). Both backends call check_header before a GGUF is opened.

The layout (gguf's docs/gguf.md, and GGUFReader): magic "GGUF", version (u32), tensor count (u64), metadata count
(u64); each field a key (u64 length + bytes), a value type (u32) and a value (a string is a u64 length + bytes, an
array an item type (u32), a count (u64) and the items); then each tensor's name, dimensions (u32 count, u64 each),
type (u32) and offset (u64) from the data section, which starts at the next multiple of general.alignment (32).
"""

from __future__ import annotations

import math
import mmap
import os
import struct

from ..errors import CorruptFileError

MAX_FIELDS = 65_536  # metadata fields (a llama.cpp conversion writes about 40)
MAX_TENSORS = 1_000_000
MAX_ARRAY_ITEMS = 1 << 20  # items of one array: the largest vocabularies and merge lists hold about 300,000
MAX_STRING = 64 << 20  # bytes of one string (a chat template is a few KB)
MAX_DIMENSIONS = 8
# value type -> the size of one item (gguf.GGUFValueType: UINT8..FLOAT64 and BOOL; 8 STRING and 9 ARRAY apart)
SCALAR_SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
STRING, ARRAY = 8, 9


class _Walk:
    def __init__(self, data, path: str, order: str):
        self.data, self.path, self.order, self.at = data, path, order, 0

    def refuse(self, what: str) -> CorruptFileError:
        return CorruptFileError(
            f"{self.path} is not a readable GGUF file: {what}; it is truncated or corrupt: download it again"
        )

    def number(self, code: str) -> int:
        size = struct.calcsize(code)
        if self.at + size > len(self.data):
            raise self.refuse(f"it ends at byte {len(self.data)}, inside its header")
        (value,) = struct.unpack_from(self.order + code, self.data, self.at)
        self.at += size
        return value

    def string(self, what: str) -> str:
        length = self.number("Q")
        if length > MAX_STRING or self.at + length > len(self.data):
            raise self.refuse(f"{what} states a string of {length:,} bytes (at most {MAX_STRING:,}, within the file)")
        text = bytes(self.data[self.at : self.at + length]).decode("utf-8", errors="replace")
        self.at += length
        return text

    def skip_strings(self, count: int, key: str) -> None:
        unpack, data, at, end = struct.Struct(self.order + "Q").unpack_from, self.data, self.at, len(self.data)
        for _ in range(count):
            if at + 8 > end:
                raise self.refuse(f"it ends inside the array {key}")
            (length,) = unpack(data, at)
            at += 8 + length
            if length > MAX_STRING:
                raise self.refuse(f"a string of {key} states {length:,} bytes (at most {MAX_STRING:,})")
        if at > end:
            raise self.refuse(f"it ends inside the array {key}")
        self.at = at

    def skip_value(self, kind: int, key: str) -> int | None:
        """Skip one value; returns it when it is an integer (general.alignment)."""
        if kind in SCALAR_SIZES:
            start = self.at
            self.at += SCALAR_SIZES[kind]
            if self.at > len(self.data):
                raise self.refuse(f"it ends inside the value of {key}")
            return int.from_bytes(self.data[start : self.at], "little" if self.order == "<" else "big")
        if kind == STRING:
            self.string(key)
            return None
        if kind == ARRAY:
            item, count = self.number("I"), self.number("Q")
            if count > MAX_ARRAY_ITEMS:
                raise self.refuse(
                    f"the metadata array {key} states {count:,} items, more than explain reads ({MAX_ARRAY_ITEMS:,}: "
                    "a vocabulary holds at most a few hundred thousand); gguf's reader would build every item"
                )
            if item in SCALAR_SIZES:
                self.at += count * SCALAR_SIZES[item]
                if self.at > len(self.data):
                    raise self.refuse(f"it ends inside the array {key}")
            elif item == STRING:  # the vocabulary and its merges: a tight loop (100,000 strings in ~50 ms)
                self.skip_strings(count, key)
            else:
                for _ in range(count):
                    self.skip_value(item, key)
            return None
        raise self.refuse(f"{key} has value type {kind}, which GGUF does not define")


def check_header(path: str) -> None:
    """Refuse, before any reader parses it, a GGUF whose header states more than explain reads or whose tensors
    run past its end. Files that are not GGUF are left to the reader's own message."""
    path = os.fspath(path)
    size = os.path.getsize(path)
    if size < 24:
        return  # the reader names a file too short to be GGUF
    with open(path, "rb") as file, mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as data:
        if bytes(data[:4]) != b"GGUF":
            return
        # a big-endian file's version reads as a large number in little-endian order
        order = "<" if struct.unpack_from("<I", data, 4)[0] < 0x10000 else ">"
        walk = _Walk(data, path, order)
        walk.at = 8
        tensors, fields = walk.number("Q"), walk.number("Q")
        if fields > MAX_FIELDS or tensors > MAX_TENSORS:
            raise walk.refuse(
                f"its header states {fields:,} metadata fields and {tensors:,} tensors (at most {MAX_FIELDS:,} and "
                f"{MAX_TENSORS:,})"
            )
        alignment = 32
        for _ in range(fields):
            key = walk.string("a metadata key")
            value = walk.skip_value(walk.number("I"), key)
            if key == "general.alignment" and value:
                alignment = value
        extents = []
        for _ in range(tensors):
            name = walk.string("a tensor name")
            dimensions = walk.number("I")
            if dimensions > MAX_DIMENSIONS:
                raise walk.refuse(f"tensor {name} states {dimensions} dimensions (at most {MAX_DIMENSIONS})")
            shape = [walk.number("Q") for _ in range(dimensions)]
            kind, offset = walk.number("I"), walk.number("Q")
            extents.append((name, shape, kind, offset))
        start = -(-walk.at // alignment) * alignment
        _check_extents(walk, extents, start, size)


def _check_extents(walk: _Walk, extents: list, start: int, size: int) -> None:
    import gguf

    for name, shape, kind, offset in extents:
        try:
            block, block_bytes = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType(kind)]
        except (ValueError, KeyError):
            continue  # a type this gguf does not know: the reader says so
        end = start + offset + math.prod(shape) // block * block_bytes
        if end > size:
            raise walk.refuse(
                f"tensor {name} ({'x'.join(map(str, shape))}) ends at byte {end:,} but the file has {size:,} bytes "
                "(it was cut short)"
            )
