"""The batch layout of packed rows, shared by pretraining (packed blocks) and packed SFT.

    from charops.train.collate import PackedCollator
    trainer.data_collator = PackedCollator(tokenizer.pad_token_id)

A packed row holds several sequences (documents, dialogues) laid end to end. The batch keeps
rows as rows (batch, row length), with ``position_ids`` restarting at 0 where each sequence
starts and no attention mask, so transformers builds a block-diagonal causal mask from the
positions (``find_packed_sequence_indices``): no token attends across a sequence boundary and
RoPE positions restart per sequence. TRL's padding-free collator lays the whole batch end to
end in one row instead, which is what FlashAttention's variable-length kernel wants; sdpa and
eager attention would build a dense mask over that row, quadratic in batch x row length, while
rows kept apart cost batch x row^2 (bench/train_throughput.py measured ~7x on CPU).
"""

from __future__ import annotations

from charops.data.tokenize import IGNORE_INDEX


class PackedCollator:
    """Stack packed rows; targets are the row's ``labels`` (or its inputs) except where a sequence starts.

    A row gives its sequence boundaries as ``position_ids`` (pretraining blocks, as ``charops data
    prepare`` wrote them) or as ``seq_lengths`` (TRL's packed SFT rows). A row shorter than the
    longest of the batch is right-padded with ``pad_token_id``; the padding forms a sequence of its
    own (positions from 0) with no targets, so no real token attends to it. A sequence's first
    token is never a target: the token before it belongs to another sequence (or padding).
    """

    def __init__(self, pad_token_id: int):
        self.pad_token_id = pad_token_id

    def __call__(self, rows: list[dict]) -> dict:
        import torch

        width = max(len(r["input_ids"]) for r in rows)
        input_ids = torch.full((len(rows), width), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
        position_ids = torch.arange(width).repeat(len(rows), 1)
        for i, r in enumerate(rows):
            n = len(r["input_ids"])
            input_ids[i, :n] = torch.tensor(r["input_ids"])
            labels[i, :n] = torch.tensor(r.get("labels", r["input_ids"]))
            position_ids[i, :n] = (torch.tensor(r["position_ids"]) if "position_ids" in r else
                                   torch.cat([torch.arange(k) for k in r["seq_lengths"]]))
            position_ids[i, n:] = torch.arange(width - n)
        labels[position_ids == 0] = IGNORE_INDEX
        return {"input_ids": input_ids, "position_ids": position_ids, "labels": labels}
