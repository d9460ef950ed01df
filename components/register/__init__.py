"""charops.components.register: the register Kubeflow component (component.py)."""
