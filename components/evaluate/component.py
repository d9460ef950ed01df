"""The ``evaluate`` component: generate, judge and report (the CharacterGLM evaluation).

A thin wrapper of ``charops.eval.run.run`` (config ``EvalConfig``, presets under
``configs/eval/``) and ``charops.eval.report.write_reports``: the candidate and the baseline
reply to the dataset's evaluation prompts, a judge (``judge``: ``reward_model`` with the
``reward_model`` input, ``openai`` with the endpoint from the ``charops-judge`` Secret, or
``none``) scores them point-wise and pair-wise, and the results are aggregated. Outputs:
``results`` (the results directory: ``replies.jsonl``, ``pointwise.jsonl``, ``pairwise.jsonl``,
``eval_summary.json``, the reports, ``metrics.json`` for the register step), ``metrics`` (the
headline scalars), ``report`` (Markdown, Tables 4/7/8) and ``html_report`` (charts)::

    from kfp import local
    from charops.components.evaluate.component import evaluate
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root="/tmp/kfp")
    evaluate(model=..., dataset=..., baseline=..., reward_model=..., judge="reward_model",
             config="default", overrides=["max_prompts=8", "max_new_tokens=16"])
"""

from typing import Optional

from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Input, Markdown, Metrics, Model, Output

from charops.pipeline.image import default_image


@dsl.component(base_image=default_image(), install_kfp_package=False)
def evaluate(model: Input[Model], dataset: Input[Dataset], config: str, overrides: list, judge: str,
             results: Output[Artifact], metrics: Output[Metrics], report: Output[Markdown],
             html_report: Output[HTML],
             baseline: Optional[Input[Model]] = None,  # noqa: UP045 (KFP reads typing.Optional)
             reward_model: Optional[Input[Model]] = None,  # noqa: UP045
             baseline_policy: str = "given", model_name: str = "", store: str = "", mode: str = "single"):
    """Evaluate ``model`` against ``baseline`` (when given) with ``judge``.

    ``baseline_policy="production"``: when ``model_name`` has a production version in ``store``,
    that model is the baseline instead (what the promotion gate compares with); ``"given"``:
    always ``baseline``.

    Args:
        model: the candidate
        dataset: the prepared dataset (prepared with the candidate's tokenizer)
        config: ``configs/eval/`` preset (``default``)
        overrides: ``key=value`` overrides (e.g. ``["max_prompts=40", "judge_model=gpt-4o-mini"]``);
            ``model``, ``baseline_model``, ``dataset``, ``output_dir``, ``judge``, ``reward_model``,
            ``progress`` are set by the pipeline
        judge: ``reward_model`` (local), ``openai`` (any OpenAI-compatible endpoint) or ``none``
            (automatic part only)
        baseline: what the candidate is compared with (the pipelines pass the base model); none:
            no pair-wise part
        reward_model: the ``reward`` step's model, for ``judge=reward_model``
        baseline_policy: ``given``: always ``baseline``; ``production``: ``model_name``'s
            production version in ``store`` when there is one
        model_name: registry name whose production version ``baseline_policy=production`` reads
        store: store URL of that registry; empty: ``charops.storage.open_store``'s default
        mode: ``single`` (one reply per prompt: the CharacterGLM protocol), ``multiturn`` (whole
            conversations with a simulated user, memory and knowledge-boundary probes) or ``both``
        results: the results directory: ``replies.jsonl``, ``pointwise.jsonl``, ``pairwise.jsonl``,
            ``eval_summary.json``, ``report.md``, ``report.html``, ``headline.json``,
            ``metrics.json`` (what ``register`` files with the entry); metadata ``dataset_sha256``,
            ``judge``
        metrics: headline scalars: ``pairwise_win/tie/lose/advantage/sign_test_p/n``,
            ``pointwise_overall_candidate/baseline``, the candidate's automatic signals,
            ``baseline_loss``, ``loss_delta``
        report: point-wise table (Table 4), pair-wise per category (Table 7) and topic (Table 8)
            with sign-test p and bootstrap interval, the judge named in every table, what was
            skipped, sample replies
        html_report: the same with SVG charts and replies side by side; no scripts or external
            files, for the UI's sandboxed iframe
    """
    import shutil
    from pathlib import Path

    from charops.components.common import log_metrics, stage_config, write_markdown
    from charops.eval.report import headline_metrics, write_reports
    from charops.eval.run import EvalConfig, run

    # No baseline input means no baseline, whatever the preset names for command-line use; the
    # reward model is the pipeline's own step. Progress bars would only clutter the pod log.
    paths = {"model": model.path, "dataset": dataset.path, "output_dir": results.path,
             "baseline_model": baseline.path if baseline is not None else None, "judge": judge,
             "reward_model": reward_model.path if reward_model is not None else None,
             "progress": False, "mode": mode}
    if baseline_policy not in ("given", "production"):
        from charops.errors import ConfigError

        raise ConfigError(f"eval_baseline '{baseline_policy}': use given or production")
    if baseline_policy == "production" and model_name:
        from charops.registry.stages import production_uri
        from charops.storage import open_store

        paths["baseline_model"] = production_uri(open_store(store or None), model_name) or paths["baseline_model"]
    summary = run(stage_config(EvalConfig, config, overrides, **paths))
    written = write_reports(results.path)
    log_metrics(metrics, headline_metrics(summary))
    write_markdown(report, written["markdown"].read_text(encoding="utf-8"))
    Path(html_report.path).parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(written["html"], html_report.path)
    results.metadata["dataset_sha256"] = (summary.get("dataset") or {}).get("content_sha256") or ""
    results.metadata["judge"] = summary["judge"]["kind"]
