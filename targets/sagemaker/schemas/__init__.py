"""JSON Schemas shipped with the SageMaker target (a package so wheels include the *.json)."""
