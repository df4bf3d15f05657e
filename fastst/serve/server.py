"""The listening socket of ``fastst serve`` (:mod:`fastst.cli.serve`): bound before any model loads, so a
port in use is one ``error:`` line; loopback only unless ``--host`` says otherwise."""

from __future__ import annotations

import ipaddress
import socket

from fastst.errors import UsageError

LOOPBACK_HOSTS = ["127.0.0.1", "localhost", "::1", "[::1]"]


def bind(host: str, port: int) -> socket.socket:
    """A listening socket, bound before the models load would be wasted: ``UsageError`` if the port is taken."""
    if not 0 <= port <= 65535:
        raise UsageError(f"--port must be from 0 to 65535, got {port}")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise UsageError(f"--host {host}: cannot resolve ({e.strerror})") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as e:
        sock.close()
        raise UsageError(f"cannot listen on {host}:{port} ({e.strerror}); choose another --port") from None
    sock.listen(64)
    sock.set_inheritable(True)
    return sock


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def url_for(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    if host in ("0.0.0.0", "::"):
        host = socket.gethostname()
    return f"http://{f'[{host}]' if ':' in host else host}:{port}/"
