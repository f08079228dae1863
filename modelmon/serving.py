"""The HTTP server the exporter and the receiver run on: waitress, with deadlines it lacks.

waitress gives a fixed pool of worker threads fed by one asyncore loop, a connection limit,
an idle timeout, header and body size limits (413 whatever the framing, chunked included; the
body is spooled to a temporary file past 512 KiB, never held whole in memory by the server).
It has no *deadline*: a client that trickles one byte a second keeps its connection forever,
since each byte counts as activity. This module adds two, checked about once a second by the
loop thread:

- header timeout: the request line and headers must be complete within this many seconds of
  the request's first byte (of the accept, for a connection's first request);
- body timeout: the body must be complete within this many seconds of the end of the headers.

A connection past either deadline gets `408 Request Timeout` and is closed (one that sent
nothing at all is just closed). A connection whose request is being served is left alone (then
the server is the slow party). Between requests, and while a response waits for a client that
does not read it, the idle timeout applies (no byte received or sent for that long).

`Server.shutdown()` is lock-free and non-blocking: it may be called from a signal handler or any
thread. `serve_forever()` then stops accepting, lets requests in flight finish for a grace
period, closes every connection and returns.
"""
from __future__ import annotations

import argparse
import hmac
import logging
import math
import time
from dataclasses import dataclass

from waitress import wasyncore
from waitress.adjustments import Adjustments
from waitress.channel import HTTPChannel
from waitress.parser import HTTPRequestParser
from waitress.server import TcpWSGIServer
from waitress.task import ThreadedTaskDispatcher
from waitress.utilities import RequestEntityTooLarge

log = logging.getLogger("modelmon.http")

_CHECK_EVERY = 1.0  # seconds between deadline checks; also the loop's longest sleep


def bearer_matches(header: str, token: str) -> bool:
    """`Authorization: Bearer <token>`: the scheme case-insensitive (RFC 7235), the token compared
    in constant time. Shared by the exporter's /ingest and the receiver's /webhook."""
    parts = header.split(None, 1)
    if len(parts) != 2 or parts[0].lower() != "bearer":
        return False
    # WSGI hands header values over as latin-1 text: back to the bytes the client sent.
    return hmac.compare_digest(parts[1].strip().encode("latin-1", "replace"), token.encode("utf-8"))


@dataclass(frozen=True)
class HttpLimits:
    """Limits of one HTTP server. Sizes in bytes, times in seconds."""

    max_body_bytes: int = 10 << 20  # a longer body gets 413, whatever its framing
    threads: int = 8  # worker threads running the application (fixed pool)
    max_connections: int = 100  # open connections; past it the server stops accepting until one closes
    header_timeout: float = 10.0  # request line + headers complete within this (slowloris)
    body_timeout: float = 60.0  # body complete within this after the headers
    idle_timeout: float = 60.0  # a keep-alive connection with no request in progress is closed after this
    max_header_bytes: int = 64 << 10  # request line + headers; larger gets 431
    shutdown_grace: float = 5.0  # at shutdown, how long requests in flight may take to finish

    def __post_init__(self) -> None:
        for name in ("max_body_bytes", "threads", "max_connections", "max_header_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("header_timeout", "body_timeout", "idle_timeout"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be a positive number of seconds, got {getattr(self, name)}")
        if self.shutdown_grace < 0:
            raise ValueError(f"shutdown_grace must not be negative, got {self.shutdown_grace}")


_TIMEOUT_BODY = b"request not received in time; closing the connection\r\n"
_TIMEOUT_RESPONSE = (b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Type: text/plain\r\n"
                     b"Content-Length: %d\r\n\r\n%s" % (len(_TIMEOUT_BODY), _TIMEOUT_BODY))


class _BodyTooLarge(RequestEntityTooLarge):
    pass


