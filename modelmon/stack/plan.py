"""What the native stack runs: the topology (modelmon/stack/topology.py) rendered for this machine.

A pure function from options and found binaries to a process list: nothing here touches the file
system or starts anything, so the whole plan (argv, ports, health checks, log files) is checked by
unit tests without a single process.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

from modelmon.stack.errors import StackError
from modelmon.stack.topology import (
    ALERTMANAGER, DEFAULT_GRAFANA_PASSWORD, DEMO_RATE, DEMO_SCHEDULE, DEMO_SEED, FILE, GRAFANA, MODELMON, PROMETHEUS,
    REDIS, Demo, FileProbe, Layout, NativeTarget, Node, RedisProbe, services,
)

# `modelmon stack up --quick`: the whole story in about 20 minutes. Every alert waits 1 minute
# instead of its production `for` and rates span 1 minute, so each phase only has to outlast a
# window turnover (1-2 minutes at the demo rate) plus that minute. Labels may lag at the start.
QUICK_SCHEDULE = ("stable:60,error_burst:180,stable:120,covariate_drift:300,concept_drift:300,"
                  "latency_regression:240,stable:240")
QUICK_FOR = "1m"
QUICK_RATE_WINDOW = "1m"
QUICK_ALERT_WINDOW = "2m"  # quality and drift alerts read the recorded series over this window
QUICK_FOR_OVERRIDES = {"ModelmonLabelsNotArriving": "10m"}  # the first labels take a while to come

APT_HINT = "sudo apt-get install prometheus prometheus-alertmanager"
REDIS_MISSING = ("--ingest stream needs redis-server, which is not on PATH: install it (sudo apt-get install "
                 "redis-server), or choose --ingest file or --ingest http")


@dataclass(frozen=True)
class Health:
    """When a started service counts as up: its URL answers 2xx, or its file is non-empty (and,
    with max_age, changed within that many seconds)."""

    url: str | None = None
    file: Path | None = None
    max_age: float | None = None
    redis: str | None = None  # a redis:// URL that must answer PING

    def describe(self) -> str:
        if self.redis:
            return f"{self.redis} to answer PING"
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
class Binaries:
    """External programs found on this machine (None: not installed)."""

    modelmon: tuple[str, ...]  # how to run our own CLI, e.g. (sys.executable, "-m", "modelmon")
    prometheus: str | None
    alertmanager: str | None
    grafana: tuple[str, ...] | None  # ("grafana", "server") or ("grafana-server",)
    grafana_home: Path | None
    redis: str | None = None  # redis-server, for --ingest stream


@dataclass(frozen=True)
class StackOptions:
    config: Path
    ports: Mapping[str, int]
    schedule: str = DEMO_SCHEDULE
    rate: float = DEMO_RATE
    seed: int = DEMO_SEED
    prometheus: bool = True  # False: only modelmon's own processes (receiver, exporter, traffic)
    grafana: bool = True
    grafana_admin_password: str = DEFAULT_GRAFANA_PASSWORD
    ingest: str = FILE  # how the demo traffic reaches the exporter: file, http or stream


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
        redis=which("redis-server"),
    )


MISSING = {
    ALERTMANAGER: "Alertmanager is not installed (no `prometheus-alertmanager` or `alertmanager` on PATH): alerts "
                  f"will not be routed to the inbox. Install it: {APT_HINT}",
    PROMETHEUS: "Prometheus is not installed (no `prometheus` on PATH): nothing scrapes the exporter, no rules or "
                f"alerts are evaluated. Install it: {APT_HINT}",
    GRAFANA: "Grafana is not installed (no `grafana` or `grafana-server` on PATH): the dashboards are not served. "
             "Run `docker compose up` for the stack with Grafana, or install Grafana from its APT repository "
             "(grafana.com/docs/grafana/latest/setup-grafana/installation/debian/).",
}


def native_target(options: StackOptions, layout: Layout) -> NativeTarget:
    return NativeTarget(ports=options.ports, layout=layout, config=options.config,
                        grafana_admin_password=options.grafana_admin_password)


def plan_stack(options: StackOptions, layout: Layout, binaries: Binaries) -> Plan:
    """The topology rendered for this machine: the services to start, in start order (each waits
    for the previous to be healthy), and what is missing."""
    wanted = {PROMETHEUS: options.prometheus, ALERTMANAGER: options.prometheus,
              GRAFANA: options.grafana, MODELMON: True, REDIS: True}
    programs: dict[str, tuple[str, ...] | None] = {
        MODELMON: binaries.modelmon,
        PROMETHEUS: (binaries.prometheus,) if binaries.prometheus else None,
        ALERTMANAGER: (binaries.alertmanager,) if binaries.alertmanager else None,
        GRAFANA: (*binaries.grafana, f"--homepath={binaries.grafana_home}")
        if binaries.grafana and binaries.grafana_home else None,
        REDIS: (binaries.redis,) if binaries.redis else None,
    }
    demo = Demo(schedule=options.schedule, rate=options.rate, seed=options.seed)
    out: list[Service] = []
    missing: list[str] = []
    with_grafana = options.grafana and programs[GRAFANA] is not None
    for node in services(native_target(options, layout), demo, grafana=with_grafana, ingest=options.ingest):
        if not wanted[node.program]:
            continue
        program = programs[node.program]
        if program is None and node.program == REDIS:  # the way in itself: nothing to run without it
            raise StackError(REDIS_MISSING)
        if program is None:
            missing.append(MISSING[node.program])
            continue
        out.append(Service(name=node.name, argv=(*program, *node.args), health=_health(node), log=layout.log_of(node.name),
                           url=node.url, env=dict(node.env)))
    return Plan(services=tuple(out), missing=tuple(missing))


def _health(node: Node) -> Health:
    if isinstance(node.probe, RedisProbe):
        return Health(redis=f"redis://127.0.0.1:{node.port}/0")
    if isinstance(node.probe, FileProbe):
        return Health(file=Path(node.probe.path), max_age=node.probe.max_age)
    return Health(url=f"http://127.0.0.1:{node.port}{node.probe.path}")
