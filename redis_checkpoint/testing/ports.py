"""Free TCP ports on 127.0.0.1 for throw-away servers."""

from __future__ import annotations

import random
import socket

from redis_checkpoint.testing._process import HOST

__all__ = ["free_cluster_port", "free_port"]


def _bind(port: int) -> int:
    """Bind ``port`` (0: any) on HOST for a moment and return it; OSError if it is taken.

    The one place that opens a socket to look for a port.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, port))
        bound: int = sock.getsockname()[1]
        return bound


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    return _bind(0)


def _port_is_free(port: int) -> bool:
    try:
        _bind(port)
    except OSError:
        return False
    return True


def free_cluster_port(taken: set[int]) -> int:
    """A port that, like port + 10000, was free a moment ago and is not in ``taken``."""
    # Cluster nodes also listen on port + 10000 (the bus), which must exist
    # and be free, so ephemeral ports above 55535 are unusable.
    for _ in range(200):
        port = random.randint(20000, 45000)
        if {port, port + 10000} & taken:
            continue
        if _port_is_free(port) and _port_is_free(port + 10000):
            return port
    raise RuntimeError("no free port pair (port, port+10000) found for a cluster node")
