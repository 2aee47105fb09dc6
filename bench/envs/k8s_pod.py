"""One pod of the `k8s` kind: its manifest (pure), what a client-side watch sees of it
(PodState, PodWatcher: one watch per environment), its followed log, and the instance
that starts, stops and removes it.

A probe in serve mode is driven over the API's attach (the container made with
`stdin: true`, no tty): the first ask() opens pods/attach as a WebSocket, as the
official client's kubernetes.stream does, and commands go in on its stdin channel,
answers come back on its stdout channel (wschannel.py). The answers also reach the
pod's log, which the launch's records are read from: they are left out there.

Timestamps are this host's CLOCK_MONOTONIC at the moment an event or a log line
arrived: the API's own timestamps (creationTimestamp, startedAt, finishedAt) have one
second resolution, useless for startup phases."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

from bench import interrupt
from bench.envs.base import (
    STDERR_KEEP,
    ChannelError,
    Instance,
    Launch,
    conclude,
    read_probe_output,
)
from bench.envs.k8s_client import CALL_S, Client, K8sError, Stream
from bench.envs.wschannel import WsChannel, without
from bench.metrics.cgroup import CgroupReader, Layout
from bench.probeio import is_ready

LABEL = "isobench"
CONTAINER = "probe"
GONE_S = 30.0  # how long a deleted pod may take to go (the kubelet confirms its end)
FORCE_S = 5.0  # after a forced delete (grace 0)
LOG_EOF_S = 3.0  # after the exit, how long the followed log may take to end


# ---------------------------------------------------------------- the manifest (pure)


def cpu_quantity(cpus: float) -> str:
    return f"{round(cpus * 1000)}m"


def pod_manifest(
    name: str,
    *,
    namespace: str,
    labels: dict[str, str],
    image: str,
    argv: list[str],
    workdir: str,
    runtime_class: str | None = None,
    node: str | None = None,
    cpus: float | None = None,
    memory_bytes: int | None = None,
    grace_s: int = 10,
    annotations: dict[str, str] | None = None,
    stdin: bool = False,
) -> dict[str, Any]:
    """The pod of one launch: restartPolicy Never, requests = limits (Guaranteed QoS
    when both cpus and memory are given), nothing privileged, no host namespaces, no
    service-account token, no service environment variables. `stdin`: the container's
    stdin stays open for an attach (a probe in serve mode; no tty)."""
    resources: dict[str, dict[str, str]] = {}
    if cpus:
        resources.setdefault("limits", {})["cpu"] = cpu_quantity(cpus)
    if memory_bytes:
        resources.setdefault("limits", {})["memory"] = str(memory_bytes)
    if resources:
        resources["requests"] = dict(resources["limits"])
    spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": grace_s,
        "containers": [
            {
                "name": CONTAINER,
                "image": image,
                "imagePullPolicy": "IfNotPresent",
                "command": list(argv),
                "workingDir": workdir,
                "resources": resources,
                "securityContext": {"privileged": False, "allowPrivilegeEscalation": False},
            }
        ],
    }
    if stdin:
        spec["containers"][0].update(stdin=True, stdinOnce=False, tty=False)
    if runtime_class:
        spec["runtimeClassName"] = runtime_class
    if node:
        spec["nodeName"] = node
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": dict(labels),
            "annotations": dict(annotations or {}),
        },
        "spec": spec,
    }


def with_echoes(answers: list[str]) -> list[str]:
    """Pure: the answers taken over the attach stream and, for each error answer, the
    probe's stderr echo of it ("probe: op: error", probe_error()): a pod log mixes both
    streams, and neither is a record or a stray line of the launch."""
    out = list(answers)
    for line in answers:
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if isinstance(obj, dict) and "error" in obj:
            out.append(f"{obj.get('probe')}: {obj.get('op')}: {obj['error']}")
    return out


# ---------------------------------------------------------------- what the watch sees


class PodState:
    """One pod as the watch and its log stream saw it: the arrival time (monotonic ns)
    of the first event that showed each phase, its last object, its output."""

    def __init__(self, name: str):
        self.name = name
        self.cond = threading.Condition()
        self.t: dict[str, int] = {}  # created, scheduled, started, exit, deleted, ready
        self.pod: dict[str, Any] = {}
        self.exit_code: int | None = None
        self.terminated: dict[str, Any] = {}
        self.waiting = ""  # the last "Reason: message" of a waiting container
        self.notes: list[str] = []
        self.lines: list[str] = []  # log lines after `ready`
        self.before_ready: list[str] = []
        self.ready_stamp = ""  # the node's stamp on the `ready` line (its own clock)
        self.log_done = False  # the followed log reached its end (all output read)
        self.log_over = False  # the follower has stopped, for whatever reason

    def _first(self, phase: str, t: int) -> None:
        self.t.setdefault(phase, t)

    def update(self, kind: str, pod: dict[str, Any], t: int) -> None:
        with self.cond:
            self.pod = pod
            spec, status = pod.get("spec") or {}, pod.get("status") or {}
            conditions = {c.get("type"): c.get("status") for c in status.get("conditions") or []}
            if spec.get("nodeName") or conditions.get("PodScheduled") == "True":
                self._first("scheduled", t)
            for cs in status.get("containerStatuses") or []:
                if cs.get("name") != CONTAINER:
                    continue
                state = cs.get("state") or {}
                if "waiting" in state:
                    w = state["waiting"] or {}
                    self.waiting = ": ".join(x for x in (w.get("reason"), w.get("message")) if x)
                if "running" in state:
                    self._first("started", t)
                if "terminated" in state and "exit" not in self.t:
                    self.terminated = state["terminated"] or {}
                    self.exit_code = self.terminated.get("exitCode")
                    self._first("exit", t)
                    if "started" not in self.t:
                        self.notes.append(
                            "the watch never saw the container running: the "
                            "kubelet reported it terminated at once"
                        )
            if status.get("phase") in ("Succeeded", "Failed") and "exit" not in self.t:
                self._first("exit", t)  # ended without a container status (evicted, refused)
                self.terminated = {"reason": status.get("reason"), "message": status.get("message")}
            if kind == "DELETED":
                self._first("deleted", t)
                if "exit" not in self.t:
                    self._first("exit", t)
                    self.notes.append("no container exit was reported before the pod was gone")
            self.cond.notify_all()

    def wait(self, until, timeout: float) -> bool:
        with self.cond:
            return self.cond.wait_for(until, max(0.0, timeout))


class PodWatcher:
    """One watch on the environment's pods (by label), from before its first pod is
    created until cleanup: each event is timestamped as it arrives and handed to the
    PodState of its pod. A watch the server ends is resumed from the last
    resourceVersion (a relist when that is too old)."""

    def __init__(self, client: Client, namespace: str, selector: str):
        self.client = client
        self.namespace = namespace
        self.selector = selector
        self.states: dict[str, PodState] = {}
        self.lock = threading.Lock()
        self.rv = ""
        self.stream: Stream | None = None
        self.stopped = threading.Event()
        self.thread: threading.Thread | None = None
        self.problems: list[str] = []

    def _open(self) -> Stream:
        kwargs: dict[str, Any] = {
            "watch": True,
            "label_selector": self.selector,
            "allow_watch_bookmarks": True,
        }
        if self.rv:
            kwargs["resource_version"] = self.rv
        return self.client.stream(
            "WATCH pods", self.client.core.list_namespaced_pod, self.namespace, **kwargs
        )

    def start(self) -> None:
        """Open the watch (it is in place when this returns) and read it in a thread."""
        self.stream = self._open()
        self.thread = threading.Thread(target=self._run, name="k8s-watch", daemon=True)
        self.thread.start()

    def track(self, name: str) -> PodState:
        with self.lock:
            state = self.states[name] = PodState(name)
        return state

    def forget(self, name: str) -> None:
        with self.lock:
            self.states.pop(name, None)

    def _run(self) -> None:
        while not self.stopped.is_set():
            try:
                for line in self.stream.lines():
                    self._event(line, time.monotonic_ns())
            except Exception as e:  # noqa: BLE001 - the connection broke: resume
                self.problems.append(f"watch: {e}"[:300])
            if self.stopped.is_set():
                return
            try:
                self.stream = self._open()
            except K8sError as e:
                self.problems.append(f"watch: {e}"[:300])
                if e.status == 410:
                    self.rv = ""  # too old: start over (ADDED for every pod there is)
                self.stopped.wait(0.5)

    def _event(self, line: str, t: int) -> None:
        try:
            event = json.loads(line)
        except ValueError:
            return
        kind, obj = event.get("type"), event.get("object") or {}
        if kind == "ERROR":
            if obj.get("code") == 410:
                self.rv = ""
            self.problems.append(f"watch: {obj.get('message', obj)}"[:300])
            return
        meta = obj.get("metadata") or {}
        self.rv = meta.get("resourceVersion") or self.rv
        if kind == "BOOKMARK":
            return
        with self.lock:
            state = self.states.get(meta.get("name"))
        if state is not None:
            state.update(kind, obj, t)

    def stop(self) -> None:
        self.stopped.set()
        if self.stream is not None:
            self.stream.end()
        if self.thread is not None:
            self.thread.join(5)


# ---------------------------------------------------------------- the followed log


def split_stamp(line: str) -> tuple[str, str]:
    """A log line asked for with timestamps=true: "<RFC3339Nano> <text>"."""
    stamp, _, text = line.partition(" ")
    return stamp, text


class LogFollower:
    """Follows the probe container's log from when the watch says it started (or ended)
    to its end: the arrival time of the `ready` line, and every line after it."""

    def __init__(self, client: Client, namespace: str, state: PodState, deadline: float):
        self.client = client
        self.namespace = namespace
        self.state = state
        self.deadline = deadline
        self.stream: Stream | None = None
        self.ended = threading.Event()
        self.thread = threading.Thread(target=self._run, name="k8s-log", daemon=True)
        self.thread.start()

    def request(self, read, **kwargs):
        """`read` (the client's stream or text) of the probe container's log."""
        return read(
            "GET log",
            self.client.core.read_namespaced_pod_log,
            self.state.name,
            self.namespace,
            container=CONTAINER,
            **kwargs,
        )

    def _run(self) -> None:
        state = self.state
        try:
            while not self.ended.is_set():
                left = self.deadline - time.monotonic()
                if not state.wait(
                    lambda: "started" in state.t or "exit" in state.t or self.ended.is_set(), left
                ):
                    return
                if self.ended.is_set() or "deleted" in state.t:
                    return
                try:
                    self.stream = self.request(self.client.stream, follow=True, timestamps=True)
                except K8sError as e:  # 400 while the container is still being created
                    if time.monotonic() >= self.deadline or e.status not in (400, None):
                        state.notes.append(f"log: {e}")
                        return
                    self.ended.wait(0.05)
                    continue
                if self.ended.is_set():
                    self.stream.end()
                    return
                for line in self.stream.lines():
                    self._line(line, time.monotonic_ns())
                with state.cond:
                    state.log_done = not self.ended.is_set()
                return
        except Exception as e:  # noqa: BLE001 - the stream broke: the end reads the log
            state.notes.append(f"log stream: {e}"[:300])
        finally:
            with state.cond:
                state.log_over = True
                state.cond.notify_all()

    def _line(self, line: str, t: int) -> None:
        state = self.state
        stamp, text = split_stamp(line.rstrip("\r"))
        with state.cond:
            if "ready" not in state.t:
                if is_ready(text):
                    state.t["ready"] = t
                    state.ready_stamp = stamp
                else:
                    state.before_ready.append(text)
            else:
                state.lines.append(text)
            state.cond.notify_all()

    def end(self) -> None:
        self.ended.set()
        if self.stream is not None:
            self.stream.end()
        with self.state.cond:
            self.state.cond.notify_all()
        self.thread.join(5)


# ---------------------------------------------------------------- the instance


class PodInstance(Instance):
    """A created pod: `ready` from its followed log, exit from the watch, stop = delete
    with a grace period (the kubelet sends SIGTERM; the hold probe exits 0), kill =
    delete with a one-second grace, end = delete and wait until the object is gone."""

    def __init__(
        self,
        client: Client,
        namespace: str,
        watcher: PodWatcher,
        state: PodState,
        timeout: float,
        t_submit: int,
        serves: bool = False,
    ):
        super().__init__(state.name, timeout, t_submit)
        self.serves = serves
        self.channel: WsChannel | None = None  # serve mode: the attach stream, once asked
        self.answered: list[str] = []  # the answers taken: not records of the launch
        self.cl = client
        self.ns = namespace
        self.watcher = watcher
        self.state = state
        self.log = LogFollower(client, namespace, state, self.deadline)
        self.notes: list[str] = []
        self.deleting = False

    def live_cgroup(self, layout: Layout | None = None) -> CgroupReader | None:
        """None: the pod's cgroup is on the node the scheduler chose, not found from here."""
        return None

    def _delete(self, grace: int | None, timeout: float = CALL_S) -> None:
        kwargs = {} if grace is None else {"grace_period_seconds": grace}
        try:
            self.cl.call(
                "DELETE pod",
                self.cl.core.delete_namespaced_pod,
                self.name,
                self.ns,
                timeout=timeout,
                **kwargs,
            )
            self.deleting = True
        except K8sError as e:
            if e.status == 404:
                self.deleting = True
            else:
                self.notes.append(str(e))

    # -- the control channel
    def ask(self, command: str, timeout: float) -> str:
        """Serve mode: `command` on the probe's stdin over pods/attach (opened at the
        first ask, within its timeout), its next stdout line back."""
        if not self.serves:
            raise ChannelError(f"{self.name}: started without a control channel (not serving)")
        st = self.state
        if self.launch is not None or "exit" in st.t or "deleted" in st.t:
            raise ChannelError(f"{self.name}: the instance has ended")
        if "ready" not in st.t:
            raise ChannelError(f"{self.name}: asked before the probe said `ready`")
        deadline = time.monotonic() + timeout
        if self.channel is None:
            self.channel = self.cl.attach(self.name, self.ns, CONTAINER, timeout)
        answer = self.channel.ask(command, max(0.0, deadline - time.monotonic()))
        self.answered.append(answer)
        return answer

    # -- the Instance hooks
    def _ready(self, timeout: float) -> bool:
        st = self.state
        st.wait(lambda: "ready" in st.t or st.log_over or "deleted" in st.t, timeout)
        return "ready" in st.t

    def _signal_stop(self) -> None:
        self._delete(max(1, round(self.left())))

    def _wait_exit(self, timeout: float) -> bool:
        st = self.state
        return st.wait(lambda: "exit" in st.t, timeout)

    def _kill(self) -> None:
        if "deleted" not in self.state.t:
            self._delete(1, timeout=FORCE_S)

    def _end(self, *, stopped: bool, timed_out: bool) -> Launch:
        st = self.state
        try:
            if "exit" in st.t and not timed_out:
                st.wait(lambda: st.log_over, LOG_EOF_S)  # the last lines of the stream
            launch = self._collect(stopped=stopped, timed_out=timed_out)
        finally:
            with interrupt.shielded():
                if self.channel is not None:
                    self.channel.close()
                self.log.end()
                problems = self._remove()
                self.watcher.forget(self.name)
        if problems or self.notes or st.notes:
            launch.extra["k8s_problems"] = [*st.notes, *self.notes, *problems]
        return launch

    def _remove(self) -> list[str]:
        """Delete the pod (unless it is being deleted) and wait until it is gone; a pod
        that does not go is deleted with grace 0 (the API object goes at once; its node
        may still be ending it: said in the problems)."""
        st = self.state
        if not self.deleting:
            self._delete(None)
        if st.wait(lambda: "deleted" in st.t, GONE_S):
            return []
        problems = [f"not gone {GONE_S:g} s after its delete: deleted with grace 0"]
        self._delete(0, timeout=FORCE_S)
        if not st.wait(lambda: "deleted" in st.t, FORCE_S) and self._exists():
            problems.append("still there after a delete with grace 0")
        return problems

    def _exists(self) -> bool:
        try:
            self.cl.call(
                "GET pod", self.cl.core.read_namespaced_pod, self.name, self.ns, timeout=FORCE_S
            )
        except K8sError as e:
            return e.status != 404
        return True

    def _fetch_log(self) -> list[str] | None:
        """The whole log in one read (when the followed stream did not reach its end)."""
        try:
            text = self.log.request(self.cl.text, timeout=CALL_S)
        except K8sError as e:
            self.notes.append(str(e))
            return None
        return text.splitlines()

    def _collect(self, *, stopped: bool, timed_out: bool) -> Launch:
        st = self.state
        with st.cond:
            t = dict(st.t)
            lines, before = list(st.lines), list(st.before_ready)
        if not st.log_done and "exit" in t and "deleted" not in t:
            fetched = self._fetch_log()
            if fetched is not None:
                ready_at = next((i for i, x in enumerate(fetched) if is_ready(x)), None)
                if ready_at is None:
                    before = fetched
                else:
                    before, lines = fetched[:ready_at], fetched[ready_at + 1 :]
        phases = {
            p: max(1, t[p] - self.t_submit)
            for p in ("created", "scheduled", "started", "ready", "exit")
            if p in t
        }
        launch = Launch(phases=phases)
        launch.extra = {
            "name": self.name,
            "namespace": self.ns,
            "node": (st.pod.get("spec") or {}).get("nodeName"),
        }
        if st.ready_stamp:
            launch.extra["ready_node_stamp"] = st.ready_stamp
        if st.terminated.get("reason"):
            launch.extra["k8s_reason"] = st.terminated["reason"]
        read_probe_output(launch, without(lines, with_echoes(self.answered)))
        # the pod log mixes stdout and stderr: what came before `ready`, or the
        # terminated state's message, is the nearest thing to a stderr tail
        stderr = "\n".join([*before, str(st.terminated.get("message") or "")]).strip()
        killed = "pod deleted" + (
            f" (it was waiting: {st.waiting})" if st.waiting and "started" not in t else ""
        )
        return conclude(
            launch,
            ready="ready" in t,
            exit_code=st.exit_code,
            timed_out=timed_out,
            stopped=stopped,
            timeout=self.timeout,
            stderr=stderr[-STDERR_KEEP:],
            killed=killed,
        )
