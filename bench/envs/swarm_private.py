"""Private dockerds for the `swarm` kind (daemon=private, workers=N): each in a network
namespace of its own, with its own data root, exec root, pid file, unix socket and
managed containerd (its own namespaces), no default bridge, its iptables rules in its
own namespace. The machine's dockerd is never touched, so a swarm can be made and left
while other work uses that daemon.

The manager's namespace is linked to the host by a veth pair (a /30 of VETH_BLOCK):
a client on the host reaches a published port through it. Each worker's namespace is
linked to the manager's by a pair of its own; the worker joins over that link. Links
carry isobench's alias (namespaces.link_alias), namespaces and exec roots its name, so
`clean` finds what a kill -9 left: the daemons (by their exec root), their namespaces.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from bench.envs.base import Leftover, StartError
from bench.envs.namespaces import (
    VETH_PREFIX,
    free_slash30,
    link_alias,
    remove_link,
    run_ip,
    taken_networks,
)

RUN_DIR = Path("/run/isobench-swarm")  # exec roots and sockets (a socket path must be short)
NETNS_DIR = Path("/run/netns")
NETNS_PREFIX = "isobench-"  # `ip netns` names: isobench-<env prefix tail>-<role>
START_TIMEOUT_S = 60
STOP_TIMEOUT_S = 20
BLOCK = "10.213.0.0/16"  # the /30s of the host<->manager and manager<->worker links


def dockerd_argv(data: Path, exec_root: Path, tag: str, config: Path) -> list[str]:
    """Pure: a private dockerd's command line (its own everything, see the module)."""
    sock = exec_root / "docker.sock"
    return [
        "dockerd",
        "--data-root",
        str(data),
        "--exec-root",
        str(exec_root),
        "--pidfile",
        str(exec_root / "docker.pid"),
        "-H",
        f"unix://{sock}",
        "--config-file",
        str(config),
        "--bridge",
        "none",
        "--containerd-namespace",
        f"isobench-{tag}",
        "--containerd-plugins-namespace",
        f"isobench-{tag}-plugins",
    ]


