"""The OpenAI features front-ends use, on the real routes in process (FastAPI TestClient, the
real engine and the micro model): the character-prompt policy, ``n`` candidates in one batch,
assistant prefill/continue, persona, ``stop``/``seed``/``max_completion_tokens``,
``logit_bias``, ``response_format`` (llguidance), the lorebook, greetings and untrained
characters in ``/models``.

    .venv/bin/python -m pytest tests/unit/test_serve_features.py -x -q
"""

from __future__ import annotations

import json
import shutil

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from charops.data.cards import card_records
from charops.data.render import render_system_prompt
from charops.serve.characters import TRAINED_FILE, load_characters
from charops.serve.prompting import build_chat, lorebook_entries
from charops.serve.server import ServeConfig, build_state

BOOK = {
    "name": "Mara's world", "scan_depth": 2, "token_budget": 400,
    "entries": [
        {"keys": ["lighthouse"], "content": "The lighthouse on Gull Rock has been dark for ten years.",
         "insertion_order": 20, "enabled": True, "position": "after_char", "priority": 5},
        {"keys": ["harbour", "harbor"], "content": "The harbour master is Mara's uncle Ivo.",
         "insertion_order": 10, "enabled": True, "position": "before_char", "priority": 5},
        {"keys": ["storm"], "content": "Storms come from the west in autumn.", "insertion_order": 5,
         "enabled": False},
        {"keys": [], "content": "Mara never lies about the sea.", "constant": True, "insertion_order": 1,
         "position": "after_char"},
        {"keys": ["ghost"], "secondary_keys": ["night"], "selective": True,
         "content": "Locals say a ghost walks the pier at night.", "insertion_order": 30},
    ],
}
CARD = {"spec": "chara_card_v2", "spec_version": "2.0", "data": {
    "name": "Mara", "description": "A lighthouse keeper's daughter on a windy island.",
    "personality": "Curious, blunt.", "scenario": "", "first_mes": "Ahoy! Mind the rocks.",
    "alternate_greetings": ["Back again?", "The tide is early today."], "mes_example": "",
    "character_book": BOOK, "tags": [], "creator_notes": "", "system_prompt": "",
    "post_history_instructions": "", "creator": "", "character_version": "", "extensions": {}}}
SCHEMA = {"type": "object", "properties": {"verdict": {"enum": ["A", "B", "tie"]}},
          "required": ["verdict"], "additionalProperties": False}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, serve_model_dir):
    """serve_model_dir plus Mara (a card with a lorebook), with Tom recorded as untrained."""
    out = tmp_path_factory.mktemp("features") / "model"
    shutil.copytree(serve_model_dir, out)
    mara, _, _ = card_records(CARD, "mara")
    with (out / "characters.jsonl").open("a", encoding="utf-8") as f:
        f.write(json.dumps(mara.model_dump(mode="json"), ensure_ascii=False) + "\n")
    (out / TRAINED_FILE).write_text(json.dumps({"trained": ["林小满", "Mara"]}))
    return out


@pytest.fixture(scope="module")
def served(model_dir):
    state = build_state(ServeConfig(model_dir=str(model_dir), max_tokens_cap=64, batch_wait_ms=200,
                                    batch_quiet_ms=100))
    from charops.serve.openai_api import openai_router

    app = FastAPI()
    app.include_router(openai_router(state))
    state.engine.start()
    with TestClient(app) as client:
        yield state, client
    state.engine.stop()


def _chat(client, **body):
    body.setdefault("model", "charops-chat:Mara")
    body.setdefault("temperature", 0)
    body.setdefault("max_tokens", 8)
    return client.post("/openai/v1/chat/completions", json=body)


def _ids(state, messages, **kw):
    text = state.tokenizer.apply_chat_template(messages, tokenize=False, **kw)
    return state.tokenizer(text, add_special_tokens=False)["input_ids"]


# -- profile policy ---------------------------------------------------------------------------

