"""The stack's one topology: its services, their arguments, ports, files, start order and health checks.

Written once, here, and rendered for a *target*:

- ``ComposeTarget`` -> ``docker-compose.yml`` (written by `modelmon generate`, checked by
  `generate --check`): services reach each other by name (``exporter:9188``), listen on 0.0.0.0,
  and see their files at container paths under their mounts;
- ``NativeTarget`` -> the process plan of `modelmon stack up`: every service on 127.0.0.1 at the
  port chosen for it, its files in the work directory (``Layout``).

The configs the services read are rendered for the same target by ``render_configs``: the
Prometheus scrape and Alertmanager targets, Grafana's datasource URL and dashboard folder,
Alertmanager's secrets folder, and every URL of modelmon.yaml that names a service of the
topology (``http://receiver:9095/webhook``, ``http://localhost:3000``). Hosts, ports and paths are
parameters of the rendering; no generated text is rewritten afterwards.
"""
from __future__ import annotations

import dataclasses
import os
import posixpath
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import urlsplit, urlunsplit

import yaml

from modelmon import __version__
from modelmon.contract import OVERVIEW_UID

# --------------------------------------------------------------------------- services and their ports

# The listen port of each service in the compose topology, in start order (each service starts
# once the ones it depends on are healthy). The native stack uses them too when they are free.
DEFAULT_PORTS: dict[str, int] = {
    "redis": 6379,  # only with --ingest stream
    "exporter": 9188,
    "receiver": 9095,
    "prometheus": 9090,
    "alertmanager": 9093,
    "grafana": 3000,
}

MODELMON, PROMETHEUS, ALERTMANAGER, GRAFANA, REDIS = "modelmon", "prometheus", "alertmanager", "grafana", "redis"
# Container images of docker-compose.yml; ours is built from the Dockerfile.
IMAGES = {
    MODELMON: f"modelmon:{__version__}",
    REDIS: "redis:7.4.1",
    PROMETHEUS: "prom/prometheus:v2.53.2",
    ALERTMANAGER: "prom/alertmanager:v0.27.0",
    GRAFANA: "grafana/grafana-oss:11.2.2",
}
RETENTION = "7d"  # Prometheus TSDB retention, on both targets
HOME_DASHBOARD = f"{OVERVIEW_UID}.json"  # the dashboard Grafana opens on: every model in one view
DEFAULT_GRAFANA_PASSWORD = "modelmon-demo"
COMPOSE_CONFIG = "/etc/modelmon/modelmon.yaml"  # where the exporter container sees modelmon.yaml

# Demo traffic (seconds per scenario, then loop). Phases outlast the `for:` of the alerts they
# should fire: an error burst first (ModelmonErrorBudgetBurn pages after ~5 minutes of demo), then
# covariate drift (on the Drift dashboard within a minute; the alerts wait their 15m), concept drift
# (quality alerts, 10m), a harmless then a harmful covariate shift whose labels come 20-30 minutes
# late (estimated quality stays, then falls before any label of the shift; the realized quality
# follows once the labels land), a latency regression (p99 alert, 10m), and a calm end in which
# they resolve.
DEMO_SCHEDULE = ("stable:120,error_burst:300,stable:120,covariate_drift:1200,concept_drift:900,"
                 "covariate_shift_harmless:900,covariate_shift_harmful:1800,latency_regression:900,stable:300")
DEMO_DELAYED_LABELS = "uniform:20m..30m"  # the shifted phases' labels: late, but within one demo loop
DEMO_RATE = 50.0  # records per second, all models together
DEMO_ROTATE_BYTES = "100M"  # the endless demo log rotates by rename: at most ~200 MB on disk
DEMO_SEED = 7
TRAFFIC_FRESH_SECONDS = 30  # the traffic service is healthy while its log changed this recently

# How the demo traffic reaches the exporter (`modelmon stack up --ingest`, docker-compose.<mode>.yml):
# a log file it follows, POST /ingest through the Python client, or a Redis Stream it consumes as a
# member of a consumer group.
FILE, HTTP, STREAM = "file", "http", "stream"
INGEST_MODES = (FILE, HTTP, STREAM)
DEMO_STREAM, DEMO_GROUP, DEMO_CONSUMER = "predictions", "modelmon", "exporter"  # a fixed consumer name: a
# recreated container (new host name) resumes the same consumer's pending entries at once
DEMO_STREAM_MAXLEN = 100_000  # ~33 min of demo traffic: a bound on Redis' memory, 10x the lag alert
HEARTBEAT = "traffic.heartbeat"  # rewritten by the traffic while the exporter or Redis takes its records
EXPORTER_CHECKPOINT = "exporter.modelmon-checkpoint"  # the exporter's windows without a log to sit beside


