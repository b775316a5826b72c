"""The import layering of DESIGN.md section 3 holds for every module in src/.

ring -> net -> mpc -> ops -> data -> query/governance -> node -> cli: a module
may import its own layer and the layers before it, never a later one.
``errors`` is below everything; ``testing``, ``demo`` and the package root are
at the top with ``cli``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SOURCE = Path(__file__).resolve().parents[1] / "src" / "concilium"

RANK = {
    "errors": 0,
    "ring": 1,
    "net": 2,
    "mpc": 3,
    "ops": 4,
    "data": 5,
    "query": 6,
    "governance": 6,
    "evaluation": 6,
    "node": 7,
    "cli": 8,
    "testing": 8,
    "demo": 8,
    "demo_banks": 8,
    "demo_four": 8,
    "cheating_node": 8,
    "simulate": 8,
    "__init__": 8,
}


def _layer(parts: tuple[str, ...]) -> str:
    """Layer of a module path inside the package, e.g. ('mpc', 'rep3') -> 'mpc'."""
    return parts[0] if parts else "__init__"


def _module_parts(path: Path) -> tuple[str, ...]:
    relative = path.relative_to(SOURCE).with_suffix("")
    parts = tuple(relative.parts)
    return parts[:-1] if parts[-1] == "__init__" else parts


def _imported_layers(path: Path) -> list[tuple[int, str]]:
    package = _module_parts(path) if path.name == "__init__.py" else _module_parts(path)[:-1]
    return _layers_of_source(path.read_text(), package)


def _layers_of_source(source: str, package: tuple[str, ...]) -> list[tuple[int, str]]:
    """Layers imported by ``source``, a module of sub-package ``package``."""
    tree = ast.parse(source)
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                name = alias.name.split(".")
                if name[0] == "concilium":
                    found.append((node.lineno, _layer(tuple(name[1:]))))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)] if node.level > 1 else package
                target = base + tuple((node.module or "").split(".")) if node.module else base
            elif node.module and node.module.split(".")[0] == "concilium":
                target = tuple(node.module.split(".")[1:])
            else:
                continue
            if target:
                found.append((node.lineno, _layer(target)))
            else:  # "from concilium import x": layer of x
                found.extend((node.lineno, _layer((alias.name,))) for alias in node.names)
    return found


MODULES = sorted(SOURCE.rglob("*.py"))


def test_every_module_belongs_to_a_known_layer() -> None:
    unknown = {_layer(_module_parts(p)) for p in MODULES} - set(RANK)
    assert not unknown, f"add these to RANK (and DESIGN.md): {unknown}"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(SOURCE)))
def test_imports_only_flow_down_the_layers(path: Path) -> None:
    own = _layer(_module_parts(path))
    bad = [(line, layer) for line, layer in _imported_layers(path)
           if layer in RANK and RANK[layer] > RANK[own]]
    assert not bad, f"{path.name} ({own}) imports later layers: {bad}"


def test_the_checker_catches_an_upward_import() -> None:
    source = "from concilium.mpc.rep3 import Rep3\nfrom ..data import SecretArray\n"
    layers = [layer for _, layer in _layers_of_source(source, ("ring",))]
    assert layers == ["mpc", "data"]
    assert all(RANK[layer] > RANK["ring"] for layer in layers)


def _module_name(path: Path) -> str:
    return ".".join(("concilium", *_module_parts(path))) if _module_parts(path) else "concilium"


def _module_graph(sources: dict[str, str]) -> dict[str, set[str]]:
    """Which modules each module imports (anywhere in it: top level, functions,
    TYPE_CHECKING blocks); importing a submodule is an edge to it, not to its
    package, and a package's own submodules do not depend on it."""
    graph: dict[str, set[str]] = {name: set() for name in sources}
    for name, source in sources.items():
        for node in ast.walk(ast.parse(source)):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                targets = [f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in
                           sources else node.module for alias in node.names]
            graph[name] |= {t for t in targets if t in sources and t != name
                            and not name.startswith(t + ".")}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for target in sorted(graph[module]):
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            component = []
            while True:
                top = stack.pop()
                component.append(top)
                if top == module:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return found


def test_no_module_imports_itself_through_others() -> None:
    sources = {_module_name(path): path.read_text() for path in MODULES}
    assert _cycles(_module_graph(sources)) == []


def test_the_cycle_checker_finds_a_circle_even_inside_functions() -> None:
    sources = {"concilium.a": "from concilium.b import x\n",
               "concilium.b": "def f():\n    from concilium.c import y\n",
               "concilium.c": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                              "    from concilium.a import z\n",
               "concilium.d": "import concilium.a\n"}
    assert _cycles(_module_graph(sources)) == [["concilium.a", "concilium.b", "concilium.c"]]
