"""What the Role must grant: every Kubernetes call in charops' client code, read from the source.

Each API call charops makes is ``<kube>.<verb>(<RESOURCE>, ...)`` (charops.deploy.kube), with
``<RESOURCE>`` one of that module's Resource constants; this walks the syntax trees of the
modules that talk to the API and lists (apiGroup, resource, verb) triples in RBAC terms::

    from k8s_rbac import code_permissions, role_permissions
"""

from __future__ import annotations

import ast
from pathlib import Path

from charops.deploy import kube as kube_module

ROOT = Path(__file__).resolve().parents[1]
# Every module that may call the API (the RBAC test fails if another one starts to).
CLIENT_SOURCES = sorted((ROOT / "src" / "charops" / "deploy").glob("*.py")) + \
    [ROOT / "src" / "charops" / "train" / "launch.py"]
RESOURCES = {name: value for name, value in vars(kube_module).items()
             if isinstance(value, kube_module.Resource)}


def code_permissions() -> set[tuple[str, str, str]]:
    perms = set()
    for path in CLIENT_SOURCES:
        if not path.is_file():
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr in kube_module.VERBS and node.args
                    and isinstance(node.args[0], ast.Name) and node.args[0].id in RESOURCES):
                res = RESOURCES[node.args[0].id]
                perms.add((res.group, res.rbac_resource, kube_module.VERBS[node.func.attr]))
    return perms


def role_permissions(role: dict) -> set[tuple[str, str, str]]:
    return {(g, r, v) for rule in role["rules"] for g in rule["apiGroups"]
            for r in rule["resources"] for v in rule["verbs"]}

