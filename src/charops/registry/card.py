"""Model cards: ``models/<name>/<version>/card.json`` and a README-style ``README.md``.

A card says what a registry entry is and where it came from: the pipeline run and version,
the dataset (manifest content hash), the base model, the training stage's config (from the
model directory's ``training_summary.json``), the evaluation (``eval_summary.json`` of the
reports, when the evaluation wrote one), the characters the model was trained on (the model
directory's ``characters.jsonl``), when it was made, and the size and sha256 of every file
(the publish manifests). ``register`` writes both files before the entry::

    from charops.registry.card import build_card, card_markdown
    inputs = read_inputs("runs/dpo/model", "runs/eval")      # before uploading anything
    card = build_card(entry=entry, inputs=inputs, model_manifest=..., reports_manifest=...)
    print(card_markdown(card))
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from charops.errors import CharopsError
from charops.eval.summary import read_eval_summary as read_summary

CARD_SCHEMA = "charops.model_card/v1"
# Profile fields shown in the card (the full profiles stay in the model's characters.jsonl).
_CHARACTER_FIELDS = ("name", "category", "language", "identity", "occupation")
_TRAINING_FIELDS = ("stage", "config", "base_model", "dataset", "steps", "epochs",
                    "final_loss", "world_size", "versions")


def _read_json(path: Path) -> Any:
    try:
        return json.loads(_read_text(path))
    except json.JSONDecodeError as exc:
        raise CharopsError(f"{path}: not valid JSON ({exc.msg}, line {exc.lineno})") from None


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise CharopsError(f"{path}: not UTF-8 text (bad byte at offset {exc.start}); is it the "
                           "file the training step wrote?") from None


def read_characters(model_dir: Path) -> list[dict]:
    """The short form of each profile in ``model_dir/characters.jsonl`` ([] when absent)."""
    path = model_dir / "characters.jsonl"
    if not path.is_file():
        return []
    out = []
    for lineno, line in enumerate(_read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            profile = json.loads(line)
        except json.JSONDecodeError as exc:
            raise CharopsError(f"{path} line {lineno}: not valid JSON ({exc.msg})") from None
        if not isinstance(profile, dict) or not profile.get("name"):
            raise CharopsError(f"{path} line {lineno}: a character profile needs a 'name'")
        out.append({k: profile[k] for k in _CHARACTER_FIELDS if profile.get(k)})
    from charops.serve.characters import trained_names

    trained = trained_names(model_dir)  # None: the training did not record it (every one counts)
    for c in out:
        if trained is not None and c["name"] not in trained:
            c["trained"] = False  # all its training data was rejected
    return out


def read_training(model_dir: Path) -> dict | None:
    """The training stage that made the model: its config, inputs and headline numbers."""
    path = model_dir / "training_summary.json"
    if not path.is_file():
        return None
    summary = _read_json(path)
    if not isinstance(summary, dict):
        raise CharopsError(f"{path}: not a training summary (a JSON {type(summary).__name__}, not "
                           "an object); register the output of a training step")
    return {k: summary[k] for k in _TRAINING_FIELDS if k in summary}


def read_eval_summary(reports_dir: Path | None) -> dict | None:
    """The reports' ``eval_summary.json``, checked (:mod:`charops.eval.summary`); None without one."""
    path = reports_dir / "eval_summary.json" if reports_dir is not None else None
    return read_summary(path) if path is not None and path.exists() else None


def read_inputs(model_dir: str | Path, reports_dir: str | Path | None) -> dict:
    """What the card takes from the local directories; read (and checked) before any upload."""
    model_dir = Path(model_dir)
    return {"training": read_training(model_dir),
            "eval_summary": read_eval_summary(Path(reports_dir) if reports_dir is not None else None),
            "characters": read_characters(model_dir)}


def build_card(*, entry: dict, inputs: dict, model_manifest: dict,
               reports_manifest: dict | None) -> dict:
    """The card of ``entry`` (the registry entry about to be written); ``inputs`` from read_inputs."""
    files = {f"model/{rel}": meta for rel, meta in model_manifest["files"].items()}
    if reports_manifest is not None:
        files.update({f"reports/{rel}": meta for rel, meta in reports_manifest["files"].items()})
    lineage = entry["lineage"]
    return {
        "schema": CARD_SCHEMA,
        "name": entry["name"],
        "version": entry["version"],
        "created_at": entry["created_at"],
        "charops_version": entry["charops_version"],
        "pipeline": {"version": lineage.get("pipeline_version"), "run_id": lineage.get("run_id"),
                     "run_name": lineage.get("run_name")},
        "dataset_sha256": lineage.get("dataset_sha256"),
        "base_model": lineage.get("base_model"),
        "training": inputs["training"],
        "eval_summary": inputs["eval_summary"],
        "metrics": entry["metrics"],
        "characters": inputs["characters"],
        "model_uri": entry["model_uri"],
        "reports_uri": entry["reports_uri"],
        "model_sha256": entry["model_sha256"],
        "files": files,
    }


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def _eval_lines(summary: dict) -> list[str]:
    lines = ["## Evaluation", ""]
    judge = summary.get("judge") or {}
    baseline = (summary.get("baseline") or {}).get("model")
    lines.append(f"Judge: {judge.get('kind', 'none')} {judge.get('model') or ''}".rstrip()
                 + (f"; baseline: `{baseline}`" if baseline else "; no baseline"))
    pairwise = (summary.get("pairwise") or {}).get("overall")
    if pairwise:
        lines += ["", "| pair-wise vs baseline | win % | tie % | lose % | Advantage | n | sign-test p |",
                  "| --- | --- | --- | --- | --- | --- | --- |",
                  f"| overall | {_fmt(pairwise.get('win'))} | {_fmt(pairwise.get('tie'))} | "
                  f"{_fmt(pairwise.get('lose'))} | {_fmt(pairwise.get('advantage'))} | "
                  f"{_fmt(pairwise.get('n'))} | {_fmt(pairwise.get('sign_test_p'))} |"]
    pointwise = summary.get("pointwise") or {}
    cand = ((pointwise.get("candidate") or {}).get("overall")) or {}
    base = ((pointwise.get("baseline") or {}).get("overall")) or {}
    if cand:
        lines += ["", "| point-wise (1-5) | candidate | baseline |", "| --- | --- | --- |"]
        for dim in pointwise.get("dimensions") or sorted(cand):
            lines.append(f"| {dim} | {_fmt((cand.get(dim) or {}).get('mean'))} | "
                         f"{_fmt((base.get(dim) or {}).get('mean'))} |")
    for note in summary.get("skipped") or []:
        lines.append(f"- skipped: {note}")
    return lines + [""]


