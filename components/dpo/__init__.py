"""charops.components.dpo: the dpo Kubeflow component (component.py)."""
