"""charops.train: the three training stages of the CharacterGLM recipe.

    charops train pretrain --config tiny-cpu     # continued pretraining (charops.train.pretrain)
    charops train sft --config tiny-cpu          # multi-turn SFT, loss on assistant turns (charops.train.sft)
    charops train dpo --config tiny-cpu          # DPO against the SFT model (charops.train.dpo)

Each module has a config dataclass and ``run(config) -> summary``; the plumbing they share is
one module per job, in the order a run uses it:

    charops.train.config     TrainConfig, LoraSettings, run directory layout, stage_cli (python -m)
    charops.train.inputs     prepare_inputs: model + dataset resolved and checked, split rows read
    charops.train.arguments  training_arguments, load_model/load_tokenizer, peft_config, resume
    charops.train.recorder   RecordingTrainer (mixin of every stage's Trainer), RunRecorder
    charops.train.finish     finish: model/ (merged, tokenizer, characters) + training_summary.json

See docs/training.md.
"""
