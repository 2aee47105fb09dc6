"""One swarm service of one replica as an Instance (bench/envs/swarm.py is the kind).

The path of a start: the service is created on a manager; the orchestrator makes its
task, the scheduler assigns it a node, the dispatcher hands it to that node's agent,
whose executor creates and starts the container. isobench watches it twice at once:
- an events stream of the containers labelled with the instance's name, opened before
  the service is made: create, start, die, destroy, each stamped on arrival with the
  host's monotonic clock;
- the service's task list, polled (POLL_S) until the task has a node: "assigned".
On the create event the container is attached (stdout/stderr, and stdin for a probe in
serve mode: the control channel), before the executor's start has run the probe, so
`ready` is stamped as it arrives like docker's. Where the attach comes too late (the
stream then replays the log), `ready` is the arrival of that replay: later than true.

Phases (ns since submit): service (create_service returned), assigned (a poll saw the
task on a node), created, started, ready, exit (die), removed (destroy, after the
service's removal), cleaned. Swarm's own stamps are coarser: a task keeps only its
current state and that state's timestamp (the agent's wall clock, reported to the
manager in batches), so a poll sees states late or not at all (accepted, preparing);
they are kept in the launch's extra (task_states) for reference, not as phases.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from typing import Any

from bench import interrupt
from bench.envs import containers as ct
from bench.envs.base import ChannelError, Instance, Launch
from bench.envs.docker_daemon import explain
from bench.envs.process import Streamed, to_launch
from bench.envs.swarm_daemon import remove_services
from bench.probeio import is_ready

POLL_S = 0.01  # the task list, until the task has a node
POLL_SLOW_S = 0.2  # after that: a task that fails (rejected) ends the wait
STREAM_TIMEOUT_S = 24 * 3600  # a stream is read as long as the instance lives
LOG_LOOK_S = 0.25  # a started task without `ready` on its stream: look in its log this often
INSTANCE_LABEL = "isobench.instance"  # the container's label: the instance's name
FAILED_STATES = ("failed", "rejected", "orphaned")
ENDED_STATES = ("complete", "shutdown", *FAILED_STATES)


def wall_ns(stamp: str) -> int | None:
    """Pure: a daemon's RFC 3339 stamp with nanoseconds -> ns since the epoch (UTC)."""
    import calendar

    try:
        day, _, clock = stamp.rstrip("Z").partition("T")
        hms, _, frac = clock.partition(".")
        secs = calendar.timegm(time.strptime(f"{day}T{hms}", "%Y-%m-%dT%H:%M:%S"))
        return secs * 10**9 + int((frac + "000000000")[:9])
    except ValueError:
        return None


