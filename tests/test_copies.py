"""Marked copies between the model files stay copies (transformers' utils/check_copies.py, for explain/models/).

A model file keeps every piece it needs, so it reads top to bottom; a piece that is the same as Llama's carries,
on the line above its `def`, `class` (or decorator) or `NAME =`, the marker

    # Copied from explain.models.llama.LlamaRMSNorm with Llama->Qwen2

naming the source (a function, a class, a class's method, or a module-level assignment in llama.py) and the
renames to apply to the source's text (`A->B`, several separated by commas). The copy must then equal the source
with the renames applied, line for line. `python tests/test_copies.py --fix` rewrites every drifted copy from its
source (then read the diff: a copy that had to differ should lose its marker instead).
"""

from __future__ import annotations

import ast
import difflib
import os
import re
import sys
from dataclasses import dataclass

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = os.path.join(REPO, "explain", "models")
MARKER = re.compile(
    r"^(?P<indent>\s*)# Copied from explain\.models\.(?P<module>\w+)\.(?P<name>[\w.]+)"
    r"(?: with (?P<renames>.+?))?\s*$"
)


@dataclass
class Copy:
    path: str  # the file holding the copy
    line: int  # the marker's line (1-based)
    module: str  # the source's module in explain.models
    name: str  # dotted name of the source in its module: "LlamaRMSNorm", "LlamaAttention.forward", "ROPE_TYPES"
    renames: list[tuple[str, str]]
    first: int  # the copy's lines, first..last (1-based, inclusive)
    last: int


def parse_renames(text: str | None) -> list[tuple[str, str]]:
    if not text:
        return []
    pairs = []
    for part in text.split(","):
        old, arrow, new = part.strip().partition("->")
        if not arrow or not old:
            raise ValueError(f"bad rename {part.strip()!r}: write it as Old->New")
        pairs.append((old, new))
    return pairs


