"""Port choice for the native stack: the compose defaults, or a free port when one is taken.

A Debian `prometheus` package starts its own service on 9090, so "busy" is the normal case on
many machines; the configs are rendered for whatever port is chosen here.
"""
from __future__ import annotations

import socket
from typing import Callable, Collection, Mapping

from modelmon.stack.errors import StackError
from modelmon.stack.topology import DEFAULT_PORTS


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        # SO_REUSEADDR as the servers use it: a socket in TIME_WAIT does not make the port busy.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def any_free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def choose_ports(requested: Mapping[str, int], is_free: Callable[[int], bool] = port_is_free,
                 pick: Callable[[], int] = any_free_port,
                 running: Collection[str] | None = None) -> tuple[dict[str, int], list[str]]:
    """Port per service, and a note for each default that was busy and replaced.

    A port the user asked for explicitly must be free; a default port is replaced silently
    apart from the note. ``running``: the services that will run (default: all); the others
    keep their default port without a check or a note (a system Redis on 6379 is no news to a
    stack that runs none).
    """
    unknown = sorted(set(requested) - set(DEFAULT_PORTS))
    if unknown:
        raise StackError(f"unknown service(s) in --port: {', '.join(unknown)} "
                         f"(known: {', '.join(DEFAULT_PORTS)})")
    ports: dict[str, int] = {}
    notes: list[str] = []
    for name, port in requested.items():
        if not is_free(port):
            raise StackError(f"port {port} asked for {name} is already in use on 127.0.0.1")
        ports[name] = port
    for name, default in DEFAULT_PORTS.items():
        if name in ports:
            continue
        if running is not None and name not in running:
            ports[name] = default
            continue
        if default not in ports.values() and is_free(default):
            ports[name] = default
            continue
        port = pick()
        while port in ports.values():
            port = pick()
        ports[name] = port
        notes.append(f"port {default} ({name}) is in use; {name} listens on {port} instead")
    return {name: ports[name] for name in DEFAULT_PORTS}, notes
