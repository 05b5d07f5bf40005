"""Trace files from someone else, and files explain writes, on a hostile or careless machine (issue 28): strict JSON
in and out, bounded reads, non-regular files refused without blocking, safe atomic writes whose OS errors are
ExplainErrors naming the path. Real files, real devices (/dev/zero, /dev/null), real FIFOs and real limits."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import pytest

from explain import ExplainError, Trace
from explain.errors import ArgumentError
from explain.trace import TraceFileError

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def small_trace() -> Trace:
    from explain.stages import tasks

    trace = Trace(meta={"what": "test"})
    tasks.lookup("text-generation", "some/model", trace)  # a real registry/lookup event
    return trace


def write_with_meta(path, meta_text: str) -> str:
    """A real saved trace whose meta is replaced by `meta_text`, as raw JSON text (what json.dumps cannot write)."""
    record = small_trace().to_dict()
    text = json.dumps(record).replace('"meta": {"what": "test"}', f'"meta": {meta_text}')
    assert meta_text in text
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return str(path)


@pytest.mark.parametrize(
    "meta, words",
    [
        ('{"x": [1, NaN]}', ["meta.x[1]", "NaN is not a JSON number"]),
        ('{"x": Infinity}', ["meta.x", "Infinity is not a JSON number"]),
        ('{"x": -Infinity}', ["meta.x", "-Infinity"]),
        ('{"x": 1e999}', ["meta.x", "beyond the range of a double"]),
        ('{"x": "\\ud800"}', ["meta.x", "lone surrogate '\\ud800'"]),
        ('{"\\udfff": 1}', ["lone surrogate", "the key"]),
        ('{"x": ' + "9" * 5000 + "}", ["meta.x", "integer of 5000 digits"]),
        ('{"x": -' + "1" * 25 + "}", ["meta.x", "integer of 25 digits"]),
        ('{"a": ' * 600 + "1" + "}" * 600, ["meta.a.a", "nested more than 64 deep"]),
    ],
    ids=[
        "nan",
        "infinity",
        "minus-infinity",
        "overflow",
        "surrogate",
        "surrogate-key",
        "5000-digits",
        "25-digits",
        "600-deep",
    ],
)
def test_what_json_cannot_round_trip_is_refused_naming_the_file_and_field(tmp_path, meta, words):
    path = write_with_meta(tmp_path / "t.json", meta)
    with pytest.raises(TraceFileError) as error:
        Trace.load(path)
    for word in [path, *words]:
        assert word in str(error.value), str(error.value)


def test_an_event_field_nested_deep_is_refused(tmp_path):
    """An undeclared field of an event (allowed: a newer producer's fact) may not nest past the bound either."""
    record = small_trace().to_dict()
    deep: list = []
    for _ in range(200):
        deep = [deep]
    record["events"][0]["data"]["extra"] = deep
    path = tmp_path / "t.json"
    path.write_text(json.dumps(record))
    with pytest.raises(TraceFileError, match=r"event 0 \(registry/lookup\): data.extra: nested more than 32 deep"):
        Trace.load(path)


def test_numbers_explain_writes_still_load(tmp_path):
    """The bounds refuse nothing explain writes: 20-digit integers, exponents, "nan" strings for non-finite values."""
    path = write_with_meta(
        tmp_path / "t.json",
        '{"big": 18446744073709551615, "small": -9223372036854775808, '
        '"e": 1.5e-300, "f": 2e+307, "text": "\\ud83d\\ude00 caf\\u00e9"}',
    )
    trace = Trace.load(path)
    assert trace.meta == {"big": 2**64 - 1, "small": -(2**63), "e": 1.5e-300, "f": 2e307, "text": "\U0001f600 café"}
    assert Trace.load(trace.save(tmp_path / "again.json")).meta == trace.meta


def test_dev_zero_is_refused_at_once_without_reading(tmp_path):
    """/dev/zero says its size is 0 and never ends: it is a device, refused before a byte is read."""
    started = time.perf_counter()
    with pytest.raises(TraceFileError, match="/dev/zero is a character device, not a trace file"):
        Trace.load("/dev/zero")
    assert time.perf_counter() - started < 1


def test_the_size_limit_counts_bytes_read(tmp_path):
    path = small_trace().save(tmp_path / "t.json")
    size = os.path.getsize(path)
    with pytest.raises(TraceFileError, match=f"more than max_bytes={size - 1} .* max_bytes={size}"):
        Trace.load(path, max_bytes=size - 1)
    assert len(Trace.load(path, max_bytes=size)) == 1
    # /proc/self/maps says its size is 0 and holds more: the bytes read are what count
    assert os.stat("/proc/self/maps").st_size == 0
    with pytest.raises(TraceFileError, match="/proc/self/maps is longer than that .* max_bytes=200"):
        Trace.load("/proc/self/maps", max_bytes=100)


def test_a_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "pipe.json"
    os.mkfifo(fifo)
    done = []
    worker = threading.Thread(target=lambda: done.append(_refusal(fifo)), daemon=True)
    worker.start()
    worker.join(5)
    if worker.is_alive():  # unblock the thread before failing
        with open(fifo, "w"):
            pass
        pytest.fail("Trace.load blocked on a FIFO")
    assert "is a named pipe (FIFO), not a trace file" in done[0]


def _refusal(path) -> str:
    try:
        Trace.load(path)
    except TraceFileError as error:
        return str(error)
    return "loaded"


@pytest.mark.parametrize(
    "value, words", [(None, None), (0, "positive"), (-1, "positive"), (True, "True"), ("1000", "'1000'"), (1.5, "1.5")]
)
def test_max_bytes(tmp_path, value, words):
    path = small_trace().save(tmp_path / "t.json")
    if words is None:
        assert len(Trace.load(path, max_bytes=value)) == 1  # None: the default limit
        return
    with pytest.raises(ArgumentError, match="max_bytes must be a positive whole number") as error:
        Trace.load(path, max_bytes=value)
    assert words in str(error.value)


# -- writing ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("target, kind", [("/dev/null", "a character device"), ("/dev/stdout", None)])
def test_save_onto_a_device_is_refused_and_the_device_kept(tmp_path, target, kind):
    before = os.stat(target)
    with pytest.raises(ExplainError) as error:
        small_trace().save(target)
    assert f"cannot write the trace {target}" in str(error.value)
    if kind:  # /dev/stdout is whatever fd 1 is here (a terminal, a pipe, pytest's deleted temporary file)
        assert f"it is {kind}, not a regular file" in str(error.value)
    after = os.stat(target)
    assert (after.st_mode, after.st_ino) == (before.st_mode, before.st_ino)


def test_save_onto_a_fifo_or_folder_is_refused(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(ExplainError, match="named pipe"):
        small_trace().save(fifo)
    with pytest.raises(ExplainError, match="is a folder"):
        small_trace().save(tmp_path)
    assert sorted(os.listdir(tmp_path)) == ["pipe"]


def test_save_through_a_symbolic_link_writes_its_target_and_keeps_the_link(tmp_path):
    target = tmp_path / "real.json"
    target.write_text("old")
    link = tmp_path / "link.json"
    link.symlink_to(target)
    small_trace().save(link)
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert len(Trace.load(target)) == 1
    assert sorted(os.listdir(tmp_path)) == ["link.json", "real.json"]


def test_a_link_to_a_device_is_refused(tmp_path):
    link = tmp_path / "null.json"
    link.symlink_to("/dev/null")
    with pytest.raises(ExplainError, match="a symbolic link to /dev/null.*character device"):
        small_trace().save(link)
    assert link.is_symlink()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a read-only folder")
def test_a_read_only_folder_is_an_explain_error_and_the_old_file_kept(tmp_path):
    path = small_trace().save(tmp_path / "t.json")
    before = open(path, "rb").read()
    os.chmod(tmp_path, 0o555)
    try:
        with pytest.raises(ExplainError, match=f"cannot write the trace {path} \\(Permission denied\\)"):
            Trace(meta={"other": 1}).save(path)
    finally:
        os.chmod(tmp_path, 0o755)
    assert open(path, "rb").read() == before


def test_a_file_size_limit_is_an_explain_error_and_the_old_file_kept(tmp_path):
    """RLIMIT_FSIZE (ulimit -f) in a real process: the write fails with EFBIG; the old file stays whole."""
    path = small_trace().save(tmp_path / "t.json")
    before = open(path, "rb").read()
    script = f"""
import resource, sys
resource.setrlimit(resource.RLIMIT_FSIZE, ({len(before) + 100}, {len(before) + 100}))
from explain import Trace, ExplainError
trace = Trace.load({str(path)!r})
trace.meta["padding"] = "x" * 100000
try:
    trace.save({str(path)!r})
except ExplainError as error:
    print(error)
    sys.exit(3)
"""
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": ROOT},
    )
    assert result.returncode == 3, result.stderr
    assert f"cannot write the trace {path} (File too large)" in result.stdout and "ulimit -f" in result.stdout
    assert open(path, "rb").read() == before
    assert os.listdir(tmp_path) == ["t.json"]


def test_save_of_what_json_cannot_hold_is_an_explain_error(tmp_path):
    trace = small_trace()
    trace.meta["bad"] = "\ud800"  # set after the fact: emit and load never let one in
    with pytest.raises(TraceFileError, match="cannot save the trace"):
        trace.save(tmp_path / "t.json")
    assert os.listdir(tmp_path) == []


def test_export_onto_a_device_is_refused_before_building_the_page(tmp_path):
    pytest.importorskip("ipywidgets")
    import explain

    with pytest.raises(ExplainError, match="cannot write the page /dev/null: it is a character device"):
        explain.export(small_trace(), "/dev/null")
    with pytest.raises(ExplainError, match="does not exist"):
        explain.export(small_trace(), tmp_path / "missing" / "run.html")
