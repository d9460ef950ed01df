"""SFT and packing: masks as TRL would build them, no attention across packed sequences, LoRA.

    .venv/bin/python -m pytest tests/unit/test_train_sft.py -x -q
"""

from __future__ import annotations

import json

import pytest
import torch

from charops.config import load_config
from charops.errors import DataError
from charops.io import read_jsonl

torch.set_num_threads(1)


def _rows(dataset_dir, split="sft"):
    return list(read_jsonl(dataset_dir / split / "train.jsonl"))


def test_trl_tokenization_of_messages_gives_the_prepared_labels(tmp_path, micro_model_dir, train_dataset_dir):
    """What data prepare tokenized is what TRL's assistant_only_loss would supervise from `messages`."""
    import datasets
    import trl
    from transformers import AutoModelForCausalLM, AutoTokenizer

    rows = _rows(train_dataset_dir)
    args = trl.SFTConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, report_to="none",
                         assistant_only_loss=True, max_length=None, gradient_checkpointing=False)
    trainer = trl.SFTTrainer(model=AutoModelForCausalLM.from_pretrained(micro_model_dir), args=args,
                             train_dataset=datasets.Dataset.from_list([{"messages": r["messages"]} for r in rows]),
                             processing_class=AutoTokenizer.from_pretrained(micro_model_dir))
    assert len(trainer.train_dataset) == len(rows)
    for prepared, trl_row in zip(rows, trainer.train_dataset, strict=True):
        assert trl_row["input_ids"] == prepared["input_ids"]
        assert trl_row["labels"] == prepared["labels"]
    # Every assistant turn is supervised, ending with its end-of-turn token.
    im_end = AutoTokenizer.from_pretrained(micro_model_dir).convert_tokens_to_ids("<|im_end|>")
    for r in rows:
        n_assistant = sum(m["role"] == "assistant" for m in r["messages"])
        assert sum(lab == im_end for lab in r["labels"]) == n_assistant


def _forward(model, batch):
    with torch.no_grad():
        return model(**{k: v for k, v in batch.items() if k != "labels"}, use_cache=False).logits[0]


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_dialogues_do_not_attend_to_each_other(micro_model_dir, train_dataset_dir, attn):
    """Logits of a dialogue inside a padding-free packed row equal its logits alone."""
    from transformers import AutoModelForCausalLM
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    model = AutoModelForCausalLM.from_pretrained(micro_model_dir, attn_implementation=attn).eval()
    rows = [{"input_ids": r["input_ids"], "labels": r["labels"]} for r in _rows(train_dataset_dir)[:3]]
    packed = DataCollatorForLanguageModeling(pad_token_id=0, padding_free=True)(rows)
    logits = _forward(model, packed)
    start = 0
    for r in rows:
        n = len(r["input_ids"])
        alone = _forward(model, {"input_ids": torch.tensor([r["input_ids"]])})
        torch.testing.assert_close(logits[start:start + n], alone, rtol=1e-4, atol=1e-5)
        start += n
    # Control: the same row with positions running on (one long sequence) does leak.
    leaky = _forward(model, {"input_ids": packed["input_ids"]})
    n0 = len(rows[0]["input_ids"])
    assert not torch.allclose(leaky[n0:n0 + 5], logits[n0:n0 + 5], atol=1e-3)


def test_packed_rows_collator_keeps_dialogues_apart(micro_model_dir, train_dataset_dir):
    """charops' row layout of TRL's packed rows: same logits per dialogue as alone, pads inert."""
    from transformers import AutoModelForCausalLM

    from charops.train.collate import PackedCollator

    model = AutoModelForCausalLM.from_pretrained(micro_model_dir).eval()
    rows = _rows(train_dataset_dir)
    packed = [{"input_ids": rows[0]["input_ids"] + rows[1]["input_ids"], "labels": rows[0]["labels"] + rows[1]["labels"],
               "seq_lengths": [len(rows[0]["input_ids"]), len(rows[1]["input_ids"])]},
              {"input_ids": rows[2]["input_ids"], "labels": rows[2]["labels"], "seq_lengths": [len(rows[2]["input_ids"])]}]
    batch = PackedCollator(pad_token_id=0)(packed)
    assert "attention_mask" not in batch and batch["input_ids"].shape[0] == 2
    with torch.no_grad():
        logits = model(**{k: v for k, v in batch.items() if k != "labels"}, use_cache=False).logits
    spans = [(0, 0, rows[0]), (0, len(rows[0]["input_ids"]), rows[1]), (1, 0, rows[2])]
    for b, start, r in spans:
        n = len(r["input_ids"])
        alone = _forward(model, {"input_ids": torch.tensor([r["input_ids"]])})
        torch.testing.assert_close(logits[b, start:start + n], alone, rtol=1e-4, atol=1e-5)
    n2 = len(rows[2]["input_ids"])
    assert (batch["labels"][1, n2:] == -100).all()  # padding is never a target
    assert batch["labels"][0, len(rows[0]["input_ids"])] == -100  # nor the first token of the next dialogue