def test_merge_keeps_the_trained_profile_before_the_client_system_text(served):
    state, client = served
    profile = state.characters["Mara"].system_prompt
    msgs = [{"role": "system", "content": "Write one short line."}, {"role": "user", "content": "Hello"}]
    r = _chat(client, messages=msgs)
    assert r.status_code == 200, r.text
    assert r.headers["x-charops-character-prompt"] == "merge"
    want = _ids(state, [{"role": "system", "content": profile + "\n\nWrite one short line."},
                        {"role": "user", "content": "Hello"}], add_generation_prompt=True)
    assert r.json()["usage"]["prompt_tokens"] == len(want)
    # The old behaviour (the client's system text replaces the profile) is now `client`.
    r = _chat(client, messages=msgs, character_prompt="client")
    assert r.headers["x-charops-character-prompt"] == "client"
    assert r.json()["usage"]["prompt_tokens"] == len(_ids(state, msgs, add_generation_prompt=True))
    r = _chat(client, messages=msgs, character_prompt="profile")
    assert r.headers["x-charops-character-prompt"] == "profile"
    only = [{"role": "system", "content": profile}, msgs[1]]
    assert r.json()["usage"]["prompt_tokens"] == len(_ids(state, only, add_generation_prompt=True))
    # No client system text: the profile, whatever the policy; no character: none.
    assert _chat(client, messages=msgs[1:]).headers["x-charops-character-prompt"] == "profile"
    assert _chat(client, model="charops-chat", messages=msgs).headers["x-charops-character-prompt"] == "none"
    bad = _chat(client, messages=msgs, character_prompt="replace")
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "character_prompt"


def test_server_default_policy_is_used_when_the_request_names_none(served):
    state, client = served
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    state.character_prompt = "client"
    try:
        r = _chat(client, messages=msgs)
        assert r.headers["x-charops-character-prompt"] == "client"
        assert _chat(client, messages=msgs, character_prompt="merge").headers["x-charops-character-prompt"] == "merge"
    finally:
        state.character_prompt = "merge"


# -- n, seed, stop, max_completion_tokens -------------------------------------------------------

def test_n_candidates_are_generated_in_one_batch(served):
    state, client = served
    sizes: list[int] = []
    state.engine.on_batch = sizes.append  # rows per decoding step
    r = _chat(client, messages=[{"role": "user", "content": "Hello"}], n=3, temperature=1.0, seed=7,
              max_tokens=6, min_tokens=6)
    assert r.status_code == 200, r.text
    body = r.json()
    assert [c["index"] for c in body["choices"]] == [0, 1, 2]
    state.engine.on_batch = None
    assert max(sizes) == 3  # the 3 candidates decode in one batch
    assert body["usage"]["completion_tokens"] == 18
    # The same seed gives the same candidates again.
    again = _chat(client, messages=[{"role": "user", "content": "Hello"}], n=3, temperature=1.0, seed=7,
                  max_tokens=6, min_tokens=6).json()
    assert [c["message"]["content"] for c in again["choices"]] == [c["message"]["content"] for c in body["choices"]]
    for n in (0, 9):
        bad = _chat(client, messages=[{"role": "user", "content": "Hello"}], n=n)
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "n"


