"""Benchmark ``data prepare`` end to end against the floor: a bare batch encode of the same texts.

Builds the tiny base model, writes >= 5,000 dialogues (the bundled samples replicated with
distinct ids and a distinct first line, so deduplication keeps them; synthesized from phrase
banks where no samples are bundled), runs ``charops.data.prepare.run`` (import, validation,
normalisation, dedupe, split, render, tokenize + labels, JSONL writing, hashing) and times it.
In the same process it renders the written SFT dialogues with the same chat template and
times only ``tokenizers.Tokenizer.encode_batch`` on them: nothing can prepare faster than
that. Best of ``--repeat`` runs for both.

    .venv/bin/python bench/data_prepare.py                   # prints and writes bench/results/data_prepare.json
    .venv/bin/python bench/data_prepare.py --dialogues 20000 --repeat 1
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

from charops.config import load_config
from charops.data.prepare import SAMPLES_DIR, PrepareConfig, run
from charops.data.tokenize import ChatEncoder
from charops.io import read_jsonl, write_json, write_jsonl
from charops.model.init import ModelInitConfig
from charops.model.init import run as model_init
from charops.model.load import load_tokenizer

ROOT = Path(__file__).resolve().parent

# Phrase banks for synthesis when no samples are bundled: role-play-like turns in zh and en,
# with stage directions, of varied length.
ZH_USER = ["你好呀，今天过得怎么样？", "最近在忙什么呢？", "你喜欢下雨天吗？", "能给我讲个故事吗？",
           "我今天有点难过。", "周末一起去爬山吧！", "你最喜欢的食物是什么？", "这本书你看过吗？"]
ZH_BOT = ["（微笑）还不错，刚从图书馆回来，借了好几本历史书。", "（叹气）工作有点多，不过想到周末就开心了。",
          "（托腮）下雨天最适合窝在家里看书喝茶了，你呢？", "（眨眼）好呀，从前有座山，山里有座庙……",
          "（轻轻拍拍你的肩）怎么了？愿意和我说说吗？我一直都在。", "（兴奋）好啊好啊！我去准备零食和水！",
          "火锅！辣辣的，冬天吃最舒服了。（咽口水）", "看过呀，结局真的让人意想不到。（神秘地笑）"]
EN_USER = ["Hey, how was your day?", "What are you working on?", "Do you like rainy days?",
           "Tell me a story?", "I'm a bit sad today.", "Want to go hiking this weekend?"]
EN_BOT = ["(smiles) Not bad! Just got back from the library with a stack of history books.",
          "(sighs) Lots of work, but the weekend is close, so I'm holding on.",
          "(rests chin on hand) Rainy days are for tea and books. What about you?",
          "(winks) Once upon a time, on a mountain far away, there was a small temple...",
          "(pats your shoulder) What happened? I'm here, take your time.",
          "(grins) Absolutely! I'll bring snacks and water."]
NAMES = ["林小满", "Ava", "老周", "Mika", "苏晴", "Captain Rho"]


def synthesize(out: Path, n: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    profiles = [{"type": "profile", "name": name, "category": rng.choice(["daily-life", "games-videos", "celebrity"]),
                 "language": "zh" if i % 2 == 0 else "en", "identity": rng.choice(["学生", "a pilot", "厨师", "a bard"]),
                 "interests": ["读书", "hiking"], "personality": "warm, curious"} for i, name in enumerate(NAMES)]
    write_jsonl(out / "characters.jsonl", profiles)
    dialogues = []
    for i in range(n):
        zh = i % 2 == 0
        users, bots = (ZH_USER, ZH_BOT) if zh else (EN_USER, EN_BOT)
        turns = []
        for k in range(rng.randint(2, 6)):
            turns.append({"role": "user", "content": rng.choice(users) + (f"（{i}）" if k == 0 else "")})
            turns.append({"role": "assistant", "content": " ".join(rng.choice(bots) for _ in range(rng.randint(1, 3)))})
        dialogues.append({"type": "dialogue", "id": f"syn-{i}", "character": NAMES[(i % 3) * 2 + (0 if zh else 1)],
                          "topic": rng.choice(["chit-chat", "love", "interview"]), "turns": turns})
    write_jsonl(out / "dialogues.jsonl", dialogues)


def replicate_samples(out: Path, n: int) -> bool:
    """The bundled dialogues, copied until there are ``n``; False when none are bundled."""
    src = SAMPLES_DIR / "dialogues.jsonl"
    if not src.is_file():
        return False
    base = [d for d in read_jsonl(src) if not d.get("meta", {}).get("eval_prompt")]
    if not base:
        return False
    rows = []
    for i in range(n):
        d = json.loads(json.dumps(base[i % len(base)]))
        copy = i // len(base)
        d["id"] = f"{d['id']}-r{copy}"
        if copy:  # distinct content, or deduplication would (rightly) drop the copies
            first = next(t for t in d["turns"] if t["role"] != "system")
            first["content"] += f" #{copy}"
        rows.append(d)
    write_jsonl(out / "dialogues.jsonl", rows)
    if (SAMPLES_DIR / "characters.jsonl").is_file():
        shutil.copy(SAMPLES_DIR / "characters.jsonl", out / "characters.jsonl")
    return True


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dialogues", type=int, default=6000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--model-config", default="tiny")
    ap.add_argument("--out", default=str(ROOT / "results" / "data_prepare.json"))
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="charops-bench-"))
    try:
        data = work / "data"
        data.mkdir()
        source = "samples" if replicate_samples(data, args.dialogues) else "synthesized"
        if source == "synthesized":
            synthesize(data, args.dialogues)
        model = work / "model"
        model_init(load_config(ModelInitConfig, args.model_config,
                               [f"output_dir={model}", f"corpus={data / 'dialogues.jsonl'}"]))

        prepare_times = []
        for r in range(args.repeat):
            out = work / f"ds{r}"
            # As long as the model allows (data prepare refuses more): no dialogue is cut for length.
            positions = json.loads((model / "config.json").read_text())["max_position_embeddings"]
            cfg = load_config(PrepareConfig, "default", [f"inputs={data}", f"model={model}", f"output_dir={out}",
                                                         "progress=false", f"max_seq_len={positions}"])
            t0 = time.perf_counter()
            manifest = run(cfg)
            prepare_times.append(time.perf_counter() - t0)

        # The floor: the very texts prepare tokenized, rendered up front, one encode_batch call.
        tok = load_tokenizer(model)
        rows = [r for s in ("train", "validation") for r in read_jsonl(work / "ds0" / "sft" / f"{s}.jsonl")]
        texts, _ = ChatEncoder(tok).render([r["messages"] for r in rows])
        encode_times = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            encs = tok.backend_tokenizer.encode_batch(texts, add_special_tokens=False)
            encode_times.append(time.perf_counter() - t0)
        n_tokens = sum(len(e.ids) for e in encs)
        assert n_tokens == sum(len(r["input_ids"]) for r in rows)  # same texts, same tokens

        c = manifest["counts"]
        prep, enc = min(prepare_times), min(encode_times)
        result = {
            "data": source,
            "dialogues_in": args.dialogues,
            "sft_examples": c["sft"]["train"] + c["sft"]["validation"],
            "rejected": c["rejected"],
            "tokens": n_tokens,
            "supervised_tokens": sum(manifest["tokens"]["sft"][s]["supervised_tokens"] for s in ("train", "validation")),
            "prepare_seconds": round(prep, 4),
            "encode_batch_seconds": round(enc, 4),
            "ratio_prepare_to_encode": round(prep / enc, 3),
            "prepare_dialogues_per_second": round(args.dialogues / prep, 1),
            "prepare_tokens_per_second": round(n_tokens / prep, 1),
            "encode_tokens_per_second": round(n_tokens / enc, 1),
            "prepare_seconds_all": [round(t, 4) for t in prepare_times],
            "encode_batch_seconds_all": [round(t, 4) for t in encode_times],
            "model_config": args.model_config,
            "vocab_size": len(tok),
            "python": sys.version.split()[0],
        }
        write_json(args.out, result)
        print(json.dumps(result, indent=2))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
