"""The swarm kind against real dockerds of its own: never the machine's shared daemon
(other tests use it at the same time; a swarm there would change what they measure).
`user_daemon` is a private dockerd standing for a user's daemon (host=); daemon=private
is the kind's own. The contract test runs the kind with daemon=private."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from bench.envs import swarm_daemon as sd
from bench.envs import swarm_private as sp
from bench.envs.base import HOLD, Context, Invocation, OptionError
from bench.envs.swarm import IPVS as SWARM_IPVS
from bench.envs.swarm import SwarmEnv
from tests.conftest import ROOT

pytestmark = pytest.mark.requires("root")


def test_options_and_what_swarm_cannot_pick():
    """Pure: runtime only as the daemon's default; workers only with daemon=private."""
    opts = SwarmEnv.parse({"daemon": "private", "runtime": "runsc"})
    assert "cannot pick an OCI runtime" in SwarmEnv.refusal(opts)
    assert SwarmEnv.refusal(SwarmEnv.parse({"daemon": "private", "runtime": "runc"})) is None
    assert "daemon=private" in SwarmEnv.refusal(SwarmEnv.parse({"workers": "1"}))
    with pytest.raises(OptionError):
        SwarmEnv.parse({"network": "bridge"})
    assert sd.swarm_state({"Swarm": {"LocalNodeState": "active", "ControlAvailable": True}}) == (
        "active",
        True,
    )
    assert sp.dockerd_argv(*map(__import__("pathlib").Path, ("/d", "/e")), "t", "/c")[-1] == (
        "isobench-t-plugins"
    )


@pytest.fixture
def user_daemon(tmp_path):
    """A dockerd standing for a user's, in no swarm: (the daemon, its SDK client)."""
    d = sp.PrivateDaemon(f"isobench-tu{os.getpid() % 10000}-e9-u", tmp_path / "user-data")
    try:
        d.make_netns()
        d.link_to(None)
        d.start()
        cl = sd.client(d.host)
        yield d, cl
        cl.close()
    finally:
        d.stop()
        sd.forget(d.host)


def _state(cl) -> str:
    return sd.swarm_state(cl.info())[0]


def test_makes_a_swarm_for_the_run_and_leaves_it_with_its_gwbridge(user_daemon, env_factory):
    d, cl = user_daemon
    assert _state(cl) == "inactive" and not cl.api.networks(names=[sd.GWBRIDGE])
    env = env_factory("swarm", {"host": d.host})
    assert env.made_swarm and _state(cl) == "active"
    assert sd.isobench_labels(cl)[sd.SWARM_LABEL] == env.ctx.prefix
    launch = env.launch(Invocation("startup", "startup"), 60)
    assert launch.status == "ok", launch.reason
    p = launch.phases
    assert 0 < p["service"] < p["assigned"] < p["created"] < p["ready"] <= p["exit"], p
    assert p["created"] < p["started"] <= p["exit"] <= p["removed"] <= p["cleaned"], p
    assert launch.extra["task_states"], "the task states a poll saw"
    env_factory.cleanup()
    assert _state(cl) == "inactive"
    assert not cl.api.networks(names=[sd.GWBRIDGE]), "init made docker_gwbridge: removed"


def test_an_existing_swarm_is_used_as_is(user_daemon, env_factory):
    """swarm=existing: the user's swarm stays, with its spec and its own service."""
    d, cl = user_daemon
    cl.swarm.init(advertise_addr="127.0.0.1")
    spec = cl.api.inspect_swarm()["Spec"]
    theirs = cl.services.create(sd_image(cl, env_factory), name="theirs", command=["/x"])
    env = env_factory("swarm", {"host": d.host, "swarm": "existing"})
    assert not env.made_swarm
    held = env.start(HOLD, 60)
    assert held.wait_ready()
    env_factory.cleanup()
    assert _state(cl) == "active" and cl.api.inspect_swarm()["Spec"] == spec
    assert [s.id for s in cl.services.list()] == [theirs.id]
    assert not [x for x in SwarmEnv.leftovers() if d.host in x.what]
    cl.swarm.leave(force=True)


