"""The ``data prepare`` stage: character data in, a tokenized dataset directory out.

Reads profiles, dialogues, preference pairs and documents in any supported format
(charops.data.importers), normalises them and drops exact duplicates (charops.data.normalize),
splits train/validation, and writes what each training stage reads (docs/architecture.md):

- ``sft/{train,validation}.jsonl``: each dialogue as messages (the character's system prompt
  first) with ``input_ids`` and ``labels`` from the *model's* chat template: every assistant
  turn supervised (``last_turn_only``: only the last), everything else -100;
- ``dpo/{train,validation}.jsonl``: prompt messages + chosen/rejected assistant messages;
- ``pretrain/{train,validation}.jsonl``: documents packed into blocks (charops.data.tokenize);
- ``eval/prompts.jsonl``: dialogues marked ``meta.eval_prompt``, cut before the reply;
- ``characters.jsonl``, ``rejects.jsonl`` and ``manifest.json`` (counts, token statistics,
  hashes of sources and content, tokenizer sha256, config).

Nothing is dropped silently: a record too long for ``max_seq_len`` (it would have to be cut
inside an assistant turn) is a reject ``longer than max_seq_len`` like any other. The same
inputs and config give byte-identical files; the directory appears only when complete.

    charops data prepare --model runs/base --out runs/dataset
    charops data prepare data/ --model runs/base --out runs/dataset max_seq_len=512 --strict
    python -m charops.data.prepare --config default model=runs/base output_dir=runs/dataset
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from charops import __version__
from charops.data.importers.common import DEFAULT_MAX_RECORD_BYTES, LoadResult
from charops.data.schema import SCHEMA_VERSION, CharacterProfile, Dialogue, PreferencePair, Turn
from charops.data.tokenize import IGNORE_INDEX, ChatEncoder, document_separator_id, pack_documents
from charops.data.validate import NO_REPLY
from charops.errors import ConfigError, DataError
from charops.io import atomic_dir, sha256_tree, write_json, write_jsonl

SAMPLES_DIR = Path(__file__).resolve().parent / "samples"
TOO_LONG = "longer than max_seq_len"
SPLITS = ("train", "validation")
# Dialogues are rendered and tokenized this many at a time: one Rust batch call each, a
# progress-bar step each, and bounded memory on large datasets.
CHUNK = 2048


@dataclass
class PrepareConfig:
    """Inputs, tokenizer and the shape of the dataset written by ``data prepare``."""

    stage: ClassVar[str] = "data"

    inputs: list[str] = field(default_factory=list, metadata={
        "help": "Input files or directories (every .jsonl/.json/.txt inside). Empty: the bundled samples."})
    model: str = field(default="runs/base", metadata={
        "help": "Model whose tokenizer and chat template are used: local dir, s3:// prefix or hub id."})
    output_dir: str = field(default="runs/dataset", metadata={"help": "Dataset directory to write."})
    format: str = field(default="auto", metadata={"help": "Input format of every file (auto: detected per file)."})
    character: str | None = field(default=None, metadata={
        "help": "Character of chat records that do not name one (messages/ShareGPT files)."})
    validation_fraction: float = field(default=0.1, metadata={
        "help": "Share of dialogues, pairs and documents in validation (by='character': share of characters)."})
    split_by: Literal["dialogue", "character"] = field(default="dialogue", metadata={
        "help": "dialogue: by a stable hash of each id; character: whole characters held out (unseen-character eval)."})
    holdout_characters: list[str] = field(default_factory=list, metadata={
        "help": "With split_by=character: exactly these characters go to validation."})
    seed: int = field(default=0, metadata={"help": "Seed of the split hash."})
    max_seq_len: int | None = field(default=None, metadata={
        "help": "Longest example in tokens; longer dialogues/pairs/prompts are rejected, never cut. "
                "Above the model's position limit it is an error; null: that limit, at most 1024."})
    block_size: int = field(default=256, metadata={"help": "Length of a packed pretraining block."})
    last_turn_only: bool = field(default=False, metadata={
        "help": "Supervise only the last assistant turn of each dialogue (default: every assistant turn)."})
    strict: bool = field(default=False, metadata={"help": "Fail (write nothing) when any record is rejected."})
    max_record_bytes: int = field(default=DEFAULT_MAX_RECORD_BYTES, metadata={
        "help": "Larger input records (a JSONL line, an array element, a paragraph) are rejected unread."})
    allow_empty_split: bool = field(default=False, metadata={
        "help": "Write the dataset even when the train or validation split of dialogues or pairs is empty "
                "(a warning instead of an error)."})
    overwrite: bool = field(default=False, metadata={"help": "Replace an existing non-empty output_dir."})
    progress: bool = field(default=True, metadata={"help": "Show progress bars on stderr."})

    def validate(self) -> None:
        if not 0 <= self.validation_fraction < 1:
            raise ConfigError(f"validation_fraction: must be in [0, 1), got {self.validation_fraction}")
        if self.holdout_characters and self.split_by != "character":
            raise ConfigError("holdout_characters: needs split_by=character")
        if self.max_seq_len is not None and self.max_seq_len < 8:
            raise ConfigError(f"max_seq_len: must be at least 8, got {self.max_seq_len}")
        if self.block_size < 2:
            raise ConfigError(f"block_size: must be at least 2, got {self.block_size}")
        if self.max_record_bytes < 1:
            raise ConfigError(f"max_record_bytes: must be at least 1, got {self.max_record_bytes}")


# Config keys that do not change the dataset's content (kept out of the manifest so the same
# data prepared into another folder, or quietly, has the same bytes).
_NOT_CONTENT = ("output_dir", "overwrite", "progress", "allow_empty_split")
_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")


def _language(turns: list[Turn]) -> str:
    """zh when the character speaks Chinese (any CJK ideograph in its turns), else en."""
    spoken = "".join(t.content for t in turns if t.role == "assistant") or "".join(t.content for t in turns)
    return "zh" if _CJK.search(spoken) else "en"


@dataclass
class _Character:
    """How a character's examples are labelled: system prompt, category, language."""

    system: str
    category: str
    language: str


