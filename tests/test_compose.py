"""docker-compose.yml and the Dockerfile, checked without a Docker engine.

docker-compose.yml is generated from the topology (modelmon/stack/topology.py) by `modelmon
generate`. It is validated by docker-compose itself and against the compose specification's
JSON schema; its structure (pinned images, healthchecks, ports, volumes) and its agreement with
the generated Prometheus, Alertmanager and Grafana files are checked by reading them.
"""
from __future__ import annotations

import copy
import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import jsonschema
import pytest
import yaml

from conftest import ROOT, which_or_skip
from modelmon.config import load_config
from modelmon.stack.topology import DEFAULT_PORTS, DEMO_RATE, DEMO_ROTATE_BYTES, DEMO_SCHEDULE, HOME_DASHBOARD

COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
SERVICES = {"traffic", "exporter", "receiver", "alertmanager", "prometheus", "grafana"}
OUR_IMAGE = {"traffic", "exporter", "receiver"}  # built from the Dockerfile
# What may be published, and only on the loopback interface (Grafana's admin password is a demo default).
PUBLISHED = {"grafana": 3000, "prometheus": 9090, "alertmanager": 9093, "receiver": 9095}


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def services(compose) -> dict:
    return compose["services"]


def command_options(argv: list[str]) -> dict[str, str]:
    """['serve', '--log=/x', '--from-start'] -> {'--log': '/x', '--from-start': ''}."""
    return dict(a.partition("=")[::2] for a in argv if a.startswith("--"))


# --------------------------------------------------------------------------- validation


