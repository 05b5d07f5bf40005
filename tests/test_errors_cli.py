"""The command line on bad input: every error a user can cause is one line on stderr and exit code 2, checked
before seconds of loading where it can be; --debug shows the traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from explain.__main__ import main


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(code, err, *words):
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    for word in words:
        assert word in err, f"{word!r} not in: {err}"


@pytest.fixture
def saved_trace(tmp_path, tiny_folder):
    """The trace of loading the tiny model, saved."""
    import explain

    return explain.pipeline(model=tiny_folder).trace.save(tmp_path / "trace.json")


def test_trace_on_a_missing_file(capsys, tmp_path):
    code, out, err = run(capsys, "trace", str(tmp_path / "missing.json"))
    one_line_error(code, err, f"no trace file at {tmp_path / 'missing.json'}")
    assert out == ""


def test_trace_on_a_folder(capsys, tmp_path):
    code, out, err = run(capsys, "trace", str(tmp_path))
    one_line_error(code, err, f"{tmp_path} is a folder, not a trace file")


@pytest.mark.parametrize("keep", [1, 20, 0.5, -2])
def test_trace_on_a_truncated_file(capsys, saved_trace, keep):
    data = open(saved_trace, "rb").read()
    cut = data[: int(len(data) * keep)] if isinstance(keep, float) else data[:keep]
    open(saved_trace, "wb").write(cut)
    code, out, err = run(capsys, "trace", saved_trace)
    one_line_error(code, err, saved_trace)


def test_trace_on_json_that_is_not_a_trace(capsys, tmp_path):
    path = tmp_path / "other.json"
    path.write_text(json.dumps({"format": "something else"}))
    one_line_error(*run(capsys, "trace", str(path))[::2], "not an explain trace")


def test_trace_that_loads_prints_it(capsys, saved_trace):
    code, out, err = run(capsys, "trace", saved_trace)
    assert code == 0 and "-- run 0" in out and "registry" in out and err == ""


def test_load_from_a_folder_that_does_not_exist(capsys, tmp_path):
    """Before: reported as an invalid repo id (HFValidationError), with a traceback."""
    code, out, err = run(capsys, "load", "--model", str(tmp_path / "no-such-model"))
    one_line_error(code, err, f"no folder at {tmp_path / 'no-such-model'}")
    code, out, err = run(capsys, "load", "--model", "./no-such-model")
    one_line_error(code, err, "no folder at ./no-such-model")


def test_save_trace_to_a_folder_is_refused_before_loading(capsys, tmp_path):
    code, out, err = run(capsys, "load", "--save-trace", str(tmp_path))
    one_line_error(code, err, f"--save-trace {tmp_path} is a folder", str(tmp_path / "trace.json"))
    assert out == "", "refused only after loading"


def test_save_trace_under_a_file_is_refused_before_loading(capsys, tmp_path):
    (tmp_path / "file").write_text("x")
    code, out, err = run(capsys, "load", "--save-trace", str(tmp_path / "file" / "trace.json"))
    one_line_error(code, err, "cannot be written")
    assert out == ""


def test_a_prompt_with_a_lone_surrogate_is_refused_before_loading(capsys):
    code, out, err = run(capsys, "generate", "caf\udce9", "--max-new-tokens", "2")
    one_line_error(code, err, "the prompt holds '\\udce9' at character 3", "lone surrogate")
    assert out == ""


def test_bad_dtype_and_device_are_one_line(capsys):
    one_line_error(*run(capsys, "load", "--dtype", "float8_e4m3fn")[::2], "float8_e4m3fn", "bfloat16")
    one_line_error(*run(capsys, "load", "--device", "tpu")[::2], "'tpu'", "cpu, cuda")


def test_debug_shows_the_traceback_and_still_exits_2(capsys, tmp_path):
    code, out, err = run(capsys, "--debug", "trace", str(tmp_path))
    assert code == 2 and "Traceback (most recent call last)" in err and "TraceFileError" in err
    assert err.rstrip().splitlines()[-1].startswith("error: ")
    code, out, err = run(capsys, "trace", str(tmp_path), "--debug")
    assert code == 2 and "Traceback (most recent call last)" in err


def test_a_real_command_line_with_undecodable_bytes(tmp_path):
    """The prompt arrives as bytes that are not UTF-8 (Python decodes them to lone surrogates): exit 2, one line."""
    env = {**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(os.path.abspath(__file__)))}
    result = subprocess.run(
        [sys.executable, "-m", "explain", "generate", b"caf\xe9", "--max-new-tokens", "2"],
        capture_output=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 2, result.stderr.decode(errors="replace")
    err = result.stderr.decode()
    assert err.startswith("error: the prompt holds '\\udce9'") and err.count("\n") == 1


# -- issue 28: usage errors, --debug everywhere, control characters, unforeseen errors ------------------------------
@pytest.mark.parametrize(
    "argv, words",
    [
        ([], ["the following arguments are required: command"]),
        (["generate"], ["python -m explain generate", "required: prompt", "--help"]),
        (["generate", "hi", "--max-new-tokens", "x"], ["--max-new-tokens", "invalid int value: 'x'"]),
        (["load", "--bogus"], ["unrecognized arguments: --bogus"]),
        (["export", "only-one.json"], ["required: output"]),
        (["frobnicate"], ["invalid choice: 'frobnicate'"]),
        (["plan", "m", "--batch", "1.5"], ["--batch", "invalid int value: '1.5'"]),
    ],
)
def test_usage_errors_are_one_line_and_exit_2(capsys, argv, words):
    """argparse printed its usage (48 lines for generate) and the message; the README promises one line."""
    code, out, err = run(capsys, *argv)
    one_line_error(code, err, *words)
    assert out == ""


def test_debug_on_a_usage_error_adds_the_usage(capsys):
    code, out, err = run(capsys, "generate", "--debug")
    assert (
        code == 2 and err.startswith("usage: python -m explain generate") and err.splitlines()[-1].startswith("error: ")
    )


def test_export_has_debug(capsys, tmp_path):
    code, out, err = run(capsys, "export", str(tmp_path / "missing.json"), str(tmp_path / "x.html"), "--debug")
    assert code == 2 and "Traceback (most recent call last)" in err and "no trace file at" in err


def test_export_of_a_nan_trace_is_one_line(capsys, saved_trace, tmp_path):
    text = open(saved_trace, encoding="utf-8").read()
    text = text.replace('"duration": ', '"duration": NaN, "was": ', 1)
    open(saved_trace, "w", encoding="utf-8").write(text)
    code, out, err = run(capsys, "export", saved_trace, str(tmp_path / "x.html"))
    one_line_error(code, err, saved_trace, "NaN is not a JSON number")
    assert not (tmp_path / "x.html").exists()


def test_save_trace_onto_a_device_is_refused_before_loading(capsys):
    code, out, err = run(capsys, "load", "--save-trace", "/dev/null")
    one_line_error(code, err, "--save-trace /dev/null", "character device, not a regular file")
    assert out == ""
    assert os.path.exists("/dev/null") and not os.path.isfile("/dev/null")


def test_export_onto_a_device_is_one_line(capsys, saved_trace):
    pytest.importorskip("ipywidgets")
    code, out, err = run(capsys, "export", saved_trace, "/dev/null")
    one_line_error(code, err, "cannot write the page /dev/null", "character device")


CONTROLS = "\x1b]52;c;ZWNobyBoaQ==\x07\x1b[2J\x1b[H\x9b31m\x07\r\u202e"


def test_trace_prints_no_control_character_from_the_file(capsys, saved_trace):
    """A shared trace's strings (a model name, an error message) reach the terminal escaped: no OSC 52 clipboard
    write, no cursor move, no C1 CSI, no bidirectional override."""
    record = json.load(open(saved_trace, encoding="utf-8"))
    lookup = next(e for e in record["events"] if e["stage"] == "registry")
    lookup["data"]["model_used"] = f"evil{CONTROLS}model"
    record["events"].append(
        dict(
            lookup,
            seq=len(record["events"]),
            data={**lookup["data"], "error": {"type": f"Boom{CONTROLS}", "message": f"bad{CONTROLS}"}},
        )
    )
    json.dump(record, open(saved_trace, "w", encoding="utf-8"))
    code, out, err = run(capsys, "trace", saved_trace)
    assert code == 0, err
    assert "evil\\x1b]52;c;ZWNobyBoaQ==\\x07\\x1b[2J\\x1b[H\\x9b31m\\x07\\x0d\\u202emodel" in out
    assert not any(ord(c) < 0x20 and c != "\n" or 0x7F <= ord(c) < 0xA0 or c == "\u202e" for c in out)


def test_an_error_message_quoting_a_file_is_escaped(capsys, tmp_path):
    path = tmp_path / f"name{CONTROLS[:6]}.json"
    code, out, err = run(capsys, "trace", str(path))
    assert code == 2 and "\x1b" not in err and "name\\x1b]52" in err and err.count("\n") == 1


def test_the_token_stream_escapes_control_characters_but_keeps_lines():
    import io

    from explain.console import TokenStream
    from explain.trace import Event

    out = io.StringIO()
    stream = TokenStream(file=out, color=False)
    stream(Event("generation", "step", 1, 0.0, 0.0, {"text": "a\x1b[31mb\nc\td\x9b", "prob": 0.9}))
    assert out.getvalue() == "a\\x1b[31mb\nc\td\\x9b"


def test_an_unforeseen_error_is_one_line_and_debug_shows_it(capsys, monkeypatch, saved_trace):
    import explain.console

    def broken(*args, **kwargs):
        raise RuntimeError("something explain did not expect")

    monkeypatch.setattr(explain.console, "print_timeline", broken)
    code, out, err = run(capsys, "trace", saved_trace)
    one_line_error(code, err, "something explain did not expect", "RuntimeError", "--debug")
    code, out, err = run(capsys, "trace", saved_trace, "--debug")
    assert code == 2 and "Traceback (most recent call last)" in err and "RuntimeError" in err
