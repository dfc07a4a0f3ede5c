"""vh-orch: a self-hosted orchestrator for machine-learning executions defined in valohai.yaml."""

__version__ = "0.1.0"
