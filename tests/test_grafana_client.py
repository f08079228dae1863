"""`modelmon dashboards push` and the Grafana client against a local fake Grafana (tests/fake_grafana.py)."""
from __future__ import annotations

import argparse
import base64
import logging
from pathlib import Path

import pytest

from fake_grafana import FakeGrafana
from modelmon.config import load_config
from modelmon.dashboards import cli
from modelmon.dashboards.client import Credentials, GrafanaClient, GrafanaError
from modelmon.dashboards.generate import dashboards

ROOT = Path(__file__).resolve().parent.parent
CONFIG = str(ROOT / "modelmon.yaml")
ADMIN_TOKEN = "glsa_admin_S3cr3t_token_0123456789"
EDITOR_TOKEN = "glsa_editor_S3cr3t_token_abcdef"
VIEWER_TOKEN = "glsa_viewer_S3cr3t_token_zyxwvu"
PASSWORD = "basic-auth-Pa55word-secret"
SECRETS = (ADMIN_TOKEN, EDITOR_TOKEN, VIEWER_TOKEN, PASSWORD)
# The demo config has a model of every task, so every model-detail dashboard exists.
UIDS = {"modelmon-overview", "modelmon-model-binary", "modelmon-model-multiclass", "modelmon-model-regression",
        "modelmon-rollout", "modelmon-drift", "modelmon-service", "modelmon-self"}


@pytest.fixture
def grafana():
    with FakeGrafana() as fake:
        fake.state.tokens.update({ADMIN_TOKEN: "Admin", EDITOR_TOKEN: "Editor", VIEWER_TOKEN: "Viewer"})
        fake.state.users[("admin", PASSWORD)] = "Admin"
        yield fake


@pytest.fixture(autouse=True)
def capture_all_logs(caplog):
    """Record every logger (client, urllib3, requests) at DEBUG, to prove no secret reaches a log."""
    caplog.set_level(logging.DEBUG)
    yield caplog
    for record in caplog.records:
        text = record.getMessage()
        for secret in SECRETS:
            assert secret not in text, f"a secret leaked into log record {record.name}"


class Run:
    def __init__(self, rc: int, out: str, err: str, sleeps: list[float]):
        self.rc, self.out, self.err, self.sleeps = rc, out, err, sleeps

    def assert_no_secret(self) -> None:
        for secret in SECRETS:
            assert secret not in self.out and secret not in self.err


def push(capsys, url: str, *extra: str, env: dict[str, str] | None = None, config: str = CONFIG) -> Run:
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    args = parser.parse_args(["push", "--config", config, "--url", url, "--retries", "3", "--timeout", "5", *extra])
    sleeps: list[float] = []
    rc = cli.run(args, sleep=sleeps.append, environ={"GRAFANA_TOKEN": ADMIN_TOKEN} if env is None else env)
    captured = capsys.readouterr()
    run = Run(rc, captured.out, captured.err, sleeps)
    run.assert_no_secret()
    return run


def dashboard_lines(out: str) -> dict[str, str]:
    """uid -> action from the per-dashboard report lines."""
    result = {}
    for line in out.splitlines():
        line = line.strip()
        if line.startswith("dashboard "):
            uid = line.split()[1]
            result[uid] = line.rsplit(": ", 1)[1]
    return result


def test_first_push_creates_everything_second_is_unchanged(grafana, capsys):
    first = push(capsys, grafana.url)
    assert first.rc == 0, first.err
    assert dashboard_lines(first.out) == {uid: "created" for uid in UIDS}
    assert "folder modelmon (modelmon): created" in first.out
    assert "datasource modelmon-prometheus" in first.out and "created" in first.out
    assert set(grafana.state.dashboards) == UIDS
    assert all(e["folderUid"] == "modelmon" for e in grafana.state.dashboards.values())
    assert grafana.state.datasources["modelmon-prometheus"]["type"] == "prometheus"
    assert all(e["message"] == "modelmon dashboards push" for e in grafana.state.dashboards.values())
    assert grafana.state.authorization_headers[-1] == f"Bearer {ADMIN_TOKEN}"

    writes_before = len(grafana.writes())
    second = push(capsys, grafana.url, "--message", "second run")
    assert second.rc == 0, second.err
    assert dashboard_lines(second.out) == {uid: "unchanged" for uid in UIDS}
    assert f"{len(UIDS)} unchanged" in second.out
    assert len(grafana.writes()) == writes_before  # nothing was written the second time
    assert all(e["dashboard"]["version"] == 1 for e in grafana.state.dashboards.values())


