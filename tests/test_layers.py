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
    "node": 7,
    "cli": 8,
    "testing": 8,
    "demo": 8,
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
