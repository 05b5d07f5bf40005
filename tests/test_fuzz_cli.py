"""Property-based tests of the command line: argument vectors put together from its real subcommands and flags, with
values of any kind (numbers, JSON, text with control characters, paths to nothing, devices). Each ends with exit
code 0, 1 (plan: the model does not fit) or 2; an error is one line on stderr with no traceback and no control
character; nothing is written. The model-loading commands get a --model folder that does not exist, so each vector
fails or succeeds in milliseconds instead of loading a model."""

from __future__ import annotations

import pytest
from fuzzing import fuzz, time_limit
from hypothesis import given
from hypothesis import strategies as st

from explain.__main__ import _cli_knobs, main

FLAGS = [
    "--model",
    "--gguf-file",
    "--revision",
    "--dtype",
    "--device",
    "--device-map",
    "--save-trace",
    "--backend",
    "--chat",
    "--sample",
    "--seed",
    "--steps",
    "--run",
    "--hardware",
    "--max-memory",
    "--strategy",
    "--context",
    "--batch",
    "--debug",
    "--help-me",
    "-x",
    "--",
]
VALUES = st.one_of(
    st.sampled_from(
        [
            "0",
            "-1",
            "1.5",
            "nan",
            "inf",
            "1e999",
            "[[1, 2]]",
            '{"a": 1}',
            "",
            "high",
            "/dev/null",
            "/dev/zero",
            "auto",
            "cpu",
            "float32",
            "int8",
            "9" * 400,
            "\x1b]52;c;aGk=\x07",
            "caf\udce9",
            "--debug",
        ]
    ),
    st.text(max_size=12),
)
COMMANDS = ["load", "generate", "trace", "export", "plan", "", "nonsense"]


@st.composite
def vectors(draw, missing: str):
    command = draw(st.sampled_from(COMMANDS))
    argv = [command] if command else []
    if command == "generate":
        argv.append(draw(VALUES))  # the prompt
    if command in ("trace", "export", "plan"):
        argv += draw(st.lists(VALUES, min_size=0, max_size=2))  # their positional files and model
    knobs = ["--" + name.replace("_", "-") for name in _cli_knobs()]
    for _ in range(draw(st.integers(0, 4))):
        flag = draw(st.sampled_from(FLAGS + knobs))
        argv.append(flag)
        if draw(st.booleans()):
            argv.append(draw(VALUES))
    if command in ("load", "generate"):
        argv += ["--model", missing]  # last wins: never a real load
    return argv


@pytest.fixture(scope="module")
def missing(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("cli") / "no-such-model")


@fuzz(150)
@given(data=st.data())
def test_any_argument_vector_exits_cleanly(missing, capsys, data, tmp_path_factory):
    argv = data.draw(vectors(missing), label="argv")
    with time_limit(60):
        try:
            code = main(argv)
        except SystemExit as exit:  # --help: argparse prints the help and exits 0
            code = exit.code
    out, err = capsys.readouterr()
    assert code in (0, 1, 2), (argv, code, err)
    if code == 2 and "--debug" not in argv:
        assert err.startswith("error: ") and err.count("\n") == 1, (argv, err)
    if "--debug" not in argv:
        assert "Traceback" not in err, (argv, err)
    assert "\x1b" not in out + err and "\x9b" not in out + err, (argv, out, err)