def sd_image(cl, env_factory) -> str:
    """The probe image in this daemon (what prepare loads), for a user's service."""
    from bench.envs import image as img

    bundle = env_factory.request.getfixturevalue("bundle")
    return img.ensure_docker_image(cl, bundle, env_factory.tmp_path / "cache").tags[0]


HOLDER = """
import sys, time
from pathlib import Path
from bench import bundle
from bench.envs.base import HOLD, Context
from bench.envs.swarm import SwarmEnv
ctx = Context("tk9", Path(sys.argv[2]), Path(sys.argv[2]) / "cache").for_env(1)
ctx.scratch.mkdir(parents=True, exist_ok=True)
env = SwarmEnv({"host": sys.argv[1]}, ctx)
env.prepare(bundle.build())
inst = env.start(HOLD, 60)
assert inst.wait_ready()
print(inst.name, flush=True)
time.sleep(600)
"""


def test_kill_9_then_clean_removes_the_service_and_the_swarm(user_daemon, tmp_path):
    d, cl = user_daemon
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, d.host, str(tmp_path / "run")],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        name = proc.stdout.readline().strip()
        assert name.startswith("isobench-tk9-e1-"), name
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    found = [x for x in SwarmEnv.leftovers() if d.host in x.what]
    whats = [x.what for x in found]
    assert any(name in w and "swarm service" in w for w in whats), whats
    assert any("docker swarm made by isobench-tk9-e1" in w for w in whats), whats
    for item in found:
        item.remove()
    assert _state(cl) == "inactive" and not cl.api.networks(names=[sd.GWBRIDGE])
    assert not cl.api.containers(all=True)
    assert not [x for x in SwarmEnv.leftovers() if d.host in x.what]


def test_a_task_pinned_to_a_second_node_runs_there(env_factory):
    """daemon=private workers=1: a worker dockerd in a namespace of its own, joined over
    its link to the manager's; node=worker places the task there."""
    env = env_factory("swarm", {"daemon": "private", "workers": "1", "node": "worker"})
    nodes = {n["ID"]: n["Spec"]["Role"] for n in env.cl.api.nodes()}
    assert sorted(nodes.values()) == ["manager", "worker"]
    launch = env.launch(Invocation("startup", "startup"), 90)
    assert launch.status == "ok", launch.reason
    assert nodes[launch.extra["node"]] == "worker"
    assert 0 < launch.phases["assigned"] < launch.phases["ready"] <= launch.phases["exit"]
    hosts = [d.host for d in env.private]
    env_factory.cleanup()
    assert not [x for x in SwarmEnv.leftovers() if any(h in x.what for h in hosts)]
    assert not [p for p in sp.private_leftovers() if env.ctx.prefix in p.what]


@pytest.mark.parametrize("network", ["ingress", "host"])
def test_a_served_port_is_reached_from_the_host(env_factory, network, tmp_path):
    """ingress: the port published through the routing mesh; host: the node's own. On a
    kernel without IPVS (this VM's) the mesh cannot work: the kind says so, unavailable
    with a reason a user can act on, instead of a task whose port never answers."""
    if network == "ingress" and not SWARM_IPVS.exists():
        av = SwarmEnv.probe({"daemon": "private", "network": "ingress"})
        assert not av.ok and "IPVS" in av.reason and "network=host" in av.reason
        default = SwarmEnv({"daemon": "private"}, Context("tn", tmp_path, tmp_path))
        assert default.net_path() == av.reason, "a server's default path is the mesh too"
        return
    env = env_factory("swarm", {"daemon": "private", "network": network})
    server = Invocation("net", "net", ("--server", "--port", "5201"))
    inst = env.start(server, 60)
    try:
        assert inst.wait_ready(), inst.failure
        addr = inst.address(5201)
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(addr, timeout=2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        assert ("routing mesh" in inst.path) == (network == "ingress"), inst.path
    finally:
        inst.stop()