def _characters(profiles: list[CharacterProfile]) -> dict[str, _Character]:
    from charops.data.render import render_system_prompt

    return {p.name: _Character(render_system_prompt(p), p.category, p.language) for p in profiles}


def _system_message(name: str, turns: list[Turn], chars: dict[str, _Character]) -> tuple[dict, str, str]:
    """(system message, category, language) for a record of character ``name``.

    The profile's prompt comes first; a record's own system turn (a scene, a situation) follows
    it. Without a profile the record's system turn stands alone, or a one-line "you are X".
    """
    own = turns[0].content if turns and turns[0].role == "system" else None
    info = chars.get(name)
    if info is not None:
        text = info.system if own is None else f"{info.system}\n\n{own}"
        return {"role": "system", "content": text}, info.category, info.language
    language = _language(turns)
    if own is None:
        own = f"你是{name}。" if language == "zh" else f"You are {name}."
    return {"role": "system", "content": own}, "other", language


def _messages(turns: list[Turn]) -> list[dict]:
    out = []
    for t in turns:
        if t.role == "system":
            continue
        m = {"role": t.role, "content": t.content}
        if t.name:
            m["name"] = t.name
        out.append(m)
    return out


def _progress(total: int, desc: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="ex", disable=not enabled or total == 0, leave=False)


def _stats(lengths: list[int], supervised: list[int] | None = None) -> dict[str, Any]:
    n = len(lengths)
    out: dict[str, Any] = {"examples": n, "tokens": sum(lengths), "max_length": max(lengths, default=0),
                           "mean_length": round(sum(lengths) / n, 3) if n else 0.0}
    if supervised is not None:
        out["supervised_tokens"] = sum(supervised)
    return out


