"""The bundled sample data: coverage, schema validity, style rules and freshness.

    .venv/bin/python -m pytest tests/unit/test_samples.py -x -q
"""

from __future__ import annotations

import dataclasses
import importlib.util
import itertools
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from charops.data.schema import CATEGORIES, MODELS
from charops.errors import DataError
from charops.io import read_jsonl

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "src" / "charops" / "data" / "samples"
SCRIPT = ROOT / "scripts" / "make_samples.py"
FILES = ("characters.jsonl", "dialogues.jsonl", "preferences.jsonl", "corpus.jsonl", "eval_prompts.jsonl",
         "README.md")
ZH_STAGE = re.compile(r"（[^（）]+）")
EN_STAGE = re.compile(r"\([^()]+\)")
PROFILE_FIELDS = ("identity", "interests", "viewpoints", "experiences", "achievements",
                  "relationships", "linguistic_style", "emotional_expression",
                  "interaction_patterns", "catchphrases", "classic_lines", "greeting")


@pytest.fixture(scope="module")
def gen():
    """The generator script as a module (it is a script, not part of the package)."""
    spec = importlib.util.spec_from_file_location("make_samples", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["make_samples"] = module  # dataclasses look their module up while decorating
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop("make_samples", None)


@pytest.fixture(scope="module")
def data():
    return {name: list(read_jsonl(SAMPLES / name)) for name in FILES if name.endswith(".jsonl")}


@pytest.fixture(scope="module")
def languages(data):
    return {p["name"]: p["language"] for p in data["characters.jsonl"]}


def test_every_record_validates_against_the_schema(data):
    expected = {"characters.jsonl": "profile", "dialogues.jsonl": "dialogue",
                "preferences.jsonl": "preference", "corpus.jsonl": "document",
                "eval_prompts.jsonl": "dialogue"}
    for name, rows in data.items():
        assert rows, name
        for row in rows:
            assert row["type"] == expected[name]
            MODELS[row["type"]].model_validate(row)


def test_characters_cover_categories_and_languages(data):
    profiles = data["characters.jsonl"]
    assert len(profiles) >= 8
    names = [p["name"] for p in profiles]
    assert len(set(names)) == len(names)
    per_category = Counter(p["category"] for p in profiles)
    for category in ("celebrity", "daily-life", "games-videos", "virtual-love"):
        assert per_category[category] >= 2, category
    assert set(per_category) <= set(CATEGORIES)
    assert {p["language"] for p in profiles} == {"zh", "en"}
    for p in profiles:
        for key in PROFILE_FIELDS:
            assert p[key], f"{p['name']}: {key} is empty"
        assert len(p["catchphrases"]) >= 2, p["name"]


def test_dialogue_counts_topics_and_ids(data, languages):
    dialogues = data["dialogues.jsonl"]
    assert len(dialogues) >= 200
    ids = [d["id"] for d in dialogues]
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"dlg-\d{4}", i) for i in ids)
    assert all(d["source"] == "charops-samples" for d in dialogues)
    assert {d["character"] for d in dialogues} == set(languages)  # every profile has dialogues
    topics_by_language = {(languages[d["character"]], d["topic"]) for d in dialogues}
    for lang, topic in itertools.product(("zh", "en"), ("chit-chat", "interview", "love")):
        assert (lang, topic) in topics_by_language
    for d in dialogues:
        roles = [t["role"] for t in d["turns"]]
        assert "system" not in roles, d["id"]  # the profile becomes the system prompt later
        assert roles[0] == "user" and roles[-1] == "assistant", d["id"]
        assert all(a != b for a, b in itertools.pairwise(roles) if "assistant" in (a, b)), d["id"]
    three_plus = sum(sum(t["role"] == "assistant" for t in d["turns"]) >= 3 for d in dialogues)
    assert three_plus >= 0.8 * len(dialogues)


def test_multi_party_scenes_name_their_speakers(data):
    scenes = [d for d in data["dialogues.jsonl"] if d["meta"].get("multi_party")]
    assert len(scenes) >= 3
    for d in scenes:
        speakers = {t["name"] for t in d["turns"] if t["role"] == "user"}
        assert None not in speakers and len(speakers) >= 2, d["id"]
    # Names appear only in those scenes, and never on assistant turns.
    for d in data["dialogues.jsonl"]:
        for t in d["turns"]:
            assert ("name" in t) == (t["role"] == "user" and bool(d["meta"].get("multi_party")))


