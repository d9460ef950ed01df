"""Every Python package in the tree is installed (pyproject lists them explicitly)."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _expected() -> set[str]:
    roots = {"charops": ROOT / "src" / "charops", "charops.cli": ROOT / "cli",
             "charops.components": ROOT / "components", "charops.configs": ROOT / "configs"}
    found = set()
    for name, root in roots.items():
        for init in root.rglob("__init__.py"):
            if "__pycache__" in init.parts:
                continue
            rel = init.parent.relative_to(root).parts
            found.add(".".join((name, *rel)))
    return found


def test_every_package_is_listed():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    missing = _expected() - listed
    assert not missing, f"add to [tool.setuptools] packages in pyproject.toml: {sorted(missing)}"
    stale = listed - _expected()
    assert not stale, f"listed but no such package: {sorted(stale)}"
