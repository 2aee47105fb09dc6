"""A guest's NIC for the net workload: a tap that isobench makes on the host before the
guest boots (persistent, so QEMU or libvirt only attach to it), its host end on a free
/30 of the namespaces kind's block, the guest's virtio-net on the other end, configured
by the guest's init from the kernel command line (`isobench.net=ADDR/30`).

The tap is named ibt<8 hex> after the instance and carries the alias "isobench
<instance>" (as the veths do), so `clean` proves it is isobench's and knows whose it is;
it is deleted with the instance (`remove`), and nothing else about the host changes: no
bridge, no route beyond the /30's own, no iptables rule."""

from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass

from bench import interrupt
from bench.envs.namespaces import free_slash30, link_alias, remove_link, run_ip, taken_networks

TAP_PREFIX = "ibt"
GUEST_IFACE = "eth0"  # the guest's only NIC


def tap_name(instance: str) -> str:
    """Pure: the tap's name, 11 characters (the kernel's limit is 15), from the instance."""
    return f"{TAP_PREFIX}{hashlib.sha256(instance.encode()).hexdigest()[:8]}"


def guest_mac(instance: str) -> str:
    """Pure: a locally administered unicast MAC for the guest's NIC (QEMU's 52:54:00 OUI)."""
    tag = hashlib.sha256(f"mac {instance}".encode()).hexdigest()[:6]
    return "52:54:00:" + ":".join(tag[i : i + 2] for i in range(0, 6, 2))


@dataclass
class Tap:
    """A made tap: its name, the host's and the guest's addresses (/30), the guest's MAC."""

    name: str
    host: ipaddress.IPv4Interface
    guest: ipaddress.IPv4Interface
    mac: str
    removed: bool = False

    def path(self, emulated: bool) -> str:
        """The path's label, as the report shows it."""
        how = " (emulated: TCG)" if emulated else ""
        return (
            f"virtio-net on tap {self.name} {self.host} <-> guest {GUEST_IFACE} {self.guest}{how}"
        )

    def remove(self) -> None:
        """Delete the tap (idempotent, never raises)."""
        if not self.removed:
            remove_link(self.name)
            self.removed = True


def make_tap(instance: str) -> Tap:
    """Make the instance's tap, up, with the host's address; StartError when `ip` refuses
    (nothing is left then, also when interrupted)."""
    name = tap_name(instance)
    net = free_slash30(taken_networks(), instance)
    near, far = (ipaddress.IPv4Interface(f"{a}/30") for a in list(net.hosts())[:2])
    tap = Tap(name, near, far, guest_mac(instance), removed=True)
    try:
        run_ip("tuntap", "add", "dev", name, "mode", "tap")  # a name taken: refused (EBUSY)
        tap.removed = False  # ours from here on
        run_ip("link", "set", "dev", name, "alias", link_alias(instance))
        run_ip("addr", "add", str(near), "dev", name)
        run_ip("link", "set", "dev", name, "up")
    except BaseException:
        with interrupt.shielded():
            tap.remove()
        raise
    return tap
