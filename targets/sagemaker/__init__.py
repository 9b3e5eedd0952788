"""specml targets.sagemaker."""