class SwarmInstance(Instance):
    """A one-replica service; begin() creates it and starts the watchers."""

    def __init__(self, env, name: str, timeout: float, *, serve: bool):
        super().__init__(name, timeout)
        self.env = env
        self.serve = serve
        self.sid: str | None = None
        self.cid: str | None = None
        self.task: dict[str, Any] = {}
        self.states: list[tuple[str, str]] = []  # (state, swarm's timestamp) as polled
        self.phases: dict[str, int] = {}
        self.failure: tuple[str, str] | None = None
        self.res = Streamed(t_submit=self.t_submit)
        self._wall_offset = time.time_ns() - time.monotonic_ns()  # daemon stamps -> ours
        self.network = "none"
        self.path = ""
        self.remote = ("127.0.0.1", None)  # where published ports are reached
        self._lines = threading.Condition()
        self._ready_seen = threading.Event()
        self._died = threading.Event()
        self._destroyed = threading.Event()
        self._stream_ended = threading.Event()
        self._stopping = threading.Event()
        self._stderr: list[bytes] = []
        self._events = None
        self._stream = None
        self._stdin: socket.socket | None = None
        self._threads: list[threading.Thread] = []
        self._sampler: ct.HostSideSampler | None = None
        # the daemon of the node the task runs on (the manager's unless pinned to a
        # private worker): its events, attach, logs and kill
        self._api = env.stream_api(env.task_host)  # streams: their own client, no timeout
        self._calls = env.call_api(env.task_host)  # the watchers' calls: their own client
        self._manager = env.call_api()  # the task list: only a manager has it

    # -- start

    def begin(self, spec: dict[str, Any]) -> None:
        """Open the events watch, create the service, start the task poller. A failure
        of the daemon is this instance's (failure), not an exception."""
        try:
            self._events = self._api.events(
                filters={"type": "container", "label": f"{INSTANCE_LABEL}={self.name}"},
                decode=True,
            )
            self._thread(self._watch, "isobench-swarm-events")
            self.sid = self.env.cl.api.create_service(**spec)["ID"]
            self.phases["service"] = ct.ns_since(self.t_submit)
            self._thread(self._poll, "isobench-swarm-tasks")
        except Exception as e:  # noqa: BLE001 - the daemon's reason is the launch's
            self.failure = ("failed", f"create service: {explain(e)}")

    def _thread(self, target, name: str) -> None:
        t = threading.Thread(target=target, daemon=True, name=name)
        self._threads.append(t)
        t.start()

    def _watch(self) -> None:
        """Container events of this instance, stamped on arrival."""
        try:
            for ev in self._events:
                now = ct.ns_since(self.t_submit)
                action = ev.get("Action") or ev.get("status") or ""
                if action == "create":
                    self.cid = ev.get("id") or (ev.get("Actor") or {}).get("ID")
                    self.phases.setdefault("created", now)
                    self._thread(self._attach, "isobench-swarm-attach")
                elif action == "start":
                    self.phases.setdefault("started", now)
                elif action == "die":
                    self.phases.setdefault("exit", now)
                    self.res.t_exit = self.res.t_exit or time.monotonic_ns()
                    code = (ev.get("Actor") or {}).get("Attributes", {}).get("exitCode")
                    with contextlib.suppress(TypeError, ValueError):
                        self.res.exit_code = int(code)
                    self._died.set()
                elif action == "destroy":
                    self.phases.setdefault("removed", now)
                    self._destroyed.set()
                    return
        except Exception:  # noqa: BLE001 - the stream is closed at teardown
            pass

    def _poll(self) -> None:
        """The task list: when the task got a node, its states, a rejection."""
        while not self._stopping.is_set() and not self._died.is_set():
            try:
                tasks = self._manager.tasks(filters={"service": self.sid})
            except Exception:  # noqa: BLE001 - the service is being removed
                return
            if tasks:
                task = tasks[0]
                self.task = task
                status = task.get("Status") or {}
                state = status.get("State", "")
                if not self.states or self.states[-1][0] != state:
                    self.states.append((state, status.get("Timestamp", "")))
                if task.get("NodeID") and "assigned" not in self.phases:
                    self.phases["assigned"] = ct.ns_since(self.t_submit)
                if state in FAILED_STATES and not self.cid:
                    err = status.get("Err") or status.get("Message") or state
                    self.failure = ("failed", f"task {state}: {err}")
                    return
                if state in ENDED_STATES:
                    return
            fast = "assigned" not in self.phases
            if self._stopping.wait(POLL_S if fast else POLL_SLOW_S):
                return

    def _attach(self) -> None:
        """Attach to the task's container (before its start, mostly): its output, and
        its stdin when serving; then read the output."""
        cid = self.cid
        try:
            if self.serve:
                sock = self._api.attach_socket(cid, params={"stdin": 1, "stream": 1})
                self._stdin = getattr(sock, "_sock", sock)
            self._stream = self._api.attach(
                cid, stdout=True, stderr=True, stream=True, logs=True, demux=True
            )
            self._sampler = ct.HostSideSampler(lambda: ct.find_carriers(cid), find_every=0.1)
            self._sampler.__enter__()
            self.watchers.append(self._sampler)
        except Exception as e:  # noqa: BLE001 - the container went already
            self.failure = self.failure or ("failed", f"attach: {explain(e)}")
            self._stream_ended.set()
            return
        buf = b""
        try:
            for out, err in self._stream:
                if err:
                    self._stderr.append(err)
                if out:
                    *complete, buf = (buf + out).split(b"\n")
                    for raw in complete:
                        self._take(raw.decode(errors="replace").rstrip("\r"))
        except Exception:  # noqa: BLE001 - ends with the container
            pass
        if buf:
            self._take(buf.decode(errors="replace"))
        self._stream_ended.set()
        with self._lines:
            self._lines.notify_all()

    def _take(self, line: str) -> None:
        res = self.res
        with self._lines:
            if res.t_ready is None:
                if is_ready(line):
                    res.t_ready = time.monotonic_ns()
                    self._ready_seen.set()
                else:
                    res.before_ready.append(line)
                return
            res.lines.append(line)
            self._lines.notify_all()

    # -- what a held instance offers

    def address(self, port: int) -> tuple[str, int]:
        """network=host: the node's own address and port; ingress: the published port
        on the node's address, through the routing mesh (IPVS in the ingress sandbox)."""
        from bench.envs.base import StartError

        host, _ = self.remote
        if self.network == "host":
            self.path = f"host network of the node: {host}:{port}"
            return (host, port)
        if self.network != "ingress":
            raise StartError(
                "network=none: a swarm task without a swarm network publishes nothing: "
                "use network=ingress or network=host"
            )
        try:
            svc = self.env.cl.api.inspect_service(self.sid)
        except Exception as e:  # noqa: BLE001
            raise StartError(f"{self.name}: inspect service: {explain(e)}") from None
        for p in (svc.get("Endpoint") or {}).get("Ports") or []:
            if p.get("TargetPort") == port and p.get("PublishedPort"):
                published = int(p["PublishedPort"])
                self.path = f"ingress routing mesh: {host}:{published} -> IPVS -> task port {port}"
                return (host, published)
        raise StartError(f"{self.name}: port {port} is not published")

    def carriers(self) -> dict[int, str]:
        return ct.find_carriers(self.cid) if self.cid else {}

    def live_cgroup(self, layout=None):
        """The task container's own cgroup (a service cannot name a cgroup parent)."""
        from bench.metrics.cgroup import Layout

        if self.cid is None:
            return None
        layout = layout or Layout.detect()
        rel = ct.container_rel_path({"Id": self.cid, "HostConfig": {}}, self.env.driver)
        reader = layout.reader(rel)
        return reader if reader is not None and reader.read() else None

    def ask(self, command: str, timeout: float) -> str:
        if not self.serve or self._stdin is None:
            raise ChannelError("started without a control channel (not in serve mode)")
        if self.launch is not None or self._died.is_set():
            raise ChannelError("the instance has ended")
        if self.res.t_ready is None:
            raise ChannelError("asked before the probe said `ready`")
        with self._lines:
            n = len(self.res.lines)
        try:
            self._stdin.sendall(command.encode() + b"\n")
        except OSError as e:
            raise ChannelError(f"the probe's stdin is closed ({e.strerror})") from None
        deadline = time.monotonic() + timeout
        with self._lines:
            while len(self.res.lines) <= n:
                left = deadline - time.monotonic()
                if left <= 0 or self._stream_ended.is_set():
                    break
                self._lines.wait(min(left, 0.1))
            if len(self.res.lines) > n:
                return self.res.lines.pop(n)
        if self._stream_ended.is_set():
            raise ChannelError("the probe ended before answering")
        raise ChannelError(f"no answer to {command!r} within {timeout:g} s")

    # -- the Instance hooks

    def _ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        looked = time.monotonic()
        while self.failure is None and not self._ready_seen.is_set():
            left = deadline - time.monotonic()
            if left <= 0 or self._stream_ended.is_set() or self._died.is_set():
                break
            self._ready_seen.wait(min(left, 0.05))
            if "started" in self.phases and time.monotonic() - looked > LOG_LOOK_S:
                looked = time.monotonic()  # a `ready` the attach lost is in the log
                self._from_log(whole=False)
        if self.cid is not None and (self._ready_seen.is_set() or self._stream_ended.is_set()):
            self._from_log(whole=False)  # the daemon's stamp of `ready`; a line the attach lost
        return self._ready_seen.is_set()

    def _from_log(self, whole: bool) -> None:
        """The container's log (json-file keeps every line with the daemon's stamp of its
        arrival): the `ready` line's stamp, on this host's monotonic clock, replaces the
        attach's; with `whole`, the log's stdout lines replace the stream's (an attach
        made while the container started can lose the lines printed meanwhile)."""
        try:
            raw = self._calls.logs(self.cid, stdout=True, stderr=False, timestamps=True)
        except Exception:  # noqa: BLE001 - a log driver that cannot be read: keep the stream's
            return
        before, after, t_ready = [], [], None
        for entry in raw.decode(errors="replace").splitlines():
            stamp, _, line = entry.partition(" ")
            if t_ready is None:
                if is_ready(line):
                    t_ready = wall_ns(stamp) - self._wall_offset if wall_ns(stamp) else None
                    t_ready = t_ready or time.monotonic_ns()
                else:
                    before.append(line)
            else:
                after.append(line)
        with self._lines:
            if t_ready is not None:
                self.res.t_ready = t_ready
                self._ready_seen.set()
            if whole:
                self.res.before_ready, self.res.lines = before, after

    def _signal_stop(self) -> None:
        if self.cid is not None and not self._died.is_set():
            with contextlib.suppress(Exception):
                self._calls.kill(self.cid, "SIGTERM")

    def _wait_exit(self, timeout: float) -> bool:
        if self.failure is not None or self.sid is None:
            return True  # nothing ran (or the daemon refused): nothing to wait for
        deadline = time.monotonic() + timeout
        while not self._died.wait(min(0.1, max(0.0, deadline - time.monotonic()))):
            if time.monotonic() >= deadline or self.failure is not None:
                break
        return self._died.is_set() or self.failure is not None

    def _kill(self) -> None:
        if self.cid is not None and not self._died.is_set():
            with contextlib.suppress(Exception):
                self._calls.kill(self.cid, "SIGKILL")
            ct.kill_carriers(self.cid)

    def _end(self, *, stopped: bool, timed_out: bool) -> Launch:
        try:
            launch = self._collect(stopped, timed_out)
        finally:
            with interrupt.shielded():
                self._teardown()
        launch.phases.update(self.phases)  # "removed" arrives during the teardown
        return launch

    def _collect(self, stopped: bool, timed_out: bool) -> Launch:
        if self._died.is_set():
            self._stream_ended.wait(max(0.1, min(5.0, self.left())))  # the last lines
            if self.cid is not None and not self.serve:
                self._from_log(whole=True)
        if self._sampler is not None:
            self._sampler.stop()
        res = self.res
        res.timed_out = timed_out
        res.stderr = b"".join(self._stderr).decode(errors="replace")
        with self._lines:
            res.lines = list(res.lines)
        launch = to_launch(res, self.timeout, "task", stopped=stopped)
        if self.failure is not None:
            launch.status, launch.reason = self.failure
        launch.host_side = self._sampler.result() if self._sampler else {}
        launch.extra.update(
            service_id=self.sid,
            container_id=self.cid,
            name=self.name,
            node=self.task.get("NodeID"),
            task_states=list(self.states),
        )
        if self.path:
            launch.net_path = self.path
        return launch

    def _teardown(self) -> None:
        """Remove the service (its task's container goes with it: `removed` when the
        destroy event arrives), close the streams, stop the watchers."""
        self._stopping.set()
        if self.sid is not None:
            with contextlib.suppress(Exception):
                remove_services(self.env.cl, {"id": self.sid})
            self._destroyed.wait(2.0 if self.cid else 0.0)
        for stream in (self._events, self._stream, self._stdin):
            if stream is not None:
                with contextlib.suppress(Exception):
                    stream.close()
        for t in self._threads:
            t.join(1.0)
        for api in (self._api, self._calls, self._manager):
            with contextlib.suppress(Exception):
                api.close()