def test_changed_threshold_updates_only_affected_dashboards(grafana, capsys, tmp_path):
    assert push(capsys, grafana.url).rc == 0
    text = (ROOT / "modelmon.yaml").read_text().replace(
        "mae: {warning: 6.0, critical: 9.0}", "mae: {warning: 7.0, critical: 9.0}")
    changed = tmp_path / "modelmon.yaml"
    changed.write_text(text)
    run = push(capsys, grafana.url, config=str(changed))
    assert run.rc == 0, run.err
    actions = dashboard_lines(run.out)
    # MAE thresholds appear on the overview (eta's quality stat), the regression model detail and the
    # rollout dashboard's MAE by version only.
    assert actions == {"modelmon-overview": "updated", "modelmon-model-regression": "updated",
                       "modelmon-rollout": "updated",
                       "modelmon-model-binary": "unchanged", "modelmon-model-multiclass": "unchanged",
                       "modelmon-drift": "unchanged", "modelmon-service": "unchanged", "modelmon-self": "unchanged"}
    assert grafana.state.dashboards["modelmon-model-regression"]["dashboard"]["version"] == 2


def test_dry_run_reports_and_writes_nothing(grafana, capsys):
    run = push(capsys, grafana.url, "--dry-run")
    assert run.rc == 0, run.err
    assert dashboard_lines(run.out) == {uid: "would be created" for uid in UIDS}
    assert f"dashboards: {len(UIDS)} would be created (dry run, nothing written)" in run.out
    assert grafana.writes() == []
    assert grafana.state.dashboards == {} and grafana.state.folders == {}


def test_dry_run_shows_updates_against_an_existing_grafana(grafana, capsys):
    assert push(capsys, grafana.url).rc == 0
    grafana.state.dashboards["modelmon-drift"]["dashboard"]["title"] = "edited by hand"
    run = push(capsys, grafana.url, "--dry-run")
    assert dashboard_lines(run.out)["modelmon-drift"] == "would be updated"
    assert dashboard_lines(run.out)["modelmon-self"] == "unchanged"
    assert grafana.state.dashboards["modelmon-drift"]["dashboard"]["title"] == "edited by hand"


def test_retries_5xx_and_dropped_connections_with_backoff(grafana, capsys):
    grafana.fail_next("GET", "/api/health", 503, times=2)
    grafana.fail_next("POST", "/api/dashboards/db", "drop")
    grafana.fail_next("GET", "/api/dashboards/uid/modelmon-self", 502)
    run = push(capsys, grafana.url)
    assert run.rc == 0, run.err
    assert dashboard_lines(run.out) == {uid: "created" for uid in UIDS}
    # Exponential: two health retries (0.5, 1.0), then one retry each for the drop and the 502.
    assert run.sleeps == [0.5, 1.0, 0.5, 0.5]
    statuses = [s for _, _, s in grafana.state.requests]
    assert statuses.count(503) == 2 and statuses.count("drop") == 1 and statuses.count(502) == 1


def test_retries_are_bounded(grafana, capsys):
    grafana.fail_next("GET", "/api/health", 500, times=10)
    run = push(capsys, grafana.url)
    assert run.rc == 1
    assert "after 4 attempts" in run.err and "HTTP 500" in run.err
    assert run.sleeps == [0.5, 1.0, 2.0]


def test_unreachable_grafana_fails_clearly(capsys):
    from conftest import free_port

    run = push(capsys, f"http://127.0.0.1:{free_port()}")
    assert run.rc == 1
    assert "did not answer" in run.err and "ConnectionError" in run.err
    assert len(run.sleeps) == 3


@pytest.mark.parametrize("env", [{"GRAFANA_TOKEN": "wrong-" + ADMIN_TOKEN},
                                 {"GRAFANA_USER": "admin", "GRAFANA_PASSWORD": "wrong-" + PASSWORD}])
def test_401_names_the_credentials_to_fix(grafana, capsys, env):
    run = push(capsys, grafana.url, env=env)
    assert run.rc == 1
    assert "HTTP 401" in run.err and "Unauthorized" in run.err and "GRAFANA_TOKEN" in run.err
    assert grafana.writes() == []


def test_no_credentials_is_refused_before_any_request(grafana, capsys):
    run = push(capsys, grafana.url, env={})
    assert run.rc == 2 and "no credentials" in run.err
    assert grafana.state.requests == []


