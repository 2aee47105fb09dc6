"""Real transient libvirt domains under TCG (small sizes), and the timeout path."""

from __future__ import annotations

import subprocess

import pytest

from bench import guest
from bench.envs.base import Context, Invocation
from bench.envs.libvirt import URI, LibvirtEnv, domain_xml
from bench.envs.qemu import kvm_verdict

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


def test_syscall_in_a_tcg_domain(env):
    e = env(accel="tcg")
    d = e.describe()
    assert d["emulated"] is True and "<name>" in d["domain_xml_template"]
    launch = e.launch(Invocation("syscall", "syscall", ("--reps", "1", "--min-ms", "10")), 180)
    assert launch.status == "ok", launch.reason
    assert launch.extra == {**launch.extra, "accel": "tcg", "emulated": True}
    for phase in ("defined", "started", "boot", "ready", "exit", "cleaned"):
        assert phase in launch.phases
    null = [r for r in launch.records if r["op"] == "null"]
    assert null and null[0]["metrics"]["ns_per_op"] > 0
    assert launch.host_side["cpu_ms"] > 0


def test_hanging_guest_is_destroyed_at_the_timeout(env, ctx):
    e = env(accel="tcg")
    hangs = guest.kvm_device_problem() is None and not kvm_verdict(e.image, e.binary, ctx.cache)[0]
    if hangs:
        e = env(accel="kvm", cpu="default")  # -cpu host: QEMU aborts on PVM
    launch = e.launch(Invocation("startup", "startup"), 10.0 if hangs else 0.5)
    assert launch.status == "timeout"
    assert "domain destroyed" in launch.reason
    assert _isobench_domains() == []


def test_domain_xml_escapes_paths(tmp_path):
    k = guest.GuestKernel(tmp_path / "k'&", "6.1", "0" * 64, None, "option")
    img = guest.GuestImage(k, tmp_path / "i.gz", "0" * 64, {})
    spec = guest.QemuSpec(
        "/usr/bin/qemu-system-x86_64",
        img,
        "console=ttyS0 a<b",
        "tcg",
        "q35",
        cpu="host-passthrough",
    )
    xml = domain_xml("isobench-x-1", spec, tmp_path / "c.log")
    assert "k'&amp;" in xml and "a&lt;b" in xml and "<cpu mode='maximum'/>" in xml
