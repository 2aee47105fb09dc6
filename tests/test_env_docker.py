"""docker environment: pure parsing on recorded inspect data, option validation, and real
launches against the real daemon (runc, seccomp off, runsc, the runsc-kvm hang)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from bench.envs import containers as ct
from bench.envs.base import Context, Invocation, OptionError
from bench.envs.docker import DockerEnv, runtime_problem

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


def test_hierarchy_paths(tmp_path):
    for c in ("cpu", "cpuacct", "memory"):
        (tmp_path / c).mkdir()
    paths = ct.hierarchy_paths("isobench-x", "hybrid", tmp_path)
    assert paths["cpuacct"] == tmp_path / "cpuacct" / "isobench-x"
    assert paths["unified"] == tmp_path / "unified" / "isobench-x"
    assert ct.hierarchy_paths("a/b", "v2", tmp_path) == {"": tmp_path / "a/b"}


def test_runtime_problems():
    assert "needs --network=host" in runtime_problem("runsc", {"path": "/usr/bin/runsc"}, "v1")
    assert (
        runtime_problem("runsc", {"path": "runsc", "runtimeArgs": ["--network=host"]}, "hybrid")
        == ""
    )
    assert "hybrid" in runtime_problem("crun", {"path": "/usr/bin/crun"}, "hybrid")
    assert runtime_problem("runc", {"path": "runc"}, "hybrid") == ""


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


# ---------------------------------------------------------------- real daemon


def _isobench_containers() -> str:
    return subprocess.run(
        ["docker", "ps", "-a", "--filter", "label=isobench", "-q"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


@pytest.fixture
def make_env(tmp_path, bundle):
    made = []

    def make(config):
        ctx = Context(f"t{len(made)}", tmp_path, tmp_path / "cache")
        env = DockerEnv(config, ctx)
        made.append(env)
        env.prepare(bundle)
        return env

    yield make
    for env in made:
        env.cleanup()
    assert _isobench_containers() == ""


@pytest.mark.requires("docker")
def test_probe_and_details():
    av = DockerEnv.probe()
    assert av.ok and av.versions["docker"]
    names = [name for name, _ in DockerEnv.details()]
    assert "docker" in names and "docker:runtime=runc" in names


@pytest.mark.requires("docker")
def test_runc_launches_startup_and_null(make_env):
    env = make_env({})
    start = env.launch(STARTUP, 30)
    assert start.status == "ok", start.reason
    assert 0 < start.phases["ready"] <= start.phases["exit"] <= start.phases["cleaned"]
    assert start.host_side.get("shim_rss_mib", 0) > 0
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
    assert not list((env.ctx.scratch / "docker-volumes").glob("*"))


@pytest.mark.requires("docker", "runsc")
def test_runsc_launch_has_sandbox_and_gofer(make_env):
    env = make_env({"runtime": "runsc"})
    launch = env.launch(NULL, 60)
    assert launch.status == "ok", launch.reason
    assert launch.host_side.get("sandbox_rss_mib", 0) > 0
    assert launch.host_side.get("gofer_rss_mib", 0) > 0


@pytest.mark.requires("docker", "runsc")
def test_hanging_runtime_times_out_and_leaves_nothing(make_env):
    from bench.envs.docker import client

    if "runsc-kvm" not in (client().info().get("Runtimes") or {}):
        pytest.fail("runsc-kvm runtime missing: run .ci/setup-containers.sh")
    env = make_env({"runtime": "runsc-kvm"})
    launch = env.launch(STARTUP, 8)
    assert launch.status == "timeout"
    assert "within 8 s: instance removed" in launch.reason
    assert _isobench_containers() == ""
    left = subprocess.run(
        ["pgrep", "-f", launch.extra["container_id"]], capture_output=True, text=True
    ).stdout
    assert left == ""
