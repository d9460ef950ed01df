"""The ``promotion_gate`` and ``promote`` components: the pipelines' conditional last step.

Thin wrappers of ``charops.registry.gate``. ``promotion_gate`` reads the registered version
(the ``entry`` artifact of ``register``) and decides, against the production version in
``store`` (the base model when there is none), with the gate config ``config`` plus
``overrides``; its parameter output ``Output`` is the decision, "promote" or "refuse"
(kfp.local resolves a condition on an output of that name only), and its report the decision
table. The pipelines run ``promote`` only under ``dsl.If(gate.outputs["Output"] == "promote")``;
it runs the gate again (production may have changed in between) and records the stage
change, the actor being the pipeline run::

    from kfp import dsl
    from charops.components.promote.component import promote, promotion_gate
    gate = promotion_gate(entry=reg.outputs["entry"], store=store, to="production",
                          config="default", overrides=[])
    with dsl.If(gate.outputs["Output"] == "promote"):
        promote(entry=reg.outputs["entry"], store=store, to="production", config="default",
                overrides=[], run_name=dsl.PIPELINE_JOB_NAME_PLACEHOLDER)
"""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Artifact, Input, Markdown, Output

from charops.pipeline.image import default_image


@dsl.component(base_image=default_image(), install_kfp_package=False)
def promotion_gate(entry: Input[Artifact], store: str, to: str, config: str, overrides: list,
                   report: Output[Markdown]) -> NamedTuple("Outputs", [("Output", str)]):
    """Decide whether the registered version in ``entry`` may move to stage ``to``.

    Args:
        entry: the ``entry`` output of ``register`` (name, version)
        store: store URL; empty: ``charops.storage.open_store``'s default
        to: ``staging`` or ``production``
        config: ``configs/promote/`` gate preset (``default``)
        overrides: ``key=value`` overrides of the gate config
        report: the decision table

    Returns:
        Output: ``promote`` or ``refuse`` (named so because kfp.local resolves conditions on
            ``Output`` only)
    """
    import json
    from collections import namedtuple
    from pathlib import Path

    from charops.components.common import stage_config, write_markdown
    from charops.registry.gate import (
        GateConfig,
        failed_checks,
        gate_markdown,
        gate_table,
        override_command,
        preview,
    )
    from charops.storage import open_store

    registered = json.loads(Path(entry.path).read_text(encoding="utf-8"))
    decision = preview(open_store(store or None), registered["name"], registered["version"], to,
                       stage_config(GateConfig, config, overrides))
    if decision is None:
        write_markdown(report, f"# Promotion gate\n\n{registered['name']} v{registered['version']} "
                               f"to {to}: not gated (already there, or staging is ungated).\n")
    else:
        write_markdown(report, gate_markdown(decision))
    passed = decision is None or decision["passed"]
    # What the run's last screen says about the gate (charops.pipeline.local.run_headline).
    report.metadata.update({"name": registered["name"], "version": registered["version"], "to": to,
                            "passed": passed, "gated": decision is not None,
                            "reference": decision["reference"] if decision else "",
                            "failed": "; ".join(failed_checks(decision)) if decision else "",
                            "table": gate_table(decision) if decision else "",
                            "override": "" if passed else override_command(decision, to, config)})
    return namedtuple("Outputs", ["Output"])("promote" if passed else "refuse")


@dsl.component(base_image=default_image(), install_kfp_package=False)
def promote(entry: Input[Artifact], store: str, to: str, config: str, overrides: list,
            run_name: str, event: Output[Artifact]):
    """Move the registered version in ``entry`` to ``to`` (gate checked again), record it.

    Args:
        entry: the ``entry`` output of ``register`` (name, version)
        store: store URL; empty: ``charops.storage.open_store``'s default
        to: ``staging`` or ``production``
        config: ``configs/promote/`` gate preset (``default``)
        overrides: ``key=value`` overrides of the gate config
        run_name: the run, recorded as the actor (``pipeline:<run name>``)
        event: the stage event recorded
    """
    import json
    from pathlib import Path

    from charops.components.common import stage_config
    from charops.io import write_json
    from charops.registry.gate import GateConfig, pipeline_promote
    from charops.storage import open_store

    registered = json.loads(Path(entry.path).read_text(encoding="utf-8"))
    recorded = pipeline_promote(open_store(store or None), registered["name"],
                                registered["version"], to, stage_config(GateConfig, config, overrides),
                                run_name=run_name)
    write_json(event.path, recorded)
    event.metadata.update({"seq": recorded["seq"], "to": recorded["to"],
                           "version": recorded["version"]})
