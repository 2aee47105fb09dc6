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

The net workload's server is a pod like any other; the host-side client reaches it
on loopback (network=host: the node's namespace) or at the pod's IP (network=pod:
PodSandboxStatus's, routed by the CNI plugin to the pod's veth, no NAT).

Resources have the Guaranteed QoS shape: requests = limits on the container (quota,
shares, memory), and the pod cgroup gets the CPU quota too, as a kubelet's pod cgroup
does. The pod cgroup is a per-launch parent isobench makes (LinuxPodSandboxConfig.
cgroup_parent, cgroupfs driver): its totals, read after the pod is stopped, are the
pod's (probe and pause container). Host-side cost: the pod's shim and its pause
process (HostSideSampler), and, with the private daemon, containerd's own CPU time
over the launch (shared with any launch that overlapped it).

With rootfs=NAME the pod's container image is that isobench rootfs plus the bundle's
probes (the bytes docker and podman import), `isobench.local/rootfs:<key>-<bundle hash>`,
streamed into the endpoint's containerd when missing (cri_images.import_rootfs); the
probes at roots.PROBE_DIR, the io directory at roots.WORKDIR. The private containerd's
images go with it; on a node's endpoint the image stays, as the probes' image does.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

from bench import footprint as fp
from bench.envs import containers as ct
from bench.envs import cri_daemon as dmn
from bench.envs import cri_images as ci
from bench.envs import image as img
from bench.envs import roots
from bench.envs.base import (
    Availability,
    Context,
    Environment,
    Instance,
    Invocation,
    Leftover,
    MemorySize,
    Option,
    OptionError,
)
from bench.envs.cri_client import (
    CALL_S,
    Client,
    CriError,
    answers,
    handlers_of,
    socket_path,
    stubs,
)
from bench.envs.cri_pod import LABEL, _Pod
from bench.metrics.cgroup import Layout

PRIVATE = "private"
SHIMS = {"runsc": "containerd-shim-runsc-v1", "kata": "containerd-shim-kata-v2"}


class Endpoint(str):
    """`private` (isobench's own containerd) or unix:///path/to/a/cri.sock."""

    def __new__(cls, text: str):
        if text != PRIVATE and not re.match(r"^unix:///\S+$", text):
            raise ValueError(text)
        return super().__new__(cls, text)


Endpoint.__name__ = "'private' or unix:///path/to/socket"


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
    return (
        f"{runtime}: not a handler isobench's own containerd offers (runc, crun, "
        f"runsc, kata); a node's handler needs endpoint=unix:///..."
    )


def private_handler(runtime: str) -> dmn.Handler:
    if runtime in SHIMS:
        version = 2 if runtime == "kata" else 1
        return dmn.Handler(runtime, runtime_type=f"io.containerd.{runtime}.v{version}")
    return dmn.Handler(runtime, binary=shutil.which(runtime))


def containerd_version() -> str:
    """`containerd --version` says "containerd github.com/containerd/containerd 1.6.20~ds1
    ..." (no "version" word): the third word."""
    try:
        out = subprocess.run(
            ["containerd", "--version"], capture_output=True, text=True, timeout=10, check=False
        ).stdout.split()
    except (OSError, subprocess.SubprocessError):
        return ""
    return out[2] if len(out) > 2 else ""


def _private_availability(runtime: str, network: str) -> Availability:
    if os.geteuid() != 0:
        return Availability(False, "needs root: isobench starts its own containerd")
    try:
        stubs()
    except ImportError:
        return Availability(
            False, "the CRI API stubs are missing: pip install container-runtime-interface-api"
        )
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
            return Availability(
                False,
                f"CNI plugins missing in {dmn.CNI_BIN}: "
                f"{', '.join(missing)} (apt-get install "
                "containernetworking-plugins)",
            )
    versions = {"containerd": containerd_version()}
    if runtime in ("runc", "crun"):
        versions[runtime] = ct.tool_version([runtime, "--version"])
    return Availability(True, "", versions)


def _endpoint_availability(endpoint: str, runtime: str) -> Availability:
    sock = socket_path(endpoint)
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
        return Availability(
            False, f"{runtime}: not a runtime handler of {endpoint} (it has {', '.join(handlers)})"
        )
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
        ),
        "network": Option(
            "host", "the node's network namespace, or the pod network (CNI ptp)", ("host", "pod")
        ),
        "cpus": Option(
            None, "CPU limit of the pod in CPUs, requests = limits (e.g. 0.5)", type=float
        ),
        "memory": Option(
            None, "memory limit of the pod, requests = limits (e.g. 512m)", type=MemorySize
        ),
        "rootfs": roots.ROOTFS_OPTION,
    }
    channel = True  # serve mode: the CRI Attach stream (cri_pod.PodInstance.ask)

    def __init__(self, config: dict[str, Any], ctx: Context):
        super().__init__(config, ctx)
        self._bundle = None
        self._daemon: dmn.PrivateContainerd | None = None
        self._client: Client | None = None
        self._refs: dict[str, str] = {}
        self._rootfs = None  # the isobench rootfs the container's image is made from, if any
        self._info: dict[str, Any] = {}
        self._owns_cgroups = True

    @property
    def private(self) -> bool:
        return self.opts["endpoint"] == PRIVATE

    # -- availability and leftovers

    @classmethod
    def probe(cls, opts: dict[str, Any] | None = None) -> Availability:
        try:
            o = cls.parse(opts)
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
        # the pod network (cri:network=pod) is one more attribution variant; --all leaves
        # it out to keep the quick matrix within its budget on a 2-core host
        return [cls.kind]

    @classmethod
    def leftovers(cls, opts: dict[str, Any] | None = None) -> list[Leftover]:
        out = [_private_leftover(found) for found in dmn.find_private()]
        live = {found.lay.network for found in dmn.find_private()}
        nets = dmn.CNI_STATE / "networks"
        for net in sorted(nets.glob("isobench-*-pods")) if nets.is_dir() else []:
            if net.name not in live:
                ifaces = ", ".join(dmn.cni_interfaces(net.name)) or "no interfaces"
                out.append(
                    Leftover(
                        f"cni network {net.name} ({ifaces})",
                        lambda n=net.name: dmn.remove_cni_state(n),
                    )
                )
        try:
            o = cls.parse(opts)
        except OptionError:
            return out
        if o["endpoint"] != PRIVATE:
            out.extend(_endpoint_leftovers(o["endpoint"]))
        return out

    # -- lifecycle

    def prepare(self, bundle) -> None:
        self._bundle = bundle
        self._rootfs = roots.load(self.opts["rootfs"], self.ctx.cache)
        if self._rootfs is None:
            archives = ci.archives(bundle, self.ctx.cache)
        else:  # the container's image is the rootfs's, streamed in below
            archives = ci.pause_archive(bundle, self.ctx.cache)
        self._refs = {("pause" if "/pause:" in ref else "probes"): ref for ref in archives}
        if self._rootfs is not None:
            self._refs["rootfs"] = ci.rootfs_ref(self._rootfs.key, bundle.hash)
        try:
            if self.private:
                self._start_daemon()
            self._client = Client(self._endpoint)
            self._check_endpoint()
            for ref, archive in archives.items():
                if not self._client.has_image(ref):
                    self._can_import(ref)
                    ci.import_archive(socket_path(self._endpoint), archive)
            if self._rootfs is not None and not self._client.has_image(self._refs["rootfs"]):
                self._can_import(self._refs["rootfs"])
                ci.import_rootfs(socket_path(self._endpoint), self._rootfs, bundle, self.ctx.cache)
        except BaseException:
            self._cleanup()
            raise

    def _can_import(self, ref: str) -> None:
        if self._info.get("runtime_name") != "containerd":
            raise RuntimeError(
                f"{ref} is not in {self._endpoint}'s image store and only "
                "containerd's can be filled without a registry (ctr import)"
            )

    @property
    def image_ref(self) -> str:
        """The image of the pods' probe container: the rootfs's, else the probes'."""
        return self._refs["rootfs" if self._rootfs is not None else "probes"]

    @property
    def workdir(self) -> str:
        """The io workload's directory inside the container (its image's WORKDIR)."""
        return roots.WORKDIR if self._rootfs is not None else img.WORKDIR

    def probe_path(self, probe: str) -> str:
        return roots.probe_path(probe) if self._rootfs is not None else img.probe_path(probe)

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

        try:
            self._daemon.start(lambda: answers(lay.endpoint))
        except dmn.DaemonError as e:
            self._daemon = None
            raise RuntimeError(f"isobench's containerd: {e}") from None

    def _check_endpoint(self) -> None:
        v = self._client.version(timeout=CALL_S)
        config = self._client.config(timeout=CALL_S)
        handlers = handlers_of(config)
        runtime = self.opts["runtime"]
        if handlers and runtime not in handlers:
            raise OptionError(
                f"cri: runtime={runtime} is not a handler of {self._endpoint} "
                f"(it has {', '.join(handlers)})"
            )
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
            facts.update(
                plugin="ptp",
                ipam="host-local",
                subnet=self._daemon.subnet,
                ip_masq=False,
                network=self._daemon.lay.network,
            )
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

    def disk_footprint(self, bundle, io, timeout) -> list[dict[str, Any]]:
        """Each image as the endpoint's image store reports it and as the OCI archive
        imported; the writable layer is not measured (said, not guessed)."""
        out = []
        for ref, archive in sorted(ci.archives(bundle, self.ctx.cache).items()):
            name = "pause image" if "/pause:" in ref else "image"
            if self._client is not None:
                pb = self._client.pb
                req = pb.ImageStatusRequest(image=pb.ImageSpec(image=ref))
                status = self._client.call("ImageStatus", req, fp.CALL_TIMEOUT_S, service="images")
                out.append(
                    fp.figure(
                        name,
                        int(status.image.size),
                        f"CRI ImageService ImageStatus({ref}).image.size, as the "
                        "endpoint's image store reports it",
                    )
                )
            out.append(
                fp.figure(
                    f"{name} (OCI archive)",
                    fp.du(archive).apparent,
                    f"apparent size of the OCI image archive imported: {archive}",
                )
            )
        out.append(
            fp.missing(
                "writable layer after io",
                "not measured: needs the pod's container id from the cri kind "
                "(then ContainerStats().writable_layer.used_bytes)",
            )
        )
        return out

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
            ),
            "bundle": self._bundle.hash if self._bundle else None,
            "rootfs": roots.describe(self._rootfs),
        }
        if self._daemon is not None:
            out["daemon"] = {
                "config": dmn.config_toml(
                    self._daemon.lay, self._refs["pause"], self._daemon.handlers
                )
            }
        return out


def _dpkg_version(package: str) -> str:
    res = subprocess.run(
        ["dpkg-query", "-W", "-f", "${Version}", package],
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
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
