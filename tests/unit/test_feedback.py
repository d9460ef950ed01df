"""Feedback events, their store, and the export to DPO/KTO rows (charops.feedback).

    .venv/bin/python -m pytest tests/unit/test_feedback.py -x -q
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from charops.feedback import export as fx
from charops.feedback.events import MAX_EVENT_BYTES, EventError, check_event
from charops.feedback.store import append_event, event_key, read_events
from charops.storage import open_store

SYSTEM = {"role": "system", "content": "你是林小满。"}
USER = {"role": "user", "content": "你好！"}


def make_event(eid: str, kind: str = "thumbs", texts=("（微笑）你好呀", "你好。"), conv: str = "c1",
               turn: int = 0, at: str = "2026-12-04T10:00:00Z", source: str = "playground", **action):
    actions = {"thumbs": {"candidate": 0, "up": True}, "choose": {"candidate": 0, "continued": True},
               "edit": {"candidate": 1, "text": "（点头）你好。"}, "stars": {"candidate": 0, "stars": 4},
               "vote": {"winner": "a"}}
    return {"id": eid, "at": at, "source": source,
            "model": {"name": "charops-chat", "version": 1, "sha256": "a" * 64},
            "character": "林小满", "conversation": conv, "turn": turn, "messages": [SYSTEM, USER],
            "candidates": [{"text": t, "position": i, "sampling": {"temperature": 0.7, "top_p": 0.9}}
                           for i, t in enumerate(texts)],
            "action": {"kind": kind, **{**actions[kind], **action}}}


# -- the schema -----------------------------------------------------------------------------

def test_a_good_event_is_normalised():
    e = check_event({**make_event("evt-00001"), "extra": "dropped"})
    assert "extra" not in e and e["schema"] == "charops.feedback_event/v1"
    assert e["at"] == "2026-12-04T10:00:00.000Z"
    assert e["messages"][0] == SYSTEM and e["candidates"][1]["position"] == 1


@pytest.mark.parametrize("change, field", [
    (lambda e: e.update(id="x"), "id"),
    (lambda e: e.update(at="yesterday"), "at"),
    (lambda e: e.update(at="2026-12-04T10:00:00"), "at"),
    (lambda e: e["messages"].append({"role": "assistant", "content": "hi"}), "messages"),
    (lambda e: e["candidates"][1].update(position=0), "candidates[1].position"),
    (lambda e: e["action"].update(kind="like"), "action.kind"),
    (lambda e: e["action"].update(candidate=5), "action.candidate"),
    (lambda e: e["candidates"][0].update(sampling={"temperature": "hot"}), "candidates[0].sampling"),
    (lambda e: e.update(model={"name": "m", "version": 0}), "model.version"),
])
def test_a_bad_event_names_its_field(change, field):
    e = make_event("evt-00001")
    change(e)
    with pytest.raises(EventError) as err:
        check_event(e)
    assert err.value.field == field and err.value.status == 400 and field in str(err.value)


def test_stars_are_1_to_4_and_votes_compare_two():
    with pytest.raises(EventError, match="action.stars"):
        check_event(make_event("evt-00001", "stars", stars=5))
    with pytest.raises(EventError, match="exactly two"):
        check_event(make_event("evt-00001", "vote", texts=("a", "b", "c")))


def test_size_limits_answer_413():
    e = make_event("evt-00001", texts=("x" * 40_000, "y"))
    with pytest.raises(EventError) as err:
        check_event(e)
    assert err.value.status == 413
    with pytest.raises(EventError) as err:
        check_event(make_event("evt-00001"), raw_size=MAX_EVENT_BYTES + 1)
    assert err.value.status == 413


# -- the store ------------------------------------------------------------------------------

def test_append_is_idempotent_and_refuses_a_reused_id(local_and_s3_store):
    store = local_and_s3_store
    first = append_event(store, make_event("evt-00001"))
    assert first["status"] == "created"
    assert append_event(store, make_event("evt-00001"))["status"] == "duplicate"
    with pytest.raises(EventError) as err:
        append_event(store, make_event("evt-00001", up=False))
    assert err.value.status == 409
    assert [e["id"] for e in read_events(store, "charops-chat")] == ["evt-00001"]
    assert store.get_json(first["key"])["action"]["up"] is True


def test_read_events_since(tmp_path):
    store = open_store(str(tmp_path / "store"))
    for i, at in enumerate(["2026-11-30T23:59:00Z", "2026-12-01T08:00:00Z", "2026-12-02T09:00:00Z"]):
        append_event(store, make_event(f"evt-0000{i}", at=at))
    assert [e["id"] for e in read_events(store, "charops-chat", since="2026-12-01")] == ["evt-00001", "evt-00002"]
    assert [e["id"] for e in read_events(store, "charops-chat", since="2026-12-01T09:00:00Z")] == ["evt-00002"]
    assert event_key(check_event(make_event("evt-00009"))) == "feedback/charops-chat/events/2026-12-04/evt-00009.json"


def test_concurrent_writers_lose_and_duplicate_nothing(local_and_s3_store):
    """20 writers, each sending its event twice at once: 20 events stored, each once."""
    store = local_and_s3_store
    results, errors = [], []
    barrier = threading.Barrier(20)

    def voter(i: int) -> None:
        try:
            barrier.wait()
            ev = make_event(f"vote-{i:05d}", "vote", conv=f"c{i}")
            results.append(append_event(store, ev)["status"])
            results.append(append_event(store, ev)["status"])
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=voter, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sorted(results).count("created") == 20 and results.count("duplicate") == 20
    assert sorted(e["id"] for e in read_events(store, "charops-chat")) == [f"vote-{i:05d}" for i in range(20)]


WRITER = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {tests!r})
    from test_feedback import make_event
    from charops.feedback.store import append_event
    from charops.storage import open_store
    store = open_store({store!r})
    i = 0
    while True:
        append_event(store, make_event(f"kill-{{i:06d}}", texts=("x" * 20000, "y")))
        print(i, flush=True)
        i += 1
""")


