"""Real boots of the direct QEMU kind under TCG (small sizes), a held guest, the timeout
path and the KVM trial."""

from __future__ import annotations

import json
import time

import psutil
import pytest

from bench.envs.base import HOLD, ChannelError, Context, Invocation, served
from bench.envs.guest import initramfs, kernel, kvm, qemu_cmd
from bench.envs.guest.kvm import kvm_availability, kvm_verdict
from bench.envs.qemu import QemuEnv

pytestmark = pytest.mark.requires("libvirt")  # same stack: QEMU + guest kernel

ROUND = [  # a round in the runner's shuffled order; small sizes for TCG
    Invocation("syscall", "syscall", ("--op", "null", "--op", "fork", "--reps", "1")),
    Invocation("io", "io", ("--dir", "{workdir}", "--file-mib", "4", "--op", "seq_write")),
    Invocation("startup", "startup"),
    Invocation("cpu", "cpu", ("--op", "compute", "--reps", "1")),
]


@pytest.fixture
def ctx(tmp_path, bundle):
    cache = bundle.root.parent.parent  # the normal cache the bundle lives in
    return Context("t-qemu", tmp_path / "scratch", cache)


def _env(ctx, bundle, **config):
    env = QemuEnv(config, ctx)
    env.prepare(bundle)
    return env


def _ops(launch) -> set[str]:
    return {r["op"] for r in launch.records}


def test_one_boot_runs_a_round_of_four_workloads(ctx, bundle):
    env = _env(ctx, bundle, accel="tcg")
    try:
        assert env.emulated and env.one_instance_per_round
        syscall, io, startup, cpu = env.launch_round(ROUND, 120)
    finally:
        env.cleanup()
    for launch in (syscall, io, startup, cpu):
        assert launch.status == "ok", launch.reason
        assert launch.extra["emulated"] is True
    assert len({x.extra["domain"] for x in (syscall, io, startup, cpu)}) == 1  # one boot
    assert _ops(syscall) == {"null", "fork"} and _ops(io) == {"seq_write"}
    assert _ops(cpu) == {"compute"} and not startup.records
    # the boot ran the round's other workloads after startup: its end is the round's
    assert "exit" not in startup.phases and "cleaned" not in startup.phases
    assert startup.phases["boot"] > 0 and startup.phases["ready"] <= startup.phases["round_exit"]
    assert startup.phases["round_exit"] <= startup.phases["round_cleaned"]
    assert startup.host_side["cpu_ms"] > 0 and startup.host_side["rss_peak_mib"] > 0
    for launch in (syscall, io, cpu):
        assert not launch.phases and not launch.cgroup and not launch.host_side
    assert not list(ctx.scratch.glob("isobench-*"))


def test_a_failing_or_overlong_probe_fails_only_its_own_launch(ctx, bundle):
    env = _env(ctx, bundle, accel="tcg")
    round_ = [
        Invocation("syscall", "syscall", ("--no-such-option",)),
        Invocation("cpu", "cpu", ("--op", "compute", "--reps", "1000")),  # minutes
        Invocation("startup", "startup"),
        Invocation("syscall", "syscall", ("--op", "null", "--reps", "1")),
    ]
    try:
        bad, long, startup, good = env.launch_round(round_, 15)
    finally:
        env.cleanup()
    assert bad.status == "failed" and bad.exit_code == 2
    assert bad.reason == "probe exited with status 2 in the guest"
    assert "no-such-option" in bad.stderr_tail
    assert long.status == "timeout"
    assert long.reason == "probe did not finish within 15 s in the guest: killed"
    assert long.records  # what it measured before the limit is kept
    assert startup.status == "ok" and startup.phases["round_exit"] > 15e9
    assert good.status == "ok" and _ops(good) == {"null"}
    assert not list(ctx.scratch.glob("isobench-*"))


def _kvm_hangs(env, ctx) -> bool:
    """This host: /dev/kvm opens but guests hang under it."""
    return kvm.kvm_device_problem() is None and not kvm_verdict(env.image, env.binary, ctx.cache)[0]


