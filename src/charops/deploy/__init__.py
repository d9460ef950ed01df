"""Cluster side of charops: the Kubernetes API client, KServe serving, Kubeflow Trainer jobs.

* ``charops.deploy.kube``: a small Kubernetes API client (kube config or in-cluster), the only
  place charops talks to the API server; its calls are what the Role in manifests/ grants.
* ``charops.deploy.inference`` / ``charops.deploy.cluster``: ``charops deploy`` / ``rollback``
  (render, create or patch, wait for Ready, canary).
* ``charops.deploy.trainjob``: multi-node training as a Kubeflow Trainer TrainJob.

Stage code (``charops.train``, ``charops.data``, ...) never imports this package.
"""
