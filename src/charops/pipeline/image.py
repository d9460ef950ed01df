"""The one charops container image that every component runs in.

Components name it as their ``base_image``; the Dockerfile at the repository root builds it,
tagged with the package version. Point pipelines at your own registry with ``CHAROPS_IMAGE``
when compiling::

    CHAROPS_IMAGE=registry.example.com/ml/charops:0.1.0 charops compile ...
    python -c "from charops.pipeline.image import default_image; print(default_image())"
"""

from __future__ import annotations

import os

import charops

DEFAULT_REPOSITORY = "ghcr.io/charops/charops"


def default_image() -> str:
    """``$CHAROPS_IMAGE`` if set, else ``ghcr.io/charops/charops:<charops version>``."""
    return os.environ.get("CHAROPS_IMAGE") or f"{DEFAULT_REPOSITORY}:{charops.__version__}"
