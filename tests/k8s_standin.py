"""A STAND-IN for a Kubernetes API server, for the `k8s` kind's tests: no kubelet or
kube-apiserver can run on the machines isobench is developed on (none in Debian 12 or
on PyPI), so the kind is tested against this instead of a real cluster.

It is a small HTTP server on 127.0.0.1 (plain HTTP, a bearer token) with a kubeconfig
pointing at it, implementing only the calls the kind makes: version; namespaces
(get, list, create with dryRun, delete); runtimeclasses and nodes (get, list); pods
(create, get, list across namespaces or in one, watch, delete with a grace period), a
pod's log (with follow and timestamps) and a pod's attach (a WebSocket,
`v4.channel.k8s.io` or `channel.k8s.io`: stdin channel 0, stdout 1).

It RUNS NOTHING, with one exception: a pod whose probe is in serve mode (`--serve`,
`stdin: true`). Its control channel is only worth testing with a probe that answers, so
the pretend kubelet RUNS THAT PROBE LOCALLY, on this host, as a plain child process (the
bundle's binary from isobench's cache, found by the pod's `isobench.bundle` annotation;
no container, no image, no isolation): its stdout becomes the pod's log and the attach
streams' stdout, the attach's stdin goes to its stdin, a delete SIGTERMs it. Its answers
are still no measurement of any pod. Any other pod is moved through Pending → scheduled
→ Running → Succeeded with sub-second delays (`Delays`), and its log gets `ready` and
then the probe's "output", which is a fixed line per probe (`OUTPUTS`; by default an
error line saying that nothing ran): it is not a measurement and must never be presented
as one. A `hold` pod stays running until it is deleted (the "SIGTERM" ends it with 0); a
probe the stand-in does not know fails to start as a missing binary does (exit 128,
StartError). Timestamps in its objects have one second resolution, as the real API's do;
the monotonic time of each transition is kept in `transitions` so tests can check what a
client saw against it.

Use: `with StandIn() as api: ... api.kubeconfig ...` (the server thread and the
temporary kubeconfig are gone when the block ends, also on Ctrl-C)."""

from __future__ import annotations

import base64
import contextlib
import copy
import hashlib
import json
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

VERSION = {
    "major": "1",
    "minor": "30",
    "gitVersion": "v1.30.0+isobench-standin",
    "gitCommit": "standin",
    "platform": "linux/amd64 (isobench stand-in: no cluster)",
}
TOKEN = "isobench-standin-token"
PROBES = ("hold", "startup", "syscall")  # what the stand-in pretends to run
SERVE = "--serve"  # a probe in serve mode: run for real, locally (see the docstring)
WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
WS_PROTOCOLS = ("v4.channel.k8s.io", "channel.k8s.io")


def nothing_ran(probe: str, op: str) -> str:
    return json.dumps(
        {"probe": probe, "op": op, "error": "the k8s stand-in ran nothing: no measurement"}
    )


@dataclass
class Delays:
    """Seconds between a pod's transitions (each a separate watch event)."""

    schedule: float = 0.03
    start: float = 0.05
    ready: float = 0.02
    run: float = 0.03
    term: float = 0.03  # SIGTERM to exit of a held probe
    final: float = 0.02  # the kubelet confirming a deleted pod's end


def _stamp(precise: bool = False) -> str:
    now = datetime.now(UTC)
    if precise:
        return now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return now.strftime("%Y-%m-%dT%H:%M:%SZ")  # the API's one-second resolution


def _status(code: int, reason: str, message: str) -> dict:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


def _matches(obj: dict, labels: dict[str, str], fields: dict[str, str]) -> bool:
    meta = obj.get("metadata") or {}
    have = meta.get("labels") or {}
    if any(have.get(k) != v for k, v in labels.items()):
        return False
    values = {"metadata.name": meta.get("name"), "metadata.namespace": meta.get("namespace")}
    return all(values.get(k) == v for k, v in fields.items())


def _selector(text: str) -> dict[str, str]:
    out = {}
    for part in filter(None, (text or "").split(",")):
        key, _, value = part.partition("=")
        out[key.strip()] = value.lstrip("=").strip()
    return out


