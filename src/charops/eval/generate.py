"""Replies to evaluate: prompts from a prepared dataset, batched generation, context fitting.

    from charops.eval.generate import GenerationSettings, load_prompts, generate_replies
    prompts = load_prompts(Path("runs/dataset"), limit=0)
    replies, stats = generate_replies("runs/dpo/model", "candidate", prompts, GenerationSettings())

Prompts are the dataset's ``eval/prompts.jsonl`` (records marked ``meta.eval_prompt``: bundled
eval prompts, CharacterEval contexts, imported dialogues cut before a reply). A dataset without
any uses its ``sft/validation.jsonl`` dialogues cut before their last reply, that reply being
the reference.

A context longer than the model's window keeps the system prompt and the latest turns: the
oldest turns after the system prompt are dropped one by one until prompt + ``max_new_tokens``
fits, and the number dropped is recorded (``dropped_turns``); a prompt is never rejected. If
even the system prompt and the last turn do not fit, the prompt is cut from the left to the
window and ``truncated_tokens`` says by how much.

Generation is batched (prompts sorted by length, left-padded, one ``generate`` per batch), stops
at the end of the turn (the chat template's end-of-turn token, e.g. ``<|im_end|>``, or eos) and
records its settings (seed, temperature, top_p, max_new_tokens, repetition_penalty) in every
reply. ``temperature: 0`` is greedy decoding.

The baseline is usually the same base model run after run, asked the same prompts with the same
settings: :class:`ReplyCache` keeps such replies under ``$CHAROPS_CACHE/replies/`` (default
``~/.cache/charops/replies/``), keyed by the model directory's sha256, the prompts and the
generation settings, so they are generated once (the eval stage's ``cache_baseline``).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from charops.errors import DataError
from charops.io import read_jsonl, sha256_tree, write_json

# End-of-turn tokens of common chat templates (ChatML, Gemma, Llama 3); whichever the tokenizer has.
END_OF_TURN = ("<|im_end|>", "<end_of_turn>", "<|eot_id|>", "<|end|>")


@dataclass
class GenerationSettings:
    seed: int = 0
    temperature: float = 0.0
    top_p: float = 1.0
    max_new_tokens: int = 64
    repetition_penalty: float = 1.0
    batch_size: int = 8
    max_context_tokens: int = 0  # 0: the model's max_position_embeddings

    def recorded(self) -> dict:
        """What goes into each reply record (batching and window do not change a reply's meaning)."""
        d = asdict(self)
        return {k: d[k] for k in ("seed", "temperature", "top_p", "max_new_tokens", "repetition_penalty")}


def load_prompts(dataset: Path, limit: int = 0, languages: list[str] | tuple[str, ...] = ()) -> list[dict]:
    """Evaluation prompts of a prepared dataset (see the module doc), at most ``limit`` (0: all),
    only those of ``languages`` when given (a prompt's ``language``, e.g. ``en``)."""
    path = dataset / "eval" / "prompts.jsonl"
    prompts = list(read_jsonl(path)) if path.is_file() else []
    if not prompts:
        val = dataset / "sft" / "validation.jsonl"
        if not val.is_file():
            raise DataError(f"eval: dataset '{dataset}' has neither eval/prompts.jsonl nor "
                            "sft/validation.jsonl; run `charops data prepare` first")
        for row in read_jsonl(val):
            msgs = row["messages"]
            last = max((i for i, m in enumerate(msgs) if m["role"] == "assistant"), default=None)
            if last is None or not any(m["role"] == "user" for m in msgs[:last]):
                continue
            prompts.append({"id": row["id"], "character": row.get("character"), "category": row.get("category"),
                            "topic": row.get("topic"), "language": row.get("language"),
                            "messages": msgs[:last], "reference": msgs[last]["content"]})
    if languages:
        found = sorted({str(p.get("language")) for p in prompts})
        prompts = [p for p in prompts if p.get("language") in languages]
        if not prompts:
            raise DataError(f"eval: dataset '{dataset}' has no prompt in {', '.join(languages)} "
                            f"(its prompts are in {', '.join(found)}); change prompt_languages")
    if not prompts:
        raise DataError(f"eval: dataset '{dataset}' has no prompt to evaluate (no eval prompts and no "
                        "validation dialogue with a user turn before a reply)")
    return prompts[:limit] if limit else prompts


def default_cache_root() -> Path:
    return Path(os.environ.get("CHAROPS_CACHE", Path.home() / ".cache" / "charops")) / "replies"


class ReplyCache:
    """Replies of one model to one prompt set with one set of generation settings, on disk.

    The key is the sha256 of the model directory (weights, config, tokenizer, chat template,
    generation defaults), of the prompts (ids and messages) and of the settings that change a
    reply (``GenerationSettings.recorded`` and the context window). An entry is one JSON file
    written by rename, so a run killed while writing leaves no half entry::

        cache = ReplyCache()
        key = cache.key(model_dir, prompts, settings)
        hit = cache.get(key, "baseline", model_dir)     # None, or (records, stats)
    """

    def __init__(self, root: str | Path | None = None):
        self.root = Path(root) if root else default_cache_root()

    @staticmethod
    def key(model_dir: str | Path, prompts: list[dict], settings: GenerationSettings,
            dtype: str = "float32") -> str:
        """The entry's name: the model's sha256, the prompts, the settings and the dtype the
        model ran in (bfloat16 replies differ from float32 ones; float32 keys are unchanged)."""
        ask = [{"id": p["id"], "messages": p["messages"]} for p in prompts]
        what = {"model_sha256": sha256_tree(model_dir), "prompts": ask,
                "settings": {**settings.recorded(), "max_context_tokens": settings.max_context_tokens}}
        if dtype != "float32":
            what["dtype"] = dtype
        blob = json.dumps(what, sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()

    def path(self, key: str) -> Path:
        return self.root / f"{key}.json"

    def get(self, key: str, label: str, model_ref: str | Path) -> tuple[list[dict], dict] | None:
        """The cached replies relabelled as ``label`` (and ``model_ref``), or None on a miss; an
        unreadable entry is a miss (it is rewritten after generation)."""
        try:
            entry = json.loads(self.path(key).read_text(encoding="utf-8"))
            records, stats = entry["replies"], entry["stats"]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        records = [{**r, "model": label, "model_ref": str(model_ref)} for r in records]
        return records, {**stats, "model": str(model_ref), "cached": True, "cache_key": key,
                         "seconds": 0.0, "generated_seconds": stats.get("seconds")}

    def put(self, key: str, records: list[dict], stats: dict) -> None:
        write_json(self.path(key), {"key": key, "replies": records, "stats": stats})


def fit_context(messages: list[dict], count: Callable[[list[dict]], int], budget: int) -> tuple[list[dict], int]:
    """Drop the oldest turns after the system prompt until ``count(messages) <= budget``.

    Never drops the system prompt or the last message; returns (kept messages, turns dropped).
    """
    head = [m for m in messages[:1] if m["role"] == "system"]
    turns = messages[len(head):]
    dropped = 0
    while len(turns) > 1 and count(head + turns) > budget:
        turns = turns[1:]
        dropped += 1
    return head + turns, dropped


def stop_ids(tokenizer, model) -> list[int]:
    """Token ids that end a reply: the template's end-of-turn token(s) and eos."""
    ids: set[int] = set()
    vocab = tokenizer.get_vocab()
    for tok in END_OF_TURN:
        if tok in vocab:
            ids.add(vocab[tok])
    for source in (tokenizer.eos_token_id, getattr(model.generation_config, "eos_token_id", None)):
        if isinstance(source, int):
            ids.add(source)
        elif source:
            ids.update(int(i) for i in source)
    return sorted(ids)


def load_model(ref: str, dtype: str = "auto"):
    """(path, model, tokenizer) of a model reference, in eval mode: on the GPU when one is there
    (a 7B model generates there in a cluster's eval step), else on the CPU, in the dtype
    :func:`charops.model.load.inference_dtype` picks for ``dtype`` (auto: bfloat16 on a GPU,
    float32 on a CPU)."""
    from transformers import AutoModelForCausalLM

    from charops.model.load import inference_dtype, load_tokenizer, resolve_model

    path = resolve_model(ref)
    tokenizer = load_tokenizer(path)
    gpu = torch.cuda.is_available()
    model = AutoModelForCausalLM.from_pretrained(path, dtype=inference_dtype(dtype))
    if gpu:
        model.to("cuda")
    model.eval()
    return path, model, tokenizer


def batches_by_group(order: list[int], group_of: Callable[[int], object], size: int) -> list[list[int]]:
    """``order`` cut into batches of at most ``size`` that never mix two groups (two characters'
    prompts share no profile, so a mixed batch would share nothing)."""
    out: list[list[int]] = []
    for i in order:
        if out and len(out[-1]) < max(1, size) and group_of(out[-1][0]) == group_of(i):
            out[-1].append(i)
        else:
            out.append([i])
    return out


def _system_of(messages: list[dict]) -> str:
    return messages[0]["content"] if messages and messages[0]["role"] == "system" else ""


def _encode(tokenizer, messages: list[dict]) -> list[int]:
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                         return_dict=True)["input_ids"]


def generate_batch(model, prompts: list[list[int]], pad_id: int, gen_cfg) -> list[list[int]]:
    """One ``generate`` call over token-id prompts, left-padded (every prompt ends where generation
    starts, the attention mask hides the padding); the new token ids of each, padding included."""
    length = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), length), pad_id, dtype=torch.long)
    attn = torch.zeros((len(prompts), length), dtype=torch.long)
    for row, seq in enumerate(prompts):
        ids[row, length - len(seq):] = torch.tensor(seq)
        attn[row, length - len(seq):] = 1
    with torch.no_grad():
        out = model.generate(input_ids=ids.to(model.device), attention_mask=attn.to(model.device),
                             generation_config=gen_cfg).cpu()
    return [row[length:].tolist() for row in out]


