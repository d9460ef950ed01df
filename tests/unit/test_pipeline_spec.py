"""Compiled pipeline files: loading, typed --param parsing, version stamps.

    .venv/bin/python -m pytest tests/unit/test_pipeline_spec.py -x -q
"""

from __future__ import annotations

import hashlib
import json

import pytest
import yaml

import charops
from charops.errors import CharopsError
from charops.pipeline.spec import convert, load_spec, parse_params
from charops.pipeline.version import (
    compute_version,
    read_version,
    stamp,
    version_in_text,
)


@pytest.fixture
def stamped(tiny_pipeline_yaml, tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(stamp(tiny_pipeline_yaml["base"].read_text()))
    return path


def test_version_is_package_version_plus_hash_of_the_unstamped_spec(tiny_pipeline_yaml):
    text = tiny_pipeline_yaml["base"].read_text()
    docs = list(yaml.safe_load_all(text))
    canonical = json.dumps(docs, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    expected = f"{charops.__version__}-{hashlib.sha256(canonical.encode()).hexdigest()[:8]}"
    assert compute_version(text) == expected
    # Stamping does not change the version (the stamp is excluded from the hash).
    assert compute_version(stamp(text)) == expected


def test_stamp_is_idempotent_and_only_adds_the_stamp(tiny_pipeline_yaml):
    text = tiny_pipeline_yaml["base"].read_text()
    once = stamp(text)
    assert stamp(once) == once
    version = compute_version(text)
    added = [line for line in once.splitlines() if line not in text.splitlines()]
    assert added == [f"# charops-pipeline-version: {version}",
                     f"  description: A tiny pipeline. (charops pipeline version {version})"]
    assert version_in_text(once) == version


def test_stamp_survives_kfp_loader_and_comment_loss(stamped):
    from kfp.components import load_component_from_file

    component = load_component_from_file(str(stamped))
    assert component.name == "tiny-pipe"
    assert component.description == "A tiny pipeline."
    # The API server drops comments; the description still carries the version.
    version = read_version(stamped)
    no_comments = "\n".join(line for line in stamped.read_text().splitlines() if not line.startswith("#"))
    assert version_in_text(no_comments) == version


def test_changed_pipeline_gets_a_new_version(tiny_pipeline_yaml):
    base = compute_version(tiny_pipeline_yaml["base"].read_text())
    variant = compute_version(tiny_pipeline_yaml["variant"].read_text())
    assert base != variant and base.split("-")[0] == variant.split("-")[0] == charops.__version__


def test_hand_edit_after_stamping_no_longer_matches_the_stamp(stamped, tmp_path):
    """What `charops submit` refuses (client.py) and `charops compile --check` reports."""
    assert compute_version(stamped.read_text()) == read_version(stamped)
    edited = tmp_path / "edited.yaml"
    edited.write_text(stamped.read_text().replace("defaultValue: 3.0", "defaultValue: 5.0"))
    assert "defaultValue: 5.0" in edited.read_text()
    assert compute_version(edited.read_text()) != read_version(edited) == read_version(stamped)


def test_load_spec_reads_name_version_and_typed_parameters(stamped):
    spec = load_spec(stamped)
    assert (spec.name, spec.description, spec.has_platform_spec) == ("tiny-pipe", "A tiny pipeline.", True)
    assert spec.version == read_version(stamped)
    types = {n: p.type for n, p in spec.parameters.items()}
    assert types == {"a": "NUMBER_INTEGER", "b": "NUMBER_DOUBLE", "name": "STRING",
                     "flag": "BOOLEAN", "items": "LIST", "cfg": "STRUCT", "required_text": "STRING"}
    assert spec.parameters["a"].default == 3 and isinstance(spec.parameters["a"].default, int)
    assert spec.parameters["b"].default == 0.5
    assert spec.parameters["flag"].default is True
    assert spec.parameters["required_text"].required
    assert not spec.parameters["name"].required


def test_parse_params_types_each_value(stamped):
    spec = load_spec(stamped)
    got = parse_params(spec, ["required_text=a=b", "a=7", "b=1e-4", "flag=False", "name=42",
                              "items=[1, \"x\"]", 'cfg={"lr": 0.1}'])
    assert got == {"required_text": "a=b", "a": 7, "b": 0.0001, "flag": False, "name": "42",
                   "items": [1, "x"], "cfg": {"lr": 0.1}}
    assert type(got["a"]) is int and type(got["b"]) is float and type(got["name"]) is str


@pytest.mark.parametrize("item, message", [
    ("learning_rat=1", "has no parameter 'learning_rat'"),
    ("nme=1", "did you mean 'name'?"),
    ("a=1.5", "--param a (NUMBER_INTEGER): expected an integer, got '1.5'"),
    ("b=fast", "--param b (NUMBER_DOUBLE): expected a number"),
    ("flag=maybe", "--param flag (BOOLEAN): expected true or false"),
    ("items={}", "--param items (LIST): expected a JSON list"),
    ("cfg=[1]", "--param cfg (STRUCT): expected a JSON object"),
    ("a", "expected NAME=VALUE"),
])
def test_parse_params_errors_are_one_line(stamped, item, message):
    spec = load_spec(stamped)
    with pytest.raises(CharopsError) as exc:
        parse_params(spec, ["required_text=x", item])
    assert message in str(exc.value) and "\n" not in str(exc.value)


def test_unknown_parameter_lists_the_pipeline_parameters(stamped):
    with pytest.raises(CharopsError, match=r"parameters: a, b, cfg, flag, items, name, required_text"):
        parse_params(load_spec(stamped), ["zzz=1"])


def test_missing_required_parameter(stamped):
    with pytest.raises(CharopsError, match=r"needs --param required_text=\.\.\."):
        parse_params(load_spec(stamped), ["a=1"])
    assert parse_params(load_spec(stamped), [], check_required=False) == {}


def test_integer_written_as_float_is_accepted():
    assert convert("1e3", "NUMBER_INTEGER", "x") == 1000
    assert convert("2.0", "NUMBER_INTEGER", "x") == 2


@pytest.mark.parametrize("content, message", [
    ("a: [1, 2\n", "line 2: not valid YAML"),
    ("kind: Deployment\n", "not a compiled KFP pipeline"),
    ("pipelineInfo: {name: x}\n", "pipelineInfo.name and root are required"),
    ("pipelineInfo: {name: x}\nroot: {}\n---\nfoo: 1\n", "at most one platform spec"),
    ("pipelineInfo: {name: x}\nroot: {inputDefinitions: {parameters: {p: {parameterType: FLOAT}}}}\n",
     "unknown parameterType 'FLOAT'"),
])
def test_malformed_files_are_one_line_errors_naming_the_file(tmp_path, content, message):
    path = tmp_path / "bad.yaml"
    path.write_text(content)
    with pytest.raises(CharopsError) as exc:
        load_spec(path)
    assert str(exc.value).startswith(str(path)) and message in str(exc.value)
    assert "\n" not in str(exc.value)


def test_missing_file(tmp_path):
    with pytest.raises(CharopsError, match="no such pipeline file"):
        load_spec(tmp_path / "nope.yaml")
