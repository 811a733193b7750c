"""The house rules of ARCHITECTURE.md, read from the package's imports: only the Airflow layer imports
Airflow, no stage package imports another, no layer imports one above it, no import cycle, and no
project import hidden inside a function. Each rule is also shown to fail on a violation planted in a
temporary copy of the package."""

from __future__ import annotations

import ast
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = "event_broker_rollout"
PACKAGE_DIR = Path(__file__).resolve().parents[2] / "plugins" / PACKAGE
AIRFLOW_LAYER = f"{PACKAGE}.airflow"
STAGES = ("preflight", "infrastructure", "security", "schemas", "integration", "compliance")
SHARED_LAYERS = ("evidence", "config", "hosts", "cluster", "resources")
# Bottom to top: a module imports only from its own layer and the layers below it. The stages share one
# rank (and may not import each other); ``paths`` and ``orchestrator`` sit below everything.
LAYER_RANK = {
    **{layer: rank for rank, layer in enumerate(SHARED_LAYERS)},
    **{stage: len(SHARED_LAYERS) for stage in STAGES},
    "rollout": len(SHARED_LAYERS),
    "airflow": len(SHARED_LAYERS) + 1,
}


@dataclass(frozen=True)
class Import:
    importer: str
    imported: str
    line: int
    in_function: bool


def module_name(root: Path, path: Path) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(root: Path) -> Iterator[Import]:
    """Every import of every module under ``root`` (a package folder), with where it is."""
    for path in sorted(root.rglob("*.py")):
        importer = module_name(root, path)
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                # ``from pkg import module`` imports the module; ``from module import name`` the module
                names = [f"{node.module}.{alias.name}" for alias in node.names] + [node.module]
            else:
                continue
            for name in names:
                yield Import(importer, name, node.lineno, node.col_offset > 0)


def project_graph(root: Path) -> dict[str, set[str]]:
    modules = {module_name(root, path) for path in root.rglob("*.py")}
    graph: dict[str, set[str]] = {module: set() for module in modules}
    for found in imports_of(root):
        if found.imported in modules and found.imported != found.importer:
            graph[found.importer].add(found.imported)
    return graph


def airflow_outside_its_layer(root: Path) -> list[str]:
    return sorted(
        f"{i.importer}:{i.line} imports {i.imported}"
        for i in imports_of(root)
        if (i.imported == "airflow" or i.imported.startswith("airflow."))
        and not (i.importer == AIRFLOW_LAYER or i.importer.startswith(AIRFLOW_LAYER + "."))
    )


def top_package(module: str) -> str | None:
    """The layer or stage a module belongs to (``paths`` and ``orchestrator`` are modules of their own)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def stage_crossings(root: Path) -> list[str]:
    return sorted(
        f"{importer} imports {imported}"
        for importer, imported_set in project_graph(root).items()
        for imported in imported_set
        if top_package(importer) in STAGES
        and top_package(imported) in STAGES
        and top_package(importer) != top_package(imported)
    )


def imports_reaching_up(root: Path) -> list[str]:
    ranks = {module: LAYER_RANK.get(top_package(module) or "", -1) for module in project_graph(root)}
    return sorted(
        f"{importer} imports {imported}"
        for importer, imported_set in project_graph(root).items()
        for imported in imported_set
        if ranks[imported] > ranks[importer]
    )


def cycles(root: Path) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    graph = project_graph(root)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for imported in sorted(graph[module]):
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in on_stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return found


def hidden_project_imports(root: Path) -> list[str]:
    return sorted(
        f"{i.importer}:{i.line} imports {i.imported} inside a function"
        for i in imports_of(root)
        if i.in_function and i.imported.startswith(PACKAGE + ".")
    )


RULES = {
    "airflow": airflow_outside_its_layer,
    "stages": stage_crossings,
    "layers": imports_reaching_up,
    "cycles": cycles,
    "hidden": hidden_project_imports,
}


@pytest.mark.parametrize("rule", sorted(RULES))
def test_the_package_keeps_the_rule(rule):
    assert RULES[rule](PACKAGE_DIR) == []


PLANTED = {
    # rule: (module file, line appended to it)
    "airflow": ("config/environment.py", "from airflow.sdk import Variable\n"),
    "stages": ("schemas/stage.py", "from event_broker_rollout.security import canary\n"),
    "layers": ("hosts/fleet.py", "from event_broker_rollout.cluster import health\n"),
    "cycles": ("config/types.py", "from event_broker_rollout.config import environment\n"),
    "hidden": ("cluster/health.py", "def later():\n    from event_broker_rollout.hosts import shell\n"),
}


@pytest.mark.parametrize("rule", sorted(PLANTED))
def test_a_planted_violation_is_caught(rule, tmp_path):
    copy = tmp_path / PACKAGE
    shutil.copytree(PACKAGE_DIR, copy, ignore=shutil.ignore_patterns("__pycache__"))
    relative, planted = PLANTED[rule]
    with (copy / relative).open("a") as module:
        module.write("\n" + planted)
    assert RULES[rule](copy), f"{rule}: the planted import in {relative} went unnoticed"
    assert RULES[rule](PACKAGE_DIR) == []  # the real package is unchanged


def test_the_layers_are_folders():
    """The layers a newcomer sees in the tree are the ones these rules name."""
    folders = {p.name for p in PACKAGE_DIR.iterdir() if (p / "__init__.py").is_file()}
    assert folders == {*STAGES, *SHARED_LAYERS, "rollout", "airflow"}