# A shared prefix shorter than this is not worth a separate forward pass.
MIN_SHARED_PREFIX = 16


def shared_prefix(seqs: list[list[int]]) -> int:
    """Length of the longest token prefix every sequence starts with, leaving each at least one
    token of its own (generation starts from the last prompt token)."""
    limit = min(len(s) for s in seqs) - 1
    first = seqs[0]
    k = 0
    while k < limit and all(s[k] == first[k] for s in seqs):
        k += 1
    return k


def generate_batch_shared(model, prompts: list[list[int]], prefix_len: int, pad_id: int, gen_cfg) -> list[list[int]]:
    """:func:`generate_batch` for prompts that share their first ``prefix_len`` tokens (the
    character's profile as system prompt, ~800 tokens of SmolLM2's ~900): the prefix goes
    through the model once, its key/value cache is copied to every row, and only each prompt's
    own tokens are computed. The padding sits between the prefix and each prompt's own tokens,
    hidden by the attention mask; positions come from the mask, so each row sees the positions
    it would see alone."""
    prefix = torch.tensor([prompts[0][:prefix_len]], dtype=torch.long)
    with torch.no_grad():
        cache = model(input_ids=prefix.to(model.device), use_cache=True).past_key_values
    cache.batch_repeat_interleave(len(prompts))
    tails = [p[prefix_len:] for p in prompts]
    length = max(len(t) for t in tails)
    ids = torch.full((len(prompts), prefix_len + length), pad_id, dtype=torch.long)
    attn = torch.zeros_like(ids)
    ids[:, :prefix_len] = prefix
    attn[:, :prefix_len] = 1
    for row, tail in enumerate(tails):
        ids[row, prefix_len + length - len(tail):] = torch.tensor(tail)
        attn[row, prefix_len + length - len(tail):] = 1
    with torch.no_grad():
        out = model.generate(input_ids=ids.to(model.device), attention_mask=attn.to(model.device),
                             cache=cache, generation_config=gen_cfg).cpu()
    return [row[prefix_len + length:].tolist() for row in out]


