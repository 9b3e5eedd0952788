"""specml targets.kubeflow."""
