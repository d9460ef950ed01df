"""Run presets: named sets of pipeline parameters (``configs/run/NAME.yaml``) for ``charops submit``.

A stage preset (``configs/sft/smollm2-cpu.yaml``) configures one step; a run preset says which
stage presets (and base model) a whole pipeline run uses, so one name switches the recipe::

    charops submit pipelines/full.yaml --local --preset smollm2-cpu       # the README main job
    charops submit pipelines/full.yaml --local --preset tiny              # the smoke-test run
    charops submit pipelines/full.yaml --local --preset smollm2-cpu --param sft_overrides='["max_steps=8"]'

A ``--param`` given as well wins over the preset's value for that parameter; parameters the
pipeline does not have are left out (``sft_dpo`` has no ``pretrain_config``).

    python -c "from charops.pipeline.presets import with_preset; print(with_preset('smollm2-cpu', []))"
"""

from __future__ import annotations

import json
from pathlib import Path

from charops.config import list_presets, preset_dir, read_yaml
from charops.errors import CharopsError

STAGE = "run"


def preset_path(name: str) -> Path:
    """``configs/run/NAME.yaml``, or a YAML file given by path."""
    p = Path(name)
    if p.suffix in (".yaml", ".yml") and p.is_file():
        return p
    path = preset_dir(STAGE) / f"{name}.yaml"
    if not path.is_file():
        raise CharopsError(f"no run preset '{name}' (configs/run/{name}.yaml); known: "
                           f"{', '.join(list_presets(STAGE)) or 'none'}")
    return path


def with_preset(name: str | None, params: list[str], known: set[str] | None = None) -> list[str]:
    """``NAME=VALUE`` items: the preset's values for the parameters ``params`` does not set (and,
    with ``known``, that the pipeline has), then ``params``."""
    if not name:
        return list(params)
    path = preset_path(name)
    values = read_yaml(path)
    if not isinstance(values, dict):
        raise CharopsError(f"{path}: a run preset is a mapping of pipeline parameter names to values")
    given = {item.partition("=")[0].strip() for item in params}
    items = [f"{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in values.items()
             if k not in given and (known is None or k in known)]
    return items + list(params)
