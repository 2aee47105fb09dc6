"""docker environment: pure parsing on recorded inspect data, option validation, and real
instances against the real daemon (runc, seccomp off, runsc, the runsc-kvm hang, held
containers stopped through the API, a cleanup that keeps to its own environment)."""

from __future__ import annotations

import json
import statistics
import subprocess
import time
from pathlib import Path

import pytest

from bench.envs import containers as ct
from bench.envs import roots
from bench.envs.base import HOLD, ChannelError, Context, Invocation, OptionError, served
from bench.envs.docker import DockerEnv
from bench.envs.docker_daemon import runtime_problem
from bench.envs.host import HostEnv
from bench.envs.podman import PodmanEnv
from bench.metrics.cgroup import Layout

DATA = Path(__file__).parent / "data" / "docker"
NULL = Invocation("syscall", "syscall", ("--op", "null", "--reps", "1"))
STARTUP = Invocation("startup", "startup")


def _inspect(name: str) -> dict:
    return json.loads((DATA / name).read_text())


# ---------------------------------------------------------------- pure


def test_cgroup_path_from_recorded_inspect_cgroupfs():
    runc = _inspect("inspect-runc-cgroupfs.json")
    assert ct.container_rel_path(runc, "cgroupfs") == f"docker/{runc['Id']}"
    runsc = _inspect("inspect-runsc-cgroupfs.json")
    assert runsc["HostConfig"]["Runtime"] == "runsc"
    assert ct.container_rel_path(runsc, "cgroupfs") == f"docker/{runsc['Id']}"


def test_cgroup_path_with_parent_and_systemd_driver():
    data = _inspect("inspect-runc-cgroupfs.json")
    data["HostConfig"]["CgroupParent"] = "/isobench-r1-3"
    assert ct.container_rel_path(data, "cgroupfs") == f"isobench-r1-3/{data['Id']}"
    data["HostConfig"]["CgroupParent"] = ""
    assert ct.container_rel_path(data, "systemd") == f"system.slice/docker-{data['Id']}.scope"
    data["HostConfig"]["CgroupParent"] = "isobench-r1-3.slice"
    assert ct.container_rel_path(data, "systemd") == (
        f"isobench.slice/isobench-r1.slice/isobench-r1-3.slice/docker-{data['Id']}.scope"
    )


def test_launch_cgroup_reads_and_removes_through_the_layout(tmp_path):
    """A fake hybrid tree: the per-launch parent is read where the layout says, and
    removed from every hierarchy, also one isobench does not read (runc makes it there)."""
    for h in ("cpu", "cpuacct", "memory", "devices", "unified"):
        (tmp_path / h / "isobench-x" / "conmon").mkdir(parents=True)
    (tmp_path / "unified" / "cgroup.controllers").write_text("")
    (tmp_path / "cpuacct" / "tasks").write_text("")
    (tmp_path / "cpuacct" / "isobench-x" / "cpuacct.usage").write_text("2000000\n")
    layout = Layout.detect(tmp_path)
    assert layout.name == "hybrid"
    parent = ct.LaunchCgroup("isobench-x", layout)
    assert parent.child("conmon") == ct.LaunchCgroup("isobench-x/conmon", layout)
    assert parent.read()["cpu_total_ms"] == 2.0
    assert parent.pids() == set()
    (tmp_path / "cpuacct" / "isobench-x" / "cpuacct.usage").unlink()  # cgroupfs: no files left
    parent.remove()
    assert not list(tmp_path.glob("*/isobench-x"))
    assert parent.read() == {}  # gone: nothing to read, no error


def test_runtime_problems():
    v1, hybrid = Layout("v1"), Layout("hybrid")
    assert "needs --network=host" in runtime_problem("runsc", {"path": "/usr/bin/runsc"}, v1)
    runsc = {"path": "runsc", "runtimeArgs": ["--network=host"]}
    assert runtime_problem("runsc", runsc, hybrid) == ""
    assert runtime_problem("crun", {"path": "/usr/bin/crun"}, hybrid) == hybrid.runtime_problem(
        "crun"
    )
    assert runtime_problem("fast", {"path": "/opt/crun"}, hybrid).startswith("fast (crun): ")
    assert runtime_problem("crun", {"path": "/usr/bin/crun"}, Layout("v2")) == ""
    assert runtime_problem("runc", {"path": "runc"}, hybrid) == ""


def test_carrier_roles():
    cid = "ab" * 32
    assert ct.role_of(["/usr/bin/containerd-shim-runc-v2", "-id", cid], cid) == "shim"
    assert ct.role_of(["runsc-sandbox", "--root=/x", "boot", cid], cid) == "sandbox"
    assert ct.role_of(["runsc-gofer", "gofer", f"--bundle=/b/{cid}"], cid) == "gofer"
    assert ct.role_of(["/usr/bin/conmon", "-c", cid], cid) == "conmon"
    assert ct.role_of(["/usr/bin/containerd-shim-runc-v2", "-id", "other"], cid) is None


