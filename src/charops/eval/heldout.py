"""Held-out evaluation: response loss, in-character preference accuracy, sample replies.

Measures a trained model (and optionally a baseline, e.g. the base model) on a prepared
dataset's validation split:

- ``loss`` / ``perplexity``: mean negative log-likelihood of the assistant (character) tokens of
  ``sft/validation.jsonl``, token-weighted, overall and per character category and dialogue
  topic (the breakdowns CharacterGLM reports);
- ``preference_accuracy``: on ``dpo/validation.jsonl``, the fraction of pairs whose chosen
  (in-character) reply has a higher mean per-token log-probability than the rejected one;
- sample replies to ``eval/prompts.jsonl`` (or to validation dialogues cut before their last
  reply), greedy-decoded, for people to read.

It writes ``metrics.json``, ``samples.jsonl`` and ``report.md`` into ``output_dir``::

    python -m charops.eval.heldout model=runs/sft dataset=runs/dataset output_dir=runs/eval \
        baseline_model=runs/base
    charops eval heldout model=runs/sft dataset=runs/dataset output_dir=runs/eval
"""

from __future__ import annotations

import json
import math
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import torch

from charops.config import stage_main, to_dict
from charops.data.tokenize import IGNORE_INDEX
from charops.errors import DataError
from charops.io import read_jsonl, write_json, write_jsonl, write_text


@dataclass
class HeldoutEvalConfig:
    """Held-out evaluation of one model (and optionally a baseline) on a prepared dataset."""

    stage: ClassVar[str] = "eval"

    model: str = field(default="", metadata={"help": "Model to evaluate: HF dir, s3:// prefix or hub id."})
    dataset: str = field(default="", metadata={"help": "Prepared dataset directory (charops data prepare)."})
    output_dir: str = field(default="runs/eval", metadata={"help": "Where metrics.json, samples.jsonl and report.md go."})
    baseline_model: str | None = field(default=None, metadata={"help": "Optional model to compare against (e.g. the base model)."})
    batch_size: int = field(default=8, metadata={"help": "Examples per forward pass."})
    max_examples: int = field(default=0, metadata={"help": "Evaluate at most this many validation examples (0 = all)."})
    num_samples: int = field(default=4, metadata={"help": "Prompts to generate sample replies for (0 = none)."})
    max_new_tokens: int = field(default=48, metadata={"help": "Length limit of each sample reply."})

    def validate(self) -> None:
        if not self.model:
            raise DataError("eval: 'model' is required (a model directory, s3:// prefix or hub id)")
        if not self.dataset:
            raise DataError("eval: 'dataset' is required (a prepared dataset directory)")
        if self.batch_size < 1:
            raise DataError("eval: batch_size must be at least 1")


# ---------------------------------------------------------------------------------------------
# Loss on response tokens


def response_nll(model, rows: list[dict], batch_size: int, pad_id: int) -> list[tuple[float, int]]:
    """Per row: (sum of -log p over supervised tokens, number of supervised tokens).

    ``rows`` carry ``input_ids`` and ``labels`` (IGNORE_INDEX outside assistant turns), as
    ``data prepare`` writes them; the label of position t is predicted from positions < t.
    Rows are batched in length order, and only the positions that predict a supervised token
    go through the output head and the softmax (``logits_to_keep``): on a long role-play
    context that is a small part of the sequence, and the vocabulary-wide log-softmax of every
    position was most of the time.
    """
    out: dict[int, tuple[float, int]] = {}
    model.eval()
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]["input_ids"]))
    for start in range(0, len(order), batch_size):
        batch = [rows[i] for i in order[start:start + batch_size]]
        length = max(len(r["input_ids"]) for r in batch)
        ids = torch.full((len(batch), length), pad_id, dtype=torch.long)
        labels = torch.full((len(batch), length), IGNORE_INDEX, dtype=torch.long)
        attn = torch.zeros((len(batch), length), dtype=torch.long)
        for i, r in enumerate(batch):
            n = len(r["input_ids"])
            ids[i, :n] = torch.tensor(r["input_ids"])
            labels[i, :n] = torch.tensor(r["labels"])
            attn[i, :n] = 1
        target = labels[:, 1:]
        keep = (target != IGNORE_INDEX).any(dim=0).nonzero().flatten()  # predicting positions, any row
        if keep.numel() == 0:
            out.update({i: (0.0, 0) for i in order[start:start + batch_size]})
            continue
        with torch.no_grad():
            logits = model(input_ids=ids.to(model.device), attention_mask=attn.to(model.device),
                           logits_to_keep=keep.to(model.device)).logits.float().cpu()
        target = target[:, keep]
        mask = target != IGNORE_INDEX
        token_logp = torch.log_softmax(logits, dim=-1).gather(-1, target.clamp(min=0).unsqueeze(-1)).squeeze(-1)
        nll = -(token_logp * mask).sum(dim=1)
        for i, total, count in zip(order[start:start + batch_size], nll.tolist(), mask.sum(dim=1).tolist(),
                                   strict=True):
            out[i] = (total, int(count))
    return [out[i] for i in range(len(rows))]


