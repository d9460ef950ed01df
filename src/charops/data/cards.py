"""Character cards (TavernAI / SillyTavern): read V1, V2 and V3, write V2 and V3.

The card formats role-play users already carry around:

- **V1** (TavernAI): a flat JSON object ``{name, description, personality, scenario,
  first_mes, mes_example}``.
- **V2** (``spec: "chara_card_v2"``, spec_version ``2.0``): the V1 fields and
  ``creator_notes, system_prompt, post_history_instructions, alternate_greetings, tags,
  creator, character_version, character_book, extensions`` under ``data``.
- **V3** (``spec: "chara_card_v3"``, spec_version ``3.0``): V2 plus ``nickname, assets,
  creator_notes_multilingual, source, group_only_greetings, creation_date,
  modification_date``.

Each comes as a JSON file, as a PNG whose ``tEXt`` chunk carries the card as base64 of UTF-8
JSON (keyword ``ccv3`` for V3, ``chara`` for V2/V1; ``ccv3`` wins when both are there), or (V3)
as a CHARX zip holding ``card.json`` at its root.

Mapping onto :class:`~charops.data.schema.CharacterProfile`: ``name``, ``description`` ->
``identity``, ``personality``, ``scenario``, ``first_mes`` -> ``greeting``,
``alternate_greetings``, ``system_prompt``, ``post_history_instructions``, ``tags``,
``creator_notes``, ``nickname`` -> ``nicknames``. ``{{char}}``/``<BOT>``/``<char>`` become the
character's name (its V3 nickname when it has one) and ``{{user}}``/``<USER>`` the user's
name (``User``), case-insensitively. ``mes_example`` (blocks separated by ``<START>``) becomes
example dialogues. Everything else -- ``character_book``, ``extensions``, ``creator``, unknown
fields -- is kept untouched in ``profile.extra["tavern_card"]`` together with the raw
(unsubstituted) text of the mapped fields, so that a card read and written again keeps every
field (:func:`profile_to_card`)::

    from charops.data.cards import read_card_file, card_records, profile_to_card, write_card
    card = read_card_file(Path("mara.png"))          # the card's JSON object (CardError if bad)
    profile, examples, bad_blocks = card_records(card, card_id="mara")
    write_card(profile_to_card(profile, "v3"), Path("mara-v3.png"), image=Path("mara.png"))

or from the shell: ``charops data validate mara.png`` and
``charops data export-card characters.jsonl --name Mara --format v3 --png mara.png``
(:mod:`charops.data.export_card`, which reads the inputs through the importers: this module is
the codec only and imports none of them).
"""

from __future__ import annotations

import base64
import binascii
import copy
import io
import json
import re
import struct
import zipfile
import zlib
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from charops.data.schema import CharacterProfile, Dialogue
from charops.errors import DataError
from charops.io import atomic_open

SPEC_V2, SPEC_V3 = "chara_card_v2", "chara_card_v3"
SPEC_VERSIONS = {SPEC_V2: "2.0", SPEC_V3: "3.0"}
V1_KEYS = ("name", "description", "personality", "scenario", "first_mes", "mes_example")
# V1/V2/V3 field -> CharacterProfile field. ``nickname`` (V3) maps onto ``nicknames``.
STRING_FIELDS = {"name": "name", "description": "identity", "personality": "personality",
                 "scenario": "scenario", "first_mes": "greeting", "system_prompt": "system_prompt",
                 "post_history_instructions": "post_history_instructions",
                 "creator_notes": "creator_notes"}
LIST_FIELDS = {"alternate_greetings": "alternate_greetings", "tags": "tags"}
MAPPED = (*STRING_FIELDS, *LIST_FIELDS, "nickname", "mes_example")
# Profile fields no card field maps onto (category, language, the structured attributes...):
# derived from the schema, so a field added to CharacterProfile travels through cards too.
PROFILE_ONLY = tuple(f for f in CharacterProfile.model_fields if f not in {
    "type", "name", "identity", "source", "extra", "nicknames",
    *STRING_FIELDS.values(), *LIST_FIELDS.values()})
EXTRA_KEY = "tavern_card"  # profile.extra key holding what the profile has no field for
USER_NAME = "User"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAX_CARD_BYTES = 64 * 1024 * 1024  # a card file (PNG, CHARX, JSON) larger than this is refused
MAX_CARD_JSON = 16 * 1024 * 1024  # card.json inside a CHARX, uncompressed

