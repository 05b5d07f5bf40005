"""explain's layers, and no import circles, read from the source with an ast walk (no import runs).

Every `import` and `from ... import` counts, the ones inside functions too: a lazy import still ties two modules
together. Only an import under `if TYPE_CHECKING:` does not (it never runs: a name for annotations). A module in a
layer imports only modules of its own layer or of the layers below it:

    0  errors, utils, inputs            the base: no module of explain above it
    1  events, trace, models            the event schema and the model files import nothing above them
    2  stages, formats, quantization, adapters, device_plan     the loading stages, above the schema and models
    3  generation, inside               generation, above the stages
    4  pipeline, text_generation, features, console, backends (the choice of backend, backends/__init__.py)
    5  backends.transformers, widgets, __main__, explain/__init__.py            on top

and, on top of that:
    the event schema (events, trace) imports no model: it does not depend on the model registry
    widgets import no backend, no generation internals (only explain.generation's public names), no model registry
"""

from __future__ import annotations

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGES = ("explain", "bench")

LAYERS = {  # module prefix -> layer; the longest prefix wins
    "explain.errors": 0,
    "explain.utils": 0,
    "explain.inputs": 0,
    "explain.events": 1,
    "explain.trace": 1,
    "explain.models": 1,
    "explain.stages": 2,
    "explain.formats": 2,
    "explain.quantization": 2,
    "explain.adapters": 2,
    "explain.device_plan": 2,
    "explain.generation": 3,
    "explain.inside": 3,
    "explain.pipeline": 4,
    "explain.text_generation": 4,
    "explain.features": 4,
    "explain.console": 4,
    "explain.backends": 4,
    "explain.backends.transformers": 5,
    "explain.widgets": 5,
    "explain.__main__": 5,
    "explain": 5,
}
# the one import upward, on purpose: the choice of backend loads the transformers backend when it is asked for
ALLOWED_UPWARD = {("explain.backends", "explain.backends.transformers")}


def forbidden_for_schema(imported: str) -> str | None:
    if imported == "explain.models" or imported.startswith("explain.models."):
        return "the event schema imports no model"
    return None


def forbidden_for_widgets(imported: str) -> str | None:
    if imported.startswith("explain.backends"):
        return "widgets import no backend"
    if imported.startswith("explain.generation."):
        return "widgets import no generation internals (only explain.generation's public names)"
    if imported == "explain.models" or imported.startswith("explain.models."):
        return "widgets import no model registry"
    return None


def modules(root: pathlib.Path = ROOT, packages=PACKAGES) -> dict[str, tuple[pathlib.Path, bool]]:
    """module name -> (file, is a package's __init__)"""
    found = {}
    for package in packages:
        for path in (root / package).rglob("*.py"):
            parts = list(path.relative_to(root).with_suffix("").parts)
            is_package = parts[-1] == "__init__"
            found[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    return found


def import_graph(root: pathlib.Path = ROOT, packages=PACKAGES) -> dict[str, dict[str, int]]:
    """module -> {module it imports: the line of the first such import}, for the modules of `packages` only.
    `from a import b` counts as importing a.b where a.b is a module, else as importing a."""
    known = modules(root, packages)

    def resolve(name: str) -> str | None:
        while name and name not in known:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, dict[str, int]] = {}
    for name, (path, is_package) in known.items():
        package = name if is_package else name.rpartition(".")[0]
        imports = graph.setdefault(name, {})
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):  # what runs only for a type checker is no import
            if isinstance(node, ast.If) and ast.unparse(node.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING"):
                node.body = []
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    module = ".".join(base + ([node.module] if node.module else []))
                else:
                    module = node.module or ""  # an absolute import always names its module
                targets = [f"{module}.{alias.name}" for alias in node.names]
            else:
                continue
            for target in targets:
                imported = resolve(target)
                # a module's own packages run before it anyway: importing them is no edge
                if imported and imported != name and not name.startswith(imported + "."):
                    imports.setdefault(imported, node.lineno)
    return graph


def circles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm, iterative)."""
    index, low, on_stack, stack, found, counter = {}, {}, set(), [], [], 0
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(graph[start]))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(graph.get(child, {}))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def layer_of(module: str) -> int | None:
    prefixes = [p for p in LAYERS if module == p or module.startswith(p + ".")]
    return LAYERS[max(prefixes, key=len)] if prefixes else None


def broken_rules(graph: dict[str, dict[str, int]]) -> list[str]:
    broken = []
    for module, imports in sorted(graph.items()):
        here = layer_of(module)
        for imported, line in sorted(imports.items()):
            there = layer_of(imported)
            if here is None or there is None:
                continue  # bench: only its circles are checked
            upward = there > here and not any(module == a and imported.startswith(b) for a, b in ALLOWED_UPWARD)
            if upward:
                broken.append(f"{module}:{line} imports {imported}: layer {here} imports layer {there}")
            if module.startswith("explain.widgets") and (why := forbidden_for_widgets(imported)):
                broken.append(f"{module}:{line} imports {imported}: {why}")
            if module.startswith(("explain.events", "explain.trace")) and (why := forbidden_for_schema(imported)):
                broken.append(f"{module}:{line} imports {imported}: {why}")
    return broken


def test_every_module_has_a_layer():
    assert [m for m in modules(packages=("explain",)) if layer_of(m) is None] == []


def test_no_import_circles():
    found = circles(import_graph())
    assert found == [], "import circles:\n" + "\n".join(" -> ".join(c) for c in found)


def test_no_layer_rule_is_broken():
    broken = broken_rules(import_graph())
    assert broken == [], "\n".join(broken)


def test_the_checks_see_a_circle_and_an_upward_import(tmp_path):
    """The walk finds what it must: a circle through a lazy import, and the schema importing a model."""
    (tmp_path / "explain" / "events").mkdir(parents=True)
    (tmp_path / "explain" / "models").mkdir()
    for package in ("explain", "explain/events", "explain/models"):
        (tmp_path / package / "__init__.py").write_text("")
    (tmp_path / "explain" / "events" / "kinds.py").write_text("from ..models import llama\n")
    (tmp_path / "explain" / "models" / "llama.py").write_text("def f():\n    from ..events import kinds\n")
    graph = import_graph(tmp_path, ("explain",))
    assert circles(graph) == [["explain.events.kinds", "explain.models.llama"]]
    assert broken_rules(graph) == [
        "explain.events.kinds:1 imports explain.models.llama: the event schema imports no model"
    ]
    (tmp_path / "explain" / "events" / "kinds.py").write_text("")
    (tmp_path / "explain" / "models" / "llama.py").write_text("def f():\n    from ..pipeline import pipeline\n")
    (tmp_path / "explain" / "pipeline.py").write_text("")
    assert broken_rules(import_graph(tmp_path, ("explain",))) == [
        "explain.models.llama:2 imports explain.pipeline: layer 1 imports layer 4"
    ]
