"""The k8s stand-in's serving pods and their pods/attach (tests/k8s_standin.py tells the
whole stand-in; its StandIn mixes in ServingPods, its HTTP handler AttachRoute).

A pod whose probe is in serve mode (`--serve`, `stdin: true`) is the one pod the stand-in
RUNS: locally, on this host, as a plain child process (the bundle's binary from
isobench's cache, found by the pod's `isobench.bundle` annotation; no container, no image,
no isolation), because a control channel is only worth testing with a probe that
answers. Its stdout lines become the pod's log and the attach streams' stdout, a delete
SIGTERMs it, its exit is the container's. Its answers are no measurement of any pod.

pods/attach is a WebSocket (`v4.channel.k8s.io` or `channel.k8s.io`, the first offered
that is known): channel 0 into the probe's stdin, its stdout lines out on channel 1, and
a channel-3 Success status before the close when the container ends."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import signal
import struct
import subprocess
import threading
from pathlib import Path

SERVE = "--serve"  # a probe in serve mode: run for real, locally (see the docstring)
WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
WS_PROTOCOLS = ("v4.channel.k8s.io", "channel.k8s.io")


def _ws_frame(opcode: int, payload: bytes) -> bytes:
    """A server's frame: final, unmasked."""
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, n)
    elif n < 2**16:
        head = struct.pack("!BBH", 0x80 | opcode, 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 127, n)
    return head + payload


def _ws_read(rfile) -> tuple[int, bytes] | None:
    """A client's frame (masked): (opcode, payload); None at the end of the stream."""
    head = rfile.read(2)
    if len(head) < 2:
        return None
    opcode, n = head[0] & 0x0F, head[1] & 0x7F
    if n == 126:
        n = struct.unpack("!H", rfile.read(2))[0]
    elif n == 127:
        n = struct.unpack("!Q", rfile.read(8))[0]
    mask = rfile.read(4) if head[1] & 0x80 else b"\0\0\0\0"
    data = rfile.read(n)
    if len(data) < n:
        return None
    return opcode, bytes(b ^ mask[i % 4] for i, b in enumerate(data))


