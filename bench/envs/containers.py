"""What docker, podman and oci share: their options and labels, where an instance's
cgroup lives, the host-side processes that carry a container (shim, runsc sandbox and
gofer, conmon) and how to make sure none of them outlives a launch.

The cgroup trick: runc removes a container's cgroup the moment its init exits, so a
reading "after exit" finds nothing. Each launch therefore gets its own parent cgroup
(`--cgroup-parent` / OCI cgroupsPath `/<name>/probe`) that isobench owns: v1 and v2
charge usage hierarchically, so after the container is gone the parent still holds its
totals (cpu, memory peak, pids peak); isobench reads it, then removes it.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from bench.envs.base import Availability, CpuSet, Invocation, MemorySize, Option
from bench.metrics import cgroup as cg

SAMPLE_INTERVAL_S = 0.05
FIND_EVERY_S = 0.25
MIB = 2**20

# ---------------------------------------------------------------- options and names

CONTAINER_OPTIONS: dict[str, Option] = {
    "seccomp": Option(
        "default", "the engine's default seccomp profile, or none", ("default", "unconfined")
    ),
    "network": Option("none", "network mode", ("none", "bridge", "host")),
    "storage": Option(
        "overlay",
        "where the io workload's directory is: the container's own fs, "
        "a bind-mounted host directory, or a tmpfs",
        ("overlay", "volume", "tmpfs"),
    ),
    "cpus": Option(None, "CPU quota in CPUs (e.g. 0.5)", type=float),
    "cpuset": Option(None, "CPUs the container may use (e.g. 0-1)", type=CpuSet),
    "memory": Option(None, "memory limit (e.g. 512m)", type=MemorySize),
}  # the knobs docker and podman share; each adds its own `runtime`
ENV_LABEL = "isobench.env"  # label value: the environment's name prefix


def labels(ctx) -> dict[str, str]:
    """The labels of every container an environment makes: isobench (what `clean`
    looks for), the run, and the environment (what its cleanup removes)."""
    return {"isobench": "1", "isobench.run": ctx.run_id, ENV_LABEL: ctx.prefix}


# ---------------------------------------------------------------- cgroups


def systemd_slice_path(slice_name: str) -> str:
    """systemd's nesting of a slice name: a-b-c.slice -> a.slice/a-b.slice/a-b-c.slice."""
    stem = slice_name.removesuffix(".slice")
    parts = stem.split("-")
    return "/".join("-".join(parts[: i + 1]) + ".slice" for i in range(len(parts)))


def cgroup_parent_arg(driver: str, name: str) -> str:
    """The engine's --cgroup-parent value for an isobench-owned per-launch parent."""
    return f"{name}.slice" if driver == "systemd" else f"/{name}"


def parent_rel_path(driver: str, name: str) -> str:
    """Where that parent is, relative to each hierarchy's mount."""
    return systemd_slice_path(f"{name}.slice") if driver == "systemd" else name


def container_rel_path(inspect: dict[str, Any], driver: str, engine: str = "docker") -> str:
    """Pure: a container's cgroup path (relative to a hierarchy mount) from inspect data.

    cgroupfs: <CgroupParent or /docker>/<id>; systemd: <CgroupParent or system.slice>
    expanded, then <engine>-<id>.scope. (runsc puts its sandbox in the same place.)
    """
    cid = inspect["Id"]
    parent = (inspect.get("HostConfig") or {}).get("CgroupParent") or ""
    if driver == "systemd":
        parent = parent or "system.slice"
        base = systemd_slice_path(parent) if parent.endswith(".slice") else parent.strip("/")
        return f"{base}/{engine}-{cid}.scope"
    parent = parent or ("/docker" if engine == "docker" else "/libpod_parent")
    return f"{parent.strip('/')}/{cid}"


VOLUMES = "volumes"  # under the environment's own scratch directory


def volume_dir(ctx, name: str, storage: str) -> Path | None:
    """The host directory bind-mounted as the io work directory (storage=volume), in
    the environment's own scratch directory."""
    if storage != "volume":
        return None
    path = ctx.scratch / VOLUMES / name
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o1777)  # the probe may run as any user inside
    return path


