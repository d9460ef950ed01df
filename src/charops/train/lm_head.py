"""TRL's fused LM head on a CPU: project only the positions that have a label.

TRL (1.16) patches the model its SFT, DPO and KTO trainers train (and the DPO/KTO reference
model) with a chunked LM head: ``model(..., labels=..., fused_lm_head=True)`` returns each
next-token label's log-probability (``FusedCausalLMOutput``) without building the full logits.
With Triton (CUDA, XPU) it projects only the positions whose label is not -100; everywhere
else it projects *every* position, in float32 vocabulary tiles, so that tile shapes stay fixed
for compilers. On a CPU that makes the head dearer than the whole backbone: a SmolLM2-135M LoRA
SFT step on a ~900-token role-play dialogue (~160 supervised tokens) took 7.4 s, about 4 s of it
in the head (cProfile of ``charops train sft``).

:func:`compact_lm_heads` re-patches such a model so that, off Triton devices, the head projects
the labelled positions only, in one float32 matmul and softmax (the backbone stays in bfloat16
under autocast), and returns the same fields: per-token tensors of shape ``labels[:, 1:]``,
zero where the label is -100; ``mean_logits``, ``log_sum_sq_probs`` and ``is_top1`` without
gradient. A model whose head TRL's kernel transforms (final-logit soft-
capping, a logit scale, MoE router losses) or a call with ``shift_labels`` keeps TRL's path.
"""

from __future__ import annotations

import functools
import types
from typing import Any

import torch

from charops.data.tokenize import IGNORE_INDEX


def _triton_device(device: torch.device) -> bool:
    return device.type in ("cuda", "xpu")


def _plain_head(model) -> bool:
    """The head is ``lm_head(hidden)`` with nothing on top, which is all this path computes."""
    text = model.config.get_text_config()
    return not any(getattr(text, key, None) for key in (
        "final_logit_softcapping", "logit_scale", "output_multiplier", "lm_head_multiplier", "logits_scaling",
        "output_router_logits"))


def compact_forward(model, trl_forward, *args, fused_lm_head: bool = False, labels=None, shift_labels=None,
                    num_items_in_batch=None, **kwargs):
    """``model.forward`` with TRL's fused head, scoring only labelled positions on a CPU."""
    head = model.get_output_embeddings()
    if (not fused_lm_head or shift_labels is not None or labels is None
            or _triton_device(head.weight.device) or kwargs.get("output_router_logits")):
        return trl_forward(*args, fused_lm_head=fused_lm_head, labels=labels, shift_labels=shift_labels,
                           num_items_in_batch=num_items_in_batch, **kwargs)
    from trl.trainer.utils import FusedCausalLMOutput

    kwargs["use_cache"] = False
    hidden = model.base_model(*args, **kwargs).last_hidden_state[:, :-1]
    labels = labels[:, 1:].to(head.weight.device)
    mask = labels != IGNORE_INDEX
    # The head in float32 even under bf16 autocast: bf16 rounds a logit near 16 to a multiple of
    # 0.0625, and DPO's log-ratios sum such errors over every reply token. On the labelled
    # positions alone it costs little.
    with torch.autocast(head.weight.device.type, enabled=False):
        bias = head.bias.float() if head.bias is not None else None
        logits = torch.nn.functional.linear(hidden.to(head.weight.device)[mask].float(), head.weight.float(), bias)
    logp = torch.log_softmax(logits, dim=-1)
    target = labels[mask]
    token_logp = logp.gather(-1, target.unsqueeze(-1)).squeeze(-1)
    probs = logp.exp()
    entropy = -(probs * logp).sum(-1)
    with torch.no_grad():
        mean_logits = logits.mean(-1)
        log_sum_sq_probs = torch.logsumexp(2 * logp, dim=-1)
        is_top1 = logits.argmax(-1) == target

    def spread(values: torch.Tensor) -> torch.Tensor:  # back to labels' shape, zero where ignored
        return values.new_zeros(mask.shape).masked_scatter(mask, values)

    log_probs = spread(token_logp)
    loss = -log_probs.sum() / (mask.sum().clamp(min=1) if num_items_in_batch is None else num_items_in_batch)
    return FusedCausalLMOutput(loss=loss, log_probs=log_probs, entropy=spread(entropy),
                               log_sum_sq_probs=spread(log_sum_sq_probs), mean_logits=spread(mean_logits),
                               is_top1=spread(is_top1), label_mask=mask, aux_loss=None)


def compact_lm_heads(trainer: Any) -> int:
    """Re-patch the models a TRL trainer gave a fused head (its model, or the PEFT model's base,
    and its reference model); returns how many were re-patched."""
    models = [trainer.model, getattr(trainer, "ref_model", None)]
    done = 0
    for model in models:
        if model is None:
            continue
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        trl_forward = base.__dict__.get("forward")  # TRL sets the patched forward on the instance
        code = getattr(getattr(trl_forward, "__func__", None), "__code__", None)
        if code is None or code.co_name != "_fused_forward" or not _plain_head(base):
            continue

        @functools.wraps(type(base).forward)  # keeps the signature, as TRL's patch does
        def forward(self, *args, _trl=trl_forward, **kwargs):
            return compact_forward(self, _trl, *args, **kwargs)

        base.forward = types.MethodType(forward, base)
        done += 1
    return done
