"""charops.components.sft: the sft Kubeflow component (component.py)."""
