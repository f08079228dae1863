"""What the native stack runs: a pure function from options and found binaries to a process list.

Nothing here touches the file system or starts anything, so the whole topology (argv, ports,
health checks, log files) is checked by unit tests without a single process.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

# Ports of the compose topology; the generated configs address these (exporter:9188, ...).
DEFAULT_PORTS: dict[str, int] = {
    "exporter": 9188,
    "receiver": 9095,
    "prometheus": 9090,
    "alertmanager": 9093,
    "grafana": 3000,
}

# Demo traffic (seconds per scenario, then loop). Phases outlast the `for:` of the alerts they
# should fire: an error burst first (ModelmonErrorBudgetBurn pages after ~5 minutes of demo), then
# covariate drift (on the Drift dashboard within a minute; the alerts wait their 15m), concept drift
# (quality alerts, 10m), a latency regression (p99 alert, 10m), and a calm end in which they resolve.
# docker-compose.yml uses the same schedule (a test keeps them equal).
DEMO_SCHEDULE = ("stable:120,error_burst:300,stable:120,covariate_drift:1200,concept_drift:900,"
                 "latency_regression:900,stable:300")
# `modelmon stack up --quick`: the whole story in about 20 minutes. Every alert waits 1 minute
# instead of its production `for` and rates span 1 minute, so each phase only has to outlast a
# window turnover (1-2 minutes at the demo rate) plus that minute. Labels may lag at the start.
QUICK_SCHEDULE = ("stable:60,error_burst:180,stable:120,covariate_drift:300,concept_drift:300,"
                  "latency_regression:240,stable:240")
QUICK_FOR = "1m"
QUICK_RATE_WINDOW = "1m"
QUICK_FOR_OVERRIDES = {"ModelmonLabelsNotArriving": "10m"}  # the first labels take a while to come
DEMO_RATE = 50.0  # records per second, all models together
DEMO_ROTATE_BYTES = "100M"  # the endless demo log rotates by rename: at most ~200 MB on disk
DEMO_SEED = 7

# The dashboard Grafana opens on: every model in one view.
HOME_DASHBOARD = "modelmon-overview.json"

APT_HINT = "sudo apt-get install prometheus prometheus-alertmanager"


@dataclass(frozen=True)
class Health:
    """When a started service counts as up: its URL answers 2xx, or its file is non-empty."""

    url: str | None = None
    file: Path | None = None

    def describe(self) -> str:
        return self.url if self.url else f"{self.file} to be written"


@dataclass(frozen=True)
class Service:
    name: str
    argv: tuple[str, ...]
    health: Health
    log: Path
    url: str | None = None  # printed for humans once the stack is up
    env: Mapping[str, str] = field(default_factory=dict)  # added to the runner's environment


@dataclass(frozen=True)
class Layout:
    """Where everything lives inside the work directory."""

    root: Path

    @property
    def etc(self) -> Path:  # rewritten copies of prometheus/, alerting/, grafana/ (rebuilt each run)
        return self.root / "etc"

    @property
    def data(self) -> Path:  # state that survives a restart: TSDB, silences, Grafana db, alert inbox
        return self.root / "data"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def predictions_log(self) -> Path:
        return self.data / "predictions.jsonl"

    @property
    def alerts_db(self) -> Path:
        return self.data / "alerts.db"

    @property
    def prometheus_config(self) -> Path:
        return self.etc / "prometheus" / "prometheus.yml"

    @property
    def alertmanager_config(self) -> Path:
        return self.etc / "alerting" / "alertmanager.yml"

    @property
    def grafana_provisioning(self) -> Path:
        return self.etc / "grafana" / "provisioning"

    @property
    def grafana_dashboards(self) -> Path:
        return self.etc / "grafana" / "dashboards"

    def log_of(self, service: str) -> Path:
        return self.logs / f"{service}.log"

    def data_of(self, service: str) -> Path:
        return self.data / service


@dataclass(frozen=True)
class Binaries:
    """External programs found on this machine (None: not installed)."""

    modelmon: tuple[str, ...]  # how to run our own CLI, e.g. (sys.executable, "-m", "modelmon")
    prometheus: str | None
    alertmanager: str | None
    grafana: tuple[str, ...] | None  # ("grafana", "server") or ("grafana-server",)
    grafana_home: Path | None


@dataclass(frozen=True)
class StackOptions:
    config: Path
    ports: Mapping[str, int]
    schedule: str = DEMO_SCHEDULE
    rate: float = DEMO_RATE
    seed: int = DEMO_SEED
    prometheus: bool = True  # False: only modelmon's own processes (receiver, exporter, traffic)
    grafana: bool = True
    grafana_admin_password: str = "modelmon-demo"


@dataclass(frozen=True)
class Plan:
    services: tuple[Service, ...]
    missing: tuple[str, ...]  # one message per missing program: what it is and how to install it


def find_binaries(which: Callable[[str], str | None], modelmon: tuple[str, ...]) -> Binaries:
    """Look the external programs up with ``which`` (shutil.which in production)."""
    grafana_bin = which("grafana")
    grafana = (grafana_bin, "server") if grafana_bin else None
    if grafana_bin is None:
        grafana_bin = which("grafana-server")  # older packages: the standalone server binary
        grafana = (grafana_bin,) if grafana_bin else None
    home = None
    if grafana_bin:
        # Distribution packages keep Grafana's static files in /usr/share/grafana; a release
        # tarball keeps them next to bin/.
        packaged = Path("/usr/share/grafana")
        home = packaged if packaged.is_dir() else Path(grafana_bin).resolve().parent.parent
    return Binaries(
        modelmon=modelmon,
        prometheus=which("prometheus"),
        alertmanager=which("prometheus-alertmanager") or which("alertmanager"),
        grafana=grafana,
        grafana_home=home,
    )


def plan_stack(options: StackOptions, layout: Layout, binaries: Binaries) -> Plan:
    """The services to start, in start order (each waits for the previous to be healthy)."""
    ports = options.ports
    mm = binaries.modelmon
    services: list[Service] = [
        Service(
            name="receiver",
            argv=(*mm, "receiver", "--host", "127.0.0.1", "--port", str(ports["receiver"]),
                  "--db", str(layout.alerts_db)),
            health=Health(url=f"http://127.0.0.1:{ports['receiver']}/api/alerts"),
            log=layout.log_of("receiver"),
            url=f"http://127.0.0.1:{ports['receiver']}/",
        ),
        Service(
            name="exporter",
            # No --from-start: the exporter starts before the log exists (so reads it from 0 when it
            # appears), and on a restart its offset file resumes where it stopped instead of
            # replaying the whole log as a burst of "new" predictions.
            argv=(*mm, "serve", "--config", str(options.config), "--log", str(layout.predictions_log),
                  "--host", "127.0.0.1", "--port", str(ports["exporter"])),
            health=Health(url=f"http://127.0.0.1:{ports['exporter']}/healthz"),
            log=layout.log_of("exporter"),
            url=f"http://127.0.0.1:{ports['exporter']}/metrics",
        ),
        Service(
            name="traffic",
            argv=(*mm, "simulate", "--out", str(layout.predictions_log), "--rate", f"{options.rate:g}",
                  "--seed", str(options.seed), "--schedule", options.schedule, "--loop",
                  "--rotate-bytes", DEMO_ROTATE_BYTES),
            health=Health(file=layout.predictions_log),
            log=layout.log_of("traffic"),
        ),
    ]
    missing: list[str] = []
    if options.prometheus:
        if binaries.alertmanager:
            am = ports["alertmanager"]
            services.append(Service(
                name="alertmanager",
                argv=(binaries.alertmanager,
                      f"--config.file={layout.alertmanager_config}",
                      f"--storage.path={layout.data_of('alertmanager')}",
                      f"--web.listen-address=127.0.0.1:{am}",
                      f"--web.external-url=http://127.0.0.1:{am}",
                      "--cluster.listen-address="),  # a single instance: no gossip port
                health=Health(url=f"http://127.0.0.1:{am}/-/ready"),
                log=layout.log_of("alertmanager"),
                url=f"http://127.0.0.1:{am}",
            ))
        else:
            missing.append("Alertmanager is not installed (no `prometheus-alertmanager` or `alertmanager` "
                           f"on PATH): alerts will not be routed to the inbox. Install it: {APT_HINT}")
        if binaries.prometheus:
            pr = ports["prometheus"]
            services.append(Service(
                name="prometheus",
                argv=(binaries.prometheus,
                      f"--config.file={layout.prometheus_config}",
                      f"--storage.tsdb.path={layout.data_of('prometheus')}",
                      f"--web.listen-address=127.0.0.1:{pr}",
                      f"--web.external-url=http://127.0.0.1:{pr}"),
                health=Health(url=f"http://127.0.0.1:{pr}/-/ready"),
                log=layout.log_of("prometheus"),
                url=f"http://127.0.0.1:{pr}",
            ))
        else:
            missing.append("Prometheus is not installed (no `prometheus` on PATH): nothing scrapes the "
                           f"exporter, no rules or alerts are evaluated. Install it: {APT_HINT}")
    if options.grafana:
        if binaries.grafana and binaries.grafana_home:
            services.append(_grafana(options, layout, binaries))
        else:
            missing.append("Grafana is not installed (no `grafana` or `grafana-server` on PATH): the "
                           "dashboards are not served. Run `docker compose up` for the stack with Grafana, "
                           "or install Grafana from its APT repository (grafana.com/docs/grafana/latest/setup-grafana/installation/debian/).")
    return Plan(services=tuple(services), missing=tuple(missing))


def _grafana(options: StackOptions, layout: Layout, binaries: Binaries) -> Service:
    gf = options.ports["grafana"]
    assert binaries.grafana and binaries.grafana_home
    return Service(
        name="grafana",
        argv=(*binaries.grafana, f"--homepath={binaries.grafana_home}"),
        health=Health(url=f"http://127.0.0.1:{gf}/api/health"),
        log=layout.log_of("grafana"),
        url=f"http://127.0.0.1:{gf}",
        # The same settings as the grafana service of docker-compose.yml, by environment.
        env={
            "GF_PATHS_DATA": str(layout.data_of("grafana")),
            "GF_PATHS_LOGS": str(layout.logs / "grafana"),
            "GF_PATHS_PLUGINS": str(layout.data_of("grafana") / "plugins"),
            "GF_PATHS_PROVISIONING": str(layout.grafana_provisioning),
            "GF_SERVER_HTTP_ADDR": "127.0.0.1",
            "GF_SERVER_HTTP_PORT": str(gf),
            "GF_SERVER_ROOT_URL": f"http://127.0.0.1:{gf}",
            "GF_SECURITY_ADMIN_USER": "admin",
            "GF_SECURITY_ADMIN_PASSWORD": options.grafana_admin_password,
            "GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH": str(layout.grafana_dashboards / HOME_DASHBOARD),
            "GF_AUTH_ANONYMOUS_ENABLED": "true",
            "GF_AUTH_ANONYMOUS_ORG_ROLE": "Viewer",
            "GF_USERS_ALLOW_SIGN_UP": "false",
            "GF_ANALYTICS_REPORTING_ENABLED": "false",
            "GF_ANALYTICS_CHECK_FOR_UPDATES": "false",
            "GF_NEWS_NEWS_FEED_ENABLED": "false",
        },
    )
