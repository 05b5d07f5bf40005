"""The trace: every event a pipeline emits, in order, delivered to sinks as it happens.

An event is a plain record (stage, kind, run, start, duration, data) that survives a JSON round trip
unchanged, so a saved trace replays in the same views with no model loaded. What each (stage, kind) holds is
declared once, in explain.events; a trace file is checked against it when it is loaded (it may come from
anyone), and with EXPLAIN_CHECK_EVENTS=1 (the tests) every emitted event is checked too.

Runs own their events: loading is run 0, and each call (each step-through run) reserves its run id with
`new_run()` when it starts and passes it to every `emit`, so events land in the right run whatever else
happens meanwhile (another thread's call, an older paused run stepped after a newer call).
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

from .errors import ArgumentError, TraceFileError  # TraceFileError: an ExplainError, the CLI prints it in one line
from .events import STAGE_INFO, STAGES, SchemaError, check_event
from .utils import strict_json
from .utils.files import cannot_write_file, save_file
from .utils.units import size_text

FORMAT = "explain-trace"
VERSION = 2  # 2: events checked against explain.events, a failed stage's event carries "error"
READABLE_VERSIONS = (1, 2)  # version 1 files hold the same records, written before the schema existed
MAX_LOAD_BYTES = 256 * 2**20  # a larger file needs max_bytes= (JSON of that size takes ~10x its size in memory)


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
    def from_dict(cls, record: dict) -> Event:
        """An event from its JSON record, checked: the envelope's types, then the data against its kind."""
        missing = {"stage", "kind", "run", "start", "duration", "data"} - set(record)
        if missing:
            raise SchemaError("", f"lacks {', '.join(sorted(missing))}")
        for name, kinds in (
            ("stage", str),
            ("kind", str),
            ("run", int),
            ("seq", int),
            ("start", (int, float)),
            ("duration", (int, float)),
        ):
            value = record.get(name, 0)
            if not isinstance(value, kinds) or isinstance(value, bool):
                raise SchemaError(name, f"expected {'a string' if kinds is str else 'a number'}, got {value!r:.60}")
        if record["run"] < 0:
            raise SchemaError("run", f"expected a run id >= 0, got {record['run']}")
        check_event(record["stage"], record["kind"], record["data"])
        return cls(
            **{k: record[k] for k in ("stage", "kind", "run", "start", "duration", "data", "seq") if k in record}
        )


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

    check_events: bool = os.environ.get("EXPLAIN_CHECK_EVENTS", "") == "1"  # check each emitted event (tests)

    def __init__(self, events: list[Event] | None = None, meta: dict | None = None):
        self.events: list[Event] = list(events or [])
        self.meta: dict = dict(meta or {})
        self.run: int = max((e.run for e in self.events), default=0)  # the newest run id handed out
        self.enabled: bool = True
        self._sinks: list[Sink] = []
        self._branches: dict[int, int] = {}  # run -> forced branches handed out
        self._lock = threading.Lock()

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

    def emit(
        self,
        stage: str,
        kind: str,
        data: dict | None = None,
        *,
        run: int | None = None,
        start: float | None = None,
        duration: float = 0.0,
    ) -> Event:
        """Record one event and hand it to every sink. Loading stages belong to run 0; an event of a call
        needs the run id its call reserved with new_run()."""
        if stage not in STAGE_INFO:
            raise ValueError(f"unknown stage {stage!r}; stages are {', '.join(STAGES)}")
        if run is None:
            if STAGE_INFO[stage].phase == "call":
                raise ValueError(f"{stage}/{kind} belongs to a call: emit it with run=<the id new_run() gave the call>")
            run = 0
        data = plain(data or {})
        if self.check_events:
            try:
                check_event(stage, kind, data)
            except SchemaError as error:
                raise ValueError(f"{stage}/{kind} event does not fit explain.events: {error}") from None
        with self._lock:
            event = Event(
                stage, kind, run, time.time() if start is None else start, float(duration), data, seq=len(self.events)
            )
            if self.enabled:
                self.events.append(event)
        for sink in list(self._sinks):
            try:
                sink(event)
            except Exception as error:  # a broken view must not break the model run
                warnings.warn(
                    f"trace sink {sink!r} failed on {stage}/{kind}: {error!r}; it stays subscribed", stacklevel=2
                )
        return event

    @contextmanager
    def span(self, stage: str, kind: str, run: int | None = None, **data: Any) -> Iterator[dict]:
        """Time a block and emit one event when it ends; the block fills in the yielded dict. When the block
        raises, the event still goes out, with what was gathered and "error", and the error goes on."""
        start, t0 = time.time(), time.perf_counter()
        try:
            yield data
        except (Exception, KeyboardInterrupt) as error:
            data["error"] = {"type": type(error).__name__, "message": str(error)}
            self.emit(stage, kind, data, run=run, start=start, duration=time.perf_counter() - t0)
            raise
        self.emit(stage, kind, data, run=run, start=start, duration=time.perf_counter() - t0)

    def new_run(self) -> int:
        """Reserve the id of a new call; everything the call emits carries it."""
        with self._lock:
            self.run += 1
            return self.run

    def new_branch(self, run: int) -> int:
        """Reserve the id of a new forced branch of `run` (its original is branch 0)."""
        with self._lock:
            self._branches[run] = self._branches.get(run, 0) + 1
            return self._branches[run]

    # -- reading ----------------------------------------------------------------------------------------
    def filter(self, stage: str | None = None, kind: str | None = None, run: int | None = None) -> list[Event]:
        return [
            e
            for e in self.events
            if (stage is None or e.stage == stage)
            and (kind is None or e.kind == kind)
            and (run is None or e.run == run)
        ]

    def last(self, stage: str, kind: str | None = None, run: int | None = None) -> Event | None:
        found = self.filter(stage, kind, run)
        return found[-1] if found else None

    def runs(self) -> list[int]:
        """The run ids that have events, in order (0, the loading, first when present)."""
        return sorted({e.run for e in self.events})

    def __len__(self) -> int:
        return len(self.events)

    def __repr__(self) -> str:
        stages = sorted({e.stage for e in self.events}, key=STAGES.index)
        return f"Trace({len(self.events)} events, runs 0..{self.run}, stages: {', '.join(stages) or 'none'})"

    # -- saving -----------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {
            "format": FORMAT,
            "version": VERSION,
            "meta": plain(self.meta),
            "events": [e.to_dict() for e in self.events],
        }

    def save(self, path: str | os.PathLike) -> str:
        """Write the trace as JSON. The file is replaced atomically: a failed save leaves the old one intact. The
        target must be a regular file or a new path (a symbolic link is followed); a device, FIFO or folder is
        refused, and a disk error is an ExplainError naming the path (explain.utils.files.save_file)."""
        path = os.fspath(path)
        try:
            data = json.dumps(self.to_dict(), ensure_ascii=False, allow_nan=False).encode("utf-8")
        except (ValueError, RecursionError) as error:  # NaN, a lone surrogate or deep nesting put in after emit
            raise TraceFileError(
                f"cannot save the trace to {path}: it holds what JSON cannot ({error}); values "
                "changed after they were emitted? Nothing was written"
            ) from None
        folder = os.path.dirname(os.path.abspath(path))
        try:
            os.makedirs(folder, exist_ok=True)
        except OSError as error:
            raise cannot_write_file(path, error, "the trace") from None
        return save_file(path, data, "the trace")

    @classmethod
    def load(cls, path: str | os.PathLike, max_bytes: int | None = MAX_LOAD_BYTES) -> Trace:
        """Read a saved trace. Every event is checked against explain.events: a trace is a file people share,
        and a field of the wrong type (markup where a number belongs) is refused, naming where it is. The JSON is
        read strictly (explain/utils/strict_json.py: no NaN, no lone surrogates, bounded numbers and nesting), so what
        loads can be saved and exported again; at most `max_bytes` are read (None: the default, 256 MiB)."""
        path = os.fspath(path)
        max_bytes = _max_bytes(max_bytes)
        try:
            data = strict_json.read_file(path, max_bytes)
            record = strict_json.loads(data)
        except FileNotFoundError:
            raise TraceFileError(f"no trace file at {path}; save one with pipe.trace.save(path)") from None
        except (IsADirectoryError, strict_json.NotRegularFile) as error:
            kind = getattr(error, "kind", "a folder")
            raise TraceFileError(
                f"{path} is {kind}, not a trace file; pass the path of a .json file written by pipe.trace.save(path)"
            ) from None
        except strict_json.TooLarge as error:
            known = error.size > max_bytes  # else the file said less than it holds (/proc), or it grew
            size = size_text(error.size) if known else "longer than that (it kept growing)"
            limit = (
                "the 256 MiB explain reads by default"
                if max_bytes == MAX_LOAD_BYTES
                else f"max_bytes={max_bytes} ({size_text(max_bytes)})"
            )
            raise TraceFileError(
                f"{path} is {size}, more than {limit} (a JSON trace takes about ten times its size "
                "in memory); if you trust it and have the memory, pass "
                f"Trace.load(path, max_bytes={error.size if known else max_bytes * 2})"
            ) from None
        except strict_json.NotStrictJSON as error:
            raise TraceFileError(
                f"{path}: {error}; the file was edited or damaged (explain never writes this): "
                "save the trace again with pipe.trace.save(path)"
            ) from None
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as error:
            raise TraceFileError(
                f"{path} is not a readable trace (truncated or not JSON: {error}); save it again with trace.save(path)"
            ) from None
        except OSError as error:
            raise TraceFileError(
                f"{path} cannot be read ({error.strerror or error}); check the path and its permissions"
            ) from None
        if not isinstance(record, dict) or record.get("format") != FORMAT:
            raise TraceFileError(
                f'{path} is JSON but not an explain trace (no "format": "{FORMAT}"); '
                "open a file written by pipe.trace.save(path)"
            )
        version = record.get("version", 0)
        if not isinstance(version, int) or isinstance(version, bool) or version > VERSION:
            raise TraceFileError(
                f"{path} was written by a newer explain (trace version {version!r}); upgrade explain to read it"
            )
        if version not in READABLE_VERSIONS:
            raise TraceFileError(
                f"{path} has trace version {version!r}, which no explain release wrote; "
                "save the trace again with pipe.trace.save(path)"
            )
        events, meta = record.get("events", []), record.get("meta") or {}
        if not isinstance(events, list) or not isinstance(meta, dict):
            raise TraceFileError(
                f'{path}: "events" is not a list of event records (or "meta" not an '
                "object); the file was edited or damaged: save the trace again with "
                "pipe.trace.save(path)"
            )
        try:
            strict_json.check_depth(meta, "meta")  # the events' fields are bounded by their declarations
        except strict_json.NotStrictJSON as error:
            raise TraceFileError(
                f"{path}: {error}; the file was edited or damaged (explain never writes this): "
                "save the trace again with pipe.trace.save(path)"
            ) from None
        loaded = []
        for index, event in enumerate(events):
            try:
                if not isinstance(event, dict):
                    raise SchemaError("", f"expected an event record, got {event!r:.60}")
                loaded.append(Event.from_dict(event))
            except SchemaError as error:
                where = f" ({event.get('stage')}/{event.get('kind')})" if isinstance(event, dict) else ""
                raise TraceFileError(
                    f"{path}: event {index}{where}: {error}; the file was edited or damaged: "
                    "save the trace again with pipe.trace.save(path)"
                ) from None
        return cls(loaded, meta)


def _max_bytes(value) -> int:
    if value is None:
        return MAX_LOAD_BYTES
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ArgumentError(
            f"max_bytes must be a positive whole number of bytes (or None for the default, "
            f"{MAX_LOAD_BYTES}), got {value!r:.60}"
        )
    return value
