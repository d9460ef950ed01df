"""Generate charops' bundled sample data: characters, dialogues, preference pairs, corpus.

    .venv/bin/python scripts/make_samples.py               # rewrite src/charops/data/samples/
    .venv/bin/python scripts/make_samples.py --out /tmp/s  # write somewhere else
    .venv/bin/python scripts/make_samples.py --check       # exit 1 if the committed files are stale

The content lives in data files, one YAML file per character under ``scripts/samples/`` (read in
file-name order) plus ``scripts/samples/generic.yaml``; this script only composes, checks and
writes. Every sentence in them was written for charops; the characters, places, games and events
are invented (no real people, no characters from existing works). A character file holds the
fields of :class:`Character`: ``profile`` (a CharacterProfile), ``openers`` / ``closers`` /
``exchanges`` (per topic) as [user line, character reply] pairs, which make the dialogues;
``scenes`` (multi-party, [role, text, speaker name]); ``off_profile`` [topic, user line, chosen,
rejected] pairs which, with the exchanges and the generic assistant-speak, make the preference
pairs; ``prose`` [title, text] and slot-filled document ``families`` (match reports, menus, item
lore, gig notes, diaries...), which make the pretraining corpus; optionally
``dialogues_per_topic`` and ``generic_pairs_per_topic``. To add data, edit the YAML and rerun this script.

Output is deterministic: every random choice comes from ``random.Random`` seeded with a string
(string seeds are hashed with SHA-512, so PYTHONHASHSEED does not matter), and records are written
as canonical JSON through :func:`charops.io.write_jsonl`. Each record is validated by the pydantic
models in :mod:`charops.data.schema`; any record that does not validate, or any authoring slip the
checks below catch (a reply without a stage direction, two dialogues sharing more than half of
their character lines, ...), stops the script with a message naming the record.
"""

from __future__ import annotations

import argparse
import filecmp
import random
import re
import sys
import tempfile
from dataclasses import dataclass, field, fields
from pathlib import Path

import yaml
from pydantic import BaseModel, ValidationError

from charops.data.schema import CharacterProfile, CorpusDocument, Dialogue, PreferencePair
from charops.errors import DataError
from charops.io import write_jsonl, write_text

SOURCE = "charops-samples"
SEED = "charops-samples-v1"
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "src" / "charops" / "data" / "samples"
FILES = ("characters.jsonl", "dialogues.jsonl", "preferences.jsonl", "corpus.jsonl", "eval_prompts.jsonl",
         "README.md")
TOPIC_ORDER = ("chit-chat", "interview", "love")

# Dialogues per character and topic, and generic-rejected pairs per character and topic. With
# eight characters: 8 * 3 * 9 + scenes >= 200 dialogues, 8 * (off-profile + 3 * 3) >= 100 pairs.
DIALOGUES_PER_TOPIC = 9
GENERIC_PAIRS_PER_TOPIC = 3

# Stage directions: full-width parentheses in Chinese, ASCII parentheses in English.
STAGE = {"zh": re.compile(r"（[^（）]{1,20}）"), "en": re.compile(r"\([^()]{1,64}\)")}
WRONG_PAREN = {"zh": re.compile(r"[()]"), "en": re.compile(r"[（）]")}

# Bounds the generator checks so that a change to the banks cannot silently shrink the data.
MIN_COUNTS = {"characters": 8, "dialogues": 200, "preferences": 100, "corpus_bytes": 200_000}


@dataclass(frozen=True)
class DocFamily:
    """Documents composed by picking one variant per slot and filling ``{placeholders}``.

    ``fills`` maps a placeholder to its candidate values; one value is drawn per document, so a
    name used in two slots of the same document stays the same. ``cases`` are sets of values
    that belong together (a dish and its steps) and are drawn as one.
    """

    title: str
    slots: list[list[str]]
    fills: dict[str, list[str]]
    count: int
    breaks: tuple[int, ...] = ()  # paragraph break after these slot indices
    # Linked values drawn together (a dish with its own ingredients and steps), so slots that
    # must agree with each other never mix.
    cases: list[dict[str, str]] = field(default_factory=list)