def generate_replies(ref_or_loaded, label: str, prompts: list[dict], settings: GenerationSettings,
                     progress: bool = False, share_prefix: bool = True) -> tuple[list[dict], dict]:
    """One reply record per prompt (``replies.jsonl`` shape) and generation statistics.

    Prompts are batched by system prompt, then length; with ``share_prefix`` a batch whose
    prompts start with the same tokens computes them once (:func:`generate_batch_shared`).

    ``ref_or_loaded`` is a model reference or the ``(path, model, tokenizer)`` of :func:`load_model`.
    """
    from tqdm.auto import tqdm
    from transformers import GenerationConfig

    path, model, tokenizer = load_model(ref_or_loaded) if isinstance(ref_or_loaded, str) else ref_or_loaded
    window = getattr(model.config, "max_position_embeddings", None) or 2048
    if settings.max_context_tokens:
        window = min(window, settings.max_context_tokens)
    budget = window - settings.max_new_tokens
    if budget < 1:
        raise DataError(f"eval: max_new_tokens={settings.max_new_tokens} leaves no room for a prompt in "
                        f"the model's {window}-token window")
    pad_id = tokenizer.pad_token_id  # charops.model.load.load_tokenizer always sets one
    stops = stop_ids(tokenizer, model)
    sample = settings.temperature > 0
    gen_cfg = GenerationConfig(
        max_new_tokens=settings.max_new_tokens, do_sample=sample,
        temperature=settings.temperature if sample else None, top_p=settings.top_p if sample else None,
        top_k=None, repetition_penalty=settings.repetition_penalty, eos_token_id=stops or None, pad_token_id=pad_id)

    fitted = []
    for p in prompts:
        msgs, dropped = fit_context(p["messages"], lambda m: len(_encode(tokenizer, m)), budget)
        ids = _encode(tokenizer, msgs)
        truncated = max(0, len(ids) - budget)
        fitted.append((msgs, dropped, ids[truncated:], truncated))

    # Same system prompt together (one character's prompts share it), shortest first within it.
    order = sorted(range(len(prompts)), key=lambda i: (_system_of(fitted[i][0]), len(fitted[i][2])))
    shared_tokens = 0
    replies: list[dict | None] = [None] * len(prompts)
    new_tokens = 0
    torch.manual_seed(settings.seed)
    t0 = time.perf_counter()
    bar = tqdm(total=len(prompts), desc=f"generating ({label})", unit="reply", disable=not progress)
    for batch in batches_by_group(order, lambda i: _system_of(fitted[i][0]), settings.batch_size):
        seqs = [fitted[i][2] for i in batch]
        common = shared_prefix(seqs) if share_prefix and len(seqs) > 1 else 0
        if common >= MIN_SHARED_PREFIX:
            generated = generate_batch_shared(model, seqs, common, pad_id, gen_cfg)
            shared_tokens += common * (len(seqs) - 1)
        else:
            generated = generate_batch(model, seqs, pad_id, gen_cfg)
        for i, gen in zip(batch, generated, strict=True):
            cut = next((k for k, t in enumerate(gen) if t in stops), None)
            stopped = "end_of_turn" if cut is not None else "max_new_tokens"
            gen = gen[:cut] if cut is not None else gen
            new_tokens += len(gen)
            p, (msgs, dropped, seq, truncated) = prompts[i], fitted[i]
            system = msgs[0]["content"] if msgs and msgs[0]["role"] == "system" else None
            replies[i] = {"id": p["id"], "character": p.get("character"), "category": p.get("category") or "other",
                          "topic": p.get("topic") or "other", "language": p.get("language"), "system": system,
                          "messages": msgs, "model": label, "model_ref": str(path),
                          "reply": tokenizer.decode(gen, skip_special_tokens=True).strip(),
                          "reference": p.get("reference"), "settings": settings.recorded(),
                          "dropped_turns": dropped, "truncated_tokens": truncated,
                          "prompt_tokens": len(seq), "new_tokens": len(gen), "stopped": stopped}
        bar.update(len(batch))
    bar.close()
    seconds = time.perf_counter() - t0
    return [r for r in replies if r is not None], {
        "model": str(path), "replies": len(prompts), "new_tokens": new_tokens, "seconds": seconds,
        "tokens_per_second": new_tokens / seconds if seconds > 0 else None, "batch_size": settings.batch_size,
        "shared_prefix_tokens_saved": shared_tokens,
        "window": window, "dropped_turns": sum(f[1] for f in fitted),
        "prompts_with_dropped_turns": sum(1 for f in fitted if f[1]), "truncated_prompts": sum(1 for f in fitted if f[3])}
