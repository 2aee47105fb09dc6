"""A serving probe's control channel over a WebSocket in Kubernetes' remote-command
framing: what the CRI streaming server (the URL a CRI Attach returns) and the API
server's pods/attach speak. Each binary message starts with its channel's byte: 0 the
probe's stdin, 1 its stdout, 2 its stderr, 3 the error channel (a Status when the
stream ends). `channel.k8s.io` and `v4.channel.k8s.io` frame stdin and stdout alike.

The channel is read in the caller's thread, inside ask(): no reader thread, the
answer is the next complete stdout line after the command was sent. A line's bytes may
come in several messages; an empty message (a server announcing a channel) is nothing.
Needs `websocket-client` (the kubernetes client's own dependency)."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable

from bench.envs.base import ChannelError

STDIN, STDOUT, STDERR, ERROR = 0, 1, 2, 3
PROTOCOLS = ("v4.channel.k8s.io", "channel.k8s.io")
CONNECT_S = 10.0


def websocket_url(url: str) -> str:
    """Pure: the http(s) URL a streaming server hands out -> its ws(s) URL."""
    if url.startswith("http://"):
        return "ws://" + url[len("http://") :]
    if url.startswith("https://"):
        return "wss://" + url[len("https://") :]
    return url


def without(lines: list[str], taken: list[str]) -> list[str]:
    """Pure: `lines` less one occurrence of each line in `taken`, in order (the answers
    asked over a channel also reach a log that the launch reads its records from)."""
    out = list(lines)
    for line in taken:
        with contextlib.suppress(ValueError):
            out.remove(line)
    return out


class WsChannel:
    """One attach stream to a serving probe (an open websocket-client WebSocket)."""

    def __init__(self, ws, what: str):
        self.ws = ws
        self.what = what
        self.buf = b""
        self.lines: list[str] = []
        self.stderr = b""
        self.closed = False
        self.lock = threading.Lock()

    @classmethod
    def connect(cls, url: str, timeout: float, what: str, header: list[str] | None = None):
        """Open the WebSocket at `url` (a streaming server's http URL is fine) within
        `timeout` s; ChannelError with the server's one line when it cannot."""
        import websocket

        try:
            ws = websocket.create_connection(
                websocket_url(url),
                timeout=max(0.1, timeout),
                subprotocols=list(PROTOCOLS),
                header=header or [],
                enable_multithread=True,
            )
        except Exception as e:  # noqa: BLE001 - refused, timed out, a handshake status
            raise ChannelError(f"{what}: attach stream: {_first_line(str(e))}") from None
        return cls(ws, what)

    def send(self, command: str) -> None:
        if self.closed:
            raise ChannelError(f"{self.what}: the attach stream has ended")
        try:
            self.ws.send_binary(bytes([STDIN]) + command.encode() + b"\n")
        except Exception as e:  # noqa: BLE001 - closed by the server, broken pipe
            self.closed = True
            raise ChannelError(f"{self.what}: the attach stream is closed ({e})") from None

    def ask(self, command: str, timeout: float) -> str:
        """Send `command` (a line) on stdin; the probe's next stdout line."""
        with self.lock:
            self.send(command)
            deadline = time.monotonic() + timeout
            while not self.lines:
                if self.closed:
                    raise ChannelError(f"{self.what}: the probe ended before answering {command!r}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise ChannelError(
                        f"{self.what}: no answer to {command!r} within {timeout:g} s"
                    )
                self._receive(left)
            return self.lines.pop(0)

    def _receive(self, timeout: float) -> None:
        import websocket

        try:
            self.ws.settimeout(timeout)
            opcode, data = self.ws.recv_data()
        except websocket.WebSocketTimeoutException:
            return
        except Exception:  # noqa: BLE001 - the stream ended (the probe exited, removed)
            self.closed = True
            return
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            self.closed = True
            return
        if opcode == websocket.ABNF.OPCODE_TEXT:  # base64.channel.k8s.io is not asked for
            data = data.encode() if isinstance(data, str) else data
        if not data:
            return
        channel, payload = data[0], data[1:]
        if channel == STDOUT:
            *complete, self.buf = (self.buf + payload).split(b"\n")
            self.lines.extend(raw.decode(errors="replace").rstrip("\r") for raw in complete)
        elif channel == STDERR:
            self.stderr = (self.stderr + payload)[-4000:]

    def close(self) -> None:
        self.closed = True
        with contextlib.suppress(Exception):
            self.ws.close(timeout=1)
        with contextlib.suppress(Exception):
            self.ws.shutdown()


def open_bounded(opener: Callable[[], WsChannel], timeout: float, what: str) -> WsChannel:
    """`opener()` (a blocking connect that takes no deadline of its own, as the
    kubernetes client's) within `timeout` s; a channel that opens later is closed."""
    box: dict[str, object] = {}
    abandoned = threading.Event()

    def run() -> None:
        try:
            channel = opener()
        except BaseException as e:  # noqa: BLE001 - handed to the caller
            box["error"] = e
            return
        box["channel"] = channel
        if abandoned.is_set():
            channel.close()

    thread = threading.Thread(target=run, name="isobench-attach", daemon=True)
    thread.start()
    thread.join(max(0.1, timeout))
    if thread.is_alive():
        abandoned.set()
        if "channel" in box:  # opened just now
            box["channel"].close()
        raise ChannelError(f"{what}: the attach stream did not open within {timeout:g} s")
    if "error" in box:
        e = box["error"]
        if isinstance(e, ChannelError):
            raise e
        raise ChannelError(f"{what}: attach stream: {_first_line(str(e))}")
    return box["channel"]


def _first_line(text: str) -> str:
    return (text.strip().splitlines() or [""])[0][:300]
