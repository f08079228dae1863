"""The kubernetes/ folder of `modelmon generate`: schema-valid manifests that carry exactly the
generated rules and dashboards, an exporter pod that finds its config, references and state, and a
kustomization that kubectl renders.

Validation is offline: the built-in kinds against the Kubernetes JSON schemas bundled in the PyPI
package kubernetes-validate (strict: unknown fields fail), the prometheus-operator kinds against
the CRD schemas vendored in tests/fixtures/schemas/ (tightened the same way).
"""
from __future__ import annotations

import copy
import functools
import json
import shutil
import subprocess
from importlib.resources import files
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import latest_version
from referencing import Registry, Resource

from modelmon.config import ConfigError, load_config
from modelmon.contract import EXPORTER_JOB
from modelmon.exporter.cli import add_arguments, check_paths
from modelmon.generate import GENERATED_MARKER, OWNED_DIRS, artefacts, stale_files
from modelmon.kubernetes import config_files, exporter
from modelmon.kubernetes.generate import KUSTOMIZATION, manifests
from modelmon.kubernetes.render import data_key, name
from tests.conftest import REQUIRE_BINARIES, ROOT

KUBE_DIR = ROOT / "kubernetes"
SCHEMAS = ROOT / "tests" / "fixtures" / "schemas"
# The oldest Kubernetes the manifests are checked against, and the newest kubernetes-validate knows.
KUBERNETES_VERSIONS = ("1.29.0", latest_version())
CRD_SCHEMAS = {"PrometheusRule": "prometheusrule-monitoring.coreos.com-v1.json",
               "ServiceMonitor": "servicemonitor-monitoring.coreos.com-v1.json"}


Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@functools.cache
def committed() -> dict[str, dict[str, Any]]:
    """{path relative to kubernetes/: resource} of every committed manifest but the kustomization
    (read once: tests that change a resource change a deep copy)."""
    return {p.relative_to(KUBE_DIR).as_posix(): yaml.load(p.read_text(), Loader=Loader)
            for p in sorted(KUBE_DIR.rglob("*.yaml")) if p.name != "kustomization.yaml"}


# --------------------------------------------------------------------------- schemas


def strict(schema: Any) -> Any:
    """The CRD schema as kubectl's strict field validation applies it: an object schema with
    properties and no additionalProperties accepts no other field, unless the CRD preserves
    unknown fields there."""
    if isinstance(schema, list):
        return [strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: strict(v) if k in ("properties", "items", "additionalProperties", "anyOf", "allOf", "oneOf")
           else v for k, v in schema.items()}
    if "properties" in out:
        out["properties"] = {k: strict(v) for k, v in schema["properties"].items()}
        if "additionalProperties" not in out and not out.get("x-kubernetes-preserve-unknown-fields"):
            out["additionalProperties"] = False
    return out


def _k8s_definitions(version: str) -> dict:
    folder = files("kubernetes_validate") / "kubernetes-json-schema" / f"v{version}-local-strict"
    return json.loads((folder / "_definitions.json").read_text())


def validate_custom_resource(resource: dict, version: str = KUBERNETES_VERSIONS[-1]) -> None:
    """A prometheus-operator resource: its body against the vendored CRD schema (strict), its
    metadata against Kubernetes' ObjectMeta (strict)."""
    schema = strict(json.loads((SCHEMAS / CRD_SCHEMAS[resource["kind"]]).read_text()))
    jsonschema.Draft7Validator(schema).validate(resource)  # CRD schemas are OpenAPI v3 (draft-04/7-like)
    assert resource["apiVersion"] == "monitoring.coreos.com/v1"
    defs = _k8s_definitions(version)
    registry = Resource.from_contents(defs) @ Registry()
    meta = {"$ref": f"{defs['$id']}#/$defs/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"}
    jsonschema.Draft202012Validator(meta, registry=registry).validate(resource["metadata"])


def validate(resource: dict) -> None:
    if resource["kind"] in CRD_SCHEMAS:
        validate_custom_resource(resource)
        return
    for version in KUBERNETES_VERSIONS:
        kubernetes_validate.validate(resource, version, strict=True)


def test_the_crd_schemas_are_vendored_with_their_source():
    readme = (SCHEMAS / "README.md").read_text()
    for kind, file in CRD_SCHEMAS.items():
        assert file in readme
        schema = json.loads((SCHEMAS / file).read_text())
        assert schema["required"] == ["spec"] and "spec" in schema["properties"], kind
    assert "0.82.2" in readme and "0.84.1" in readme  # the operator versions the files came from


@pytest.mark.parametrize("path", sorted(committed()))
def test_every_manifest_is_valid(path):
    validate(committed()[path])


