"""Component READMEs: their input/output tables are generated from the components and current.

    .venv/bin/python -m pytest tests/unit/test_component_docs.py -x -q

(No ``from __future__ import annotations`` here: KFP reads the test components' annotations as
objects.)
"""

import pytest
from kfp import dsl
from kfp.dsl import Dataset, Input, Model, Output

from charops.errors import CharopsError
from charops.pipeline import component_docs
from charops.train.stages import STAGES


def test_every_component_readme_is_current():
    stale = component_docs.update(check=True)
    assert stale == [], f"run `.venv/bin/python scripts/component_docs.py`: {[str(p) for p in stale]}"


@pytest.mark.parametrize("name", list(STAGES))
def test_training_components_document_where_they_run(name):
    """Every input of the signature has a row: gpus, nodes and trainjob_overrides were missing."""
    readme = (component_docs.components_root() / name / "README.md").read_text(encoding="utf-8")
    [component] = component_docs.components_of(name)
    for input_name in component.component_spec.inputs:
        assert f"| `{input_name}` |" in readme, input_name
    assert "| `gpus` | int | `-1` | processes in the step's pod" in readme
    assert "| `trainjob_overrides` | list | `[]` |" in readme


def test_a_table_row_comes_from_the_signature_and_docstring():
    @dsl.component(base_image="python:3.11")
    def shout(text: str, data: Input[Dataset], out: Output[Model], times: int = 2, tag: str = ""):
        """Shout.

        Args:
            text: what to say, ``loudly``
            data: a dataset | with a pipe
            out: the result
            times: how often
            tag: a label
        """

    lines = component_docs.tables(shout, "test")
    assert "| `text` | str | (required) | what to say, `loudly` |" in lines
    assert "| `data` | Dataset | (required) | a dataset \\| with a pipe |" in lines
    assert '| `times` | int | `2` | how often |' in lines and '| `tag` | str | `""` | a label |' in lines
    assert "| `out` | Model | the result |" in lines


def test_an_undocumented_input_is_an_error():
    @dsl.component(base_image="python:3.11")
    def quiet(text: str, volume: int = 1):
        """Quiet.

        Args:
            text: what to say
        """

    with pytest.raises(CharopsError, match="quiet has no description of volume"):
        component_docs.tables(quiet, "components/quiet/component.py")
