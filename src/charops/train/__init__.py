"""charops.train: the training stages of the CharacterGLM recipe, listed once in ``stages.STAGES``.

    charops train pretrain --config tiny-cpu     # continued pretraining (charops.train.pretrain)
    charops train sft --config tiny-cpu          # multi-turn SFT, loss on assistant turns (charops.train.sft)
    charops train dpo --config tiny-cpu          # DPO against the SFT model (charops.train.dpo)
    charops train reward --config tiny-cpu       # reward model, the eval stage's judge (charops.train.reward)

Each stage module has a config dataclass and ``run(config) -> summary``; the plumbing they
share is one module per job, in the order a run uses it:

    charops.train.stages     STAGES: each stage's name, config class, run, Trainer arguments class
    charops.train.config     TrainConfig, LoraSettings, run directory layout, stage_cli (python -m)
    charops.train.inputs     prepare_inputs: model + dataset resolved and checked, split rows read
    charops.train.arguments  training_arguments, load_model/load_tokenizer, peft_config, resume
    charops.train.collate    PackedCollator: packed rows (pretraining blocks, packed SFT) as a batch
    charops.train.recorder   RecordingTrainer (mixin of every stage's Trainer), RunRecorder
    charops.train.finish     finish: model/ (merged, tokenizer, characters) + training_summary.json
    charops.train.launch     where a stage runs: this process, torchrun, a TrainJob node

See docs/training.md.
"""
