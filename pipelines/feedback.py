"""The feedback flywheel: production model + its feedback -> DPO (pairs) or KTO (unpaired
rows) -> evaluate against production (the judged pair-wise protocol of the main job) ->
register -> promotion gate -> promote (staging by default, production with ``promote_to``).

What people did in the playground (swipes, edits, stars, thumbs, arena votes; see
docs/feedback.md) becomes the training data; nothing else changes from the main job's
evaluation and gate::

    charops compile feedback
    charops submit pipelines/feedback.yaml --local --param feedback_format=kto
    charops schedule pipelines/feedback.yaml --cron "0 3 * * 1" --param feedback_since=7d
"""

from kfp import dsl

from charops.components.data_prep.component import data_prep
from charops.components.dpo.component import dpo
from charops.components.feedback_export.component import feedback_export
from charops.components.kto.component import kto
from charops.pipeline.params import _param, placement, recipe_parameters, train, with_parameters
from charops.pipeline.recipe import evaluate_and_register
from charops.pipeline.tasks import ClusterConfig, light_step

# The model comes from the registry (its production version), not from a base model recipe.
_NOT_HERE = ("base_model", "model_config", "model_overrides")


def parameters(cluster: ClusterConfig):
    params = [q for q in recipe_parameters(cluster, stages=("dpo", "kto")) if q.name not in _NOT_HERE]
    params = [_param("promote_to", str, "staging") if q.name == "promote_to" else q for q in params]
    return [_param("feedback_format", str, "dpo"), _param("feedback_since", str, ""),
            _param("feedback_validation_fraction", float, 0.1), *params]


def build(cluster: ClusterConfig):
    """The pipeline function, its cluster parameters' defaults taken from ``cluster``."""

    @dsl.pipeline(name="charops-feedback",
                  description="Feedback flywheel: the production model trained on its users' "
                              "feedback (DPO pairs or KTO rows), evaluated against production, "
                              "registered, gated and promoted (staging unless promote_to says).")
    @with_parameters(parameters(cluster))
    def feedback(p):
        where = placement(p)
        fb = light_step(feedback_export(store=p.store, model_name=p.model_name, since=p.feedback_since,
                                        feedback_format=p.feedback_format,
                                        validation_fraction=p.feedback_validation_fraction),
                        cluster, where, "feedback export")
        fb.set_caching_options(False)  # new events arrive between runs with the same arguments
        production = fb.outputs["production_model"]
        # The held-out prompts the new version is judged on (the bundled samples by default).
        prep = light_step(data_prep(model=production, data=p.data, config=p.data_config,
                                    overrides=p.data_overrides), cluster, where, "eval data")
        common = dict(dataset=prep.outputs["dataset"], baseline=production, reward_base=production,
                      judge=p.judge, reward_config=p.reward_config, reward_overrides=p.reward_overrides,
                      eval_config=p.eval_config, eval_overrides=p.eval_overrides,
                      model_name=p.model_name, store=p.store, base_model=p.model_name,
                      pipeline_version=p.pipeline_version, promote_to=p.promote_to,
                      promote_config=p.promote_config, promote_overrides=p.promote_overrides,
                      eval_baseline=p.eval_baseline, eval_mode=p.eval_mode)
        # Each branch evaluates its own model: kfp.local cannot resolve dsl.OneOf of artifacts.
        with dsl.If(p.feedback_format == "kto", "unpaired feedback: KTO"):
            tuned = train(kto, "kto", p, cluster, where, model=production, dataset=fb.outputs["dataset"])
            evaluate_and_register(cluster, where, model=tuned.outputs["trained_model"], **common)
        with dsl.Else("pairs: DPO"):
            tuned = train(dpo, "dpo", p, cluster, where, model=production, dataset=fb.outputs["dataset"])
            evaluate_and_register(cluster, where, model=tuned.outputs["trained_model"], **common)

    return feedback
