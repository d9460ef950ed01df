"""Character cards (TavernAI / SillyTavern V1, V2, V3; JSON, PNG, CHARX): import, export, rejects.

    .venv/bin/python -m pytest tests/unit/test_cards.py -q
"""

from __future__ import annotations

import base64
import json
import struct
import zipfile
import zlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from charops.cli.main import app
from charops.data.cards import (
    blank_png,
    card_records,
    png_chunks,
    png_with_card,
    profile_to_card,
    read_card_file,
)
from charops.data.importers import detect_format, load_inputs
from charops.data.render import render_system_prompt
from charops.data.schema import CharacterProfile

runner = CliRunner()

V2 = {
    "spec": "chara_card_v2", "spec_version": "2.0",
    "data": {
        "name": "Mara",
        "description": "{{char}} is a sea captain who calls {{user}} a deckhand.",
        "personality": "gruff, warm", "scenario": "The deck of the Gull at dawn.",
        "first_mes": "*squints* Ahoy, {{User}}.",
        "mes_example": "<START>\n{{user}}: Who are you?\n{{char}}: Captain Mara.\nAnd you're late.\n"
                       "<START>\n<USER>: Any storms?\n<BOT>: Always, lad.",
        "creator_notes": "for tests", "system_prompt": "", "post_history_instructions": "",
        "alternate_greetings": ["Back again, {{user}}?"], "tags": ["pirate", "sea"],
        "creator": "charops", "character_version": "1.0",
        "extensions": {"talkativeness": "0.5", "depth_prompt": {"depth": 4, "prompt": "x"}},
        "character_book": {"name": "Gull lore", "extensions": {}, "entries": [
            {"keys": ["Gull"], "content": "The ship.", "extensions": {}, "enabled": True,
             "insertion_order": 0}]},
    },
}
V3 = {
    "spec": "chara_card_v3", "spec_version": "3.0",
    "data": {**V2["data"], "nickname": "Cap", "group_only_greetings": [],
             "creator_notes_multilingual": {"en": "for tests"}, "source": ["local"],
             "assets": [{"type": "icon", "uri": "ccdefault:", "name": "main", "ext": "png"}],
             "creation_date": 1700000000, "modification_date": 1700000001},
    "x_unknown_top": {"kept": True},
}
V1 = {"name": "Old Tom", "description": "<BOT> keeps the lighthouse.", "personality": "quiet",
      "scenario": "", "first_mes": "Evening.", "mes_example": "<START>\n{{user}}: Lonely?\n{{char}}: Never."}


def _text_chunk(keyword: bytes, payload: bytes) -> bytes:
    body = keyword + b"\0" + payload
    return struct.pack(">I", len(body)) + b"tEXt" + body + struct.pack(">I", zlib.crc32(b"tEXt" + body))


def _png_with(*chunks: bytes) -> bytes:
    """A real PNG (blank_png) with extra chunks inserted before IEND."""
    png = blank_png(4, 4)
    iend = png.rindex(b"\x00\x00\x00\x00IEND")
    return png[:iend] + b"".join(chunks) + png[iend:]


def _b64(obj) -> bytes:
    return base64.b64encode(json.dumps(obj).encode())


def _load(tmp_path: Path, name: str, content) -> tuple:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(json.dumps(content, ensure_ascii=False, indent=2), encoding="utf-8")
    result = load_inputs([path])
    summary = result.summary()
    assert summary["read"] == summary["accepted"] + summary["rejected"]
    return result, summary


# --- mapping -------------------------------------------------------------------------------------


def test_v2_maps_onto_the_profile_with_placeholders_substituted(tmp_path):
    result, summary = _load(tmp_path, "mara.json", V2)
    assert result.sources[0].format == "tavern-card"
    (p,) = result.profiles
    assert p.name == "Mara"
    assert p.identity == "Mara is a sea captain who calls User a deckhand."
    assert p.greeting == "*squints* Ahoy, User."  # case-insensitive {{User}}
    assert (p.personality, p.scenario, p.creator_notes) == ("gruff, warm", "The deck of the Gull at dawn.", "for tests")
    assert p.alternate_greetings == ["Back again, User?"]
    assert p.tags == ["pirate", "sea"]
    kept = p.extra["tavern_card"]["data"]
    assert kept["character_book"] == V2["data"]["character_book"]
    assert kept["extensions"] == V2["data"]["extensions"]
    assert kept["creator"] == "charops"
    # mes_example: two <START> blocks, two example dialogues; a message spans lines.
    assert [[(t.role, t.content) for t in d.turns] for d in result.dialogues] == [
        [("user", "Who are you?"), ("assistant", "Captain Mara.\nAnd you're late.")],
        [("user", "Any storms?"), ("assistant", "Always, lad.")]]
    assert all(d.character == "Mara" for d in result.dialogues)
    assert summary["accepted"] == 3 and summary["rejected"] == 0