def test_n_candidates_stream_with_their_index(served):
    _, client = served
    with client.stream("POST", "/openai/v1/chat/completions", json={
            "model": "charops-chat:Mara", "messages": [{"role": "user", "content": "Hello"}], "n": 2,
            "temperature": 0, "max_tokens": 5, "stream": True,
            "stream_options": {"include_usage": True}}) as r:
        assert r.headers["x-charops-character-prompt"] == "profile"
        chunks = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: {")]
    finished = sorted(c["choices"][0]["index"] for c in chunks if c["choices"] and c["choices"][0]["finish_reason"])
    assert finished == [0, 1]
    texts = ["".join(c["choices"][0]["delta"].get("content") or "" for c in chunks
                     if c["choices"] and c["choices"][0]["index"] == i) for i in (0, 1)]
    assert texts[0] == texts[1]  # greedy: both candidates are the same reply
    usage = chunks[-1]["usage"]  # both candidates' tokens (the same count: the same reply)
    assert usage["completion_tokens"] > 0 and usage["completion_tokens"] % 2 == 0


def test_max_completion_tokens_and_stop(served):
    _, client = served
    r = _chat(client, messages=[{"role": "user", "content": "Hello"}], max_completion_tokens=3,
              min_tokens=3).json()
    assert r["usage"]["completion_tokens"] == 3 and r["choices"][0]["finish_reason"] == "length"
    full = _chat(client, messages=[{"role": "user", "content": "Hello"}], max_tokens=12, min_tokens=12).json()
    text = full["choices"][0]["message"]["content"]
    stop = text[3:5]
    cut = _chat(client, messages=[{"role": "user", "content": "Hello"}], max_tokens=12, min_tokens=12,
                stop=[stop]).json()
    assert cut["choices"][0]["message"]["content"] == text[:text.find(stop)]
    assert cut["choices"][0]["finish_reason"] == "stop"


# -- continue / prefill, persona ---------------------------------------------------------------

def test_trailing_assistant_message_is_continued_without_a_new_header(served):
    state, client = served
    profile = state.characters["Mara"].system_prompt
    msgs = [{"role": "user", "content": "Hello"}, {"role": "assistant", "content": "Ahoy, I am"}]
    chat = build_chat(msgs, state.characters["Mara"], state.tokenizer, policy="merge", body={})
    text = state.tokenizer.decode(chat.prompt_ids)
    assert chat.continued and text.endswith("<|im_start|>assistant\nAhoy, I am")
    r = _chat(client, messages=msgs).json()
    full = [{"role": "system", "content": profile}, *msgs]
    assert r["usage"]["prompt_tokens"] == len(_ids(state, full, continue_final_message=True))
    # continue_final_message: false starts a new assistant turn after the prefill message.
    new = _chat(client, messages=msgs, continue_final_message=False).json()
    assert new["usage"]["prompt_tokens"] == len(_ids(state, full, add_generation_prompt=True))
    bad = _chat(client, messages=msgs[:1], continue_final_message=True)
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "continue_final_message"


def test_persona_names_the_user_turns_and_adds_a_profile_block(served):
    state, _ = served
    mara = state.characters["Mara"]
    msgs = [{"role": "user", "content": "Hello"}, {"role": "assistant", "content": "Ahoy."},
            {"role": "user", "content": "Seen the light?", "name": "Bo"}]
    chat = build_chat(msgs, mara, state.tokenizer, policy="merge",
                      body={"persona": {"name": "Ana", "description": "A sailor who lost her ship."}})
    assert chat.messages[0]["content"] == (mara.system_prompt + "\n\nAbout the user:\nName: Ana\n"
                                          "A sailor who lost her ship.")
    assert [m.get("name") for m in chat.messages[1:]] == ["Ana", None, "Bo"]  # an explicit name stays
    assert "<|im_start|>user\nAna：Hello<|im_end|>" in state.tokenizer.decode(chat.prompt_ids)


def test_bad_persona_is_a_400(served):
    _, client = served
    r = _chat(client, messages=[{"role": "user", "content": "Hi"}], persona={"name": 3})
    assert r.status_code == 400 and r.json()["error"]["param"] == "persona"


# -- logit_bias and response_format ------------------------------------------------------------

def test_logit_bias_changes_the_greedy_reply(served):
    state, client = served
    token = state.tokenizer("fox", add_special_tokens=False)["input_ids"][0]
    r = _chat(client, messages=[{"role": "user", "content": "Hello"}], max_tokens=4, min_tokens=4,
              logit_bias={str(token): 100}).json()
    assert r["choices"][0]["message"]["content"] == state.tokenizer.decode([token] * 4)
    for bias, param in (({"99999999": 5}, "logit_bias"), ({str(token): 101}, "logit_bias"), ([1], "logit_bias")):
        bad = _chat(client, messages=[{"role": "user", "content": "Hello"}], logit_bias=bias)
        assert bad.status_code == 400 and bad.json()["error"]["param"] == param


def test_json_schema_reply_parses_and_follows_the_schema(served):
    _, client = served
    fmt = {"type": "json_schema", "json_schema": {"name": "verdict", "schema": SCHEMA, "strict": True}}
    r = _chat(client, messages=[{"role": "user", "content": "Which is better, A or B?"}], n=3,
              temperature=1.0, seed=3, max_tokens=48, response_format=fmt)
    assert r.status_code == 200, r.text
    for choice in r.json()["choices"]:
        assert choice["finish_reason"] == "stop", choice
        assert json.loads(choice["message"]["content"])["verdict"] in ("A", "B", "tie")
    # Unconstrained, the micro model writes no JSON at all.
    free = _chat(client, messages=[{"role": "user", "content": "Which is better, A or B?"}], max_tokens=16).json()
    with pytest.raises(json.JSONDecodeError):
        json.loads(free["choices"][0]["message"]["content"])


def test_json_object_with_bias_toward_closing(served):
    state, client = served
    close = state.tokenizer("}", add_special_tokens=False)["input_ids"]
    assert len(close) == 1
    r = _chat(client, messages=[{"role": "user", "content": "Say it in JSON."}], max_tokens=16,
              response_format={"type": "json_object"}, logit_bias={str(close[0]): 100}).json()
    assert r["choices"][0]["message"]["content"] == "{}" and r["choices"][0]["finish_reason"] == "stop"


def test_bad_response_format_is_a_400(served):
    _, client = served
    for fmt in ({"type": "xml"}, {"type": "json_schema"}, {"type": "json_schema", "json_schema": {"name": "x", "schema": 3}},
                {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "nonsense"}}}):
        r = _chat(client, messages=[{"role": "user", "content": "Hi"}], response_format=fmt)
        assert r.status_code == 400, (fmt, r.text)
        assert r.json()["error"]["param"].startswith("response_format")