def test_sigkill_mid_write_corrupts_no_event(tmp_path):
    """A writer killed with SIGKILL at random moments: every stored event reads back whole and
    checks out; at most the event in flight is missing."""
    store_dir = tmp_path / "store"
    script = tmp_path / "writer.py"
    script.write_text(WRITER.format(tests=str(Path(__file__).parent), store=str(store_dir)))
    acknowledged = -1
    for round_ in range(5):
        proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True,
                                env={**os.environ, "OMP_NUM_THREADS": "1"})
        deadline = time.monotonic() + 60
        lines = []
        while len(lines) < 5 + round_ * 3 and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert lines, "the writer stored nothing before it was killed"
        acknowledged = max(acknowledged, int(lines[-1]))
    store = open_store(str(store_dir))
    events = read_events(store, "charops-chat")  # checks every object's sha256
    ids = [e["id"] for e in events]
    assert len(ids) == len(set(ids))
    # Each run restarts at 0 and only re-sends ids it already stored (duplicates, not copies):
    # every acknowledged id is there, whole.
    assert {f"kill-{i:06d}" for i in range(acknowledged + 1)} <= set(ids)
    assert all(len(e["candidates"][0]["text"]) == 20000 for e in events)


# -- the mapping, one function each, hand-checked --------------------------------------------

def ev(eid, kind, **kw):
    return check_event(make_event(eid, kind, **kw))


PROMPT = (("system", "你是林小满。"), ("user", "你好！"))


def test_map_vote():
    assert fx.map_vote(ev("v-000001", "vote", winner="a")) == ([fx.Pair(PROMPT, "（微笑）你好呀", "你好。")], None)
    assert fx.map_vote(ev("v-000002", "vote", winner="b")) == ([fx.Pair(PROMPT, "你好。", "（微笑）你好呀")], None)
    assert fx.map_vote(ev("v-000003", "vote", winner="tie")) == ([], "tie")
    assert fx.map_vote(ev("v-000004", "vote", winner="both_bad")) == (
        [fx.Unpaired(PROMPT, "（微笑）你好呀", False), fx.Unpaired(PROMPT, "你好。", False)], None)
    assert fx.map_vote(ev("v-000005", "vote", winner="a", anonymous=False))[1].startswith("non-anonymous")


