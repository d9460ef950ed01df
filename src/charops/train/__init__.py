"""charops.train: the three training stages of the CharacterGLM recipe.

    charops train pretrain --config tiny-cpu     # continued pretraining (charops.train.pretrain)
    charops train sft --config tiny-cpu          # multi-turn SFT, loss on assistant turns (charops.train.sft)
    charops train dpo --config tiny-cpu          # DPO against the SFT model (charops.train.dpo)

Each module has a config dataclass and ``run(config) -> summary``; shared plumbing is in
charops.train.common. See docs/training.md.
"""