@dataclass(frozen=True)
class Character:
    """One character's profile and every fragment the records are composed from."""

    profile: dict
    openers: list[tuple[str, str]]  # (user greeting, character reply)
    closers: list[tuple[str, str]]  # (user goodbye, character reply)
    exchanges: dict[str, list[tuple[str, str]]]  # topic -> (user line, character reply)
    scenes: list[tuple[str, list[tuple[str, str, str | None]]]]  # (topic, [(role, text, name)])
    off_profile: list[tuple[str, str, str, str]]  # (topic, user line, chosen, rejected off-profile)
    prose: list[tuple[str, str]]  # (title, hand-written text)
    families: list[DocFamily] = field(default_factory=list)
    dialogues_per_topic: int = DIALOGUES_PER_TOPIC  # composed dialogues per topic (scenes come on top)
    generic_pairs_per_topic: int = GENERIC_PAIRS_PER_TOPIC  # pairs whose rejected reply is generic
    # topic -> held-out user lines: evaluation prompts (never trained on), one Dialogue each.
    eval_prompts: dict[str, list[str]] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.profile["name"]

    @property
    def language(self) -> str:
        return self.profile["language"]


# ---------------------------------------------------------------------------------------------
# The banks: one YAML file per character under scripts/samples/ (read in file-name order), plus
# generic.yaml, the generic assistant-speak rejected replies are made of.
# ---------------------------------------------------------------------------------------------

BANKS = Path(__file__).resolve().parent / "samples"
_CHARACTER_KEYS = {f.name for f in fields(Character)}
_FAMILY_KEYS = {f.name for f in fields(DocFamily)}


def _read_yaml(path: Path):
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise DataError(f"{path}: not valid YAML ({exc})") from None


def _pairs(rows: list, width: int, where: str) -> list[tuple]:
    for row in rows:
        if not isinstance(row, list) or len(row) != width:
            raise DataError(f"{where}: expected a list of {width} items, got {row!r}")
    return [tuple(row) for row in rows]


def load_character(path: Path) -> Character:
    """One character's bank from its YAML file (keys: the fields of :class:`Character`)."""
    d = _read_yaml(path)
    if not isinstance(d, dict) or set(d) - _CHARACTER_KEYS or "profile" not in d:
        unknown = sorted(set(d) - _CHARACTER_KEYS) if isinstance(d, dict) else "not a mapping"
        raise DataError(f"{path}: expected the keys {sorted(_CHARACTER_KEYS)} (profile required); got {unknown}")
    families = []
    for i, fam in enumerate(d.get("families") or []):
        if set(fam) - _FAMILY_KEYS:
            raise DataError(f"{path}: families[{i}]: unknown keys {sorted(set(fam) - _FAMILY_KEYS)}")
        families.append(DocFamily(**{**fam, "breaks": tuple(fam.get("breaks", ()))}))
    return Character(
        profile=d["profile"],
        openers=_pairs(d.get("openers") or [], 2, f"{path}: openers"),
        closers=_pairs(d.get("closers") or [], 2, f"{path}: closers"),
        exchanges={topic: _pairs(bank, 2, f"{path}: exchanges.{topic}") for topic, bank in (d.get("exchanges") or {}).items()},
        scenes=[(topic, _pairs(turns, 3, f"{path}: scenes")) for topic, turns in _pairs(d.get("scenes") or [], 2, f"{path}: scenes")],
        off_profile=_pairs(d.get("off_profile") or [], 4, f"{path}: off_profile"),
        prose=_pairs(d.get("prose") or [], 2, f"{path}: prose"),
        families=families,
        eval_prompts={topic: [str(line) for line in lines] for topic, lines in (d.get("eval_prompts") or {}).items()},
        **{k: d[k] for k in ("dialogues_per_topic", "generic_pairs_per_topic") if k in d},
    )


def load_characters(banks: Path = BANKS) -> list[Character]:
    return [load_character(p) for p in sorted(banks.glob("[0-9]*.yaml"))]


CHARACTERS: list[Character] = load_characters()
# Generic assistant-speak for rejected replies (language -> opening / topic / closing variants).
GENERIC: dict[str, dict[str, list[str]]] = _read_yaml(BANKS / "generic.yaml")