@dataclass(frozen=True)
class Demo:
    """What the traffic service plays."""

    schedule: str = DEMO_SCHEDULE
    rate: float = DEMO_RATE
    seed: int = DEMO_SEED
    rotate_bytes: str = DEMO_ROTATE_BYTES


# --------------------------------------------------------------------------- files

BIND, VOLUME = "bind", "volume"


@dataclass(frozen=True)
class Mount:
    """A folder or file a service reads or keeps state in.

    ``bind``: a file of the project (``source`` relative to the project root), mounted read-only
    in compose; the native stack keeps its rendered copy at ``etc/<source>`` of the work dir.
    ``volume``: state in a named compose volume; natively the folder ``native`` of the work dir.
    """

    source: str
    container: str
    kind: str = BIND
    native: str = ""

    @property
    def native_path(self) -> str:
        return self.native or f"etc/{self.source}"

    @property
    def compose_spec(self) -> str:
        if self.kind == BIND:
            return f"./{self.source}:{self.container}:ro"
        return f"{self.source}:{self.container}"


PREDICTIONS = Mount("predictions", "/data", VOLUME, native="data")
ALERTS = Mount("alerts", "/data", VOLUME, native="data")
REDIS_DATA = Mount("redis-data", "/data", VOLUME, native="data/redis")
PROMETHEUS_CONFIG = Mount("prometheus/prometheus.yml", "/etc/prometheus/prometheus.yml")
PROMETHEUS_RULES = Mount("prometheus/rules", "/etc/prometheus/rules")
PROMETHEUS_DATA = Mount("prometheus-data", "/prometheus", VOLUME, native="data/prometheus")
ALERTMANAGER_CONFIG = Mount("alerting/alertmanager.yml", "/etc/alertmanager/alertmanager.yml")
# *_env secrets of the receivers, one file per variable (see modelmon.alerting.alertmanager).
ALERTMANAGER_SECRETS = Mount("secrets", "/etc/alertmanager/secrets")
ALERTMANAGER_DATA = Mount("alertmanager-data", "/alertmanager", VOLUME, native="data/alertmanager")
GRAFANA_PROVISIONING = Mount("grafana/provisioning", "/etc/grafana/provisioning")
GRAFANA_DASHBOARDS = Mount("grafana/dashboards", "/etc/grafana/dashboards/modelmon")
GRAFANA_DATA = Mount("grafana-data", "/var/lib/grafana", VOLUME, native="data/grafana")
GRAFANA_LOGS_IN_CONTAINER = "/var/log/grafana"


def config_mounts(config: Any = None) -> tuple[Mount, ...]:
    """modelmon.yaml and the folders of its reference files, as the exporter container sees them.

    Paths are taken relative to the config's folder, which is the project root (docker-compose.yml
    sits next to modelmon.yaml): the config at ``/etc/modelmon/modelmon.yaml``, a reference file
    ``examples/reference/x.csv`` in ``/etc/modelmon/examples/reference``, where the config's
    relative path finds it. Mounted, not baked into the image: an edit takes effect on restart.
    """
    path = getattr(config, "path", None)
    base = Path(path).resolve().parent if path is not None else Path.cwd()
    mounts = [Mount(Path(path).name if path is not None else "modelmon.yaml", COMPOSE_CONFIG)]
    sources: list[str] = []
    for model in getattr(config, "models", ()):
        ref = model.reference.path
        if ref is None:
            continue
        ref = Path(ref).resolve()
        # The folder of the file, or the file itself when it sits next to modelmon.yaml (the
        # project folder is not mounted whole).
        source = Path(os.path.relpath(ref.parent if ref.parent != base else ref, base)).as_posix()
        if source not in sources:
            sources.append(source)
    container_dir = posixpath.dirname(COMPOSE_CONFIG)
    mounts += [Mount(s, posixpath.normpath(posixpath.join(container_dir, s))) for s in sources]
    return tuple(mounts)


# --------------------------------------------------------------------------- targets


