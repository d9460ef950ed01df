"""Stage config loading: presets, YAML files, key=value overrides, and their errors."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

import pytest

from charops.config import load_config, parse_overrides, to_dict
from charops.errors import ConfigError


@dataclass
class Lora:
    enabled: bool = field(default=False, metadata={"help": "use LoRA"})
    r: int = field(default=8, metadata={"help": "rank"})


@dataclass
class DemoConfig:
    stage: ClassVar[str] = "demo"
    model: str = field(default="", metadata={"help": "model"})
    learning_rate: float = field(default=1e-4, metadata={"help": "lr"})
    max_steps: int = field(default=10, metadata={"help": "steps"})
    packing: bool = field(default=True, metadata={"help": "pack"})
    deepspeed: str | None = field(default=None, metadata={"help": "ds config"})
    targets: list[str] = field(default_factory=list, metadata={"help": "modules"})
    split_by: Literal["dialogue", "character"] = field(default="dialogue", metadata={"help": "split"})
    lora: Lora = field(default_factory=Lora, metadata={"help": "lora"})


def test_yaml_file_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model: m1\nmax_steps: 5\nlora:\n  enabled: true\n")
    cfg = load_config(DemoConfig, path, ["learning_rate=3e-5", "lora.r=16", "targets=q_proj,v_proj"])
    assert cfg.model == "m1" and cfg.max_steps == 5
    assert cfg.learning_rate == pytest.approx(3e-5)
    assert cfg.lora == Lora(enabled=True, r=16)
    assert cfg.targets == ["q_proj", "v_proj"]
    assert to_dict(cfg)["lora"] == {"enabled": True, "r": 16}


def test_optional_and_literal(tmp_path):
    cfg = load_config(DemoConfig, None, ["deepspeed=zero2", "split_by=character"])
    assert cfg.deepspeed == "zero2" and cfg.split_by == "character"
    assert load_config(DemoConfig, None, ["deepspeed=null"]).deepspeed is None


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("learnig_rate=1", "unknown key 'learnig_rate'; did you mean 'learning_rate'?"),
        ("max_steps=1.5", "override 'max_steps=1.5': expected an integer, got 1.5"),
        ("packing=maybe", "override 'packing=maybe': expected true or false"),
        ("split_by=topic", "is not one of dialogue, character"),
        ("lora.rank=4", "unknown key 'rank'"),
        ("noequals", "expected key=value"),
    ],
)
def test_bad_overrides_are_one_line_errors(override, message):
    with pytest.raises(ConfigError) as exc:
        load_config(DemoConfig, None, [override])
    assert message in str(exc.value)
    assert "\n" not in str(exc.value)


def test_bad_yaml_names_file_and_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("model: m\nmax_steps: [1,\n")
    with pytest.raises(ConfigError, match=r"bad.yaml line \d+: not valid YAML"):
        load_config(DemoConfig, path)
    path.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(DemoConfig, path)


def test_missing_preset_lists_known_ones():
    with pytest.raises(ConfigError, match="no such file and no demo preset"):
        load_config(DemoConfig, "nope")


def test_parse_overrides_nesting():
    assert parse_overrides(["a=1", "b.c=x", "b.d=[1, 2]", "e="]) == {
        "a": 1, "b": {"c": "x", "d": [1, 2]}, "e": ""}


def test_typo_in_file_names_the_file_and_typo_on_command_line_names_the_override(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("modle: x\n")
    with pytest.raises(ConfigError, match=r"c.yaml: unknown key 'modle'; did you mean 'model'"):
        load_config(DemoConfig, path)
    path.write_text("model: x\n")
    with pytest.raises(ConfigError, match=r"^override 'lora.r0=1': unknown key 'r0'; did you mean 'lora.r'"):
        load_config(DemoConfig, path, ["lora.r0=1"])


def test_stage_main_parses_config_flags_and_overrides(tmp_path):
    from charops.config import stage_main

    path = tmp_path / "c.yaml"
    path.write_text("model: m1\n")
    seen = []

    def run(cfg):
        seen.append(cfg)
        return "summary"

    out = stage_main(DemoConfig, run, ["--config", str(path), "--steps", "7", "packing=false"],
                     default="nope", flags={"--steps": "max_steps"})
    assert out == "summary" and seen == [DemoConfig(model="m1", max_steps=7, packing=False)]
    with pytest.raises(SystemExit) as exc:
        stage_main(DemoConfig, run, ["--config", str(path), "lora.rank=1"], default="nope")
    assert str(exc.value) == "error: override 'lora.rank=1': unknown key 'rank'"


def test_a_bad_value_names_the_override_or_the_file_and_key_path(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("max_steps: lots\nlora:\n  r: big\n")
    with pytest.raises(ConfigError) as exc:
        load_config(DemoConfig, path, ["lora.r=4"])
    assert str(exc.value) == f"{path}: key max_steps: expected an integer, got 'lots'"
    with pytest.raises(ConfigError) as exc:
        load_config(DemoConfig, path, ["max_steps=3"])
    assert str(exc.value) == f"{path}: key lora.r: expected an integer, got 'big'"
    path.write_text("max_steps: 3\n")
    with pytest.raises(ConfigError) as exc:
        load_config(DemoConfig, path, ["lora.r=big"])
    assert str(exc.value) == "override 'lora.r=big': expected an integer, got 'big'"
    with pytest.raises(ConfigError) as exc:
        load_config(DemoConfig, path, ["lora={r: big}"])
    assert str(exc.value) == "override 'lora={r: big}': expected an integer, got 'big'"


@dataclass
class CheckedConfig:
    stage: ClassVar[str] = "demo"
    steps: int = field(default=1, metadata={"help": "steps"})

    def validate(self) -> None:
        if self.steps < 1:
            raise ConfigError(f"steps: must be at least 1, got {self.steps}")


def test_validate_errors_name_where_the_value_came_from(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("steps: 0\n")
    with pytest.raises(ConfigError) as exc:
        load_config(CheckedConfig, path)
    assert str(exc.value) == f"{path}: steps: must be at least 1, got 0"
    with pytest.raises(ConfigError) as exc:
        load_config(CheckedConfig, None, ["steps=-2"])
    assert str(exc.value) == "override 'steps=-2': steps: must be at least 1, got -2"