class _Builder:
    """Turns accepted records into rows; collects the records to reject (by id()) and why."""

    def __init__(self, cfg: PrepareConfig, tokenizer, chars: dict[str, _Character]):
        self.cfg = cfg
        self.encoder = ChatEncoder(tokenizer, last_turn_only=cfg.last_turn_only)
        self.tokenizer = tokenizer
        self.chars = chars
        self.reject: dict[int, str] = {}

    def sft(self, dialogues: list[Dialogue], bar) -> list[dict]:
        rows = []
        for at in range(0, len(dialogues), CHUNK):
            chunk = dialogues[at:at + CHUNK]
            metas, chats = [], []
            for d in chunk:
                # Turns after the last reply teach nothing (no label follows them): leave them out.
                last = max((i for i, t in enumerate(d.turns) if t.role == "assistant"), default=None)
                if last is None:
                    self.reject[id(d)] = NO_REPLY
                    continue
                system, category, language = _system_message(d.character, d.turns, self.chars)
                chats.append([system, *_messages(d.turns[:last + 1])])
                metas.append((d, category, language))
            for (d, category, language), chat, (ids, labels) in zip(metas, chats, self.encoder.encode(chats), strict=True):
                if len(ids) > self.cfg.max_seq_len:
                    self.reject[id(d)] = TOO_LONG
                    continue
                rows.append({"id": d.id, "character": d.character, "category": category, "topic": d.topic,
                             "language": language, "messages": chat, "input_ids": ids, "labels": labels})
            bar.update(len(chunk))
        return rows

    def dpo(self, pairs: list[PreferencePair], bar) -> list[dict]:
        rows = []
        for at in range(0, len(pairs), CHUNK):
            chunk = pairs[at:at + CHUNK]
            built = []
            for p in chunk:
                system, category, language = _system_message(p.character, p.context, self.chars)
                prompt = [system, *_messages(p.context)]
                built.append((p, category, language, prompt))
            # Both full conversations must fit: the trainer concatenates prompt and reply.
            full = [[*prompt, {"role": "assistant", "content": reply}]
                    for p, _, _, prompt in built for reply in (p.chosen, p.rejected)]
            counts = self.encoder.count_tokens(full)
            for i, (p, category, language, prompt) in enumerate(built):
                if max(counts[2 * i], counts[2 * i + 1]) > self.cfg.max_seq_len:
                    self.reject[id(p)] = TOO_LONG
                    continue
                rows.append({"id": p.id, "character": p.character, "category": category, "topic": p.topic,
                             "language": language, "prompt": prompt,
                             "chosen": [{"role": "assistant", "content": p.chosen}],
                             "rejected": [{"role": "assistant", "content": p.rejected}],
                             "_length": max(counts[2 * i], counts[2 * i + 1])})
            bar.update(len(chunk))
        return rows

    def eval_prompts(self, dialogues: list[Dialogue]) -> list[dict]:
        rows, chats = [], []
        for d in dialogues:
            # The prompt ends before the character's next reply; a reply present in the data
            # after the last user turn is kept as the reference answer.
            last_user = max((i for i, t in enumerate(d.turns) if t.role == "user"), default=len(d.turns) - 1)
            tail = [t.content for t in d.turns[last_user + 1:] if t.role == "assistant"]
            system, category, language = _system_message(d.character, d.turns, self.chars)
            chat = [system, *_messages(d.turns[:last_user + 1])]
            chats.append(chat)
            rows.append({"id": d.id, "character": d.character, "category": category, "topic": d.topic,
                         "language": language, "messages": chat, "reference": tail[0] if tail else None,
                         "_record": d})
        kept = []
        for row, n in zip(rows, self.encoder.count_tokens(chats, add_generation_prompt=True), strict=True):
            record = row.pop("_record")
            if n > self.cfg.max_seq_len:
                self.reject[id(record)] = TOO_LONG
            else:
                kept.append(row)
        return kept

    def pretrain(self, documents) -> tuple[list[dict], dict[str, Any]]:
        tok = self.tokenizer
        encoded = self.encoder.encode_texts([d.text for d in documents])  # no truncation
        docs = [e.ids for e in encoded]
        sep = document_separator_id(tok)
        pad = tok.pad_token_id  # load_tokenizer falls back to the separator, as training does
        rows = pack_documents(docs, self.cfg.block_size, sep, pad) if docs else []
        real = sum(len(d) + 1 for d in docs)
        return rows, {"documents": len(docs), "tokens": real, "blocks": len(rows),
                      "padding_tokens": len(rows) * self.cfg.block_size - real}


