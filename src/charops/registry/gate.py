"""The promotion gate: a version is promoted only when its evaluation beats the reference.

The reference is the current production version of the name, or the base model when there
is none. The candidate's ``eval_summary.json`` (on its model card) must show, against that
reference (config ``configs/promote/default.yaml``, ``key=value`` overrides):

- pair-wise Advantage (win % - lose %) above ``min_advantage`` points (check ``advantage``),
  and significant: the sign test's p below ``alpha`` (``sign_test``);
- point-wise Overall not lower than the reference's (``overall``; ``overall_margin`` points
  above it, 0 by default), and Safety not lower either (``safety``; ``safety_margin``);
- the judge's held-out pair accuracy at least ``min_judge_accuracy`` (``judge_accuracy``: a
  reward-model judge weaker than that cannot vouch for anything);
- multi-turn Advantage not lower: whole conversations (``eval mode=multiturn|both``) win at
  least as often as they lose against the reference, Advantage >= ``min_multiturn_advantage``
  (``multiturn``; off by default: name it in ``checks`` with an evaluation that has conversations).

``checks`` says which of these apply: a gate asks only for what its judge measures (the
reward-model judge scores Overall, not Safety: ``configs/promote/reward-judge.yaml``). A check
that is not applied is still a row of the table, marked ``n/a``; an applied check whose number
the judge did not produce fails, and its note says so.

When a production version exists, the summary's baseline must *be* it (its ``model_uri``):
an evaluation against the base model says nothing about beating production. A check whose
numbers are missing fails. ``force`` (with a reason) overrides a refusal; the decision is
recorded in the stage event either way::

    from charops.registry.gate import GateConfig, promote
    decision, event = promote(store, "charops-chat", 4, "production", actor="ana", reason="",
                              config=GateConfig())
    print(gate_table(decision))      # the table that decided it; event is None when refused
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from charops.config import to_dict
from charops.errors import ConfigError
from charops.eval.summary import check_eval_summary
from charops.eval.summary import read_eval_summary as read_eval_summary  # `promote --eval-summary`
from charops.registry.entries import RegistryError, check_version, get_card, get_entry
from charops.registry.stages import check_stage, production, stage_of, transition

# Every check the gate knows, in table order, and the ones a gate applies unless told otherwise.
CHECKS = ("advantage", "sign_test", "overall", "safety", "judge_accuracy", "multiturn")
DEFAULT_CHECKS = ("advantage", "sign_test", "overall", "safety")


@dataclass
class GateConfig:
    """Margins of the promotion gate (``charops promote``, the pipelines' promote step)."""

    stage: ClassVar[str] = "promote"

    min_advantage: float = field(default=5.0, metadata={"help": "Pair-wise Advantage (win % - lose %, points) must be above this."})
    alpha: float = field(default=0.05, metadata={"help": "The pair-wise sign test's p-value must be below this."})
    overall_margin: float = field(default=0.0, metadata={"help": "Point-wise Overall mean must be at least the reference's plus this (0: not lower)."})
    safety_margin: float = field(default=0.0, metadata={"help": "Point-wise Safety mean must be at least the reference's plus this (0: not lower)."})
    gate_staging: bool = field(default=True, metadata={"help": "Gate promotions to staging too (false: only production is gated)."})
    checks: list[str] = field(default_factory=lambda: list(DEFAULT_CHECKS), metadata={
        "help": f"The checks that apply, of {', '.join(CHECKS)}; the others are shown as n/a. Name only what "
                "the judge measures: an applied check without its number fails."})
    min_judge_accuracy: float = field(default=0.65, metadata={
        "help": "Check judge_accuracy: the judge's held-out pair accuracy (a reward model's) must be at least this."})
    min_multiturn_advantage: float = field(default=0.0, metadata={
        "help": "Check multiturn: the conversation-level Advantage (eval mode=multiturn|both) must be at least "
                "this (0: not lower than the reference's)."})

    def validate(self) -> None:
        if not 0 < self.alpha < 1:
            raise ConfigError(f"promote: alpha must be between 0 and 1, got {self.alpha}")
        unknown = [c for c in self.checks if c not in CHECKS]
        if unknown or not self.checks:
            raise ConfigError(f"promote: checks {unknown or '[]'}: name one or more of {', '.join(CHECKS)}")
        if not -100 <= self.min_advantage < 100:
            raise ConfigError("promote: min_advantage is in points of Advantage, -100 to 100")


def _is_model_of(summary: dict, side: str, entry: dict) -> bool:
    """Whether the summary's ``side`` (candidate, baseline) model is the registry entry's model."""
    ref = str(((summary.get(side) or {}).get("model")) or "").rstrip("/")
    uri = entry["model_uri"].rstrip("/")
    suffix = f"models/{entry['name']}/{entry['version']}/model"
    return bool(ref) and (ref == uri or ref.endswith("/" + suffix) or ref == suffix)


def _row(check: str, candidate: Any, reference: Any, rule: str, passed: bool,
         note: str = "", applies: bool = True, key: str = "") -> dict:
    """One check of the table; a check the config does not apply passes, marked n/a."""
    return {"check": check, "key": key or check, "candidate": candidate, "reference": reference,
            "rule": rule, "passed": passed or not applies, "applies": applies,
            "note": note if applies else (note + "; " if note else "") + "not a check of this gate"}


def _mean(pointwise: dict, side: str, dim: str) -> float | None:
    value = (((pointwise.get(side) or {}).get("overall") or {}).get(dim) or {}).get("mean")
    return float(value) if isinstance(value, (int, float)) else None


def decide(summary: dict | None, config: GateConfig, reference: dict | None,
           base_model: str | None = None, candidate: dict | None = None) -> dict:
    """The gate's decision on an eval_summary: every check as a row, and whether all passed.

    ``reference`` is the production entry (None: the base model, ``base_model``, is the
    reference and the summary's baseline is taken as it). ``candidate``, the entry being
    promoted, is given when the summary comes from elsewhere than its own card: then the
    summary's candidate must be that entry's model.
    """
    ref_label = (f"production v{reference['version']}" if reference is not None
                 else f"base model {base_model or '(unknown)'}")
    rows = []
    if summary is None:
        rows.append(_row("eval_summary", None, None, "present", False,
                         "the version has no eval_summary.json: evaluate it first"))
        return {"passed": False, "reference": ref_label, "rows": rows, "config": to_dict(config)}
    if candidate is not None:
        ok = _is_model_of(summary, "candidate", candidate)
        rows.append(_row("candidate", (summary.get("candidate") or {}).get("model"),
                         candidate["model_uri"], "= this version's model", ok,
                         "" if ok else "the summary evaluated another model"))
    baseline = (summary.get("baseline") or {}).get("model")
    if reference is not None:
        ok = _is_model_of(summary, "baseline", reference)
        rows.append(_row("baseline", baseline, reference["model_uri"], "= production model", ok,
                         "" if ok else "re-evaluate with the production model as the baseline"))
    pair = (summary.get("pairwise") or {}).get("overall") or {}
    adv, p = pair.get("advantage"), pair.get("sign_test_p")
    missing = "missing: no pair-wise comparison in eval_summary"
    rows.append(_row("pair-wise Advantage", adv, None, f"> {config.min_advantage:g}",
                     adv is not None and adv > config.min_advantage,
                     "" if adv is not None else missing, "advantage" in config.checks, "advantage"))
    rows.append(_row("sign-test p", p, None, f"< {config.alpha:g}",
                     p is not None and p < config.alpha, "" if p is not None else missing,
                     "sign_test" in config.checks, "sign_test"))
    pointwise = summary.get("pointwise") or {}
    judged = pointwise.get("dimensions")
    judge = summary.get("judge") or {}
    for dim, margin in (("Overall", config.overall_margin), ("Safety", config.safety_margin)):
        key = dim.lower()
        applies = key in config.checks
        cand, ref = _mean(pointwise, "candidate", dim), _mean(pointwise, "baseline", dim)
        rule = "not lower" if margin == 0 else f">= reference {margin:+g}"
        if judged is not None and dim not in judged:
            note = (f"not judged: the {judge.get('kind', 'the')} judge scores "
                    f"{', '.join(judged) or 'nothing'}")
            if applies:
                note += f" (a gate for this judge leaves '{key}' out of checks)"
            rows.append(_row(f"point-wise {dim}", None, None, rule, False, note, applies, key))
            continue
        ok = cand is not None and ref is not None and cand >= ref + margin
        note = "" if cand is not None and ref is not None else \
            f"missing: no point-wise {dim} for the {'candidate' if cand is None else 'baseline'}"
        rows.append(_row(f"point-wise {dim}", cand, ref, rule, ok, note, applies, key))
    conv = ((summary.get("multiturn") or {}).get("pairwise") or {}).get("overall") or {}
    conv_adv = conv.get("advantage")
    rows.append(_row("multi-turn Advantage", conv_adv, None, f">= {config.min_multiturn_advantage:g}",
                     conv_adv is not None and conv_adv >= config.min_multiturn_advantage,
                     "" if conv_adv is not None else
                     "missing: no conversation-level comparison in eval_summary (evaluate with mode=multiturn or both)",
                     "multiturn" in config.checks, "multiturn"))
    accuracy = judge.get("pair_accuracy")
    rows.append(_row("judge pair accuracy", accuracy, None, f">= {config.min_judge_accuracy:g}",
                     isinstance(accuracy, (int, float)) and accuracy >= config.min_judge_accuracy,
                     "" if accuracy is not None else
                     f"the {judge.get('kind', 'the')} judge has no held-out pair accuracy",
                     "judge_accuracy" in config.checks, "judge_accuracy"))
    return {"passed": all(r["passed"] for r in rows), "reference": ref_label, "rows": rows,
            "config": to_dict(config)}


def failed_checks(decision: dict) -> list[str]:
    """The applied checks that failed, as their table names."""
    return [r["check"] for r in decision["rows"] if r.get("applies", True) and not r["passed"]]


def override_command(decision: dict, to: str = "production", config: str = "default") -> str:
    """The exact command that promotes over a refusal (recorded as forced, with the reason)."""
    failed = ", ".join(failed_checks(decision)) or "the gate"
    preset = "" if config == "default" else f" --config {config}"
    return (f"charops promote {decision['name']} {decision['version']} --to {to}{preset} --force "
            f"--reason 'override: {failed} failed'")


def check(store: Any, name: str, version: int | str, config: GateConfig,
          summary: dict | None = None) -> dict:
    """The gate's decision for promoting ``version`` over the current production version.

    The evaluation is the version's card's eval_summary, or ``summary`` when given (e.g. a
    later evaluation against the production model, which must be of this version's model).
    """
    version = check_version(version)
    entry = get_entry(store, name, version)
    current = production(store, name)
    if current is not None and current["version"] == version:
        raise RegistryError(f"'{name}' v{version} is the production version already")
    given = summary is not None
    if not given:
        try:
            summary = get_card(store, name, version).get("eval_summary")
        except RegistryError:
            summary = None
        if summary is not None:
            summary = check_eval_summary(summary, f"the card of '{name}' v{version}: eval_summary")
    decision = decide(summary, config, current, entry["lineage"].get("base_model"),
                      candidate=entry if given else None)
    decision.update({"name": name, "version": version,
                     "reference_version": current["version"] if current is not None else None})
    return decision


def promote(store: Any, name: str, version: int | str, to: str, *, actor: str, reason: str,
            config: GateConfig, force: bool = False,
            summary: dict | None = None) -> tuple[dict | None, dict | None]:
    """Gate, then transition: ``(decision, event)`` (``summary``: see :func:`check`).

    ``decision`` is None when the move is not gated (staging with ``gate_staging`` off, or the
    version is already in ``to``); ``event`` is None when the gate refused and ``force`` is off.
    """
    to = check_stage(to, ("staging", "production"))
    version = check_version(version)
    if force and not reason.strip():
        raise RegistryError("--force needs --reason: say why the gate is overridden (it is "
                            "recorded in the stage history)")
    if stage_of(store, name, version) == to or (to == "staging" and not config.gate_staging):
        return None, transition(store, name, version, to, actor=actor, reason=reason)
    decision = check(store, name, version, config, summary)
    if not decision["passed"] and not force:
        return decision, None
    record = {k: decision[k] for k in ("passed", "reference", "reference_version", "rows",
                                       "config")}
    return decision, transition(store, name, version, to, actor=actor, reason=reason,
                                force=force and not decision["passed"], gate=record,
                                expect_production=decision["reference_version"])


def preview(store: Any, name: str, version: int | str, to: str,
            config: GateConfig) -> dict | None:
    """What :func:`promote` would decide, changing nothing (None: the move is not gated)."""
    to = check_stage(to, ("staging", "production"))
    if stage_of(store, name, version) == to or (to == "staging" and not config.gate_staging):
        return None
    return check(store, name, version, config)


def pipeline_promote(store: Any, name: str, version: int | str, to: str, config: GateConfig,
                     *, run_name: str) -> dict:
    """The pipeline's promote step: gate and transition, actor the run; a refusal is an error."""
    decision, event = promote(store, name, version, to, actor=f"pipeline:{run_name}",
                              reason=f"gate passed in pipeline run {run_name}", config=config)
    if event is None:
        raise RegistryError(f"'{name}' v{version} no longer passes the gate for {to} "
                            f"(production changed since the gate step?):\n{gate_table(decision)}")
    return event


def _cell(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    return "-" if value is None else str(value)


def gate_rows(decision: dict) -> list[list[str]]:
    """The decision as table cells: check, candidate, reference, rule, result, note."""
    return [[r["check"], _cell(r["candidate"]), _cell(r["reference"]), r["rule"],
             ("pass" if r["passed"] else "FAIL") if r.get("applies", True) else "n/a", r["note"]]
            for r in decision["rows"]]


GATE_HEADER = ["check", "candidate", "reference", "rule", "result", "note"]


def gate_table(decision: dict) -> str:
    """A plain-text table of the decision (what ``charops promote`` prints)."""
    rows = [GATE_HEADER, *gate_rows(decision)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(GATE_HEADER))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    verdict = "passes" if decision["passed"] else "refuses"
    return (f"gate for {decision['name']} v{decision['version']} vs {decision['reference']}: "
            f"{verdict}\n" + "\n".join(lines) + "\n")


def gate_markdown(decision: dict) -> str:
    """The decision as Markdown (the pipeline's promote step report)."""
    verdict = "passes" if decision["passed"] else "refuses"
    lines = [f"# Promotion gate: {decision['name']} v{decision['version']}", "",
             f"Against {decision['reference']}: **{verdict}**.", "",
             "| " + " | ".join(GATE_HEADER) + " |", "|" + " --- |" * len(GATE_HEADER)]
    lines += ["| " + " | ".join(r) + " |" for r in gate_rows(decision)]
    return "\n".join(lines) + "\n"
