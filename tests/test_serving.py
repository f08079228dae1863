"""modelmon.serving: waitress with header/body deadlines, limits and a shutdown that works from a signal.

In-process servers on 127.0.0.1 with a tiny WSGI app; every wait is bounded.
"""
from __future__ import annotations

import os
import signal
import socket
import threading
import time

import pytest
import requests

from modelmon.serving import HttpLimits, Server

CALLS: list[int] = []


def app(environ, start_response):
    """Echo the body's length; /slow sleeps first."""
    if environ["PATH_INFO"] == "/slow":
        time.sleep(float(environ.get("QUERY_STRING") or 2))
    body = environ["wsgi.input"].read()
    CALLS.append(len(body))
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"got %d\n" % len(body)]


class Running:
    def __init__(self, **limits):
        self.server = Server(app, "127.0.0.1", 0, HttpLimits(**limits), name="test")
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def port(self) -> int:
        return self.server.port

    def connect(self) -> socket.socket:
        s = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        return s

    def stop(self) -> None:
        self.server.shutdown()
        self.thread.join(15)
        assert not self.thread.is_alive(), "serve_forever did not return after shutdown()"


@pytest.fixture
def running():
    servers: list[Running] = []

    def start(**limits) -> Running:
        r = Running(**limits)
        servers.append(r)
        return r

    yield start
    for r in servers:
        r.stop()


def exchange(sock: socket.socket, data: bytes, timeout: float = 10) -> bytes:
    """Send `data` (from a thread: the server may stop reading midway) and read until the server closes."""
    def send():
        try:
            sock.sendall(data)
        except OSError:
            pass  # the server answered early and closed; the answer is still in our receive queue

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    return read_until_closed(sock, timeout)


def read_until_closed(sock: socket.socket, timeout: float) -> bytes:
    sock.settimeout(timeout)
    out = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        except socket.timeout:
            raise AssertionError(f"the server did not close the connection within {timeout} s; got {out[:200]!r}")
        if not chunk:
            break
        out += chunk
    return out


def read_response(sock: socket.socket, timeout: float = 5) -> bytes:
    """One whole response (Content-Length framed) from a keep-alive connection."""
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        assert chunk, f"closed mid-response: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")))
    while len(body) < length:
        body += sock.recv(4096)
    return head + b"\r\n\r\n" + body