_CHAR = re.compile(r"\{\{\s*char\s*\}\}|<bot>|<char>", re.IGNORECASE)
_USER = re.compile(r"\{\{\s*user\s*\}\}|<user>", re.IGNORECASE)
_START = re.compile(r"^\s*<start>\s*$", re.IGNORECASE | re.MULTILINE)
_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")


class CardError(Exception):
    """A card file or card object that cannot be read; its message is the reject reason."""


# --- reading -----------------------------------------------------------------------------------


def png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """The (type, body) chunks of a PNG, up to IEND, each CRC-checked."""
    if not data.startswith(PNG_SIGNATURE):
        raise CardError("not a PNG file (bad signature)")
    pos, chunks = len(PNG_SIGNATURE), []
    while pos < len(data):
        if pos + 8 > len(data):
            raise CardError(f"bad PNG: truncated chunk header at byte {pos}")
        length, ctype = struct.unpack(">I4s", data[pos:pos + 8])
        end = pos + 12 + length
        if end > len(data):
            raise CardError(f"bad PNG: chunk {ctype.decode('latin-1')!r} at byte {pos} is truncated")
        body = data[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack(">I", data[end - 4:end])
        if zlib.crc32(ctype + body) != crc:
            raise CardError(f"bad PNG: CRC mismatch in chunk {ctype.decode('latin-1')!r} at byte {pos}")
        chunks.append((ctype, body))
        pos = end
        if ctype == b"IEND":
            return chunks
    raise CardError("bad PNG: no IEND chunk (the file is truncated)")


def _text_chunks(chunks: list[tuple[bytes, bytes]]) -> dict[str, bytes]:
    out = {}
    for ctype, body in chunks:
        if ctype == b"tEXt":
            keyword, _, text = body.partition(b"\0")
            out.setdefault(keyword.decode("latin-1").lower(), text)
    return out


def _decode_json(raw: bytes, what: str) -> Any:
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise CardError(f"{what} is not UTF-8 (bad byte at offset {exc.start})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise CardError(f"{what} is not JSON (line {exc.lineno}: {exc.msg})") from None
    except RecursionError:
        raise CardError(f"{what} is nested too deeply") from None


def card_from_png(data: bytes) -> Any:
    """The card a PNG carries (``ccv3`` preferred over ``chara``)."""
    texts = _text_chunks(png_chunks(data))
    keyword = "ccv3" if "ccv3" in texts else "chara" if "chara" in texts else None
    if keyword is None:
        raise CardError("PNG carries no character card (no 'ccv3' or 'chara' tEXt chunk)")
    try:
        raw = base64.b64decode(texts[keyword], validate=True)
    except (binascii.Error, ValueError):
        raise CardError(f"PNG '{keyword}' chunk is not valid base64") from None
    return _decode_json(raw, f"PNG '{keyword}' chunk")


def card_from_charx(data: bytes) -> Any:
    """The ``card.json`` of a CHARX zip."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            try:
                info = zf.getinfo("card.json")
            except KeyError:
                raise CardError("CHARX has no card.json at its root") from None
            if info.flag_bits & 0x1:
                raise CardError("CHARX card.json is encrypted")
            if info.file_size > MAX_CARD_JSON:
                raise CardError(f"CHARX card.json is {info.file_size} bytes uncompressed "
                                f"(limit {MAX_CARD_JSON})")
            # Through a bounded stream: the header's size is the archive's claim, not a fact, and
            # ``zf.read`` would inflate everything the deflate stream holds (a 100-byte claim
            # can inflate to gigabytes) before the CRC check notices.
            with zf.open(info) as fh:
                raw = fh.read(MAX_CARD_JSON + 1)
            if len(raw) > MAX_CARD_JSON:
                raise CardError(f"CHARX card.json inflates past {MAX_CARD_JSON} bytes (limit)")
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as exc:
        raise CardError(f"not a valid CHARX zip ({exc})") from None
    return _decode_json(raw, "CHARX card.json")


def read_card_file(path: Path) -> Any:
    """The JSON value a card file holds: PNG, CHARX or JSON (by content, or by a .png/.charx name)."""
    try:
        size = path.stat().st_size
        if size > MAX_CARD_BYTES:
            raise CardError(f"card file is {size} bytes (limit {MAX_CARD_BYTES})")
        data = path.read_bytes()
    except OSError as exc:
        raise CardError(f"cannot read file ({exc.strerror})") from None
    if data.startswith(PNG_SIGNATURE) or path.suffix.lower() == ".png":
        return card_from_png(data)
    if data.startswith(b"PK") or path.suffix.lower() == ".charx":
        return card_from_charx(data)
    return _decode_json(data, "card file")


def is_card(obj: Any) -> bool:
    """Whether a JSON object is (meant to be) a character card of any version."""
    if not isinstance(obj, dict):
        return False
    if isinstance(obj.get("spec"), str) and "type" not in obj:
        return True
    return "type" not in obj and "name" in obj and bool({"first_mes", "mes_example"} & obj.keys())


# --- card -> records ---------------------------------------------------------------------------


def _split_card(card: Any) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """(spec, data, other top-level keys) of a V1/V2/V3 card; CardError when malformed."""
    if not isinstance(card, dict):
        raise CardError("card is not a JSON object")
    spec = card.get("spec")
    if spec is None:
        if not isinstance(card.get("name"), str):
            raise CardError("not a character card (no 'spec', and no V1 'name' field)")
        return "chara_card_v1", dict(card), {}
    if spec not in SPEC_VERSIONS:
        raise CardError(f"unsupported card spec {spec!r} (expected chara_card_v2 or chara_card_v3, "
                        "or a V1 card without 'spec')")
    data = card.get("data")
    if not isinstance(data, dict):
        raise CardError(f"{spec} card has no 'data' object")
    return spec, dict(data), {k: v for k, v in card.items() if k != "data"}


def substitute(text: str, name: str, user: str = USER_NAME) -> str:
    """``{{char}}``/``<BOT>`` -> name, ``{{user}}``/``<USER>`` -> user (case-insensitive)."""
    return _USER.sub(lambda _: user, _CHAR.sub(lambda _: name, text))


def _language(*texts: str) -> str:
    text = "".join(texts)
    return "zh" if text and len(_CJK.findall(text)) >= 0.1 * len(text.replace(" ", "")) else "en"


def parse_examples(mes_example: str, name: str, user: str = USER_NAME) -> list[list[dict[str, str]] | str]:
    """The ``<START>``-separated blocks of ``mes_example`` as turn lists (or a reason per bad block).

    A line opening with ``{{user}}:``/``<USER>:`` (or the user's name) starts a user turn, one
    with ``{{char}}:``/``<BOT>:`` (or the character's name) a character turn; other lines
    continue the turn above. Blank blocks are not examples.
    """
    user_re = re.compile(rf"^\s*(?:\{{\{{\s*user\s*\}}\}}|<user>|{re.escape(user)})\s*:\s?", re.IGNORECASE)
    char_re = re.compile(rf"^\s*(?:\{{\{{\s*char\s*\}}\}}|<bot>|<char>|{re.escape(name)})\s*:\s?", re.IGNORECASE)
    out: list[list[dict[str, str]] | str] = []
    for block in _START.split(mes_example.replace("\r\n", "\n")):
        if not block.strip():
            continue
        turns: list[dict[str, str]] = []
        orphan = False
        for line in block.split("\n"):
            if m := user_re.match(line):
                turns.append({"role": "user", "content": line[m.end():]})
            elif m := char_re.match(line):
                turns.append({"role": "assistant", "content": line[m.end():]})
            elif turns:
                turns[-1]["content"] += "\n" + line
            elif line.strip():
                orphan = True
        turns = [{"role": t["role"], "content": substitute(t["content"], name, user).strip()}
                 for t in turns]
        if orphan:
            out.append("text before the first '{{user}}:' or '{{char}}:' line")
        elif not any(t["role"] == "assistant" for t in turns):
            out.append("no '{{char}}:' line")
        elif any(not t["content"] for t in turns):
            out.append("a speaker line with no text")
        else:
            out.append(turns)
    return out


def _check_types(data: dict[str, Any]) -> None:
    for key in (*STRING_FIELDS, "nickname", "mes_example"):
        if data.get(key) is not None and not isinstance(data[key], str):
            raise CardError(f"data.{key}: expected a string, got {type(data[key]).__name__}")
    for key in LIST_FIELDS:
        value = data.get(key)
        if value is not None and not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
            raise CardError(f"data.{key}: expected a list of strings")


def card_records(card: Any, card_id: str, source: str = "") -> tuple[CharacterProfile, list[Dialogue], list[str]]:
    """The profile and example dialogues of a card, and a reason for each bad example block.

    ``card_id`` makes the example dialogues' ids (``<card_id>-example-<n>``). CardError when the
    card itself is malformed.
    """
    spec, data, top = _split_card(card)
    _check_types(data)
    name = (data.get("name") or "").strip()
    if not name:
        raise CardError("data.name: missing or blank" if spec != "chara_card_v1" else "name: missing or blank")
    nickname = (data.get("nickname") or "").strip()
    speaker = nickname or name  # V3: {{char}} is the nickname when there is one

    fields: dict[str, Any] = {"name": name, "source": source}
    raw: dict[str, Any] = {}
    for key, field in STRING_FIELDS.items():
        if key in data:
            raw[key] = data[key]
            if key != "name":
                fields[field] = substitute(data[key] or "", speaker)
    for key, field in LIST_FIELDS.items():
        if key in data:
            raw[key] = data[key]
            values = [substitute(v, speaker) for v in data[key] or []]
            fields[field] = values if key != "tags" else data[key] or []
    if "nickname" in data:
        raw["nickname"] = data["nickname"]
        fields["nicknames"] = [nickname] if nickname else []
    if "mes_example" in data:
        raw["mes_example"] = data["mes_example"]
    charops_ext = (data.get("extensions") or {}).get("charops") if isinstance(data.get("extensions"), dict) else None
    if isinstance(charops_ext, dict):
        # Cards charops wrote carry the whole profile: use its category, language and the
        # structured attributes a card has no field for.
        for key in PROFILE_ONLY:
            if key in charops_ext:
                fields[key] = charops_ext[key]
        if isinstance(charops_ext.get("identity"), str):
            fields["identity"] = charops_ext["identity"]
    fields.setdefault("language", _language(fields.get("identity", ""), fields.get("greeting", "")))
    kept = {"spec": spec, "top": top, "raw": raw,
            "data": {k: v for k, v in data.items() if k not in MAPPED}}
    fields["extra"] = {EXTRA_KEY: kept}
    try:
        profile = CharacterProfile.model_validate(fields)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        loc = ".".join(str(x) for x in first["loc"])
        raise CardError(f"{loc}: {first['msg'].removeprefix('Value error, ')}") from None

    examples, bad = [], []
    for n, block in enumerate(parse_examples(data.get("mes_example") or "", speaker), start=1):
        if isinstance(block, str):
            bad.append(f"mes_example block {n}: {block}")
            continue
        examples.append(Dialogue.model_validate({
            "id": f"{card_id}-example-{n}", "character": name, "turns": block,
            "source": f"{source} mes_example block {n}".strip(),
            "meta": {"from": "mes_example", "block": n}}))
    return profile, examples, bad


# --- profile -> card ---------------------------------------------------------------------------


def _description(profile: CharacterProfile) -> str:
    """A card description for a profile that did not come from a card: its rendered profile."""
    from charops.data.render import render_system_prompt

    blocks = render_system_prompt(profile.model_copy(update={
        "extra": {}, "scenario": "", "system_prompt": "", "post_history_instructions": ""})).split("\n\n")
    return "\n\n".join(blocks[1:])  # without the "You are X, stay in character" opening


def profile_to_card(profile: CharacterProfile, version: str = "v3") -> dict[str, Any]:
    """A V2 or V3 card for ``profile``; the card it was read from comes back field for field.

    Mapped fields the profile still holds unchanged are written with their original
    ``{{char}}``/``{{user}}`` placeholders; edited ones with their new text; fields the source
    card did not have are left out when empty.
    """
    if version not in ("v2", "v3"):
        raise DataError(f"card format '{version}': use v2 or v3")
    spec = SPEC_V2 if version == "v2" else SPEC_V3
    kept = copy.deepcopy(profile.extra.get(EXTRA_KEY) or {})
    raw, data = kept.get("raw", {}), dict(kept.get("data", {}))
    from_card = bool(kept)
    speaker = (profile.nicknames[0] if profile.nicknames else profile.name)

    def put(key: str, value: Any, empty: Any) -> None:
        if key in raw and _same(raw[key], value, speaker):
            data[key] = raw[key]
        elif key in raw or value != empty or not from_card:
            data[key] = value

    put("name", profile.name, "")
    put("description", profile.identity if from_card else _description(profile), "")
    for key, field in STRING_FIELDS.items():
        if key not in ("name", "description"):
            put(key, getattr(profile, field), "")
    for key, field in LIST_FIELDS.items():
        put(key, list(getattr(profile, field)), [])
    if "mes_example" in raw:
        data["mes_example"] = raw["mes_example"]
    elif not from_card:
        data["mes_example"] = ""
    if version == "v3":
        put("nickname", profile.nicknames[0] if profile.nicknames else "", "")
        if kept.get("spec") != SPEC_V3:  # required in V3; a V3 card without it stays without
            data.setdefault("group_only_greetings", [])
    elif data.get("group_only_greetings") == []:  # V3's required empty list means nothing in V2
        del data["group_only_greetings"]
    if not from_card:
        data.setdefault("creator", "")
        data.setdefault("character_version", "")
        profile_dump = profile.model_dump(mode="json", exclude={"extra", "source", "type"})
        data["extensions"] = {"charops": {k: v for k, v in profile_dump.items() if v not in ("", [], None)}}
    top = dict(kept.get("top", {}))
    if kept.get("spec") != spec:  # converting between versions: the other spec's header goes
        top.pop("spec_version", None)
    card = {**top, "spec": spec, "spec_version": top.get("spec_version", SPEC_VERSIONS[spec]), "data": data}
    return card


def _same(raw: Any, value: Any, speaker: str) -> bool:
    if isinstance(raw, str):
        return substitute(raw, speaker) == value or raw == value
    if isinstance(raw, list):
        return [substitute(v, speaker) if isinstance(v, str) else v for v in raw] == value or raw == value
    return raw == value


# --- writing -----------------------------------------------------------------------------------


def _chunk(ctype: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + ctype + body + struct.pack(">I", zlib.crc32(ctype + body))


def blank_png(width: int = 256, height: int = 384, rgb: tuple[int, int, int] = (72, 84, 120)) -> bytes:
    """A plain one-colour PNG, the portrait of a card exported without ``--png``."""
    row = b"\x00" + bytes(rgb) * width
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (PNG_SIGNATURE + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(row * height, 9))
            + _chunk(b"IEND", b""))


def _b64(card: dict[str, Any]) -> bytes:
    return base64.b64encode(json.dumps(card, ensure_ascii=False).encode("utf-8"))


def png_with_card(image: bytes, card: dict[str, Any]) -> bytes:
    """``image`` with its card chunks replaced: ``ccv3`` (+ a V2 ``chara`` backfill) or ``chara``."""
    chunks = [(t, b) for t, b in png_chunks(image)
              if not (t == b"tEXt" and b.partition(b"\0")[0].lower() in (b"chara", b"ccv3"))]
    texts = []
    if card["spec"] == SPEC_V3:
        texts.append(b"ccv3\0" + _b64(card))
        v2 = dict(card, spec=SPEC_V2, spec_version="2.0")
        texts.append(b"chara\0" + _b64(v2))
    else:
        texts.append(b"chara\0" + _b64(card))
    body = [_chunk(t, b) for t, b in chunks[:-1]] + [_chunk(b"tEXt", t) for t in texts]
    return PNG_SIGNATURE + b"".join(body) + _chunk(*chunks[-1])


def write_card(card: dict[str, Any], out: Path, image: Path | None = None) -> Path:
    """Write ``card`` to ``out``: PNG when ``out`` ends in ``.png`` (into ``image``, or a plain
    portrait), CHARX for ``.charx``, else JSON. Written to a temporary name, then renamed."""
    suffix = out.suffix.lower()
    if suffix == ".png":
        try:
            base = image.read_bytes() if image else blank_png()
            payload = png_with_card(base, card)
        except CardError as exc:
            raise DataError(f"{image}: {exc}") from None
        except OSError as exc:
            raise DataError(f"{image}: cannot read ({exc.strerror})") from None
    elif suffix == ".charx":
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
            zf.writestr("card.json", json.dumps(card, ensure_ascii=False, indent=2))
        payload = buf.getvalue()
    else:
        payload = (json.dumps(card, ensure_ascii=False, indent=2) + "\n").encode("utf-8")
    with atomic_open(out, "wb") as fh:
        fh.write(payload)
    return out