def _definitions(tree: ast.Module) -> dict[str, ast.stmt]:
    """Dotted name -> node, for module-level functions, classes and single-name assignments, and class methods."""
    out: dict[str, ast.stmt] = {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            out[node.name] = node
            if isinstance(node, ast.ClassDef):
                for item in node.body:
                    if isinstance(item, ast.FunctionDef):
                        out[f"{node.name}.{item.name}"] = item
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if len(targets) == 1 and isinstance(targets[0], ast.Name):
                out[targets[0].id] = node
    return out


def _span(node: ast.stmt) -> tuple[int, int]:
    """First and last line of a definition, decorators included."""
    first = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
    return first, node.end_lineno or node.lineno  # ast.parse sets end_lineno; the type allows None


def find_copies(path: str) -> list[Copy]:
    with open(path, encoding="utf-8") as f:
        text = f.read()
    lines = text.splitlines()
    starts = {}
    for node in _definitions(ast.parse(text)).values():
        first, last = _span(node)
        starts[first] = (first, last)
    copies = []
    for number, line in enumerate(lines, start=1):
        match = MARKER.match(line)
        if match is None:
            continue
        if number + 1 not in starts:
            raise ValueError(
                f"{path}:{number}: a '# Copied from' marker must sit on the line right above the "
                "def, class, decorator or assignment it marks"
            )
        first, last = starts[number + 1]
        copies.append(Copy(path, number, match["module"], match["name"], parse_renames(match["renames"]), first, last))
    return copies


def source_text(module: str, name: str) -> str:
    path = os.path.join(MODELS, f"{module}.py")
    with open(path, encoding="utf-8") as f:
        text = f.read()
    node = _definitions(ast.parse(text)).get(name)
    if node is None:
        raise ValueError(f"explain.models.{module} has no {name} to copy from")
    first, last = _span(node)
    return "\n".join(text.splitlines()[first - 1 : last])


def expected_text(copy: Copy) -> str:
    text = source_text(copy.module, copy.name)
    for old, new in copy.renames:
        text = text.replace(old, new)
    return text


def copy_text(copy: Copy) -> str:
    with open(copy.path, encoding="utf-8") as f:
        return "\n".join(f.read().splitlines()[copy.first - 1 : copy.last])


def drifted(path: str) -> list[str]:
    """A message with a diff for every marked copy in `path` that differs from its source; [] if none."""
    problems = []
    for copy in find_copies(path):
        expected, got = expected_text(copy), copy_text(copy)
        if expected != got:
            diff = "\n".join(
                difflib.unified_diff(
                    expected.splitlines(), got.splitlines(), "source with renames", "copy", lineterm="", n=1
                )
            )
            problems.append(
                f"{os.path.relpath(path, REPO)}:{copy.line}: copy of explain.models.{copy.module}."
                f"{copy.name} has drifted:\n{diff}"
            )
    return problems


def fix(path: str) -> int:
    """Rewrite every drifted copy in `path` from its source; returns how many were rewritten."""
    count = 0
    for copy in reversed(find_copies(path)):  # from the bottom, so earlier line numbers stay valid
        expected = expected_text(copy)
        if expected == copy_text(copy):
            continue
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
        lines[copy.first - 1 : copy.last] = expected.splitlines()
        with open(path, "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
        count += 1
    return count


def model_files() -> list[str]:
    return sorted(
        os.path.join(MODELS, name) for name in os.listdir(MODELS) if name.endswith(".py") and name != "__init__.py"
    )


# -- the tests -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", model_files(), ids=os.path.basename)
def test_marked_copies_equal_their_source(path):
    problems = drifted(path)
    assert not problems, "\n\n".join(problems) + "\n\n(python tests/test_copies.py --fix rewrites them)"


# what each file shares with llama.py (names in llama.py): dropping a marker, and with it the check, fails here
SHARED = {
    "ROPE_TYPES",
    "standardize_rope_parameters",
    "LlamaConfig.from_dict",
    "LlamaRMSNorm",
    "rope_inverse_frequencies",
    "_yarn_mscale",
    "LlamaRotaryEmbedding",
    "rotate_half",
    "apply_rotary",
    "repeat_kv",
    "causal_mask",
    "attend",
    "LlamaMLP.forward",
    "LlamaDecoderLayer",
    "LlamaModel",
    "CausalLMOutput",
    "LlamaForCausalLM",
}


@pytest.mark.parametrize(
    "module, also",
    [
        ("qwen2", {"LlamaAttention.forward"}),  # its attention differs from Llama's in __init__ only (the biases)
        ("qwen3", set()),  # its attention normalises q and k; its MLP, like Qwen2's, has no bias
        ("smollm3", {"LlamaMLP"}),  # its attention skips the rotation in NoPE layers; its MLP is Llama's
    ],
)
def test_llama_family_files_mark_every_shared_piece(module, also):
    marked = {copy.name for copy in find_copies(os.path.join(MODELS, f"{module}.py"))}
    assert SHARED | also <= marked | ({"LlamaMLP.forward"} if "LlamaMLP" in marked else set()), (
        f"{module}.py does not mark {sorted(SHARED | also - marked)}"
    )


def test_gpt2_marks_what_it_shares():
    marked = {copy.name for copy in find_copies(os.path.join(MODELS, "gpt2.py"))}
    assert {"causal_mask", "CausalLMOutput"} <= marked


DRIFT_SOURCE = """
# Copied from explain.models.llama.LlamaRMSNorm with Llama->Toy
class ToyRMSNorm(nn.Module):
    def __init__(self, hidden_size: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.eps = eps

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        dtype = hidden_states.dtype
        hidden_states = hidden_states.to(torch.float32)  # normalise in fp32, as transformers does
        variance = hidden_states.pow(2).mean(-1, keepdim=True)
        hidden_states = hidden_states * torch.rsqrt(variance + self.eps)
        return self.weight * hidden_states.to(dtype)


class ToyAttention:
    # Copied from explain.models.llama.repeat_kv
    def repeat_kv(self):
        pass
"""


def test_a_faithful_copy_with_renames_passes(tmp_path):
    path = tmp_path / "toy.py"
    path.write_text(DRIFT_SOURCE.split("\n\nclass ToyAttention")[0] + "\n")
    assert [c.name for c in find_copies(str(path))] == ["LlamaRMSNorm"]
    assert drifted(str(path)) == []


def test_a_drifted_copy_fails_with_a_diff(tmp_path):
    path = tmp_path / "toy.py"
    path.write_text(DRIFT_SOURCE.replace("variance + self.eps", "variance + 1e-6"))  # one edit in the copy
    problems = drifted(str(path))
    assert len(problems) == 2
    assert "copy of explain.models.llama.LlamaRMSNorm has drifted" in problems[0]
    assert "-        hidden_states = hidden_states * torch.rsqrt(variance + self.eps)" in problems[0]
    assert "+        hidden_states = hidden_states * torch.rsqrt(variance + 1e-6)" in problems[0]
    assert "explain.models.llama.repeat_kv has drifted" in problems[1]  # a method that is no copy at all
    # a rename that is missing from the marker is drift too
    path.write_text(DRIFT_SOURCE.split("\n\nclass ToyAttention")[0].replace(" with Llama->Toy", "") + "\n")
    assert len(drifted(str(path))) == 1


def test_fix_rewrites_a_drifted_copy_from_its_source(tmp_path):
    path = tmp_path / "toy.py"
    path.write_text(DRIFT_SOURCE.split("\n\nclass ToyAttention")[0].replace("variance + self.eps", "variance") + "\n")
    assert fix(str(path)) == 1 and drifted(str(path)) == []
    assert "torch.rsqrt(variance + self.eps)" in path.read_text()


def test_a_marker_must_name_something_that_exists_and_sit_on_its_definition(tmp_path):
    path = tmp_path / "toy.py"
    path.write_text("# Copied from explain.models.llama.NoSuchThing\ndef no_such_thing():\n    pass\n")
    with pytest.raises(ValueError, match="has no NoSuchThing"):
        drifted(str(path))
    path.write_text("# Copied from explain.models.llama.rotate_half\n\ndef rotate_half():\n    pass\n")
    with pytest.raises(ValueError, match="right above"):
        find_copies(str(path))
    with pytest.raises(ValueError, match="Old->New"):
        parse_renames("Llama=>Qwen2")


if __name__ == "__main__":  # python tests/test_copies.py [--fix]
    paths = model_files()
    if "--fix" in sys.argv[1:]:
        for path in paths:
            if count := fix(path):
                print(f"{os.path.relpath(path, REPO)}: rewrote {count} cop{'y' if count == 1 else 'ies'}")
    found = [problem for path in paths for problem in drifted(path)]
    print("\n\n".join(found) or "every marked copy equals its source")
    sys.exit(1 if found else 0)