def _split(items: list, cfg: PrepareConfig, by_character: bool) -> tuple[list, list]:
    from charops.data.normalize import split_dialogues

    if by_character and cfg.split_by == "character":
        return split_dialogues(items, cfg.validation_fraction, cfg.seed, by="character",
                               holdout_characters=cfg.holdout_characters or None)
    return split_dialogues(items, cfg.validation_fraction, cfg.seed, by="dialogue")


_POSITION_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length")


DEFAULT_MAX_SEQ_LEN = 1024  # when max_seq_len is null: this, or the model's limit if lower


def check_position_limit(model_dir: Path, max_seq_len: int | None) -> int:
    """``max_seq_len`` (null: the model's position limit, at most 1024) checked against the
    model's positions before anything is tokenized; returns the length to use."""
    try:
        config = json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        config = {}  # resolve_model checked it is there; an unreadable one fails when loaded
    config = config.get("text_config", config)  # multimodal configs nest the language model's
    for key in _POSITION_KEYS:
        limit = config.get(key)
        if not isinstance(limit, int):
            continue
        if max_seq_len is None:
            return min(limit, DEFAULT_MAX_SEQ_LEN)
        if max_seq_len > limit:
            raise ConfigError(f"max_seq_len {max_seq_len} is above the model's position limit {limit} ({key} in "
                              f"{Path(model_dir) / 'config.json'}); lower max_seq_len to at most {limit}")
        return max_seq_len
    return DEFAULT_MAX_SEQ_LEN if max_seq_len is None else max_seq_len


def check_lengths(result: LoadResult, cfg: PrepareConfig, tokenizer) -> LoadResult:
    """``result`` with the records prepare cannot use for lack of room made rejects
    (``longer than max_seq_len``): what ``data validate --model`` adds to its checks."""
    builder = _Builder(cfg, tokenizer, _characters(result.profiles))
    with _progress(0, "", False) as bar:
        builder.sft([d for d in result.dialogues if not d.is_eval_prompt], bar)
        builder.dpo(result.preferences, bar)
    builder.eval_prompts([d for d in result.dialogues if d.is_eval_prompt])
    return result.derive(lambda r: builder.reject.get(id(r), r)) if builder.reject else result


def _check_holdout(cfg: PrepareConfig, result: LoadResult) -> None:
    if not cfg.holdout_characters:
        return
    present = {r.character for r in (*result.dialogues, *result.preferences)}
    unknown = [c for c in cfg.holdout_characters if c not in present]
    if unknown:
        known = ", ".join(sorted(present)) or "none"
        raise ConfigError(f"holdout_characters: {', '.join(repr(c) for c in unknown)} "
                          f"{'is' if len(unknown) == 1 else 'are'} not in the data (characters with dialogues "
                          f"or pairs: {known})")


class EmptySplitError(DataError):
    """A train or validation split would be empty; ``problem`` says which. The message's advice
    is for ``charops data prepare``; a caller that prepares for the user words its own."""

    def __init__(self, problem: str):
        self.problem = problem
        super().__init__(f"{problem}; add data, change validation_fraction or holdout_characters, or pass "
                         "--allow-empty-split (allow_empty_split=true) to write it anyway; nothing written")


def _empty_splits(cfg: PrepareConfig, sft: dict, dpo: dict) -> list[str]:
    """One line per empty split of dialogues or pairs that has any records at all."""
    want_validation = cfg.validation_fraction > 0 or bool(cfg.holdout_characters)
    problems = []
    for kind, rows, noun in (("sft", sft, "dialogues"), ("dpo", dpo, "preference pairs")):
        total = sum(len(v) for v in rows.values())
        for split in SPLITS:
            if total and not rows[split] and (split == "train" or want_validation):
                problems.append(f"{kind} {split} split is empty ({total} {noun} in all, validation_fraction "
                                f"{cfg.validation_fraction:g}, split_by {cfg.split_by})")
    return problems


def _check_output(cfg: PrepareConfig, inputs: list[str]) -> Path:
    """The output directory, refused when replacing it could destroy anything the user has."""
    from charops.io import check_output

    out = Path(cfg.output_dir)
    if out.is_file() or (out.is_symlink() and not out.is_dir()):
        raise DataError(f"output directory '{out}' is a file; choose another --out (a file is never replaced)")
    return check_output(out, inputs=[("the input", given) for given in inputs], overwrite=cfg.overwrite,
                        option="--out", overwrite_hint="pass overwrite=true (--overwrite)", error=DataError)


