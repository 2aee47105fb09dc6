"""One docker container as an Instance: create → attach → start through the API, `ready`
on the attached stream, exit from `wait`, removal whatever happened (bench/envs/docker.py
is the environment that starts them).

A probe in serve mode gets its control channel the way `docker run -i` does: the
container is created with stdin open (no tty) and attached with stdin through the API's
hijacked attach socket, whose stdout/stderr frames (8-byte headers) the same reader
thread demultiplexes; ask() writes a command line to the socket and takes the next
stdout line the reader saw. Any runtime works (runc, runsc: the daemon's shim carries
stdin), so does any seccomp setting."""

from __future__ import annotations

import contextlib
import shutil
import threading
import time

from bench import interrupt
from bench.envs import containers as ct
from bench.envs import image as img
from bench.envs.base import ChannelError, Instance, Launch, StartError
from bench.envs.docker_daemon import CALL_TIMEOUT_S, explain, force_remove
from bench.envs.process import Streamed, to_launch
from bench.probeio import is_ready


class DockerInstance(Instance):
    """One container: begin() = create → attach → start (phases created, started), then
    ready on the attached stream, exit from `wait`; a stop is SIGTERM through the API.
    An engine failure or a hang while starting is this instance's verdict (its launch
    says which step), as a `podman run` that fails is a failed launch, not an exception.
    _end reads the launch cgroup and the host-side sampler, concludes, and removes the
    container (its runsc processes too when it hung), the volume and the cgroup."""

    def __init__(self, api, name: str, timeout: float, cgroup: ct.LaunchCgroup, volume):
        super().__init__(name, timeout)
        self.api = api
        self.cgroup = cgroup
        self.volume = volume
        self.cid: str | None = None
        self.step = "create"
        self.phases: dict[str, int] = {}
        self.failure: tuple[str, str] | None = None  # (status, reason) of a failed step
        self.hung = False  # teardown kills its runsc processes before removing it
        self.res = Streamed(t_submit=self.t_submit)
        self._ready_seen = threading.Event()
        self._stream_ended = threading.Event()
        self._stderr: list[bytes] = []
        self._stream = None
        self._stdin = None  # serve mode: the attach socket (a socket.socket) commands go to
        self._lines = threading.Condition()  # guards res.lines: the reader adds, ask() takes
        self._reader: threading.Thread | None = None
        self._sampler: ct.HostSideSampler | None = None
        self.network = "none"  # the container's network mode (its path from the host)
        self.runsc = False  # runsc: run with --network=host (the daemon's runtimeArgs)
        self.path = ""  # the network path taken, once address() was asked

    def address(self, port: int) -> tuple[str, int]:
        """network=host: loopback; bridge: the port published on 127.0.0.1 (the daemon's
        userland proxy for loopback, its NAT rules otherwise)."""
        problem = ct.net_path_problem(self.network)
        if problem or self.cid is None:
            raise StartError(problem or f"{self.name}: no container")
        sandbox = (
            " (runsc --network=host: the kernel's stack, not gVisor's netstack)"
            if self.runsc
            else ""
        )
        if self.network == "host":
            self.path = f"host network: loopback 127.0.0.1:{port}{sandbox}"
            return ("127.0.0.1", port)
        try:
            bound = self._call(self.api.port, self.cid, port) or []
        except Exception as e:  # noqa: BLE001 - the daemon's reason
            raise StartError(f"{self.name}: published port of {port}: {explain(e)}") from None
        host_port = next((int(b["HostPort"]) for b in bound if b.get("HostPort")), None)
        if host_port is None:
            raise StartError(f"{self.name}: port {port} is not published")
        self.path = (
            f"bridge via published port 127.0.0.1:{host_port} -> {port} "
            f"(docker-proxy for loopback){sandbox}"
        )
        return ("127.0.0.1", host_port)

    def _call(self, fn, *args, **kwargs):
        """An API call bounded by what is left of the instance's deadline."""
        left = self.left()
        if left <= 0:
            raise TimeoutError(self.step)
        self.api.timeout = left
        try:
            return fn(*args, **kwargs)
        finally:
            self.api.timeout = CALL_TIMEOUT_S

    def begin(
        self, *, image, argv, labels, host_config, ports=None, workdir=img.WORKDIR, serve=False
    ) -> None:
        """create → attach → start; a failed step is recorded (self.failure), not raised.
        `serve`: stdin open and attached (the control channel of a probe in serve mode)."""
        self._guarded(self._begin, image, argv, labels, host_config, ports, workdir, serve)

    def _begin(self, image, argv, labels, host_config, ports, workdir, serve) -> None:
        self.cid = self._call(
            self.api.create_container,
            image,
            command=argv,
            name=self.name,
            labels=labels,
            host_config=host_config,
            working_dir=workdir,
            ports=ports,
            stdin_open=serve,  # StdinOnce too: the probe reads EOF when the attach ends
        )["Id"]
        self.phases["created"] = ct.ns_since(self.t_submit)
        self.step = "attach"
        self.api.timeout = self.timeout + CALL_TIMEOUT_S  # a stream, not a call
        try:
            if serve:
                self._stream = self._attach_stdin()
            else:
                self._stream = self.api.attach(
                    self.cid, stdout=True, stderr=True, stream=True, demux=True
                )
        finally:
            self.api.timeout = CALL_TIMEOUT_S
        self._reader = threading.Thread(target=self._read, daemon=True, name="isobench-attach")
        self._reader.start()
        self.step = "start"
        self._call(self.api.start, self.cid)
        self.phases["started"] = ct.ns_since(self.t_submit)
        self._sampler = ct.HostSideSampler(lambda: ct.find_carriers(self.cid), find_every=0.1)
        self._sampler.__enter__()
        self.watchers.append(self._sampler)
        self.step = "ready"

    def _attach_stdin(self):
        """The hijacked attach socket with stdin: (stdout, stderr) chunks from its frames,
        as api.attach(demux=True) gives them; self._stdin is where commands go."""
        from docker.utils.socket import demux_adaptor, frames_iter

        params = {"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1}
        sock = self.api.attach_socket(self.cid, params=params)
        self._stdin = getattr(sock, "_sock", sock)  # SocketIO over the daemon's socket
        self._stdin.settimeout(None)  # the reader blocks; ask() bounds its own wait
        return _Frames(sock, (demux_adaptor(*f) for f in frames_iter(sock, tty=False)))

    def _guarded(self, fn, *args) -> bool:
        """Run an API step; True when it worked. A timeout, a daemon that went away or an
        API error becomes this instance's failure (status, reason)."""
        import docker.errors
        import requests

        try:
            fn(*args)
            return True
        except (TimeoutError, requests.exceptions.Timeout):
            self.failure = ("timeout", self._timeout_reason())
            self.hung = True
        except requests.exceptions.ConnectionError as e:
            reason = f"dockerd went away during {self.step}: {ct.first_line(str(e))}"
            self.failure = ("failed", reason)
            self.hung = True
        except docker.errors.APIError as e:
            self.failure = ("failed", f"{self.step}: {explain(e)}")
        return False

    def _timeout_reason(self) -> str:
        return f"{self.step} did not return within {self.timeout:g} s: instance removed"

    # -- the attached stream (a thread: `ready` is timestamped as it arrives)

    def _read(self) -> None:
        buf = b""
        try:
            for out, err in self._stream:
                if err:
                    self._stderr.append(err)
                if not out:
                    continue
                *complete, buf = (buf + out).split(b"\n")
                for raw in complete:
                    self._take(raw.decode(errors="replace").rstrip("\r"))
        except Exception:  # noqa: BLE001 - the stream ends when the container is removed
            pass
        if buf:
            self._take(buf.decode(errors="replace"))
        with self._lines:
            self._stream_ended.set()
            self._lines.notify_all()

    def _take(self, line: str) -> None:
        res = self.res
        if res.t_ready is None:
            if is_ready(line):
                res.t_ready = time.monotonic_ns()
                self._ready_seen.set()
            else:
                res.before_ready.append(line)
            return
        with self._lines:
            res.lines.append(line)
            self._lines.notify_all()

    def ask(self, command: str, timeout: float) -> str:
        """Serve mode: `command` and a newline into the attach socket's stdin; the next
        stdout line after `ready`, taken out of the launch's lines."""
        if self._stdin is None:
            raise ChannelError(f"{self.name}: started without a control channel (not serving)")
        if self.launch is not None or self.failure is not None:
            raise ChannelError(f"{self.name}: the instance has ended")
        if self.res.t_ready is None:
            raise ChannelError(f"{self.name}: asked before the probe said `ready`")
        with self._lines:
            n = len(self.res.lines)
        try:
            self._stdin.sendall(command.encode() + b"\n")
        except OSError as e:
            raise ChannelError(f"{self.name}: the attach socket is closed ({e})") from None
        with self._lines:
            self._lines.wait_for(
                lambda: len(self.res.lines) > n or self._stream_ended.is_set(), timeout
            )
            if len(self.res.lines) > n:
                return self.res.lines.pop(n)
        if self._stream_ended.is_set():
            raise ChannelError(f"{self.name}: the probe ended before answering {command!r}")
        raise ChannelError(f"{self.name}: no answer to {command!r} within {timeout:g} s")

    # -- the Instance hooks

    def _ready(self, timeout: float) -> bool:
        """`ready` seen within `timeout` (False at once when the stream ended without)."""
        deadline = time.monotonic() + timeout
        while self.failure is None and not self._ready_seen.is_set():
            left = deadline - time.monotonic()
            if left <= 0 or self._stream_ended.is_set():
                break
            self._ready_seen.wait(min(left, 0.05))
        return self._ready_seen.is_set()

    def _signal_stop(self) -> None:
        if self.failure is None and self.cid is not None:
            # exited already (a 409), or the daemon does not answer: _wait_exit times out
            with contextlib.suppress(Exception):
                self._call(self.api.kill, self.cid, "SIGTERM")

    def _wait_exit(self, timeout: float) -> bool:
        if self.failure is not None or self.cid is None:
            return True  # it never started: nothing to wait for
        self.step = "exit"

        def wait() -> None:
            if timeout <= 0:
                raise TimeoutError(self.step)
            self.api.timeout = timeout
            try:
                status = self.api.wait(self.cid, timeout=max(1, int(timeout) + 1))
            finally:
                self.api.timeout = CALL_TIMEOUT_S
            self.res.t_exit = time.monotonic_ns()
            self.res.exit_code = status.get("StatusCode")

        if self._guarded(wait):
            return True
        if self.failure and self.failure[0] == "timeout":
            self.failure = None  # not an engine failure: conclude() says "no exit"
            return False
        return True

    def _kill(self) -> None:
        """A hung runsc (its sandbox, gofer, runtime CLI) is killed now; the container
        itself goes with the force remove in _end."""
        self.hung = True
        if self.cid is not None:
            ct.kill_carriers(self.cid)

    def _end(self, *, stopped: bool, timed_out: bool) -> Launch:
        try:
            res = self.res
            exited = res.t_exit is not None
            if exited and self._reader is not None:
                self._reader.join(max(0.1, min(5.0, self.left())))  # the last lines
            if self._sampler is not None:
                self._sampler.stop()
            cgroup = self.cgroup.read() if exited else {}
            res.timed_out = timed_out
            res.stderr = b"".join(self._stderr).decode(errors="replace")
            with self._lines:  # a snapshot: a hung stream's reader may still run
                res.lines = list(res.lines)
            launch = to_launch(res, self.timeout, "instance", stopped=stopped)
            launch.phases.update(self.phases)
            launch.cgroup = cgroup
            launch.host_side = self._sampler.result() if self._sampler else {}
            if self.failure is not None:  # an engine step failed: its own reason
                launch.status, launch.reason = self.failure
            launch.extra.update(
                container_id=self.cid, name=self.name, cgroup_parent=self.cgroup.rel
            )
            if self.path:
                launch.net_path = self.path
            return launch
        finally:
            with interrupt.shielded():
                self._teardown()

    def _teardown(self) -> None:
        """Remove the container (force), its runsc processes, the stream, the launch
        cgroup and the volume directory."""
        self.api.timeout = CALL_TIMEOUT_S
        if self._sampler is not None:
            self._sampler.stop()
        if self.cid is not None:
            force_remove(self.api, self.cid, hung=self.hung)
        if self._stream is not None:
            with contextlib.suppress(Exception):
                self._stream.close()
        self.cgroup.remove()
        if self.volume is not None:
            shutil.rmtree(self.volume, ignore_errors=True)


class _Frames:
    """The demultiplexed frames of a hijacked attach socket, closable as api.attach's
    stream is (the reader's iteration then ends)."""

    def __init__(self, sock, frames):
        self.sock = sock
        self.frames = frames

    def __iter__(self):
        return iter(self.frames)

    def close(self) -> None:
        raw = getattr(self.sock, "_sock", None)
        for obj in (raw, self.sock):
            if obj is None:
                continue
            if obj is raw:
                with contextlib.suppress(OSError):
                    raw.shutdown(2)
            with contextlib.suppress(OSError):
                obj.close()