def test_a_misspelt_field_fails_validation():
    """The validation is strict: a typo fails instead of being pruned by the API server."""
    found = committed()
    deployment = copy.deepcopy(found["exporter/deployment.yaml"])
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["paht"] = "/ready"
    with pytest.raises(kubernetes_validate.ValidationError, match="paht"):
        validate(deployment)

    wrong_type = copy.deepcopy(found["exporter/deployment.yaml"])
    wrong_type["spec"]["replicas"] = "one"
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(wrong_type)

    monitor = copy.deepcopy(found["exporter/servicemonitor.yaml"])
    monitor["spec"]["endpoints"][0]["relabelling"] = monitor["spec"]["endpoints"][0].pop("relabelings")
    with pytest.raises(jsonschema.ValidationError, match="relabelling"):
        validate(monitor)

    rule = copy.deepcopy(found["rules/modelmon.yaml"])
    rule["spec"]["groups"][1]["rules"][0]["for"] = "two minutes"  # not a Prometheus duration
    with pytest.raises(jsonschema.ValidationError, match="two minutes"):
        validate(rule)

    no_expr = copy.deepcopy(found["rules/modelmon.yaml"])
    del no_expr["spec"]["groups"][0]["rules"][0]["expr"]
    with pytest.raises(jsonschema.ValidationError, match="expr"):
        validate(no_expr)

    bad_meta = copy.deepcopy(found["rules/modelmon.yaml"])
    bad_meta["metadata"]["label"] = {"release": "prometheus"}
    with pytest.raises(jsonschema.ValidationError, match="label"):
        validate(bad_meta)


# --------------------------------------------------------------------------- generation


def test_the_committed_folder_is_what_generate_writes():
    expected = {p: t for p, t in artefacts(load_config(ROOT / "modelmon.yaml")).items() if p.startswith("kubernetes/")}
    on_disk = {p.relative_to(ROOT).as_posix(): p.read_text() for p in KUBE_DIR.rglob("*") if p.is_file()}
    assert on_disk == expected
    assert all(text.startswith(f"# {GENERATED_MARKER}") for text in expected.values())
    assert "kubernetes" in OWNED_DIRS


def test_check_reports_stale_and_orphan_kubernetes_files(tmp_path):
    config = load_config(ROOT / "modelmon.yaml")
    expected = artefacts(config)
    for rel, text in expected.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    assert stale_files(expected, tmp_path) == []
    (tmp_path / "kubernetes/rules/model-gone.yaml").write_text("kind: PrometheusRule\n")
    deployment = tmp_path / "kubernetes/exporter/deployment.yaml"
    deployment.write_text(deployment.read_text().replace("replicas: 1", "replicas: 2"))
    assert sorted(stale_files(expected, tmp_path)) == [
        ("kubernetes/exporter/deployment.yaml", "stale"),
        ("kubernetes/rules/model-gone.yaml", "orphan (no longer generated)"),
    ]


def test_the_kustomization_lists_every_manifest_and_the_namespace():
    kustomization = yaml.safe_load((ROOT / KUSTOMIZATION).read_text())
    config = load_config(ROOT / "modelmon.yaml")
    assert kustomization["namespace"] == config.kubernetes.namespace
    assert kustomization["resources"] == sorted(committed())
    assert all(r["metadata"]["namespace"] == config.kubernetes.namespace for r in committed().values())
    kinds = sorted(r["kind"] for r in committed().values())
    assert set(kinds) == {"ConfigMap", "Deployment", "PersistentVolumeClaim", "PrometheusRule", "Service",
                          "ServiceMonitor"}


def kubectl_or_skip() -> str:
    path = shutil.which("kubectl")
    if path:
        return path
    msg = "kubectl not found on PATH (install it: apt-get install kubectl, or kubernetes-client on Debian 12)"
    if REQUIRE_BINARIES:
        pytest.fail(msg + "; MODELMON_REQUIRE_BINARIES=1 forbids skipping")
    pytest.skip(msg)