@dataclass
class LaunchCgroup:
    """The per-launch parent cgroup: read it after the instance exits, then remove it."""

    rel: str
    layout: cg.Layout = field(default_factory=cg.Layout.detect)

    def read(self) -> dict[str, float]:
        """Totals since the parent was made (it starts at zero: the totals are the delta)."""
        reader = self.layout.reader(self.rel)
        return reader.read() if reader else {}

    def pids(self) -> set[int]:
        reader = self.layout.reader(self.rel)
        return reader.pids() if reader else set()

    def child(self, name: str) -> LaunchCgroup:
        """A cgroup inside it (podman's conmon sits in <parent>/conmon)."""
        return LaunchCgroup(f"{self.rel}/{name}", self.layout)

    def remove(self) -> None:
        """Remove it from every hierarchy: runc makes the parent path in all of them
        (devices, freezer, name=systemd...), not only in those isobench reads."""
        self.layout.remove(self.rel)


# ---------------------------------------------------------------- host-side processes


def cmdline(proc: psutil.Process) -> list[str]:
    with contextlib.suppress(psutil.Error):
        return proc.cmdline()
    return []


def role_of(argv: list[str], instance_id: str) -> str | None:
    """Pure: which carrier of container `instance_id` a process with this argv is."""
    if not argv or not any(instance_id in a for a in argv):
        return None
    first = os.path.basename(argv[0])
    if "containerd-shim" in first:
        return "shim"
    if first == "runsc-sandbox" or (first.startswith("runsc") and "boot" in argv):
        return "sandbox"
    if first == "runsc-gofer" or (first.startswith("runsc") and "gofer" in argv):
        return "gofer"
    if first == "conmon":
        return "conmon"
    if first in ("runsc", "runc", "crun"):
        return "runtime"  # the runtime's own CLI invocations (create, start, state...)
    return None


def find_carriers(instance_id: str) -> dict[int, str]:
    """pid -> role for every host process that carries this container."""
    out: dict[int, str] = {}
    for proc in psutil.process_iter():
        role = role_of(cmdline(proc), instance_id)
        if role:
            out[proc.pid] = role
    return out


def kill_carriers(
    instance_id: str, roles: tuple[str, ...] = ("sandbox", "gofer", "runtime")
) -> list[int]:
    """SIGKILL the runsc processes of a container (failed starts leave them running)."""
    killed = []
    for pid, role in find_carriers(instance_id).items():
        if role in roles:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
    return killed


