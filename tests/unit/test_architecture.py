"""The engine's layout holds: import layers without cycles, file I/O in ``_fs`` only, a line cap.

Strategy
- Every module of the package is parsed (``ast``), and every relative or ``segmentlog``
  import counts, including imports inside functions: a lazy import is still a dependency.
- The engine's modules sit in layers (``LAYERS``, bottom-up). A module imports only modules
  of lower layers, so an append travels strictly downward (facade -> run -> segment ->
  format/_fs) and no cycle can form; the modules of one layer never import each other. A
  module of the package that is not in a layer must be listed in ``ABOVE`` (the tools built
  on the engine) or the test fails, so a new module has to be placed.
- Only ``_fs.py`` may call ``os``/``shutil`` for file I/O, ``open()`` or import ``fcntl`` and
  ``mmap``. The tools above the engine (CLI, bench, HTTP, PostgreSQL) read user files,
  measure raw I/O or serve sockets, and are not held to it.
- No module of the package passes ``MAX_LINES``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "segmentlog"

#: The engine, bottom-up. A module imports only from layers below its own.
LAYERS: list[set[str]] = [
    {"errors", "events", "_progress", "_table", "_native"},
    {"_fs", "store", "format", "durability"},
    {"frames", "schema"},
    {"options", "index", "layout", "follow", "retention", "handles", "scan", "prepare", "memory"},
    {"segment", "repair", "statefile"},
    {"recovery", "keys", "info"},
    {"shared"},
    {"reader", "runfiles", "maintenance", "context"},
    {"run"},
    {"registry"},
    {"log"},
    {"aio", "__init__"},
]

#: Built on the engine, each free to use it: not layered, but they must not be imported by it.
ABOVE = {"__main__", "_build", "cli", "bench", "http", "postgres"}

#: The cap on a module's length ("about 400 lines").
MAX_LINES = 425

#: File-system calls that belong to ``_fs.py`` alone.
OS_IO = {
    "open", "read", "write", "pread", "pwrite", "close", "fsync", "fdatasync", "ftruncate",
    "truncate", "unlink", "remove", "rename", "replace", "mkdir", "makedirs", "rmdir",
    "removedirs", "listdir", "scandir", "stat", "fstat", "lstat", "utime", "posix_fallocate",
    "fallocate", "link", "symlink", "chmod", "chown",
}  # fmt: skip
OS_PATH_IO = {"exists", "lexists", "isdir", "isfile", "getsize", "getmtime"}


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE).with_suffix("")
    return rel.parts[0]


def _sources() -> dict[Path, ast.Module]:
    return {p: ast.parse(p.read_text(), str(p)) for p in sorted(PACKAGE.rglob("*.py"))}


SOURCES = _sources()
TOP = {_module_name(p): tree for p, tree in SOURCES.items() if p.parent == PACKAGE}


def _imports(path: Path, tree: ast.Module) -> set[str]:
    """The package's top-level modules (or subpackages) a module imports, at any depth."""
    found: set[str] = set()
    package_parts = path.relative_to(PACKAGE).parent.parts
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(package_parts[: len(package_parts) - (node.level - 1)])
                target = base + (node.module.split(".") if node.module else [])
                if target:
                    found.add(target[0])
                else:  # ``from . import x``
                    found.update(a.name.split(".")[0] for a in node.names)
            elif node.module and node.module.split(".")[0] == "segmentlog":
                parts = node.module.split(".")
                if len(parts) > 1:
                    found.add(parts[1])
                else:
                    found.update(a.name for a in node.names)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "segmentlog" and len(parts) > 1:
                    found.add(parts[1])
    found.discard(_module_name(path))
    found.discard("__version__")
    return found


def _layer_of(name: str) -> int:
    for i, layer in enumerate(LAYERS):
        if name in layer:
            return i
    raise KeyError(name)


def test_every_module_of_the_package_is_placed() -> None:
    names = {_module_name(p) for p in SOURCES}
    layered = set().union(*LAYERS)
    assert names - layered - ABOVE == set(), "place the new module in LAYERS or ABOVE"
    assert not layered & ABOVE


@pytest.mark.parametrize("name", sorted(set().union(*LAYERS) & set(TOP)))
def test_an_engine_module_imports_only_lower_layers(name: str) -> None:
    path = PACKAGE / f"{name}.py"
    layer = _layer_of(name)
    for dep in sorted(_imports(path, TOP[name])):
        assert dep not in ABOVE, f"{name} imports {dep}, which is built on the engine"
        assert _layer_of(dep) < layer, (
            f"{name} (layer {layer}) imports {dep} (layer {_layer_of(dep)}): imports must go "
            "strictly downward"
        )


def test_the_whole_package_has_no_import_cycle() -> None:
    graph: dict[str, set[str]] = {}
    for path, tree in SOURCES.items():
        graph.setdefault(_module_name(path), set()).update(_imports(path, tree))
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for dep in sorted(graph.get(node, ())):
            if dep == node:
                continue
            if state.get(dep) == 1:
                cycle = [*trail[trail.index(dep) :], dep] if dep in trail else [node, dep]
                raise AssertionError(f"import cycle: {' -> '.join(cycle)}")
            if dep not in state:
                visit(dep, [*trail, dep])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])


def _file_io_calls(tree: ast.Module) -> list[str]:
    calls: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            module = node.module if isinstance(node, ast.ImportFrom) else None
            for mod in [*names, module or ""]:
                if mod.split(".")[0] in ("fcntl", "mmap", "shutil"):
                    calls.append(f"import {mod}")
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if isinstance(func, ast.Name) and func.id == "open":
            calls.append("open()")
        elif isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
            if func.value.id == "os" and func.attr in OS_IO:
                calls.append(f"os.{func.attr}()")
        elif (
            isinstance(func, ast.Attribute)
            and isinstance(func.value, ast.Attribute)
            and isinstance(func.value.value, ast.Name)
            and func.value.value.id == "os"
            and func.value.attr == "path"
            and func.attr in OS_PATH_IO
        ):
            calls.append(f"os.path.{func.attr}()")
    return calls


@pytest.mark.parametrize("name", sorted((set().union(*LAYERS) - {"_fs"}) & set(TOP)))
def test_only_the_file_system_layer_touches_files(name: str) -> None:
    assert _file_io_calls(TOP[name]) == [], f"{name} does file I/O; route it through _fs"


def test_the_file_system_layer_is_where_file_io_happens() -> None:
    calls = _file_io_calls(TOP["_fs"])  # the check above would catch it elsewhere: prove so
    assert "os.pwrite()" in calls and "import fcntl" in calls


@pytest.mark.parametrize("path", sorted(SOURCES), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_every_module_stays_under_the_line_cap(path: Path) -> None:
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_LINES, f"{path.name} has {lines} lines; split it by concern"
