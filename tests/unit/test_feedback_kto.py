"""KTO on a feedback export (charops.train.kto, TRL's KTOTrainer) on the micro model.

    .venv/bin/python -m pytest tests/unit/test_feedback_kto.py -x -q
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

from charops.config import load_config
from charops.errors import CharopsError
from charops.feedback import export as fx
from charops.train.kto import KTOConfig, run

sys.path.insert(0, str(Path(__file__).parent))
from test_feedback import ev  # noqa: E402


@pytest.fixture(scope="module")
def kto_export(tmp_path_factory):
    events = [ev(f"v-{i:06d}", "vote", winner="a", conv=f"c{i}", texts=(f"（微笑）好{i}", f"你好{i}。"))
              for i in range(6)] + [ev(f"t-{i:06d}", "thumbs", conv=f"t{i}", up=False) for i in range(2)]
    splits, summary = fx.export_rows(events, "kto", validation_fraction=0.0)
    return fx.write_export(splits, summary, tmp_path_factory.mktemp("fb") / "export")


def test_kto_trains_on_the_export(tmp_path, micro_model_dir, kto_export):
    cfg = load_config(KTOConfig, "tiny-cpu", [f"model={micro_model_dir}", f"dataset={kto_export}",
                                             f"output_dir={tmp_path / 'kto'}", "max_steps=2",
                                             "per_device_train_batch_size=4", "max_seq_len=256",
                                             "progress=false"])
    summary = run(cfg)
    assert summary["stage"] == "kto" and summary["steps"] == 2
    assert (tmp_path / "kto" / "model" / "config.json").is_file()
    # 6 vote pairs unpaired (6 desirable + 6 undesirable) and 2 thumbs down, deduplicated
    rows = [json.loads(x) for x in (kto_export / "kto" / "train.jsonl").read_text().splitlines()]
    assert sum(r["label"] for r in rows) == 6 and sum(not r["label"] for r in rows) == 7
    assert summary["feedback"] == {"desirable": 6, "undesirable": 7}
    assert len(summary["loss_curve"]) == 2 and all(math.isfinite(e["loss"]) for e in summary["loss_curve"])


def test_kto_refuses_one_sided_data_and_batches_of_one(tmp_path, micro_model_dir):
    events = [ev(f"t-{i:06d}", "thumbs", conv=f"c{i}", texts=(f"好{i}",)) for i in range(3)]
    splits, summary = fx.export_rows(events, "kto", validation_fraction=0.0)
    out = fx.write_export(splits, summary, tmp_path / "fb")
    cfg = load_config(KTOConfig, "tiny-cpu", [f"model={micro_model_dir}", f"dataset={out}",
                                             f"output_dir={tmp_path / 'kto'}", "progress=false"])
    with pytest.raises(CharopsError, match="both desirable and undesirable"):
        run(cfg)
    with pytest.raises(CharopsError, match="at least 2"):
        load_config(KTOConfig, "tiny-cpu", ["per_device_train_batch_size=1"])
