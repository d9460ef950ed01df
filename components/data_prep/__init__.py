"""charops.components.data_prep: the data_prep Kubeflow component (component.py)."""