class StandIn:
    """The stand-in API server (see the module's docstring)."""

    def __init__(
        self,
        *,
        runtime_classes=("gvisor",),
        node="standin-node-1",
        forbidden_namespaces=(),
        cluster_list=True,
        pull_fails=(),
        outputs: dict[str, list[str]] | None = None,
        delays: Delays | None = None,
        probe_dir: Path | None = None,
    ):
        self.delays = delays or Delays()
        self.probe_dir = probe_dir  # where serving probes are run from (default: the bundle's)
        self.forbidden = set(forbidden_namespaces)
        self.cluster_list = cluster_list
        self.pull_fails = set(pull_fails)
        self.outputs = outputs or {}
        self.lock = threading.Condition()
        self.rv = 1
        self.events: list[tuple[int, str, dict]] = []  # (rv, type, pod) for watches
        self.pods: dict[tuple[str, str], dict] = {}
        self.logs: dict[tuple[str, str], list[tuple[str, str]]] = {}  # (stamp, line)
        self.signals: dict[tuple[str, str], threading.Event] = {}  # "SIGTERM" per pod
        self.children: dict[tuple[str, str], subprocess.Popen] = {}  # serving probes run here
        self.stdout: dict[tuple[str, str], list[str]] = {}  # a serving probe's stdout lines
        self.transitions: dict[str, dict[str, int]] = {}  # pod name -> phase -> mono ns
        self.requests: list[tuple[str, str, dict]] = []  # (method, path, query) of each
        self.namespaces = {n: self._namespace(n) for n in ("default", "kube-system")}
        self.runtime_classes = {
            n: {
                "apiVersion": "node.k8s.io/v1",
                "kind": "RuntimeClass",
                "metadata": {"name": n},
                "handler": n,
            }
            for n in runtime_classes
        }
        self.nodes = {
            node: {
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {"name": node},
                "status": {
                    "capacity": {"cpu": "2", "memory": "4Gi"},
                    "nodeInfo": {
                        "kernelVersion": "(stand-in: no node)",
                        "osImage": "(stand-in: no node)",
                        "containerRuntimeVersion": "standin://0",
                        "kubeletVersion": VERSION["gitVersion"],
                        "architecture": "amd64",
                    },
                },
            }
        }
        self.stopping = threading.Event()
        self.server: ThreadingHTTPServer | None = None
        self.dir: Path | None = None
        self.kubeconfig: Path | None = None
        self.url = ""

    # -- life
    def __enter__(self) -> StandIn:
        self.dir = Path(tempfile.mkdtemp(prefix="k8s-standin-"))
        try:
            handler = type("Handler", (_Handler,), {"api": self})
            self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
            self.server.daemon_threads = True
            self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
            threading.Thread(
                target=self.server.serve_forever, name="k8s-standin", daemon=True
            ).start()
            self.kubeconfig = self.dir / "kubeconfig"
            self.kubeconfig.write_text(self.kubeconfig_text())
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stopping.set()
        with self.lock:
            self.lock.notify_all()
            signals = list(self.signals.values())
        for term in signals:  # every pretend kubelet thread returns
            term.set()
        with self.lock:
            children = list(self.children.values())
        for child in children:  # and every serving probe it ran is gone
            with contextlib.suppress(OSError):
                child.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(5)
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    def kubeconfig_text(self, context: str = "standin") -> str:
        return json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": context,
                "clusters": [{"name": "standin", "cluster": {"server": self.url}}],
                "users": [{"name": "standin", "user": {"token": TOKEN}}],
                "contexts": [
                    {"name": context, "context": {"cluster": "standin", "user": "standin"}}
                ],
            },
            indent=1,
        )

    # -- state (under self.lock)
    def _namespace(self, name: str, labels=None, annotations=None) -> dict:
        return {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {
                "name": name,
                "labels": dict(labels or {}),
                "annotations": dict(annotations or {}),
                "creationTimestamp": _stamp(),
                "resourceVersion": "1",
            },
            "status": {"phase": "Active"},
        }

    def _bump(self, kind: str, pod: dict) -> None:
        self.rv += 1
        pod["metadata"]["resourceVersion"] = str(self.rv)
        self.events.append((self.rv, kind, copy.deepcopy(pod)))
        self.lock.notify_all()

    def _mark(self, name: str, phase: str) -> None:
        self.transitions.setdefault(name, {})[phase] = time.monotonic_ns()

    def pod_names(self) -> list[str]:
        with self.lock:
            return sorted(f"{ns}/{n}" for ns, n in self.pods)

    # -- the pretend kubelet: one thread per pod
    def _run_pod(self, key: tuple[str, str]) -> None:
        d = self.delays
        ns, name = key
        term = self.signals[key]

        def pause(seconds: float) -> bool:
            """Sleep; False when the pod was deleted meanwhile (or the server stops)."""
            return not term.wait(seconds) and not self.stopping.is_set()

        def change(fn) -> bool:
            with self.lock:
                pod = self.pods.get(key)
                if pod is None:
                    return False
                fn(pod)
                self._bump("MODIFIED", pod)
                return True

        with self.lock:
            spec = self.pods[key]["spec"]
            container = spec["containers"][0]
            scheduled = bool(spec.get("nodeName"))
        if not scheduled:
            if not pause(d.schedule):
                return self._finish_delete(key)

            def schedule(pod):
                pod["spec"]["nodeName"] = next(iter(self.nodes))
                pod["status"]["conditions"] = [
                    {"type": "PodScheduled", "status": "True", "lastTransitionTime": _stamp()}
                ]
                self._mark(name, "scheduled")

            change(schedule)
        elif spec["nodeName"] not in self.nodes:
            term.wait()  # never scheduled to a node that does not exist: until deleted
            return self._finish_delete(key)
        if not pause(d.start):
            return self._finish_delete(key)
        if container["image"] in self.pull_fails:

            def backoff(pod):
                pod["status"]["containerStatuses"] = [
                    self._cs(
                        container,
                        {
                            "waiting": {
                                "reason": "ImagePullBackOff",
                                "message": f'Back-off pulling image "{container["image"]}"',
                            }
                        },
                    )
                ]

            change(backoff)
            term.wait()
            return self._finish_delete(key)
        argv = container.get("command") or []
        probe = argv[0].rsplit("/", 1)[-1] if argv else ""
        if SERVE in argv and probe in PROBES:
            return self._serve_pod(key, container, argv)
        if probe not in PROBES:
            msg = (
                f'failed to create containerd task: exec: "{argv[0] if argv else ""}": '
                "stat: no such file or directory (isobench stand-in)"
            )
            self._terminate(key, 128, "StartError", msg, phase="Failed")
            term.wait()
            return self._finish_delete(key)

        def running(pod):
            pod["status"]["phase"] = "Running"
            pod["status"]["containerStatuses"] = [
                self._cs(container, {"running": {"startedAt": _stamp()}})
            ]
            self._mark(name, "started")

        change(running)
        if not pause(d.ready):
            return self._after_sigterm(key)
        self._log(key, "ready")
        self._mark(name, "ready")
        if probe == "hold":
            term.wait()
            return self._after_sigterm(key)
        if not pause(d.run):
            return self._after_sigterm(key)
        if probe == "startup" and argv[1:] not in ([], ["--help"]):
            # the startup probe's own argv check (workloads/startup.c): `ready`, then 2
            self._log(key, "startup: takes no arguments")
            self._terminate(key, 2, "Error", None, phase="Failed")
            term.wait()
            return self._finish_delete(key)
        op = argv[argv.index("--op") + 1] if "--op" in argv[:-1] else "-"
        for line in self.outputs.get(probe, [nothing_ran(probe, op)] if probe != "startup" else []):
            self._log(key, line)
        self._terminate(key, 0, "Completed", None, phase="Succeeded")
        term.wait()
        return self._finish_delete(key)

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

        def running(pod):
            pod["status"]["phase"] = "Running"
            pod["status"]["containerStatuses"] = [
                self._cs(container, {"running": {"startedAt": _stamp()}})
            ]
            self._mark(name, "started")

        with self.lock:
            pod = self.pods.get(key)
            if pod is not None:
                running(pod)
                self._bump("MODIFIED", pod)

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

    def _cs(self, container: dict, state: dict) -> dict:
        return {
            "name": container["name"],
            "image": container["image"],
            "state": state,
            "ready": "running" in state,
            "restartCount": 0,
        }

    def _log(self, key, line: str, stdout: bool = True) -> None:
        with self.lock:
            self.logs.setdefault(key, []).append((_stamp(precise=True), line))
            if stdout and key in self.stdout:
                self.stdout[key].append(line)
            self.lock.notify_all()

    def _terminate(self, key, code: int, reason: str, message: str | None, phase: str) -> None:
        with self.lock:
            pod = self.pods.get(key)
            if pod is None:
                return
            term = {"exitCode": code, "reason": reason, "finishedAt": _stamp()}
            if message:
                term["message"] = message
            cs = (pod["status"].get("containerStatuses") or [{}])[0]
            container = pod["spec"]["containers"][0]
            pod["status"]["containerStatuses"] = [
                self._cs(
                    container,
                    {
                        "terminated": {
                            "startedAt": ((cs.get("state") or {}).get("running") or {}).get(
                                "startedAt"
                            ),
                            **term,
                        }
                    },
                )
            ]
            pod["status"]["phase"] = phase
            self._mark(key[1], "exit")
            self._bump("MODIFIED", pod)

    def _after_sigterm(self, key) -> None:
        """A running probe told to stop (or the server stopping): it exits 0."""
        if self.stopping.is_set():
            return
        time.sleep(self.delays.term)
        self._terminate(key, 0, "Completed", None, phase="Succeeded")
        self._finish_delete(key)

    def _finish_delete(self, key) -> None:
        """The kubelet confirms the end of a deleted pod: the object goes."""
        self.signals[key].wait()
        if self.stopping.is_set():
            return
        time.sleep(self.delays.final)
        self._remove(key)

    def _remove(self, key) -> None:
        with self.lock:
            pod = self.pods.pop(key, None)
            if pod is not None:
                self._mark(key[1], "deleted")
                self._bump("DELETED", pod)

    # -- the API
    def create_pod(self, ns: str, body: dict) -> tuple[int, dict]:
        meta = body.get("metadata") or {}
        name = meta.get("name", "")
        spec = body.get("spec") or {}
        containers = spec.get("containers") or []
        if (
            not name
            or not containers
            or not all(c.get("image") and c.get("name") for c in containers)
        ):
            return 422, _status(
                422, "Invalid", "Pod is invalid: name, containers and image are required"
            )
        rc = spec.get("runtimeClassName")
        with self.lock:
            if ns not in self.namespaces:
                return 404, _status(404, "NotFound", f'namespaces "{ns}" not found')
            if self.namespaces[ns]["status"]["phase"] != "Active":
                return 403, _status(
                    403,
                    "Forbidden",
                    f"unable to create new content in "
                    f"namespace {ns} because it is being "
                    "terminated",
                )
            if rc and rc not in self.runtime_classes:
                return 403, _status(
                    403, "Forbidden", f'pod rejected: RuntimeClass "{rc}" not found'
                )
            if (ns, name) in self.pods:
                return 409, _status(409, "AlreadyExists", f'pods "{name}" already exists')
            pod = copy.deepcopy(body)
            pod["metadata"].update(namespace=ns, uid=f"uid-{self.rv}", creationTimestamp=_stamp())
            pod["status"] = {"phase": "Pending"}
            if spec.get("nodeName"):
                self._mark(name, "scheduled")
            self.pods[(ns, name)] = pod
            self.signals[(ns, name)] = threading.Event()
            self._bump("ADDED", pod)
            out = copy.deepcopy(pod)
        threading.Thread(target=self._run_pod, args=((ns, name),), daemon=True).start()
        return 201, out

    def delete_pod(self, ns: str, name: str, grace: int | None) -> tuple[int, dict]:
        key = (ns, name)
        with self.lock:
            pod = self.pods.get(key)
            if pod is None:
                return 404, _status(404, "NotFound", f'pods "{name}" not found')
            if grace is None:
                grace = pod["spec"].get("terminationGracePeriodSeconds", 30)
            pod["metadata"].setdefault("deletionTimestamp", _stamp())
            pod["metadata"]["deletionGracePeriodSeconds"] = grace
            self._bump("MODIFIED", pod)
            out = copy.deepcopy(pod)
        self.signals[key].set()
        if grace == 0:
            self._remove(key)
        return 200, out

    def delete_namespace(self, name: str) -> tuple[int, dict]:
        with self.lock:
            ns = self.namespaces.get(name)
            if ns is None:
                return 404, _status(404, "NotFound", f'namespaces "{name}" not found')
            ns["status"]["phase"] = "Terminating"
            ns["metadata"]["deletionTimestamp"] = _stamp()
            keys = [k for k in self.pods if k[0] == name]
            out = copy.deepcopy(ns)
        for key in keys:
            self.delete_pod(*key, grace=None)

        def finish():
            deadline = time.monotonic() + 30
            while any(k[0] == name for k in list(self.pods)) and time.monotonic() < deadline:
                time.sleep(0.01)
            with self.lock:
                self.namespaces.pop(name, None)

        threading.Thread(target=finish, daemon=True).start()
        return 200, out


