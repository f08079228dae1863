"""A local stand-in for Grafana's HTTP API (the endpoints modelmon uses), for client tests.

Follows the documented status codes and bodies of Grafana 10/11:
- GET  /api/health                      200 {"commit", "database": "ok", "version"} (no auth)
- GET  /api/folders/:uid                200 folder | 404 {"message": "folder not found"}
- POST /api/folders                     200 folder | 409 on a taken uid or title | 403 for viewers
- GET  /api/datasources/uid/:uid        200 datasource | 404 {"message": "Data source not found"} | 403 unless Admin
- POST /api/datasources                 200 {"datasource", "id", "message": "Datasource added", "name"}
                                        | 409 {"message": "data source with the same name already exists"}
- GET  /api/dashboards/uid/:uid         200 {"dashboard", "meta"} | 404 {"message": "Dashboard not found", "status": "not-found"}
- POST /api/dashboards/db               200 {"id", "uid", "url", "status": "success", "version", "slug"}
                                        | 400 bad JSON / empty title / provisioned dashboard
                                        | 412 version-mismatch / name-exists / plugin-dashboard
Authentication: "Authorization: Bearer <token>" or basic auth; missing or wrong -> 401,
a role too low -> 403. ``fail_next`` injects 5xx answers or dropped connections.
"""
from __future__ import annotations

import base64
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

ROLES = {"Viewer": 0, "Editor": 1, "Admin": 2}
UNAUTHORIZED = {"extra": None, "message": "Unauthorized", "messageId": "auth.unauthorized", "statusCode": 401,
                "traceID": ""}


def _forbidden(action: str) -> dict[str, Any]:
    return {"accessErrorId": "ACE0000000001", "title": "Access denied",
            "message": f"You'll need additional permissions to perform this action. Permissions needed: {action}"}


def _slug(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")


@dataclass
class FakeGrafanaState:
    tokens: dict[str, str] = field(default_factory=dict)  # token -> role
    users: dict[tuple[str, str], str] = field(default_factory=dict)  # (user, password) -> role
    folders: dict[str, dict[str, Any]] = field(default_factory=dict)
    datasources: dict[str, dict[str, Any]] = field(default_factory=dict)
    dashboards: dict[str, dict[str, Any]] = field(default_factory=dict)  # uid -> {dashboard, folderUid, ...}
    failures: list[tuple[str, str, Any]] = field(default_factory=list)  # (method, path prefix, status|"drop")
    requests: list[tuple[str, str, int | str]] = field(default_factory=list)  # (method, path, status)
    authorization_headers: list[str] = field(default_factory=list)
    next_id: int = 1

    def new_id(self) -> int:
        self.next_id += 1
        return self.next_id - 1


class FakeGrafana:
    """Runs on 127.0.0.1 on a free port in a background thread; use as a context manager."""

    def __init__(self) -> None:
        self.state = FakeGrafanaState()
        self.lock = threading.Lock()
        handler = type("Handler", (_Handler,), {"fake": self})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        # A short poll interval keeps shutdown (once per test) fast.
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)

    def __enter__(self) -> "FakeGrafana":
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)

    def fail_next(self, method: str, path_prefix: str, outcome: int | str, times: int = 1) -> None:
        """Answer the next ``times`` matching requests with ``outcome``: a 5xx status or "drop"."""
        self.state.failures.extend([(method, path_prefix, outcome)] * times)

    def add_dashboard(self, dashboard: dict[str, Any], folder_uid: str = "", *, provisioned: bool = False,
                      plugin: str | None = None) -> None:
        """Seed a stored dashboard as if someone had saved (or provisioned) it before."""
        stored = {**dashboard, "id": self.state.new_id(), "version": dashboard.get("version") or 1}
        self.state.dashboards[dashboard["uid"]] = {"dashboard": stored, "folderUid": folder_uid,
                                                    "provisioned": provisioned, "plugin": plugin}

    def writes(self) -> list[tuple[str, str, int | str]]:
        return [r for r in self.state.requests if r[0] in ("POST", "PUT", "DELETE")]


