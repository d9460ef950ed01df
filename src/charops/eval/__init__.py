"""Evaluation of trained models (docs/evaluation.md).

The stage, ``charops.eval.run`` (generate -> judge -> aggregate, as in the CharacterGLM paper)::

    python -m charops.eval.run --config default            # writes runs/eval/eval_summary.json

and its parts, each usable alone: ``generate`` (replies, context fitting, batched generation),
``judges`` (one function per judge kind: ``openai``, ``reward_model``), ``llm`` (the
OpenAI-compatible endpoint client with retries and cache), ``rubric`` (versioned rubrics in
``configs/eval/rubrics/``), ``signals`` (automatic reply signals), ``stats`` and ``aggregate``
(confidence intervals, sign test, bootstrap, Bradley-Terry, annotator agreement, ``summarize``
-> eval summary), ``summary`` (the one reader of ``eval_summary.json``), ``report`` (writes
the reports: ``sections`` builds them once, ``render_md`` and ``render_html`` render them,
``metrics`` gives the KFP and registry numbers) and ``human`` (people as judges).

``heldout``: response-token loss / perplexity on the validation split (overall, per character
category, per dialogue topic), in-character preference accuracy, and sample replies::

    python -m charops.eval.heldout --config heldout model=runs/sft/model dataset=runs/dataset
"""