# -- lorebook --------------------------------------------------------------------------------------

def test_lorebook_entries_by_keyword_position_order_and_budget():
    def count(text):
        return len(text.split())

    turns = [{"role": "user", "content": "Tell me about the storm."}, {"role": "assistant", "content": "Later."},
             {"role": "user", "content": "What about the LIGHTHOUSE and the harbor?"}]
    before, after = lorebook_entries(BOOK, turns, count)
    assert before == ["The harbour master is Mara's uncle Ivo."]
    # The constant entry (insertion_order 1) comes before the lighthouse (20); storm is disabled.
    assert after == ["Mara never lies about the sea.", "The lighthouse on Gull Rock has been dark for ten years."]
    # scan_depth 2: the first turn's "storm" is out of reach anyway; depth 1 loses nothing here,
    # but a keyword only in an older turn is not seen.
    old = [{"role": "user", "content": "the lighthouse?"}, {"role": "assistant", "content": "a"},
           {"role": "user", "content": "b"}]
    assert lorebook_entries(BOOK, old, count)[1] == ["Mara never lies about the sea."]
    # Selective: "ghost" needs "night" too.
    assert "Locals say a ghost walks the pier at night." not in lorebook_entries(
        BOOK, [{"role": "user", "content": "a ghost"}], count)[1]
    assert "Locals say a ghost walks the pier at night." in lorebook_entries(
        BOOK, [{"role": "user", "content": "a ghost at night"}], count)[1]
    # Budget 15 words: the constant (6) and one 8-9 word entry fit, by priority then order.
    before, after = lorebook_entries(BOOK, turns, count, token_budget=15)
    assert after[0] == "Mara never lies about the sea." and len(before) + len(after) == 2


def test_lorebook_recursive_scanning_follows_activated_entries():
    def count(text):
        return len(text.split())

    def entry(keys, content, **kw):
        return {"keys": keys, "content": content, "enabled": True, "insertion_order": 0, **kw}

    book = {"recursive_scanning": True, "entries": [
        entry(["lighthouse"], "The lighthouse keeper was Ivo."),
        entry(["Ivo"], "Ivo sails the Heron."),                                  # found through the first
        entry(["Heron"], "The Heron sank in 1902."),                             # through the second
        entry(["keeper"], "Keepers are sworn in.", extensions={"exclude_recursion": True}),  # chat only
        entry(["sank"], "A wreck is a grave.", extensions={"prevent_recursion": True}),      # activates nothing
        entry(["grave"], "Graves are left alone."),
    ]}
    turns = [{"role": "user", "content": "Is the lighthouse dark?"}]
    after = lorebook_entries(book, turns, count)[1]
    assert after == ["The lighthouse keeper was Ivo.", "Ivo sails the Heron.", "The Heron sank in 1902.",
                     "A wreck is a grave."]
    # Without recursive_scanning only the chat's keywords count.
    assert lorebook_entries({**book, "recursive_scanning": False}, turns, count)[1] == ["The lighthouse keeper was Ivo."]
    # An exclude_recursion entry still activates from the chat itself.
    assert "Keepers are sworn in." in lorebook_entries(book, [{"role": "user", "content": "the keeper"}], count)[1]