def test_rendered_prompt_holds_scenario_but_not_the_lorebook(tmp_path):
    result, _ = _load(tmp_path, "mara.json", V2)
    prompt = render_system_prompt(result.profiles[0])
    assert "Scenario:\nThe deck of the Gull at dawn." in prompt
    assert "Gull lore" not in prompt and "talkativeness" not in prompt and "tavern_card" not in prompt


def test_card_system_prompt_replaces_the_opening_and_original_keeps_it():
    p = CharacterProfile(name="Mara", language="en", system_prompt="Write as {{original}} Be terse.",
                         post_history_instructions="Never break character.")
    prompt = render_system_prompt(p)
    default = render_system_prompt(CharacterProfile(name="Mara", language="en")).split("\n\n")[0]
    assert prompt.startswith(f"Write as {default} Be terse.")
    assert prompt.endswith("Instructions:\nNever break character.")


def test_v3_nickname_is_the_char_placeholder(tmp_path):
    result, _ = _load(tmp_path, "cap.json", V3)
    (p,) = result.profiles
    assert p.nicknames == ["Cap"]
    assert p.identity == "Cap is a sea captain who calls User a deckhand."
    assert result.dialogues[0].turns[1].content == "Captain Mara.\nAnd you're late."


def test_v1_card(tmp_path):
    result, summary = _load(tmp_path, "tom.json", V1)
    (p,) = result.profiles
    assert (p.name, p.identity, p.greeting) == ("Old Tom", "Old Tom keeps the lighthouse.", "Evening.")
    assert result.dialogues[0].turns[1].content == "Never."
    assert p.language == "en"


def test_language_from_text():
    profile, _, _ = card_records({"name": "小满", "description": "{{char}}是一名高中生，喜欢画画。"}, "x")
    assert profile.language == "zh"


# --- containers ------------------------------------------------------------------------------------


def test_png_prefers_ccv3_over_chara(tmp_path):
    old = {"spec": "chara_card_v2", "spec_version": "2.0", "data": {"name": "Backfill"}}
    png = _png_with(_text_chunk(b"chara", _b64(old)), _text_chunk(b"ccv3", _b64(V3)))
    result, _ = _load(tmp_path, "cap.png", png)
    assert [p.name for p in result.profiles] == ["Mara"]
    assert result.profiles[0].nicknames == ["Cap"]


def test_png_with_chara_only(tmp_path):
    result, _ = _load(tmp_path, "mara.png", _png_with(_text_chunk(b"chara", _b64(V2))))
    assert result.profiles[0].identity.startswith("Mara is a sea captain")


def test_charx(tmp_path):
    path = tmp_path / "cap.charx"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("card.json", json.dumps(V3))
        zf.writestr("assets/icon/images/main.png", blank_png(2, 2))
    assert detect_format(path) == "tavern-card"
    result = load_inputs([path])
    assert [p.name for p in result.profiles] == ["Mara"] and len(result.dialogues) == 2


def test_json_array_of_cards_is_one_unit_each(tmp_path):
    result, summary = _load(tmp_path, "cards.json", [V2, V1, {"spec": "chara_card_v9", "data": {"name": "x"}}])
    assert [p.name for p in result.profiles] == ["Mara", "Old Tom"]
    assert [(r.location, r.reason) for r in result.rejects] == [
        ("index 2", "unsupported card spec 'chara_card_v9' (expected chara_card_v2 or chara_card_v3, "
                    "or a V1 card without 'spec')")]
    assert summary["read"] == 2 + 3 + 1


