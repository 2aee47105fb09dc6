"""A held guest's control channel (the burst design): the host end of the virtio-serial
port on which the guest's serving probe reads its commands and writes its answers.

Why the host listens and QEMU connects: a virtio-serial port that no host end holds
reads as end of file in the guest, and a serving probe ends at end of file. So the
socket exists before QEMU starts (a unix socket in the boot's scratch directory) and
QEMU connects to it as it starts (`-chardev socket,server=off`; libvirt's <channel
type='unix'> with mode='connect'), long before the guest opens the port. The host
accepts that connection when it first asks.

In the guest (initramfs.RUN_SCRIPT) the port is the `PORT_NAME` virtserialport,
/dev/vportNpM, opened once (a port takes one opener) as the probe's stdin and, behind
a relay that puts the probe's lines up to its `ready` on the console, its stdout: the
console still carries `ready` and the run's markers; the answers never reach it, so
they are no records of the launch. The socket goes with the scratch directory.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import time
from pathlib import Path

from bench.envs.base import ChannelError
from bench.envs.guest import GuestError

PORT_NAME = "isobench.ctl"  # the virtserialport's name, how the guest finds it
SOCKET_NAME = "ctl.sock"  # in the boot's scratch directory
SUN_PATH_MAX = 107  # sockaddr_un's sun_path, its NUL excluded
MAX_LINE = 1 << 20  # an answer longer than this is no answer
GONE = "the guest ended (its control port closed) before answering"


class ControlPort:
    """The host end: a listening unix socket QEMU connects to; `ask` sends one command
    line and returns the next line the guest wrote. Not thread-safe (one asker)."""

    def __init__(self, path: Path):
        if len(os.fsencode(path)) > SUN_PATH_MAX:
            raise GuestError(
                f"the control socket's path is longer than {SUN_PATH_MAX} bytes ({path}): "
                "use a shorter scratch directory (TMPDIR)"
            )
        self.path = path
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._conn: socket.socket | None = None
        self._buf = b""
        self.closed = False
        try:
            self._listener.bind(str(path))
            self._listener.listen(1)
        except OSError as e:
            self._listener.close()
            raise GuestError(f"cannot listen on {path}: {e.strerror}") from None

    def _connection(self, timeout: float) -> socket.socket:
        if self._conn is None:
            ready, _, _ = select.select([self._listener], [], [], max(0.0, timeout))
            if not ready:
                raise ChannelError("the guest's control port was never connected (QEMU)")
            self._conn, _ = self._listener.accept()
            self._conn.setblocking(False)
        return self._conn

    def ask(self, command: str, timeout: float) -> str:
        """Write `command` and a newline, return the next line (without its newline).
        ChannelError: closed, the guest's end went away, or no line in `timeout` s."""
        if self.closed:
            raise ChannelError("the instance has ended")
        if "\n" in command:
            raise ChannelError("a command is one line")
        deadline = time.monotonic() + timeout
        conn = self._connection(timeout)
        try:
            conn.sendall(command.encode() + b"\n")
        except BlockingIOError:
            raise ChannelError("the guest does not read its commands") from None
        except OSError:
            raise ChannelError(GONE) from None
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([conn], [], [], left)[0]:
                raise ChannelError(f"no answer to {command!r} within {timeout:g} s")
            try:
                chunk = conn.recv(65536)
            except OSError as e:
                raise ChannelError(f"the guest's control port failed ({e.strerror})") from None
            if not chunk:
                raise ChannelError(GONE)
            self._buf += chunk
            if len(self._buf) > MAX_LINE:
                raise ChannelError(f"an answer longer than {MAX_LINE} bytes")
        line, _, self._buf = self._buf.partition(b"\n")
        return line.decode(errors="replace").rstrip("\r")

    def close(self) -> None:
        """Close both sockets (idempotent); the socket file goes with the scratch dir."""
        self.closed = True
        for s in (self._conn, self._listener):
            if s is not None:
                with contextlib.suppress(OSError):
                    s.close()
