"""Component READMEs' input and output tables, generated from each component's signature.

    .venv/bin/python scripts/component_docs.py            # rewrite the tables in components/*/README.md
    .venv/bin/python scripts/component_docs.py --check    # exit 1 naming each README out of date

As in kubeflow/pipelines-components, a component documents its inputs and outputs in its
docstring (Google style ``Args:``, and ``Returns:`` for output parameters: what KFP itself reads
into the compiled spec as descriptions); names, types, defaults and optionality come from the
signature (KFP's component spec). The README keeps its prose; the tables sit between
``<!-- inputs ... -->`` and ``<!-- /inputs -->`` and are replaced as a whole. An input or output
without a description is an error, so a new one cannot reach a README undocumented. What every
training component has (``model``, ``dataset``, where it runs: ``gpus``, ``nodes``,
``trainjob_overrides``, its outputs) is described once, in ``TRAINING``.
"""

from __future__ import annotations

import importlib
import importlib.resources
import inspect
import re
from pathlib import Path

from charops.errors import CharopsError
from charops.train.stages import STAGES

BEGIN = "<!-- inputs and outputs: generated from the component's signature and docstring by scripts/component_docs.py; do not edit -->"
END = "<!-- /inputs -->"

# What every training component (charops.train.stages.STAGES) takes and gives, described once;
# a component's own docstring wins (the reward model's outputs differ, say).
TRAINING = {
    "model": "the model to train",
    "dataset": "the prepared dataset (from ``data_prep``)",
    "trained_model": "the trained Hugging Face directory (with ``training_summary.json``); metadata: "
                     "``sha256``, ``stage``, ``config``, ``overrides``, ``base_model``",
    "metrics": "steps, final loss, validation loss, tokens and throughput, wall time",
    "report": "the same numbers and the full config",

    "gpus": "processes in the step's pod: -1 = one per visible GPU (the step's accelerator limit); "
            "more than one runs the stage under ``torchrun``",
    "nodes": "more than 1: a Kubeflow Trainer TrainJob of ``nodes`` x ``gpus`` processes instead, "
             "reading the input artifacts from the store",
    "trainjob_overrides": "``key=value`` overrides of ``TrainJobConfig`` for ``nodes > 1`` "
                          "(``cleanup``, ``cpu``, ``memory``, ``runtime``, ...)",
}

_KINDS = {"String": "str", "Integer": "int", "Float": "float", "Boolean": "bool", "List": "list",
          "Dict": "dict", "Struct": "dict"}


def components_root() -> Path:
    return Path(str(importlib.resources.files("charops.components")))


def components_of(name: str) -> list:
    """The KFP components defined in ``components/<name>/component.py``, in source order."""
    module = importlib.import_module(f"charops.components.{name}.component")
    found = [v for v in vars(module).values()
             if hasattr(v, "component_spec") and getattr(v, "python_func", None) is not None
             and v.python_func.__module__ == module.__name__]
    return sorted(found, key=lambda c: c.python_func.__code__.co_firstlineno)


def descriptions(component) -> dict[str, str]:
    """Parameter name -> description, from the docstring's ``Args:`` and ``Returns:`` sections."""
    import docstring_parser

    doc = inspect.cleandoc(component.python_func.__doc__ or "")
    # As KFP reads it: the Returns section names output parameters the way Args names the rest.
    args, returns = (re.split(r"^Returns:$", doc, maxsplit=1, flags=re.M) + [""])[:2]
    params = docstring_parser.parse(args).params
    if returns:
        params += docstring_parser.parse("Returned values.\n\nArgs:" + returns).params
    return {p.arg_name: " ".join(p.description.split()) for p in params if p.description}


def _kind(type_name: str) -> str:
    if type_name.startswith("system."):
        return type_name.removeprefix("system.").split("@")[0]
    return _KINDS.get(type_name, type_name)


def _text(description: str) -> str:
    """Docstring (reStructuredText) literals as Markdown code; pipes escaped for the table."""
    return description.replace("``", "`").replace("|", "\\|")


def _default(spec) -> str:
    if spec.default is None:
        return "none" if spec.optional else "(required)"
    if spec.default == "":
        return '`""`'
    value = int(spec.default) if isinstance(spec.default, float) and spec.default.is_integer() else spec.default
    return f"`{value!r}`".replace("'", '"') if not isinstance(value, int) else f"`{value}`"


def tables(component, where: str, shared: dict[str, str] | None = None) -> list[str]:
    """The input and output tables of one component; CharopsError for an undocumented one.

    ``shared``: descriptions of what the component has in common with others of its kind (used
    where its docstring says nothing)."""
    spec = component.component_spec
    described = {**(shared or {}), **descriptions(component)}
    missing = []

    def meaning(name: str) -> str:
        text = described.get(name)
        if not text:
            missing.append(name)
        return _text(text or "")

    lines = ["| input | type | default | meaning |", "|---|---|---|---|"]
    lines += [f"| `{n}` | {_kind(s.type)} | {_default(s)} | {meaning(n)} |" for n, s in spec.inputs.items()]
    lines += ["", "| output | type | content |", "|---|---|---|"]
    lines += [f"| `{n}` | {_kind(s.type)} | {meaning(n)} |" for n, s in (spec.outputs or {}).items()]
    if missing:
        raise CharopsError(f"{where}: {component.python_func.__name__} has no description of "
                           f"{', '.join(missing)}; add them to its docstring's Args (or Returns)")
    return lines


def block(name: str) -> str:
    """The generated part of ``components/<name>/README.md``."""
    parts = []
    comps = components_of(name)
    for component in comps:
        if len(comps) > 1:
            parts += [f"**`{component.python_func.__name__}`**", ""]
        shared = TRAINING if name in STAGES else None
        parts += tables(component, f"components/{name}/component.py", shared) + [""]
    return "\n".join([BEGIN, "", *parts, END])


def render(name: str, readme: str) -> str:
    """``readme`` with its generated block replaced (or appended, when it has none yet)."""
    new = block(name)
    if BEGIN in readme and END in readme:
        head, rest = readme.split(BEGIN, 1)
        return head + new + rest.split(END, 1)[1]
    return readme.rstrip("\n") + "\n\n" + new + "\n"


def component_names() -> list[str]:
    return sorted(p.parent.name for p in components_root().glob("*/component.py"))


def update(check: bool = False) -> list[Path]:
    """Rewrite every README whose tables differ (or, with ``check``, only list them)."""
    stale = []
    for name in component_names():
        path = components_root() / name / "README.md"
        current = path.read_text(encoding="utf-8") if path.is_file() else f"# {name}\n"
        fresh = render(name, current)
        if fresh != current:
            stale.append(path)
            if not check:
                path.write_text(fresh, encoding="utf-8")
    return stale