def test_403_for_a_viewer_token(grafana, capsys):
    run = push(capsys, grafana.url, env={"GRAFANA_TOKEN": VIEWER_TOKEN})
    assert run.rc == 1
    assert "HTTP 403" in run.err and "folders:create" in run.err and "Editor role" in run.err
    assert grafana.state.dashboards == {}


def test_editor_token_pushes_dashboards_without_datasource_access(grafana, capsys):
    run = push(capsys, grafana.url, env={"GRAFANA_TOKEN": EDITOR_TOKEN})
    assert run.rc == 0, run.err
    assert "datasource modelmon-prometheus (modelmon Prometheus): skipped" in run.out
    assert set(grafana.state.dashboards) == UIDS and grafana.state.datasources == {}


def test_basic_auth_fallback_and_token_file(grafana, capsys, tmp_path):
    run = push(capsys, grafana.url, env={"GRAFANA_USER": "admin", "GRAFANA_PASSWORD": PASSWORD})
    assert run.rc == 0, run.err
    assert "basic auth" in run.out
    assert grafana.state.authorization_headers[-1].startswith("Basic ")

    token_file = tmp_path / "token"
    token_file.write_text(EDITOR_TOKEN + "\n")
    run = push(capsys, grafana.url, "--token-file", str(token_file), env={"GRAFANA_TOKEN": "ignored"})
    assert run.rc == 0, run.err
    assert grafana.state.authorization_headers[-1] == f"Bearer {EDITOR_TOKEN}"


def test_unusable_token_file(grafana, capsys, tmp_path):
    empty = tmp_path / "token"
    empty.write_text("\n")
    for path in (empty, tmp_path / "missing"):
        run = push(capsys, grafana.url, "--token-file", str(path))
        assert run.rc == 2 and "--token-file" in run.err
    assert grafana.state.requests == []


def test_existing_datasource_is_left_alone(grafana, capsys):
    grafana.state.datasources["modelmon-prometheus"] = {"uid": "modelmon-prometheus", "name": "Prom", "type":
                                                        "prometheus", "url": "http://elsewhere:9090"}
    run = push(capsys, grafana.url)
    assert run.rc == 0
    assert "datasource modelmon-prometheus (Prom): exists" in run.out
    assert grafana.state.datasources["modelmon-prometheus"]["url"] == "http://elsewhere:9090"


def test_datasource_name_taken_by_another_uid(grafana, capsys):
    grafana.state.datasources["other"] = {"uid": "other", "name": "modelmon Prometheus", "type": "prometheus"}
    run = push(capsys, grafana.url)
    assert run.rc == 1
    assert "HTTP 409" in run.err and "grafana.datasource_uid" in run.err


def test_provisioned_dashboard_is_not_overwritten(grafana, capsys):
    config = load_config(CONFIG)
    stale = {**dashboards(config)[0], "title": "older provisioned copy"}
    grafana.add_dashboard(stale, "modelmon", provisioned=True)
    run = push(capsys, grafana.url)
    assert run.rc == 1
    assert "provisioning files" in run.err and "modelmon-overview" in run.err
    assert grafana.state.dashboards["modelmon-overview"]["dashboard"]["title"] == "older provisioned copy"


def test_plugin_dashboard_412(grafana, capsys):
    config = load_config(CONFIG)
    grafana.add_dashboard({**dashboards(config)[1], "title": "plugin copy"}, "modelmon", plugin="some-app")
    run = push(capsys, grafana.url)
    assert run.rc == 1
    assert "HTTP 412 (plugin-dashboard)" in run.err and "belongs to plugin some-app" in run.err


# ---------------------------------------------------------------------- client API level


def client_for(grafana: FakeGrafana, token: str = ADMIN_TOKEN) -> GrafanaClient:
    return GrafanaClient(grafana.url, Credentials(token=token), retries=0, sleep=lambda s: None)


def test_412_version_mismatch_without_overwrite(grafana):
    client = client_for(grafana)
    client.create_folder("modelmon", "modelmon")
    dash = dashboards(load_config(CONFIG))[4]
    first = client.save_dashboard({**dash, "id": None}, folder_uid="modelmon", message="m")
    assert first["status"] == "success" and first["version"] == 1
    client.save_dashboard({**dash, "id": None, "version": 1}, folder_uid="modelmon", message="m", overwrite=False)
    with pytest.raises(GrafanaError) as err:  # version 1 is stale now: Grafana holds version 2
        client.save_dashboard({**dash, "id": None, "version": 1}, folder_uid="modelmon", message="m",
                              overwrite=False)
    assert err.value.status == 412 and err.value.grafana_status == "version-mismatch"
    assert "changed by someone else" in str(err.value) and "push again" in str(err.value)


