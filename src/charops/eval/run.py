"""The evaluation stage: generate -> judge -> aggregate, as in the CharacterGLM paper.

    python -m charops.eval.run --config default model=runs/dpo/model baseline_model=runs/base
    python -m charops.eval.run --config default judge=openai judge_model=gpt-4o-mini   # CHAROPS_JUDGE_BASE_URL/_API_KEY
    python -m charops.eval.run --config default judge=none                             # automatic part only
    python -m charops.eval.run --config default reuse_replies=true judge=openai        # re-judge stored replies

    from charops.config import load_config
    from charops.eval.run import EvalConfig, run
    summary = run(load_config(EvalConfig, "default", ["judge=none"]))

Steps, each writing into ``output_dir`` (schemas in docs/evaluation.md):

1. **generate** (charops.eval.generate): the candidate and the baseline reply to every prompt of
   the dataset (``eval/prompts.jsonl``, else validation dialogues cut before their last reply),
   batched, with recorded settings -> ``replies.jsonl``, written *before* judging so a judge
   can be re-run alone (``reuse_replies=true``);
2. **automatic** part: response loss / perplexity and preference accuracy on the validation
   split (charops.eval.heldout's functions; only where the model shares the dataset's
   tokenizer), and the reply signals of charops.eval.signals, overall and per category/topic;
3. **judge** (charops.eval.judges, chosen by ``judge``): ``reward_model`` (default; a model from
   ``charops train reward``), ``openai`` (any OpenAI-compatible endpoint) or ``none``
   -> ``pointwise.jsonl`` and ``pairwise.jsonl`` (empty when skipped);
4. **aggregate** (charops.eval.aggregate.summarize) -> ``eval_summary.json``; what was skipped
   and why is listed in its ``skipped``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Literal

from charops.config import stage_main, to_dict
from charops.errors import ConfigError, DataError
from charops.io import check_output, read_jsonl, write_json, write_jsonl

RESULT_FILES = ("replies.jsonl", "pointwise.jsonl", "pairwise.jsonl", "eval_summary.json")


@dataclass
class EvalConfig:
    """Generate, judge and aggregate: the CharacterGLM point-wise and pair-wise evaluation."""

    stage: ClassVar[str] = "eval"

    model: str = field(default="runs/dpo/model", metadata={"help": "Candidate model: HF dir, s3:// prefix or hub id."})
    baseline_model: str | None = field(default="runs/base", metadata={
        "help": "Baseline model for the pair-wise comparison (e.g. the base model or the production model); "
                "null: no pair-wise part."})
    dataset: str = field(default="runs/dataset", metadata={"help": "Prepared dataset directory (charops data prepare)."})
    output_dir: str = field(default="runs/eval", metadata={
        "help": "Results: replies.jsonl, pointwise.jsonl, pairwise.jsonl, eval_summary.json."})
    others: list[str] = field(default_factory=list, metadata={
        "help": "More models compared pair-wise with the candidate, as label=ref (e.g. production=runs/prod/model); "
                "with any, the summary adds Bradley-Terry scores of all models and the candidate's rows against each."})
    candidate_label: str = field(default="candidate", metadata={"help": "Name of the candidate in records and tables."})
    baseline_label: str = field(default="baseline", metadata={"help": "Name of the baseline in records and tables."})
    max_prompts: int = field(default=0, metadata={"help": "Evaluate at most this many prompts (0: all)."})
    prompt_languages: list[str] = field(default_factory=list, metadata={
        "help": "Only the prompts in these languages (e.g. [en]: the characters an English base model can learn); "
                "empty: all."})
    cache_baseline: bool = field(default=False, metadata={
        "help": "Reuse the baseline's replies from the reply cache when the same model (by sha256) already "
                "answered the same prompts with the same settings; store them after generating otherwise."})
    reply_cache: str | None = field(default=None, metadata={
        "help": "Reply cache directory; default $CHAROPS_CACHE/replies (~/.cache/charops/replies)."})
    reuse_replies: bool = field(default=False, metadata={
        "help": "Judge the replies.jsonl already in output_dir instead of generating (re-run a judge alone)."})
    # Generation
    seed: int = field(default=0, metadata={"help": "Seed set before each model generates (matters when sampling)."})
    temperature: float = field(default=0.0, metadata={"help": "Sampling temperature; 0 is greedy decoding."})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling mass (when temperature > 0)."})
    max_new_tokens: int = field(default=64, metadata={"help": "Longest reply in tokens (generation stops at the end of turn)."})
    repetition_penalty: float = field(default=1.0, metadata={"help": "transformers' repetition penalty (1: none)."})
    batch_size: int = field(default=8, metadata={"help": "Prompts per generate call (left-padded) and per loss forward pass."})
    max_context_tokens: int = field(default=0, metadata={
        "help": "Window for prompt + reply (0: the model's max_position_embeddings); older turns are dropped to fit."})
    dtype: Literal["auto", "float32", "bfloat16"] = field(default="auto", metadata={
        "help": "dtype of every model the stage runs (generation, loss, judge): auto is bfloat16 on a GPU, float32 "
                "on a CPU; bfloat16 also on a CPU with avx512_bf16/amx_bf16 (about 1.8x faster there), else float32 "
                "with a note."})
    # Automatic part
    heldout: bool = field(default=True, metadata={
        "help": "Also compute response loss / perplexity and preference accuracy on the validation split."})
    heldout_max_examples: int = field(default=0, metadata={"help": "Validation dialogues/pairs used for them (0: all)."})
    # Judging
    judge: Literal["reward_model", "openai", "none"] = field(default="reward_model", metadata={
        "help": "reward_model (local, from `charops train reward`), openai (an OpenAI-compatible endpoint) or none."})
    pointwise: bool = field(default=True, metadata={"help": "Score each reply point-wise (in addition to pair-wise)."})
    rubric: str = field(default="characterglm-v1", metadata={
        "help": "Rubric name (configs/eval/rubrics/) or YAML path: characterglm-v1 or charactereval-v1."})
    metric_subsets: str | None = field(default=None, metadata={
        "help": "CharacterEval rubric: id2metric.jsonl naming each example's metrics (others get all twelve)."})
    judge_base_url: str | None = field(default=None, metadata={
        "help": "OpenAI-compatible base URL (e.g. https://api.openai.com/v1); default CHAROPS_JUDGE_BASE_URL."})
    judge_model: str | None = field(default=None, metadata={"help": "Judge model name; default CHAROPS_JUDGE_MODEL."})
    judge_timeout_s: float = field(default=30.0, metadata={"help": "Seconds one judge request may take in total."})
    judge_max_retries: int = field(default=3, metadata={"help": "Retries per item (timeouts, 429/5xx, unparseable answers)."})
    judge_backoff_s: float = field(default=1.0, metadata={"help": "First retry delay; doubles each retry (max 20 s)."})
    judge_concurrency: int = field(default=8, metadata={"help": "Judge requests in flight at once."})
    judge_rate_limit: float = field(default=0.0, metadata={"help": "Most judge requests started per second (0: no limit)."})
    judge_max_tokens: int = field(default=512, metadata={"help": "max_tokens of each judge answer."})
    judge_cache: str | None = field(default=None, metadata={
        "help": "Judge answer cache (JSONL); default output_dir/judge_cache.jsonl."})
    reward_model: str | None = field(default="runs/reward/model", metadata={
        "help": "Reward model directory (charops train reward) for judge=reward_model."})
    tie_margin: float | None = field(default=None, metadata={
        "help": "Reward difference within which a pair is a tie; null: the one training recorded."})
    reward_batch_size: int = field(default=8, metadata={"help": "Replies per reward-model forward pass."})
    bootstrap_resamples: int = field(default=2000, metadata={"help": "Bootstrap replicates of the Advantage interval."})
    progress: bool = field(default=True, metadata={"help": "Progress bars on generation and judging (stderr)."})
    # Multi-turn evaluation (charops.eval.multiturn)
    mode: Literal["single", "multiturn", "both"] = field(default="single", metadata={
        "help": "single: one reply per prompt (the CharacterGLM protocol); multiturn: whole conversations with a "
                "simulated user, memory and knowledge-boundary probes; both: the two, in one summary."})
    turns: int = field(default=6, metadata={"help": "mode=multiturn: user turns per simulated conversation."})
    max_conversations: int = field(default=0, metadata={
        "help": "mode=multiturn: conversations per model, one per held-out dialogue (0: all)."})
    user_simulator: Literal["scripted", "openai"] = field(default="scripted", metadata={
        "help": "mode=multiturn: scripted (replays held-out user turns) or openai (an LLM with a persona and a goal "
                "behind an OpenAI-compatible endpoint, e.g. charops deploy --local)."})
    user_base_url: str | None = field(default=None, metadata={
        "help": "user_simulator=openai: its base URL (default: judge_base_url / CHAROPS_JUDGE_BASE_URL)."})
    user_model: str | None = field(default=None, metadata={
        "help": "user_simulator=openai: its model name (default: judge_model / CHAROPS_JUDGE_MODEL)."})
    memory_probe: bool = field(default=True, metadata={
        "help": "mode=multiturn: the user states a fact in turn memory_turn and asks it back memory_gap turns later."})
    memory_turn: int = field(default=1, metadata={"help": "mode=multiturn: the turn (1-based) the fact is stated in."})
    memory_gap: int = field(default=3, metadata={"help": "mode=multiturn: turns between the fact and the question."})
    boundary_probes: bool = field(default=True, metadata={
        "help": "mode=multiturn: ask each character questions it cannot know (later events, another universe, "
                "technical facts) and score in-character deflection."})
    conversation_rubric: str = field(default="characterbench-v1", metadata={
        "help": "mode=multiturn with judge=openai: the rubric conversations are scored on (configs/eval/rubrics/)."})

    def validate(self) -> None:
        if not self.model:
            raise ConfigError("eval: 'model' is required (a model directory, s3:// prefix or hub id)")
        if not self.dataset:
            raise ConfigError("eval: 'dataset' is required (a prepared dataset directory)")
        for name in ("max_new_tokens", "batch_size", "reward_batch_size", "judge_concurrency", "bootstrap_resamples"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}: must be at least 1, got {getattr(self, name)}")
        if self.temperature < 0 or not 0 < self.top_p <= 1:
            raise ConfigError("temperature must be >= 0 and top_p in (0, 1]")
        labels = [self.candidate_label, self.baseline_label]
        for item in self.others:
            label, sep, ref = item.partition("=")
            if not sep or not label.strip() or not ref.strip():
                raise ConfigError(f"others: '{item}' is not label=model")
            labels.append(label.strip())
        if len(set(labels)) != len(labels):
            raise ConfigError(f"model labels must differ: {', '.join(labels)}")
        if self.judge_timeout_s <= 0 or self.judge_max_retries < 0:
            raise ConfigError("judge_timeout_s must be positive and judge_max_retries at least 0")
        if self.mode != "single":
            if self.turns < 1 or self.memory_turn < 1 or self.memory_gap < 1:
                raise ConfigError("turns, memory_turn and memory_gap must be at least 1")
            if self.memory_probe and self.memory_turn + self.memory_gap > self.turns:
                raise ConfigError(f"memory probe: asked in turn {self.memory_turn + self.memory_gap} of "
                                  f"turns={self.turns}; raise turns, lower memory_gap or set memory_probe=false")


def _check_output(cfg: EvalConfig) -> Path:
    """Results may not land inside (or over) an input: the dataset or a local model directory."""
    refs = [(name, getattr(cfg, name)) for name in ("dataset", "model", "baseline_model", "reward_model")]
    return check_output(cfg.output_dir, inputs=[(name, ref) for name, ref in refs if ref and "://" not in ref],
                        overwrite=True, option="output_dir", error=ConfigError)


def _automatic(loaded, dataset: Path, manifest: dict, cfg: EvalConfig, skipped: list[str], label: str) -> dict:
    """Loss/perplexity (overall, per category and topic) and preference accuracy of one model."""
    from charops.eval import heldout
    from charops.model import tokenizer_sha256

    path, model, tokenizer = loaded
    expected = manifest.get("tokenizer", {}).get("sha256")
    if expected and tokenizer_sha256(path) != expected:
        skipped.append(f"loss and preference accuracy of {label}: its tokenizer differs from the dataset's")
        return {}
    val_path = dataset / "sft" / "validation.jsonl"
    validation = list(read_jsonl(val_path)) if val_path.is_file() else []
    pairs_path = dataset / "dpo" / "validation.jsonl"
    pairs = list(read_jsonl(pairs_path)) if pairs_path.is_file() else []
    if cfg.heldout_max_examples:
        validation, pairs = validation[:cfg.heldout_max_examples], pairs[:cfg.heldout_max_examples]
    out: dict = {}
    if validation:
        pad = tokenizer.pad_token_id  # charops.model.load.load_tokenizer always sets one
        # On a CPU, one dialogue per pass: a batch only adds padding and the masked attention
        # path (13 SmolLM2 dialogues of ~900 tokens: 20.6 s at 1, 23.8 s at 4).
        batch = cfg.batch_size if model.device.type == "cuda" else 1
        loss = heldout.aggregate(validation, heldout.response_nll(model, validation, batch, pad))
        out.update(loss=loss["loss"], perplexity=loss["perplexity"], loss_tokens=loss["tokens"],
                   loss_by_category=loss["by_category"], loss_by_topic=loss["by_topic"])
    else:
        skipped.append(f"loss of {label}: the dataset has no sft/validation.jsonl rows")
    if pairs:
        pref = heldout.preference_accuracy(model, tokenizer, pairs)
        out.update(preference_accuracy=pref["accuracy"], preference_pairs=pref["pairs"])
    else:
        skipped.append(f"preference accuracy of {label}: the dataset has no dpo/validation.jsonl pairs")
    return out


def _merge_automatic(heldout_part: dict, signals: dict) -> dict:
    """One model's automatic block: flat headline numbers, plus per-category/topic breakdowns
    (signals and, where computed, loss and perplexity)."""
    flat = {k: v for k, v in signals.items() if not k.startswith("by_")}
    flat.update({k: heldout_part[k] for k in ("loss", "perplexity", "loss_tokens", "preference_accuracy",
                                              "preference_pairs") if k in heldout_part})
    for key in ("category", "topic"):
        groups = {name: dict(block) for name, block in signals[f"by_{key}"].items()}
        for name, block in heldout_part.get(f"loss_by_{key}", {}).items():
            groups.setdefault(name, {}).update(loss=block["loss"], perplexity=block["perplexity"])
        flat[f"by_{key}"] = groups
    return flat


@dataclass
class Models:
    """The (label, model reference) pairs in play: the candidate, the baseline (or None) and
    any further models; every one but the candidate is compared with it."""

    candidate: tuple[str, str]
    baseline: tuple[str, str] | None
    others: list[tuple[str, str]]

    def all(self) -> list[tuple[str, str]]:
        return [self.candidate, *([self.baseline] if self.baseline else []), *self.others]


# ---------------------------------------------------------------------------------------------
# The steps of run(), in order


def load_manifest(dataset: Path) -> dict:
    path = dataset / "manifest.json"
    if not path.is_file():
        raise DataError(f"eval: dataset '{dataset}' has no manifest.json; run `charops data prepare` first")
    return json.loads(path.read_text(encoding="utf-8"))


def models_of(cfg: EvalConfig, skipped: list[str]) -> Models:
    baseline = (cfg.baseline_label, cfg.baseline_model) if cfg.baseline_model else None
    if baseline is None:
        skipped.append("pair-wise: no baseline given (baseline_model is null)")
    others = [(label.strip(), ref.strip()) for label, _, ref in (o.partition("=") for o in cfg.others)]
    return Models((cfg.candidate_label, cfg.model), baseline, others)


def generation_settings(cfg: EvalConfig):
    from charops.eval.generate import GenerationSettings

    return GenerationSettings(seed=cfg.seed, temperature=cfg.temperature, top_p=cfg.top_p,
                              max_new_tokens=cfg.max_new_tokens, repetition_penalty=cfg.repetition_penalty,
                              batch_size=cfg.batch_size, max_context_tokens=cfg.max_context_tokens)


def reuse_replies(path: Path, models: Models, skipped: list[str]) -> tuple[list[dict], Models]:
    """The replies already in ``path`` (``reuse_replies=true``), and the models they cover."""
    if not path.is_file():
        raise DataError(f"reuse_replies: {path} does not exist; run the stage once without it")
    replies = list(read_jsonl(path))
    found = {r["model"] for r in replies}
    if models.candidate[0] not in found:
        raise DataError(f"reuse_replies: {path} holds no reply of '{models.candidate[0]}'")
    baseline = models.baseline
    if baseline and baseline[0] not in found:
        skipped.append(f"pair-wise: {path} holds no reply of the baseline '{baseline[0]}'")
        baseline = None
    skipped.append("generation and the automatic loss: reused the replies already in replies.jsonl")
    return replies, Models(models.candidate, baseline, [m for m in models.others if m[0] in found])


def generate(cfg: EvalConfig, models: Models, settings, dataset: Path, manifest: dict,
             skipped: list[str]) -> tuple[list[dict], dict[str, dict], dict[str, dict]]:
    """Every model's replies to the prompts (the baseline's from the reply cache when it has
    them), and, with ``heldout``, its loss and preference accuracy: (replies, held-out part per
    label, generation record per label)."""
    from charops.eval.generate import ReplyCache, generate_replies, load_model, load_prompts

    prompts = load_prompts(dataset, cfg.max_prompts, cfg.prompt_languages)
    cache = ReplyCache(cfg.reply_cache) if cfg.cache_baseline and models.baseline else None
    replies: list[dict] = []
    heldout_parts: dict[str, dict] = {}
    generation: dict[str, dict] = {}
    for label, ref in models.all():
        hit, key = None, None
        if cache is not None and models.baseline is not None and label == models.baseline[0]:
            from charops.model.load import inference_dtype, resolve_model

            path = resolve_model(ref)
            key = cache.key(path, prompts, settings, str(inference_dtype(cfg.dtype)).removeprefix("torch."))
            hit = cache.get(key, label, path)
        loaded = None
        if hit is not None:
            recs, generation[label] = hit
        else:
            loaded = load_model(ref, cfg.dtype)
            recs, generation[label] = generate_replies(loaded, label, prompts, settings, progress=cfg.progress)
            if key is not None:
                cache.put(key, recs, generation[label])
        replies.extend(recs)
        if cfg.heldout:
            loaded = loaded or load_model(ref, cfg.dtype)
            heldout_parts[label] = _automatic(loaded, dataset, manifest, cfg, skipped, label)
        del loaded
    if not cfg.heldout:
        skipped.append("loss and preference accuracy: heldout=false")
    return replies, heldout_parts, generation


def automatic_part(replies: list[dict], models: Models, heldout_parts: dict[str, dict]) -> dict:
    """The summary's ``automatic`` block: each model's reply signals and held-out numbers."""
    from charops.eval.signals import profiles_of, reply_signals

    profiles = profiles_of(replies)

    def of(label: str) -> dict:
        mine = [r for r in replies if r["model"] == label]
        return _merge_automatic(heldout_parts.get(label, {}), reply_signals(mine, profiles))

    automatic = {"candidate": of(models.candidate[0])}
    if models.baseline:
        automatic["baseline"] = of(models.baseline[0])
    if models.others:
        automatic["others"] = {label: of(label) for label, _ in models.others}
    return automatic


def judge(cfg: EvalConfig, replies: list[dict], models: Models, rubric, skipped: list[str]) -> dict:
    """Point-wise scores of every reply and pair-wise verdicts of the candidate against every
    other model on each prompt both answered: ``{"pointwise", "pairwise", "info"}``."""
    from charops.eval.judges import JUDGES

    if cfg.judge == "none":
        skipped.append("point-wise and pair-wise judging: no judge configured (judge=none)")
        return {"pointwise": [], "pairwise": [], "info": {"kind": "none", "model": None, "rubric": None}}
    by_id = {(r["id"], r["model"]): r for r in replies}
    pairs = [(r, by_id[(r["id"], label)]) for label, _ in models.all()[1:] for r in replies
             if r["model"] == models.candidate[0] and (r["id"], label) in by_id]
    if not cfg.pointwise:
        skipped.append("point-wise: pointwise=false")
    return JUDGES[cfg.judge](replies if cfg.pointwise else [], pairs, cfg, rubric)


def run(cfg: EvalConfig) -> dict:
    """Run the stage; write the four result files and return the eval summary."""
    from charops.eval.aggregate import summarize
    from charops.eval.rubric import load_rubric
    from charops.model.load import quiet_progress_bars

    if not cfg.progress:
        quiet_progress_bars()
    wall = time.perf_counter()
    out = _check_output(cfg)
    dataset = Path(cfg.dataset)
    manifest = load_manifest(dataset)
    rubric = load_rubric(cfg.rubric) if cfg.judge == "openai" else None  # a bad rubric fails before generating
    skipped: list[str] = []
    models = models_of(cfg, skipped)
    settings = generation_settings(cfg)

    if cfg.mode != "single" and cfg.judge == "openai":
        load_rubric(cfg.conversation_rubric)  # a bad conversation rubric fails before generating too

    if cfg.mode == "multiturn":
        replies, heldout_parts, generation = [], {}, {}
        skipped.append("single replies (the CharacterGLM protocol): mode=multiturn")
        automatic = None
        result = {"pointwise": [], "pairwise": [], "info": {"kind": "none", "model": None, "rubric": None}}
    else:
        if cfg.reuse_replies:
            replies, models = reuse_replies(out / "replies.jsonl", models, skipped)
            heldout_parts, generation = {}, {}
        else:
            replies, heldout_parts, generation = generate(cfg, models, settings, dataset, manifest, skipped)
            write_jsonl(out / "replies.jsonl", replies)  # before judging: a judge can be re-run on exactly these
        automatic = automatic_part(replies, models, heldout_parts)
        result = judge(cfg, replies, models, rubric, skipped)
    write_jsonl(out / "pointwise.jsonl", result["pointwise"])
    write_jsonl(out / "pairwise.jsonl", result["pairwise"])

    baseline = models.baseline
    summary = summarize(
        replies, result["pointwise"], result["pairwise"], judge=result["info"], automatic=automatic,
        skipped=skipped, candidate={"label": models.candidate[0], "model": models.candidate[1]},
        baseline={"label": baseline[0], "model": baseline[1]} if baseline else None,
        others=[{"label": label, "model": ref} for label, ref in models.others],
        dimensions=result["info"].get("dimensions"), resamples=cfg.bootstrap_resamples, seed=cfg.seed)
    if cfg.mode != "single":
        from charops.eval.multiturn import evaluate_conversations

        summary["multiturn"] = evaluate_conversations(cfg, dataset, models.all(), settings)
    summary["generation"] = {"settings": settings.recorded(), "models": generation}
    summary["dataset"] = {"path": str(dataset), "content_sha256": manifest.get("content_sha256")}
    summary["config"] = to_dict(cfg)
    summary["seconds"] = time.perf_counter() - wall
    write_json(out / "eval_summary.json", summary)
    return summary


def main(argv: list[str] | None = None) -> None:
    summary = stage_main(EvalConfig, run, argv, default="default")
    pair = (summary.get("pairwise") or {}).get("overall")
    line = f"judge {summary['judge']['kind']}"
    if pair:
        line += (f"  win {pair['win']:.1f}% tie {pair['tie']:.1f}% lose {pair['lose']:.1f}%  "
                 f"advantage {pair['advantage']:+.1f} (p={pair['sign_test_p']:.3g})")
    conv = ((summary.get("multiturn") or {}).get("pairwise") or {}).get("overall")
    if conv:
        line += (f"  conversations: win {conv['win']:.1f}% tie {conv['tie']:.1f}% lose {conv['lose']:.1f}%  "
                 f"advantage {conv['advantage']:+.1f} (p={conv['sign_test_p']:.3g})")
    print(f"{line}  wrote {Path(summary['config']['output_dir']) / 'eval_summary.json'}")


if __name__ == "__main__":
    main()
