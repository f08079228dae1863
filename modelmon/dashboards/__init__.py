"""Grafana dashboards as code: grafanalib builders (one module per dashboard), provisioning
files, and the HTTP API client behind `modelmon dashboards push`."""
