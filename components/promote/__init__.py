"""charops.components.promote: the promotion gate and promote Kubeflow components (component.py)."""