# ---------------------------------------------------------------- WebSocket frames (attach)


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


class _Handler(BaseHTTPRequestHandler):
    api: StandIn
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # quiet
        pass

    def setup(self) -> None:
        super().setup()  # no Nagle: headers and body are separate writes here
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    # -- answers
    def _json(self, code: int, obj: dict) -> None:
        data = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _start_stream(self, content_type: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _end_stream(self) -> None:
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()
        self.close_connection = True

    def _body(self) -> dict:
        length = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(length) or b"{}")

    # -- routing
    def do_GET(self):
        self._route("GET")

    def do_POST(self):
        self._route("POST")

    def do_DELETE(self):
        self._route("DELETE")

    def _route(self, method: str) -> None:
        api = self.api
        url = urlparse(self.path)
        q = {k: v[-1] for k, v in parse_qs(url.query).items()}
        parts = [p for p in url.path.split("/") if p]
        with api.lock:
            api.requests.append((method, url.path, dict(q)))
        if self.headers.get("Authorization") != f"Bearer {TOKEN}":
            return self._json(401, _status(401, "Unauthorized", "Unauthorized"))
        try:
            if method == "DELETE" and self.headers.get("Content-Length"):
                q.update({k: v for k, v in self._body().items() if k == "gracePeriodSeconds"})
            return self._dispatch(method, parts, q)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _dispatch(self, method: str, parts: list[str], q: dict) -> None:
        api = self.api
        if parts == ["version"]:
            return self._json(200, VERSION)
        if parts[:3] == ["apis", "node.k8s.io", "v1"] and parts[3:4] == ["runtimeclasses"]:
            return self._get_or_list(parts[4:], api.runtime_classes, "RuntimeClassList", q)
        if parts[:2] != ["api", "v1"]:
            return self._json(404, _status(404, "NotFound", "the stand-in does not serve this"))
        rest = parts[2:]
        if rest[:1] == ["nodes"]:
            return self._get_or_list(rest[1:], api.nodes, "NodeList", q)
        if rest == ["pods"] and method == "GET":
            if not api.cluster_list:
                return self._json(
                    403,
                    _status(
                        403, "Forbidden", "pods is forbidden: cannot list pods at the cluster scope"
                    ),
                )
            return self._pods(None, q)
        if rest[:1] != ["namespaces"]:
            return self._json(404, _status(404, "NotFound", "the stand-in does not serve this"))
        if len(rest) == 1:
            if method == "POST":
                return self._create_namespace(q)
            return self._get_or_list([], api.namespaces, "NamespaceList", q)
        ns = rest[1]
        if ns in api.forbidden and len(rest) > 2:
            return self._json(
                403,
                _status(
                    403,
                    "Forbidden",
                    f'pods is forbidden: User "standin" '
                    f'cannot list resource "pods" in '
                    f'the namespace "{ns}"',
                ),
            )
        if len(rest) == 2:
            if method == "DELETE":
                return self._json(*api.delete_namespace(ns))
            return self._get_or_list([ns], api.namespaces, "NamespaceList", q)
        if rest[2:3] != ["pods"]:
            return self._json(404, _status(404, "NotFound", "the stand-in does not serve this"))
        name = rest[3] if len(rest) > 3 else None
        if name is None and method == "POST":
            return self._json(*api.create_pod(ns, self._body()))
        if name is None:
            return self._pods(ns, q)
        if rest[4:] == ["log"]:
            return self._log(ns, name, q)
        if rest[4:] == ["attach"]:
            return self._attach(ns, name, q)
        if method == "DELETE":
            grace = q.get("gracePeriodSeconds")
            return self._json(*api.delete_pod(ns, name, None if grace is None else int(grace)))
        with api.lock:
            pod = copy.deepcopy(api.pods.get((ns, name)))
        if pod is None:
            return self._json(404, _status(404, "NotFound", f'pods "{name}" not found'))
        return self._json(200, pod)

    def _get_or_list(self, rest: list[str], store: dict, list_kind: str, q: dict) -> None:
        with self.api.lock:
            if rest:
                obj = store.get(rest[0])
                if obj is None:
                    return self._json(404, _status(404, "NotFound", f'"{rest[0]}" not found'))
                return self._json(200, copy.deepcopy(obj))
            labels = _selector(q.get("labelSelector", ""))
            items = [copy.deepcopy(o) for o in store.values() if _matches(o, labels, {})]
        return self._json(
            200,
            {
                "kind": list_kind,
                "apiVersion": "v1",
                "metadata": {"resourceVersion": str(self.api.rv)},
                "items": items,
            },
        )

    def _create_namespace(self, q: dict) -> None:
        api = self.api
        meta = self._body().get("metadata") or {}
        name = meta.get("name", "")
        with api.lock:
            if name in api.forbidden:
                return self._json(
                    403, _status(403, "Forbidden", f'namespaces "{name}" is forbidden')
                )
            if name in api.namespaces:
                return self._json(
                    409, _status(409, "AlreadyExists", f'namespaces "{name}" already exists')
                )
            ns = api._namespace(name, meta.get("labels"), meta.get("annotations"))
            if q.get("dryRun") != "All":
                api.namespaces[name] = ns
        return self._json(201, ns)

    def _pods(self, ns: str | None, q: dict) -> None:
        api = self.api
        labels = _selector(q.get("labelSelector", ""))
        fields = _selector(q.get("fieldSelector", ""))
        if ns is not None:
            fields["metadata.namespace"] = ns
        if str(q.get("watch")).lower() in ("true", "1"):
            return self._watch(labels, fields, q)
        with api.lock:
            items = [copy.deepcopy(p) for p in api.pods.values() if _matches(p, labels, fields)]
            rv = api.rv
        if q.get("limit"):
            items = items[: int(q["limit"])]
        return self._json(
            200,
            {
                "kind": "PodList",
                "apiVersion": "v1",
                "metadata": {"resourceVersion": str(rv)},
                "items": items,
            },
        )

    def _watch(self, labels: dict, fields: dict, q: dict) -> None:
        api = self.api
        self._start_stream("application/json")
        with api.lock:
            since = int(q.get("resourceVersion") or 0)
            if since:
                pending = [(k, p) for rv, k, p in api.events if rv > since]
            else:  # no resourceVersion: what there is now, then changes
                pending = [("ADDED", copy.deepcopy(p)) for p in api.pods.values()]
                since = api.rv
        deadline = time.monotonic() + int(q.get("timeoutSeconds") or 3600)
        while True:
            for kind, pod in pending:
                if _matches(pod, labels, fields):
                    self._chunk(json.dumps({"type": kind, "object": pod}).encode() + b"\n")
            with api.lock:
                while api.rv == since and not api.stopping.is_set():
                    if time.monotonic() >= deadline:
                        return self._end_stream()
                    api.lock.wait(0.2)
                if api.stopping.is_set():
                    return self._end_stream()
                pending = [(k, p) for rv, k, p in api.events if rv > since]
                since = api.rv

    def _log(self, ns: str, name: str, q: dict) -> None:
        api = self.api
        key = (ns, name)
        with api.lock:
            pod = api.pods.get(key)
            if pod is None:
                return self._json(404, _status(404, "NotFound", f'pods "{name}" not found'))
            states = [cs.get("state") or {} for cs in pod["status"].get("containerStatuses") or []]
            if not any("running" in s or "terminated" in s for s in states):
                return self._json(
                    400,
                    _status(
                        400,
                        "BadRequest",
                        f'container "probe" in pod "{name}" is waiting to start: ContainerCreating',
                    ),
                )
        stamps = str(q.get("timestamps")).lower() in ("true", "1")
        follow = str(q.get("follow")).lower() in ("true", "1")
        self._start_stream("text/plain")
        sent = 0
        while True:
            with api.lock:
                lines = list(api.logs.get(key, []))
                pod = api.pods.get(key)
                ended = pod is None or any(
                    "terminated" in (cs.get("state") or {})
                    for cs in pod["status"].get("containerStatuses") or []
                )
            for stamp, line in lines[sent:]:
                self._chunk(((stamp + " ") if stamps else "").encode() + line.encode() + b"\n")
            sent = len(lines)
            if not follow or ended or api.stopping.is_set():
                return self._end_stream()
            with api.lock:
                if len(api.logs.get(key, [])) == sent:
                    api.lock.wait(0.2)

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
            return self._json(404, _status(404, "NotFound", f'pods "{name}" not found'))
        container = (pod["spec"].get("containers") or [{}])[0]
        if not container.get("stdin") or not serving:
            return self._json(
                400,
                _status(
                    400, "BadRequest", f'container "probe" in pod "{name}" has no stdin to attach'
                ),
            )
        offered = [p.strip() for p in (self.headers.get("Sec-WebSocket-Protocol") or "").split(",")]
        protocol = next((p for p in offered if p in WS_PROTOCOLS), None)
        if self.headers.get("Upgrade", "").lower() != "websocket" or protocol is None:
            return self._json(
                400, _status(400, "BadRequest", "attach needs a WebSocket with channel.k8s.io")
            )
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