class Target:
    """Where the topology runs: how services listen, reach each other, and find their files."""

    name: str
    listen_host: str
    config_file: str  # the --config of the exporter
    config_mounts: tuple[Mount, ...] = ()  # how the exporter gets modelmon.yaml and its reference data
    grafana_admin_password: str

    def port(self, service: str) -> int:
        raise NotImplementedError

    def address(self, service: str) -> str:
        """host:port at which the other services reach ``service``."""
        raise NotImplementedError

    def public_url(self, service: str) -> str:
        """The URL a person opens for ``service``."""
        raise NotImplementedError

    def path(self, mount: Mount, *parts: str) -> str:
        raise NotImplementedError

    def grafana_logs(self) -> str:
        raise NotImplementedError

    def resolve_url(self, url: str) -> str:
        """A URL of modelmon.yaml rendered for this target (modelmon.yaml is written for compose)."""
        return url


@dataclass(frozen=True)
class ComposeTarget(Target):
    config_mounts: tuple[Mount, ...] = field(default_factory=config_mounts)
    name: str = "compose"
    listen_host: str = "0.0.0.0"
    config_file: str = COMPOSE_CONFIG
    # Interpolated by docker compose from the environment or an .env file.
    grafana_admin_password: str = f"${{GRAFANA_ADMIN_PASSWORD:-{DEFAULT_GRAFANA_PASSWORD}}}"

    def port(self, service: str) -> int:
        return DEFAULT_PORTS[service]

    def address(self, service: str) -> str:
        return f"{service}:{DEFAULT_PORTS[service]}"

    def public_url(self, service: str) -> str:
        return f"http://localhost:{DEFAULT_PORTS[service]}"  # published on the host's loopback

    def path(self, mount: Mount, *parts: str) -> str:
        return posixpath.join(mount.container, *parts)

    def grafana_logs(self) -> str:
        return GRAFANA_LOGS_IN_CONTAINER


@dataclass(frozen=True)
class Layout:
    """Where the native stack keeps everything, inside its work directory."""

    root: Path

    @property
    def etc(self) -> Path:  # configs rendered for the native target (rebuilt each run)
        return self.root / "etc"

    @property
    def data(self) -> Path:  # state that survives a restart: TSDB, silences, Grafana db, alert inbox
        return self.root / "data"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    def at(self, mount: Mount, *parts: str) -> Path:
        return self.root.joinpath(mount.native_path, *parts)

    @property
    def predictions_log(self) -> Path:
        return self.at(PREDICTIONS, "predictions.jsonl")

    @property
    def alerts_db(self) -> Path:
        return self.at(ALERTS, "alerts.db")

    @property
    def prometheus_config(self) -> Path:
        return self.at(PROMETHEUS_CONFIG)

    @property
    def alertmanager_config(self) -> Path:
        return self.at(ALERTMANAGER_CONFIG)

    @property
    def alertmanager_secrets(self) -> Path:
        return self.at(ALERTMANAGER_SECRETS)

    @property
    def grafana_provisioning(self) -> Path:
        return self.at(GRAFANA_PROVISIONING)

    @property
    def grafana_dashboards(self) -> Path:
        return self.at(GRAFANA_DASHBOARDS)

    def log_of(self, service: str) -> Path:
        return self.logs / f"{service}.log"

    def data_of(self, service: str) -> Path:
        return self.data / service


@dataclass(frozen=True)
class NativeTarget(Target):
    ports: Mapping[str, int]
    layout: Layout
    config: Path  # modelmon.yaml read in place: its reference paths resolve against its folder
    grafana_admin_password: str = DEFAULT_GRAFANA_PASSWORD
    name: str = "native"
    listen_host: str = "127.0.0.1"

    @property
    def config_file(self) -> str:  # type: ignore[override]
        return str(self.config)

    def port(self, service: str) -> int:
        return self.ports[service]

    def address(self, service: str) -> str:
        return f"127.0.0.1:{self.ports[service]}"

    def public_url(self, service: str) -> str:
        return f"http://{self.address(service)}"

    def path(self, mount: Mount, *parts: str) -> str:
        return str(self.layout.at(mount, *parts))

    def grafana_logs(self) -> str:
        return str(self.layout.logs / "grafana")

    def resolve_url(self, url: str) -> str:
        """``http://receiver:9095/x``, ``http://localhost:3000`` or ``http://127.0.0.1:9095`` (a
        service of the topology by its compose name, or on the loopback at its compose port)
        -> the same URL at 127.0.0.1 and the port chosen for that service. Other URLs as given."""
        try:
            parts = urlsplit(url)
            host, port = parts.hostname, parts.port
        except ValueError:
            return url
        if parts.scheme not in ("http", "https") or port is None or "@" in parts.netloc:
            return url
        for service, default in DEFAULT_PORTS.items():
            if port == default and host in (service, "localhost", "127.0.0.1"):
                return urlunsplit((parts.scheme, self.address(service), parts.path, parts.query, parts.fragment))
        return url


