"""A tiny KFP pipeline used by the pipeline spec/version/client tests (compiled at test time).

    python tests/unit/pipeline_fixtures/tiny_pipeline.py OUT.yaml [--variant]
"""

import sys

from kfp import compiler, dsl, kubernetes


@dsl.component(base_image="python:3.11-slim")
def add(a: int, b: float, name: str, flag: bool, items: list, cfg: dict) -> float:
    return a + b + len(name) + int(flag) + len(items) + len(cfg)


@dsl.pipeline(name="tiny-pipe", description="A tiny pipeline.")
def tiny(required_text: str, a: int = 3, b: float = 0.5, name: str = "x", flag: bool = True,
         items: list = [1, 2], cfg: dict = {"k": 1}):  # noqa: B006 (KFP reads literal defaults)
    task = add(a=a, b=b, name=name, flag=flag, items=items, cfg=cfg)
    kubernetes.use_secret_as_env(task, secret_name="s3", secret_key_to_env={"accesskey": "AWS_ACCESS_KEY_ID"})


@dsl.pipeline(name="tiny-pipe", description="A tiny pipeline.")
def tiny_variant(required_text: str, a: int = 4, b: float = 0.5, name: str = "x", flag: bool = True,
                 items: list = [1, 2], cfg: dict = {"k": 1}):  # noqa: B006 (KFP reads literal defaults)
    # Same name, different default: a new version of the same pipeline.
    task = add(a=a, b=b, name=name, flag=flag, items=items, cfg=cfg)
    kubernetes.use_secret_as_env(task, secret_name="s3", secret_key_to_env={"accesskey": "AWS_ACCESS_KEY_ID"})


def compile_to(path: str, variant: bool = False) -> str:
    compiler.Compiler().compile(tiny_variant if variant else tiny, path)
    return path


if __name__ == "__main__":
    compile_to(sys.argv[1], variant="--variant" in sys.argv)
