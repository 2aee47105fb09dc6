"""The private containerd of the `cri` kind: isobench's own daemon, never dockerd's.

Everything it has is isobench's: its config, root, state, sockets, runc root, CNI
config and pod network (a /24 no route of this host overlaps, `ptp` + `host-local`,
no masquerading: no iptables rule is made). It is started by the environment's
prepare() and stopped by its cleanup; a crash leaves it running (its own session), and
`isobench clean` finds it by the marker in its config (`leftovers()`).

What containerd 1.6 keeps in shared places, and how each is handled:
- shim sockets in /run/containerd/s/<hash of our address>: removed by the shims
  themselves; a shim of ours is found by its `-address` (our socket) and killed;
- CNI's result cache and IPAM allocations in /var/lib/cni: under our network's name
  (which carries the environment's prefix), removed with the daemon.

The CRI settings that this kind of host needs are in `config_toml` (see its notes).
"""

from __future__ import annotations

import contextlib
import ctypes
import ipaddress
import json
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from bench.envs import containers as ct

RUN_BASE = Path("/run/isobench-cri")  # state and sockets: one directory per daemon
MARKER = "# isobench-cri"  # first line of every config isobench writes
CNI_BIN = Path("/usr/lib/cni")
CNI_PLUGINS = ("ptp", "host-local", "loopback")
CNI_STATE = Path("/var/lib/cni")
SUBNETS = ("10.240.0.0/16", "172.30.0.0/16")  # where a free /24 for pods is looked for
START_TIMEOUT_S = 30
STOP_GRACE_S = 10
SOCKET_MAX = 100  # sun_path is 108 bytes


def binary(name: str) -> str | None:
    return shutil.which(name)


@dataclass
class Handler:
    """A runtime handler (what a RuntimeClass names) of the private containerd."""

    name: str
    runtime_type: str = "io.containerd.runc.v2"
    binary: str | None = None  # the OCI runtime the runc shim runs (BinaryName)


@dataclass
class DaemonPaths:
    """Where one private containerd keeps its things."""

    prefix: str
    root: Path  # images and snapshots: the environment's scratch (disk)
    state: Path = field(init=False)

    def __post_init__(self):
        self.state = RUN_BASE / self.prefix

    @property
    def config(self) -> Path:
        return self.state / "config.toml"

    @property
    def socket(self) -> Path:
        return self.state / "containerd.sock"

    @property
    def endpoint(self) -> str:
        return f"unix://{self.socket}"

    @property
    def log(self) -> Path:
        return self.state / "containerd.log"

    @property
    def cni_conf(self) -> Path:
        return self.state / "cni"

    @property
    def network(self) -> str:
        return f"{self.prefix}-pods"


# ---------------------------------------------------------------- configuration (pure)