def test_docker_compose_accepts_the_file():
    exe = which_or_skip("docker-compose")
    out = subprocess.run([exe, "-f", str(COMPOSE_FILE), "config", "-q"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr


@pytest.fixture(scope="module")
def compose_spec_validator():
    """The compose-spec JSON schema shipped with the docker-compose package (found through the
    interpreter docker-compose runs on), as a jsonschema validator."""
    exe = which_or_skip("docker-compose")
    shebang = Path(exe).read_text(errors="replace").splitlines()[0]
    python = shebang[2:].strip().split()[0] if shebang.startswith("#!") else sys.executable
    out = subprocess.run([python, "-c", "import compose.config, os; print(os.path.dirname(compose.config.__file__))"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, f"cannot locate the compose package of {exe}: {out.stderr}"
    schema = json.loads((Path(out.stdout.strip()) / "compose_spec.json").read_text())
    assert "draft/2019-09" in schema["$schema"]
    jsonschema.Draft201909Validator.check_schema(schema)
    return jsonschema.Draft201909Validator(schema)


def test_the_file_follows_the_compose_specification(compose, compose_spec_validator):
    errors = sorted(compose_spec_validator.iter_errors(compose), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{'/'.join(map(str, e.path))}: {e.message}" for e in errors)


def test_the_schema_check_catches_mistakes(compose, compose_spec_validator):
    broken = copy.deepcopy(compose)
    broken["services"]["exporter"]["healthcheck"]["intervall"] = "5s"
    broken["services"]["grafana"]["depends_on"]["prometheus"]["condition"] = "service_ready"
    paths = {"/".join(map(str, e.path)) for e in compose_spec_validator.iter_errors(broken)}
    assert {"services/exporter/healthcheck", "services/grafana/depends_on"} <= paths


# --------------------------------------------------------------------------- structure


def test_the_services_are_the_ones_the_generated_configs_address(services):
    assert set(services) == SERVICES


def test_images_are_pinned(services):
    for name, svc in services.items():
        image = svc.get("image", "")
        repo, _, tag = image.rpartition(":")
        assert repo and tag and tag != "latest" and re.search(r"\d", tag), f"{name}: unpinned image {image!r}"
        assert "build" in svc or repo.startswith(("prom/", "grafana/")), f"{name}: unexpected image {image!r}"
    for name in OUR_IMAGE:
        assert services[name]["build"] == {"context": ".", "dockerfile": "Dockerfile"}
    # One tag for the three services of our image: built once, not three different images.
    assert len({services[n]["image"] for n in OUR_IMAGE}) == 1


def test_every_service_has_a_healthcheck_on_its_own_port(services):
    for name, svc in services.items():
        test = svc["healthcheck"]["test"]
        assert test[0] == "CMD", f"{name}: exec-form healthcheck expected (no shell needed)"
        probe = " ".join(test[1:])
        if name in OUR_IMAGE:
            assert test[1] == "python", f"{name}: our image has no curl/wget; probe with python"
        else:
            assert test[1:3] == ["wget", "-q"], f"{name}: busybox wget is what the upstream image has"
        if name in DEFAULT_PORTS:
            assert f"127.0.0.1:{DEFAULT_PORTS[name]}/" in probe, f"{name}: probe on the wrong port: {probe}"
    assert "/-/ready" in " ".join(services["prometheus"]["healthcheck"]["test"])
    assert "/api/health" in " ".join(services["grafana"]["healthcheck"]["test"])


def test_start_order_waits_for_health(services):
    expected = {
        "traffic": {"exporter"},        # the exporter follows the log before its first line: nothing skipped
        "alertmanager": {"receiver"},
        "prometheus": {"exporter", "alertmanager"},
        "grafana": {"prometheus"},
    }
    for name, svc in services.items():
        deps = svc.get("depends_on", {})
        assert set(deps) == expected.get(name, set()), name
        assert all(d == {"condition": "service_healthy"} for d in deps.values()), name


def test_ports_are_published_only_where_intended_and_only_on_loopback(services):
    for name, svc in services.items():
        ports = svc.get("ports", [])
        if name not in PUBLISHED:
            assert not ports, f"{name} must not publish ports"
            continue
        port = PUBLISHED[name]
        assert ports == [f"127.0.0.1:{port}:{port}"], f"{name}: {ports}"


def test_volumes_are_named_or_mount_files_of_the_repository(compose, services):
    declared = set(compose["volumes"])
    used = set()
    for name, svc in services.items():
        for spec in svc.get("volumes", []):
            source, target, *mode = spec.split(":")
            if source.startswith("."):
                path = ROOT / source
                # Generated by `modelmon generate`; a missing file would become an empty directory.
                assert path.exists(), f"{name} mounts {source}, which does not exist (run `modelmon generate`)"
                assert mode == ["ro"], f"{name}: config mount {source} must be read-only"
                assert path.is_dir() == (not Path(target).suffix), f"{name}: {source} -> {target} file/dir mismatch"
            else:
                assert source in declared, f"{name}: volume {source} is not declared"
                used.add(source)
    assert used == declared  # no orphans


def test_the_exporter_reads_what_the_traffic_writes(services):
    exporter, traffic = services["exporter"], services["traffic"]
    assert exporter["command"][0] == "serve" and traffic["command"][0] == "simulate"
    ex, tr = command_options(exporter["command"]), command_options(traffic["command"])
    assert ex["--config"] == "/etc/modelmon/modelmon.yaml"
    assert ex["--host"] == "0.0.0.0" and ex["--port"] == "9188"
    assert ex["--log"] == tr["--out"] == "/data/predictions.jsonl"
    assert exporter["volumes"][0] == traffic["volumes"][0] == "predictions:/data"
    assert traffic["volumes"] == ["predictions:/data"]
    # The same demo as `make demo`.
    assert "--loop" in tr and tr["--schedule"] == DEMO_SCHEDULE and float(tr["--rate"]) == DEMO_RATE
    assert tr["--rotate-bytes"] == DEMO_ROTATE_BYTES  # same bounded demo log as `make demo`

    rc = command_options(services["receiver"]["command"])
    assert services["receiver"]["command"][0] == "receiver"
    assert rc == {"--host": "0.0.0.0", "--port": "9095", "--db": "/data/alerts.db"}


def test_grafana_is_open_to_anonymous_viewers_with_a_configurable_admin_password(services):
    env = services["grafana"]["environment"]
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "true"
    assert env["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"  # never Admin or Editor
    assert env["GF_SECURITY_ADMIN_PASSWORD"].startswith("${GRAFANA_ADMIN_PASSWORD:-")


def test_grafana_opens_on_the_overview_dashboard(services):
    home = services["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert Path(home).name == HOME_DASHBOARD  # the same home as the native stack's Grafana
    source = in_container(home, services["grafana"])
    assert source is not None and source.is_file(), f"{home} is not a mounted dashboard"


def test_the_admin_password_comes_from_the_environment():
    exe = which_or_skip("docker-compose")
    out = subprocess.run([exe, "-f", str(COMPOSE_FILE), "config"], cwd=ROOT, capture_output=True, text=True,
                         timeout=60, env={"PATH": "/usr/bin:/bin", "GRAFANA_ADMIN_PASSWORD": "s3cret-x"})
    assert out.returncode == 0, out.stderr
    resolved = yaml.safe_load(out.stdout)["services"]["grafana"]["environment"]
    assert resolved["GF_SECURITY_ADMIN_PASSWORD"] == "s3cret-x"


# --------------------------------------------------------------------------- agreement with the generated configs


def mounts(svc: dict) -> dict[str, Path]:
    """Container path -> repository path of the service's bind mounts."""
    out = {}
    for spec in svc.get("volumes", []):
        source, target, *_ = spec.split(":")
        if source.startswith("."):
            out[target] = ROOT / source
    return out


def in_container(path: str, svc: dict) -> Path | None:
    """The repository file behind a container path, through the service's bind mounts."""
    for target, source in sorted(mounts(svc).items(), key=lambda kv: -len(kv[0])):
        if path == target:
            return source
        if path.startswith(target.rstrip("/") + "/"):
            return source / path[len(target.rstrip("/")) + 1:]
    return None


def host_ports(urls_or_targets: list[str]) -> set[tuple[str, int]]:
    out = set()
    for t in urls_or_targets:
        parts = urlsplit(t if "://" in t else f"http://{t}")
        out.add((parts.hostname, parts.port))
    return out


def test_prometheus_config_addresses_the_compose_services(services):
    prom_svc = services["prometheus"]
    config_path = command_options(prom_svc["command"])["--config.file"]
    config = yaml.safe_load(in_container(config_path, prom_svc).read_text())
    targets = [t for job in config["scrape_configs"] for sc in job.get("static_configs", []) for t in sc["targets"]]
    assert ("exporter", 9188) in host_ports(targets)
    am_targets = [t for am in config["alerting"]["alertmanagers"] for sc in am["static_configs"] for t in sc["targets"]]
    assert host_ports(am_targets) == {("alertmanager", 9093)}
    # Every rule glob resolves, inside the container, to the mounted rules directory, and finds rules.
    config_dir = str(Path(config_path).parent)
    for pattern in config.get("rule_files", []):
        full = pattern if pattern.startswith("/") else f"{config_dir}/{pattern}"
        source = in_container(full, prom_svc)
        assert source is not None, f"rule_files {pattern!r} is outside the mounts of the prometheus service"
        assert list(source.parent.glob(source.name)), f"rule_files {pattern!r} matches no file in the repository"


def test_alertmanager_sends_to_the_receiver_service(services):
    am_svc = services["alertmanager"]
    config = yaml.safe_load(in_container(command_options(am_svc["command"])["--config.file"], am_svc).read_text())
    urls = [w["url"] for r in config["receivers"] for w in r.get("webhook_configs", [])]
    assert urls, "no webhook receiver in alerting/alertmanager.yml"
    # 127.0.0.1 inside the alertmanager container is the alertmanager itself: the inbox is `receiver`.
    assert ("receiver", 9095) in host_ports(urls), urls


def test_grafana_provisioning_matches_the_mounts(services):
    gf = services["grafana"]
    provisioning = in_container("/etc/grafana/provisioning", gf)
    datasources = [ds for f in sorted((provisioning / "datasources").glob("*.y*ml"))
                   for ds in yaml.safe_load(f.read_text()).get("datasources", [])]
    prometheus = [ds for ds in datasources if ds["type"] == "prometheus"]
    assert prometheus and all(host_ports([ds["url"]]) == {("prometheus", 9090)} for ds in prometheus)
    providers = [p for f in sorted((provisioning / "dashboards").glob("*.y*ml"))
                 for p in yaml.safe_load(f.read_text()).get("providers", [])]
    assert providers
    for provider in providers:
        source = in_container(provider["options"]["path"], gf)
        assert source is not None and list(source.glob("*.json")), \
            f"dashboard provider path {provider['options']['path']} holds no mounted dashboard"


def test_the_config_and_its_reference_data_are_mounted_not_baked(services):
    """An edited modelmon.yaml (or reference file) takes effect on restart, without --build: the
    exporter's --config and every reference path of the config resolve, through its mounts, to
    the repository's files."""
    exporter = services["exporter"]
    config_in_container = command_options(exporter["command"])["--config"]
    assert in_container(config_in_container, exporter) == ROOT / "modelmon.yaml"
    config = load_config(ROOT / "modelmon.yaml")
    references = [m.reference.path for m in config.models if m.reference.path is not None]
    assert references
    for path in references:
        relative = Path(path).resolve().relative_to(ROOT).as_posix()
        container = f"{Path(config_in_container).parent}/{relative}"
        assert in_container(container, exporter) == ROOT / relative, f"{relative} is not mounted"
    assert not [arg for kw, arg in dockerfile_instructions() if kw == "COPY" and "modelmon.yaml" in arg]


def test_alertmanager_finds_env_secrets_in_the_mounted_secrets_folder(services):
    from modelmon.alerting.alertmanager import SECRETS_DIR

    am = services["alertmanager"]
    assert in_container(f"{SECRETS_DIR}/SOME_ENV", am) == ROOT / "secrets" / "SOME_ENV"
    assert (ROOT / "secrets").is_dir()
    ignored = (ROOT / "secrets" / ".gitignore").read_text().split()
    assert "*" in ignored and "!.gitignore" in ignored  # secrets are never committed


def test_the_compose_file_is_the_topology_rendered_for_compose():
    from modelmon.stack.topology import COMPOSE_FILE, artefacts

    text = (ROOT / COMPOSE_FILE).read_text()
    assert text.startswith("# generated by modelmon generate — do not edit.")
    # The overrides per way in (docker-compose.<mode>.yml) are checked in tests/test_compose_overrides.py.
    assert artefacts(load_config(ROOT / "modelmon.yaml"))[COMPOSE_FILE] == text


def test_the_native_stack_starts_in_an_order_compose_allows(services):
    """Compose starts each service after its dependencies are healthy; the native stack starts
    them one by one in the topology's order, which must list every dependency first."""
    from modelmon.stack.topology import ComposeTarget
    from modelmon.stack.topology import services as topology

    order = [n.name for n in topology(ComposeTarget())]
    assert order == list(services)
    for name, svc in services.items():
        for dep in svc.get("depends_on", {}):
            assert order.index(dep) < order.index(name), f"{name} starts before its dependency {dep}"


# --------------------------------------------------------------------------- Dockerfile


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            out.append((keyword.upper(), rest.strip()))
    return out


def test_base_image_is_pinned_to_a_patch_release():
    froms = [arg for kw, arg in dockerfile_instructions() if kw == "FROM"]
    assert froms == ["python:3.11.11-slim-bookworm"]
    assert re.fullmatch(r"python:3\.11\.\d+-slim-\w+", froms[0])


def test_runs_as_an_unprivileged_user_with_a_healthcheck():
    ins = dockerfile_instructions()
    users = [arg for kw, arg in ins if kw == "USER"]
    assert users and users[-1] not in ("root", "0") and not users[-1].startswith("0:")
    health = [arg for kw, arg in ins if kw == "HEALTHCHECK"]
    assert len(health) == 1 and "CMD" in health[0] and "/healthz" in health[0]
    assert ("EXPOSE", "9188") in ins
    entry = [json.loads(arg) for kw, arg in ins if kw == "ENTRYPOINT"]
    assert entry == [["modelmon"]]  # compose commands are subcommands: serve, simulate, receiver


def test_builds_from_the_projects_own_files_only():
    ins = dockerfile_instructions()
    assert not [arg for kw, arg in ins if kw == "ADD"], "ADD can fetch URLs and unpack archives; use COPY"
    ignore = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
              if line.strip() and not line.startswith("#")]
    assert ignore[0] == "*", ".dockerignore should be an allow-list: deny everything first"
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    for kw, arg in ins:
        if kw == "COPY":
            *sources, _dest = shlex.split(arg)
            for src in sources:
                assert not src.startswith("--"), f"COPY {arg}: no --from / external stages"
                assert "://" not in src and ".." not in src, f"COPY {arg}"
                assert src.rstrip("/") in allowed, f"COPY source {src} is excluded by .dockerignore"
                assert (ROOT / src).exists(), f"COPY source {src} missing"
        if kw == "RUN":
            assert not re.search(r"https?://|git\+|curl |wget ", arg), f"RUN fetches from outside: {arg}"
            for install in re.findall(r"pip install ([^&;]*)", arg):
                words = [w for w in shlex.split(install) if not w.startswith("--")]
                assert words in (["."], ["-r", "/tmp/requirements.txt"]), f"pip installs something else: {install}"


def test_the_dependency_layer_installs_exactly_pyprojects_dependencies(tmp_path):
    """Run the Dockerfile's requirements one-liner here: it must print pyproject's dependencies."""
    import tomllib

    run = next(arg for kw, arg in dockerfile_instructions() if kw == "RUN" and "tomllib" in arg)
    words = shlex.split(run.split(">")[0])
    assert words[:2] == ["python", "-c"]
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    out = subprocess.run([sys.executable, "-c", words[2]], cwd=tmp_path, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    expected = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert out.stdout.split("\n")[:-1] == expected and expected