# --------------------------------------------------------------------------- the services


@dataclass(frozen=True)
class HttpProbe:
    """Healthy when GET <the service's own port><path> answers 2xx."""

    path: str


@dataclass(frozen=True)
class FileProbe:
    """Healthy while the file is non-empty and changed within ``max_age`` seconds."""

    path: str
    max_age: float


@dataclass(frozen=True)
class RedisProbe:
    """Healthy when the Redis server on the service's own port answers PING."""


@dataclass(frozen=True)
class Node:
    """One service of the topology, rendered for a target."""

    name: str
    program: str  # MODELMON (our CLI; args start with its subcommand), PROMETHEUS, ALERTMANAGER, GRAFANA
    args: tuple[str, ...]
    probe: HttpProbe | FileProbe | RedisProbe
    port: int | None = None  # where it listens
    published: bool = False  # compose: reachable from the host (on 127.0.0.1 only)
    mounts: tuple[Mount, ...] = ()
    depends_on: tuple[str, ...] = ()  # started after these are healthy
    env: Mapping[str, str] = field(default_factory=dict)
    url: str | None = None  # what a person opens, when the service has a face


def stream_url(t: Target, *, consumer: bool) -> str:
    """The demo stream on the topology's Redis; the exporter's URL names its group and consumer."""
    url = f"redis://{t.address('redis')}/0?stream={DEMO_STREAM}"
    return url + (f"&group={DEMO_GROUP}&consumer={DEMO_CONSUMER}" if consumer else "")


def services(t: Target, demo: Demo = Demo(), grafana: bool = True, ingest: str = FILE) -> tuple[Node, ...]:
    """The topology for target ``t``, in start order (each service after its dependencies).
    ``grafana=False``: no Grafana will run (the native stack without it), so the inbox says so
    instead of linking to dashboards nobody serves. ``ingest``: how the demo traffic reaches the
    exporter (INGEST_MODES); ``stream`` adds a Redis server, started before the exporter."""
    if ingest not in INGEST_MODES:
        raise ValueError(f"ingest must be one of {', '.join(INGEST_MODES)}, got {ingest!r}")
    log = t.path(PREDICTIONS, "predictions.jsonl")

    def listen(service: str) -> tuple[str, str]:
        return f"--host={t.listen_host}", f"--port={t.port(service)}"

    grafana_env = {
        "GF_PATHS_DATA": t.path(GRAFANA_DATA),
        "GF_PATHS_LOGS": t.grafana_logs(),
        "GF_PATHS_PLUGINS": t.path(GRAFANA_DATA, "plugins"),
        "GF_PATHS_PROVISIONING": t.path(GRAFANA_PROVISIONING),
        "GF_SERVER_HTTP_ADDR": t.listen_host,
        "GF_SERVER_HTTP_PORT": str(t.port("grafana")),
        "GF_SERVER_ROOT_URL": t.public_url("grafana"),
        "GF_SECURITY_ADMIN_USER": "admin",
        "GF_SECURITY_ADMIN_PASSWORD": t.grafana_admin_password,
        "GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH": t.path(GRAFANA_DASHBOARDS, HOME_DASHBOARD),
        "GF_AUTH_ANONYMOUS_ENABLED": "true",
        "GF_AUTH_ANONYMOUS_ORG_ROLE": "Viewer",
        "GF_USERS_ALLOW_SIGN_UP": "false",
        "GF_ANALYTICS_REPORTING_ENABLED": "false",
        "GF_ANALYTICS_CHECK_FOR_UPDATES": "false",
        "GF_NEWS_NEWS_FEED_ENABLED": "false",
    }
    return (
        Node("receiver", MODELMON,
             ("receiver", *listen("receiver"), f"--db={t.path(ALERTS, 'alerts.db')}",
              *(() if grafana else ("--grafana-url=none",))),
             HttpProbe("/healthz"), port=t.port("receiver"), published=True, mounts=(ALERTS,),
             url=t.public_url("receiver") + "/"),
        *_ingest_nodes(t, demo, ingest, log, listen("exporter")),
        Node("alertmanager", ALERTMANAGER,
             (f"--config.file={t.path(ALERTMANAGER_CONFIG)}",
              f"--storage.path={t.path(ALERTMANAGER_DATA)}",
              f"--web.listen-address={t.listen_host}:{t.port('alertmanager')}",
              f"--web.external-url={t.public_url('alertmanager')}",
              "--cluster.listen-address="),  # a single instance: no gossip port
             HttpProbe("/-/ready"), port=t.port("alertmanager"), published=True,
             mounts=(ALERTMANAGER_CONFIG, ALERTMANAGER_SECRETS, ALERTMANAGER_DATA), depends_on=("receiver",),
             url=t.public_url("alertmanager")),
        Node("prometheus", PROMETHEUS,
             (f"--config.file={t.path(PROMETHEUS_CONFIG)}",
              f"--storage.tsdb.path={t.path(PROMETHEUS_DATA)}",
              f"--storage.tsdb.retention.time={RETENTION}",
              f"--web.listen-address={t.listen_host}:{t.port('prometheus')}",
              f"--web.external-url={t.public_url('prometheus')}"),
             HttpProbe("/-/ready"), port=t.port("prometheus"), published=True,
             mounts=(PROMETHEUS_CONFIG, PROMETHEUS_RULES, PROMETHEUS_DATA), depends_on=("exporter", "alertmanager"),
             url=t.public_url("prometheus")),
        Node("grafana", GRAFANA, (), HttpProbe("/api/health"), port=t.port("grafana"), published=True,
             mounts=(GRAFANA_PROVISIONING, GRAFANA_DASHBOARDS, GRAFANA_DATA), depends_on=("prometheus",),
             env=grafana_env, url=t.public_url("grafana")),
    )