def status(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


def chunked(payload: bytes, size: int = 64 << 10) -> bytes:
    parts = [b"%x\r\n%s\r\n" % (len(payload[i:i + size]), payload[i:i + size]) for i in range(0, len(payload), size)]
    return b"".join(parts) + b"0\r\n\r\n"


POST_CHUNKED = b"POST / HTTP/1.1\r\nHost: t\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n"


def test_body_limit_whatever_the_framing(running):
    r = running(max_body_bytes=100_000)
    CALLS.clear()
    ok = exchange(r.connect(), b"POST / HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: 100000\r\n\r\n"
                  + b"a" * 100_000)
    assert status(ok) == 200 and ok.endswith(b"got 100000\n")
    big = exchange(r.connect(), b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 100001\r\n\r\n" + b"a" * 100_001)
    assert status(big) == 413 and b"body larger than 100000 bytes" in big
    # chunked: waitress counts what arrives and stops at the limit; the application is never called
    big = exchange(r.connect(), POST_CHUNKED + chunked(b"a" * 1_000_000))
    assert status(big) == 413
    small = exchange(r.connect(), POST_CHUNKED + chunked(b"a" * 50_000, size=1000))
    assert status(small) == 200 and small.endswith(b"got 50000\n")
    assert CALLS == [100_000, 50_000]


def test_oversized_headers_get_431(running):
    r = running(max_header_bytes=4096)
    response = exchange(r.connect(), b"GET / HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * 8000 + b"\r\n\r\n")
    assert status(response) == 431


def test_a_trickled_header_is_cut_at_the_header_timeout(running):
    r = running(header_timeout=1.5, idle_timeout=60)
    sock = r.connect()
    started = time.monotonic()
    sock.setblocking(False)
    request = b"GET / HTTP/1.1\r\nHost: t\r\n" + b"X-Slow: " + b"a" * 100
    closed_after = None
    for byte in request:  # one byte every 0.2 s: constant activity, so only a deadline can end it
        try:
            sock.send(bytes([byte]))
        except OSError:
            closed_after = time.monotonic() - started
            break
        time.sleep(0.2)
        try:
            data = sock.recv(4096)
        except BlockingIOError:
            continue
        assert data.startswith(b"HTTP/1.1 408") or data == b"", data
        closed_after = time.monotonic() - started
        break
    assert closed_after is not None, "the server kept a trickling header for 20 s"
    assert 1.4 <= closed_after <= 4.0, closed_after
    assert r.server.closed_by_deadline["header"] == 1


def test_a_connection_that_sends_nothing_is_closed_at_the_header_timeout(running):
    r = running(header_timeout=1.0)
    sock = r.connect()
    started = time.monotonic()
    assert read_until_closed(sock, timeout=5) == b""  # closed without an answer
    assert 0.9 <= time.monotonic() - started <= 3.5


def test_a_trickled_body_is_cut_at_the_body_timeout(running):
    r = running(header_timeout=1.0, body_timeout=2.0)
    sock = r.connect()
    sock.sendall(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\n")
    started = time.monotonic()
    sock.setblocking(False)
    response = b""
    for _ in range(60):  # a byte every 0.1 s: the header timeout (1 s) must not apply to the body
        try:
            sock.send(b"a")
            response = sock.recv(4096)
            break
        except BlockingIOError:
            time.sleep(0.1)
        except OSError:
            break
    elapsed = time.monotonic() - started
    assert response.startswith(b"HTTP/1.1 408"), response
    assert 1.9 <= elapsed <= 4.5, elapsed


def test_a_slow_application_is_not_cut_by_the_deadlines(running):
    r = running(header_timeout=1.0, body_timeout=1.0, idle_timeout=1.0)
    response = requests.get(f"http://127.0.0.1:{r.port}/slow?2.5", timeout=10)
    assert response.status_code == 200


def test_keep_alive_connections_close_after_the_idle_timeout_not_the_header_timeout(running):
    r = running(header_timeout=1.0, idle_timeout=3.0)
    sock = r.connect()
    sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
    assert status(read_response(sock)) == 200
    time.sleep(1.8)  # past the header timeout, within the idle timeout: a second request is fine
    sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
    assert status(read_response(sock)) == 200
    started = time.monotonic()
    assert read_until_closed(sock, timeout=8) == b""
    assert 2.5 <= time.monotonic() - started <= 5.5


def test_the_connection_limit_holds_new_connections_back(running):
    r = running(max_connections=3, header_timeout=30)
    idle = [r.connect() for _ in range(3)]
    time.sleep(0.5)  # accepted: the limit is reached
    late = r.connect()
    late.sendall(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    late.settimeout(1.0)
    with pytest.raises(socket.timeout):
        late.recv(4096)  # waiting in the listen backlog
    idle[0].close()
    assert status(read_until_closed(late, timeout=5)) == 200
    for s in idle[1:]:
        s.close()


def test_threads_stay_bounded_under_many_connections(running):
    r = running(threads=4, header_timeout=30)
    before = threading.active_count()
    socks = [r.connect() for _ in range(40)]
    for s in socks:
        s.sendall(b"GET / HT")
    time.sleep(0.5)
    assert threading.active_count() == before  # one loop thread and a fixed pool, whatever the clients
    ok = requests.get(f"http://127.0.0.1:{r.port}/", timeout=5)
    assert ok.status_code == 200
    for s in socks:
        s.close()


def test_shutdown_lets_a_request_in_flight_finish_then_refuses(running):
    r = Running(shutdown_grace=5.0)
    result = {}

    def slow():
        result["response"] = requests.get(f"http://127.0.0.1:{r.port}/slow?1", timeout=10)

    t = threading.Thread(target=slow)
    t.start()
    time.sleep(0.3)
    r.server.shutdown()
    r.thread.join(10)
    t.join(10)
    assert not r.thread.is_alive()
    assert result["response"].status_code == 200
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{r.port}/", timeout=2)


def test_shutdown_from_a_signal_handler_ends_serve_forever_in_the_main_thread():
    server = Server(app, "127.0.0.1", 0, HttpLimits(), name="test")
    previous = signal.signal(signal.SIGUSR1, lambda *_: server.shutdown())
    try:
        threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGUSR1)).start()
        started = time.monotonic()
        server.serve_forever()  # in the main thread, where the handler runs
        assert time.monotonic() - started < 5
    finally:
        signal.signal(signal.SIGUSR1, previous)


def test_limits_are_validated():
    with pytest.raises(ValueError, match="header_timeout"):
        HttpLimits(header_timeout=0)
    with pytest.raises(ValueError, match="threads"):
        HttpLimits(threads=0)
