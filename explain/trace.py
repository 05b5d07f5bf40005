"""The trace: every event a pipeline emits, in order, delivered to sinks as it happens.

An event is a plain record (stage, kind, run, start, duration, data) that survives a JSON round trip
unchanged, so a saved trace replays in the same views with no model loaded.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
import warnings
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterator

from .errors import TraceFileError  # an ExplainError: the CLI prints it in one line

STAGES = ("registry", "config", "tokenizer", "weights", "placement", "tokenization", "generation", "decoding")
FORMAT = "explain-trace"
VERSION = 1


@dataclass
class Event:
    stage: str  # one of STAGES
    kind: str  # what happened inside the stage: "lookup", "file", "step", ...
    run: int  # 0 = loading, n = the n-th call of the pipeline
    start: float  # wall-clock seconds since the epoch
    duration: float  # seconds
    data: dict = field(default_factory=dict)
    seq: int = 0  # position in the trace

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, record: dict) -> "Event":
        missing = {"stage", "kind", "run", "start", "duration", "data"} - set(record)
        if missing:
            raise TraceFileError(f"event record lacks {sorted(missing)}: {str(record)[:120]}")
        return cls(**{k: record[k] for k in ("stage", "kind", "run", "start", "duration", "data", "seq") if k in record})


def plain(value: Any) -> Any:
    """Turn a value into what json.loads(json.dumps(value)) gives back, so a saved trace is equal to the live one."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)  # json has no inf/nan; keep them readable
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [plain(v) for v in value]
    if hasattr(value, "tolist"):  # numpy and torch scalars and arrays
        return plain(value.tolist())
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return str(value)


Sink = Callable[[Event], None]


class Trace:
    """Every event of one pipeline, in order; subscribed sinks see each event the moment it is emitted."""

    def __init__(self, events: list[Event] | None = None, meta: dict | None = None):
        self.events: list[Event] = list(events or [])
        self.meta: dict = dict(meta or {})
        self.run: int = max((e.run for e in self.events), default=0)
        self.enabled: bool = True
        self._sinks: list[Sink] = []

    # -- emitting ---------------------------------------------------------------------------------
    def subscribe(self, sink: Sink, replay: bool = False) -> Callable[[], None]:
        """Call `sink(event)` for every new event (and, with replay=True, for those already here)."""
        if replay:
            for event in list(self.events):
                sink(event)
        self._sinks.append(sink)
        return lambda: self.unsubscribe(sink)

    def unsubscribe(self, sink: Sink) -> None:
        if sink in self._sinks:
            self._sinks.remove(sink)

    def emit(self, stage: str, kind: str, data: dict | None = None, start: float | None = None,
             duration: float = 0.0) -> Event:
        if stage not in STAGES:
            raise ValueError(f"unknown stage {stage!r}; stages are {', '.join(STAGES)}")
        event = Event(stage, kind, self.run, time.time() if start is None else start, float(duration),
                      plain(data or {}), seq=len(self.events))
        if self.enabled:
            self.events.append(event)
        for sink in list(self._sinks):
            try:
                sink(event)
            except Exception as error:  # a broken view must not break the model run
                warnings.warn(f"trace sink {sink!r} failed on {stage}/{kind}: {error!r}; it stays subscribed")
        return event

    @contextmanager
    def span(self, stage: str, kind: str, **data: Any) -> Iterator[dict]:
        """Time a block and emit one event when it ends; the block fills in the yielded dict."""
        start, t0 = time.time(), time.perf_counter()
        yield data
        self.emit(stage, kind, data, start=start, duration=time.perf_counter() - t0)

    def new_run(self) -> int:
        self.run += 1
        return self.run

    # -- reading ----------------------------------------------------------------------------------
    def filter(self, stage: str | None = None, kind: str | None = None, run: int | None = None) -> list[Event]:
        return [e for e in self.events
                if (stage is None or e.stage == stage) and (kind is None or e.kind == kind)
                and (run is None or e.run == run)]

    def last(self, stage: str, kind: str | None = None) -> Event | None:
        found = self.filter(stage, kind)
        return found[-1] if found else None

    def __len__(self) -> int:
        return len(self.events)

    def __repr__(self) -> str:
        stages = sorted({e.stage for e in self.events}, key=STAGES.index)
        return f"Trace({len(self.events)} events, runs 0..{self.run}, stages: {', '.join(stages) or 'none'})"

    # -- saving -----------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {"format": FORMAT, "version": VERSION, "meta": plain(self.meta),
                "events": [e.to_dict() for e in self.events]}

    def save(self, path: str | os.PathLike) -> str:
        """Write the trace as JSON. The file is replaced atomically: a failed save leaves the old one intact."""
        path = os.fspath(path)
        text = json.dumps(self.to_dict(), ensure_ascii=False, allow_nan=False)
        folder = os.path.dirname(os.path.abspath(path))
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".trace-", suffix=".tmp", dir=folder)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
            os.chmod(tmp, _file_mode(path))  # mkstemp makes 0600; a trace is meant to be shared like any file
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Trace":
        path = os.fspath(path)
        try:
            with open(path, encoding="utf-8") as f:
                record = json.load(f)
        except FileNotFoundError:
            raise TraceFileError(f"no trace file at {path}; save one with pipe.trace.save(path)") from None
        except IsADirectoryError:
            raise TraceFileError(f"{path} is a folder, not a trace file; pass the path of a file written by "
                                 "pipe.trace.save(path)") from None
        except OSError as error:
            raise TraceFileError(f"{path} cannot be read ({error.strerror or error}); check the path and its "
                                 "permissions") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise TraceFileError(f"{path} is not a readable trace (truncated or not JSON: {error}); "
                                 "save it again with trace.save(path)") from None
        if not isinstance(record, dict) or record.get("format") != FORMAT:
            raise TraceFileError(f"{path} is JSON but not an explain trace (no \"format\": \"{FORMAT}\"); "
                                 "open a file written by pipe.trace.save(path)")
        version = record.get("version", 0)
        if not isinstance(version, int) or version > VERSION:
            raise TraceFileError(f"{path} was written by a newer explain (trace version {version!r}); "
                                 "upgrade explain to read it")
        events = record.get("events", [])
        if not isinstance(events, list) or not all(isinstance(e, dict) for e in events):
            raise TraceFileError(f"{path}: \"events\" is not a list of event records; the file was edited or "
                                 "damaged: save the trace again with pipe.trace.save(path)")
        try:
            return cls([Event.from_dict(e) for e in events], record.get("meta"))
        except TraceFileError as error:
            raise TraceFileError(f"{path}: {error}; the file was edited or damaged: save the trace again "
                                 "with pipe.trace.save(path)") from None


def _file_mode(path: str) -> int:
    """The mode open() would give a new file (0666 less the umask), or the mode of the file being replaced."""
    try:
        return os.stat(path).st_mode & 0o777
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask
