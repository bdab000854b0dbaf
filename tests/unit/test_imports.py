"""The package's import graph: no circle, and every import goes down the documented layers
(``io → data → model → engine → report → api → serve, node, release → cli``), read from the source's ASTs — lazy
imports inside functions included, ``if TYPE_CHECKING:`` blocks and the root package's lazy
``medmoe.Detector`` attribute excluded."""

from __future__ import annotations

import ast
from pathlib import Path

import medmoe

SRC = Path(medmoe.__file__).resolve().parent.parent

LAYERS: tuple[tuple[str, ...], ...] = (
    ("medmoe.errors", "medmoe.atomic", "medmoe.versioned", "medmoe.output_arrays"),
    ("medmoe.io",),
    ("medmoe.tasks",),
    ("medmoe.data",),
    ("medmoe.text", "medmoe.metrics"),
    ("medmoe.model",),
    ("medmoe.trust",),
    ("medmoe.engine",),
    ("medmoe.report",),
    ("medmoe.api",),
    ("medmoe.serve", "medmoe.node", "medmoe.release"),
    ("medmoe.benchmark",),
    ("medmoe.cli",),
)
"""Lowest first; a module may import its own layer and the layers below."""


def _module(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module(p): p for p in (SRC / "medmoe").rglob("*.py")}


def _imports(name: str) -> set[str]:
    """The medmoe modules ``name`` imports, anywhere in its body."""
    tree = ast.parse(MODULES[name].read_text(encoding="utf-8"))
    skipped = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
               for n in ast.walk(node)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found |= {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in MODULES else node.module
                      for a in node.names}
    return {m for m in found if m in MODULES and m != name}


GRAPH = {name: _imports(name) for name in MODULES if name != "medmoe"}  # the root is a lazy facade


def _layer(name: str) -> int:
    return next(i for i, group in enumerate(LAYERS) if any(name == g or name.startswith(g + ".") for g in group))


def test_no_import_circle() -> None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for target in GRAPH.get(node, ()):
            assert state.get(target) != 1, " → ".join([*path, node, target])
            if target not in state:
                visit(target, [*path, node])
        state[node] = 2

    for name in GRAPH:
        if name not in state:
            visit(name, [])


def test_imports_go_down_the_layers() -> None:
    assert all(any(n == g or n.startswith(g + ".") for layer in LAYERS for g in layer) for n in GRAPH), \
        "every module belongs to a layer"
    upward = [f"{a} → {b}" for a, targets in GRAPH.items() for b in targets
              if b != "medmoe" and _layer(a) < _layer(b)]
    assert upward == []


ARCHITECTURE_MODULES = ("medmoe.model.pixel", "medmoe.model.baselines", "medmoe.model.feature.network",
                        "medmoe.model.feature.experts", "medmoe.model.feature.branch",
                        "medmoe.model.feature.adapter", "medmoe.model.feature.grow")
"""The modules that define architectures (the shared trunk and memories are building blocks, not these)."""


def test_only_the_model_package_knows_an_architecture_by_its_module() -> None:
    # the engine, trust, API and CLI reach models through the registry and the AnomalyModel contract
    # (create_model, prepare/forward_prepared/loss/fit_data/grow), never by importing one
    offenders = [f"{a} → {b}" for a, targets in GRAPH.items() if not a.startswith("medmoe.model")
                 for b in targets if any(b == m or b.startswith(m + ".") for m in ARCHITECTURE_MODULES)]
    assert offenders == []


def test_growth_is_declared_by_the_registry_and_implemented_by_the_model() -> None:
    from medmoe.model import ARCHITECTURES
    from medmoe.model.base import AnomalyModel

    for name, entry in ARCHITECTURES.items():
        model_class = entry.factory
        assert isinstance(model_class, type), name
        assert (model_class.grow is not AnomalyModel.grow) == entry.adds_tasks, name