def _toml_str(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid TOML basic string


def config_toml(lay: DaemonPaths, sandbox_image: str, handlers: list[Handler]) -> str:
    """The daemon's config (containerd 1.6, version 2). Why each CRI setting:
    - restrict_oom_score_adj: without CAP_SYS_RESOURCE (this kind of VM) the sandbox's
      oom_score_adj of -998 fails, and runc only says "can't get final child's PID";
    - disable_apparmor: no AppArmor profile is loaded on such hosts;
    - netns_mounts_under_state_dir: pod netns files under our state, not /run/netns;
    - stream_server_port 0: never the default 10010 another containerd may hold;
    - each runc handler gets a runc Root of its own (the default one is shared);
    - SystemdCgroup false: the cgroupfs driver (systemd need not be PID 1).
    io.containerd.runtime.v1.linux stays enabled: 1.6's CRI plugin needs it."""
    cri = '[plugins."io.containerd.grpc.v1.cri"]'
    lines = [
        f"{MARKER} prefix={lay.prefix}",
        "version = 2",
        f"root = {_toml_str(str(lay.root))}",
        f"state = {_toml_str(str(lay.state / 'state'))}",
        "oom_score = 0",
        "",
        "[grpc]",
        f"  address = {_toml_str(str(lay.socket))}",
        "[ttrpc]",
        f"  address = {_toml_str(str(lay.socket) + '.ttrpc')}",
        "[debug]",
        '  address = ""',
        '  level = "warn"',
        "[metrics]",
        '  address = ""',
        '[plugins."io.containerd.internal.v1.opt"]',
        f"  path = {_toml_str(str(lay.state / 'opt'))}",
        cri,
        f"  sandbox_image = {_toml_str(sandbox_image)}",
        "  disable_apparmor = true",
        "  restrict_oom_score_adj = true",
        "  netns_mounts_under_state_dir = true",
        '  stream_server_address = "127.0.0.1"',
        '  stream_server_port = "0"',
        "  enable_selinux = false",
        f"{cri[:-1]}.cni]",
        f"  bin_dir = {_toml_str(str(CNI_BIN))}",
        f"  conf_dir = {_toml_str(str(lay.cni_conf))}",
        "  max_conf_num = 1",
        f"{cri[:-1]}.containerd]",
        '  snapshotter = "overlayfs"',
        '  default_runtime_name = "runc"',
    ]
    for h in handlers:
        lines += [
            f"{cri[:-1]}.containerd.runtimes.{_toml_str(h.name)}]",
            f"  runtime_type = {_toml_str(h.runtime_type)}",
        ]
        if h.runtime_type == "io.containerd.runc.v2":
            lines += [
                f"{cri[:-1]}.containerd.runtimes.{_toml_str(h.name)}.options]",
                f"  BinaryName = {_toml_str(h.binary or 'runc')}",
                f"  Root = {_toml_str(str(lay.state / 'runtimes' / h.name))}",
                "  SystemdCgroup = false",
            ]
    return "\n".join(lines) + "\n"


def cni_conflist(network: str, subnet: str) -> dict:
    """The pod network: a veth pair per pod (ptp), addresses from a private /24,
    no masquerading (no iptables rules; pods reach the host, not beyond)."""
    return {
        "cniVersion": "0.4.0",
        "name": network,
        "plugins": [
            {
                "type": "ptp",
                "ipMasq": False,
                "ipam": {
                    "type": "host-local",
                    "subnet": subnet,
                    "routes": [{"dst": "0.0.0.0/0"}],
                },
            }
        ],
    }


def free_subnet(taken: list[str], candidates: tuple[str, ...] = SUBNETS) -> str | None:
    """Pure: the first /24 of `candidates` that overlaps none of `taken` (networks)."""
    nets = []
    for t in taken:
        with contextlib.suppress(ValueError):
            nets.append(ipaddress.ip_network(t, strict=False))
    nets = [n for n in nets if n.prefixlen > 0]  # a default route overlaps everything
    for block in candidates:
        for sub in ipaddress.ip_network(block).subnets(new_prefix=24):
            if not any(sub.overlaps(n) for n in nets if n.version == 4):
                return str(sub)
    return None


def _taken_networks() -> list[str]:
    """The host's IPv4 routes and addresses, and the subnets of other private daemons."""
    taken = []
    for argv in (["ip", "-4", "-o", "addr", "show"], ["ip", "-4", "route", "show", "table", "all"]):
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            out = subprocess.run(argv, capture_output=True, text=True, timeout=10).stdout
            for line in out.splitlines():
                words = line.split()
                if "inet" in words:
                    taken.append(words[words.index("inet") + 1])
                elif words and words[0] not in ("default", "broadcast", "local", "unreachable"):
                    taken.append(words[0])
    for conf in RUN_BASE.glob("*/cni/*.conflist"):
        with contextlib.suppress(OSError, ValueError, KeyError, IndexError):
            taken.append(json.loads(conf.read_text())["plugins"][0]["ipam"]["subnet"])
    return taken


# ---------------------------------------------------------------- the daemon


class DaemonError(RuntimeError):
    """The private containerd could not be started (the reason is its own log line)."""


class PrivateContainerd:
    """One containerd with the CRI plugin, all of it under `DaemonPaths`' directories."""

    def __init__(self, lay: DaemonPaths, sandbox_image: str, handlers: list[Handler]):
        self.lay = lay
        self.sandbox_image = sandbox_image
        self.handlers = handlers
        self.proc: subprocess.Popen | None = None
        self.subnet: str | None = None

    @property
    def endpoint(self) -> str:
        return self.lay.endpoint

    def start(self, ready_check, timeout: float = START_TIMEOUT_S) -> None:
        """Write the config, start the daemon, return once `ready_check()` is true (the
        CRI answers); DaemonError with the daemon's own words otherwise. Whatever was
        made is removed when it fails."""
        lay = self.lay
        if len(str(lay.socket)) + len(".ttrpc") > SOCKET_MAX:
            raise DaemonError(f"socket path too long for a unix socket: {lay.socket}")
        if lay.state.exists():
            raise DaemonError(f"{lay.state} exists (left over from a crash? run `isobench clean`)")
        try:
            lay.state.mkdir(parents=True)
            lay.root.mkdir(parents=True, exist_ok=True)
            lay.cni_conf.mkdir()
            self.subnet = free_subnet(_taken_networks())
            if self.subnet is None:
                raise DaemonError(f"no free /24 for the pod network in {', '.join(SUBNETS)}")
            conf = cni_conflist(lay.network, self.subnet)
            (lay.cni_conf / "10-isobench.conflist").write_text(json.dumps(conf, indent=1))
            lay.config.write_text(config_toml(lay, self.sandbox_image, self.handlers))
            with open(lay.log, "ab") as log:
                self.proc = subprocess.Popen(
                    [binary("containerd") or "containerd", "--config", str(lay.config)],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # a Ctrl-C to the harness is its to handle
                )
            deadline = time.monotonic() + timeout
            while not (lay.socket.exists() and ready_check()):
                if self.proc.poll() is not None:
                    raise DaemonError(
                        f"containerd exited with {self.proc.returncode}: {self.log_tail()}"
                    )
                if time.monotonic() > deadline:
                    raise DaemonError(
                        f"containerd did not answer within {timeout:g} s: {self.log_tail()}"
                    )
                time.sleep(0.05)
        except BaseException:
            self.stop()
            raise

    def log_tail(self) -> str:
        """The daemon's last error line (its log is logrus text)."""
        try:
            lines = self.lay.log.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        errors = [ln for ln in lines if "level=error" in ln or "level=fatal" in ln]
        line = (errors or lines or ["(empty log)"])[-1]
        if 'msg="' in line:
            line = line.split('msg="', 1)[1].rsplit('"', 1)[0]
        return line[:300]

    def pid(self) -> int | None:
        return self.proc.pid if self.proc and self.proc.poll() is None else None

    def stop(self) -> None:
        """Stop the daemon and remove everything it made (see `remove_state`)."""
        proc, self.proc = self.proc, None
        if proc is not None:
            _terminate(proc.pid, lambda: proc.poll() is not None)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)
        remove_state(self.lay)