class _DeadlineParser(HTTPRequestParser):
    """waitress's request parser, noting when the request began and when its headers ended.

    The channel creates a parser when the first byte of a request arrives.
    """

    def __init__(self, adj):
        super().__init__(adj)
        self.started = time.monotonic()
        self.headers_done_at: float | None = None

    def received(self, data):
        consumed = super().received(data)
        if self.headers_finished and self.headers_done_at is None:
            self.headers_done_at = time.monotonic()
        if type(self.error) is RequestEntityTooLarge:
            # waitress words it "exceeds max_body of <limit + 1>" (see Server): say the real limit
            self.error = _BodyTooLarge(f"body larger than {self.adj.max_request_body_size - 1} bytes")
        return consumed


class _DeadlineChannel(HTTPChannel):
    """One client connection, with header and body deadlines (checked by the loop thread)."""

    def __init__(self, server, sock, addr, adj, map=None):
        self.accepted_at = time.monotonic()
        self.began = False  # has a request begun on this connection yet?
        super().__init__(server, sock, addr, adj, map=map)

    def parser_class(self, adj):
        """waitress calls `self.parser_class(adj)` when a request's first byte arrives."""
        parser = _DeadlineParser(adj)
        if not self.began:  # the first request's clock started at the accept
            self.began = True
            parser.started = self.accepted_at
        return parser

    def overdue(self, now: float, limits: HttpLimits) -> str | None:
        """Why this connection must be closed now, or None."""
        if self.requests or self.will_close or self.close_when_flushed:
            return None  # being served (the server is the slow one), or closing anyway
        req = self.request
        if req is None:
            if not self.began:  # connected, sent nothing
                return "header" if now - self.accepted_at > limits.header_timeout else None
            # between requests of a keep-alive connection, or a response the client does not read:
            # waitress notes the wall-clock time of the last byte received or sent
            return "idle" if time.time() - self.last_activity > limits.idle_timeout else None
        if req.headers_done_at is None:
            return "header" if now - req.started > limits.header_timeout else None
        return "body" if now - req.headers_done_at > limits.body_timeout else None

    def close_overdue(self, why: str) -> None:
        """Answer 408 (unless nothing was sent: then just close) and close once it is flushed."""
        if why == "idle" or (why == "header" and self.request is None):
            self.will_close = True
            return
        with self.outbuf_lock:
            self.outbufs[-1].append(_TIMEOUT_RESPONSE)
            self.current_outbuf_count += len(_TIMEOUT_RESPONSE)
            self.total_outbufs_len += len(_TIMEOUT_RESPONSE)
        self.close_when_flushed = True

    def handle_close(self):
        req, self.request = self.request, None
        if req is not None:
            req.close()  # a half-received body spooled to a temporary file
        super().handle_close()


class _WSGIServer(TcpWSGIServer):
    channel_class = _DeadlineChannel

    def __init__(self, application, limits: HttpLimits, name: str, **kw):
        self.limits = limits
        self.name = name
        self.closed_by_deadline = {"header": 0, "body": 0, "idle": 0}
        super().__init__(application, **kw)

    def maintenance(self, now):
        """Replaces waitress's idle sweep (whole seconds of inactivity) with deadlines."""
        mono = time.monotonic()
        for channel in list(self.active_channels.values()):
            why = channel.overdue(mono, self.limits)
            if why is not None:
                self.closed_by_deadline[why] += 1
                log.debug("%s: closing the connection from %s (%s timeout)", self.name, channel.addr, why)
                channel.close_overdue(why)