def test_map_vote_follows_positions_not_list_order():
    e = make_event("v-000006", "vote", winner="a")
    e["candidates"][0]["position"], e["candidates"][1]["position"] = 1, 0  # list order != shown order
    assert fx.map_vote(check_event(e))[0] == [fx.Pair(PROMPT, "你好。", "（微笑）你好呀")]


def test_map_choose():
    e = ev("s-000001", "choose", texts=("A", "B", "C"), candidate=1)
    assert fx.map_choose(e) == ([fx.Pair(PROMPT, "B", "A"), fx.Pair(PROMPT, "B", "C")], None)
    assert fx.map_choose(ev("s-000002", "choose", continued=False)) == ([], "swipe chosen but not continued")
    assert fx.map_choose(ev("s-000003", "choose", texts=("A",)))[1] == "no other candidate was passed over"


def test_map_edit_and_thumbs():
    assert fx.map_edit(ev("e-000001", "edit")) == ([fx.Pair(PROMPT, "（点头）你好。", "你好。")], None)
    assert fx.map_edit(ev("e-000002", "edit", text="你好。"))[1] == "edit changed nothing"
    assert fx.map_thumbs(ev("t-000001", "thumbs", candidate=1, up=False)) == ([fx.Unpaired(PROMPT, "你好。", False)], None)


def test_map_stars_gap_of_two():
    texts = ("A", "B", "C")
    group = [ev("r-000001", "stars", texts=texts, candidate=0, stars=4),
             ev("r-000002", "stars", texts=texts, candidate=1, stars=3),
             ev("r-000003", "stars", texts=texts, candidate=2, stars=1)]
    rows, dropped = fx.map_stars(group)
    # 4 vs 1 and 3 vs 1 are 2+ apart; 4 vs 3 is not.
    assert rows == [fx.Pair(PROMPT, "A", "C"), fx.Pair(PROMPT, "B", "C")]
    assert dropped == {}
    rows, dropped = fx.map_stars(group[:2])
    assert rows == [] and set(dropped) == {"r-000001", "r-000002"}


def test_export_counts_dedupes_and_splits_by_conversation():
    events = [ev("v-000001", "vote", winner="a", conv="c1"),
              ev("v-000002", "vote", winner="a", conv="c1", turn=1),  # same rows: a duplicate
              ev("v-000003", "vote", winner="tie", conv="c2"),
              ev("t-000001", "thumbs", conv="c3"),
              ev("e-000001", "edit", conv="c4"),
              ev("v-000004", "vote", winner="both_bad", conv="c5")]
    splits, summary = fx.export_rows(events, "dpo", validation_fraction=0.5)
    src = summary["sources"]["playground"]
    assert src["read"] == 6 == src["used"] + sum(src["dropped"].values())
    assert src["used"] == 2
    assert src["dropped"] == {"duplicate of an earlier row": 1, "tie": 1,
                              "unpaired signal (thumbs, both bad): export --format kto": 2}
    rows = splits["train"] + splits["validation"]
    assert len(rows) == 2 and all(r["prompt"] == [SYSTEM, USER] for r in rows)
    for split in fx.SPLITS:
        for r in splits[split]:
            assert fx.conversation_split("playground", r["conversation"], 0.5) == split

    splits, summary = fx.export_rows(events, "kto")
    rows = splits["train"] + splits["validation"]
    # vote a: +chosen/-rejected (2); thumbs: 1; edit: 2; both bad: 2 (one is the vote's loser, a dup)
    labels = sorted((r["completion"][0]["content"], r["label"]) for r in rows)
    assert labels == sorted([("（微笑）你好呀", True), ("你好。", False), ("（点头）你好。", True),
                             ("（微笑）你好呀", False)])
    assert summary["sources"]["playground"]["read"] == 6