def _terminate(pid: int, gone, grace: float = STOP_GRACE_S) -> None:
    """SIGTERM, then SIGKILL after `grace` s."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while not gone() and time.monotonic() < deadline:
        time.sleep(0.02)
    if not gone():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.Error:
        return True


def shims_of(socket: Path) -> list[psutil.Process]:
    """The shims serving the daemon at `socket` (their `-address` is it)."""
    out = []
    for proc in psutil.process_iter():
        argv = ct.cmdline(proc)
        if argv and "containerd-shim" in os.path.basename(argv[0]):
            with contextlib.suppress(ValueError, IndexError):
                if argv[argv.index("-address") + 1] == str(socket):
                    out.append(proc)
    return out


def kill_tree(proc: psutil.Process) -> None:
    """SIGKILL a process and everything below it (a shim, its runtime, its children)."""
    with contextlib.suppress(psutil.Error):
        procs = [*proc.children(recursive=True), proc]
        for p in procs:
            with contextlib.suppress(psutil.Error):
                p.kill()
        psutil.wait_procs(procs, timeout=2)


def mounts_under(path: Path, mountinfo: str | None = None) -> list[str]:
    """Mount points at or below `path`, deepest first (from /proc/self/mountinfo)."""
    if mountinfo is None:
        try:
            mountinfo = Path("/proc/self/mountinfo").read_text()
        except OSError:
            return []
    base = str(path).rstrip("/")
    found = []
    for line in mountinfo.splitlines():
        fields = line.split()
        if len(fields) < 5:
            continue
        point = fields[4].encode().decode("unicode_escape")  # \040 -> space
        if point == base or point.startswith(base + "/"):
            found.append(point)
    return sorted(set(found), key=len, reverse=True)


_libc = None


def unmount_under(path: Path) -> None:
    """Detach every mount at or below `path` (netns files, container rootfs, shm)."""
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    for point in mounts_under(path):
        _libc.umount2(point.encode(), 2)  # MNT_DETACH


def cni_interfaces(network: str, state: Path = CNI_STATE) -> dict[str, Path]:
    """Host-side interfaces CNI made for `network` (from its result cache) -> file."""
    out = {}
    for result in sorted((state / "results").glob(f"{network}-*")):
        with contextlib.suppress(OSError, ValueError, TypeError, KeyError):
            data = json.loads(result.read_text())
            for iface in (data.get("result") or {}).get("interfaces") or []:
                if iface.get("name") and not iface.get("sandbox"):
                    out[iface["name"]] = result
    return out


def remove_cni_state(network: str, state: Path = CNI_STATE) -> None:
    """Delete the host interfaces, IPAM allocations and cached results of `network`."""
    for name in cni_interfaces(network, state):
        if Path("/sys/class/net", name).exists():
            subprocess.run(["ip", "link", "del", name], capture_output=True, timeout=10)
    for result in (state / "results").glob(f"{network}-*"):
        with contextlib.suppress(OSError):
            result.unlink()
    shutil.rmtree(state / "networks" / network, ignore_errors=True)


def remove_state(lay: DaemonPaths) -> None:
    """After the daemon is gone: kill its shims (and whatever runs under them), detach
    every mount under its directories, remove its CNI state and its directories."""
    for shim in shims_of(lay.socket):
        kill_tree(shim)
    for where in (lay.state, lay.root):
        unmount_under(where)
    remove_cni_state(lay.network)
    for where in (lay.state, lay.root):
        if not mounts_under(where):  # never delete through a mount that would not go
            shutil.rmtree(where, ignore_errors=True)


# ---------------------------------------------------------------- leftovers


@dataclass(frozen=True)
class Found:
    """A private daemon's directories (and its process, when it still runs)."""

    lay: DaemonPaths
    pid: int | None