# ---------------------------------------------------------------------------------------------
# Composition.
# ---------------------------------------------------------------------------------------------


def _rng(*parts: str) -> random.Random:
    return random.Random("/".join((SEED, *parts)))


def _turn(role: str, content: str, name: str | None = None) -> dict:
    turn = {"role": role, "content": content}
    if name is not None:
        turn["name"] = name
    return turn


def _shares_too_much(lines: set[str], others: list[set[str]]) -> bool:
    """True when ``lines`` shares more than half of its (or another's) character lines."""
    return any(2 * len(lines & o) > min(len(lines), len(o)) for o in others)


def compose_dialogues(char: Character) -> list[tuple[str, list[dict], dict]]:
    """(topic, turns, meta) for one character: composed dialogues per topic, then its scenes.

    A dialogue is an optional opener, two to four exchanges of one topic in random order and an
    optional closer, kept only if it shares at most half of its character lines with every
    dialogue of this character accepted so far (so no two are near-copies).
    """
    rng = _rng(char.name, "dialogues")
    seen: list[set[str]] = []
    out: list[tuple[str, list[dict], dict]] = []
    for topic in TOPIC_ORDER:
        bank = char.exchanges[topic]
        made = 0
        for _ in range(20_000):
            if made == char.dialogues_per_topic:
                break
            parts = rng.sample(bank, min(rng.choice((2, 3, 3, 4)), len(bank)))
            if rng.random() < 0.6:
                parts.insert(0, rng.choice(char.openers))
            if rng.random() < 0.5:
                parts.append(rng.choice(char.closers))
            if len(parts) < 3:
                continue
            lines = {reply for _, reply in parts}
            if _shares_too_much(lines, seen):
                continue
            seen.append(lines)
            turns = [t for user, reply in parts
                     for t in (_turn("user", user), _turn("assistant", reply))]
            out.append((topic, turns, {}))
            made += 1
        else:
            raise DataError(f"{char.name}: could not compose {char.dialogues_per_topic} distinct "
                            f"'{topic}' dialogues; add exchanges, openers or closers to its bank")
    for topic, scene in char.scenes:
        turns = [_turn(role, text, name) for role, text, name in scene]
        lines = {t["content"] for t in turns if t["role"] == "assistant"}
        if _shares_too_much(lines, seen):
            raise DataError(f"{char.name}: a '{topic}' scene repeats lines of another dialogue")
        seen.append(lines)
        out.append((topic, turns, {"multi_party": True}))
    return out


def generic_reply(language: str, topic: str, rng: random.Random) -> str:
    bank = GENERIC[language]
    sep = "" if language == "zh" else " "
    parts = (rng.choice(bank["opening"]), rng.choice(bank[topic]), rng.choice(bank["closing"]))
    return sep.join(parts)


def compose_pairs(char: Character) -> list[tuple[str, list[dict], str, str, dict]]:
    """(topic, context, chosen, rejected, meta): authored off-profile pairs, then generic ones."""
    rng = _rng(char.name, "preferences")
    out = []

    def context(user: str) -> list[dict]:
        # Half the pairs open with a greeting exchange so the context is multi-turn too.
        if rng.random() < 0.5:
            greet, reply = rng.choice(char.openers)
            return [_turn("user", greet), _turn("assistant", reply), _turn("user", user)]
        return [_turn("user", user)]

    for topic, user, chosen, rejected in char.off_profile:
        out.append((topic, context(user), chosen, rejected, {"rejected_kind": "off-profile"}))
    used: set[str] = set()
    for topic in TOPIC_ORDER:
        for user, chosen in rng.sample(char.exchanges[topic], char.generic_pairs_per_topic):
            rejected = generic_reply(char.language, topic, rng)
            while rejected in used:
                rejected = generic_reply(char.language, topic, rng)
            used.add(rejected)
            meta = {"rejected_kind": "generic-assistant"}
            out.append((topic, context(user), chosen, rejected, meta))
    return out