def test_options_validate(tmp_path):
    ctx = Context("t", tmp_path, tmp_path)
    env = DockerEnv({"seccomp": "unconfined", "cpus": "0.5", "memory": "512m", "label": "x"}, ctx)
    assert env.opts["cpus"] == 0.5 and env.opts["memory"].bytes() == 512 * 2**20
    for bad in (
        {"seccomp": "off"},
        {"network": "weird"},
        {"storage": "nfs"},
        {"cpus": "-1"},
        {"memory": "lots"},
        {"cpuset": "a-b"},
        {"nope": "1"},
    ):
        with pytest.raises(OptionError):
            DockerEnv(bad, ctx)


def test_container_options_are_declared_once():
    """docker and podman share one declaration; each adds its runtime and the rootfs it
    may run from (the very option host takes); a cpuset is checked as the host checks
    it."""
    assert set(DockerEnv.options) == {"runtime", "rootfs", *ct.CONTAINER_OPTIONS}
    assert set(PodmanEnv.options) == {"runtime", "rootfs", *ct.CONTAINER_OPTIONS}
    for cls in (DockerEnv, PodmanEnv):
        for name, opt in ct.CONTAINER_OPTIONS.items():
            assert cls.options[name] is opt
    assert DockerEnv.options["cpuset"].type is HostEnv.options["cpuset"].type
    assert DockerEnv.options["rootfs"] is HostEnv.options["rootfs"] is roots.ROOTFS_OPTION


def test_variants_and_labels(tmp_path):
    assert DockerEnv.variants() == ["docker", "docker:seccomp=unconfined", "docker:runtime=runsc"]
    a = Context("r1", tmp_path / "a", tmp_path, prefix="isobench-r1-e1")
    assert ct.labels(a) == {"isobench": "1", "isobench.run": "r1", ct.ENV_LABEL: "isobench-r1-e1"}


# ---------------------------------------------------------------- real daemon