class ServingPods:
    """The serving pods of StandIn (mixed in): what its pretend kubelet runs for a pod in
    serve mode. Uses StandIn's lock, pods, signals, children, stdout, stopping, delays and
    probe_dir, and its _running, _log, _mark, _terminate and _finish_delete."""

    def _probe_binary(self, key, probe: str) -> Path:
        if self.probe_dir is not None:
            return self.probe_dir / probe
        from bench.resources import cache_dir

        with self.lock:
            annotations = self.pods[key]["metadata"].get("annotations") or {}
        return cache_dir() / "bundles" / annotations.get("isobench.bundle", "-") / "bin" / probe

    def _serve_pod(self, key, container: dict, argv: list[str]) -> None:
        """A serving probe, RUN LOCALLY as a child (see the module's docstring): its
        stdout lines are the log (and the attach streams'), a delete SIGTERMs it, its
        exit is the container's."""
        name = key[1]
        term = self.signals[key]
        binary = self._probe_binary(key, argv[0].rsplit("/", 1)[-1])
        try:
            child = subprocess.Popen(
                [str(binary), *argv[1:]],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
        except OSError as e:
            self._terminate(key, 128, "StartError", f"{binary}: {e} (isobench stand-in)", "Failed")
            term.wait()
            return self._finish_delete(key)
        with self.lock:
            self.children[key] = child
            self.stdout[key] = []

        self._running(key, container)

        def pump(stream, is_stdout: bool) -> None:
            for raw in stream:
                line = raw.decode(errors="replace").rstrip("\n")
                if is_stdout and line == "ready":
                    self._mark(name, "ready")
                self._log(key, line, stdout=is_stdout)

        readers = [
            threading.Thread(target=pump, args=(child.stdout, True), daemon=True),
            threading.Thread(target=pump, args=(child.stderr, False), daemon=True),
        ]
        for r in readers:
            r.start()
        while child.poll() is None and not self.stopping.is_set():
            if term.wait(0.02):  # deleted: the kubelet's SIGTERM
                with contextlib.suppress(OSError):
                    child.send_signal(signal.SIGTERM)
                try:
                    child.wait(self.delays.term + 5)
                except subprocess.TimeoutExpired:
                    child.kill()
                break
        if self.stopping.is_set():
            return
        child.wait()
        for r in readers:
            r.join(5)
        with contextlib.suppress(OSError):
            child.stdin.close()
        with self.lock:
            self.children.pop(key, None)
        code = child.returncode if child.returncode >= 0 else 128 - child.returncode
        reason = "Completed" if code == 0 else "Error"
        self._terminate(key, code, reason, None, phase="Succeeded" if code == 0 else "Failed")
        return self._finish_delete(key)

    def write_stdin(self, key, data: bytes) -> bool:
        """The attach's stdin into a serving probe; False when it has none (or ended)."""
        with self.lock:
            child = self.children.get(key)
        if child is None or child.stdin is None:
            return False
        try:
            child.stdin.write(data)
            child.stdin.flush()
        except (OSError, ValueError):
            return False
        return True


class AttachRoute:
    """pods/attach for the stand-in's HTTP handler (mixed in): uses its api, rfile,
    wfile, headers and its _refuse (an API error answer)."""

    def _attach(self, ns: str, name: str, q: dict) -> None:
        """pods/attach: the WebSocket handshake (the protocol offered first that is known),
        then the pod's stdout lines from now on as channel-1 messages and channel-0 messages
        into the serving probe's stdin, until the container ends or the client closes."""
        api = self.api
        key = (ns, name)
        with api.lock:
            pod = api.pods.get(key)
            serving = key in api.stdout
        if pod is None:
            return self._refuse(404, "NotFound", f'pods "{name}" not found')
        container = (pod["spec"].get("containers") or [{}])[0]
        if not container.get("stdin") or not serving:
            return self._refuse(
                400, "BadRequest", f'container "probe" in pod "{name}" has no stdin to attach'
            )
        offered = [p.strip() for p in (self.headers.get("Sec-WebSocket-Protocol") or "").split(",")]
        protocol = next((p for p in offered if p in WS_PROTOCOLS), None)
        if self.headers.get("Upgrade", "").lower() != "websocket" or protocol is None:
            return self._refuse(400, "BadRequest", "attach needs a WebSocket with channel.k8s.io")
        accept = base64.b64encode(
            hashlib.sha1((self.headers["Sec-WebSocket-Key"] + WS_GUID).encode()).digest()
        ).decode()
        self.send_response(101)
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", accept)
        self.send_header("Sec-WebSocket-Protocol", protocol)
        self.end_headers()
        self.wfile.flush()
        self.close_connection = True
        closed = threading.Event()
        send = threading.Lock()

        def write(frame: bytes) -> None:
            with send:
                self.wfile.write(frame)
                self.wfile.flush()

        def from_client() -> None:
            try:
                while (frame := _ws_read(self.rfile)) is not None:
                    opcode, data = frame
                    if opcode == 0x8:  # close
                        break
                    if opcode == 0x9:  # ping
                        write(_ws_frame(0xA, data))
                    elif opcode in (0x1, 0x2) and data[:1] == b"\0":
                        api.write_stdin(key, data[1:])
            except (OSError, ValueError, struct.error):
                pass
            closed.set()
            with api.lock:
                api.lock.notify_all()

        threading.Thread(target=from_client, daemon=True).start()
        with api.lock:
            sent = len(api.stdout.get(key, []))
        try:
            while not closed.is_set():
                with api.lock:
                    lines = list(api.stdout.get(key, []))[sent:]
                    ended = key not in api.children or api.stopping.is_set()
                    if not lines and not ended:
                        api.lock.wait(0.2)
                        continue
                for line in lines:
                    write(_ws_frame(0x2, b"\1" + line.encode() + b"\n"))
                sent += len(lines)
                if ended:
                    break
            if not closed.is_set():
                with contextlib.suppress(OSError):
                    write(_ws_frame(0x2, b"\3" + json.dumps({"status": "Success"}).encode()))
                    write(_ws_frame(0x8, struct.pack("!H", 1000)))
        except OSError:
            pass
