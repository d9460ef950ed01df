"""People as the judge: agreement statistics by hand, blind export, two-annotator round trip.

    .venv/bin/python -m pytest tests/unit/test_eval_human.py -x -q
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from charops.errors import DataError
from charops.eval.human import (
    cohen_kappa,
    export_human,
    fleiss_kappa,
    import_human,
    krippendorff_alpha,
)

RESULTS = Path(__file__).parent / "eval_fixtures" / "results"


# ---------------------------------------------------------------------------------------------
# Agreement against hand-worked and published values


def test_cohen_kappa_by_hand():
    # p_o = 3/4; each rater's label shares: a (1/2, 1/2), b (1/4, 3/4) -> p_e = 1/2*1/4 + 1/2*3/4
    # = 1/2; kappa = (3/4 - 1/2) / (1 - 1/2) = 1/2.
    assert cohen_kappa([1, 1, 2, 2], [1, 2, 2, 2]) == pytest.approx(0.5)
    # Wikipedia's 50 proposals: yes/yes 20, yes/no 5, no/yes 10, no/no 15 -> p_o 0.7, p_e 0.5.
    a = ["y"] * 25 + ["n"] * 25
    b = ["y"] * 20 + ["n"] * 5 + ["y"] * 10 + ["n"] * 15
    assert cohen_kappa(a, b) == pytest.approx(0.4)
    assert cohen_kappa([1, 1], [1, 1]) is None  # p_e = 1: undefined, not 0 or 1


def test_fleiss_kappa_published_example():
    # Fleiss (1971) as on Wikipedia: 10 items, 14 raters, 5 categories; P-bar 0.378, P_e 0.213.
    table = [[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
             [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]]
    assert fleiss_kappa(table) == pytest.approx(0.20993, abs=5e-5)
    # By hand: 2 items, 3 raters, all agree on item 1 (cat A), split 2-1 on item 2:
    # P_1 = 1, P_2 = (4+1-3)/6 = 1/3, P-bar = 2/3; p_A = 5/6, p_B = 1/6, P_e = 26/36;
    # kappa = (2/3 - 26/36) / (10/36) = -0.2.
    assert fleiss_kappa([[3, 0], [2, 1]]) == pytest.approx(-0.2)
    with pytest.raises(ValueError):
        fleiss_kappa([[3, 0], [1, 1]])


def test_krippendorff_alpha_by_hand_and_published():
    # Two coders, three units (1,1) (2,2) (1,2): coincidences o11 = 2, o22 = 2, o12 = o21 = 1;
    # n_1 = n_2 = 3, n = 6; D_o = 2/6, D_e = 2*3*3 / (6*5) = 0.6; alpha = 1 - (1/3)/0.6 = 4/9.
    assert krippendorff_alpha([[1, 1], [2, 2], [1, 2]]) == pytest.approx(4 / 9)
    # Krippendorff (2011), "Computing Krippendorff's alpha-reliability": 4 observers, 12 units,
    # missing values; published alpha nominal .743, ordinal .815, interval .849.
    n = None
    data = [[1, 2, 3, 3, 2, 1, 4, 1, 2, n, n, n],
            [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, n, 3],
            [n, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, n],
            [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, n]]
    units = [list(col) for col in zip(*data, strict=True)]
    assert krippendorff_alpha(units, "nominal") == pytest.approx(0.743, abs=5e-4)
    assert krippendorff_alpha(units, "ordinal") == pytest.approx(0.815, abs=5e-4)
    assert krippendorff_alpha(units, "interval") == pytest.approx(0.849, abs=5e-4)
    assert krippendorff_alpha([[1, n], [2, n]]) is None  # nothing pairable


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
    with pytest.raises(DataError, match="would overwrite an input"):
        import_human(info["key"], [alice], RESULTS)
    with pytest.raises(DataError, match="no such key file"):
        import_human(tmp_path / "nokey.json", [alice], tmp_path / "o")