def aggregate(rows: list[dict], nll: list[tuple[float, int]]) -> dict:
    """Token-weighted loss and perplexity overall, per category and per topic."""

    def summarise(pairs: list[tuple[float, int]]) -> dict:
        total = sum(p[0] for p in pairs)
        count = sum(p[1] for p in pairs)
        loss = total / count if count else float("nan")
        return {"loss": loss, "perplexity": math.exp(loss) if count else float("nan"),
                "tokens": count, "examples": len(pairs)}

    groups: dict[str, dict[str, list]] = {"category": defaultdict(list), "topic": defaultdict(list)}
    for row, pair in zip(rows, nll, strict=True):
        for key in groups:
            groups[key][row.get(key) or "other"].append(pair)
    return {
        **summarise(nll),
        "by_category": {k: summarise(v) for k, v in sorted(groups["category"].items())},
        "by_topic": {k: summarise(v) for k, v in sorted(groups["topic"].items())},
    }


# ---------------------------------------------------------------------------------------------
# Preference accuracy and samples


def _reply_span(tokenizer, messages: list[dict]) -> tuple[list[int], list[int]]:
    """Token ids of ``messages`` and the positions of its last assistant message's tokens."""
    enc = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True,
                                        return_assistant_tokens_mask=True)
    positions = [i for i, m in enumerate(enc["assistant_masks"]) if m]
    if not positions:
        raise DataError("eval: the chat template marks no assistant tokens; it needs "
                        "{% generation %} markers around assistant content")
    # Only the last contiguous run of assistant tokens is the reply being scored; earlier runs
    # are assistant turns of the context.
    last = [positions[-1]]
    for p in reversed(positions[:-1]):
        if p != last[-1] - 1:
            break
        last.append(p)
    return list(enc["input_ids"]), sorted(last)


def _pair_mean_logps(model, tokenizer, prompt: list[dict], replies: list[list[dict]]) -> list[float]:
    """Mean log-prob of each reply's tokens after ``prompt``. The tokens the replies share (the
    prompt, typically hundreds of tokens of profile and history) go through the model once;
    each reply is computed on a copy of that cache, and only the positions predicting reply
    tokens reach the output head."""
    import copy

    spans = [_reply_span(tokenizer, prompt + r) for r in replies]
    seqs = [ids for ids, _ in spans]
    common = 0
    while all(len(s) > common for s in seqs) and len({s[common] for s in seqs}) == 1:
        common += 1
    # The token before a reply's first token predicts it, so it must be computed on the reply's side.
    split = max(0, min([common] + [reply[0] for _, reply in spans]) - 1)
    cache = None
    with torch.no_grad():
        if split:
            cache = model(input_ids=torch.tensor([seqs[0][:split]], device=model.device), use_cache=True,
                          logits_to_keep=1).past_key_values
        means = []
        for k, (ids, reply) in enumerate(spans):
            tail = torch.tensor([ids[split:]], device=model.device)
            keep = torch.tensor([p - 1 - split for p in reply], device=model.device)
            past = cache if cache is None or k == len(spans) - 1 else copy.deepcopy(cache)
            logits = model(input_ids=tail, cache=past, use_cache=past is not None,
                           logits_to_keep=keep).logits.float()[0].cpu()
            logp = torch.log_softmax(logits, dim=-1)
            means.append(logp.gather(-1, torch.tensor(ids)[reply].unsqueeze(-1)).mean().item())
    return means


def preference_accuracy(model, tokenizer, pairs: list[dict]) -> dict:
    wins, margins = 0, []
    for pair in pairs:
        chosen, rejected = _pair_mean_logps(model, tokenizer, pair["prompt"], [pair["chosen"], pair["rejected"]])
        wins += chosen > rejected
        margins.append(chosen - rejected)
    n = len(pairs)
    return {"pairs": n, "accuracy": wins / n if n else float("nan"),
            "mean_logp_margin": sum(margins) / n if n else float("nan")}


def generate_samples(model, tokenizer, prompts: list[dict], max_new_tokens: int) -> list[dict]:
    samples = []
    for p in prompts:
        enc = tokenizer.apply_chat_template(p["messages"], add_generation_prompt=True,
                                            tokenize=True, return_dict=True, return_tensors="pt")
        with torch.no_grad():
            out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id)
        reply = tokenizer.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)
        samples.append({"id": p["id"], "character": p.get("character"), "messages": p["messages"],
                        "reply": reply.strip()})
    return samples


def _prompts(dataset: Path, validation: list[dict], n: int) -> list[dict]:
    """Evaluation prompts if the dataset has them, else validation dialogues cut before their
    last reply."""
    if n <= 0:
        return []
    path = dataset / "eval" / "prompts.jsonl"
    prompts = list(read_jsonl(path)) if path.is_file() else []
    for row in validation:
        if len(prompts) >= n:
            break
        msgs = row["messages"]
        last = max(i for i, m in enumerate(msgs) if m["role"] == "assistant")
        prompts.append({"id": row["id"], "character": row.get("character"), "messages": msgs[:last]})
    return prompts[:n]


