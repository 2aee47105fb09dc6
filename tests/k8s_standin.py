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
temporary kubeconfig are gone when the block ends, also on Ctrl-C).

This module is the API's state and its pretend kubelet; tests/k8s_standin_http.py is the
HTTP face (routing, lists, watch, log); tests/k8s_standin_attach.py the serving pods and
pods/attach."""

from __future__ import annotations

import contextlib
import copy
import json
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import ThreadingHTTPServer
from pathlib import Path

from tests.k8s_standin_attach import SERVE, ServingPods
from tests.k8s_standin_http import TOKEN, VERSION, Handler, api_status

PROBES = ("hold", "startup", "syscall")  # what the stand-in pretends to run


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


class StandIn(ServingPods):
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
            handler = type("Handler", (Handler,), {"api": self})
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

        self._running(key, container)
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

    def _running(self, key, container: dict) -> None:
        """The container started: the pod is Running (nothing if it is gone)."""
        with self.lock:
            pod = self.pods.get(key)
            if pod is None:
                return
            pod["status"]["phase"] = "Running"
            pod["status"]["containerStatuses"] = [
                self._cs(container, {"running": {"startedAt": _stamp()}})
            ]
            self._mark(key[1], "started")
            self._bump("MODIFIED", pod)

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
            return 422, api_status(
                422, "Invalid", "Pod is invalid: name, containers and image are required"
            )
        rc = spec.get("runtimeClassName")
        with self.lock:
            if ns not in self.namespaces:
                return 404, api_status(404, "NotFound", f'namespaces "{ns}" not found')
            if self.namespaces[ns]["status"]["phase"] != "Active":
                return 403, api_status(
                    403,
                    "Forbidden",
                    f"unable to create new content in "
                    f"namespace {ns} because it is being "
                    "terminated",
                )
            if rc and rc not in self.runtime_classes:
                return 403, api_status(
                    403, "Forbidden", f'pod rejected: RuntimeClass "{rc}" not found'
                )
            if (ns, name) in self.pods:
                return 409, api_status(409, "AlreadyExists", f'pods "{name}" already exists')
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
                return 404, api_status(404, "NotFound", f'pods "{name}" not found')
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
                return 404, api_status(404, "NotFound", f'namespaces "{name}" not found')
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
