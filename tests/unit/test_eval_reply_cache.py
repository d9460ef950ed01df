"""The reply cache: the baseline's replies to the same prompts with the same settings are
generated once per model sha256 (issue 15: the base model was asked again on every run).

    .venv/bin/python -m pytest tests/unit/test_eval_reply_cache.py -x -q
"""

from __future__ import annotations

import json
import shutil

from charops.config import load_config
from charops.eval.generate import GenerationSettings, ReplyCache, load_prompts


def _cfg(out, cache, micro_model_dir, baseline, dataset, *more):
    from charops.eval.run import EvalConfig

    return load_config(EvalConfig, "default", [
        f"model={micro_model_dir}", f"baseline_model={baseline}", f"dataset={dataset}", f"output_dir={out}",
        "judge=none", "max_new_tokens=6", "progress=false", "bootstrap_resamples=50", "heldout=false",
        "cache_baseline=true", f"reply_cache={cache}", *more])


def test_the_baseline_is_generated_once_then_read_back(tmp_path, micro_model_dir, micro_ref_model_dir,
                                                        eval_dataset_dir, monkeypatch):
    import charops.eval.generate as generate_module
    from charops.eval.run import run

    cache = tmp_path / "cache"
    first = run(_cfg(tmp_path / "a", cache, micro_model_dir, micro_ref_model_dir, eval_dataset_dir))
    assert len(list(cache.glob("*.json"))) == 1  # the baseline's replies only, not the candidate's
    assert "cached" not in first["generation"]["models"]["baseline"]

    calls = []
    real = generate_module.generate_replies

    def counting(loaded, label, *args, **kwargs):
        calls.append(label)
        return real(loaded, label, *args, **kwargs)

    monkeypatch.setattr(generate_module, "generate_replies", counting)
    second = run(_cfg(tmp_path / "b", cache, micro_model_dir, micro_ref_model_dir, eval_dataset_dir))
    assert calls == ["candidate"]  # the baseline came from the cache
    assert second["generation"]["models"]["baseline"]["cached"] is True

    def replies(out):
        rows = [json.loads(line) for line in (out / "replies.jsonl").read_text(encoding="utf-8").splitlines()]
        return [(r["id"], r["model"], r["reply"]) for r in rows]

    assert replies(tmp_path / "a") == replies(tmp_path / "b")

    # Other settings, or another model (same files but one byte of the weights), miss the cache.
    run(_cfg(tmp_path / "c", cache, micro_model_dir, micro_ref_model_dir, eval_dataset_dir, "max_new_tokens=5"))
    other = tmp_path / "other-base"
    shutil.copytree(micro_ref_model_dir, other)
    weights = other / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    run(_cfg(tmp_path / "d", cache, micro_model_dir, other, eval_dataset_dir))
    assert calls == ["candidate", "candidate", "baseline", "candidate", "baseline"]
    assert len(list(cache.glob("*.json"))) == 3


def test_the_key_covers_model_prompts_and_settings(tmp_path, micro_ref_model_dir, eval_dataset_dir):
    prompts = load_prompts(eval_dataset_dir)
    key = ReplyCache.key(micro_ref_model_dir, prompts, GenerationSettings())
    assert key == ReplyCache.key(micro_ref_model_dir, [dict(p) for p in prompts], GenerationSettings(batch_size=2))
    assert key != ReplyCache.key(micro_ref_model_dir, prompts[1:], GenerationSettings())
    assert key != ReplyCache.key(micro_ref_model_dir, prompts, GenerationSettings(repetition_penalty=1.1))
    # bfloat16 replies are not float32 ones; float32 keeps the keys entries were stored under.
    assert key == ReplyCache.key(micro_ref_model_dir, prompts, GenerationSettings(), "float32")
    assert key != ReplyCache.key(micro_ref_model_dir, prompts, GenerationSettings(), "bfloat16")
    # A torn or foreign entry is a miss, not an error.
    cache = ReplyCache(tmp_path)
    cache.path(key).parent.mkdir(parents=True, exist_ok=True)
    cache.path(key).write_text("{not json", encoding="utf-8")
    assert cache.get(key, "baseline", micro_ref_model_dir) is None


def test_prompt_languages_keep_only_those_prompts(eval_dataset_dir):
    import pytest

    from charops.errors import DataError

    prompts = load_prompts(eval_dataset_dir)
    langs = {p["language"] for p in prompts}
    some = sorted(langs)[0]
    kept = load_prompts(eval_dataset_dir, languages=[some])
    assert kept and all(p["language"] == some for p in kept)
    assert len(kept) == sum(p["language"] == some for p in prompts)
    with pytest.raises(DataError, match="prompt_languages"):
        load_prompts(eval_dataset_dir, languages=["xx"])