def test_lorebook_is_opt_in_per_request(served):
    state, client = served
    mara = state.characters["Mara"]
    msgs = [{"role": "user", "content": "Is the lighthouse still dark?"}]
    off = _chat(client, messages=msgs).json()["usage"]["prompt_tokens"]
    on = _chat(client, messages=msgs, lorebook=True).json()["usage"]["prompt_tokens"]
    system = "\n\n".join([mara.system_prompt, "Mara never lies about the sea.",
                          "The lighthouse on Gull Rock has been dark for ten years."])
    assert off == len(_ids(state, [{"role": "system", "content": mara.system_prompt}, *msgs], add_generation_prompt=True))
    assert on == len(_ids(state, [{"role": "system", "content": system}, *msgs], add_generation_prompt=True))


# -- /models: greetings and untrained characters -----------------------------------------------

def test_models_list_greetings_and_untrained_characters(served, model_dir):
    _, client = served
    cards = {m["id"]: m for m in client.get("/openai/v1/models").json()["data"]}
    mara = cards["charops-chat:Mara"]["character"]
    assert mara["greeting"] == "Ahoy! Mind the rocks."
    assert mara["alternate_greetings"] == ["Back again?", "The tide is early today."]
    assert mara["trained"] is True and cards["charops-chat:Tom"]["character"]["trained"] is False
    assert {c.name: c.trained for c in load_characters(model_dir).values()} == {"林小满": True, "Tom": False, "Mara": True}


def test_untrained_character_is_refused_unless_allowed(served):
    state, client = served
    r = _chat(client, model="charops-chat:Tom", messages=[{"role": "user", "content": "Hi"}])
    assert r.status_code == 400 and r.json()["error"]["code"] == "character_untrained"
    assert "allow_untrained" in r.json()["error"]["message"]
    ok = _chat(client, model="charops-chat:Tom", messages=[{"role": "user", "content": "Hi"}], allow_untrained=True)
    assert ok.status_code == 200
    state.allow_untrained = True
    try:
        assert _chat(client, model="charops-chat:Tom", messages=[{"role": "user", "content": "Hi"}]).status_code == 200
    finally:
        state.allow_untrained = False


def test_profile_render_matches_training(served):
    state, _ = served
    mara = state.characters["Mara"]
    assert mara.system_prompt == render_system_prompt(mara.profile)
    assert "lighthouse on Gull Rock" not in mara.system_prompt  # the lorebook is not in the profile


# -- untrained characters: training records them, the card and `charops chat` show them ---------

def test_training_records_the_characters_its_rows_covered(tmp_path):
    """A character whose dialogues were all rejected by data prepare has no training row: it is
    left out of trained_characters.json (the base model's list is kept, pretraining adds none)."""
    from types import SimpleNamespace

    from charops.train.finish import record_trained_characters

    base = tmp_path / "base"
    base.mkdir()
    sft = tmp_path / "sft"
    sft.mkdir()
    rows = [{"character": "林小满", "input_ids": [1]}, {"character": "林小满", "input_ids": [2]}]
    assert record_trained_characters(SimpleNamespace(train_rows=[{"input_ids": [1]}], model_dir=base), sft) is None
    record_trained_characters(SimpleNamespace(train_rows=rows, model_dir=base), sft)
    assert json.loads((sft / TRAINED_FILE).read_text()) == {"trained": ["林小满"]}
    dpo = tmp_path / "dpo"
    dpo.mkdir()
    record_trained_characters(SimpleNamespace(train_rows=[{"character": "Mara"}], model_dir=sft), dpo)
    assert json.loads((dpo / TRAINED_FILE).read_text()) == {"trained": ["Mara", "林小满"]}
    pre = tmp_path / "pre"
    pre.mkdir()  # pretraining rows name no character: the base's list passes on unchanged
    record_trained_characters(SimpleNamespace(train_rows=[{"input_ids": [3]}], model_dir=dpo), pre)
    assert json.loads((pre / TRAINED_FILE).read_text()) == {"trained": ["Mara", "林小满"]}