def compose_documents(char: Character) -> list[str]:
    """Hand-written prose first, then each family's slot-filled documents (all distinct)."""
    rng = _rng(char.name, "corpus")
    sep = "" if char.language == "zh" else " "
    docs = [f"{title}\n\n{text}" for title, text in char.prose]
    for fam in char.families:
        made: set[str] = set()
        for _ in range(fam.count * 200):
            if len(made) == fam.count:
                break
            values = {key: rng.choice(options) for key, options in fam.fills.items()}
            if fam.cases:
                values.update(rng.choice(fam.cases))
            paragraphs, current = [], []
            for i, slot in enumerate(fam.slots):
                current.append(rng.choice(slot).format_map(values))
                if i in fam.breaks:
                    paragraphs.append(sep.join(current))
                    current = []
            if current:
                paragraphs.append(sep.join(current))
            text = fam.title.format_map(values) + "\n\n" + "\n\n".join(paragraphs)
            if "{" in text or "}" in text:
                raise DataError(f"{char.name}: family '{fam.title}' left a placeholder unfilled")
            if text not in made:
                made.add(text)
                docs.append(text)
        else:
            raise DataError(f"{char.name}: family '{fam.title}' cannot make {fam.count} distinct "
                            "documents; add slot variants or fills")
    return docs


# ---------------------------------------------------------------------------------------------
# Checks and validation.
# ---------------------------------------------------------------------------------------------


def _validate(model: type[BaseModel], record: dict, where: str) -> dict:
    """Validate through the schema and return the canonical dump (None fields left out)."""
    try:
        return model.model_validate(record).model_dump(mode="json", exclude_none=True)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"]) or "record"
        raise DataError(f"{where}: field '{loc}': {first['msg']}; fix the bank in "
                        "scripts/samples/") from None


def _check_reply(char: Character, text: str, where: str) -> None:
    lang = char.language
    if not STAGE[lang].search(text):
        kind = "full-width （…）" if lang == "zh" else "(…)"
        raise DataError(f"{where}: {char.name}'s reply has no {kind} stage direction: "
                        f"{text[:40]!r}")
    if WRONG_PAREN[lang].search(text):
        raise DataError(f"{where}: {char.name}'s reply mixes the other language's parentheses: "
                        f"{text[:40]!r}")


def _check_rejected(char: Character, text: str, where: str) -> None:
    if STAGE["zh"].search(text) or STAGE["en"].search(text):
        raise DataError(f"{where}: rejected reply carries a stage direction: {text[:40]!r}")
    for phrase in char.profile["catchphrases"]:
        if phrase.rstrip("。！!.～") in text:
            raise DataError(f"{where}: rejected reply uses the catchphrase {phrase!r}")


# ---------------------------------------------------------------------------------------------
# Build and write.
# ---------------------------------------------------------------------------------------------


def compose_eval_prompts(char: Character) -> list[tuple[str, list[dict]]]:
    """(topic, turns) of the character's held-out evaluation prompts: one user line each, no
    reply (the model under evaluation writes it). A line that also opens a training exchange
    would not be held out, so it stops the script."""
    trained = {user for bank in (char.openers, char.closers, *char.exchanges.values()) for user, _ in bank}
    trained |= {user for _, user, _, _ in char.off_profile}
    out = []
    for topic in TOPIC_ORDER:
        for line in char.eval_prompts.get(topic, []):
            if line in trained:
                raise DataError(f"{char.name}: eval prompt {line!r} is also a training line; "
                                "an evaluation prompt must be held out")
            out.append((topic, [_turn("user", line)]))
    unknown = set(char.eval_prompts) - set(TOPIC_ORDER)
    if unknown:
        raise DataError(f"{char.name}: eval_prompts has unknown topics {sorted(unknown)}")
    return out


