"""The package's import graph, read from the source with `ast`: no import cycle between
bench modules, and the environments (bench/envs/) never reach the runner, the statistics
or the report.

Every import counts, including one inside a function (a lazy import still ties the two
modules together: it only moves the failure from import time to call time). Importing
`bench.x.y` is an edge to `bench.x.y` only: the parent packages Python initialises on
the way are not edges (else every module of a package that imports its own modules
would be in a cycle with it).
"""

import ast
from pathlib import Path

import pytest

import bench

PACKAGE = Path(bench.__file__).parent
# bench/envs/ must not import these (directly or through another module)
ENVS_MUST_NOT_REACH = ("bench.runner", "bench.stats", "bench.analysis", "bench.report")


def module_names(root: Path) -> dict[str, Path]:
    """{dotted module name: file} for every module of the package at `root`."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def imported(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package's modules that module `name` (at `path`) imports, anywhere in it."""
    top = name.split(".")[0]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from . import x, from ..y import z
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([node.module] if node.module else []))
            # `from bench import stats` imports the module bench.stats; `from bench.store
            # import COLUMNS` imports bench.store
            targets = [
                f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names
            ]
        else:
            continue
        for target in targets:
            if target.split(".")[0] != top:
                continue
            while target not in modules:  # `import bench.x.attr`-like forms: the module
                target = target.rpartition(".")[0]
            out.add(target)
    out.discard(name)
    return out


def import_graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    modules = module_names(root)
    return {name: imported(name, path, modules) for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as [a, b, ..., a] (depth-first, in sorted order), or None."""
    done: set[str] = set()
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt in path:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in done and (cycle := visit(nxt)):
                return cycle
        path.pop()
        done.add(node)
        return None

    for node in sorted(graph):
        if node not in done and (cycle := visit(node)):
            return cycle
    return None


def reachable(graph: dict[str, set[str]], start: str) -> dict[str, str]:
    """{module reachable from start: the module that imports it on the way}."""
    via: dict[str, str] = {}
    todo = [start]
    while todo:
        node = todo.pop()
        for nxt in graph.get(node, ()):
            if nxt not in via and nxt != start:
                via[nxt] = node
                todo.append(nxt)
    return via


def chain(via: dict[str, str], start: str, end: str) -> str:
    out = [end]
    while out[-1] != start:
        out.append(via[out[-1]])
    return " -> ".join(reversed(out))


# -- the finder itself, on small graphs --------------------------------------------------
def test_find_cycle_on_small_graphs():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set(), "d": {"a", "c"}}) is None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"x": {"y"}, "y": {"z"}, "z": {"y"}}) == ["y", "z", "y"]
    assert find_cycle({"a": {"a"}}) == ["a", "a"]
    assert find_cycle({}) is None


def test_reader_on_a_small_package(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    files = {
        "__init__.py": "",
        "a.py": "import os\nfrom pkg import b\n",
        "b.py": "def f():\n    from .sub import c  # lazy\n    return c\n",
        "sub/__init__.py": "from .c import THING\n",
        "sub/c.py": "from ..a import x\nimport pkg.b\nfrom pkg.sub.c import THING as T\n",
    }
    for name, text in files.items():
        (pkg / name).write_text(text)
    graph = import_graph(pkg)
    assert graph == {
        "pkg": set(),
        "pkg.a": {"pkg.b"},
        "pkg.b": {"pkg.sub.c"},
        "pkg.sub": {"pkg.sub.c"},
        "pkg.sub.c": {"pkg.a", "pkg.b"},
    }
    assert find_cycle(graph) == ["pkg.a", "pkg.b", "pkg.sub.c", "pkg.a"]
    via = reachable(graph, "pkg.sub")
    assert chain(via, "pkg.sub", "pkg.a") == "pkg.sub -> pkg.sub.c -> pkg.a"


# -- the package -------------------------------------------------------------------------
def test_the_graph_is_read():
    graph = import_graph()
    assert "bench.store" in graph["bench.runner"]
    assert "bench.envs" in graph["bench.matrix"]  # an import inside a function
    assert "bench.stats" in graph["bench.report.sections.probes"]


def test_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


@pytest.mark.parametrize(
    "env_module", [m for m in sorted(import_graph()) if m.startswith("bench.envs")]
)
def test_envs_do_not_reach_the_runner_stats_or_report(env_module):
    via = reachable(import_graph(), env_module)
    bad = [m for m in via if any(m == f or m.startswith(f + ".") for f in ENVS_MUST_NOT_REACH)]
    assert not bad, "; ".join(chain(via, env_module, m) for m in sorted(bad))


# -- the run strategies (bench/families/) --------------------------------------------------
def family_modules() -> set[str]:
    """The modules that hold a family of the registry (its helpers are not families)."""
    from bench.families import REGISTRY

    return {type(f).__module__ for f in REGISTRY.values()}


def test_the_family_modules_are_read():
    assert {"bench.families.density", "bench.families.net"} <= family_modules()
    assert "bench.families.common" in import_graph()["bench.families.userserver"]


def test_envs_never_import_a_family():
    graph = import_graph()
    for env_module in [m for m in sorted(graph) if m.startswith("bench.envs")]:
        via = reachable(graph, env_module)
        bad = [m for m in via if m == "bench.families" or m.startswith("bench.families.")]
        assert not bad, "; ".join(chain(via, env_module, m) for m in sorted(bad))


def test_no_family_imports_another_family():
    """Directly or through a helper: what families share is in the helper modules."""
    graph = import_graph()
    for family in sorted(family_modules()):
        via = reachable(graph, family)
        bad = sorted((family_modules() - {family}) & set(via))
        assert not bad, "; ".join(chain(via, family, m) for m in bad)


def test_the_configuration_layer_imports_no_workload_module():
    via = reachable(import_graph(), "bench.matrix")
    bad = [m for m in via if m.startswith("bench.families")]
    assert not bad, "; ".join(chain(via, "bench.matrix", m) for m in sorted(bad))
