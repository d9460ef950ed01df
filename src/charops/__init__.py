"""charops: train and serve character role-play chat models (CharacterGLM recipe) on Kubernetes.

The library does the work; the CLI (``charops``), the Kubeflow components and the pipelines are
thin wrappers around it. Every stage is a plain ``run(config)`` function::

    python -m charops.data.prepare --help
    charops --help
"""

__version__ = "0.1.0"
