"""Real boots of the direct QEMU kind under TCG (small sizes), and the timeout path."""

from __future__ import annotations

import pytest

from bench import guest
from bench.envs.base import Context, Invocation
from bench.envs.qemu import QemuEnv, kvm_verdict

pytestmark = pytest.mark.requires("libvirt")  # same stack: QEMU + guest kernel


@pytest.fixture
def ctx(tmp_path, bundle):
    cache = bundle.root.parent.parent  # the normal cache the bundle lives in
    return Context("t-qemu", tmp_path / "scratch", cache)


def _env(ctx, bundle, **config):
    env = QemuEnv(config, ctx)
    env.prepare(bundle)
    return env


def test_startup_and_io_boot_under_tcg(ctx, bundle):
    env = _env(ctx, bundle, accel="tcg")
    try:
        assert env.emulated and env.describe()["accel"] == "tcg"
        start = env.launch(Invocation("startup", "startup"), 120)
        assert start.status == "ok", start.reason
        assert start.extra["emulated"] is True
        assert start.phases["boot"] > 0 and start.phases["ready"] <= start.phases["exit"]
        assert start.phases["exit"] <= start.phases["cleaned"]
        io = env.launch(
            Invocation(
                "io",
                "io",
                ("--dir", "{workdir}", "--file-mib", "4", "--reps", "1", "--fsync-n", "10"),
            ),
            180,
        )
        assert io.status == "ok", io.reason
        assert any(r["op"] == "seq_write" for r in io.records)
    finally:
        env.cleanup()
    assert not list((ctx.scratch).glob("isobench-*"))


def test_guest_that_never_gets_ready_is_killed_at_the_timeout(ctx, bundle):
    env = _env(ctx, bundle, accel="tcg")
    kvm_hangs = (
        not kvm_verdict(env.image, env.binary, ctx.cache)[0] and guest.kvm_device_problem() is None
    )
    if kvm_hangs:  # this host: /dev/kvm opens but guests hang under it
        env = _env(ctx, bundle, accel="kvm", cpu="default")  # -cpu host aborts on PVM
        timeout = 10.0
    else:  # anywhere else: no TCG guest reaches `ready` in half a second
        timeout = 0.5
    launch = env.launch(Invocation("startup", "startup"), timeout)
    env.cleanup()
    assert launch.status == "timeout"
    assert "printed no `ready`" in launch.reason and "QEMU killed" in launch.reason
    assert not list((ctx.scratch).glob("isobench-*"))