def test_a_directory_of_cards(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.png").write_bytes(_png_with(_text_chunk(b"chara", _b64(V2))))
    (tmp_path / "d" / "b.json").write_text(json.dumps(V1), encoding="utf-8")
    result = load_inputs([tmp_path / "d"])
    assert sorted(p.name for p in result.profiles) == ["Mara", "Old Tom"]


# --- malformed cards are rejects with reasons ------------------------------------------------------


def _crc_broken_png() -> bytes:
    png = bytearray(_png_with(_text_chunk(b"chara", _b64(V2))))
    png[-20] ^= 0xFF  # inside the tEXt chunk's CRC region
    return bytes(png)


@pytest.mark.parametrize(("name", "content", "reason"), [
    ("bad64.png", _png_with(_text_chunk(b"chara", b"%%%not base64%%%")), "PNG 'chara' chunk is not valid base64"),
    ("notjson.png", _png_with(_text_chunk(b"ccv3", base64.b64encode(b"{not json"))), "PNG 'ccv3' chunk is not JSON"),
    ("nocard.png", blank_png(3, 3), "PNG carries no character card (no 'ccv3' or 'chara' tEXt chunk)"),
    ("sig.png", b"GIF89a....", "not a PNG file (bad signature)"),
    ("trunc.png", blank_png(3, 3)[:-6], "bad PNG"),
    ("crc.png", _crc_broken_png(), "bad PNG: CRC mismatch"),
    ("bad.charx", b"PK\x03\x04 this is no zip", "not a valid CHARX zip"),
])
def test_malformed_files_are_rejects(tmp_path, name, content, reason):
    result, summary = _load(tmp_path, name, content)
    assert summary["accepted"] == 0 and summary["rejected"] == 1
    (reject,) = result.rejects
    assert reject.location == "file" and reject.reason.startswith(reason), reject.reason


def test_charx_without_card_json(tmp_path):
    path = tmp_path / "empty.charx"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("other.json", "{}")
    (reject,) = load_inputs([path]).rejects
    assert reject.reason == "CHARX has no card.json at its root"


@pytest.mark.parametrize(("card", "reason"), [
    ({"spec": "chara_card_v2", "spec_version": "2.0"}, "chara_card_v2 card has no 'data' object"),
    ({"spec": "chara_card_v2", "data": {"name": " "}}, "data.name: missing or blank"),
    ({"spec": "chara_card_v3", "data": {"name": "A", "tags": "x"}}, "data.tags: expected a list of strings"),
    ({"spec": "chara_card_v3", "data": {"name": "A", "description": 5}}, "data.description: expected a string, got int"),
    ({"spec": "tavern", "data": {"name": "A"}}, "unsupported card spec 'tavern'"),
])
def test_malformed_cards_are_rejects(tmp_path, card, reason):
    result, summary = _load(tmp_path, "c.json", card)
    assert summary["accepted"] == 0
    assert result.rejects[0].reason.startswith(reason), result.rejects[0].reason
    assert result.rejects[0].record_type == "profile"


def test_bad_example_blocks_are_rejects_and_the_card_stays(tmp_path):
    card = {"spec": "chara_card_v2", "data": {"name": "A", "mes_example":
            "<START>\nnarration first\n{{char}}: hi\n<START>\n{{user}}: only me\n<START>\n{{user}}: ok\n{{char}}: fine"}}
    result, summary = _load(tmp_path, "a.json", card)
    assert [p.name for p in result.profiles] == ["A"] and len(result.dialogues) == 1
    assert [(r.location, r.reason) for r in result.rejects] == [
        ("card, mes_example block 1", "text before the first '{{user}}:' or '{{char}}:' line"),
        ("card, mes_example block 2", "no '{{char}}:' line")]
    assert summary == summary | {"read": 4, "accepted": 2, "rejected": 2}


# --- export and round trips -------------------------------------------------------------------------


@pytest.mark.parametrize(("card", "version"), [(V2, "v2"), (V3, "v3")])
def test_read_and_written_again_keeps_every_field(card, version):
    profile, _, _ = card_records(card, "x")
    assert profile_to_card(profile, version) == card


def test_an_edited_field_is_written_edited_and_the_rest_stays():
    profile, _, _ = card_records(V2, "x")
    card = profile_to_card(profile.model_copy(update={"personality": "gentle"}), "v2")
    assert card["data"]["personality"] == "gentle"
    assert card["data"]["description"] == V2["data"]["description"]  # placeholders kept
    assert card["data"]["character_book"] == V2["data"]["character_book"]


def test_v2_card_upgraded_to_v3_and_back():
    profile, _, _ = card_records(V2, "x")
    v3 = profile_to_card(profile, "v3")
    assert (v3["spec"], v3["spec_version"]) == ("chara_card_v3", "3.0")
    again, _, _ = card_records(v3, "x")
    assert profile_to_card(again, "v2") == V2


def test_charops_profile_survives_a_card():
    p = CharacterProfile(name="林小满", category="daily-life", language="zh", age="17", occupation="高中生",
                         interests=["画画", "喂猫"], personality="开朗", catchphrases=["好耶"],
                         greeting="嗨！", identity="一名高中生")
    card = profile_to_card(p, "v3")
    assert "林小满" in card["data"]["description"] and "画画" in card["data"]["description"]
    back, _, _ = card_records(card, "x")
    assert back.model_dump(exclude={"extra", "source", "nicknames"}) == p.model_dump(exclude={"extra", "source", "nicknames"})


def test_png_embedding_keeps_the_image(tmp_path):
    image = blank_png(7, 5, (1, 2, 3))
    out = png_with_card(image, profile_to_card(card_records(V3, "x")[0], "v3"))
    chunks = png_chunks(out)
    keep = [c for c in png_chunks(image) if c[0] != b"IEND"]
    assert [c for c in chunks if c[0] != b"tEXt" and c[0] != b"IEND"] == keep
    keywords = [b.partition(b"\0")[0] for t, b in chunks if t == b"tEXt"]
    assert keywords == [b"ccv3", b"chara"]  # V3 with its V2 backfill
    path = tmp_path / "x.png"
    path.write_bytes(out)
    assert read_card_file(path) == V3
    # Writing again replaces the card chunks instead of piling them up.
    twice = png_with_card(out, V3)
    assert [b.partition(b"\0")[0] for t, b in png_chunks(twice) if t == b"tEXt"] == [b"ccv3", b"chara"]


# --- the CLI -----------------------------------------------------------------------------------------


def test_export_card_cli(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "in.json").write_text(json.dumps(V3), encoding="utf-8")
    (tmp_path / "face.png").write_bytes(blank_png(8, 8))
    res = runner.invoke(app, ["data", "export-card", "in.json", "--png", "face.png", "--out", "mara.png"])
    assert res.exit_code == 0, res.output
    assert read_card_file(tmp_path / "mara.png") == V3
    assert (tmp_path / "face.png").read_bytes() == blank_png(8, 8)  # the image is not changed

    res = runner.invoke(app, ["data", "export-card", "in.json", "--png", "face.png", "--out", "mara.png"])
    assert res.exit_code == 2 and "exists; pass --overwrite" in res.output
    res = runner.invoke(app, ["data", "export-card", "mara.png", "--out", "mara.png", "--overwrite"])
    assert res.exit_code == 2 and "overlaps the input" in res.output
    assert read_card_file(tmp_path / "mara.png") == V3  # nothing lost

    res = runner.invoke(app, ["data", "export-card", "in.json", "--format", "v2", "--json"])
    assert res.exit_code == 0, res.output
    written = json.loads(res.output)["card"]
    assert json.loads((tmp_path / written).read_text())["spec"] == "chara_card_v2"


def test_export_card_needs_a_name_among_several(tmp_path):
    (tmp_path / "cards.json").write_text(json.dumps([V2, V1]), encoding="utf-8")
    res = runner.invoke(app, ["data", "export-card", str(tmp_path / "cards.json"), "--out", str(tmp_path / "o.json")])
    assert res.exit_code == 2 and "choose one with --name" in res.output
    res = runner.invoke(app, ["data", "export-card", str(tmp_path / "cards.json"), "--name", "Nobody",
                              "--out", str(tmp_path / "o.json")])
    assert res.exit_code == 2 and "have: Mara, Old Tom" in res.output
    res = runner.invoke(app, ["data", "export-card", str(tmp_path / "cards.json"), "--name", "Old Tom",
                              "--out", str(tmp_path / "o.charx")])
    assert res.exit_code == 0, res.output
    assert read_card_file(tmp_path / "o.charx")["data"]["name"] == "Old Tom"


# --- properties ----------------------------------------------------------------------------------------

_plain = st.text(st.characters(blacklist_categories=("Cs",)), max_size=20)
# Free text mixed with the placeholders and example-block markers cards are made of.
_text = st.lists(_plain | st.sampled_from(["{{char}}", "{{Char}}", "<BOT>", "{{user}}", "<USER>",
                                            "\n<START>\n", "\n{{char}}: ", "\n{{user}}: ", "\n"]),
                 max_size=6).map("".join)
_json = st.recursive(st.none() | st.booleans() | st.integers() | _plain,
                     lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_plain, inner, max_size=3),
                     max_leaves=8)
