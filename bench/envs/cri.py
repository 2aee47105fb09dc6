"""`cri`: a pod per launch through the Container Runtime Interface, as a kubelet drives
containerd: RunPodSandbox → CreateContainer → StartContainer → (the probe runs, its
output in the CRI log file) → StopPodSandbox → RemovePodSandbox, every call with a
deadline. The runtime handler is what a RuntimeClass names.

The endpoint is isobench's own containerd by default (cri_daemon: its own config,
root, state and sockets, started by prepare(), stopped by cleanup()), or a node's CRI
socket (`endpoint=unix:///run/containerd/containerd.sock`): its configuration is never
changed; only isobench's pods (label isobench=1) are ever removed from it; the two
images are imported into it when missing (cri_images; containerd only).

API stubs: the PyPI package `container-runtime-interface-api` (module `cri_api`), the
CRI's `runtime.v1` protos generated for Python and kept current (2025); it pins recent
grpcio/protobuf ranges, which the rest of isobench does not constrain.

Phases (ns since submit, host CLOCK_MONOTONIC): sandbox (RunPodSandbox returned),
created, started (CreateContainer, StartContainer returned), ready (the time the CRI
runtime's log writer stamped on the probe's `ready` line, converted from the wall
clock), exit (the probe's process ended: a pidfd on it, else the first ContainerStatus
that said so), cleaned (pod stopped and removed, pod cgroup and log removed).

Resources have the Guaranteed QoS shape: requests = limits on the container (quota,
shares, memory), and the pod cgroup gets the CPU quota too, as a kubelet's pod cgroup
does. The pod cgroup is a per-launch parent isobench makes (LinuxPodSandboxConfig.
cgroup_parent, cgroupfs driver): its totals, read after the pod is stopped, are the
pod's (probe and pause container). Host-side cost: the pod's shim and its pause
process (HostSideSampler), and, with the private daemon, containerd's own CPU time
over the launch (shared with any launch that overlapped it).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import select
import shutil
import subprocess
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

from bench import interrupt
from bench.envs import containers as ct
from bench.envs import cri_daemon as dmn
from bench.envs import cri_images as ci
from bench.envs.base import (
    Availability,
    Context,
    Environment,
    Instance,
    Invocation,
    Launch,
    Leftover,
    MemorySize,
    Option,
    OptionError,
    StartError,
    conclude,
    parse_options,
)
from bench.envs.image import WORKDIR, probe_path
from bench.metrics.cgroup import CFS_PERIOD_US, Cgroup, CgroupError, Layout
from bench.probeio import is_ready, parse_lines

PRIVATE = "private"
CALL_S = 30.0  # a CRI call outside a launch's own deadline (stop, remove, list)
KILL_CALL_S = 5.0
CONNECT_S = 3.0
POLL_S = 0.005  # log and status polling while waiting for `ready` / exit
LOG_NAME = "probe.log"
POD_NAMESPACE = "isobench"
LABEL = "isobench"
SHIMS = {"runsc": "containerd-shim-runsc-v1", "kata": "containerd-shim-kata-v2"}


class Endpoint(str):
    """`private` (isobench's own containerd) or unix:///path/to/a/cri.sock."""

    def __new__(cls, text: str):
        if text != PRIVATE and not re.match(r"^unix:///\S+$", text):
            raise ValueError(text)
        return super().__new__(cls, text)


Endpoint.__name__ = "'private' or unix:///path/to/socket"


# ---------------------------------------------------------------- the CRI client


def _pb():
    from cri_api.v1 import api_pb2, api_pb2_grpc

    return api_pb2, api_pb2_grpc


class CriError(RuntimeError):
    """A CRI call failed: `call` names it, `deadline` says it ran out of time."""

    def __init__(self, call: str, message: str, deadline: bool = False):
        super().__init__(f"{call}: {message}")
        self.call = call
        self.deadline = deadline


class Client:
    """RuntimeService and ImageService over one channel; every call has a deadline."""

    def __init__(self, endpoint: str):
        import grpc

        pb, rpc = _pb()
        self.pb = pb
        self.endpoint = endpoint
        self.channel = grpc.insecure_channel(endpoint)
        self.runtime = rpc.RuntimeServiceStub(self.channel)
        self.images = rpc.ImageServiceStub(self.channel)

    def call(self, name: str, request, timeout: float, service: str = "runtime"):
        import grpc

        if timeout <= 0:
            raise CriError(name, "no time left", deadline=True)
        try:
            return getattr(getattr(self, service), name)(request, timeout=timeout)
        except grpc.RpcError as e:
            code = e.code() if hasattr(e, "code") else None
            details = (e.details() if hasattr(e, "details") else "") or str(code)
            deadline = code == grpc.StatusCode.DEADLINE_EXCEEDED
            if deadline:
                details = f"no answer within {timeout:.3g} s"
            raise CriError(name, ct.first_line(details), deadline) from None

    def version(self, timeout: float = CONNECT_S):
        return self.call("Version", self.pb.VersionRequest(), timeout)

    def config(self, timeout: float = CONNECT_S) -> dict[str, Any]:
        """containerd's CRI config from a verbose Status ({} from other runtimes)."""
        st = self.call("Status", self.pb.StatusRequest(verbose=True), timeout)
        with contextlib.suppress(KeyError, ValueError):
            return json.loads(st.info["config"])
        return {}

    def has_image(self, ref: str) -> bool:
        pb = self.pb
        req = pb.ImageStatusRequest(image=pb.ImageSpec(image=ref))
        return bool(self.call("ImageStatus", req, CALL_S, service="images").image.id)

    def pods(self, labels: dict[str, str]):
        pb = self.pb
        req = pb.ListPodSandboxRequest(filter=pb.PodSandboxFilter(label_selector=labels))
        return list(self.call("ListPodSandbox", req, CALL_S).items)

    def remove_pod(self, sid: str, timeout: float = CALL_S) -> None:
        pb = self.pb
        self.call("StopPodSandbox", pb.StopPodSandboxRequest(pod_sandbox_id=sid), timeout)
        self.call("RemovePodSandbox", pb.RemovePodSandboxRequest(pod_sandbox_id=sid), timeout)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.channel.close()


def _socket(endpoint: str) -> str:
    return endpoint.removeprefix("unix://")


def handlers_of(config: dict[str, Any]) -> list[str]:
    """Pure: the runtime handlers a containerd CRI config lists."""
    return sorted((config.get("containerd") or {}).get("runtimes") or {})


# ---------------------------------------------------------------- the CRI log (pure)


def parse_timestamp(text: str) -> int:
    """RFC 3339 with nanoseconds (what the CRI log writer stamps) -> Unix ns."""
    m = re.match(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)$", text)
    if not m:
        raise ValueError(text)
    tz = "+00:00" if m.group(3) == "Z" else m.group(3)
    seconds = int(datetime.fromisoformat(m.group(1) + tz).timestamp())
    return seconds * 1_000_000_000 + int((m.group(2) or "0").ljust(9, "0"))


def parse_cri_log(text: str) -> list[tuple[int, str, str]]:
    """The CRI log format ("<RFC3339Nano> <stdout|stderr> <P|F> <text>" per line, a long
    line split into P parts ending with an F) -> [(unix ns of its last part, stream,
    line)]. A torn last line (no newline yet) is left out."""
    out: list[tuple[int, str, str]] = []
    partial: dict[str, str] = {}
    for raw in text.split("\n")[:-1]:
        parts = raw.split(" ", 3)
        if len(parts) < 3:
            continue
        stamp, stream, tag = parts[0], parts[1], parts[2]
        content = parts[3] if len(parts) > 3 else ""
        try:
            ns = parse_timestamp(stamp)
        except ValueError:
            continue
        if tag == "P":
            partial[stream] = partial.get(stream, "") + content
            continue
        out.append((ns, stream, partial.pop(stream, "") + content))
    return out


def mono_offset() -> int:
    """Unix ns minus monotonic ns, read back to back (the tighter of three reads)."""
    best = None
    for _ in range(3):
        m0 = time.monotonic_ns()
        w = time.time_ns()
        m1 = time.monotonic_ns()
        if best is None or m1 - m0 < best[0]:
            best = (m1 - m0, w - (m0 + m1) // 2)
    return best[1]


# ---------------------------------------------------------------- availability


def handler_problem(runtime: str, layout: Layout | None = None) -> str:
    """Why isobench's own containerd cannot offer runtime handler `runtime` here."""
    if runtime in ("runc", "crun"):
        if not shutil.which("containerd-shim-runc-v2"):
            return f"{runtime}: no containerd-shim-runc-v2 (apt-get install containerd)"
        if not shutil.which(runtime):
            return f"{runtime}: not installed (apt-get install {runtime})"
        return (layout or Layout.detect()).runtime_problem(runtime)
    if runtime in SHIMS:
        if not shutil.which(SHIMS[runtime]):
            return f"{runtime}: no {SHIMS[runtime]} on this host"
        return ""
    return (f"{runtime}: not a handler isobench's own containerd offers (runc, crun, "
            f"runsc, kata); a node's handler needs endpoint=unix:///...")  # fmt: skip


def private_handler(runtime: str) -> dmn.Handler:
    if runtime in SHIMS:
        version = 2 if runtime == "kata" else 1
        return dmn.Handler(runtime, runtime_type=f"io.containerd.{runtime}.v{version}")
    return dmn.Handler(runtime, binary=shutil.which(runtime))


def containerd_version() -> str:
    """`containerd --version` says "containerd github.com/containerd/containerd 1.6.20~ds1
    ..." (no "version" word): the third word."""
    try:
        out = subprocess.run(["containerd", "--version"], capture_output=True, text=True,
                             timeout=10, check=False).stdout.split()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return ""
    return out[2] if len(out) > 2 else ""


def _private_availability(runtime: str, network: str) -> Availability:
    if os.geteuid() != 0:
        return Availability(False, "needs root: isobench starts its own containerd")
    try:
        _pb()
    except ImportError:
        return Availability(False, "the CRI API stubs are missing: "
                                   "pip install container-runtime-interface-api")  # fmt: skip
    for tool, pkg in (("containerd", "containerd"), ("ctr", "containerd")):
        if not shutil.which(tool):
            return Availability(False, f"{tool} not installed (apt-get install {pkg})")
    layout = Layout.detect()
    if not layout.usable:
        return Availability(False, "no cgroup filesystem at /sys/fs/cgroup")
    problem = handler_problem(runtime, layout)
    if problem:
        return Availability(False, problem)
    if network == "pod":
        missing = [p for p in dmn.CNI_PLUGINS if not (dmn.CNI_BIN / p).is_file()]
        if missing:
            return Availability(False, f"CNI plugins missing in {dmn.CNI_BIN}: "
                                       f"{', '.join(missing)} (apt-get install "
                                       "containernetworking-plugins)")  # fmt: skip
    versions = {"containerd": containerd_version()}
    if runtime in ("runc", "crun"):
        versions[runtime] = ct.tool_version([runtime, "--version"])
    return Availability(True, "", versions)


def _endpoint_availability(endpoint: str, runtime: str) -> Availability:
    sock = _socket(endpoint)
    if not Path(sock).exists():
        return Availability(False, f"no CRI socket at {sock}")
    try:
        cl = Client(endpoint)
    except ImportError:
        return Availability(False, "pip install container-runtime-interface-api")
    try:
        v = cl.version()
        handlers = handlers_of(cl.config())
    except CriError as e:
        return Availability(False, f"CRI endpoint {endpoint} does not answer: {e}")
    finally:
        cl.close()
    if handlers and runtime not in handlers:
        return Availability(False, f"{runtime}: not a runtime handler of {endpoint} "
                                   f"(it has {', '.join(handlers)})")  # fmt: skip
    return Availability(True, "", {v.runtime_name: v.runtime_version, "cri": v.runtime_api_version})


# ---------------------------------------------------------------- the environment


class CriEnv(Environment):
    kind = "cri"
    summary = "a pod per launch through the CRI (containerd's CRI plugin), as a kubelet runs it"
    options = {
        "endpoint": Option(
            PRIVATE,
            "CRI socket: 'private' (isobench starts its own containerd) or a node's, "
            "unix:///run/containerd/containerd.sock (only isobench's pods are touched)",
            type=Endpoint,
        ),
        "runtime": Option(
            "runc",
            "runtime handler, what a RuntimeClass names (runc, crun, "
            "runsc, kata; a node's own with endpoint=)",
        ),  # fmt: skip
        "network": Option(
            "host", "the node's network namespace, or the pod network (CNI ptp)", ("host", "pod")
        ),  # fmt: skip
        "cpus": Option(
            None, "CPU limit of the pod in CPUs, requests = limits (e.g. 0.5)", type=float
        ),  # fmt: skip
        "memory": Option(
            None, "memory limit of the pod, requests = limits (e.g. 512m)", type=MemorySize
        ),  # fmt: skip
    }

    def __init__(self, config: dict[str, Any], ctx: Context):
        super().__init__(config, ctx)
        self._bundle = None
        self._daemon: dmn.PrivateContainerd | None = None
        self._client: Client | None = None
        self._refs: dict[str, str] = {}
        self._info: dict[str, Any] = {}
        self._owns_cgroups = True

    @property
    def private(self) -> bool:
        return self.opts["endpoint"] == PRIVATE

    # -- availability and leftovers

    @classmethod
    def _parse(cls, opts: dict[str, Any] | None) -> dict[str, Any]:
        return parse_options(cls.kind, cls.options, dict(opts or {}))

    @classmethod
    def probe(cls, opts: dict[str, Any] | None = None) -> Availability:
        try:
            o = cls._parse(opts)
        except OptionError as e:
            return Availability(False, str(e))
        if o["endpoint"] == PRIVATE:
            return _private_availability(o["runtime"], o["network"])
        return _endpoint_availability(o["endpoint"], o["runtime"])

    @classmethod
    def details(cls) -> list[tuple[str, Availability]]:
        rows = [("cri", cls.probe())]
        for runtime in ("crun", "runsc", "kata"):
            rows.append((f"cri:runtime={runtime}", cls.probe({"runtime": runtime})))
        rows.append(("cri:network=pod", cls.probe({"network": "pod"})))
        return rows

    @classmethod
    def variants(cls) -> list[str]:
        return [cls.kind, f"{cls.kind}:network=pod"]

    @classmethod
    def leftovers(cls, opts: dict[str, Any] | None = None) -> list[Leftover]:
        out = [_private_leftover(found) for found in dmn.find_private()]
        live = {found.lay.network for found in dmn.find_private()}
        nets = dmn.CNI_STATE / "networks"
        for net in sorted(nets.glob("isobench-*-pods")) if nets.is_dir() else []:
            if net.name not in live:
                ifaces = ", ".join(dmn.cni_interfaces(net.name)) or "no interfaces"
                out.append(Leftover(f"cni network {net.name} ({ifaces})",
                                    lambda n=net.name: dmn.remove_cni_state(n)))  # fmt: skip
        try:
            o = cls._parse(opts)
        except OptionError:
            return out
        if o["endpoint"] != PRIVATE:
            out.extend(_endpoint_leftovers(o["endpoint"]))
        return out

    # -- lifecycle

    def prepare(self, bundle) -> None:
        self._bundle = bundle
        archives = ci.archives(bundle, self.ctx.cache)
        self._refs = {("pause" if "/pause:" in ref else "probes"): ref for ref in archives}
        try:
            if self.private:
                self._start_daemon()
            self._client = Client(self._endpoint)
            self._check_endpoint()
            for ref, archive in archives.items():
                if not self._client.has_image(ref):
                    if self._info.get("runtime_name") != "containerd":
                        raise RuntimeError(
                            f"{ref} is not in {self._endpoint}'s image store and only "
                            "containerd's can be filled without a registry (ctr import)"
                        )
                    ci.import_archive(_socket(self._endpoint), archive)
        except BaseException:
            self._cleanup()
            raise

    @property
    def _endpoint(self) -> str:
        return self._daemon.endpoint if self._daemon else str(self.opts["endpoint"])

    def _start_daemon(self) -> None:
        problem = handler_problem(self.opts["runtime"])
        if problem:
            raise OptionError(problem)
        handlers = [private_handler("runc")]
        if self.opts["runtime"] != "runc":
            handlers.append(private_handler(self.opts["runtime"]))
        lay = dmn.DaemonPaths(self.ctx.prefix, self.ctx.scratch / "containerd")
        self._daemon = dmn.PrivateContainerd(lay, self._refs["pause"], handlers)

        def answers() -> bool:
            cl = Client(lay.endpoint)
            try:
                cl.version(timeout=1)
                return True
            except CriError:
                return False
            finally:
                cl.close()

        try:
            self._daemon.start(answers)
        except dmn.DaemonError as e:
            self._daemon = None
            raise RuntimeError(f"isobench's containerd: {e}") from None

    def _check_endpoint(self) -> None:
        v = self._client.version(timeout=CALL_S)
        config = self._client.config(timeout=CALL_S)
        handlers = handlers_of(config)
        runtime = self.opts["runtime"]
        if handlers and runtime not in handlers:
            raise OptionError(f"cri: runtime={runtime} is not a handler of {self._endpoint} "
                              f"(it has {', '.join(handlers)})")  # fmt: skip
        spec = ((config.get("containerd") or {}).get("runtimes") or {}).get(runtime) or {}
        options = spec.get("options") or {}
        # a per-launch pod cgroup of ours needs the cgroupfs driver
        self._owns_cgroups = not options.get("SystemdCgroup", False)
        binary = options.get("BinaryName") or (runtime if runtime in ("runc", "crun") else "")
        self._info = {
            "runtime_name": v.runtime_name,
            "runtime_version": v.runtime_version,
            "runtime_api_version": v.runtime_api_version,
            "handler": runtime,
            "handler_type": spec.get("runtimeType") or spec.get("runtime_type"),
            "handler_binary": binary or None,
            "handler_version": ct.tool_version([binary, "--version"]) if binary else "",
            "sandbox_image": config.get("sandboxImage"),
            "cni": self._cni_facts(config),
        }

    def _cni_facts(self, config: dict[str, Any]) -> dict[str, Any]:
        if self.opts["network"] != "pod":
            return {"plugin": None, "note": "host network: no CNI call"}
        facts: dict[str, Any] = {"bin_dir": (config.get("cni") or {}).get("binDir")}
        if self._daemon is not None:
            facts.update(plugin="ptp", ipam="host-local", subnet=self._daemon.subnet,
                         ip_masq=False, network=self._daemon.lay.network)  # fmt: skip
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                facts["version"] = _dpkg_version("containernetworking-plugins")
        return facts

    def _start(self, inv: Invocation, timeout: float) -> Instance:
        if self._client is None or self._bundle is None:
            raise RuntimeError("cri: start() before prepare()")
        return _Pod(self, inv, timeout).start()

    def _cleanup(self) -> None:
        try:
            if self._client is not None and not self.private:
                with contextlib.suppress(CriError):  # what our instances did not remove
                    for pod in self._client.pods({LABEL: "1", "isobench.prefix": self.ctx.prefix}):
                        with contextlib.suppress(CriError):
                            self._client.remove_pod(pod.id)
        finally:
            if self._client is not None:
                self._client.close()
                self._client = None
            if self._daemon is not None:
                self._daemon.stop()
                self._daemon = None

    def describe(self) -> dict[str, Any]:
        out = {
            **super().describe(),
            "endpoint": "isobench's own containerd" if self.private else str(self.opts["endpoint"]),
            "runtime": dict(self._info),
            "images": dict(self._refs),
            "network": self.opts["network"],
            "seccomp": "unconfined (no profile in the pod spec: the kubelet's default)",
            "qos": "Guaranteed"
            if self.opts["cpus"] and self.opts["memory"]
            else (
                "limits on cpu or memory only"
                if self.opts["cpus"] or self.opts["memory"]
                else "BestEffort"
            ),  # fmt: skip
            "bundle": self._bundle.hash if self._bundle else None,
        }
        if self._daemon is not None:
            out["daemon"] = {"config": dmn.config_toml(self._daemon.lay, self._refs["pause"],
                                                       self._daemon.handlers)}  # fmt: skip
        return out


def _dpkg_version(package: str) -> str:
    res = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", package],
                         capture_output=True, text=True, timeout=10, check=False)  # fmt: skip
    return res.stdout.strip()


# ---------------------------------------------------------------- leftovers


def _pods_what(endpoint: str) -> tuple[list[Any], str]:
    try:
        cl = Client(endpoint)
    except ImportError:
        return [], ""
    try:
        pods = cl.pods({LABEL: "1"})
    except CriError as e:
        return [], f"does not answer: {e}"
    finally:
        cl.close()
    names = ", ".join(p.metadata.name for p in pods)
    return pods, (f"{len(pods)} pods: {names}" if pods else "no pods")


def _private_leftover(found: dmn.Found) -> Leftover:
    lay = found.lay
    if found.pid is None:
        what = f"cri private containerd {lay.prefix} (not running; state {lay.state})"
    else:
        _, pods = _pods_what(lay.endpoint)
        what = f"cri private containerd {lay.prefix} (pid {found.pid}, {pods})"

    def remove() -> None:
        if found.pid is not None:
            _remove_pods(lay.endpoint)
        dmn.stop_found(found)

    return Leftover(what, remove)


def _remove_pods(endpoint: str, labels: dict[str, str] | None = None) -> None:
    try:
        cl = Client(endpoint)
    except ImportError:
        return
    try:
        for pod in cl.pods(labels or {LABEL: "1"}):
            with contextlib.suppress(CriError):
                cl.remove_pod(pod.id)
    except CriError:
        pass
    finally:
        cl.close()


def _endpoint_leftovers(endpoint: str) -> list[Leftover]:
    pods, _ = _pods_what(endpoint)
    out = []
    for pod in pods:

        def remove(sid=pod.id) -> None:
            cl = Client(endpoint)
            try:
                cl.remove_pod(sid)
            finally:
                cl.close()

        out.append(Leftover(f"cri pod {pod.id[:12]} ({pod.metadata.name}) at {endpoint}", remove))
    return out


# ---------------------------------------------------------------- one pod


class _Pod:
    """Starts one pod (sandbox, container) and hands back its instance; on any failure
    removes what it made and raises StartError, except a deadline: that gives an
    instance already ended with status timeout (a hung runtime is a launch's verdict)."""

    def __init__(self, env: CriEnv, inv: Invocation, timeout: float):
        self.env = env
        self.cl: Client = env._client
        self.inv = inv
        self.timeout = timeout
        self.name = env.new_name()
        self.t_submit = time.monotonic_ns()
        self.deadline = time.monotonic() + timeout
        self.logs = env.ctx.scratch / self.name
        self.cgroup: Cgroup | None = None
        self.sid: str | None = None
        self.cid: str | None = None
        self.phases: dict[str, int] = {}
        self.labels = {LABEL: "1", "isobench.run": env.ctx.run_id,
                       "isobench.prefix": env.ctx.prefix, "isobench.name": self.name}  # fmt: skip

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def mark(self, phase: str) -> None:
        self.phases[phase] = time.monotonic_ns() - self.t_submit

    def resources(self):
        pb = self.cl.pb
        o = self.env.opts
        res = pb.LinuxContainerResources()
        if o["cpus"]:
            res.cpu_period = CFS_PERIOD_US
            res.cpu_quota = round(o["cpus"] * CFS_PERIOD_US)
            res.cpu_shares = max(2, round(o["cpus"] * 1024))  # requests = limits
        if o["memory"]:
            res.memory_limit_in_bytes = o["memory"].bytes()
        return res

    def sandbox_config(self):
        pb = self.cl.pb
        host = self.env.opts["network"] == "host"
        mode = pb.NamespaceMode
        ns = pb.NamespaceOption(
            network=mode.NODE if host else mode.POD, pid=mode.CONTAINER, ipc=mode.POD
        )
        linux = pb.LinuxPodSandboxConfig(
            security_context=pb.LinuxSandboxSecurityContext(namespace_options=ns),
            resources=self.resources(),
        )
        if self.cgroup is not None:
            linux.cgroup_parent = "/" + self.name
        return (
            pb.PodSandboxConfig(
                metadata=pb.PodSandboxMetadata(
                    name=self.name, uid=uuid.uuid4().hex, namespace=POD_NAMESPACE, attempt=0
                ),  # fmt: skip
                hostname="" if host else self.name[-63:],  # a kubelet leaves it empty: no UTS ns
                log_directory=str(self.logs),
                labels=self.labels,
                linux=linux,
            ),
            ns,
        )

    def start(self) -> Instance:
        pb = self.cl.pb
        env = self.env
        phase = "RunPodSandbox"
        try:
            self.logs.mkdir(parents=True)
            if env._owns_cgroups:
                self.cgroup = Cgroup.create(self.name, cpus=env.opts["cpus"])
            config, ns = self.sandbox_config()
            req = pb.RunPodSandboxRequest(config=config, runtime_handler=env.opts["runtime"])
            self.sid = self.cl.call(phase, req, self.left()).pod_sandbox_id
            self.mark("sandbox")
            phase = "CreateContainer"
            container = pb.ContainerConfig(
                metadata=pb.ContainerMetadata(name="probe", attempt=0),
                image=pb.ImageSpec(image=env._refs["probes"]),
                command=self.inv.argv(probe_path(self.inv.probe), WORKDIR),
                working_dir=WORKDIR,
                log_path=LOG_NAME,
                labels=self.labels,
                linux=pb.LinuxContainerConfig(
                    resources=self.resources(),
                    security_context=pb.LinuxContainerSecurityContext(namespace_options=ns),
                ),
            )
            req = pb.CreateContainerRequest(pod_sandbox_id=self.sid, config=container,
                                            sandbox_config=config)  # fmt: skip
            self.cid = self.cl.call(phase, req, self.left()).container_id
            self.mark("created")
            phase = "StartContainer"
            self.cl.call(phase, pb.StartContainerRequest(container_id=self.cid), self.left())
            self.mark("started")
            return PodInstance(self)
        except CriError as e:
            if e.deadline:
                return PodInstance(self, failed=f"{e.call} did not return within "
                                                f"{self.timeout:g} s: pod removed")  # fmt: skip
            with interrupt.shielded():
                self.teardown()
            raise StartError(f"{self.name}: {e}") from None
        except (CgroupError, OSError) as e:
            with interrupt.shielded():
                self.teardown()
            raise StartError(f"could not set up {self.name}: {e}") from None
        except BaseException:
            with interrupt.shielded():
                self.teardown()
            raise

    def teardown(self, hung: bool = False, keep_cgroup: bool = False) -> list[str]:
        """Stop and remove the pod, whatever state it is in (a hung runtime's shim is
        killed first: its runtime would not answer a stop), then the log directory and
        (unless kept to be read) the pod cgroup. Returns what could not be done the
        ordinary way."""
        problems = []
        sids = [self.sid] if self.sid else []
        if hung or not sids:  # RunPodSandbox may still be at work: end it
            self.kill_shims()
        if not sids:
            with contextlib.suppress(CriError):
                sids = [p.id for p in self.cl.pods({"isobench.name": self.name})]
        for sid in sids:
            try:
                self.cl.remove_pod(sid)
            except CriError as e:
                problems.append(str(e))
                self.kill_shims()
                try:
                    self.cl.remove_pod(sid)
                except CriError as e2:
                    problems.append(f"after killing its shim: {e2}")
        shutil.rmtree(self.logs, ignore_errors=True)
        if not keep_cgroup:
            self.remove_cgroup()
        return problems

    def kill_shims(self) -> None:
        """Kill the shim (and what runs under it) serving this pod: found among the
        endpoint's shims by the sandbox name in its bundle's config.json."""
        for shim in dmn.shims_of(Path(_socket(self.env._endpoint))):
            try:
                bundle = Path(shim.cwd())
                spec = json.loads((bundle / "config.json").read_text())
            except (OSError, ValueError, Exception):  # noqa: BLE001 - psutil errors too
                continue
            annotations = spec.get("annotations") or {}
            if annotations.get("io.kubernetes.cri.sandbox-name") == self.name:
                dmn.kill_tree(shim)

    def remove_cgroup(self) -> None:
        if self.cgroup is not None:
            Layout.detect().remove(self.name)
            self.cgroup = None


class PodInstance(Instance):
    """A started pod: `ready` from its CRI log, exit through a pidfd on the probe's
    process (or ContainerStatus), stop = StopContainer (SIGTERM, then SIGKILL after
    the grace), end = StopPodSandbox + RemovePodSandbox."""

    def __init__(self, pod: _Pod, failed: str = ""):
        super().__init__(pod.name, pod.timeout, pod.t_submit)
        self.pod = pod
        self.cl = pod.cl
        self.failed = failed
        self.offset = mono_offset()
        self.log_path = pod.logs / LOG_NAME
        self._seen = 0  # bytes of the log read while waiting for `ready`
        self.t_ready_seen: int | None = None
        self.t_exit: int | None = None
        self.status = None  # the last ContainerStatus
        self.pidfd: int | None = None
        self.sampler: ct.HostSideSampler | None = None
        self.daemon_cpu0 = self._daemon_cpu()
        self.notes: list[str] = []
        self.unresponsive = False  # a CRI call on this pod ran out of time
        if not failed:
            self._watch()

    # -- watching
    def _watch(self) -> None:
        pod = self.pod
        pids: set[int] = set()
        if pod.cgroup is not None:
            reader = Layout.detect().reader(f"{pod.name}/{pod.cid}")
            with contextlib.suppress(OSError, CgroupError):
                pids = reader.pids() if reader else set()
        if len(pids) == 1:
            with contextlib.suppress(OSError):
                self.pidfd = os.pidfd_open(pids.pop())
        pause = self._pause_pid()
        sid, cid = pod.sid, pod.cid

        def carriers() -> dict[int, str]:
            found = ct.find_carriers(sid)
            found.update({p: r for p, r in ct.find_carriers(cid).items() if p not in found})
            if pause:
                found[pause] = "pause"
            return found

        self.sampler = ct.HostSideSampler(carriers, find_every=0.1)
        self.sampler.__enter__()

    def _pause_pid(self) -> int | None:
        pod = self.pod
        if pod.cgroup is None:
            return None
        reader = Layout.detect().reader(f"{pod.name}/{pod.sid}")
        with contextlib.suppress(OSError, CgroupError):
            pids = reader.pids() if reader else set()
            return min(pids) if pids else None
        return None

    def _daemon_cpu(self) -> float | None:
        daemon = self.pod.env._daemon
        pid = daemon.pid() if daemon else None
        if pid is None:
            return None
        import psutil

        with contextlib.suppress(psutil.Error):
            t = psutil.Process(pid).cpu_times()
            return (t.user + t.system) * 1000
        return None

    def _read_log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def _container_status(self, timeout: float):
        pb = self.cl.pb
        req = pb.ContainerStatusRequest(container_id=self.pod.cid)
        self.status = self.cl.call("ContainerStatus", req, timeout).status
        return self.status

    def _exited(self, timeout: float) -> bool:
        st = self._container_status(timeout)
        return st.state == self.cl.pb.ContainerState.CONTAINER_EXITED

    # -- the Instance hooks
    def _ready(self, timeout: float) -> bool:
        if self.failed:
            return False
        deadline = time.monotonic() + timeout
        while True:
            text = self._read_log()
            if len(text) > self._seen:
                self._seen = len(text)
                if any(s == "stdout" and is_ready(line) for _, s, line in parse_cri_log(text)):
                    self.t_ready_seen = time.monotonic_ns()
                    return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(POLL_S)

    def _signal_stop(self) -> None:
        if self.failed:
            return
        pb = self.cl.pb
        grace = max(1, round(self.left()))
        req = pb.StopContainerRequest(container_id=self.pod.cid, timeout=grace)
        try:
            self.cl.call("StopContainer", req, grace + KILL_CALL_S)
        except CriError as e:  # _wait_exit sees it still running; _kill follows
            self.notes.append(str(e))
            self.unresponsive |= e.deadline

    def _wait_exit(self, timeout: float) -> bool:
        if self.failed:
            return True
        deadline = time.monotonic() + timeout
        if self.pidfd is not None and self.t_exit is None:
            ready, _, _ = select.select([self.pidfd], [], [], max(0.0, timeout))
            if not ready:
                return False
            self.t_exit = time.monotonic_ns()
        while True:  # the runtime's view: the container EXITED (a few ms after the pidfd)
            try:
                if self._exited(max(0.1, min(CALL_S, deadline - time.monotonic()))):
                    if self.t_exit is None:
                        self.t_exit = time.monotonic_ns()
                    return True
            except CriError as e:
                if time.monotonic() >= deadline:
                    self.notes.append(str(e))
                    return False
            if time.monotonic() >= deadline:
                return False
            time.sleep(POLL_S if self.pidfd is not None else 4 * POLL_S)

    def _kill(self) -> None:
        if self.failed or self.pod.cid is None:
            return
        pb = self.cl.pb
        req = pb.StopContainerRequest(container_id=self.pod.cid, timeout=0)
        try:
            self.cl.call("StopContainer", req, KILL_CALL_S)
        except CriError as e:
            self.notes.append(f"kill: {e}")
            self.unresponsive |= e.deadline
            if self.pod.cgroup is not None:  # the runtime does not answer: kill the pod
                with contextlib.suppress(CgroupError, OSError):
                    self.pod.cgroup.kill_all()

    def _end(self, *, stopped: bool, timed_out: bool) -> Launch:
        pod = self.pod
        try:
            launch = self._collect(stopped=stopped, timed_out=timed_out)
        finally:
            with interrupt.shielded():
                if self.sampler is not None:
                    self.sampler.stop()
                problems = pod.teardown(hung=bool(self.failed) or self.unresponsive,
                                        keep_cgroup=True)  # fmt: skip
        if pod.cgroup is not None:
            reader = Layout.detect().reader(pod.name)
            with contextlib.suppress(OSError, CgroupError):
                launch.cgroup = reader.read() if reader else {}
        with interrupt.shielded():
            pod.remove_cgroup()
            if self.pidfd is not None:
                with contextlib.suppress(OSError):
                    os.close(self.pidfd)
                self.pidfd = None
        cpu1 = self._daemon_cpu()
        if self.daemon_cpu0 is not None and cpu1 is not None:
            launch.host_side["containerd_cpu_ms"] = round(cpu1 - self.daemon_cpu0, 3)
        if problems or self.notes:
            launch.extra["cri_problems"] = [*self.notes, *problems]
        return launch

    def _collect(self, *, stopped: bool, timed_out: bool) -> Launch:
        pod = self.pod
        launch = Launch(phases=dict(pod.phases))
        launch.extra = {"name": pod.name, "pod_sandbox_id": pod.sid, "container_id": pod.cid}
        if self.failed:
            launch.status, launch.reason = "timeout", self.failed
            return launch
        if self.sampler is not None:
            self.sampler.stop()
            launch.host_side = self.sampler.result()
        exit_code = None
        if not timed_out:
            with contextlib.suppress(CriError):
                st = self.status if self.status is not None else self._container_status(CALL_S)
                if st.state == self.cl.pb.ContainerState.CONTAINER_EXITED:
                    exit_code = st.exit_code
                    launch.extra["cri_reason"] = st.reason
        t_ready = None
        out_lines: list[str] = []
        stderr: list[str] = []
        for wall_ns, stream, line in parse_cri_log(self._read_log()):
            if stream == "stderr":
                stderr.append(line)
            elif t_ready is None and is_ready(line):
                t_ready = wall_ns - self.offset
            elif t_ready is not None:
                out_lines.append(line)
        if t_ready is not None:
            launch.phases["ready"] = max(1, t_ready - pod.t_submit)
            if self.t_ready_seen is not None:
                launch.extra["ready_seen_ns"] = self.t_ready_seen - pod.t_submit
        finished = self.status.finished_at if self.status is not None else 0
        if finished > 0:  # the shim's own time of the exit (it reaped the probe)
            launch.phases["exit"] = max(1, finished - self.offset - pod.t_submit)
            if self.t_exit is not None:
                launch.extra["exit_seen_ns"] = self.t_exit - pod.t_submit
        elif self.t_exit is not None:
            launch.phases["exit"] = self.t_exit - pod.t_submit
        parsed = parse_lines(out_lines)
        launch.records = parsed.records
        if parsed.errors:
            launch.extra["probe_errors"] = parsed.errors
        if parsed.garbage:
            launch.extra["stray_lines"] = parsed.garbage[:5]
        return conclude(
            launch, ready=t_ready is not None, exit_code=exit_code, timed_out=timed_out,
            stopped=stopped, timeout=self.timeout, stderr="\n".join(stderr),
            killed="pod removed",
        )  # fmt: skip