def config_prefix(text: str) -> str | None:
    """Pure: the prefix named in a config isobench wrote (None: not isobench's)."""
    first = (text.splitlines() or [""])[0]
    if first.startswith(MARKER + " prefix="):
        return first.removeprefix(MARKER + " prefix=").strip() or None
    return None


def config_root(text: str) -> Path | None:
    for line in text.splitlines():
        if line.startswith("root = "):
            with contextlib.suppress(ValueError):
                return Path(json.loads(line.removeprefix("root = ")))
    return None


def find_private() -> list[Found]:
    """Every private daemon isobench started: a state directory under RUN_BASE whose
    config carries the marker, with the pid of the containerd running on that config."""
    running: dict[str, int] = {}
    for proc in psutil.process_iter():
        argv = ct.cmdline(proc)
        if argv and os.path.basename(argv[0]) == "containerd" and "--config" in argv:
            with contextlib.suppress(IndexError):
                running[argv[argv.index("--config") + 1]] = proc.pid
    out = []
    for config in sorted(RUN_BASE.glob("*/config.toml")):
        try:
            text = config.read_text()
        except OSError:
            continue
        prefix = config_prefix(text)
        root = config_root(text)
        if prefix is None or root is None or config.parent.name != prefix:
            continue
        out.append(Found(DaemonPaths(prefix, root), running.get(str(config))))
    return out


def stop_found(found: Found) -> None:
    """Stop a daemon a crashed run left (its pods first, when it still answers: the
    caller's job) and remove its state."""
    if found.pid is not None:
        _terminate(found.pid, lambda: _gone(found.pid))
    remove_state(found.lay)
