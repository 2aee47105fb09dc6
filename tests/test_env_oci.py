"""oci environment: runc and runsc run straight on a generated bundle; held instances
stop on SIGTERM (runsc's through `runsc kill`); each environment keeps its rootfs in its
own scratch directory, so one's cleanup never breaks another's."""

from __future__ import annotations

import contextlib
import subprocess

import pytest

from bench.envs.base import HOLD, Context, Invocation, OptionError
from bench.envs.containers import runtime_availability
from bench.envs.oci import OciEnv
from bench.families import density
from bench.metrics.cgroup import Layout

STARTUP = Invocation("startup", "startup")


def test_options_and_known_problems(tmp_path):
    ctx = Context("t", tmp_path, tmp_path)
    with pytest.raises(OptionError):
        OciEnv({"network": "bridge"}, ctx)
    with pytest.raises(OptionError):
        OciEnv({"runtime": "kata"}, ctx)
    assert not runtime_availability("no-such-runtime", Layout("v2")).ok
    if runtime_availability("crun", Layout("v2")).ok:  # installed
        refused = runtime_availability("crun", Layout("hybrid"))
        assert not refused.ok and refused.reason == Layout("hybrid").runtime_problem("crun")


@pytest.fixture
def make_env(env_factory):
    """Environments of one run: one run id, each its own scratch and name prefix."""
    yield lambda config, prepare=True: env_factory(OciEnv, config, prepare=prepare)
    made = env_factory.cleanup()
    for env in made:
        assert not any(env.ctx.scratch.iterdir())
    for env in made:
        left = subprocess.run(["pgrep", "-f", env.ctx.prefix], capture_output=True).stdout
        assert left == b""


def _runsc_ok() -> bool:
    return OciEnv.probe({"runtime": "runsc"}).ok


@pytest.mark.requires("oci", "root")
@pytest.mark.parametrize("runtime", ["runc", "runsc"])
def test_oci_launches_startup_and_null(make_env, runtime):
    if runtime == "runsc" and not _runsc_ok():
        pytest.skip("runsc not installed")
    env = make_env({"runtime": runtime})
    start = env.launch(STARTUP, 60)
    assert start.status == "ok", start.reason + start.stderr_tail
    assert start.cgroup.get("cpu_total_ms", 0) > 0
    null = env.launch(Invocation("syscall", "syscall", ("--op", "null")), 60)
    assert null.status == "ok", null.reason
    assert null.records[0]["op"] == "null"
    assert not list((env.ctx.scratch / "bundles").iterdir())


@pytest.mark.requires("oci", "root")
@pytest.mark.parametrize("runtime", ["runc", "runsc"])
def test_held_instance_stops_with_exit_0(make_env, runtime):
    """`runsc run` dies of a SIGTERM instead of passing it on: its stop goes through
    `runsc kill`, and the probe itself exits 0 (a kill would say 143 or -15)."""
    if runtime == "runsc" and not _runsc_ok():
        pytest.skip("runsc not installed")
    env = make_env({"runtime": runtime})
    held = env.start(HOLD, 60)
    assert held.wait_ready()
    launch = held.stop()
    assert launch.status == "ok" and launch.exit_code == 0, launch
    assert 0 < launch.phases["ready"] < launch.phases["stop"] <= launch.phases["exit"]
    if runtime == "runsc":
        assert launch.host_side.get("sandbox_rss_mib", 0) > 0


@pytest.mark.requires("oci", "root")
@pytest.mark.parametrize("sibling", ["crun", "runc"])
def test_a_siblings_cleanup_leaves_this_rootfs(make_env, bundle, sibling):
    """The issue's bug: `--env oci --env oci:runtime=crun`: crun's prepare fails (the
    runner then cleans it up), which deleted runc's rootfs, so every later runc launch
    failed. Now each has its own directory: runc still launches, held ones included."""
    runc = make_env({})
    held = runc.start(HOLD, 60)
    assert held.wait_ready()
    other = make_env({"runtime": sibling}, prepare=False)
    with contextlib.suppress(OptionError):  # crun on a hybrid layout: refused (this host)
        other.prepare(bundle)
    other.cleanup()
    assert (runc.ctx.scratch / "rootfs" / "probes" / "startup").is_file()
    assert held.stop().exit_code == 0
    launch = runc.launch(STARTUP, 60)
    assert launch.status == "ok", launch.reason + launch.stderr_tail


@pytest.mark.requires("oci", "root")
@pytest.mark.parametrize("runtime", ["runc", "runsc"])
def test_a_held_instance_names_its_carriers_and_density_counts_those_outside(make_env, runtime):
    """The foreground `run` process sits in the harness's cgroup: counted. runsc's sandbox
    and gofer sit in the container's cgroup (<instance>/probe): named, but left to the
    cgroup figure (not counted twice). Once stopped, nothing is named."""
    if runtime == "runsc" and not _runsc_ok():
        pytest.skip("runsc not installed")
    env = make_env({"runtime": runtime})
    held = env.start(HOLD, 60)
    try:
        assert held.wait_ready()
        carriers = held.carriers()
        assert carriers[held.child.proc.pid] == "runtime"
        want = {"runtime", "sandbox", "gofer"} if runtime == "runsc" else {"runtime"}
        assert set(carriers.values()) == want
        reader = held.live_cgroup()
        assert reader is not None
        outside = density.outside_carriers_mib(carriers, reader)
        assert set(outside) == {"runtime"} and outside["runtime"] > 0
        assert outside["runtime"] == pytest.approx(density.pss_mib(held.child.proc.pid), rel=0.5)
    finally:
        held.stop()
    assert held.carriers() == {}


@pytest.mark.requires("oci", "root")
@pytest.mark.parametrize("runtime", ["runc", "runsc"])
def test_clean_finds_a_held_container_of_each_runtime(make_env, runtime):
    """What `isobench clean` lists after a crash: a held container of either runtime (runsc
    has no `list -q`: its containers were never listed)."""
    if runtime == "runsc" and not _runsc_ok():
        pytest.skip("runsc not installed")
    env = make_env({"runtime": runtime})
    held = env.start(HOLD, 60)
    try:
        assert held.wait_ready()
        found = [item.what for item in OciEnv.leftovers()]
        assert f"{runtime} container {held.name}" in found
        assert not any("could not look" in what for what in found), found
    finally:
        held.stop()
    assert f"{runtime} container {held.name}" not in [i.what for i in OciEnv.leftovers()]