class HostSideSampler:
    """Samples the carriers of one container while it runs: CPU time (last seen, per
    process, own time only: a shim's reaped child is the container itself) and peak
    RSS/PSS. `result()` sums per role and in total (cpu_ms, rss_mib, pss_mib;
    shim_cpu_ms, sandbox_rss_mib, ...).

    Not bench.metrics.procs.PeakSampler: that one follows a fixed set of pids, while a
    container's carriers appear during start and vanish at exit, each with its role.
    Looking for new carriers (a walk over /proc) is rarer than sampling the known ones.
    """

    def __init__(
        self,
        find: Callable[[], dict[int, str]],
        interval: float = SAMPLE_INTERVAL_S,
        find_every: float = FIND_EVERY_S,
    ):
        self.find = find
        self.interval = interval
        self.find_every = find_every
        self._found_at = 0.0
        self.cpu: dict[int, float] = {}
        self.rss: dict[int, float] = {}
        self.pss: dict[int, float] = {}
        self.roles: dict[int, str] = {}
        self._procs: dict[int, psutil.Process] = {}
        self._stop = threading.Event()
        self._paused = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="isobench-hostside")

    def __enter__(self) -> HostSideSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        if not self._stop.is_set():
            self._stop.set()
            if self._thread.is_alive():
                self._thread.join(2)
            with contextlib.suppress(Exception):  # a last reading: short launches may
                self.sample()  # end between two samples

    def pause(self) -> None:
        """No sampling until resume() (Instance.quiet: while other instances measure);
        stop() still takes its last reading."""
        self._paused.set()

    def resume(self) -> None:
        self._paused.clear()

    def sample(self) -> None:
        now = time.monotonic()
        found = {}
        if now - self._found_at >= self.find_every:
            self._found_at = now
            found = self.find()
        for pid, role in found.items():
            if pid not in self._procs:
                with contextlib.suppress(psutil.Error):
                    self._procs[pid] = psutil.Process(pid)
                    self.roles[pid] = role
        for pid, proc in list(self._procs.items()):
            try:
                with proc.oneshot():
                    t = proc.cpu_times()
                    rss = proc.memory_info().rss
            except psutil.Error:
                del self._procs[pid]
                continue
            self.cpu[pid] = (t.user + t.system) * 1000
            self.rss[pid] = max(self.rss.get(pid, 0.0), rss / MIB)
            with contextlib.suppress(psutil.Error):  # PSS needs smaps: may be refused
                pss = getattr(proc.memory_full_info(), "pss", 0) / MIB
                self.pss[pid] = max(self.pss.get(pid, 0.0), pss)

    def _loop(self) -> None:
        while True:
            if not self._paused.is_set():
                with contextlib.suppress(Exception):
                    self.sample()
            if self._stop.wait(self.interval):
                break

    def result(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for series, suffix in ((self.cpu, "cpu_ms"), (self.rss, "rss_mib"), (self.pss, "pss_mib")):
            for pid, value in series.items():
                key = f"{self.roles[pid]}_{suffix}"
                out[key] = out.get(key, 0.0) + value
                out[suffix] = out.get(suffix, 0.0) + value
        out["processes"] = float(len(self.roles))
        return {k: round(v, 3) for k, v in out.items()}


# ---------------------------------------------------------------- misc


def runtime_availability(runtime: str, layout: cg.Layout) -> Availability:
    """Can podman or oci use this OCI runtime here: installed, and not refused by the
    cgroup layout? (docker asks its daemon instead: docker_daemon.runtime_available.)"""
    path = shutil.which(runtime)
    if not path:
        return Availability(False, f"{runtime}: not installed (apt-get install {runtime})")
    if problem := layout.runtime_problem(runtime):
        return Availability(False, problem)
    return Availability(True, "", {runtime: tool_version([path, "--version"])})


def first_line(text: str) -> str:
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    return lines[0] if lines else ""


def version_of(tool: str, text: str) -> str:
    """Pure: the version in a tool's `--version` output, without the tool's own name:
    "runc version 1.1.5" -> "1.1.5", "unshare from util-linux 2.38.1" -> "util-linux 2.38.1"."""
    line = first_line(text)
    if m := re.search(r"\bversion\s+(\S+)", line):
        return m.group(1)
    words = line.split()
    while words and words[0].lower() in (os.path.basename(tool).lower(), "from"):
        words.pop(0)
    return " ".join(words)


def tool_version(argv: list[str]) -> str:
    """The version `tool --version` prints (see version_of), or "" when it cannot run."""
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return version_of(argv[0], out.stdout or out.stderr)


def ns_since(t0: int) -> int:
    return time.monotonic_ns() - t0


def host_rlimits() -> dict[str, tuple[int, int]]:
    """The host's hard nofile/nproc limits (an engine's defaults may exceed them)."""
    import resource

    out = {}
    for name, which in (("nofile", resource.RLIMIT_NOFILE), ("nproc", resource.RLIMIT_NPROC)):
        _, hard = resource.getrlimit(which)
        out[name] = (hard, hard)
    return out


# ---------------------------------------------------------------- network


def served_port(inv: Invocation) -> int | None:
    """Pure: the port a server invocation listens on (`--server ... --port P`), which a
    bridge network publishes; None for every other invocation."""
    args = list(inv.args)
    if "--server" in args and "--port" in args and args.index("--port") + 1 < len(args):
        with contextlib.suppress(ValueError):
            return int(args[args.index("--port") + 1])
    return None


def network_of(opts: dict[str, Any], config: dict[str, Any], inv: Invocation) -> str:
    """The network an instance gets: the `network` option when the spec gives it; else
    none for a probe (no interface to set up: nothing to measure there) and bridge for a
    server the host must reach (what `docker run` and `podman run` give by default)."""
    if config.get("network") is not None:
        return opts["network"]
    return "bridge" if served_port(inv) is not None else "none"


def net_path_problem(network: str) -> str | None:
    """Pure: why a host-side client cannot reach a server on `network` (None: it can)."""
    if network == "none":
        return (
            "network=none gives the container no interface but loopback: "
            "use network=bridge or network=host"
        )
    return None