def test_character_replies_carry_stage_directions_in_their_language(data, languages):
    for d in data["dialogues.jsonl"]:
        replies = [t["content"] for t in d["turns"] if t["role"] == "assistant"]
        if languages[d["character"]] == "zh":
            assert any(ZH_STAGE.search(r) for r in replies), d["id"]
            assert not any("(" in r or ")" in r for r in replies), d["id"]
        else:
            assert any(EN_STAGE.search(r) for r in replies), d["id"]
            assert not any("（" in r for r in replies), d["id"]


def test_dialogues_use_their_characters_catchphrases(data):
    by_name = {p["name"]: p for p in data["characters.jsonl"]}
    for name, profile in by_name.items():
        text = "".join(t["content"] for d in data["dialogues.jsonl"] if d["character"] == name
                       for t in d["turns"] if t["role"] == "assistant")
        for phrase in profile["catchphrases"]:
            assert phrase.rstrip("。！!.～") in text, f"{name} never says {phrase!r}"


def test_no_two_dialogues_share_more_than_half_their_character_lines(data):
    lines = [(d["id"], {t["content"] for t in d["turns"] if t["role"] == "assistant"})
             for d in data["dialogues.jsonl"]]
    for (a, la), (b, lb) in itertools.combinations(lines, 2):
        assert 2 * len(la & lb) <= min(len(la), len(lb)), (a, b)


def test_preference_pairs_contrast_in_and_out_of_character(data, languages):
    pairs = data["preferences.jsonl"]
    assert len(pairs) >= 100
    ids = [p["id"] for p in pairs]
    assert len(set(ids)) == len(ids)
    assert {p["character"] for p in pairs} == set(languages)
    assert Counter(p["meta"]["rejected_kind"] for p in pairs).keys() == {"generic-assistant",
                                                                         "off-profile"}
    catchphrases = {p["name"]: p["catchphrases"] for p in data["characters.jsonl"]}
    for p in pairs:
        assert p["context"][-1]["role"] == "user", p["id"]
        stage = ZH_STAGE if languages[p["character"]] == "zh" else EN_STAGE
        assert stage.search(p["chosen"]), p["id"]
        assert not ZH_STAGE.search(p["rejected"]) and not EN_STAGE.search(p["rejected"]), p["id"]
        assert not any(c.rstrip("。！!.～") in p["rejected"] for c in catchphrases[p["character"]])
        if p["meta"]["rejected_kind"] == "generic-assistant":
            assert re.search(r"人工智能|AI|语言模型|问题|question", p["rejected"]), p["id"]


def test_corpus_is_large_bilingual_and_unique(data):
    docs = data["corpus.jsonl"]
    ids = [d["id"] for d in docs]
    assert len(set(ids)) == len(ids) and all(re.fullmatch(r"doc-\d{4}", i) for i in ids)
    assert sum(len(d["text"].encode("utf-8")) for d in docs) >= 200_000
    assert {d["language"] for d in docs} == {"zh", "en"}
    texts = [d["text"] for d in docs]
    assert len(set(texts)) == len(texts)
    assert not any("{" in t or "}" in t for t in texts)  # no unfilled template placeholder
    total = sum((SAMPLES / name).stat().st_size for name in FILES)
    assert total < 2_000_000


def test_eval_prompts_are_held_out_and_cover_every_english_category_and_topic(data, languages):
    prompts = data["eval_prompts.jsonl"]
    assert all(p["meta"] == {"eval_prompt": True} and re.fullmatch(r"evp-\d{4}", p["id"]) for p in prompts)
    english = [p for p in prompts if languages[p["character"]] == "en"]
    assert len(english) >= 40  # the README main job's judged protocol asks for at least 40
    categories = {p["name"]: p["category"] for p in data["characters.jsonl"]}
    assert {categories[p["character"]] for p in english} == {"celebrity", "daily-life", "games-videos", "virtual-love"}
    assert {p["topic"] for p in english} == {"chit-chat", "interview", "love"}
    trained = {t["content"] for d in data["dialogues.jsonl"] for t in d["turns"] if t["role"] == "user"}
    trained |= {t["content"] for r in data["preferences.jsonl"] for t in r["context"] if t["role"] == "user"}
    lines = [p["turns"][-1]["content"] for p in prompts]
    assert len(set(lines)) == len(lines) and not set(lines) & trained


