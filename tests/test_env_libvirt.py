"""Real transient libvirt domains under TCG (small sizes): a round in one domain, the
timeout path, Ctrl-C."""

from __future__ import annotations

import signal
import subprocess

import pytest

from bench.envs.base import Context, Invocation
from bench.envs.guest import channel, initramfs, kernel, kvm, qemu_cmd
from bench.envs.guest.kvm import kvm_verdict
from bench.envs.libvirt import URI, LibvirtEnv, domain_xml
from bench.runner import Interrupted

pytestmark = pytest.mark.requires("libvirt")


@pytest.fixture
def ctx(tmp_path, bundle):
    return Context("t-libvirt", tmp_path / "scratch", bundle.root.parent.parent)


def _isobench_domains() -> list[str]:
    out = subprocess.run(
        ["virsh", "-c", URI, "list", "--all", "--name"], capture_output=True, text=True, check=True
    ).stdout
    return [n for n in out.split() if n.startswith("isobench-")]


@pytest.fixture
def env(ctx, bundle):
    made = []

    def make(**config):
        e = LibvirtEnv(config, ctx)
        e.prepare(bundle)
        made.append(e)
        return e

    yield make
    for e in made:
        e.cleanup()
    assert _isobench_domains() == []
    assert not list(ctx.scratch.glob("isobench-*"))


def test_one_domain_runs_a_round_of_four_workloads(env):
    e = env(accel="tcg")
    d = e.describe()
    assert d["emulated"] is True and "<name>" in d["domain_xml_template"]
    cpu, startup, io, syscall = e.launch_round(
        [
            Invocation("cpu", "cpu", ("--op", "compute", "--reps", "1")),
            Invocation("startup", "startup"),
            Invocation("io", "io", ("--dir", "{workdir}", "--file-mib", "4", "--op", "seq_read")),
            Invocation("syscall", "syscall", ("--reps", "1", "--op", "null")),
        ],
        120,
    )
    for launch in (cpu, startup, io, syscall):
        assert launch.status == "ok", launch.reason
        assert launch.extra == {**launch.extra, "accel": "tcg", "emulated": True}
    assert len({x.extra["domain"] for x in (cpu, startup, io, syscall)}) == 1  # one boot
    for phase in ("defined", "started", "boot", "ready", "round_exit", "round_cleaned"):
        assert phase in startup.phases
    assert startup.host_side["cpu_ms"] > 0
    assert [r["op"] for r in io.records] == ["seq_read"]
    assert [r["op"] for r in cpu.records] == ["compute"]
    null = [r for r in syscall.records if r["op"] == "null"]
    assert null and null[0]["metrics"]["ns_per_op"] > 0
    for launch in (cpu, io, syscall):
        assert not launch.phases and not launch.cgroup and not launch.host_side


def test_hanging_guest_is_destroyed_at_the_timeout(env, ctx):
    e = env(accel="tcg")
    hangs = kvm.kvm_device_problem() is None and not kvm_verdict(e.image, e.binary, ctx.cache)[0]
    if hangs:
        e = env(accel="kvm", cpu="default")  # -cpu host: QEMU aborts on PVM
    round_ = [Invocation("syscall", "syscall"), Invocation("startup", "startup")]
    launches = e.launch_round(round_, 5.0 if hangs else 0.25)
    assert [x.status for x in launches] == ["timeout", "timeout"]
    assert all("domain destroyed" in x.reason for x in launches)
    assert _isobench_domains() == []


def test_an_interrupted_round_removes_its_domain(env, ctx):
    """Ctrl-C in a run: the runner's handler raises Interrupted wherever the launch is."""
    e = env(accel="tcg")
    old = signal.signal(signal.SIGALRM, _interrupt)
    signal.setitimer(signal.ITIMER_REAL, 3.0)
    try:
        with pytest.raises(Interrupted):
            e.launch_round([Invocation("startup", "startup")], 120)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    assert _isobench_domains() == []
    assert not list(ctx.scratch.glob("isobench-*"))


def _interrupt(signum, frame):
    raise Interrupted(signum)


def test_domain_xml_escapes_paths(tmp_path):
    k = kernel.GuestKernel(tmp_path / "k'&", "6.1", "0" * 64, None, "option")
    img = initramfs.GuestImage(k, tmp_path / "i.gz", "0" * 64, {})
    spec = qemu_cmd.QemuSpec(
        "/usr/bin/qemu-system-x86_64",
        img,
        "console=ttyS0 a<b",
        "tcg",
        "q35",
        cpu="host-passthrough",
    )
    xml = domain_xml("isobench-x-1", spec, tmp_path / "c.log")
    assert "k'&amp;" in xml and "a&lt;b" in xml and "<cpu mode='maximum'/>" in xml


def test_domain_xml_attaches_a_nic_to_the_made_tap_and_changes_nothing(tmp_path):
    import xml.etree.ElementTree as ET

    k = kernel.GuestKernel(tmp_path / "vmlinuz", "6.1", "0" * 64, None, "option")
    img = initramfs.GuestImage(k, tmp_path / "i.gz", "0" * 64, {})
    nic = ("ibt0123abcd", "52:54:00:aa:bb:cc")
    spec = qemu_cmd.QemuSpec("/usr/bin/qemu-system-x86_64", img, "x", "tcg", "q35", nic=nic)
    iface = ET.fromstring(domain_xml("isobench-x-1", spec, tmp_path / "c.log")).find(
        "devices/interface"
    )
    assert iface.get("type") == "ethernet"  # no bridge, no network of libvirt's
    target = iface.find("target")
    assert (target.get("dev"), target.get("managed")) == ("ibt0123abcd", "no")
    assert iface.find("mac").get("address") == "52:54:00:aa:bb:cc"
    assert iface.find("model").get("type") == "virtio"
    assert iface.find("rom").get("enabled") == "no"
    plain = qemu_cmd.QemuSpec("/usr/bin/qemu-system-x86_64", img, "x", "tcg", "q35")
    assert (
        ET.fromstring(domain_xml("isobench-x-1", plain, tmp_path / "c.log")).find(
            "devices/interface"
        )
        is None
    )


def test_domain_xml_gives_a_serving_guest_a_channel_that_connects_to_the_hosts_socket(tmp_path):
    import xml.etree.ElementTree as ET

    k = kernel.GuestKernel(tmp_path / "vmlinuz", "6.1", "0" * 64, None, "option")
    img = initramfs.GuestImage(k, tmp_path / "i.gz", "0" * 64, {})
    sock = tmp_path / "e1" / "ctl.sock"
    spec = qemu_cmd.QemuSpec("/usr/bin/qemu-system-x86_64", img, "x", "tcg", "q35", ctl=sock)
    chan = ET.fromstring(domain_xml("isobench-x-1", spec, tmp_path / "c.log")).find(
        "devices/channel"
    )
    assert chan.get("type") == "unix"
    assert (chan.find("source").get("mode"), chan.find("source").get("path")) == (
        "connect",
        str(sock),
    )
    assert chan.find("target").attrib == {"type": "virtio", "name": channel.PORT_NAME}
    plain = qemu_cmd.QemuSpec("/usr/bin/qemu-system-x86_64", img, "x", "tcg", "q35")
    assert (
        ET.fromstring(domain_xml("isobench-x-1", plain, tmp_path / "c.log")).find("devices/channel")
        is None
    )