_names = st.text(st.characters(blacklist_categories=("Cs", "Cc", "Z")), min_size=1, max_size=12)
_mapped = st.fixed_dictionaries({}, optional={
    "description": _text, "personality": _text, "scenario": _text, "first_mes": _text,
    "mes_example": _text, "creator_notes": _text, "system_prompt": _text,
    "post_history_instructions": _text, "alternate_greetings": st.lists(_text, max_size=3),
    "tags": st.lists(_text, max_size=3)})


@st.composite
def _cards(draw):
    spec = draw(st.sampled_from(["chara_card_v2", "chara_card_v3"]))
    data = {"name": draw(_names), **draw(_mapped)}
    data.update(draw(st.dictionaries(st.sampled_from(["character_book", "extensions", "creator", "x_field",
                                                      "assets", "source"]), _json, max_size=3)))
    if spec == "chara_card_v3" and draw(st.booleans()):
        data["nickname"] = draw(_names)
    return {"spec": spec, "spec_version": "3.0" if spec.endswith("v3") else "2.0", "data": data}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(card=_cards(), container=st.sampled_from(["json", "png"]))
def test_property_any_card_is_one_record_or_one_reject_and_round_trips(tmp_path, card, container):
    if container == "png":
        content = _png_with(_text_chunk(b"ccv3" if card["spec"].endswith("v3") else b"chara", _b64(card)))
    else:
        content = card
    result, summary = _load(tmp_path, f"card.{container}", content)
    profiles_or_rejects = [r for r in result.rejects if r.record_type == "profile"]
    assert len(result.profiles) + len(profiles_or_rejects) == 1
    if result.profiles:
        version = "v3" if card["spec"].endswith("v3") else "v2"
        assert profile_to_card(result.profiles[0], version) == card


