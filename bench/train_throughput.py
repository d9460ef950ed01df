"""Training throughput: SFT with packing vs. the same trainer with padding; GPU tokens/s/GPU and MFU.

CPU (default): the embedded tiny model, the same prepared dialogues and the same number of
steps, trained twice in one run: once with packing (padding-free, what charops uses) and once
with padding (TRL's default). Reports supervised tokens/s and the fraction of non-padding
positions per batch for both::

    .venv/bin/python bench/train_throughput.py                  # bundled samples
    .venv/bin/python bench/train_throughput.py --steps 30 --batch 8 --inputs data/dialogues.jsonl

SmolLM2 (``--model smollm2``): the real 134.5 M-parameter SmolLM2-135M-Instruct
(``charops:smollm2-135m``) on the English samples, four runs in one: LoRA and full fine-tuning,
each with packing and with padding. With a realistic model the MLP and projections, not
attention, dominate, so this is where the LoRA/full and packing/padding ratios mean something::

    .venv/bin/python bench/train_throughput.py --model smollm2 --steps 3 --batch 2

Precision (``--model smollm2 --precision``): float32 against bfloat16 autocast on this CPU
(``bf16=true``: the Trainer's ``use_cpu`` + ``bf16``, i.e. ``torch.autocast("cpu", bfloat16)``,
float32 master weights), LoRA and full fine-tuning, each on the SFT preset's layout (one
dialogue per row, no packing), the same data, seed and steps: supervised tokens/s, final training
loss and the validation loss at the end, the two precisions in ABBA order over ``--repeats``
(best run of each kept). A CPU without avx512_bf16/amx_bf16 runs both in float32 (and the
result says so)::

    .venv/bin/python bench/train_throughput.py --model smollm2 --precision --steps 6
    .venv/bin/python bench/train_throughput.py --model smollm2 --precision --steps 2 --batch 1 \
        --eval-rows 3 --repeats 2   # what a busy shared 2-core machine can afford

Output head (``--model smollm2 --head``): TRL's fused LM head as it runs off Triton (every
position projected in float32 tiles) against charops' (``charops.train.lm_head``: the labelled
positions only), SFT with the ``smollm2-cpu`` preset (LoRA, bf16 autocast) and DPO with its
preset (LoRA, float32) from SmolLM2, the same data, seed and steps, ABBA order over ``--repeats``:
seconds per step, tokens/s and the final loss of each (the losses should agree)::

    .venv/bin/python bench/train_throughput.py --model smollm2 --head --steps 4 --repeats 1

GPU (``--gpu``): a config-initialised ~0.5B Qwen2 model (Qwen2.5-0.5B shape, random weights,
the tiny model's tokenizer) in bf16: tokens/s/GPU and MFU of SFT (packed) and DPO (reference
log-probs precomputed, so only the policy's forward and backward are timed)::

    .venv/bin/python bench/train_throughput.py --gpu --steps 30

MFU = 6 * N * tokens/s / peak bf16 FLOP/s of the GPU, N = parameters without the input
embedding (the tied LM head still counts): the usual 6N estimate, attention FLOPs left out.
Results are printed and saved to bench/results/train_throughput.json (or --out), one key per
variant (cpu, cpu_smollm2, cpu_smollm2_precision, cpu_smollm2_head, gpu).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Dense bf16 peak FLOP/s by GPU name (datasheet figures, no sparsity).
PEAK_BF16 = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10": 125e12, "L4": 121e12}


def build_inputs(work: Path, inputs: list[str], quiet: bool = True) -> tuple[Path, Path]:
    """Tiny base model (tokenizer on the same text) and its prepared dataset."""
    from charops.config import load_config
    from charops.data.prepare import PrepareConfig
    from charops.data.prepare import run as prepare
    from charops.model.init import ModelInitConfig
    from charops.model.init import run as init

    model, data = work / "base", work / "data"
    init(load_config(ModelInitConfig, "tiny", [f"output_dir={model}", *([f"corpus={','.join(inputs)}"] if inputs else [])]))
    prepare(load_config(PrepareConfig, None, [f"model={model}", f"output_dir={data}", "progress=false",
                                              *([f"inputs={','.join(inputs)}"] if inputs else [])]))
    return model, data


def sft_run(model: Path, data: Path, out: Path, packing: bool, args, extra: list[str] = ()) -> dict:
    from charops.config import load_config
    from charops.train.sft import SFTConfig, run

    cfg = load_config(SFTConfig, "tiny-cpu", [
        f"model={model}", f"dataset={data}", f"output_dir={out}", f"max_steps={args.steps}",
        f"per_device_train_batch_size={args.batch}", f"packing={str(packing).lower()}",
        f"max_seq_len={args.max_seq_len}", "evaluate=false", f"save_steps={args.steps + 1}", "warmup_ratio=0",
        *extra])
    return run(cfg)


def figures(s: dict) -> dict:
    out = {k: s[k] for k in ("steps", "train_seconds", "tokens_this_run", "supervised_tokens_this_run",
                              "tokens_per_second", "supervised_tokens_per_second", "non_padding_fraction",
                              "final_loss")}
    if "eval_loss" in s.get("eval", {}):
        out["eval_loss"] = s["eval"]["eval_loss"]
    return out


def cpu_bench(args, work: Path) -> dict:
    import torch

    torch.set_num_threads(args.threads)
    model, data = build_inputs(work, args.inputs)
    # The machine is shared: alternate the two modes and keep each one's best run, so a burst of
    # someone else's load does not decide the comparison.
    runs: dict[str, list[dict]] = {"packing": [], "padding": []}
    for i in range(args.repeats):
        for mode, packing in (("packing", True), ("padding", False)):
            runs[mode].append(figures(sft_run(model, data, work / f"{mode}{i}", packing, args)))
    results = {mode: {**max(r, key=lambda f: f["supervised_tokens_per_second"]),
                      "all_supervised_tokens_per_second": [f["supervised_tokens_per_second"] for f in r]}
               for mode, r in runs.items()}
    p, q = results["packing"], results["padding"]
    return {
        "device": f"cpu ({torch.get_num_threads()} threads)",
        "model": "charops tiny (model init --config tiny)",
        "steps": args.steps, "per_device_train_batch_size": args.batch, "max_seq_len": args.max_seq_len,
        "repeats": args.repeats, "sft": results,
        "speedup_supervised_tokens_per_second": p["supervised_tokens_per_second"] / q["supervised_tokens_per_second"],
    }


def smollm2_bench(args, work: Path) -> dict:
    import torch

    torch.set_num_threads(args.threads)
    model, data = smollm2_data(args, work)
    runs = {}
    for method, lora in (("lora", True), ("full", False)):
        for mode, packing in (("packing", True), ("padding", False)):
            # Packed rows hold whole dialogues (~940 tokens each), so a row must fit two.
            extra = [f"lora.enabled={str(lora).lower()}", "learning_rate=1e-4",
                     f"max_seq_len={max(args.max_seq_len, 2048) if packing else args.max_seq_len}"]
            runs[f"{method}_{mode}"] = figures(sft_run(model, data, work / f"{method}-{mode}", packing, args, extra))
    sup = {k: v["supervised_tokens_per_second"] for k, v in runs.items()}
    return {
        "device": f"cpu ({torch.get_num_threads()} threads)",
        "model": "SmolLM2-135M-Instruct (charops:smollm2-135m), float32",
        "steps": args.steps, "per_device_train_batch_size": args.batch, "sft": runs,
        "lora_over_full_supervised_tokens_per_second": {m: sup[f"lora_{m}"] / sup[f"full_{m}"] for m in ("packing", "padding")},
        "packing_over_padding_supervised_tokens_per_second": {m: sup[f"{m}_packing"] / sup[f"{m}_padding"] for m in ("lora", "full")},
    }


def precision_bench(args, work: Path) -> dict:
    """fp32 against bf16 autocast, LoRA and full SFT of SmolLM2, in one run on this CPU."""
    import torch

    from charops.train.arguments import cpu_bf16_supported

    torch.set_num_threads(args.threads)
    model, data = smollm2_data(args, work)
    validation = data / "sft" / "validation.jsonl"
    rows = validation.read_text(encoding="utf-8").splitlines(keepends=True)
    if args.eval_rows:  # the same first rows for every run: a cheaper, still paired, comparison
        rows = rows[:args.eval_rows]
        validation.write_text("".join(rows), encoding="utf-8")
    # The machine is shared and its load drifts: run the two precisions in ABBA order (fp32,
    # bf16, bf16, fp32, ...), so a load trend cannot favour the one that runs second, and keep
    # each one's best run (the losses are the same on every repeat: same data, seed, steps).
    every: dict[str, list[dict]] = {}
    for method, lora in (("lora", True), ("full", False)):
        for i in range(args.repeats):
            for precision in ("fp32", "bf16") if i % 2 == 0 else ("bf16", "fp32"):
                extra = [f"lora.enabled={str(lora).lower()}", "learning_rate=1e-4", "evaluate=true",
                         f"bf16={str(precision == 'bf16').lower()}"]
                every.setdefault(f"{method}_{precision}", []).append(figures(
                    sft_run(model, data, work / f"{method}-{precision}-{i}", False, args, extra)))
    runs = {k: {**max(r, key=lambda f: f["supervised_tokens_per_second"]),
                "all_supervised_tokens_per_second": [f["supervised_tokens_per_second"] for f in r]}
            for k, r in every.items()}
    out = {
        "device": f"cpu ({torch.get_num_threads()} threads)", "cpu_bf16": cpu_bf16_supported(),
        "model": "SmolLM2-135M-Instruct (charops:smollm2-135m)", "steps": args.steps,
        "per_device_train_batch_size": args.batch, "max_seq_len": args.max_seq_len, "packing": False,
        "validation_dialogues": len(rows), "repeats": args.repeats, "sft": runs,
    }
    for method in ("lora", "full"):
        fp32, bf16 = runs[f"{method}_fp32"], runs[f"{method}_bf16"]
        out[f"{method}_bf16_over_fp32_supervised_tokens_per_second"] = (
            bf16["supervised_tokens_per_second"] / fp32["supervised_tokens_per_second"])
        if "eval_loss" in fp32 and "eval_loss" in bf16:
            out[f"{method}_bf16_eval_loss_relative_difference"] = (
                (bf16["eval_loss"] - fp32["eval_loss"]) / fp32["eval_loss"])
    return out


def head_bench(args, work: Path) -> dict:
    """TRL's fused head off Triton against charops' labelled-positions head, SFT and DPO presets."""
    import torch

    from charops.config import load_config
    from charops.train import dpo, lm_head, sft

    torch.set_num_threads(args.threads)
    model, data = smollm2_data(args, work)
    ours = lm_head.compact_lm_heads

    def one(stage: str, head: str, i: int) -> dict:
        module, cls = (sft, sft.SFTConfig) if stage == "sft" else (dpo, dpo.DPOConfig)
        refs = [f"model={model}"] + ([f"ref_model={model}"] if stage == "dpo" else [])
        cfg = load_config(cls, "smollm2-cpu", [*refs, f"dataset={data}", f"output_dir={work / f'{stage}-{head}-{i}'}",
                                                f"max_steps={args.steps}", f"save_steps={args.steps + 1}",
                                                "evaluate=false", "progress=false"])
        lm_head.compact_lm_heads = ours if head == "charops" else (lambda trainer: 0)  # TRL's head as it ships
        try:
            s = module.run(cfg)
        finally:
            lm_head.compact_lm_heads = ours
        return {"seconds_per_step": s["train_seconds"] / s["steps"], "tokens_per_second": s["tokens_per_second"],
                "final_loss": s["final_loss"], "steps": s["steps"], "bf16": bool(cfg.bf16)}

    every: dict[str, list[dict]] = {}
    for stage in ("sft", "dpo"):
        for i in range(args.repeats):
            for head in ("trl", "charops") if i % 2 == 0 else ("charops", "trl"):
                every.setdefault(f"{stage}_{head}", []).append(one(stage, head, i))
    runs = {k: min(r, key=lambda f: f["seconds_per_step"]) for k, r in every.items()}
    return {
        "device": f"cpu ({torch.get_num_threads()} threads)", "model": "SmolLM2-135M-Instruct (charops:smollm2-135m)",
        "steps": args.steps, "repeats": args.repeats, "runs": runs,
        **{f"{stage}_speedup": runs[f"{stage}_trl"]["seconds_per_step"] / runs[f"{stage}_charops"]["seconds_per_step"]
           for stage in ("sft", "dpo")},
        **{f"{stage}_final_loss_difference": runs[f"{stage}_charops"]["final_loss"] - runs[f"{stage}_trl"]["final_loss"]
           for stage in ("sft", "dpo")},
    }


def smollm2_data(args, work: Path) -> tuple[Path, Path]:
    """SmolLM2 (resolved into the model cache) and the English samples prepared for it."""
    from charops.config import load_config
    from charops.data.prepare import PrepareConfig
    from charops.data.prepare import run as prepare
    from charops.model.load import resolve_model

    model = resolve_model("charops:smollm2-135m")
    data = work / "data"
    prepare(load_config(PrepareConfig, "smollm2-cpu", [f"model={model}", f"output_dir={data}", "progress=false",
                                                        *([f"inputs={','.join(args.inputs)}"] if args.inputs else [])]))
    return model, data


def gpu_model(base: Path, out: Path) -> tuple[Path, int]:
    """A Qwen2.5-0.5B-shaped model with random weights and the tiny model's tokenizer."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from charops.train.finish import copy_tokenizer_files

    tok_cfg = json.loads((base / "config.json").read_text())
    cfg = Qwen2Config(vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                      num_attention_heads=14, num_key_value_heads=2, max_position_embeddings=32768,
                      tie_word_embeddings=True, eos_token_id=tok_cfg["eos_token_id"],
                      pad_token_id=tok_cfg["pad_token_id"], bos_token_id=None, dtype="bfloat16")
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(cfg).to(torch.bfloat16)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    copy_tokenizer_files(base, out)
    n = sum(p.numel() for p in model.parameters()) - model.get_input_embeddings().weight.numel()
    if cfg.tie_word_embeddings:  # the LM head is the embedding matrix, and its matmul is real work
        n += model.get_input_embeddings().weight.numel()
    return out, n