def _isobench_containers() -> str:
    return subprocess.run(
        ["docker", "ps", "-a", "--filter", "label=isobench", "-q"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


@pytest.fixture
def make_env(env_factory):
    yield lambda config: env_factory(DockerEnv, config)
    env_factory.cleanup()
    assert _isobench_containers() == ""


@pytest.mark.requires("docker")
def test_probe_and_details():
    av = DockerEnv.probe()
    assert av.ok and av.versions["docker"]
    names = [name for name, _ in DockerEnv.details()]
    assert "docker" in names and "docker:runtime=runc" in names
    runc = DockerEnv.probe({"runtime": "runc"})  # the options' runtime is answered for too
    assert runc.ok and runc.versions["runc"]
    missing = DockerEnv.probe({"runtime": "no-such-runtime"})
    assert not missing.ok and "not a runtime of this daemon" in missing.reason


@pytest.mark.requires("docker")
def test_runc_launches_startup_and_null(make_env):
    env = make_env({})
    start = env.launch(STARTUP, 30)
    assert start.status == "ok", start.reason
    p = start.phases
    assert 0 < p["created"] <= p["started"] and 0 < p["ready"] <= p["exit"] <= p["cleaned"]
    assert "processes" in start.host_side  # the host-side sampler ran
    null = env.launch(NULL, 30)
    assert null.status == "ok", null.reason
    assert null.records[0]["op"] == "null"
    assert null.cgroup["cpu_total_ms"] > 0
    described = env.describe()
    assert described["daemon"]["storage_driver"] and described["image"]["id"]


@pytest.mark.requires("docker")
def test_unknown_runtime_is_refused(make_env):
    with pytest.raises(OptionError):
        make_env({"runtime": "no-such-runtime"})


@pytest.mark.requires("docker")
@pytest.mark.parametrize("storage", ["volume", "tmpfs"])
def test_storage_mounts_the_workdir(make_env, storage):
    env = make_env({"storage": storage})
    inv = Invocation("io", "syscall", ("--op", "stat", "--min-ms", "1"))
    launch = env.launch(inv, 30)
    assert launch.status == "ok", launch.reason
    assert not list((env.ctx.scratch / ct.VOLUMES).glob("*"))


@pytest.mark.requires("docker", "runsc")
def test_runsc_has_sandbox_and_gofer(make_env):
    """Held, so the sampler surely sees runsc's carriers (a 0.1 s launch can end between
    two of its looks on a loaded host); then a null launch runs to completion."""
    env = make_env({"runtime": "runsc"})
    held = env.start(HOLD, 60)
    assert held.wait_ready()
    time.sleep(0.5)
    launch = held.stop()
    assert launch.status == "ok" and launch.exit_code == 0, launch
    assert launch.host_side.get("sandbox_rss_mib", 0) > 0
    assert launch.host_side.get("gofer_rss_mib", 0) > 0
    null = env.launch(NULL, 60)
    assert null.status == "ok", null.reason
    assert null.records[0]["op"] == "null"


@pytest.mark.requires("docker", "runsc")
def test_hanging_runtime_times_out_and_leaves_nothing(make_env):
    from bench.envs.docker_daemon import client

    if "runsc-kvm" not in (client().info().get("Runtimes") or {}):
        pytest.fail("runsc-kvm runtime missing: run .ci/setup-containers.sh")
    env = make_env({"runtime": "runsc-kvm"})
    launch = env.launch(STARTUP, 8)
    assert launch.status == "timeout"
    assert "did not return within 8 s: instance removed" in launch.reason
    assert _isobench_containers() == ""
    left = subprocess.run(
        ["pgrep", "-f", launch.extra["container_id"]], capture_output=True, text=True
    ).stdout
    assert left == ""


def _state(cid: str) -> str:
    out = subprocess.run(
        ["docker", "inspect", "--format", "{{.State.Status}}", cid], capture_output=True, text=True
    )
    return out.stdout.strip() or "gone"


@pytest.mark.requires("docker")
def test_held_container_stops_on_sigterm(make_env):
    """Held: ready, still running while held, then a stop through the API: the hold
    probe exits 0 and everything is removed."""
    env = make_env({})
    instance = env.start(HOLD, 30)
    assert instance.wait_ready()
    assert _state(instance.name) == "running"
    time.sleep(0.3)  # the host-side sampler looks for the shim every 0.1 s
    launch = instance.stop()
    assert launch.status == "ok" and launch.exit_code == 0, launch
    p = launch.phases
    assert p["created"] <= p["started"] and 0 < p["ready"] < p["stop"] <= p["exit"] <= p["cleaned"]
    assert launch.cgroup.get("cpu_total_ms", 0) > 0 and launch.host_side.get("shim_rss_mib", 0) > 0
    assert _state(instance.name) == "gone"


@pytest.mark.requires("docker")
def test_cleanup_removes_only_its_own_environments_containers(make_env):
    """Two environments of one run: cleaning one up (a failed prepare, the run's end)
    leaves the other's held container alone (the run's label is the same for both)."""
    a, b = make_env({}), make_env({"seccomp": "unconfined"})
    held_a, held_b = a.start(HOLD, 30), b.start(HOLD, 30)
    assert held_a.wait_ready() and held_b.wait_ready()
    assert held_a.name.startswith(a.ctx.prefix) and held_b.name.startswith(b.ctx.prefix)
    a.cleanup()
    assert _state(held_a.name) == "gone"
    assert _state(held_b.name) == "running"
    assert held_b.stop().exit_code == 0


def round_trips_ms(instance, n: int = 20, ms: int = 5) -> float:
    """The median wall time of `n` asks of `null ms=<ms>`, less the burst itself: what
    one command costs over the channel (printed, for the burst design; not a figure)."""
    times = []
    for _ in range(n):
        t0 = time.monotonic_ns()
        json.loads(instance.ask(f"null ms={ms}", 30))
        times.append((time.monotonic_ns() - t0) / 1e6)
    return statistics.median(times) - ms


@pytest.mark.requires("docker")
@pytest.mark.parametrize(
    "config",
    [
        {},
        {"seccomp": "unconfined"},
        pytest.param({"runtime": "runsc"}, marks=pytest.mark.requires("runsc")),
    ],
    ids=["runc", "seccomp-unconfined", "runsc"],
)
def test_a_served_probe_answers_over_the_attach_socket(make_env, config):
    """Serve mode over the attach socket's stdin: answers in order, numbered; a probe
    that quits ends the channel (ChannelError, one line); stop still leaves nothing."""
    env = make_env(config)
    instance = env.start(served("syscall", "syscall"), 60)
    assert instance.wait_ready()
    first = json.loads(instance.ask("null iters=100", 30))
    assert first["op"] == "null" and first["burst"] == 1 and first["iterations"] == 100
    print(f"docker {config}: ask('null ms=5') overhead {round_trips_ms(instance):.2f} ms")
    with pytest.raises(ChannelError) as e:
        instance.ask("quit", 10)  # no answer: the probe exits 0
    assert "\n" not in str(e.value)
    launch = instance.stop()
    assert launch.status == "ok" and launch.exit_code == 0, launch
    assert launch.records == []
    with pytest.raises(ChannelError):
        instance.ask("null iters=1", 5)


@pytest.mark.requires("docker")
def test_an_instance_not_serving_has_no_channel(make_env):
    env = make_env({})
    instance = env.start(HOLD, 30)
    assert instance.wait_ready()
    with pytest.raises(ChannelError, match="not serving"):
        instance.ask("null iters=1", 5)
    assert instance.stop().status == "ok"