def test_412_name_exists_without_overwrite(grafana):
    client = client_for(grafana)
    dash = dashboards(load_config(CONFIG))[4]
    client.save_dashboard({**dash, "id": None}, folder_uid="", message="m")
    with pytest.raises(GrafanaError) as err:
        client.save_dashboard({**dash, "id": None, "uid": "another-uid"}, folder_uid="", message="m",
                              overwrite=False)
    assert err.value.status == 412 and err.value.grafana_status == "name-exists"


def test_400_messages_are_grafanas(grafana):
    client = client_for(grafana)
    with pytest.raises(GrafanaError) as err:
        client.save_dashboard({"uid": "x", "title": " "}, folder_uid="", message="m")
    assert err.value.status == 400 and "Dashboard title cannot be empty" in str(err.value)
    grafana.add_dashboard({"uid": "prov", "title": "Provisioned"}, provisioned=True)
    with pytest.raises(GrafanaError) as err:
        client.save_dashboard({"uid": "prov", "title": "Provisioned"}, folder_uid="", message="m")
    assert err.value.status == 400 and "Cannot save provisioned dashboard" in str(err.value)
    assert "modelmon generate" in str(err.value)


def test_get_dashboard_404_is_none_and_health_needs_database_ok(grafana):
    client = client_for(grafana)
    assert client.get_dashboard("nope") is None
    assert client.health()["database"] == "ok"


def test_credentials_never_show_in_repr_or_url():
    creds = Credentials(token=ADMIN_TOKEN)
    assert ADMIN_TOKEN not in repr(creds) and ADMIN_TOKEN not in str(creds)
    client = GrafanaClient(f"http://admin:{PASSWORD}@127.0.0.1:1", Credentials(user="admin", password=PASSWORD))
    assert PASSWORD not in client.display_url


# --------------------------------------------------------------------------- credentials inside --url


def with_userinfo(url: str, userinfo: str = f"admin:{PASSWORD}") -> str:
    return url.replace("http://", f"http://{userinfo}@", 1)


@pytest.mark.parametrize("extra, env, named", [
    ((), {"GRAFANA_TOKEN": ADMIN_TOKEN}, "GRAFANA_TOKEN is set too"),
    (("--token-file", "TOKEN_FILE"), {}, "--token-file is set too"),
    ((), {"GRAFANA_USER": "admin", "GRAFANA_PASSWORD": PASSWORD}, "GRAFANA_USER is set too"),
])
def test_credentials_in_the_url_plus_other_credentials_is_an_error(grafana, capsys, tmp_path, extra, env, named):
    token_file = tmp_path / "token"
    token_file.write_text(EDITOR_TOKEN)
    extra = tuple(str(token_file) if x == "TOKEN_FILE" else x for x in extra)
    run = push(capsys, with_userinfo(grafana.url), *extra, env=env)  # push() asserts no secret in out/err
    assert run.rc == 2
    assert run.out == ""
    lines = run.err.splitlines()
    assert len(lines) == 1, run.err
    assert lines[0].startswith(f"modelmon dashboards push: --url {with_userinfo(grafana.url, '***')} carries "
                               "credentials (user:password@) and ")
    assert named in lines[0] and "use one" in lines[0]
    assert "admin" not in lines[0]
    assert grafana.state.requests == []  # refused before any request


def test_credentials_in_the_url_alone_are_basic_auth_and_never_shown(grafana, capsys):
    run = push(capsys, with_userinfo(grafana.url), env={})
    assert run.rc == 0, run.err
    assert f"pushing to {grafana.url} (folder 'modelmon', basic auth)" in run.out
    assert "admin:" not in run.out + run.err
    assert set(grafana.state.authorization_headers) == {
        "Basic " + base64.b64encode(f"admin:{PASSWORD}".encode()).decode()}
    assert set(grafana.state.dashboards) == UIDS


def test_percent_encoded_credentials_in_the_url_are_decoded(grafana, capsys):
    grafana.state.users[("ops@example.com", "p@ss:word/1")] = "Admin"
    run = push(capsys, with_userinfo(grafana.url, "ops%40example.com:p%40ss%3Aword%2F1"), env={})
    assert run.rc == 0, run.err
    assert "p%40ss" not in run.out + run.err and "p@ss" not in run.out + run.err


