"""Free loopback ports and waiting for a server to listen on one."""

from __future__ import annotations

import socket
import time


def free_port() -> int:
    """A loopback port that nothing listens on right now.

    Another program can still take it before ours binds, so whoever starts a server on it must
    confirm that its own process is the one that bound.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def is_listening(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a TCP connection to ``host:port`` succeeds."""
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def wait_for_port(port: int, *, timeout_s: float = 15.0, host: str = "127.0.0.1") -> None:
    """Block until something listens on ``host:port``; ``TimeoutError`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not is_listening(port, host):
        if time.monotonic() > deadline:
            raise TimeoutError(f"nothing listened on {host}:{port} within {timeout_s:.0f} s")
        time.sleep(0.05)