def test_pretrain_blocks_do_not_leak_across_documents(micro_model_dir, train_dataset_dir):
    from transformers import AutoModelForCausalLM

    from charops.train.collate import PackedCollator

    model = AutoModelForCausalLM.from_pretrained(micro_model_dir).eval()
    blocks = _rows(train_dataset_dir, "pretrain")[:2]
    batch = PackedCollator(pad_token_id=0)(blocks)
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits
    checked = 0
    for b, block in enumerate(blocks):
        pos = block["position_ids"]
        starts = [i for i in range(len(pos)) if i == 0 or pos[i] != pos[i - 1] + 1] + [len(pos)]
        for a, e in zip(starts, starts[1:], strict=False):
            with torch.no_grad():
                alone = model(input_ids=torch.tensor([block["input_ids"][a:e]]),
                              position_ids=torch.tensor([pos[a:e]]), use_cache=False).logits[0]
            torch.testing.assert_close(logits[b, a:e], alone, rtol=1e-4, atol=1e-5)
            checked += 1
        # A document's first token is never a target: the token before it is another document's.
        assert all(batch["labels"][b, i] == -100 for i in starts[:-1])
    assert checked > len(blocks)  # blocks really hold several documents


def test_a_batch_without_supervised_tokens_is_an_error(tmp_path, micro_model_dir, train_dataset_dir):
    from charops.train.sft import SFTConfig, run

    # Rows truncated to 6 tokens keep only the system turn's start: nothing left to supervise.
    cfg = load_config(SFTConfig, "tiny-cpu", [f"model={micro_model_dir}", f"dataset={train_dataset_dir}",
                                              f"output_dir={tmp_path / 'run'}", "max_seq_len=6", "max_steps=1",
                                              "evaluate=false"])
    with pytest.raises(DataError, match="no supervised"):
        run(cfg)


def test_a_dialogue_without_assistant_tokens_is_refused():
    from charops.train.sft import to_trainer_rows

    row = {"id": "x", "messages": [{"role": "user", "content": "hi"}], "input_ids": [1, 2, 3], "labels": [-100] * 3}
    with pytest.raises(DataError, match=r"sft/train.jsonl row 1 \(id x\): no assistant token"):
        to_trainer_rows([row], False, "d/sft/train.jsonl")
    bad = {**row, "labels": [-100, 9, 3]}
    with pytest.raises(DataError, match="labels must equal input_ids"):
        to_trainer_rows([bad], False, "d/sft/train.jsonl")


def test_lora_sft_writes_a_merged_model(tmp_path, micro_model_dir, train_dataset_dir):
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    from charops.model import tokenizer_sha256
    from charops.train.sft import SFTConfig, run

    cfg = load_config(SFTConfig, "tiny-cpu", [f"model={micro_model_dir}", f"dataset={train_dataset_dir}",
                                              f"output_dir={tmp_path / 'run'}", "max_steps=3", "warmup_ratio=0",
                                              "learning_rate=0.05", "lora.enabled=true", "lora.r=4",
                                              "lora.target_modules=[q_proj,v_proj]", "evaluate=false"])
    summary = run(cfg)
    out = tmp_path / "run" / "model"
    assert (out / "adapter" / "adapter_config.json").is_file()
    assert tokenizer_sha256(out) == tokenizer_sha256(micro_model_dir)
    base, tuned = load_file(micro_model_dir / "model.safetensors"), load_file(out / "model.safetensors")
    assert set(base) == set(tuned)  # a plain model: no lora_ keys, same tensors
    changed = {k for k in base if not torch.equal(base[k], tuned[k])}
    assert changed and all("q_proj" in k or "v_proj" in k for k in changed)
    AutoModelForCausalLM.from_pretrained(out)  # loads without peft
    assert summary["steps"] == 3
    assert json.loads((out / "training_summary.json").read_text())["config"]["lora"]["enabled"] is True