def run(cfg: PrepareConfig) -> dict[str, Any]:
    """Prepare the dataset directory; return its manifest (plus ``output_dir``).

    The steps, in order: refuse an output that would destroy anything, resolve the model and its
    tokenizer, load and check the records, tokenize every split (records unusable there become
    rejects), refuse what cannot be written (nothing accepted, ``strict``, an empty split), pack
    the pretraining blocks, and write the directory atomically with its manifest.
    """
    from charops.data.validate import load_and_check
    from charops.model.load import load_tokenizer, resolve_model

    inputs = cfg.inputs or [str(SAMPLES_DIR)]
    out = _check_output(cfg, inputs)
    model_dir = resolve_model(cfg.model)
    cfg = dataclasses.replace(cfg, max_seq_len=check_position_limit(model_dir, cfg.max_seq_len))
    tokenizer = load_tokenizer(model_dir)
    result, duplicates = load_and_check(inputs, fmt=cfg.format, character=cfg.character,
                                        max_record_bytes=cfg.max_record_bytes)
    _check_holdout(cfg, result)
    builder = _Builder(cfg, tokenizer, _characters(result.profiles))
    splits, result = _tokenize(cfg, builder, result)
    summary = _check_accepted(cfg, result, inputs)
    warnings = _empty_splits(cfg, splits.sft, splits.dpo)
    if warnings and not cfg.allow_empty_split:
        raise EmptySplitError(warnings[0])
    splits.docs = dict(zip(SPLITS, _split(result.documents, cfg, False), strict=True))
    splits.pretrain = {s: builder.pretrain(splits.docs[s]) for s in SPLITS}
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "charops_version": __version__,
        "content_sha256": "",  # of the files written, filled in by _write
        "sources": [{k: s[k] for k in ("path", "sha256", "format", "read", "accepted", "rejected")}
                    for s in summary["sources"]],
        "counts": _counts(summary, duplicates, result, splits),
        "tokens": _token_stats(cfg, splits),
        "tokenizer": _tokenizer_record(cfg, model_dir, tokenizer, builder),
        "config": {k: v for k, v in _config_dict(cfg).items() if k not in _NOT_CONTENT},
        "warnings": warnings,
    }
    _write(out, cfg, result, splits, manifest)
    return {"output_dir": str(out), **manifest}


@dataclasses.dataclass
class _Splits:
    """What the builder made of the records, per split (``SPLITS``)."""

    sft: dict[str, list[dict]]
    dpo: dict[str, list[dict]]
    dpo_lengths: dict[str, list[int]]
    eval_rows: list[dict]
    docs: dict[str, list] = dataclasses.field(default_factory=dict)
    pretrain: dict[str, tuple[list[dict], dict]] = dataclasses.field(default_factory=dict)


def _tokenize(cfg: PrepareConfig, builder: _Builder, result: LoadResult) -> tuple[_Splits, LoadResult]:
    """Split the dialogues and pairs, tokenize them; the result with the newly unusable rejected."""
    # Split records first (by id hash or character, independent of what gets rejected later).
    sft_split = dict(zip(SPLITS, _split([d for d in result.dialogues if not d.is_eval_prompt], cfg, True), strict=True))
    dpo_split = dict(zip(SPLITS, _split(result.preferences, cfg, True), strict=True))
    total = sum(len(v) for v in (*sft_split.values(), *dpo_split.values()))
    with _progress(total, "tokenizing", cfg.progress) as bar:
        sft = {s: builder.sft(sft_split[s], bar) for s in SPLITS}
        dpo = {s: builder.dpo(dpo_split[s], bar) for s in SPLITS}
    eval_rows = builder.eval_prompts([d for d in result.dialogues if d.is_eval_prompt])
    # Records found unusable here become rejects at their file and line, like importer rejects.
    if builder.reject:
        result = result.derive(lambda r: builder.reject.get(id(r), r))
    dpo_lengths = {s: [r.pop("_length") for r in dpo[s]] for s in SPLITS}
    return _Splits(sft, dpo, dpo_lengths, eval_rows), result


