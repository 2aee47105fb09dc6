"""Fleet test hosts: network namespaces on a private /24 (10.213.47.0/24, a bridge in
the root namespace at .1), each with its own sshd (Debian's openssh-server) in a mount
namespace of its own, where /tmp, /var/tmp and root's isobench cache are private tmpfs,
so the hosts' isobench runs do not meet (their run lock goes to the private /tmp through
the inventory's isobench_environment).

Keys are made for the test: a host key per host, one client key, and the test's own
known_hosts (host key checking stays on). `Hosts.close()` stops every process in the
namespaces, removes them, the veths and the bridge; it is idempotent, and the fixture
calls it also when the test fails."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

NET = "10.213.47"
BRIDGE = "isbft-br0"
PREFIX = "isbft-"  # every namespace and link the test makes
SSHD = "/usr/sbin/sshd"
PRIVSEP = "/run/sshd"
# in the host's own mount namespace: private tmpfs over these, then sshd ("$@")
MOUNTS = ("/tmp", "/var/tmp", "/root/.cache/isobench")
HOST_SHELL = (
    'for d in /tmp /var/tmp /root/.cache/isobench; do mkdir -p "$d" && '
    'mount -t tmpfs -o mode=1777 isbft "$d" || exit 1; done; exec "$@"'
)


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


def missing() -> str | None:
    """Why these hosts cannot be made here, or None."""
    if os.geteuid() != 0:
        return "needs root"
    for tool in ("ip", "unshare", "ssh", "ssh-keygen", SSHD):
        if not shutil.which(tool):
            return f"needs {tool} (apt-get install iproute2 util-linux openssh-server)"
    return None


@dataclass
class Host:
    name: str
    address: str
    netns: str
    proc: subprocess.Popen | None = None

    def pids(self) -> list[int]:
        res = _ip("netns", "pids", self.netns, check=False)
        return [int(p) for p in res.stdout.split()]

    def run(self, *argv: str, **kw) -> subprocess.CompletedProcess:
        """A command in this host's network and mount namespaces (its sshd's)."""
        assert self.proc is not None
        ns = ["nsenter", "-t", str(self.proc.pid), "-m", "-n", "--"]
        return subprocess.run([*ns, *argv], capture_output=True, text=True, **kw)


@dataclass
class Hosts:
    dir: Path
    hosts: list[Host] = field(default_factory=list)
    bridge: bool = False  # made by this Hosts (close removes only what it made)
    privsep: bool = False  # /run/sshd made by this Hosts

    def inventory(
        self, path: Path | None = None, group: str = "fleet", host_vars: dict | None = None
    ) -> Path:
        """A YAML inventory of the hosts (their addresses, the test's key and
        known_hosts, the private run lock; `host_vars` {name: {var: value}} added),
        written to `path`."""
        host_vars = host_vars or {}
        path = path or self.dir / "hosts.yml"
        common = (
            f"-o UserKnownHostsFile={self.dir / 'known_hosts'} "
            "-o GlobalKnownHostsFile=/dev/null -o StrictHostKeyChecking=yes"
        )
        inv = {
            group: {
                "hosts": {
                    h.name: {"ansible_host": h.address, **host_vars.get(h.name, {})}
                    for h in self.hosts
                },
                "vars": {
                    "ansible_user": "root",
                    "ansible_python_interpreter": "/usr/bin/python3",
                    "ansible_ssh_private_key_file": str(self.dir / "client_key"),
                    "ansible_ssh_common_args": common,
                    "isobench_environment": {"ISOBENCH_LOCK": "/tmp/isobench.lock"},
                },
            }
        }
        path.write_text(json.dumps({"all": {"children": inv}}, indent=2))
        return path

    def stop_sshd(self, host: Host) -> None:
        if host.proc and host.proc.poll() is None:
            host.proc.terminate()
            host.proc.wait(10)

    def close(self) -> None:
        for h in self.hosts:
            self.stop_sshd(h)
            for pid in h.pids():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, 9)
            _ip("netns", "del", h.netns, check=False)
            _ip("link", "del", f"{PREFIX}v{h.name}", check=False)
        if self.bridge:
            _ip("link", "del", BRIDGE, check=False)
        if self.privsep:
            with contextlib.suppress(OSError):
                os.rmdir(PRIVSEP)
        shutil.rmtree(self.dir, ignore_errors=True)


def _keygen(path: Path) -> str:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "isbft", "-f", str(path)],
        check=True,
        capture_output=True,
    )
    return Path(f"{path}.pub").read_text().strip()


def _sshd_config(d: Path, h: Host) -> Path:
    cfg = d / f"sshd_{h.name}.conf"
    cfg.write_text(
        "\n".join(
            [
                f"ListenAddress {h.address}",
                f"HostKey {d / f'hostkey_{h.name}'}",
                f"PidFile {d / f'sshd_{h.name}.pid'}",
                f"AuthorizedKeysFile {d / 'authorized_keys'}",
                "PermitRootLogin prohibit-password",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "UsePAM no",
                "StrictModes no",
                "Subsystem sftp /usr/lib/openssh/sftp-server",
                "LogLevel ERROR",
                "",
            ]
        )
    )
    return cfg


def _wait_port(address: str, timeout: float = 10) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            socket.create_connection((address, 22), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"sshd at {address} did not answer in {timeout} s")


def make(names=("h1", "h2", "h3")) -> Hosts:
    """Three hosts up and answering ssh. On any failure what was made is removed."""
    # under /run: the hosts' private tmpfs hide /tmp and /var/tmp, and sshd reads its
    # keys again on every connection
    hosts = Hosts(Path(tempfile.mkdtemp(prefix="isbft-", dir="/run")))
    try:
        if not os.path.isdir(PRIVSEP):  # sshd's privilege separation directory
            os.makedirs(PRIVSEP)
            hosts.privsep = True
        _build(hosts, names)
    except BaseException:
        hosts.close()
        raise
    return hosts


def _build(hosts: Hosts, names) -> None:
    d = hosts.dir
    client = _keygen(d / "client_key")
    (d / "authorized_keys").write_text(client + "\n")
    _ip("link", "add", BRIDGE, "type", "bridge")
    hosts.bridge = True
    _ip("addr", "add", f"{NET}.1/24", "dev", BRIDGE)
    _ip("link", "set", BRIDGE, "up")
    known = []
    for i, name in enumerate(names, start=1):
        h = Host(name, f"{NET}.{10 + i}", f"{PREFIX}{name}")
        _ip("netns", "add", h.netns)
        hosts.hosts.append(h)
        outside, inside = f"{PREFIX}v{name}", f"{PREFIX}p{name}"
        _ip("link", "add", outside, "type", "veth", "peer", "name", inside)
        _ip("link", "set", outside, "master", BRIDGE, "up")
        _ip("link", "set", inside, "netns", h.netns)
        ns = ("netns", "exec", h.netns, "ip")
        _ip(*ns, "link", "set", inside, "name", "eth0")
        _ip(*ns, "addr", "add", f"{h.address}/24", "dev", "eth0")
        _ip(*ns, "link", "set", "eth0", "up")
        _ip(*ns, "link", "set", "lo", "up")
        pub = _keygen(d / f"hostkey_{name}")
        known.append(f"{h.address} {' '.join(pub.split()[:2])}")
        cfg = _sshd_config(d, h)
        h.proc = subprocess.Popen(
            # not `ip netns exec`: it mounts a sysfs of its own, without the cgroup mounts
            [
                "unshare",
                "--mount",
                "--propagation",
                "private",
                "nsenter",
                f"--net=/run/netns/{h.netns}",
                "--",
                "sh",
                "-c",
                HOST_SHELL,
                "sh",
                SSHD,
                "-D",
                "-e",
                "-f",
                str(cfg),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=open(d / f"sshd_{name}.log", "ab"),  # noqa: SIM115 - closed with the process
        )
    (d / "known_hosts").write_text("\n".join(known) + "\n")
    for h in hosts.hosts:
        _wait_port(h.address)
