"""What the strategies that reach a server held in an environment share: a free port on
the host, and the wait until the server's address accepts a connection."""

from __future__ import annotations

import socket
import time

from bench import interrupt

PATH_WAIT_S = 15.0  # how long a ready server's address may take to accept a connection


def free_port() -> int:
    """A TCP port free on the host's loopback right now (the kernel's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_path(host: str, port: int, limit: float = PATH_WAIT_S) -> str:
    """Connect to host:port until it accepts (then close at once) or `limit` seconds have
    passed: "" when the path is up, else the last error. Ctrl-C is honoured between tries."""
    deadline = time.monotonic() + limit
    while True:
        interrupt.check()
        try:
            with socket.create_connection((host, port), timeout=1.0):
                return ""
        except OSError as e:
            why = e.strerror or str(e) or type(e).__name__
        if time.monotonic() >= deadline:
            return why
        time.sleep(0.1)