def build() -> dict[str, list[dict]]:
    """Every record, validated and checked, keyed by output file."""
    profiles, dialogues, pairs, documents, prompts = [], [], [], [], []
    names = [c.name for c in CHARACTERS]
    if len(set(names)) != len(names):
        raise DataError("two characters share a name; names must be unique")
    for char in CHARACTERS:
        profiles.append(_validate(CharacterProfile, {**char.profile, "source": SOURCE},
                                  f"profile {char.name}"))
        for topic, turns, meta in compose_dialogues(char):
            did = f"dlg-{len(dialogues) + 1:04d}"
            for t in turns:
                if t["role"] == "assistant":
                    _check_reply(char, t["content"], did)
            dialogues.append(_validate(Dialogue, {
                "id": did, "character": char.name, "topic": topic, "turns": turns,
                "source": SOURCE, "meta": meta}, f"dialogue {did}"))
        for topic, ctx, chosen, rejected, meta in compose_pairs(char):
            pid = f"pref-{len(pairs) + 1:04d}"
            _check_reply(char, chosen, pid)
            _check_rejected(char, rejected, pid)
            pairs.append(_validate(PreferencePair, {
                "id": pid, "character": char.name, "topic": topic, "context": ctx,
                "chosen": chosen, "rejected": rejected, "source": SOURCE, "meta": meta},
                f"preference {pid}"))
        for topic, turns in compose_eval_prompts(char):
            eid = f"evp-{len(prompts) + 1:04d}"
            prompts.append(_validate(Dialogue, {
                "id": eid, "character": char.name, "topic": topic, "turns": turns,
                "source": SOURCE, "meta": {"eval_prompt": True}}, f"eval prompt {eid}"))
        for text in compose_documents(char):
            doc_id = f"doc-{len(documents) + 1:04d}"
            documents.append(_validate(CorpusDocument, {
                "id": doc_id, "text": text, "source": SOURCE, "language": char.language},
                f"document {doc_id}"))
    corpus_bytes = sum(len(d["text"].encode()) for d in documents)
    got = {"characters": len(profiles), "dialogues": len(dialogues), "preferences": len(pairs),
           "corpus_bytes": corpus_bytes}
    for key, minimum in MIN_COUNTS.items():
        if got[key] < minimum:
            raise DataError(f"only {got[key]} {key}, need at least {minimum}; extend the banks")
    return {"characters.jsonl": profiles, "dialogues.jsonl": dialogues,
            "preferences.jsonl": pairs, "corpus.jsonl": documents, "eval_prompts.jsonl": prompts}


