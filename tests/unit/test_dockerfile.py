"""The Dockerfile without a Docker engine: what it COPYs exists, versions agree.

    .venv/bin/python -m pytest tests/unit/test_dockerfile.py -x -q
"""

from __future__ import annotations

import fnmatch
import re
import shlex
from pathlib import Path

import charops
from charops.pipeline.image import DEFAULT_REPOSITORY, default_image

ROOT = Path(__file__).resolve().parents[2]


def instructions() -> list[tuple[str, str]]:
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            op, _, rest = line.partition(" ")
            out.append((op.upper(), rest.strip()))
    return out


def ignored(rel: str) -> bool:
    patterns = [p.strip() for p in (ROOT / ".dockerignore").read_text().splitlines()
                if p.strip() and not p.startswith("#")]
    result = False
    for p in patterns:
        neg = p.startswith("!")
        pat = p.lstrip("!")
        if fnmatch.fnmatch(rel, pat) or fnmatch.fnmatch(rel, pat + "/*") or rel.split("/")[0] == pat:
            result = not neg
    return result


def test_copy_sources_exist_and_are_not_dockerignored():
    copies = [shlex.split(rest)[:-1] for op, rest in instructions() if op == "COPY"]
    assert copies
    for sources in copies:
        for src in sources:
            assert (ROOT / src).exists(), f"COPY {src}: no such path in the repository"
            assert not ignored(src), f"COPY {src}: excluded by .dockerignore"


def test_version_and_image_agree():
    args = dict(re.match(r"(\w+)=(.*)", rest).groups() for op, rest in instructions()
                if op == "ARG" and "=" in rest)
    assert args["CHAROPS_VERSION"] == charops.__version__
    assert args["CHAROPS_IMAGE"] == f"{DEFAULT_REPOSITORY}:${{CHAROPS_VERSION}}"
    assert instructions()[1] == ("FROM", "python:${PYTHON_VERSION}-slim") and args["PYTHON_VERSION"] == "3.11"
    # The image runs as the unprivileged user it creates.
    users = [rest for op, rest in instructions() if op == "USER"]
    assert users == ["1000"] and "useradd --create-home --uid 1000" in (ROOT / "Dockerfile").read_text()
    # Every extra the install names exists in pyproject.
    text = (ROOT / "pyproject.toml").read_text()
    for extra in ("train", "pipelines", "serve"):
        assert re.search(rf"^{extra} = \[", text, re.M)


def test_default_image(monkeypatch):
    monkeypatch.delenv("CHAROPS_IMAGE", raising=False)
    assert default_image() == f"ghcr.io/charops/charops:{charops.__version__}"
    monkeypatch.setenv("CHAROPS_IMAGE", "registry.example.com/ml/charops:dev")
    assert default_image() == "registry.example.com/ml/charops:dev"
