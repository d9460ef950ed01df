"""No import circles in charops (issue 14): imports run one way, so no module imports back into
a package or module that (directly or through others) imports it.

Every ``import`` in every module counts, also the ones inside functions: a deferred import
hides a circle from the interpreter, not from the design. A package counts as its
``__init__``; ``from pkg import name`` points at ``pkg.name`` when that is a module, else at
``pkg``. A small AST walk (no dependency), checked on a made-up package first so it is known to
find circles.

    .venv/bin/python -m pytest tests/unit/test_import_graph.py -q
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# Where each installed package's sources live (pyproject.toml [tool.setuptools] package-dir).
PACKAGES = {"charops": ROOT / "src" / "charops", "charops.cli": ROOT / "cli",
            "charops.components": ROOT / "components"}


def modules(packages: dict[str, Path]) -> dict[str, Path]:
    """Dotted module name -> file, for every .py under each package's folder."""
    found: dict[str, Path] = {}
    for name, folder in packages.items():
        for path in folder.rglob("*.py"):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join([name, *parts])] = path
    return found


def import_graph(mods: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the charops modules it imports (anywhere in its body)."""
    def known(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {m: set() for m in mods}
    for mod, path in mods.items():
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            targets: list[str | None] = []
            if isinstance(node, ast.Import):
                targets = [known(a.name) for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from . import x / from ..pkg import y
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*up, base] if base else up)
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else known(base)
                           for a in node.names]
            graph[mod] |= {t for t in targets if t is not None and t != mod}
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, edges = work[-1]
            nxt = next(edges, None)
            if nxt is not None:
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph[nxt]))))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
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


def _describe(graph: dict[str, set[str]], component: list[str]) -> str:
    inside = set(component)
    return "; ".join(f"{m} -> {', '.join(sorted(graph[m] & inside))}" for m in component)


def test_the_walk_finds_circles_through_packages_and_deferred_imports(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("from pkg.core import thing\n")
    (pkg / "core.py").write_text("def thing():\n    from pkg import helper  # deferred\n")
    (pkg / "helper.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from . import leaf\n")
    (pkg / "sub" / "leaf.py").write_text("from ..sub import other\n")
    (pkg / "sub" / "other.py").write_text("import pkg.sub.leaf\n")
    graph = import_graph(modules({"pkg": pkg}))
    assert graph["pkg.core"] == {"pkg.helper"}  # `from pkg import helper` is the module
    assert circles(graph) == [["pkg.sub.leaf", "pkg.sub.other"]]
    (pkg / "helper.py").write_text("from pkg import thing\n")  # back into the package
    assert sorted(circles(import_graph(modules({"pkg": pkg})))) == [
        ["pkg", "pkg.core", "pkg.helper"], ["pkg.sub.leaf", "pkg.sub.other"]]


def test_charops_has_no_import_circles():
    mods = modules(PACKAGES)
    assert {"charops.registry", "charops.registry.entries", "charops.data.cards",
            "charops.cli.main", "charops.model.cache"} <= set(mods)  # the walk sees them
    graph = import_graph(mods)
    assert "charops.registry.entries" in graph["charops.registry.stages"]
    found = circles(graph)
    assert not found, "import circles:\n" + "\n".join(_describe(graph, c) for c in found)


def test_the_card_codec_and_the_model_catalog_import_one_way():
    """The two circles issue 14 named: the codec needs no importer, the catalog no loader."""
    graph = import_graph(modules(PACKAGES))
    assert not any(t.startswith("charops.data.importers") for t in graph["charops.data.cards"])
    assert "charops.model.load" not in graph["charops.model.catalog"]
    assert graph["charops.model.cache"] == set()  # a leaf
