"""The package's shape: modules import each other one way, stay small, and keep hardware
libraries behind their one adapter (docs/design.md, "Layers")."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "src" / "bwc_dock"
MAX_LINES = 500


def _modules() -> dict[str, Path]:
    return {
        ".".join(("bwc_dock", *path.relative_to(PACKAGE).with_suffix("").parts)).removesuffix(
            ".__init__"
        ): path
        for path in PACKAGE.rglob("*.py")
    }


def _imported_names(path: Path) -> list[str]:
    """Every module name an import in the file names, lazy and TYPE_CHECKING ones too."""
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.extend(f"{node.module}.{alias.name}" for alias in node.names)
            names.append(node.module)
    return names


def _import_graph() -> dict[str, set[str]]:
    modules = _modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for imported in _imported_names(path):
            target = imported
            while target and target not in modules:
                target = target.rpartition(".")[0]
            # a module's own packages are initialised before it anyway: not an edge
            if target and target != name and not name.startswith(target + "."):
                graph[name].add(target)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root, root_children in graph.items():
        if root in index:
            continue
        work = [(root, iter(sorted(root_children)))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
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


def test_no_import_cycle_between_modules() -> None:
    """No two modules of the package import each other, directly or round about."""
    assert _cycles(_import_graph()) == []


def test_the_cycle_finder_sees_a_cycle() -> None:
    """The check above can fail: a loop of three modules is reported as one component."""
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]


def test_no_source_file_is_over_500_lines() -> None:
    """Every module stays small enough to read in one sitting."""
    sizes = {
        str(path.relative_to(PACKAGE)): len(path.read_text().splitlines())
        for path in PACKAGE.rglob("*.py")
    }
    assert {name: lines for name, lines in sizes.items() if lines > MAX_LINES} == {}


def test_hardware_libraries_stay_behind_their_adapters() -> None:
    """Only sources/udev.py imports pyudev, and only usb.py imports pyusb."""
    importers: dict[str, set[str]] = {"pyudev": set(), "usb": set()}
    for name, path in _modules().items():
        for imported in _imported_names(path):
            top = imported.split(".")[0]
            if top in importers:
                importers[top].add(name)
    assert importers == {"pyudev": {"bwc_dock.sources.udev"}, "usb": {"bwc_dock.usb"}}


# What ledger/ may import besides itself: the base layer and the storage port's values
# (docs/design.md, "Layers"). config is listed with the modules it is built from.
LEDGER_MAY_IMPORT = frozenset({
    "bwc_dock.errors",
    "bwc_dock.names",
    "bwc_dock.found",  # DockedVolume, FoundClip: what a camera hands over, as values
    "bwc_dock.config",
    "bwc_dock.config_section",
    "bwc_dock.camera_profiles",
    "bwc_dock.key_templates",
    "bwc_dock.storage.base",  # the multipart journal's values
})


def _reached_outside(graph: dict[str, set[str]], package: str) -> set[str]:
    """Every module outside ``package`` that a module of it imports, directly or through
    another."""
    reached: set[str] = set()
    frontier = [name for name in graph if name == package or name.startswith(package + ".")]
    while frontier:
        for imported in graph[frontier.pop()]:
            if imported not in reached:
                reached.add(imported)
                frontier.append(imported)
    return {name for name in reached if not name.startswith(package + ".") and name != package}


def test_the_ledger_imports_nothing_above_it() -> None:
    """ledger/ reaches only the base layer and the storage port's values, never a stage,
    a source, the scanner or a driver."""
    assert _reached_outside(_import_graph(), "bwc_dock.ledger") - LEDGER_MAY_IMPORT == set()


def test_the_reach_finder_sees_an_import_through_another_module() -> None:
    """The check above can fail: a module reached through an allowed one is reported."""
    graph = {"p.a": {"p.b", "low"}, "p.b": set(), "low": {"high"}, "high": set()}
    assert _reached_outside(graph, "p") == {"low", "high"}