def gpu_bench(args, work: Path) -> dict:
    import torch

    from charops.config import load_config
    from charops.train.dpo import DPOConfig
    from charops.train.dpo import run as dpo

    name = torch.cuda.get_device_name(0)
    peak = next((v for k, v in PEAK_BF16.items() if k in name), None)
    base, data = build_inputs(work, args.inputs)
    model, n_params = gpu_model(base, work / "qwen2-0.5b-shape")
    common = ["bf16=true", "attn_implementation=sdpa", "learning_rate=1e-5"]
    sft = figures(sft_run(model, data, work / "sft", True, args, common))
    d = dpo(load_config(DPOConfig, "tiny-cpu", [
        f"model={model}", f"ref_model={model}", f"dataset={data}", f"output_dir={work / 'dpo'}",
        f"max_steps={args.steps}", f"per_device_train_batch_size={args.batch}", f"max_seq_len={args.max_seq_len}",
        "precompute_ref_log_probs=true", "evaluate=false", f"save_steps={args.steps + 1}", "warmup_ratio=0", *common]))
    dpo_fig = figures(d)
    out = {"device": name, "gpus": 1, "model": "Qwen2.5-0.5B shape, random init, bf16", "parameters_6n": n_params,
           "peak_bf16_flops": peak, "steps": args.steps, "per_device_train_batch_size": args.batch,
           "max_seq_len": args.max_seq_len}
    for key, fig in (("sft", sft), ("dpo", dpo_fig)):
        tps = fig["tokens_per_second"]
        fig["tokens_per_second_per_gpu"] = tps
        fig["mfu"] = 6 * n_params * tps / peak if peak else None
        out[key] = fig
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gpu", action="store_true", help="GPU variant: ~0.5B model, bf16, SFT and DPO, MFU")
    ap.add_argument("--model", choices=("tiny", "smollm2"), default="tiny",
                    help="CPU: the embedded tiny model (packing vs padding) or SmolLM2 (LoRA/full x packing/padding)")
    ap.add_argument("--precision", action="store_true",
                    help="with --model smollm2: float32 against bfloat16 autocast (LoRA and full), no packing")
    ap.add_argument("--head", action="store_true",
                    help="with --model smollm2: TRL's fused LM head against charops' labelled-positions head, SFT and DPO")
    ap.add_argument("--eval-rows", type=int, default=0,
                    help="--precision: validate on the first N validation dialogues only (0: all)")
    ap.add_argument("--steps", type=int, default=None, help="optimizer steps per run (default: 10 CPU tiny, 3 SmolLM2, 30 GPU)")
    ap.add_argument("--batch", type=int, default=None, help="per-device batch (default: 8; 2 for SmolLM2)")
    ap.add_argument("--max-seq-len", type=int, default=None, help="packed row length (default: 512 CPU, 2048 GPU)")
    ap.add_argument("--threads", type=int, default=2, help="CPU threads (torch.set_num_threads)")
    ap.add_argument("--repeats", type=int, default=2,
                    help="CPU: runs per mode, alternating (--precision: ABBA order); the best counts")
    ap.add_argument("--inputs", nargs="*", default=[], help="data files to prepare (default: bundled samples)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "train_throughput.json"))
    args = ap.parse_args(argv)
    smol = args.model == "smollm2" and not args.gpu
    args.steps = args.steps or (30 if args.gpu else 3 if smol else 10)
    args.batch = args.batch or (2 if smol else 8)
    args.max_seq_len = args.max_seq_len or (2048 if args.gpu else 1280 if smol else 512)

    from charops.errors import CharopsError
    from charops.io import write_json

    with tempfile.TemporaryDirectory(prefix="charops-bench-") as tmp:
        try:
            bench = (gpu_bench if args.gpu else precision_bench if smol and args.precision
                     else head_bench if smol and args.head else smollm2_bench if smol else cpu_bench)
            result = bench(args, Path(tmp))
        except CharopsError as exc:
            raise SystemExit(f"error: {exc}") from None
    out = Path(args.out)
    # One file for every variant: each run replaces only its own key (cpu, cpu_smollm2, gpu).
    previous = json.loads(out.read_text()) if out.is_file() else {}
    key = "gpu" if args.gpu else "cpu_smollm2_precision" if smol and args.precision else \
        "cpu_smollm2_head" if smol and args.head else "cpu_smollm2" if smol else "cpu"
    result = {**previous, key: result}
    write_json(out, result)
    print(json.dumps(result, indent=2))
    print(f"saved {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