def readme(records: dict[str, list[dict]]) -> str:
    """The samples README, with counts taken from the records themselves."""
    profiles = records["characters.jsonl"]
    dialogues = records["dialogues.jsonl"]
    pairs = records["preferences.jsonl"]
    documents = records["corpus.jsonl"]
    prompts = records["eval_prompts.jsonl"]
    lang_of = {p["name"]: p["language"] for p in profiles}
    rows = []
    for p in profiles:
        n_dlg = sum(d["character"] == p["name"] for d in dialogues)
        n_pair = sum(r["character"] == p["name"] for r in pairs)
        n_eval = sum(r["character"] == p["name"] for r in prompts)
        rows.append(f"| {p['name']} | {p['category']} | {p['language']} | {n_dlg} | {n_pair} | {n_eval} |")
    by_topic = {t: sum(d["topic"] == t for d in dialogues) for t in TOPIC_ORDER}
    by_lang = {lang: sum(lang_of[d["character"]] == lang for d in dialogues)
               for lang in ("zh", "en")}
    topics = ", ".join(f"{t} {n}" for t, n in by_topic.items())
    turns = sum(len(d["turns"]) for d in dialogues)
    three_plus = sum(sum(t["role"] == "assistant" for t in d["turns"]) >= 3 for d in dialogues)
    multi = sum(bool(d["meta"].get("multi_party")) for d in dialogues)
    kinds = {k: sum(r["meta"]["rejected_kind"] == k for r in pairs)
             for k in ("generic-assistant", "off-profile")}
    doc_bytes = {lang: sum(len(d["text"].encode()) for d in documents if d["language"] == lang)
                 for lang in ("zh", "en")}
    n_docs = {lang: sum(d["language"] == lang for d in documents) for lang in ("zh", "en")}
    return f"""# Bundled sample data

Written for charops and generated by `scripts/make_samples.py`; do not edit these files by hand.
Every character, place, game, event and sentence here is original, invented for this project
(no real people, no characters from existing works) and is distributed under the project's
license (Apache-2.0). This is what the local pipeline trains on by default.

Files (native JSONL, one canonical JSON record per line; fields in `src/charops/data/schema.py`):

| file | records | what |
|---|---|---|
| `characters.jsonl` | {len(profiles)} | `CharacterProfile`: CharacterGLM attributes and behaviours, catchphrases, classic lines, greeting |
| `dialogues.jsonl` | {len(dialogues)} | `Dialogue` (`dlg-NNNN`): multi-turn, no system turn (the profile is rendered into it later) |
| `preferences.jsonl` | {len(pairs)} | `PreferencePair` (`pref-NNNN`): context ending with a user turn, chosen in character, rejected out of character |
| `corpus.jsonl` | {len(documents)} | `CorpusDocument` (`doc-NNNN`): prose for continued pretraining |
| `eval_prompts.jsonl` | {len(prompts)} | `Dialogue` (`evp-NNNN`, `meta.eval_prompt`): held-out user lines the evaluation asks for replies to |

## Characters

| name | category | language | dialogues | preference pairs | eval prompts |
|---|---|---|---|---|---|
{chr(10).join(rows)}

## Dialogues

- {len(dialogues)} dialogues, {turns} turns; topics: {topics};
  languages: zh {by_lang["zh"]}, en {by_lang["en"]}.
- {three_plus} dialogues have three or more character turns; {multi} are multi-party scenes whose
  user turns carry a `name`.
- Every character reply carries a stage direction: full-width `（好奇）` in Chinese, `(smiles)` in
  English. No two dialogues share more than half of their character lines.

## Preference pairs

- {kinds["generic-assistant"]} pairs reject generic assistant-speak ("As an AI language model...",
  "作为一个人工智能……": flat register, no stage direction, no catchphrase);
  {kinds["off-profile"]} reject an off-profile reply that contradicts a profile fact.
- Every chosen reply carries a stage direction and matches the profile; no rejected reply does.
  `meta.rejected_kind` says which kind of contrast a pair teaches.

## Evaluation prompts

- {len(prompts)} held-out prompts (topics: {", ".join(f"{t} {sum(r['topic'] == t for r in prompts)}" for t in TOPIC_ORDER)};
  languages: zh {sum(lang_of[r["character"]] == "zh" for r in prompts)}, en {sum(lang_of[r["character"]] == "en" for r in prompts)}):
  one user line each, none of them a line of the training dialogues or pairs. `charops data
  prepare` writes them to the dataset's `eval/prompts.jsonl`, which the evaluation replies to
  (CharacterGLM's pair-wise tables per category and topic are made from them).

## Corpus

- {len(documents)} documents, {doc_bytes["zh"] + doc_bytes["en"]} bytes of UTF-8 text
  (zh: {n_docs["zh"]} documents, {doc_bytes["zh"]} bytes; en: {n_docs["en"]} documents,
  {doc_bytes["en"]} bytes): character backstories and short stories, scene descriptions,
  diaries and notebooks, match reports, item lore and survey reports set in the characters'
  worlds.

## Regenerate

```
.venv/bin/python scripts/make_samples.py            # rewrites this folder
.venv/bin/python scripts/make_samples.py --check    # exit 1 if these files are stale
```

The output is byte-for-byte deterministic (string-seeded `random.Random`, canonical JSON);
`tests/unit/test_samples.py` fails when the committed files differ from what the script makes.
"""


def write(out: Path) -> dict[str, list[dict]]:
    records = build()
    for name, rows in records.items():
        write_jsonl(out / name, rows)
    write_text(out / "README.md", readme(records))
    return records


def stale_files(committed: Path) -> list[str]:
    """Names of sample files in ``committed`` that differ from a fresh generation."""
    with tempfile.TemporaryDirectory() as tmp:
        write(Path(tmp))
        return [n for n in FILES if not (committed / n).is_file()
                or not filecmp.cmp(Path(tmp) / n, committed / n, shallow=False)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help="folder to write the sample files to (default: the bundled samples)")
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 if the files in --out differ from a fresh run")
    args = parser.parse_args(argv)
    try:
        if args.check:
            stale = stale_files(args.out)
            if stale:
                print(f"error: stale sample files in {args.out}: {', '.join(stale)}; "
                      "run scripts/make_samples.py", file=sys.stderr)
                return 1
            print(f"{args.out}: up to date")
            return 0
        records = write(args.out)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    counts = ", ".join(f"{len(rows)} {name.removesuffix('.jsonl')}"
                       for name, rows in records.items())
    print(f"wrote {counts} to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
