"""Pipelines: DAGs of executions and tasks (spec.py: what one is; definition.py: from valohai.yaml)."""