def test_guest_that_never_gets_ready_is_killed_at_the_timeout(ctx, bundle):
    env = _env(ctx, bundle, accel="tcg")
    if _kvm_hangs(env, ctx):
        env = _env(ctx, bundle, accel="kvm", cpu="default")  # -cpu host aborts on PVM
        timeout = 10.0
    else:  # anywhere else: no TCG guest reaches `ready` in half a second
        timeout = 0.5
    launch = env.launch(Invocation("startup", "startup"), timeout)
    env.cleanup()
    assert launch.status == "timeout"
    assert "printed no `ready`" in launch.reason and "QEMU killed" in launch.reason
    assert not list(ctx.scratch.glob("isobench-*"))


def test_kvm_trial_is_recorded_and_leaves_nothing(tmp_path, monkeypatch):
    """The trial boots a probe-less guest under KVM once per (guest kernel, QEMU, host
    kernel); a hanging trial is killed and reaped; the next answer is the record."""
    if kvm.kvm_device_problem():
        pytest.skip(f"no KVM trial here: {kvm.kvm_device_problem()}")
    k = kernel.find_kernel()
    monkeypatch.setenv("ISOBENCH_CACHE", str(tmp_path))
    monkeypatch.setenv(kernel.KERNEL_ENV, str(k.path))
    assert "not yet checked" in kvm_availability().reason
    image = initramfs.trial_initramfs(k, tmp_path)
    binary = qemu_cmd.qemu_binary()
    ok, reason = kvm_verdict(image, binary, tmp_path, timeout=5)
    assert psutil.Process().children(recursive=True) == []  # the trial's QEMU is gone
    t = time.monotonic()
    assert kvm_availability(trial=True) == kvm_availability()
    assert (kvm_availability().ok, kvm_availability().reason) == (ok, reason)
    assert time.monotonic() - t < 5  # recorded: no guest booted (a trial takes >= 5 s)
    path = tmp_path / "guest" / "kvm-check.json"
    data = json.loads(path.read_text())
    (key,) = data["verdicts"]
    assert key.split("|")[1] == binary
    data["verdicts"] = {key.replace(binary, "/other/qemu"): data["verdicts"][key]}
    path.write_text(json.dumps(data))
    assert "not yet checked" in kvm_availability().reason  # another QEMU: not its verdict


def test_a_held_guest_is_named_for_clean_until_it_is_stopped(ctx, bundle):
    """A held QEMU carries its instance's name (`-name`): `clean` finds it while it
    runs; stop() powers it off and removes its cgroup and files."""
    env = _env(ctx, bundle, accel="tcg")
    try:
        held = env.start(HOLD, 120)
        assert held.wait_ready()
        found = [x.what for x in QemuEnv.leftovers()]
        assert any(held.name in what for what in found), found
        launch = held.stop()
    finally:
        env.cleanup()
    assert launch.status == "ok" and launch.exit_code is None, launch.reason
    assert launch.phases["ready"] < launch.phases["stop"] <= launch.phases["exit"]
    assert launch.host_side["cpu_ms"] > 0 and launch.cgroup
    assert not [x for x in QemuEnv.leftovers() if held.name in x.what]
    assert not list(ctx.scratch.glob("isobench-*"))


def test_a_served_guest_answers_until_its_qemu_dies_then_says_so_in_one_line(ctx, bundle):
    """A held serving guest answers over its virtio-serial port (a unix socket in its
    scratch dir); once QEMU is gone an ask fails at once with one line, the stop is
    still ok, and the socket went with the scratch dir."""
    env = _env(ctx, bundle, accel="tcg")
    try:
        held = env.start(served("syscall", "syscall"), 120)
        assert held.wait_ready()
        answer = json.loads(held.ask("null ms=5", 60))
        assert answer["op"] == "null" and answer["burst"] == 1, answer
        assert answer["elapsed_ns"] == 5_000_000 and answer["metrics"]["ns_per_op"] > 0
        sock = held.port.path
        assert sock.is_socket()
        held.guest.power_off()  # QEMU killed under the instance
        t0 = time.monotonic()
        with pytest.raises(ChannelError, match="guest ended") as e:
            held.ask("null ms=5", 30)
        assert time.monotonic() - t0 < 5 and "\n" not in str(e.value)
        launch = held.stop()
    finally:
        env.cleanup()
    assert launch.status == "ok", launch.reason
    assert launch.records == [] and not sock.exists()
    assert not list(ctx.scratch.glob("isobench-*"))