def _ingest_nodes(t: Target, demo: Demo, ingest: str, log: str, listen: tuple[str, str]) -> tuple[Node, ...]:
    """The exporter and the demo traffic (and Redis for the stream), for one way in."""
    plays = (f"--rate={demo.rate:g}", f"--seed={demo.seed}", f"--schedule={demo.schedule}", "--loop")
    late = (f"--delayed-label-delay={DEMO_DELAYED_LABELS}",)
    exporter_url = t.public_url("exporter") + "/metrics"
    config_mounts = (PREDICTIONS, *t.config_mounts)
    if ingest == FILE:
        return (
            # No --from-start: the exporter starts before the log exists (so reads it from 0 when it
            # appears), and on a restart its offset file resumes where it stopped instead of
            # replaying the whole log as a burst of "new" predictions.
            Node("exporter", MODELMON,
                 ("serve", f"--config={t.config_file}", f"--log={log}", *listen),
                 HttpProbe("/healthz"), port=t.port("exporter"), mounts=config_mounts, url=exporter_url),
            # After the exporter, which then follows the log from its first line (with no offset file
            # it would otherwise start at the end, like tail -F, and skip what was written).
            Node("traffic", MODELMON,
                 ("simulate", f"--out={log}", *plays, f"--rotate-bytes={demo.rotate_bytes}", *late),
                 FileProbe(log, TRAFFIC_FRESH_SECONDS), mounts=(PREDICTIONS,), depends_on=("exporter",)),
        )
    # Without a log the exporter keeps its windows in an explicit checkpoint (with the stream, saved
    # after acknowledgements); the traffic's heartbeat says its records are being taken.
    checkpoint = f"--checkpoint={t.path(PREDICTIONS, EXPORTER_CHECKPOINT)}"
    heartbeat = t.path(PREDICTIONS, HEARTBEAT)
    traffic_probe = FileProbe(heartbeat, TRAFFIC_FRESH_SECONDS)
    if ingest == HTTP:
        return (
            Node("exporter", MODELMON, ("serve", f"--config={t.config_file}", checkpoint, *listen),
                 HttpProbe("/healthz"), port=t.port("exporter"), mounts=config_mounts, url=exporter_url),
            Node("traffic", MODELMON,
                 ("simulate", f"--post=http://{t.address('exporter')}/ingest", f"--heartbeat={heartbeat}",
                  *plays, *late),
                 traffic_probe, mounts=(PREDICTIONS,), depends_on=("exporter",)),
        )
    return (
        # Append-only file in its data folder (a compose restart of Redis keeps the stream and the
        # group's acknowledgements); no RDB snapshots. The stream's length is capped by the traffic.
        Node("redis", REDIS,
             ("--port", str(t.port("redis")), "--bind", t.listen_host, "--dir", t.path(REDIS_DATA),
              "--appendonly", "yes", "--save", ""),
             RedisProbe(), port=t.port("redis"), mounts=(REDIS_DATA,)),
        Node("exporter", MODELMON,
             ("serve", f"--config={t.config_file}", f"--stream={stream_url(t, consumer=True)}", checkpoint, *listen),
             HttpProbe("/healthz"), port=t.port("exporter"), mounts=config_mounts, depends_on=("redis",),
             url=exporter_url),
        Node("traffic", MODELMON,
             ("simulate", f"--stream={stream_url(t, consumer=False)}", f"--stream-maxlen={DEMO_STREAM_MAXLEN}",
              f"--heartbeat={heartbeat}", *plays, *late),
             traffic_probe, mounts=(PREDICTIONS,), depends_on=("redis", "exporter")),
    )