# ---------------------------------------------------------------------------------------------


def _load(ref: str):
    from transformers import AutoModelForCausalLM

    from charops.model import tokenizer_sha256
    from charops.model.load import load_tokenizer, resolve_model

    path = resolve_model(ref)
    tokenizer = load_tokenizer(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    return path, model, tokenizer, tokenizer_sha256(path)


def evaluate_model(ref: str, dataset: Path, manifest: dict, cfg: HeldoutEvalConfig,
                   validation: list[dict], pairs: list[dict], prompts: list[dict]) -> dict:
    path, model, tokenizer, tok_hash = _load(ref)
    expected = manifest.get("tokenizer", {}).get("sha256")
    if expected and tok_hash != expected:
        raise DataError(f"eval: model '{ref}' has tokenizer {tok_hash[:12]} but dataset "
                        f"'{dataset}' was prepared with {expected[:12]}; prepare the dataset "
                        f"with this model's tokenizer")
    pad_id = tokenizer.pad_token_id  # load_tokenizer always sets one
    t0 = time.perf_counter()
    metrics = aggregate(validation, response_nll(model, validation, cfg.batch_size, pad_id))
    metrics["preference"] = preference_accuracy(model, tokenizer, pairs)
    metrics["samples"] = generate_samples(model, tokenizer, prompts, cfg.max_new_tokens)
    metrics["model"] = str(path)
    metrics["seconds"] = time.perf_counter() - t0
    return metrics


def _report(metrics: dict) -> str:
    models = {"model": metrics["model"]}
    if metrics.get("baseline"):
        models["baseline"] = metrics["baseline"]

    def row(name: str, blocks: list[dict | None]) -> str:
        cells = ["-" if b is None else f"{b['loss']:.4f} ({b['perplexity']:.1f})" for b in blocks]
        return f"| {name} | " + " | ".join(cells) + " |"

    head = "| slice | " + " | ".join(f"{k}: loss (ppl)" for k in models) + " |"
    lines = ["# Held-out evaluation", "", f"Model: `{models['model']['model']}`"]
    if "baseline" in models:
        lines.append(f"Baseline: `{models['baseline']['model']}`")
        lines.append(f"Loss change vs baseline: {metrics['loss_delta']:+.4f}")
    lines += ["", head, "|" + " --- |" * (len(models) + 1), row("all", list(models.values()))]
    for sub in ("by_category", "by_topic"):
        for key in models["model"][sub]:
            lines.append(row(f"{sub[3:]}: {key}", [m[sub].get(key) for m in models.values()]))
    lines += ["", "| preference accuracy | " + " | ".join(
        f"{m['preference']['accuracy']:.3f} of {m['preference']['pairs']}" for m in models.values()) + " |"]
    if models["model"]["samples"]:
        lines += ["", "## Sample replies", ""]
        for s in models["model"]["samples"]:
            last_user = next((m["content"] for m in reversed(s["messages"]) if m["role"] == "user"), "")
            lines += [f"**{s['character']}** ← {last_user}", "", f"> {s['reply'] or '(empty)'}", ""]
    return "\n".join(lines) + "\n"


def run(cfg: HeldoutEvalConfig) -> dict:
    dataset = Path(cfg.dataset)
    manifest_path = dataset / "manifest.json"
    if not manifest_path.is_file():
        raise DataError(f"eval: dataset '{dataset}' has no manifest.json; run `charops data prepare` first")
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    validation = list(read_jsonl(dataset / "sft" / "validation.jsonl"))
    if cfg.max_examples:
        validation = validation[: cfg.max_examples]
    if not validation:
        raise DataError(f"eval: dataset '{dataset}' has an empty sft/validation.jsonl")
    dpo_path = dataset / "dpo" / "validation.jsonl"
    pairs = list(read_jsonl(dpo_path)) if dpo_path.is_file() else []
    if cfg.max_examples:
        pairs = pairs[: cfg.max_examples]
    prompts = _prompts(dataset, validation, cfg.num_samples)

    metrics: dict = {"config": to_dict(cfg), "dataset_sha256": manifest.get("content_sha256")}
    metrics["model"] = evaluate_model(cfg.model, dataset, manifest, cfg, validation, pairs, prompts)
    if cfg.baseline_model:
        metrics["baseline"] = evaluate_model(cfg.baseline_model, dataset, manifest, cfg,
                                             validation, pairs, [])
        metrics["loss_delta"] = metrics["model"]["loss"] - metrics["baseline"]["loss"]

    out = Path(cfg.output_dir)
    write_jsonl(out / "samples.jsonl", metrics["model"]["samples"])
    write_text(out / "report.md", _report(metrics))
    write_json(out / "metrics.json", metrics)
    return metrics


def main(argv: list[str] | None = None) -> None:
    metrics = stage_main(HeldoutEvalConfig, run, argv, default="heldout")
    print(f"loss {metrics['model']['loss']:.4f}  wrote {Path(metrics['config']['output_dir']) / 'report.md'}")


if __name__ == "__main__":
    main()