class _Handler(BaseHTTPRequestHandler):
    fake: FakeGrafana
    protocol_version = "HTTP/1.1"
    wbufsize = -1  # buffer headers and body into one write (avoids Nagle/delayed-ACK stalls)

    def log_message(self, format: str, *args: Any) -> None:  # keep pytest output clean
        pass

    # ------------------------------------------------------------------ plumbing

    def _send(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        # Record before answering: the client may act on the answer before this thread resumes.
        self.fake.state.requests.append((self.command, self.path, status))
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=UTF-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()

    def _injected_failure(self) -> bool:
        state = self.fake.state
        for i, (method, prefix, outcome) in enumerate(state.failures):
            if method == self.command and self.path.startswith(prefix):
                del state.failures[i]
                if outcome == "drop":
                    state.requests.append((self.command, self.path, "drop"))  # before the client sees it
                    self.close_connection = True
                    self.connection.shutdown(2)  # no status line at all: the client sees a reset
                else:
                    self._send(int(outcome), {"message": "Internal Server Error"})
                return True
        return False

    def _role(self) -> str | None:
        header = self.headers.get("Authorization", "")
        self.fake.state.authorization_headers.append(header)
        if header.startswith("Bearer "):
            return self.fake.state.tokens.get(header[7:])
        if header.startswith("Basic "):
            try:
                user, _, password = base64.b64decode(header[6:]).decode().partition(":")
            except ValueError:
                return None
            return self.fake.state.users.get((user, password))
        return None

    def _authorize(self, minimum: str, action: str) -> bool:
        role = self._role()
        if role is None:
            self._send(401, UNAUTHORIZED)
            return False
        if ROLES[role] < ROLES[minimum]:
            self._send(403, _forbidden(action))
            return False
        return True

    def _body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        try:
            return json.loads(raw)
        except ValueError:
            return None

    # ------------------------------------------------------------------ routes

    def do_GET(self) -> None:
        with self.fake.lock:
            if self._injected_failure():
                return
            path = self.path.split("?")[0]
            if path == "/api/health":
                return self._send(200, {"commit": "fake", "database": "ok", "version": "11.0.0"})
            if m := re.fullmatch(r"/api/folders/([^/]+)", path):
                if self._authorize("Viewer", "folders:read"):
                    folder = self.fake.state.folders.get(m[1])
                    self._send(200, folder) if folder else self._send(404, {"message": "folder not found"})
                return
            if m := re.fullmatch(r"/api/datasources/uid/([^/]+)", path):
                if self._authorize("Admin", "datasources:read"):
                    ds = self.fake.state.datasources.get(m[1])
                    self._send(200, ds) if ds else self._send(404, {"message": "Data source not found"})
                return
            if m := re.fullmatch(r"/api/dashboards/uid/([^/]+)", path):
                if self._authorize("Viewer", "dashboards:read"):
                    self._get_dashboard(m[1])
                return
            self._send(404, {"message": "Not found"})

    def do_POST(self) -> None:
        with self.fake.lock:
            if self._injected_failure():
                return
            body = self._body()
            if self.path == "/api/folders":
                if self._authorize("Editor", "folders:create"):
                    self._create_folder(body)
                return
            if self.path == "/api/datasources":
                if self._authorize("Admin", "datasources:create"):
                    self._create_datasource(body)
                return
            if self.path == "/api/dashboards/db":
                if self._authorize("Editor", "dashboards:create"):
                    self._save_dashboard(body)
                return
            self._send(404, {"message": "Not found"})

    def _create_folder(self, body: Any) -> None:
        state = self.fake.state
        if not isinstance(body, dict) or not body.get("title"):
            return self._send(400, {"message": "folder title cannot be empty"})
        uid = body.get("uid") or f"f{state.next_id}"
        if uid in state.folders:
            return self._send(409, {"message": "a folder/dashboard with the same uid already exists"})
        if any(f["title"] == body["title"] for f in state.folders.values()):
            return self._send(409, {"message": "a folder with the same name already exists"})
        folder = {"id": state.new_id(), "uid": uid, "title": body["title"],
                  "url": f"/dashboards/f/{uid}/{_slug(body['title'])}", "version": 1}
        state.folders[uid] = folder
        self._send(200, folder)

    def _create_datasource(self, body: Any) -> None:
        state = self.fake.state
        if not isinstance(body, dict) or not body.get("name") or not body.get("type"):
            return self._send(400, {"message": "Validation error, need to specify a name and a type"})
        if any(ds["name"] == body["name"] for ds in state.datasources.values()):
            return self._send(409, {"message": "data source with the same name already exists"})
        ds = {"id": state.new_id(), "orgId": 1, "uid": body.get("uid") or f"ds{state.next_id}",
              "name": body["name"], "type": body["type"], "access": body.get("access", "proxy"),
              "url": body.get("url", ""), "isDefault": body.get("isDefault", False),
              "jsonData": body.get("jsonData", {}), "readOnly": False, "version": 1}
        state.datasources[ds["uid"]] = ds
        self._send(200, {"datasource": ds, "id": ds["id"], "message": "Datasource added", "name": ds["name"]})

    def _get_dashboard(self, uid: str) -> None:
        entry = self.fake.state.dashboards.get(uid)
        if entry is None:
            return self._send(404, {"message": "Dashboard not found", "status": "not-found"})
        dash = entry["dashboard"]
        meta = {"folderUid": entry["folderUid"], "provisioned": entry["provisioned"], "slug": _slug(dash["title"]),
                "url": f"/d/{uid}/{_slug(dash['title'])}", "version": dash["version"]}
        if entry["provisioned"]:
            meta["provisionedExternalId"] = f"{uid}.json"
        self._send(200, {"dashboard": dash, "meta": meta})

    def _save_dashboard(self, body: Any) -> None:
        state = self.fake.state
        if not isinstance(body, dict) or not isinstance(body.get("dashboard"), dict):
            return self._send(400, {"message": "bad request data"})
        dash, overwrite = body["dashboard"], bool(body.get("overwrite"))
        folder_uid = body.get("folderUid", "")
        if not dash.get("title", "").strip():
            return self._send(400, {"message": "Dashboard title cannot be empty", "status": "empty-name"})
        if len(body.get("message", "")) > 500:
            return self._send(400, {"message": "message too long, max 500 characters"})
        if folder_uid and folder_uid not in state.folders:
            return self._send(400, {"message": "folder not found"})
        uid = dash.get("uid") or f"d{state.next_id}"
        existing = state.dashboards.get(uid)
        if existing and existing["plugin"]:
            return self._send(412, {"message": f"The dashboard belongs to plugin {existing['plugin']}.",
                                    "status": "plugin-dashboard"})
        if existing and existing["provisioned"]:
            return self._send(400, {"message": "Cannot save provisioned dashboard"})
        same_title = [u for u, e in state.dashboards.items()
                      if u != uid and e["folderUid"] == folder_uid and e["dashboard"]["title"] == dash["title"]]
        if same_title and not overwrite:
            return self._send(412, {"message": "A dashboard with the same name in the folder already exists",
                                    "status": "name-exists"})
        for other in same_title:  # overwrite replaces the dashboard with the clashing title
            del state.dashboards[other]
        if existing and not overwrite and dash.get("version") != existing["dashboard"]["version"]:
            return self._send(412, {"message": "The dashboard has been changed by someone else",
                                    "status": "version-mismatch"})
        version = existing["dashboard"]["version"] + 1 if existing else 1
        dash_id = existing["dashboard"]["id"] if existing else state.new_id()
        stored = {**dash, "uid": uid, "id": dash_id, "version": version}
        state.dashboards[uid] = {"dashboard": stored, "folderUid": folder_uid, "provisioned": False, "plugin": None,
                                 "message": body.get("message", "")}
        slug = _slug(dash["title"])
        self._send(200, {"id": dash_id, "uid": uid, "url": f"/d/{uid}/{slug}", "status": "success",
                         "version": version, "slug": slug})
