"""The Kubernetes part of `modelmon generate`: the kubernetes/ folder, from the same config and the
same generated rules and dashboards as the rest of the stack.

One module a job:

- ``render``: deterministic YAML with the do-not-edit header, and Kubernetes object names;
- ``meta``: the labels and object metadata every resource shares;
- ``rules``: one PrometheusRule per generated rule file (prometheus/rules/*.yml, parsed, not re-derived);
- ``dashboards``: one ConfigMap per generated dashboard, labelled for the Grafana sidecar;
- ``config_files``: the ConfigMaps holding modelmon.yaml and its reference files, as the pod reads them;
- ``exporter``: the exporter's Deployment, Service and state volume claim;
- ``monitor``: the ServiceMonitor that scrapes it as the job the rules and dashboards select;
- ``generate``: all of it, plus kustomization.yaml (`artefacts`).
"""