def test_kubectl_kustomize_renders_the_folder():
    kubectl = kubectl_or_skip()
    done = subprocess.run([kubectl, "kustomize", str(KUBE_DIR)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    rendered = [d for d in yaml.load_all(done.stdout, Loader=Loader) if d]
    by_key = {(d["kind"], d["metadata"]["name"]): d for d in rendered}
    expected = {(d["kind"], d["metadata"]["name"]): d for d in committed().values()}
    assert by_key.keys() == expected.keys()
    for key, resource in expected.items():
        assert by_key[key] == resource, key  # nothing added or rewritten but what the files say


# --------------------------------------------------------------------------- rules and dashboards


def test_prometheus_rules_carry_exactly_the_generated_rule_files():
    config = load_config(ROOT / "modelmon.yaml")
    rule_files = sorted((ROOT / "prometheus" / "rules").glob("*.yml"))
    found = {p: r for p, r in committed().items() if r["kind"] == "PrometheusRule"}
    assert sorted(found) == [f"rules/{f.stem}.yaml" for f in rule_files]
    for f in rule_files:
        rule = found[f"rules/{f.stem}.yaml"]
        assert rule["spec"]["groups"] == yaml.safe_load(f.read_text())["groups"]
        assert rule["metadata"]["annotations"]["modelmon.io/source"] == f"prometheus/rules/{f.name}"
        assert config.kubernetes.rule_labels.items() <= rule["metadata"]["labels"].items()


def test_dashboard_config_maps_carry_exactly_the_generated_dashboards():
    config = load_config(ROOT / "modelmon.yaml")
    dashboards = sorted((ROOT / "grafana" / "dashboards").glob("*.json"))
    found = {p: r for p, r in committed().items() if p.startswith("dashboards/")}
    assert sorted(found) == [f"dashboards/{d.stem}.yaml" for d in dashboards]
    for d in dashboards:
        cm = found[f"dashboards/{d.stem}.yaml"]
        assert cm["data"] == {d.name: d.read_text()}
        assert cm["metadata"]["labels"][config.kubernetes.dashboard_label] == "1"
        assert cm["metadata"]["annotations"]["grafana_folder"] == config.grafana.folder
        assert len(json.dumps(cm).encode()) < config_files.CONFIGMAP_MAX_BYTES


# --------------------------------------------------------------------------- the exporter


def test_the_service_monitor_scrapes_the_exporter_service_as_the_expected_job():
    config = load_config(ROOT / "modelmon.yaml")
    found = committed()
    service, monitor = found["exporter/service.yaml"], found["exporter/servicemonitor.yaml"]
    deployment = found["exporter/deployment.yaml"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    endpoint, = monitor["spec"]["endpoints"]
    port, = service["spec"]["ports"]
    assert endpoint["port"] == port["name"] == port["targetPort"] == "metrics"
    container, = deployment["spec"]["template"]["spec"]["containers"]
    assert {"name": "metrics", "containerPort": port["port"], "protocol": "TCP"} in container["ports"]
    # The rules (contract.EXPORTER_JOB) and the dashboards (grafana.job) select this job.
    assert endpoint["relabelings"] == [{"action": "replace", "targetLabel": "job", "replacement": EXPORTER_JOB}]
    assert config.grafana.job == EXPORTER_JOB
    assert config.kubernetes.monitor_labels.items() <= monitor["metadata"]["labels"].items()


def test_the_exporter_pod_runs_serve_as_compose_does_with_its_state_on_the_state_volume(tmp_path):
    config = load_config(ROOT / "modelmon.yaml")
    k = config.kubernetes
    found = committed()
    deployment = found["exporter/deployment.yaml"]
    spec = deployment["spec"]
    pod = spec["template"]["spec"]
    container, = pod["containers"]
    assert spec["replicas"] == 1 and spec["strategy"] == {"type": "Recreate"}
    assert container["image"] == k.image

    import argparse
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert container["args"][0] == "serve"
    args = parser.parse_args(container["args"][1:])  # every flag is one `modelmon serve` takes
    assert args.config == "/etc/modelmon/modelmon.yaml"  # as the Dockerfile and docker-compose.yml
    assert str(args.log) == k.log_path
    assert (args.host, args.port) == ("0.0.0.0", 9188)
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    for state in (args.state_file, args.checkpoint, args.reference_store):
        assert str(state.parent) == exporter.STATE_DIR  # never beside the read-only log
    assert mounts[exporter.STATE_DIR]["name"] == "state" and not mounts[exporter.STATE_DIR].get("readOnly")
    assert volumes["state"]["persistentVolumeClaim"] == {"claimName": "modelmon-state"}
    claim = found["exporter/state.yaml"]
    assert claim["spec"] == {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": k.state_size}}}
    log_mount = mounts[str(args.log.parent)]
    assert log_mount["readOnly"] is True
    assert volumes[log_mount["name"]]["persistentVolumeClaim"] == {"claimName": k.log_claim, "readOnly": True}
    assert mounts["/etc/modelmon"]["readOnly"] is True and mounts["/tmp"]["name"] == "tmp"

    # The flags pass serve's own startup checks once the volumes are there.
    root = tmp_path / "pod"
    relocated = [a.replace("=/", f"={root}/") if a.startswith("--") and "=/" in a else a for a in container["args"][1:]]
    for folder in (exporter.STATE_DIR, str(args.log.parent), "/etc/modelmon"):
        (root / folder.lstrip("/")).mkdir(parents=True)
    check_paths(parser.parse_args(relocated))

    assert container["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "metrics"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert container["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert container["resources"] == {"requests": {"cpu": k.cpu_request, "memory": k.memory_request},
                                      "limits": {"cpu": k.cpu_limit, "memory": k.memory_limit}}


def test_the_exporter_probes_exist_on_the_exporter():
    from modelmon.exporter.server import create_app

    class Stub:
        def readiness(self):
            return True, {"ready": True}

    app = create_app(Stub())
    client = app.test_client()
    assert client.get("/healthz").status_code == 200
    assert client.get("/ready").status_code == 200


def test_the_exporter_runs_as_the_image_user_without_privileges():
    pod = committed()["exporter/deployment.yaml"]["spec"]["template"]["spec"]
    container, = pod["containers"]
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert f"--uid {exporter.UID}" in dockerfile and f"--gid {exporter.GID}" in dockerfile
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == exporter.UID
    assert pod["securityContext"]["fsGroup"] == exporter.GID
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]} and sc["runAsNonRoot"] is True
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False


def materialise(resources: dict[str, dict[str, Any]], root: Path) -> Path:
    """Lay out the config volume as the kubelet would (projected ConfigMap items) under ``root``;
    returns the folder mounted at /etc/modelmon."""
    import base64

    by_name = {r["metadata"]["name"]: r for r in resources.values() if r["kind"] == "ConfigMap"}
    deployment = next(r for r in resources.values() if r["kind"] == "Deployment")
    volume = next(v for v in deployment["spec"]["template"]["spec"]["volumes"] if v["name"] == "config")
    target = root / "etc" / "modelmon"
    for source in volume["projected"]["sources"]:
        cm = by_name[source["configMap"]["name"]]
        for item in source["configMap"]["items"]:
            path = target / item["path"]
            path.parent.mkdir(parents=True, exist_ok=True)
            if item["key"] in cm.get("data", {}):
                path.write_text(cm["data"][item["key"]])
            else:
                path.write_bytes(base64.b64decode(cm["binaryData"][item["key"]]))
    return target


def test_the_pod_finds_its_config_and_every_reference_file(tmp_path):
    config = load_config(ROOT / "modelmon.yaml")
    etc = materialise(committed(), tmp_path)
    assert (etc / "modelmon.yaml").read_text() == (ROOT / "modelmon.yaml").read_text()  # shipped as written
    in_pod = load_config(etc / "modelmon.yaml")
    for mine, theirs in zip(config.models, in_pod.models):
        assert theirs.reference.path.read_bytes() == mine.reference.path.read_bytes()
        assert theirs.reference.path.is_relative_to(etc)


def test_a_config_change_rolls_the_pod(tmp_path):
    cfg = tmp_path / "modelmon.yaml"
    shutil.copy(ROOT / "modelmon.yaml", cfg)
    shutil.copytree(ROOT / "examples", tmp_path / "examples")

    def checksum() -> str:
        pod = manifests(load_config(cfg))["exporter/deployment.yaml"]["spec"]["template"]
        return pod["metadata"]["annotations"][exporter.CHECKSUM_ANNOTATION]

    before = checksum()
    with (tmp_path / "examples/reference/eta.csv").open("a") as f:
        f.write("1.0,1,1,berlin,10.0\n")
    after_reference = checksum()
    cfg.write_text(cfg.read_text() + "\n# edited\n")
    assert len({before, after_reference, checksum()}) == 3


def test_references_outside_the_config_folder_are_shipped_and_the_pod_config_points_at_them(tmp_path):
    refs = tmp_path / "elsewhere"
    refs.mkdir()
    shutil.copy(ROOT / "examples/reference/credit.csv", refs / "credit.csv")
    project = tmp_path / "project"
    (project / "data").mkdir(parents=True)
    shutil.copy(ROOT / "examples/reference/eta.csv", project / "data" / "eta.csv")
    parquet = project / "data" / "segment.parquet"
    import pyarrow.csv
    import pyarrow.parquet
    pyarrow.parquet.write_table(pyarrow.csv.read_csv(ROOT / "examples/reference/segment.csv"), parquet)
    text = (ROOT / "modelmon.yaml").read_text()
    text = text.replace("examples/reference/credit.csv", str(refs / "credit.csv"))
    text = text.replace("examples/reference/eta.csv", "data/eta.csv")
    text = text.replace("examples/reference/segment.csv", "data/segment.parquet")
    (project / "modelmon.yaml").write_text(text)
    config = load_config(project / "modelmon.yaml")

    found = manifests(config)
    for resource in found.values():
        validate(resource)
    assert "exporter/reference-segment.yaml" in found and "binaryData" in found["exporter/reference-segment.yaml"]
    etc = materialise(found, tmp_path / "pod")
    in_pod = load_config(etc / "modelmon.yaml")
    by_name = {m.name: m for m in in_pod.models}
    assert by_name["credit"].reference.path == etc / "references" / "credit" / "credit.csv"
    assert by_name["eta"].reference.path == etc / "data" / "eta.csv"
    assert by_name["segment"].reference.path.read_bytes() == parquet.read_bytes()
    assert by_name["credit"].reference.path.read_bytes() == (refs / "credit.csv").read_bytes()
    assert [m.name for m in in_pod.models] == [m.name for m in config.models]


def test_a_reference_too_large_for_a_config_map_is_one_clear_error(tmp_path):
    text = (ROOT / "modelmon.yaml").read_text().replace("examples/reference/eta.csv", "big.csv")
    (tmp_path / "modelmon.yaml").write_text(text)
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    body = (ROOT / "examples/reference/eta.csv").read_text()
    header, rows = body.split("\n", 1)
    (tmp_path / "big.csv").write_text(header + "\n" + rows * (config_files.CONFIGMAP_MAX_BYTES // len(rows) + 1))
    with pytest.raises(ConfigError, match=r"models\[2\]\.reference: big.csv is \d+ bytes"):
        manifests(load_config(tmp_path / "modelmon.yaml"))


def with_kubernetes_section(tmp_path: Path, section: dict) -> Path:
    """The demo config with ``section`` as its kubernetes section, beside a copy of its references."""
    data = yaml.safe_load((ROOT / "modelmon.yaml").read_text())
    data["kubernetes"] = section
    (tmp_path / "modelmon.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    return tmp_path / "modelmon.yaml"


def test_the_kubernetes_section_of_the_config_reaches_the_manifests(tmp_path):
    cfg = with_kubernetes_section(tmp_path, {
        "namespace": "ml-monitoring", "image": "registry.example/modelmon:1.2.3",
        "log_path": "/logs/model/predictions.jsonl", "log_claim": "model-logs", "state_size": "5Gi",
        "cpu_request": "250m", "memory_request": "1Gi", "cpu_limit": "4", "memory_limit": "3Gi",
        "rule_labels": {"prometheus": "main"}, "monitor_labels": {"team": "ml"}, "dashboard_label": "dashboards"})
    found = manifests(load_config(cfg))
    for resource in found.values():
        validate(resource)
        assert resource["metadata"]["namespace"] == "ml-monitoring"
    pod = found["exporter/deployment.yaml"]["spec"]["template"]["spec"]
    container, = pod["containers"]
    assert container["image"] == "registry.example/modelmon:1.2.3"
    assert "--log=/logs/model/predictions.jsonl" in container["args"]
    assert {"name": "predictions", "mountPath": "/logs/model", "readOnly": True} in container["volumeMounts"]
    assert {"name": "predictions", "persistentVolumeClaim": {"claimName": "model-logs", "readOnly": True}} \
        in pod["volumes"]
    assert container["resources"]["limits"] == {"cpu": "4", "memory": "3Gi"}
    assert found["exporter/state.yaml"]["spec"]["resources"]["requests"]["storage"] == "5Gi"
    assert found["rules/modelmon.yaml"]["metadata"]["labels"]["prometheus"] == "main"
    assert found["exporter/servicemonitor.yaml"]["metadata"]["labels"]["team"] == "ml"
    assert found["dashboards/modelmon-drift.yaml"]["metadata"]["labels"]["dashboards"] == "1"


def test_a_log_path_inside_another_mount_is_refused(tmp_path):
    cfg = with_kubernetes_section(tmp_path, {"log_path": "/var/lib/modelmon/predictions.jsonl"})
    with pytest.raises(exporter.LayoutError, match="kubernetes.log_path"):
        manifests(load_config(cfg))


def test_names_and_keys_are_valid_kubernetes_names():
    assert name("modelmon", "model-credit") == "modelmon-model-credit"
    odd = name("modelmon", "Credit_V2")
    assert odd.startswith("modelmon-credit-v2-") and odd != name("modelmon", "credit-v2")
    assert len(name("x" * 100)) <= 63
    assert data_key("credit.csv") == "credit.csv"
    assert data_key("my file.csv").endswith("-my-file.csv")