def card_markdown(card: dict) -> str:
    """The README-style card: what a person reads on the registry entry."""
    p = card["pipeline"]
    lines = [f"# {card['name']} v{card['version']}", "",
             "A character role-play chat model trained by charops.", "",
             f"- created: {card['created_at']} (charops {card['charops_version']})",
             f"- pipeline: version `{_fmt(p['version'])}`, run `{_fmt(p['run_name'])}` "
             f"(`{_fmt(p['run_id'])}`)",
             f"- base model: `{_fmt(card['base_model'])}`",
             f"- dataset (manifest content sha256): `{_fmt(card['dataset_sha256'])}`",
             f"- model: `{card['model_uri']}` (tree sha256 `{card['model_sha256']}`)", ""]
    lines += ["## Characters", ""]
    if card["characters"]:
        lines += ["| name | category | language | identity |", "| --- | --- | --- | --- |"]
        lines += [f"| {c['name']}{'' if c.get('trained', True) else ' (untrained: all its data was rejected)'} | "
                  f"{c.get('category', '')} | {c.get('language', '')} | "
                  f"{' '.join(c.get('identity', '').split())[:80]} |" for c in card["characters"]]
    else:
        lines.append("None recorded (the model directory has no characters.jsonl).")
    lines.append("")
    training = card["training"]
    lines += ["## Training", ""]
    if training:
        lines += [f"Last stage: {training.get('stage')}, {_fmt(training.get('steps'))} steps, "
                  f"final loss {_fmt(training.get('final_loss'))}.", "", "```json",
                  json.dumps(training.get("config"), indent=2, sort_keys=True,
                             ensure_ascii=False), "```", ""]
    else:
        lines += ["No training summary in the model directory.", ""]
    if card["eval_summary"]:
        lines += _eval_lines(card["eval_summary"])
    numbers = {k: v for k, v in card["metrics"].items() if isinstance(v, (int, float))}
    if numbers:
        lines += ["## Held-out metrics", "", "| metric | value |", "| --- | --- |"]
        lines += [f"| {k} | {v:.6g} |" for k, v in sorted(numbers.items())] + [""]
    lines += ["## Files", "", "| file | bytes | sha256 |", "| --- | --- | --- |"]
    lines += [f"| {rel} | {meta['size']} | `{meta['sha256']}` |"
              for rel, meta in sorted(card["files"].items())]
    return "\n".join(lines) + "\n"


# The top-level fields of a card and their types (what ``build_card`` writes, what readers use).
_CARD_FIELDS: dict[str, tuple[type, ...]] = {
    "name": (str,), "version": (int,), "created_at": (str,), "charops_version": (str,),
    "pipeline": (dict,), "training": (dict, type(None)), "eval_summary": (dict, type(None)),
    "metrics": (dict,), "characters": (list,), "model_uri": (str,), "model_sha256": (str,),
    "files": (dict,)}


def card_problem(card: Any) -> str | None:
    """What is wrong with a stored card's shape (None when ``build_card`` could have written it):
    a card edited by hand is reported as such instead of failing on a missing key."""
    if not isinstance(card, dict):
        return f"it holds a JSON {type(card).__name__}, not an object"
    for field, kinds in _CARD_FIELDS.items():
        if field not in card or not isinstance(card[field], kinds) or isinstance(card[field], bool):
            return f"its '{field}' is missing or not a {' or '.join(k.__name__ for k in kinds)}"
    missing = [k for k in ("base_model", "dataset_sha256") if k not in card] + \
        [f"pipeline.{k}" for k in ("version", "run_id", "run_name") if k not in card["pipeline"]]
    if missing:
        return f"it has no '{missing[0]}'"
    if not all(isinstance(c, dict) and isinstance(c.get("name"), str) for c in card["characters"]):
        return "its 'characters' are not profiles with a 'name'"
    if not all(isinstance(m, dict) and isinstance(m.get("size"), int) and isinstance(m.get("sha256"), str)
               for m in card["files"].values()):
        return "its 'files' are not {size, sha256} records"
    return None