# --------------------------------------------------------------------------- configs for a target


def for_target(config: Any, target: Target) -> Any:
    """The config with each URL of its alerting and grafana sections rendered for ``target``
    (webhook URLs, runbook and dashboard links, the Grafana URL)."""
    def walk(value: Any) -> Any:
        if isinstance(value, str):
            return target.resolve_url(value) if value.startswith(("http://", "https://")) else value
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            changes = {f.name: walk(getattr(value, f.name)) for f in dataclasses.fields(value) if f.init}
            changed = {k: v for k, v in changes.items() if v is not getattr(value, k)}
            return dataclasses.replace(value, **changed) if changed else value
        if isinstance(value, dict):
            out = {k: walk(v) for k, v in value.items()}
            return out if any(out[k] is not value[k] for k in value) else value
        if isinstance(value, (tuple, list)):
            out = [walk(v) for v in value]
            return type(value)(out) if any(a is not b for a, b in zip(out, value)) else value
        return value

    return dataclasses.replace(config, alerting=walk(config.alerting), grafana=walk(config.grafana))


def target_files(config: Any, target: Target) -> dict[str, str]:
    """The generated files that hold addresses or paths, rendered for ``target``; the committed
    ones are these for the compose target (a test keeps them equal)."""
    from modelmon.alerting.alertmanager import AlertmanagerOptions, alertmanager_config
    from modelmon.alerting.generate import ALERTMANAGER_FILE, PROMETHEUS_DIR
    from modelmon.alerting.prometheus_config import PrometheusOptions, ScrapeTargets, prometheus_config
    from modelmon.alerting.render import dump_yaml
    from modelmon.dashboards.provisioning import provisioning_files

    prometheus = PrometheusOptions(targets=ScrapeTargets(
        exporter=target.address("exporter"), prometheus=target.address("prometheus"),
        alertmanager=target.address("alertmanager")))
    files = {
        f"{PROMETHEUS_DIR}/prometheus.yml": dump_yaml(prometheus_config(prometheus)),
        ALERTMANAGER_FILE: dump_yaml(alertmanager_config(
            config, AlertmanagerOptions(secrets_dir=target.path(ALERTMANAGER_SECRETS)))),
    }
    files.update(provisioning_files(config, prometheus_url=f"http://{target.address('prometheus')}",
                                    dashboards_dir=target.path(GRAFANA_DASHBOARDS)))
    return files


def render_configs(config: Any, target: Target, rules: Any = None) -> dict[str, str]:
    """Every generated file, rendered for ``target``. ``rules`` (RuleOptions) as for `generate`."""
    from modelmon.generate import artefacts

    config = for_target(config, target)
    return {**artefacts(config, rules=rules), **target_files(config, target)}


# --------------------------------------------------------------------------- docker-compose.yml

