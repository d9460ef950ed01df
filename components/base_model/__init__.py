"""charops.components.base_model: the base_model Kubeflow component (component.py)."""