class Server:
    """A WSGI app served by waitress on host:port with `limits`; `.port` is the bound port."""

    def __init__(self, app, host: str, port: int, limits: HttpLimits = HttpLimits(), name: str = "modelmon"):
        self.limits = limits
        self.name = name
        self._map: dict = {}
        adj = Adjustments(
            host=host, port=port, threads=limits.threads,
            # waitress compares the size of its socket map, which also holds the listening socket and
            # the loop's wake-up pipe, with connection_limit
            connection_limit=limits.max_connections + 2,
            # waitress answers 413 from `content_length >= max` (and for chunked bodies from the bytes
            # received, chunk framing included), so +1 lets a body of exactly max_body_bytes through
            max_request_body_size=limits.max_body_bytes + 1,
            max_request_header_size=limits.max_header_bytes,
            channel_timeout=max(1, math.ceil(limits.idle_timeout)),  # unused: our maintenance replaces it
            cleanup_interval=1, asyncore_use_poll=True, ident=name,
            clear_untrusted_proxy_headers=True, expose_tracebacks=False,
        )
        self._dispatcher = ThreadedTaskDispatcher()
        self._dispatcher.set_thread_count(limits.threads)
        try:
            self._server = _WSGIServer(app, limits, name, map=self._map, dispatcher=self._dispatcher, adj=adj,
                                       sockinfo=adj.listen[0])
        except BaseException:
            self._dispatcher.shutdown(timeout=1)
            raise
        self.port = int(self._server.effective_port)
        self._stopping = False

    @property
    def closed_by_deadline(self) -> dict[str, int]:
        """Connections closed so far for a header, body or idle timeout."""
        return dict(self._server.closed_by_deadline)

    def serve_forever(self) -> None:
        """Serve until shutdown(); then drain requests in flight (up to the grace period) and return."""
        try:
            while not self._stopping:
                wasyncore.poll2(_CHECK_EVERY, self._map)
            self._drain()
        finally:
            wasyncore.close_all(self._map)
            self._dispatcher.shutdown(cancel_pending=True, timeout=self.limits.shutdown_grace)

    def _drain(self) -> None:
        server = self._server
        server.accepting = False
        wasyncore.dispatcher.close(server)  # the listening socket only; the wake-up trigger stays
        deadline = time.monotonic() + self.limits.shutdown_grace
        while True:
            busy = False
            for channel in list(server.active_channels.values()):
                if channel.requests or channel.total_outbufs_len:
                    busy = True  # a response being computed or sent
                else:
                    channel.will_close = True
            if not busy or time.monotonic() >= deadline:
                break
            wasyncore.poll2(0.05, self._map)
        wasyncore.poll2(0, self._map)  # let the channels marked above close

    def shutdown(self) -> None:
        """Make serve_forever() return. Non-blocking and lock-free: safe from a signal handler."""
        self._stopping = True
        try:
            self._server.trigger.pull_trigger()  # wake the loop from poll()
        except OSError:
            pass  # already closed: the loop is not waiting


# ---------------------------------------------------------------------- command-line flags


def _positive(kind):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a {'whole ' if kind is int else ''}number, got {text!r}")
        if not 0 < value < float("inf"):
            raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
        return value
    parse.__name__ = kind.__name__
    return parse


def add_http_arguments(p: argparse.ArgumentParser) -> None:
    """The HTTP server's limits as flags (shared by `modelmon serve` and `modelmon receiver`)."""
    d = HttpLimits()
    g = p.add_argument_group("HTTP server limits")
    g.add_argument("--http-threads", type=_positive(int), default=d.threads, metavar="N",
                   help="worker threads answering requests (a fixed pool; default: %(default)s)")
    g.add_argument("--max-connections", type=_positive(int), default=d.max_connections, metavar="N",
                   help="open connections at most; past it new ones wait in the listen backlog (default: %(default)s)")
    g.add_argument("--header-timeout", type=_positive(float), default=d.header_timeout, metavar="SECONDS",
                   help="a request's line and headers must arrive within this, however slowly they trickle; "
                        "else 408 and the connection is closed (default: %(default)s)")
    g.add_argument("--body-timeout", type=_positive(float), default=d.body_timeout, metavar="SECONDS",
                   help="a request's body must arrive within this after its headers; else 408 and the connection "
                        "is closed (default: %(default)s)")
    g.add_argument("--idle-timeout", type=_positive(float), default=d.idle_timeout, metavar="SECONDS",
                   help="a keep-alive connection with no request in progress is closed after this "
                        "(default: %(default)s)")


def limits_from_args(args: argparse.Namespace, max_body_bytes: int) -> HttpLimits:
    return HttpLimits(max_body_bytes=max_body_bytes, threads=args.http_threads, max_connections=args.max_connections,
                      header_timeout=args.header_timeout, body_timeout=args.body_timeout,
                      idle_timeout=args.idle_timeout)