COMPOSE_FILE = "docker-compose.yml"
COMPOSE_HEALTHCHECK_TIMING = {"interval": "10s", "timeout": "5s", "retries": 6, "start_period": "30s"}
COMPOSE_HEADER = """\
# generated by modelmon generate — do not edit.
# The topology lives in modelmon/stack/topology.py (the one `modelmon stack up` runs natively);
# the mounts of modelmon.yaml and its reference data come from modelmon.yaml. Run `modelmon generate`.
#
# modelmon demo stack: `docker compose up`, then open http://localhost:3000 (anonymous viewer).
#
#   traffic ──writes──> /data/predictions.jsonl ──tails──> exporter:9188 <──scrapes── prometheus:9090
#   prometheus ──alerts──> alertmanager:9093 ──webhook──> receiver:9095      grafana:3000 ──queries── prometheus
#
# The service names are part of the contract: the generated prometheus/prometheus.yml and
# alerting/alertmanager.yml address exporter:9188, alertmanager:9093 and receiver:9095, and the
# Grafana datasource addresses prometheus:9090.
#
# - Published ports are bound to 127.0.0.1 only: Grafana's admin password is a demo default. Set
#   GRAFANA_ADMIN_PASSWORD (environment or .env file) before exposing Grafana anywhere else.
# - modelmon.yaml and its reference data are mounted read-only from this folder, not baked into
#   the image: after an edit, `modelmon generate` and `docker compose up -d` (or `docker compose
#   restart exporter` when only the exporter's settings changed); no --build.
# - ./secrets is Alertmanager's /etc/alertmanager/secrets: one file per *_env variable of the
#   receivers (`make compose-secrets` writes them from the environment), readable by the
#   Alertmanager image's user (nobody, uid 65534).
# - The demo traffic loops through the schedule of `make demo` and rotates its log by rename at
#   100 MB (at most ~200 MB on disk).
# - The traffic through POST /ingest or a Redis Stream instead of the log: add the override,
#   `docker compose -f docker-compose.yml -f docker-compose.stream.yml up` (or docker-compose.http.yml).
"""


