"""charops.components.pretrain: the pretrain Kubeflow component (component.py)."""
