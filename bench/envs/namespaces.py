"""Linux namespaces in their rawest form: unshare(1) gives the probe new pid, mount, net,
uts, ipc and cgroup namespaces inside a fresh cgroup. No runtime, no seccomp, no image;
with rootfs=NAME, an isobench rootfs's tree as the root (bench/envs/roots.py).

Also the host links isobench makes for the net workload (this kind's veths, a guest's
tap: bench/envs/guest/tap.py): a /30 of VETH_BLOCK that overlaps nothing on the host,
and the alias "isobench <instance>" on every such link, by which `clean` proves a link
is isobench's and finds the run that made it (`link_leftovers`)."""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import json
import os
import shutil
import subprocess
from typing import Any

from bench import interrupt
from bench.envs.base import Availability, Instance, Invocation, Launch, Leftover, StartError
from bench.envs.containers import tool_version
from bench.envs.host import HostEnv
from bench.envs.process import ProcessInstance

UNSHARE = ["--pid", "--fork", "--mount-proc", "--mount", "--net", "--uts", "--ipc", "--cgroup"]
VETH_BLOCK = "10.201.0.0/16"  # where each instance's /30 is looked for
VETH_PREFIX = "ibv"  # interface names: ibv<8 hex>h (host end), ibv<8 hex>n (namespace end)
IP_TIMEOUT_S = 10
ALIAS_PREFIX = "isobench "  # a link's alias: "isobench <the instance's name>"


def veth_names(instance: str) -> tuple[str, str]:
    """Pure: the (host end, namespace end) names of an instance's veth: 12 characters,
    under the kernel's 15, derived from the instance's unique name."""
    tag = hashlib.sha256(instance.encode()).hexdigest()[:8]
    return f"{VETH_PREFIX}{tag}h", f"{VETH_PREFIX}{tag}n"


def free_slash30(taken: list[str], seed: str, block: str = VETH_BLOCK) -> ipaddress.IPv4Network:
    """Pure: a /30 of `block` that overlaps none of `taken` (networks or addresses in CIDR
    form), starting at a place derived from `seed` so concurrent instances rarely try
    the same one. ValueError when the block is full."""
    nets = [ipaddress.ip_network(t, strict=False) for t in taken]
    space = ipaddress.ip_network(block)
    count = space.num_addresses // 4
    start = int(hashlib.sha256(seed.encode()).hexdigest(), 16) % count
    for i in range(count):
        sub = ipaddress.ip_network((int(space.network_address) + 4 * ((start + i) % count), 30))
        if not any(sub.overlaps(n) for n in nets if n.version == 4):
            return sub
    raise ValueError(f"no free /30 in {block}")