# --- a CHARX whose zip header lies about card.json's size (issue 19, item 11) -------------------

def _lying_charx(inflated: int, declared: int = 100) -> bytes:
    """A CHARX whose card.json claims ``declared`` bytes but inflates to ``inflated`` (built by
    hand: zipfile would write the true size). The deflate stream is made in 1 MiB steps, so the
    test itself never holds the inflated bytes."""
    comp = zlib.compressobj(6, zlib.DEFLATED, -15)
    step = b" " * (1 << 20)
    body = b"".join(comp.compress(step) for _ in range(inflated >> 20)) + comp.flush()
    name, crc = b"card.json", zlib.crc32(b"what the header claims")
    local = struct.pack("<4s2B4HL2L2H", b"PK\x03\x04", 20, 0, 0, 8, 0, 0x21, crc, len(body),
                        declared, len(name), 0) + name
    central = struct.pack("<4s4B4HL2L5H2L", b"PK\x01\x02", 20, 3, 20, 0, 0, 8, 0, 0x21, crc,
                          len(body), declared, len(name), 0, 0, 0, 0, 0, 0) + name
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 1, 1, len(central), len(local) + len(body), 0)
    return local + body + central + end


def _peak_bytes(fn) -> tuple[int, Exception | None]:
    """Peak Python heap while ``fn`` runs (zlib's output buffers are Python bytes, so counted)."""
    import tracemalloc

    tracemalloc.start()
    try:
        fn()
        raised = None
    except Exception as exc:  # noqa: BLE001 (the caller asserts which)
        raised = exc
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak, raised


def test_a_charx_that_inflates_past_its_header_is_read_through_a_bounded_stream():
    """40 MiB inflating behind a 100-byte claim: refused, and the real 16 MiB limit bounds the
    memory (zf.read() inflated all 40 MiB before the CRC check failed)."""
    from charops.data.cards import MAX_CARD_JSON, CardError, card_from_charx

    data = _lying_charx(40 << 20)
    assert len(data) < 1 << 20 and MAX_CARD_JSON == 16 << 20
    peak, raised = _peak_bytes(lambda: card_from_charx(data))
    assert isinstance(raised, CardError) and "not a valid CHARX zip" in str(raised), raised
    # zlib grows its output buffer and trims it with a copy, so twice the limit at most; the
    # unbounded read held all 40 MiB (and more) at once.
    assert peak < 2 * MAX_CARD_JSON + (4 << 20) < 40 << 20, peak


def test_a_lying_charx_is_bounded_by_the_limit_not_by_its_size(monkeypatch, tmp_path):
    """With a 1 MiB limit the same file peaks at a few MiB: the bound is the limit."""
    import charops.data.cards as cards

    monkeypatch.setattr(cards, "MAX_CARD_JSON", 1 << 20)
    data = _lying_charx(40 << 20)
    peak, raised = _peak_bytes(lambda: cards.card_from_charx(data))
    assert isinstance(raised, cards.CardError), raised
    assert peak < 6 << 20, peak
    # through the importer too: one reject naming the file, nothing accepted
    (tmp_path / "bomb.charx").write_bytes(data)
    (reject,) = load_inputs([tmp_path / "bomb.charx"]).rejects
    assert reject.reason.startswith("not a valid CHARX zip")