def test_exported_dpo_goes_through_data_prepare(tmp_path, micro_model_dir):
    from charops.config import load_config
    from charops.data.prepare import PrepareConfig, run

    events = [ev(f"v-{i:06d}", "vote", winner="a", conv=f"c{i}", texts=(f"（微笑）好{i}", f"你好{i}。"))
              for i in range(8)]
    splits, summary = fx.export_rows(events, "dpo", validation_fraction=0.3)
    out = fx.write_export(splits, summary, tmp_path / "fb")
    run(load_config(PrepareConfig, None, [f"inputs={out}", f"model={micro_model_dir}",
                                          f"output_dir={tmp_path / 'ds'}", "progress=false",
                                          "allow_empty_split=true"]))
    prepared = [json.loads(line) for s in fx.SPLITS
                for line in (tmp_path / "ds" / "dpo" / f"{s}.jsonl").read_text().splitlines()]
    assert len(prepared) == 8
    # the rendered prompt, system prompt included, is kept exactly
    assert all(r["prompt"] == [SYSTEM, USER] for r in prepared)
    assert sorted(r["chosen"][0]["content"] for r in prepared) == sorted(f"（微笑）好{i}" for i in range(8))


def test_write_export_refuses_overlap_and_empty(tmp_path):
    splits, summary = fx.export_rows([ev("v-000003", "vote", winner="tie")], "dpo")
    with pytest.raises(Exception, match="none usable"):
        fx.write_export(splits, summary, tmp_path / "fb")
    assert not (tmp_path / "fb").exists()
    log = tmp_path / "logs" / "feedback.jsonl"
    log.parent.mkdir()
    log.write_text("{}\n")
    for out in (log.parent, tmp_path):  # the folder holding the input, or one above it
        with pytest.raises(Exception, match="overlaps the input"):
            fx.write_export(splits, summary, out, overwrite=True, inputs=[log])
    assert log.read_text() == "{}\n"


def test_export_step_gives_the_trainers_their_data_and_the_characters(tmp_path, serve_model_dir):
    """The feedback pipeline's first step: production model, prepared DPO pairs (or KTO rows),
    the summary, and the production model's characters (else the new version plays nobody)."""
    from charops.feedback.flywheel import export_step
    from charops.registry import register, transition

    store = open_store(str(tmp_path / "store"))
    register(store, serve_model_dir, "charops-chat", {}, {"base_model": "micro"})
    with pytest.raises(Exception, match="no production version"):
        export_step(str(tmp_path / "store"), "charops-chat", "", "dpo", 0.0, tmp_path / "m0", tmp_path / "d0")
    transition(store, "charops-chat", 1, "production", actor="test", reason="first")
    for i in range(6):
        append_event(store, make_event(f"v-{i:06d}", "vote", texts=(f"（微笑）好{i}", f"你好{i}。"), conv=f"c{i}"))
    summary = export_step(str(tmp_path / "store"), "charops-chat", "", "dpo", 0.0, tmp_path / "m", tmp_path / "d")
    assert summary["production"]["version"] == 1 and summary["used"] == 6
    assert (tmp_path / "m" / "config.json").is_file() and (tmp_path / "d" / "manifest.json").is_file()
    rows = (tmp_path / "d" / "dpo" / "train.jsonl").read_text().splitlines()
    assert len(rows) == 6 and json.loads(rows[0])["prompt"][0] == SYSTEM
    assert (tmp_path / "d" / "characters.jsonl").read_text() == (serve_model_dir / "characters.jsonl").read_text()
    assert (tmp_path / "d" / "feedback_summary.yaml").is_file()
    summary = export_step(str(tmp_path / "store"), "charops-chat", "", "kto", 0.0, tmp_path / "m2", tmp_path / "k")
    assert len((tmp_path / "k" / "kto" / "train.jsonl").read_text().splitlines()) == 12
    assert (tmp_path / "k" / "characters.jsonl").is_file()
