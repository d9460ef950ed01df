"""Evaluation of trained models.

``heldout``: response-token loss / perplexity on the validation split (overall, per character
category, per dialogue topic), in-character preference accuracy, and sample replies to the
evaluation prompts, for a model and optionally a baseline::

    python -m charops.eval.heldout --model runs/sft --dataset runs/dataset --output runs/eval
"""
