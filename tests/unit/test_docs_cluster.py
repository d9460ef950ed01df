"""Every command in docs/cluster.md is one a test builds, renders or parses.

    .venv/bin/python -m pytest tests/unit/test_docs_cluster.py -x -q

* ``kubectl kustomize|apply -k PATH``: PATH builds with kubectl kustomize;
* ``cp SRC DST`` / ``kubectl apply -f FILE``: the file (or what it was copied from) exists and
  validates strictly;
* ``docker build``: every ``--build-arg`` is an ARG of the Dockerfile, the variant has its
  stage, the tag carries the package version; ``docker push`` pushes a tag built above;
* ``charops ...``: parses against the real CLI (options, arguments, types); ``--param``
  names are parameters of the compiled pipeline, ``--preset`` exists; ``charops deploy``
  is rendered with ``--dry-run`` against a real S3 registry and validated against the CRD.

A command of any other kind fails the test: the page only shows what is checked.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from typer.main import get_command
from typer.testing import CliRunner

import charops
from charops.cli.main import app

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "cluster.md"
CRDS = ROOT.parent / "shared" / "crds"
KUBECTL = Path(sys.executable).parent / "kubectl"


def commands() -> list[list[str]]:
    text = DOC.read_text(encoding="utf-8")
    out = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" # ")[0].strip()
            if line and not line.startswith("#"):
                out.append(shlex.split(line))
    return out


def without_env(argv: list[str]) -> tuple[dict, list[str]]:
    env = {}
    while argv and re.match(r"^[A-Z_][A-Z0-9_]*=", argv[0]):
        key, _, value = argv[0].partition("=")
        env[key] = value
        argv = argv[1:]
    return env, argv


def parse_cli(args: list[str]) -> dict:
    """Parse like `charops ARGS` would, invoking nothing; the leaf command's params."""
    cmd, name, parent = get_command(app), "charops", None
    while True:
        ctx = cmd.make_context(name, list(args), parent=parent)
        if not hasattr(cmd, "resolve_command"):
            return {"command": name, **ctx.params}
        rest = [*ctx._protected_args, *ctx.args] if hasattr(ctx, "_protected_args") else ctx.protected_args + ctx.args
        name, cmd, args = cmd.resolve_command(ctx, rest)
        parent = ctx


def dockerfile_args() -> set[str]:
    return set(re.findall(r"^ARG (\w+)", (ROOT / "Dockerfile").read_text(), re.M))


def pipeline_parameters(path: Path) -> set[str]:
    spec = next(yaml.safe_load_all(path.read_text()))
    return set(spec["root"]["inputDefinitions"]["parameters"])


def test_the_page_has_commands_of_every_kind():
    tools = {c[0] if c[0] != "charops" else f"charops {c[1]}" for c in (without_env(c)[1] for c in commands())}
    assert {"kubectl", "docker", "cp", "charops submit", "charops deploy", "charops rollback"} <= tools


def test_kubectl_cp_and_docker_commands():
    copied, built = {}, set()
    for argv in commands():
        _, argv = without_env(argv)
        if argv[0] == "kubectl":
            if "-k" in argv or argv[1] == "kustomize":
                path = argv[argv.index("-k") + 1] if "-k" in argv else argv[2]
                out = subprocess.run([str(KUBECTL), "kustomize", str(ROOT / path)], check=True,
                                     capture_output=True, text=True, timeout=60).stdout
                assert [d for d in yaml.safe_load_all(out) if d], path
            elif "-f" in argv:
                f = argv[argv.index("-f") + 1]
                source = ROOT / copied.get(f, f)
                assert source.is_file(), f
                for doc in yaml.safe_load_all(source.read_text()):
                    if doc:
                        kubernetes_validate.validate(doc, "1.30.0", strict=True)
            else:
                pytest.fail(f"docs/cluster.md: unchecked kubectl command {shlex.join(argv)}")
        elif argv[0] == "cp":
            assert (ROOT / argv[1]).is_file(), argv[1]
            copied[argv[2]] = argv[1]
        elif argv[0] == "docker" and argv[1] == "build":
            assert argv[-1] == "."
            tag = argv[argv.index("-t") + 1]
            assert tag.split(":")[-1].startswith(charops.__version__), tag
            for i, a in enumerate(argv):
                if a == "--build-arg":
                    key, _, value = argv[i + 1].partition("=")
                    assert key in dockerfile_args(), f"--build-arg {key}: no such ARG in the Dockerfile"
                    if key == "VARIANT":
                        assert f"AS base-{value}" in (ROOT / "Dockerfile").read_text()
            built.add(tag)
        elif argv[0] == "docker" and argv[1] == "push":
            assert argv[2] in built, f"docker push {argv[2]}: not built on the page"
        elif argv[0] != "charops":
            pytest.fail(f"docs/cluster.md: unchecked command {shlex.join(argv)}")


def test_charops_commands_parse_and_name_real_parameters():
    seen = 0
    for argv in commands():
        _, argv = without_env(argv)
        if argv[0] != "charops":
            continue
        params = parse_cli(argv[1:])
        seen += 1
        if params["command"] == "submit":
            names = pipeline_parameters(ROOT / params["pipeline"])
            for p in params["param"] or []:
                key = p.split("=", 1)[0]
                assert key in names, f"{shlex.join(argv)}: {key} is not a parameter of {params['pipeline']}"
            if params.get("preset"):
                assert (ROOT / "configs" / "run" / f"{params['preset']}.yaml").is_file()
    assert seen >= 10


@pytest.fixture
def registry(s3_server, s3_bucket, monkeypatch, tmp_path):
    """charops-chat v1..v5 with characters, v4 in production (what the page's commands assume)."""
    from charops import registry
    from charops.storage import open_store

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server["access_key"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server["secret_key"])
    monkeypatch.setenv("CHAROPS_S3_ENDPOINT", s3_server["url"])
    monkeypatch.setenv("CHAROPS_STORE", f"s3://{s3_bucket}/charops")
    store = open_store(f"s3://{s3_bucket}/charops")
    for v in range(1, 6):
        d = tmp_path / f"m{v}"
        d.mkdir()
        (d / "config.json").write_text(json.dumps({"v": v}))
        (d / "characters.jsonl").write_text(json.dumps({"type": "profile", "name": "林小满"}) + "\n")
        registry.register(store, d, "charops-chat", {}, {})
    for stage in ("staging", "production"):
        registry.transition(store, "charops-chat", 4, stage, actor="docs", reason="docs test")
    return store


def test_deploy_commands_render_valid_inference_services(registry):
    from k8s_standin import crd_schemas, schema_errors, unknown_fields

    rendered = 0
    for argv in commands():
        _, argv = without_env(argv)
        if argv[:2] != ["charops", "deploy"]:
            continue
        args = [a for a in argv[2:] if a != "--dry-run"]
        # The cluster sees the store under its service name (the test's is on loopback).
        r = CliRunner().invoke(app, ["deploy", *args, "--dry-run", "s3_endpoint=minio-service.kubeflow:9000"])
        assert r.exit_code == 0, f"{shlex.join(argv)}: {r.output}"
        sa, isvc = yaml.safe_load_all(r.stdout)
        kubernetes_validate.validate(sa, "1.30.0", strict=True)
        if CRDS.is_dir():
            schema = crd_schemas(CRDS)[(isvc["apiVersion"], isvc["kind"])]
            assert schema_errors(isvc, schema) == [] and unknown_fields(isvc, schema) == []
        rendered += 1
    assert rendered >= 5
