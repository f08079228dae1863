"""Bring a Grafana in line with the generated dashboards: folder, datasource, dashboards.

Each dashboard is compared with what Grafana stores (minus the ``id`` and ``version`` Grafana
manages) and only saved when it differs, so a repeated push is a no-op. A dry run without a
readable Grafana lists what a push would send (``planned``), without comparing.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Callable

from modelmon.dashboards.client import GrafanaClient, GrafanaError

CREATED, UPDATED, UNCHANGED, EXISTS = "created", "updated", "unchanged", "exists"
PUSHED = "pushed"  # a dry run that could not read Grafana: would be sent, created or updated


@dataclass(frozen=True)
class Outcome:
    kind: str  # folder | datasource | dashboard
    uid: str
    title: str
    action: str  # created | updated | unchanged | exists | skipped
    detail: str = ""

    def line(self, dry_run: bool) -> str:
        action = f"would be {self.action}" if dry_run and self.action in (CREATED, UPDATED, PUSHED) else self.action
        text = f"{self.kind} {self.uid} ({self.title}): {action}"
        return f"{text} — {self.detail}" if self.detail else text


def comparable(dashboard: dict[str, Any]) -> dict[str, Any]:
    """The dashboard without the fields Grafana assigns on save."""
    out = copy.deepcopy(dashboard)
    out.pop("id", None)
    out.pop("version", None)
    return out


def ensure_folder(client: GrafanaClient, uid: str, title: str, dry_run: bool) -> Outcome:
    if client.get_folder(uid) is not None:
        return Outcome("folder", uid, title, EXISTS)
    if not dry_run:
        try:
            client.create_folder(uid, title)
        except GrafanaError as e:
            # A retried POST may have succeeded the first time; only a real conflict is an error.
            if e.status != 409 or client.get_folder(uid) is None:
                raise
    return Outcome("folder", uid, title, CREATED)


def ensure_datasource(client: GrafanaClient, definition: dict[str, Any], dry_run: bool) -> Outcome:
    uid, name = definition["uid"], definition["name"]
    try:
        existing = client.get_datasource(uid)
    except GrafanaError as e:
        if e.status == 403:
            # Editors may push dashboards but not read datasource settings; carry on.
            return Outcome("datasource", uid, name, "skipped",
                           "no permission to read datasources (needs Admin); assuming it exists")
        raise
    if existing is not None:
        detail = "" if existing.get("type") == "prometheus" else f"type is {existing.get('type')!r}, not prometheus"
        return Outcome("datasource", uid, existing.get("name", name), EXISTS, detail)
    if not dry_run:
        try:
            client.create_datasource(definition)
        except GrafanaError as e:
            if e.status != 409 or client.get_datasource(uid) is None:
                if e.status == 409:
                    raise GrafanaError(f"{e} — a datasource named {name!r} exists with another uid; rename it "
                                       f"in Grafana or set grafana.datasource_uid in modelmon.yaml to its uid",
                                       status=409) from None
                raise
    return Outcome("datasource", uid, name, CREATED, f"url {definition['url']}")


def sync_dashboard(client: GrafanaClient, dashboard: dict[str, Any], folder_uid: str, message: str,
                   dry_run: bool) -> Outcome:
    uid, title = dashboard["uid"], dashboard["title"]
    current = client.get_dashboard(uid)
    if current is None:
        action = CREATED
    else:
        meta = current.get("meta", {})
        same = comparable(current.get("dashboard", {})) == comparable(dashboard)
        if same and meta.get("folderUid", folder_uid) == folder_uid:
            return Outcome("dashboard", uid, title, UNCHANGED)
        if meta.get("provisioned"):
            raise GrafanaError(f"dashboard {uid}: that Grafana loads it from provisioning files "
                               f"({meta.get('provisionedExternalId', 'a file')}), so the API cannot change it; "
                               f"update the provisioned files (modelmon generate) instead", status=400)
        action = UPDATED
    if not dry_run:
        client.save_dashboard({**dashboard, "id": None}, folder_uid=folder_uid, message=message, overwrite=True)
    return Outcome("dashboard", uid, title, action)


def push(client: GrafanaClient, dashboards: list[dict[str, Any]], *, folder_uid: str, folder_title: str,
         datasource: dict[str, Any], message: str, dry_run: bool,
         report: Callable[[Outcome], None]) -> list[Outcome]:
    """Health check, then folder, datasource and dashboards; ``report`` sees each outcome as it
    happens. Raises GrafanaError on the first failure."""
    client.health()
    outcomes = []
    steps: list[Callable[[], Outcome]] = [
        lambda: ensure_folder(client, folder_uid, folder_title, dry_run),
        lambda: ensure_datasource(client, datasource, dry_run),
    ]
    steps += [lambda d=d: sync_dashboard(client, d, folder_uid, message, dry_run) for d in dashboards]
    for step in steps:
        outcome = step()
        report(outcome)
        outcomes.append(outcome)
    return outcomes


def planned(dashboards: list[dict[str, Any]], *, folder_uid: str, folder_title: str,
            datasource: dict[str, Any]) -> list[Outcome]:
    """What a push would send, for a dry run that cannot read Grafana: nothing is compared, so
    created, updated and unchanged cannot be told apart."""
    from modelmon.dashboards.queries import iter_panels

    out = [Outcome("folder", folder_uid, folder_title, PUSHED, "created if missing"),
           Outcome("datasource", datasource["uid"], datasource["name"], PUSHED,
                   f"created only if no datasource has this uid; url {datasource['url']}")]
    for d in dashboards:
        panels = sum(1 for p in iter_panels(d) if p.get("type") != "row")
        out.append(Outcome("dashboard", d["uid"], d["title"], PUSHED, f"{panels} panels, saved with overwrite"))
    return out