def test_wrong_credentials_in_the_url_fail_without_echoing_them(grafana, capsys):
    run = push(capsys, with_userinfo(grafana.url, f"admin:wrong-{PASSWORD}"), env={})
    assert run.rc == 1
    assert "HTTP 401" in run.err and "wrong-" not in run.err + run.out


@pytest.mark.parametrize("url", ["grafana.example:3000", f"ftp://admin:{PASSWORD}@grafana.example",
                                 f"http://admin:{PASSWORD}@grafana.example:port/"])
def test_an_unusable_url_is_refused_masked(capsys, url):
    run = push(capsys, url, env={})
    assert run.rc == 2
    assert run.err.startswith("modelmon dashboards push: --url ") and len(run.err.splitlines()) == 1
    assert "admin" not in run.err


def test_credentials_in_the_prometheus_url_are_refused(grafana, capsys):
    run = push(capsys, grafana.url, "--prometheus-url", f"http://admin:{PASSWORD}@prometheus:9090")
    assert run.rc == 2
    assert "--prometheus-url http://***@prometheus:9090: credentials inline in a URL are refused" in run.err
    assert grafana.state.requests == []


def test_the_client_refuses_url_credentials_next_to_a_token():
    from modelmon.dashboards.client import ConflictingCredentials

    with pytest.raises(ConflictingCredentials) as e:
        GrafanaClient(f"http://admin:{PASSWORD}@127.0.0.1:1", Credentials(token=ADMIN_TOKEN))
    assert PASSWORD not in str(e.value) and ADMIN_TOKEN not in str(e.value)
    client = GrafanaClient(f"http://admin:{PASSWORD}@127.0.0.1:1/", Credentials())
    assert client.base == "http://127.0.0.1:1" and client.session.auth == ("admin", PASSWORD)
    assert "Authorization" not in client.session.headers


# --------------------------------------------------------------------------- newcomer paths


@pytest.mark.parametrize("url, suggestion", [
    ("127.0.0.1:19999", "http://127.0.0.1:19999"),
    ("localhost:3000", "http://localhost:3000"),
    ("grafana.example.com", "http://grafana.example.com"),
    (f"admin:{PASSWORD}@127.0.0.1:3000", "http://***@127.0.0.1:3000"),
])
def test_a_url_without_scheme_is_one_line_naming_the_fix(capsys, url, suggestion):
    for extra in ((), ("--dry-run",)):
        run = push(capsys, url, *extra, env={})
        assert run.rc == 2
        assert run.err == (f"modelmon dashboards push: --url {url.replace(f'admin:{PASSWORD}', '***')} has no scheme; "
                           f"use {suggestion} (or https://)\n")
        assert "Traceback" not in run.err and run.out == ""


def test_dry_run_without_a_grafana_lists_what_would_be_pushed(capsys):
    from conftest import free_port

    run = push(capsys, f"http://127.0.0.1:{free_port()}", "--dry-run")
    assert run.rc == 0, run.err
    assert run.sleeps == []  # one attempt: nothing answers, no backoff
    assert "cannot read Grafana: nothing answers at http://127.0.0.1:" in run.out
    listed = dashboard_lines(run.out)
    assert set(listed) == UIDS and all(action.startswith("would be pushed — ") for action in listed.values())
    assert "folder modelmon (modelmon): would be pushed — created if missing" in run.out
    assert (f"dashboards: {len(UIDS)} would be created or updated (dry run, offline: nothing compared, "
            f"nothing written)") in run.out


def test_dry_run_without_credentials_on_a_grafana_that_wants_them_lists_offline(grafana, capsys):
    run = push(capsys, grafana.url, "--dry-run", env={})
    assert run.rc == 0, run.err
    assert "HTTP 401" in run.out and "listing what would be pushed, without comparing" in run.out
    assert len(dashboard_lines(run.out)) == len(UIDS)
    assert grafana.writes() == []


def test_dry_run_with_wrong_credentials_still_says_so(grafana, capsys):
    run = push(capsys, grafana.url, "--dry-run", env={"GRAFANA_TOKEN": "wrong-" + ADMIN_TOKEN})
    assert run.rc == 1 and "HTTP 401" in run.err and "without comparing" not in run.out
