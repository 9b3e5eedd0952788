"""The pipeline steps: one plain function per IR step kind (see runtime/contract.py)."""
