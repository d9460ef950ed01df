"""A two-step pipeline for the local runner tests in tests/unit/test_components.py.

Its components live in a file of their own because KFP reads a component's source from its
module.
"""

from kfp import dsl
from kfp.dsl import Artifact, Input, Metrics, Output


@dsl.component(base_image="python:3.11", install_kfp_package=False)
def write_text(text: str, out: Output[Artifact]):
    with open(out.path, "w", encoding="utf-8") as fh:
        fh.write(text)


@dsl.component(base_image="python:3.11", install_kfp_package=False)
def shout(src: Input[Artifact], fail: bool, attempts_file: str, loud: Output[Artifact],
          metrics: Output[Metrics]):
    import sys

    if attempts_file:  # one line per execution, so tests can count retries
        with open(attempts_file, "a", encoding="utf-8") as fh:
            fh.write("attempt\n")
    # What a training stage prints on stderr (the live view shows the latest such line).
    print("step 1/2 loss=2.5000 lr=0.1 tokens=4", file=sys.stderr, flush=True)
    if fail:
        raise ValueError("the source was too quiet")
    with open(src.path, encoding="utf-8") as fh, open(loud.path, "w", encoding="utf-8") as out:
        text = fh.read()
        out.write(text.upper())
    metrics.log_metric("final_loss", len(text) / 8)


@dsl.pipeline(name="two-steps")
def two_steps(text: str = "hello", fail: bool = False, attempts_file: str = "",
              pipeline_version: str = ""):
    first = write_text(text=text)
    shout(src=first.outputs["out"], fail=fail, attempts_file=attempts_file).set_retry(
        num_retries=2, backoff_duration="0s", backoff_factor=1.0)