def test_an_eval_prompt_that_is_a_training_line_stops_the_generator(gen):
    char = gen.CHARACTERS[1]
    seen = dataclasses.replace(char, eval_prompts={"love": [char.exchanges["love"][0][0]]})
    with pytest.raises(DataError, match="must be held out"):
        gen.compose_eval_prompts(seen)


def test_committed_samples_match_a_fresh_generation(gen, tmp_path):
    assert gen.main(["--out", str(tmp_path)]) == 0
    for name in FILES:
        assert (tmp_path / name).read_bytes() == (SAMPLES / name).read_bytes(), (
            f"{name} is stale: run .venv/bin/python scripts/make_samples.py")


def test_generation_is_deterministic_across_processes(tmp_path):
    outs = []
    for i, hashseed in enumerate(("1", "2")):
        out = tmp_path / f"run{i}"
        env = {**os.environ, "PYTHONHASHSEED": hashseed}
        subprocess.run([sys.executable, str(SCRIPT), "--out", str(out)], check=True, env=env,
                       capture_output=True)
        outs.append({name: (out / name).read_bytes() for name in FILES})
    assert outs[0] == outs[1]


def test_check_mode_reports_stale_files(gen, tmp_path, capsys):
    assert gen.main(["--out", str(tmp_path)]) == 0
    assert gen.main(["--check", "--out", str(tmp_path)]) == 0
    with open(tmp_path / "dialogues.jsonl", "a", encoding="utf-8") as fh:
        fh.write("\n")
    assert gen.main(["--check", "--out", str(tmp_path)]) == 1
    assert "dialogues.jsonl" in capsys.readouterr().err


def _with_first(gen, monkeypatch, **changes):
    """Swap the first character for a modified copy."""
    first = dataclasses.replace(gen.CHARACTERS[0], **changes)
    monkeypatch.setattr(gen, "CHARACTERS", [first, *gen.CHARACTERS[1:]])
    return first


def test_generator_rejects_a_profile_the_schema_rejects(gen, monkeypatch):
    first = _with_first(gen, monkeypatch,
                        profile={**gen.CHARACTERS[0].profile, "category": "sports"})
    with pytest.raises(DataError, match=f"profile {first.name}: field 'category'"):
        gen.build()


def test_generator_rejects_a_reply_without_stage_direction(gen, monkeypatch):
    ex = dict(gen.CHARACTERS[0].exchanges)
    ex["love"] = [(q, ZH_STAGE.sub("", a)) for q, a in ex["love"]]
    _with_first(gen, monkeypatch, exchanges=ex)
    with pytest.raises(DataError, match="stage direction"):
        gen.build()


def test_generator_rejects_a_rejected_reply_in_character(gen, monkeypatch):
    char = gen.CHARACTERS[0]
    topic, user, chosen, _ = char.off_profile[0]
    bad = [(topic, user, chosen, "没拿过冠军，" + char.profile["catchphrases"][0])]
    _with_first(gen, monkeypatch, off_profile=bad + char.off_profile[1:])
    with pytest.raises(DataError, match="catchphrase"):
        gen.build()


def test_generator_refuses_near_copy_dialogues(gen, monkeypatch):
    char = gen.CHARACTERS[0]
    # Three exchanges per topic cannot make nine dialogues that each share at most half.
    small = {topic: bank[:3] for topic, bank in char.exchanges.items()}
    _with_first(gen, monkeypatch, exchanges=small, openers=char.openers[:1],
                closers=char.closers[:1])
    with pytest.raises(DataError, match="distinct"):
        gen.build()


def test_generator_refuses_too_little_data(gen, monkeypatch):
    monkeypatch.setattr(gen, "CHARACTERS", gen.CHARACTERS[:4])
    with pytest.raises(DataError, match="need at least"):
        gen.build()


def test_banks_are_data_files_one_per_character(gen, tmp_path):
    files = sorted(gen.BANKS.glob("[0-9]*.yaml"))
    assert [gen.load_character(p).name for p in files] == [c.name for c in gen.CHARACTERS]
    assert len(files) == len(gen.CHARACTERS) >= 8
    bad = tmp_path / "01-bad.yaml"
    bad.write_text("profile: {name: X}\nexchange: {}\n", encoding="utf-8")  # typo of 'exchanges'
    with pytest.raises(DataError, match="01-bad.yaml.*exchange"):
        gen.load_character(bad)
    bad.write_text("profile: {name: X}\nopeners:\n  - [only one]\n", encoding="utf-8")
    with pytest.raises(DataError, match="openers: expected a list of 2 items"):
        gen.load_character(bad)