def _check_accepted(cfg: PrepareConfig, result: LoadResult, inputs: list[str]) -> dict:
    """The load summary, or a DataError when nothing was accepted or ``strict`` meets a reject."""
    summary = result.summary()
    if summary["accepted"] == 0:
        raise DataError(f"no record accepted from {', '.join(inputs)}; see the reasons with "
                        "`charops data validate`")
    if cfg.strict and summary["rejected"]:
        reasons = ", ".join(f"{n} {r}" for r, n in summary["rejected_by_reason"].items())
        raise DataError(f"{summary['rejected']} of {summary['read']} records rejected ({reasons}); "
                        "nothing written (--strict)")
    return summary


def _counts(summary: dict, duplicates: int, result: LoadResult, splits: _Splits) -> dict:
    return {
        "read": summary["read"], "accepted": summary["accepted"], "rejected": summary["rejected"],
        "accepted_by_type": summary["accepted_by_type"],
        "rejected_by_reason": summary["rejected_by_reason"],
        "rejected_by_type": summary["rejected_by_type"],
        "duplicates_dropped": duplicates,
        "characters": len(result.profiles),
        "characters_without_profile": summary.get("characters_without_profile", []),
        "sft": {s: len(splits.sft[s]) for s in SPLITS},
        "dpo": {s: len(splits.dpo[s]) for s in SPLITS},
        "pretrain_documents": {s: len(splits.docs[s]) for s in SPLITS},
        "pretrain_blocks": {s: len(splits.pretrain[s][0]) for s in SPLITS},
        "eval_prompts": len(splits.eval_rows),
    }


def _token_stats(cfg: PrepareConfig, splits: _Splits) -> dict:
    sft = splits.sft
    return {
        "sft": {s: _stats([len(r["input_ids"]) for r in sft[s]],
                          [len(r["labels"]) - r["labels"].count(IGNORE_INDEX) for r in sft[s]]) for s in SPLITS},
        "dpo": {s: _stats(splits.dpo_lengths[s]) for s in SPLITS},
        "pretrain": {s: splits.pretrain[s][1] for s in SPLITS},
        "max_seq_len": cfg.max_seq_len,
        "block_size": cfg.block_size,
    }


def _tokenizer_record(cfg: PrepareConfig, model_dir: Path, tokenizer, builder: _Builder) -> dict:
    from charops.model import tokenizer_sha256

    return {"sha256": tokenizer_sha256(model_dir), "model": cfg.model,
            "chat_template_fast_path": builder.encoder.fast_chatml,
            "pad_token_id": tokenizer.pad_token_id,
            "document_separator_id": document_separator_id(tokenizer)}


def _write(out: Path, cfg: PrepareConfig, result: LoadResult, splits: _Splits, manifest: dict) -> None:
    """The dataset directory, written whole or not at all; ``manifest`` gets its content hash."""
    with atomic_dir(out, overwrite=cfg.overwrite) as tmp:
        os.chmod(tmp, 0o755)  # datasets are read by other users and pods; mkdtemp made it 0700
        write_jsonl(tmp / "characters.jsonl", (p.model_dump(mode="json") for p in result.profiles))
        for s in SPLITS:
            write_jsonl(tmp / "sft" / f"{s}.jsonl", splits.sft[s])
            write_jsonl(tmp / "dpo" / f"{s}.jsonl", splits.dpo[s])
            write_jsonl(tmp / "pretrain" / f"{s}.jsonl", splits.pretrain[s][0])
        write_jsonl(tmp / "eval" / "prompts.jsonl", splits.eval_rows)
        write_jsonl(tmp / "rejects.jsonl", (vars(r) for r in result.rejects))
        manifest["content_sha256"] = sha256_tree(tmp)  # the files above, before the manifest
        write_json(tmp / "manifest.json", manifest)


def _config_dict(cfg: PrepareConfig) -> dict:
    from charops.config import to_dict

    return to_dict(cfg)


def main(argv: list[str] | None = None) -> None:
    from charops.config import stage_main

    manifest = stage_main(PrepareConfig, run, argv, default="default")
    print(json.dumps({"output_dir": manifest["output_dir"], "counts": manifest["counts"]}, indent=2,
                     ensure_ascii=False))


if __name__ == "__main__":
    main()
