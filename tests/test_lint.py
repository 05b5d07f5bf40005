"""The linter, the format check and the type checker, run as part of the README's test command (.ci/run runs it).

Their settings are in pyproject.toml ([tool.ruff], [tool.mypy]), with why each strictness was chosen. The tools are
pinned in the `test` extra; a checkout without them (pip install -e . alone) skips these tests rather than failing.
To fix what they report: `ruff check --fix`, `ruff format` (on your own files), then the type checker's findings
by hand.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHECKED = ["explain", "bench", "tests"]


def _run(command: list[str], timeout: int) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=timeout)


def _ruff() -> list[str]:
    pytest.importorskip("ruff", reason="ruff is in the test extra: pip install -e '.[test]'")
    return [sys.executable, "-m", "ruff"]  # the binary this environment's package ships, whatever PATH says


def test_ruff_check_finds_nothing():
    done = _run([*_ruff(), "check", "--no-cache", *CHECKED], timeout=300)
    assert done.returncode == 0, f"ruff check (fix with `ruff check --fix`, then by hand):\n{done.stdout[-6000:]}"


def test_ruff_format_leaves_every_file_as_it_is():
    done = _run([*_ruff(), "format", "--check", "--no-cache", *CHECKED], timeout=300)
    assert done.returncode == 0, (
        f"ruff format would change these files (run `ruff format` on them):\n{done.stdout[-6000:]}"
    )


def test_mypy_finds_nothing():
    pytest.importorskip("mypy", reason="mypy is in the test extra: pip install -e '.[test]'")
    # the files and every setting come from pyproject.toml; .mypy_cache/ (git-ignored) makes a second run fast
    done = _run([sys.executable, "-m", "mypy"], timeout=900)
    assert done.returncode == 0, f"mypy:\n{done.stdout[-6000:]}{done.stderr[-2000:]}"


def test_the_checkers_run_at_the_versions_pinned_where_ci_installs_them():
    """CI installs the `test` extra: the tools above must be pinned there (a new release of either adds checks, and
    CI must not turn red on a day nothing in explain changed), and this environment must have those versions."""
    import tomllib
    from importlib.metadata import PackageNotFoundError, version

    with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
        test_extra = tomllib.load(f)["project"]["optional-dependencies"]["test"]
    pins = dict(requirement.split("==") for requirement in test_extra if "==" in requirement)
    for tool in ("ruff", "mypy"):
        assert tool in pins, f"{tool} is not pinned (==) in pyproject.toml's test extra: {test_extra}"
        try:
            installed = version(tool)
        except PackageNotFoundError:
            pytest.skip(f"{tool} is not installed: pip install -e '.[test]'")
        assert installed == pins[tool], (
            f"{tool} {installed} is installed, the test extra pins {pins[tool]}: pip install -e '.[test]'"
        )


# The modules pyproject.toml's [[tool.mypy.overrides]] leaves unchecked (ignore_errors), as they were when the
# type checker came in. The list may only shrink: a module leaves it (here and there) once its findings are fixed.
NOT_YET_CHECKED = {
    "explain.generation.loop",
    "explain.generation.strategies.base",
    "explain.generation.strategies.assisted",
    "explain.text_generation",
    "explain.backends.transformers.generation",
    "explain.backends.transformers.pipeline_class",
    "explain.backends.transformers.records",
    "explain.stages.tokenizer",
    "explain.widgets.*",
}


def test_no_module_joins_the_list_the_type_checker_skips():
    import tomllib

    with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
        overrides = tomllib.load(f)["tool"]["mypy"].get("overrides", [])
    skipped = {module for override in overrides if override.get("ignore_errors") for module in override["module"]}
    assert skipped <= NOT_YET_CHECKED, (
        f"mypy skips {sorted(skipped - NOT_YET_CHECKED)} too: fix its findings instead of adding it to the list"
    )
