"""Listening sockets: bind one, or say in one line why it cannot be bound.

Every daemon binds its port before doing any other work (the config service before it
migrates or seeds), so a port that is taken fails fast with `ListenError`, whose message
names the address and the setting that chose it; the command prints it and exits 2.
"""

from __future__ import annotations

import socket


class ListenError(Exception):
    """The address of `setting` cannot be listened on; the message says why, in one line."""

    def __init__(self, setting: str, host: str, port: int, reason: str) -> None:
        self.setting = setting
        super().__init__(
            f"cannot listen on {address(host, port)} ({setting}): {reason}; stop what uses it "
            f"or set {setting} to another host:port"
        )


def address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def bind_tcp(setting: str, host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    """A TCP socket bound as the servers bind theirs (SO_REUSEADDR), not yet listening.

    `reuse_port`: SO_REUSEPORT too, so the worker processes of one daemon can each bind
    and listen on the same port (the kernel spreads connections over the listeners; it
    lets only sockets of the same user join).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ListenError(setting, host, port, (exc.strerror or str(exc)).lower()) from None
    return sock


def check_free(setting: str, host: str, port: int, *, reuse_port: bool = False) -> None:
    """Raise `ListenError` unless `host:port` could be listened on right now (`reuse_port`:
    alongside the SO_REUSEPORT sockets of the same daemon's other workers)."""
    bind_tcp(setting, host, port, reuse_port=reuse_port).close()
