"""podman environment: rlimit candidates (pure), the options it shares with docker, real
instances through the CLI (run to completion, held and stopped, runc and runsc)."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from bench.envs import containers as ct
from bench.envs.base import HOLD, Context, Invocation, OptionError
from bench.envs.base import served as served_inv
from bench.envs.podman import PodmanEnv, ulimit_argv, ulimit_candidates
from bench.families import density


def test_ulimit_candidates_follow_the_host():
    low = {"nofile": (1024, 20000), "nproc": (96365, 96365)}
    cands = ulimit_candidates(low)
    assert cands[0] == {"nofile": 20000, "nproc": 96365}
    assert cands[-1] == {"nofile": 1024, "nproc": 1024}
    high = {"nofile": (1 << 20, 1 << 20), "nproc": (1 << 23, 1 << 23)}
    assert ulimit_candidates(high) == [None]
    assert ulimit_argv({"nofile": 1024}) == ["--ulimit", "nofile=1024:1024"]


def test_options_validate(tmp_path):
    ctx = Context("t", tmp_path, tmp_path)
    env = PodmanEnv({"runtime": "runsc", "cpuset": "0-1", "memory": "1g"}, ctx)
    assert env.opts["cpuset"] == "0-1" and env.opts["memory"].bytes() == 2**30
    for bad in ({"runtime": "kata"}, {"cpuset": "abc"}, {"storage": "nfs"}):
        with pytest.raises(OptionError):
            PodmanEnv(bad, ctx)


def _ours(prefix: str) -> str:
    return subprocess.run(
        ["podman", "ps", "-a", "-q", "--filter", f"label={ct.ENV_LABEL}={prefix}"],
        capture_output=True,
        text=True,
    ).stdout.strip()


@pytest.fixture
def make_env(env_factory):
    yield lambda config: env_factory(PodmanEnv, config)
    for env in env_factory.cleanup():
        assert _ours(env.ctx.prefix) == ""
        assert not env.ctx.scratch.exists() or not any(env.ctx.scratch.iterdir())


@pytest.mark.requires("podman")
def test_podman_launches_startup_and_null(make_env):
    env = make_env({})
    start = env.launch(Invocation("startup", "startup"), 60)
    assert start.status == "ok", start.reason
    assert start.phases["ready"] <= start.phases["exit"] <= start.phases["cleaned"]
    assert start.host_side.get("conmon_cpu_ms", 0) > 0
    null = env.launch(Invocation("syscall", "syscall", ("--op", "null")), 60)
    assert null.status == "ok", null.reason
    assert null.records and null.records[0]["op"] == "null"
    assert "ulimits" in env.describe()
    assert PodmanEnv.probe({"runtime": "runc"}).ok


@pytest.mark.requires("podman")
@pytest.mark.parametrize("runtime", ["runc", "runsc"])
def test_held_container_stops_on_sigterm(make_env, runtime):
    """SIGTERM to `podman run` reaches the container (podman passes it on, for runsc
    too): the hold probe exits 0; then the other environment's container is untouched
    by this one's cleanup."""
    if not PodmanEnv.probe({"runtime": runtime}).ok:
        pytest.skip(f"podman:runtime={runtime} not available here")
    env, other = make_env({"runtime": runtime}), make_env({})
    held, kept = env.start(HOLD, 60), other.start(HOLD, 60)
    assert held.wait_ready() and kept.wait_ready()
    time.sleep(0.2)
    launch = held.stop()
    assert launch.status == "ok" and launch.exit_code == 0, launch
    assert 0 < launch.phases["ready"] < launch.phases["stop"] <= launch.phases["exit"]
    env.cleanup()
    assert _ours(env.ctx.prefix) == "" and _ours(other.ctx.prefix) != ""
    assert kept.stop().exit_code == 0


@pytest.mark.requires("podman")
def test_a_held_instance_names_its_carriers_and_density_counts_those_outside(make_env):
    """The attached `podman run` stays in the harness's cgroup for the container's life:
    counted. conmon sits in <parent>/conmon, inside the per-launch cgroup density reads:
    named, but left to the cgroup figure (not counted twice)."""
    env = make_env({})
    held = env.start(HOLD, 60)
    try:
        assert held.wait_ready()
        carriers = held.carriers()
        assert carriers[held.child.proc.pid] == "podman"
        assert "conmon" in carriers.values()
        reader = held.live_cgroup()
        assert reader is not None
        outside = density.outside_carriers_mib(carriers, reader)
        assert set(outside) == {"podman"} and outside["podman"] > 0
    finally:
        held.stop()
    assert held.carriers() == {}


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(x.decode().split("=", 1) for x in raw if b"=" in x)


@pytest.mark.requires("podman")
def test_a_serving_cli_relays_on_one_thread_of_go_a_holding_one_as_users_run_it(make_env):
    """GOMAXPROCS=1 for the `podman run` that carries a serving probe's channel (its idle
    Go threads took the CPU from the probe's windows: podman.SERVE_CLI_ENV), not for a
    held instance that does not serve (density's: the CLI as users run it). The probe
    answers over it as before."""
    env = make_env({})
    served, held = env.start(served_inv("syscall", "syscall"), 60), env.start(HOLD, 60)
    try:
        assert served.wait_ready() and held.wait_ready()
        assert _environ(served.child.proc.pid).get("GOMAXPROCS") == "1"
        assert _environ(held.child.proc.pid).get("GOMAXPROCS") == os.environ.get("GOMAXPROCS")
        assert '"op":"null"' in served.ask("null ms=2", 30)
    finally:
        served.stop(), held.stop()