class _Dumper(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:  # repeated values written out, never as &anchors
        return True

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> Any:
        return super().increase_indent(flow, False)


class _Flow(list):
    """A list written on one line, ["CMD", "wget", ...], as people write a healthcheck."""


_Dumper.add_representer(type(None), lambda d, _: d.represent_scalar("tag:yaml.org,2002:null", ""))
_Dumper.add_representer(_Flow, lambda d, data: yaml.SequenceNode(
    "tag:yaml.org,2002:seq", [d.represent_scalar("tag:yaml.org,2002:str", str(x), style='"') for x in data],
    flow_style=True))


def _compose_healthcheck(node: Node) -> dict[str, Any]:
    probe = node.probe
    if isinstance(probe, RedisProbe):  # the redis image has redis-cli
        return {"test": _Flow(["CMD", "redis-cli", "-p", str(node.port), "ping"]), **COMPOSE_HEALTHCHECK_TIMING}
    if isinstance(probe, FileProbe):
        code = (f"import os, sys, time; sys.exit(time.time() - os.path.getmtime({probe.path!r}) > "
                f"{probe.max_age:g})")
        test = ["CMD", "python", "-c", code]
    elif node.program == MODELMON:  # our image has python, no curl or wget
        url = f"http://127.0.0.1:{node.port}{probe.path}"
        test = ["CMD", "python", "-c", f"import urllib.request; urllib.request.urlopen({url!r}, timeout=4)"]
    else:  # the upstream images have busybox wget
        test = ["CMD", "wget", "-q", "--spider", f"http://127.0.0.1:{node.port}{probe.path}"]
    return {"test": _Flow(test), **COMPOSE_HEALTHCHECK_TIMING}


def compose_document(config: Any = None, ingest: str = FILE) -> dict[str, Any]:
    """The whole compose project for one way in (docker-compose.yml is the file one)."""
    target = ComposeTarget(config_mounts=config_mounts(config))
    out: dict[str, Any] = {}
    volumes: dict[str, None] = {}
    for node in services(target, ingest=ingest):
        svc: dict[str, Any] = {}
        if node.program == MODELMON:
            svc["build"] = {"context": ".", "dockerfile": "Dockerfile"}
            svc["image"] = IMAGES[MODELMON]
            svc["init"] = True  # PID 1 forwards SIGTERM, so `docker compose down` stops Python promptly
        else:
            svc["image"] = IMAGES[node.program]
        svc["restart"] = "unless-stopped"
        if node.args:
            svc["command"] = list(node.args)
        if node.env:
            svc["environment"] = dict(node.env)
        if node.mounts:
            svc["volumes"] = [m.compose_spec for m in node.mounts]
            volumes.update({m.source: None for m in node.mounts if m.kind == VOLUME})
        if node.port is not None:
            if node.published:
                svc["ports"] = [f"127.0.0.1:{node.port}:{node.port}"]
            else:
                svc["expose"] = [str(node.port)]
        svc["healthcheck"] = _compose_healthcheck(node)
        if node.depends_on:
            svc["depends_on"] = {dep: {"condition": "service_healthy"} for dep in node.depends_on}
        out[node.name] = svc
    return {"services": out, "volumes": volumes}


def compose_text(config: Any = None) -> str:
    return COMPOSE_HEADER + "\n" + _dump(compose_document(config))


# --------------------------------------------------------------------------- docker-compose.<mode>.yml

COMPOSE_OVERRIDES = {HTTP: "docker-compose.http.yml", STREAM: "docker-compose.stream.yml"}
# Lists compose merges entry by entry across files (an override can add entries, never take one away).
COMPOSE_MERGED_LISTS = ("volumes", "ports", "expose")
OVERRIDE_HEADERS = {
    HTTP: """\
# generated by modelmon generate — do not edit (modelmon/stack/topology.py, like docker-compose.yml).
#
# The demo stack with its traffic posted to the exporter's POST /ingest through the Python client
# (modelmon.client.PredictionLogger) instead of a log file:
#
#   docker compose -f docker-compose.yml -f docker-compose.http.yml up
#
#   traffic ──POST /ingest (NDJSON, gzip)──> exporter:9188 <──scrapes── prometheus:9090 ...
#
# What changes against docker-compose.yml: the exporter reads no log (it keeps its windows in
# /data/exporter.modelmon-checkpoint), and the traffic is healthy while the exporter takes its
# records (its client rewrites /data/traffic.heartbeat). /ingest has no token here: the exporter
# is not published, only the compose network reaches it. `modelmon stack up --ingest http` is the
# same topology without Docker.
""",
    STREAM: """\
# generated by modelmon generate — do not edit (modelmon/stack/topology.py, like docker-compose.yml).
#
# The demo stack with its traffic through a Redis Stream that the exporter consumes as a member of a
# consumer group, instead of a log file:
#
#   docker compose -f docker-compose.yml -f docker-compose.stream.yml up
#
#   traffic ──XADD──> redis:6379 stream "predictions" ──XREADGROUP/XACK (group "modelmon")──> exporter:9188
#
# What changes against docker-compose.yml: a redis service (not published; append-only file in the
# redis-data volume, so a Redis restart keeps the stream and the group's acknowledgements), the
# exporter consumes the stream (consumer "exporter": a recreated container resumes its pending
# entries) and keeps its windows in /data/exporter.modelmon-checkpoint, and the traffic caps the
# stream at about 100000 entries (XADD MAXLEN ~) and is healthy while Redis takes its records.
# `modelmon stack up --ingest stream` is the same topology without Docker.
""",
}


def compose_override(config: Any, ingest: str) -> dict[str, Any]:
    """What docker-compose.<ingest>.yml adds to docker-compose.yml: the services the way in brings,
    and per changed service the keys whose value differs, whole. Refuses a topology an override
    cannot express (a service, key or list entry of the file topology taken away)."""
    base, mode = compose_document(config, FILE), compose_document(config, ingest)
    gone = set(base["services"]) - set(mode["services"])
    if gone:
        raise ValueError(f"--ingest {ingest}: an override cannot remove the services {sorted(gone)}")
    out: dict[str, Any] = {}
    for name, svc in mode["services"].items():
        old = base["services"].get(name)
        if old is None:
            out[name] = svc
            continue
        dropped = set(old) - set(svc)
        if dropped:
            raise ValueError(f"--ingest {ingest}: service {name} loses {sorted(dropped)}, which an override cannot")
        for key in COMPOSE_MERGED_LISTS:
            if key in old and not set(old[key]) <= set(svc[key]):
                raise ValueError(f"--ingest {ingest}: service {name} drops {key} entries, which an override cannot")
        changed = {key: value for key, value in svc.items() if old.get(key) != value}
        if changed:
            out[name] = changed
    document: dict[str, Any] = {"services": out}
    volumes = {v: None for v in mode["volumes"] if v not in base["volumes"]}
    if volumes:
        document["volumes"] = volumes
    return document


def _dump(document: dict[str, Any]) -> str:
    return yaml.dump(document, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=1 << 16,
                     default_flow_style=False)


def compose_override_text(config: Any, ingest: str) -> str:
    return OVERRIDE_HEADERS[ingest] + "\n" + _dump(compose_override(config, ingest))


def artefacts(config: Any) -> dict[str, str]:
    """The topology's part of `modelmon generate`: docker-compose.yml and its overrides per way in."""
    return {COMPOSE_FILE: compose_text(config),
            **{name: compose_override_text(config, ingest) for ingest, name in COMPOSE_OVERRIDES.items()}}