@dataclass
class PrivateDaemon:
    """One private dockerd in its own network namespace (see the module)."""

    name: str  # <env prefix>-<role>: the exec root's and the namespace's name
    data: Path  # its data root (in the env's scratch)
    address: str = ""  # its address on its first link (set by link_to())
    manager_address: str = ""  # a worker's: the manager's end of their link
    node_id: str = ""  # a worker's swarm node id, once joined
    proc: subprocess.Popen | None = None
    links: list[str] = field(default_factory=list)  # host-side ends made

    @property
    def exec_root(self) -> Path:
        return RUN_DIR / self.name

    @property
    def host(self) -> str:
        return f"unix://{self.exec_root / 'docker.sock'}"

    @property
    def netns(self) -> str:
        return self.name

    @property
    def tag(self) -> str:
        return hashlib.sha256(self.name.encode()).hexdigest()[:10]

    def make_netns(self) -> None:
        run_ip("netns", "add", self.netns)
        run_ip("-n", self.netns, "link", "set", "lo", "up")

    def link_to(self, peer_ns: str | None) -> tuple[str, str]:
        """A veth pair from `peer_ns` (None: the host) to this namespace; returns (the
        peer's address, this daemon's address) on it."""
        tag = hashlib.sha256(f"{self.name}>{peer_ns}".encode()).hexdigest()[:8]
        near_end, far_end = f"{VETH_PREFIX}{tag}h", f"{VETH_PREFIX}{tag}n"
        taken = taken_networks()
        net = free_slash30(taken, self.name, BLOCK)
        near, far = (f"{a}/30" for a in list(net.hosts())[:2])
        on_peer = ["-n", peer_ns] if peer_ns else []
        veth = ["type", "veth", "peer", "name", far_end, "netns", self.netns]
        run_ip(*on_peer, "link", "add", near_end, *veth)
        self.links.append(near_end)
        run_ip(*on_peer, "link", "set", "dev", near_end, "alias", link_alias(self.name))
        run_ip(*on_peer, "addr", "add", near, "dev", near_end)
        run_ip(*on_peer, "link", "set", "dev", near_end, "up")
        run_ip("-n", self.netns, "addr", "add", far, "dev", far_end)
        run_ip("-n", self.netns, "link", "set", "dev", far_end, "up")
        mine = far.split("/")[0]
        self.address = self.address or mine
        return near.split("/")[0], mine

    def start(self) -> None:
        """Start dockerd in the namespace; wait until its socket answers."""
        self.exec_root.mkdir(parents=True, exist_ok=True)
        self.data.mkdir(parents=True, exist_ok=True)
        config = self.exec_root / "daemon.json"
        config.write_text("{}\n")
        log = open(self.exec_root / "dockerd.log", "wb")  # noqa: SIM115 - the child's
        argv = dockerd_argv(self.data, self.exec_root, self.tag, config)
        try:
            self.proc = subprocess.Popen(
                ["nsenter", f"--net={NETNS_DIR / self.netns}", "--", *argv],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            log.close()
        deadline = time.monotonic() + START_TIMEOUT_S
        from bench.envs.swarm_daemon import client

        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise StartError(f"private dockerd {self.name} exited: {self.log_tail()}")
            with contextlib.suppress(Exception):
                client(self.host, timeout=2).ping()
                return
            time.sleep(0.2)
        raise StartError(f"private dockerd {self.name}: no answer within {START_TIMEOUT_S} s")

    def log_tail(self) -> str:
        with contextlib.suppress(OSError):
            lines = (self.exec_root / "dockerd.log").read_text(errors="replace").splitlines()
            return lines[-1][:300] if lines else ""
        return ""

    def stop(self) -> None:
        """Stop dockerd (SIGTERM: it stops its containers and containerd), then remove
        its links, namespace, exec root and data root. Never raises."""
        pid = self.proc.pid if self.proc else None
        stop_daemon(self.exec_root, pid)
        if self.proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(5)
        for name in self.links:
            remove_link(name)  # gone with the namespace already, mostly
        remove_private(self.exec_root, self.netns, self.data)


def daemon_pids(exec_root: Path) -> list[int]:
    """The dockerd (and its containerd) whose command line names `exec_root`."""
    out = []
    root = str(exec_root)
    for proc in psutil.process_iter(["cmdline"]):
        argv = proc.info.get("cmdline") or []
        mine = any(a == root or a.startswith(root + "/") for a in argv)
        if mine and os.path.basename(argv[0]) in ("dockerd", "containerd"):
            out.append(proc.pid)
    return out


def stop_daemon(exec_root: Path, pid: int | None = None) -> None:
    pids = sorted(set(daemon_pids(exec_root)) | ({pid} if pid else set()))
    daemons = [p for p in pids if _name(p) in ("dockerd", "nsenter")]
    for p in daemons:
        with contextlib.suppress(ProcessLookupError):
            os.kill(p, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while time.monotonic() < deadline and any(_alive(p) for p in daemons):
        time.sleep(0.1)
    for p in daemon_pids(exec_root):  # what did not stop, and containerd
        with contextlib.suppress(ProcessLookupError):
            os.kill(p, signal.SIGKILL)


def _alive(pid: int) -> bool:
    """The process runs: a dockerd that exited stays a zombie until its parent (the
    PrivateDaemon's Popen, waited only after this) reaps it, and pid_exists said yes to
    that for the whole timeout: every stop took 20 s."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _name(pid: int) -> str:
    with contextlib.suppress(psutil.Error):
        return psutil.Process(pid).name()
    return ""


def unmount_under(*roots: Path) -> None:
    """Unmount (lazily, deepest first) every mount under these directories: a killed
    dockerd leaves its overlay mounts and its containers' namespace files."""
    points = []
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            point = line.split()[4].replace("\\040", " ")
            if any(point == str(r) or point.startswith(f"{r}/") for r in roots):
                points.append(point)
    for point in sorted(points, key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True, timeout=10, check=False)


def remove_private(exec_root: Path, netns: str, data: Path | None) -> None:
    roots = [exec_root] + ([data] if data else [])
    unmount_under(*roots)
    with contextlib.suppress(OSError, subprocess.TimeoutExpired):
        subprocess.run(["ip", "netns", "del", netns], capture_output=True, timeout=10)
    for root in roots:
        shutil.rmtree(root, ignore_errors=True)


def private_leftovers() -> list[Leftover]:
    """Private daemons (exec roots under RUN_DIR) and their namespaces a kill -9 left;
    each named by its env's prefix. The data root went with the run's scratch."""
    out = []
    names = set()
    with contextlib.suppress(OSError):
        names |= {p.name for p in RUN_DIR.iterdir() if p.name.startswith("isobench-")}
    with contextlib.suppress(OSError):
        names |= {p.name for p in NETNS_DIR.iterdir() if p.name.startswith(NETNS_PREFIX)}
    for name in sorted(names):
        root = RUN_DIR / name
        pids = daemon_pids(root)
        what = f"private dockerd {name}" + (f" (pids {', '.join(map(str, pids))})" if pids else "")
        out.append(Leftover(what, lambda r=root, n=name: _remove_left(r, n)))
    return out


def _remove_left(root: Path, netns: str) -> None:
    data = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        argv = psutil.Process(daemon_pids(root)[0]).cmdline()
        data = Path(argv[argv.index("--data-root") + 1])
    stop_daemon(root)
    from bench.envs.swarm_daemon import forget

    forget(f"unix://{root / 'docker.sock'}")
    remove_private(root, netns, data)


def describe(daemons: list[PrivateDaemon]) -> list[dict[str, str]]:
    return [{"name": d.name, "address": d.address, "host": d.host} for d in daemons]
