"""Imports flow one way: no module of resbench imports, at any depth, one that imports it back.

The graph is read from the source (ast), without importing anything: every ``import`` and
``from ... import`` at module level and inside functions (a function-level import hides a circle
from Python's import machinery until the function runs, but not the circle itself). ``from pkg
import name`` points at the submodule ``pkg.name`` where there is one, else at ``pkg`` (its
``__init__``). A package's ``__init__`` importing its own submodules is not a circle by itself;
a submodule importing its package's ``__init__`` back is.
"""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def modules(package: Path) -> dict[str, Path]:
    """Dotted name -> file, for every module of ``package`` (a folder with __init__.py)."""
    found = {}
    for path in sorted(package.rglob("*.py")):
        parts = list(path.relative_to(package.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def import_graph(package: Path) -> dict[str, set[str]]:
    """Module -> the modules of ``package`` it imports (anywhere in its file)."""
    mods = modules(package)
    graph: dict[str, set[str]] = {name: set() for name in mods}
    for name, path in mods.items():
        here = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from . import x, from ..y import z
                    up = here.split(".")[: len(here.split(".")) - node.level + 1]
                    base = ".".join(up + ([base] if base else []))
                targets = [
                    f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names
                ]
            for target in targets:
                while target not in mods and "." in target:  # import a.b.c: the deepest module
                    target = target.rpartition(".")[0]
                if target in mods and target != name:
                    graph[name].add(target)
    return graph


def cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One circle of imports, as the modules around it, or None."""
    try:
        tuple(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as exc:
        return list(exc.args[1])
    return None


def test_resbench_has_no_import_circle():
    graph = import_graph(ROOT / "resbench")
    assert len(graph) > 50 and "resbench.sweep.eta" in graph["resbench.sweep.runner"]
    assert "resbench.profile.tables" in graph["resbench.profile.runner"]
    found = cycle(graph)
    assert found is None, "import circle: " + " -> ".join(found)


def _package(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root / "pkg"


@pytest.mark.parametrize(
    "files",
    [
        {  # the old profile <-> profile_tables circle, closed inside a function
            "pkg/__init__.py": "",
            "pkg/runner.py": "from pkg.tables import write\n",
            "pkg/tables.py": "def f():\n    from pkg import runner\n",
        },
        {  # relative imports, three modules round
            "pkg/__init__.py": "",
            "pkg/a.py": "from . import b\n",
            "pkg/b.py": "from .sub.c import x\n",
            "pkg/sub/__init__.py": "",
            "pkg/sub/c.py": "import pkg.a\nx = 1\n",
        },
        {  # a submodule importing a name from its package's __init__, which imports it
            "pkg/__init__.py": "from pkg.core import thing\nNAME = 1\n",
            "pkg/core.py": "from pkg import NAME\nthing = NAME\n",
        },
    ],
)
def test_the_walk_finds_a_circle_however_it_is_imported(tmp_path, files):
    found = cycle(import_graph(_package(tmp_path, files)))
    assert found is not None and found[0] == found[-1]


def test_an_init_that_imports_its_submodules_is_no_circle(tmp_path):
    files = {
        "pkg/__init__.py": "from pkg.b import y\nfrom pkg.a import x\n",
        "pkg/a.py": "from pkg.b import y\nx = y\n",
        "pkg/b.py": "import os\ny = 1\n",
    }
    assert cycle(import_graph(_package(tmp_path, files))) is None


def test_users_still_import_the_measurement_from_resbench_measure():
    """``resbench.measure`` is the users' path to the engine's ``measure``: every public name of
    ``resbench.engine.measure`` (its own and those it hands on) is there, and is the same object."""
    import types

    from resbench import measure as users
    from resbench.engine import measure as engine

    public = {
        name
        for name, value in vars(engine).items()
        if not name.startswith("_")
        and not isinstance(value, types.ModuleType)
        and (name.isupper() or getattr(value, "__module__", "").startswith("resbench"))
    }
    assert {"Config", "Result", "measure", "prepare", "validate_config"} <= public
    assert set(users.__all__) == public
    assert all(getattr(users, name) is getattr(engine, name) for name in public)
