"""modelmon: observability for ML models in production, on Prometheus, Grafana and Alertmanager."""
__version__ = "0.1.0"
