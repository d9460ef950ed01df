"""charops.components.evaluate: the evaluate Kubeflow component (component.py)."""