def test_model_card_flags_untrained_characters(model_dir):
    from charops.registry.card import card_markdown, read_characters

    chars = {c["name"]: c for c in read_characters(model_dir)}
    assert chars["Tom"]["trained"] is False and "trained" not in chars["Mara"]
    card = {"name": "m", "version": 1, "created_at": "t", "charops_version": "0", "base_model": "b",
            "dataset_sha256": "d", "model_uri": "u", "model_sha256": "s", "characters": list(chars.values()),
            "pipeline": {"version": None, "run_name": None, "run_id": None}, "training": None,
            "eval_summary": None, "metrics": {}, "files": {}}
    text = card_markdown(card)
    assert "| Tom (untrained: all its data was rejected) |" in text and "| Mara |" in text


def test_chat_refuses_an_untrained_character_unless_allowed(served):
    import openai

    from charops.cli.chat import Session
    from charops.errors import CharopsError

    _, client = served
    sdk = openai.OpenAI(base_url="http://testserver/openai/v1", api_key="x", http_client=client)
    with pytest.raises(CharopsError, match="untrained.*--allow-untrained"):
        Session(sdk, None, "Tom", {}, 4, 0.0)
    session = Session(sdk, None, "Tom", {}, 4, 0.0, allow_untrained=True)
    assert session.model == "charops-chat:Tom" and session.extra == {"allow_untrained": True}
    import io

    out = io.StringIO()
    session.reply("Hi", out)
    assert "error" not in out.getvalue() and session.history[-1]["role"] == "assistant"
    assert Session(sdk, None, "Mara", {}, 4, 0.0).extra == {}


def test_sft_on_a_dataset_that_rejected_a_characters_data_records_it_untrained(tmp_path, micro_model_dir):
    """End to end: data prepare rejects Mara's only dialogue (longer than max_seq_len), SFT
    trains on the rest, and the served model flags Mara as untrained."""
    from conftest import train_records

    from charops.config import load_config
    from charops.data.prepare import PrepareConfig
    from charops.data.prepare import run as prepare
    from charops.io import write_jsonl
    from charops.train.sft import SFTConfig
    from charops.train.sft import run as sft

    records = [*train_records(), {"type": "profile", "name": "Mara", "language": "en", "identity": "a keeper"},
               {"type": "dialogue", "id": "mara-long", "character": "Mara",
                "turns": [{"role": "user", "content": "Tell me everything. " * 400},
                          {"role": "assistant", "content": "No."}]}]
    write_jsonl(tmp_path / "records.jsonl", records)
    data = tmp_path / "data"
    manifest = prepare(load_config(PrepareConfig, None, [
        f"inputs={tmp_path / 'records.jsonl'}", f"model={micro_model_dir}", f"output_dir={data}",
        "block_size=32", "validation_fraction=0.3", "progress=false", "allow_empty_split=true"]))
    assert manifest["counts"]["rejected_by_reason"], manifest["counts"]  # Mara's dialogue is a reject
    sft(load_config(SFTConfig, "tiny-cpu", ["max_steps=1", "per_device_train_batch_size=2", "evaluate=false",
                                            "save_steps=100", f"model={micro_model_dir}", f"dataset={data}",
                                            f"output_dir={tmp_path / 'run'}"]))
    model = tmp_path / "run" / "model"
    assert json.loads((model / TRAINED_FILE).read_text()) == {"trained": ["Tom", "小明"]}
    chars = load_characters(model)
    assert chars["Mara"].trained is False and chars["Tom"].trained and chars["小明"].trained
