"""The HTTP server the exporter and the receiver run on (interface; implementation pending)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class HttpLimits:
    max_body_bytes: int = 10 << 20


class Server:
    def __init__(self, app, host: str, port: int, limits: HttpLimits = HttpLimits(), name: str = "modelmon"):
        from werkzeug.serving import make_server
        self._server = make_server(host, port, app, threaded=True)
        self.port = self._server.port

    def serve_forever(self) -> None:
        self._server.serve_forever()

    def shutdown(self) -> None:
        """Stop serve_forever(); safe to call from another thread."""
        self._server.shutdown()