def run_ip(*args: str, netns_pid: int | None = None) -> str:
    """Run `ip` (in the network namespace of `netns_pid` when given); its stdout, or
    StartError with its message."""
    argv = ["ip", *args]
    if netns_pid is not None:
        argv = ["nsenter", f"--net=/proc/{netns_pid}/ns/net", "--", *argv]
    try:
        res = subprocess.run(argv, capture_output=True, text=True, timeout=IP_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise StartError(f"{' '.join(argv)}: {e}") from None
    if res.returncode != 0:
        raise StartError(f"{' '.join(argv)}: {res.stderr.strip() or res.returncode}")
    return res.stdout


def taken_networks() -> list[str]:
    """The host's IPv4 addresses and routes (CIDR), which a veth /30 must not overlap."""
    out = []
    for addr in json.loads(run_ip("-j", "-4", "addr") or "[]"):
        out += [f"{a['local']}/{a['prefixlen']}" for a in addr.get("addr_info", [])]
    for route in json.loads(run_ip("-j", "-4", "route") or "[]"):
        if route.get("dst") not in (None, "default"):
            out.append(route["dst"] if "/" in route["dst"] else f"{route['dst']}/32")
    return out


def link_alias(instance: str) -> str:
    return f"{ALIAS_PREFIX}{instance}"


def remove_link(name: str) -> None:
    """Delete a link (a veth pair goes with either end); gone already is fine."""
    with contextlib.suppress(OSError, subprocess.TimeoutExpired):
        subprocess.run(
            ["ip", "link", "del", "dev", name],
            capture_output=True,
            timeout=IP_TIMEOUT_S,
            check=False,
        )


def owned_links(links: list[dict[str, Any]], prefixes: tuple[str, ...]) -> list[tuple[str, str]]:
    """Pure: `ip -j link` entries -> (name, instance) of the links isobench made: a name
    with one of its `prefixes` and the alias it gives ("isobench isobench-<...>"); a
    look-alike without that alias is not listed."""
    out = []
    for link in links:
        name, alias = link.get("ifname", ""), link.get("ifalias") or ""
        instance = alias.removeprefix(ALIAS_PREFIX)
        if name.startswith(prefixes) and alias.startswith(ALIAS_PREFIX + "isobench-"):
            out.append((name, instance))
    return out


def link_leftovers(prefixes: tuple[str, ...]) -> list[Leftover]:
    """Links isobench made and did not remove (a run killed with -9), for `clean`; each
    names the instance, so `clean` keeps those of a run still alive."""
    try:
        links = json.loads(run_ip("-j", "link", "show") or "[]")
    except (StartError, ValueError):
        return []
    return [
        Leftover(f"network interface {name} ({instance})", lambda n=name: remove_link(n))
        for name, instance in owned_links(links, prefixes)
    ]


class VethInstance(ProcessInstance):
    """A namespaces instance that a host-side client can reach over a veth pair, made on
    the first address() and deleted with the instance."""

    def __init__(self, base: ProcessInstance):
        super().__init__(
            base.name,
            base.child,
            base.timeout,
            what=base.what,
            collect=base._collect,
            teardown=base._teardown,
        )
        self.t_submit = base.t_submit
        self.deadline = base.deadline
        self.veth: tuple[str, str] | None = None  # host end, its address made
        self.path = ""
        self._remote: str | None = None

    def address(self, port: int) -> tuple[str, int]:
        if self._remote is None:
            self._make_veth()
        return (self._remote, port)

    def _make_veth(self) -> None:
        pid = self.child.proc.pid  # unshare: it made the namespaces, then forked the probe
        if self.child.proc.poll() is not None:
            raise StartError(f"{self.name}: the instance has ended")
        try:
            if os.stat(f"/proc/{pid}/ns/net").st_ino == os.stat("/proc/self/ns/net").st_ino:
                raise StartError(f"{self.name}: no network namespace of its own yet")
        except OSError as e:
            raise StartError(f"{self.name}: its network namespace: {e}") from None
        host_end, ns_end = veth_names(self.name)
        net = free_slash30(taken_networks(), self.name)
        near, far = (f"{a}/30" for a in list(net.hosts())[:2])
        try:
            self.veth = (host_end, ns_end)
            run_ip(
                "link", "add", host_end, "type", "veth", "peer", "name", ns_end, "netns", str(pid)
            )
            run_ip("link", "set", "dev", host_end, "alias", link_alias(self.name))
            run_ip("addr", "add", near, "dev", host_end)
            run_ip("link", "set", "dev", host_end, "up")
            run_ip("addr", "add", far, "dev", ns_end, netns_pid=pid)
            run_ip("link", "set", "dev", ns_end, "up", netns_pid=pid)
            run_ip("link", "set", "dev", "lo", "up", netns_pid=pid)
        except BaseException:
            with interrupt.shielded():
                self._remove_veth()
            raise
        self._remote = far.split("/")[0]
        self.path = f"veth {host_end} {near} <-> {ns_end} {far} (in the instance's netns)"

    def _remove_veth(self) -> None:
        """Delete the pair (gone already when the namespace ended first)."""
        if self.veth is None:
            return
        remove_link(self.veth[0])
        self.veth = None

    def _end(self, *, stopped: bool, timed_out: bool) -> Launch:
        try:
            launch = super()._end(stopped=stopped, timed_out=timed_out)
        finally:
            with interrupt.shielded():
                self._remove_veth()
        if self.path:
            launch.net_path = self.path
        return launch


class NamespacesEnv(HostEnv):
    kind = "namespaces"
    summary = "unshare: new pid/mount/net/uts/ipc/cgroup namespaces, no runtime, no seccomp"

    @classmethod
    def probe(cls, opts: dict[str, Any] | None = None) -> Availability:
        base = super().probe(opts)
        if not base.ok:
            return base
        path = shutil.which("unshare")
        if not path:
            return Availability(False, "unshare not found: install util-linux")
        try:
            res = subprocess.run(
                [path, *UNSHARE, "true"], capture_output=True, text=True, timeout=10
            )
        except (OSError, subprocess.TimeoutExpired) as e:
            return Availability(False, f"unshare could not run: {e}")
        if res.returncode != 0:
            why = (res.stderr.strip().splitlines() or ["no message"])[-1]
            return Availability(False, f"unshare refused new namespaces: {why}")
        return Availability(
            True, versions={**base.versions, "unshare": tool_version([path, "--version"])}
        )

    def wrap(self, argv: list[str]) -> list[str]:
        return [shutil.which("unshare") or "unshare", *UNSHARE, "--", *argv]

    def command(self, procs: list[str], argv: list[str], root: list[str]) -> list[str]:
        """`attach` joins the cgroup, unshare makes the namespaces; from a rootfs, a
        second `attach` enters the tree inside them (its mounts in the instance's own
        mount namespace, /proc the one unshare mounted for the new pid namespace)."""
        attach = str(self._bundle.probes["attach"])
        inner = [attach, *root, "--", *argv] if root else argv
        return [attach, *procs, "--", *self.wrap(inner)]

    def _start(self, inv: Invocation, timeout: float) -> Instance:
        return VethInstance(super()._start(inv, timeout))
