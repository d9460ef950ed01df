"""charops.components.reward: the reward-model Kubeflow component (component.py)."""
