"""User server commands (issue 16): a server held in the environment (userrun --server),
its client on the host from the same rootfs (bench/families/userserver.py). Pure: the substitution,
the round's failures and its Ctrl-C on stand-in instances; real: redis-server and
redis-benchmark from a rootfs built from Debian's packages, one round on the host and one
in docker, and a server that exits at once as a failed cell with its reason."""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from bench import rootfs as rf
from bench.envs import image as img
from bench.envs.base import Launch, StartError
from bench.families import userserver
from bench.matrix import UserWorkload

NAME = "userserver-test"


def reachable(host: str, port: int) -> str:
    """A stand-in address accepts at once (common.wait_for_path's answer)."""
    return ""


REDIS = UserWorkload(
    "redis",
    "command",
    "redis-benchmark",
    argv=("redis-benchmark", "-h", "{host}", "-p", "{port}", "-n", "2000", "--csv"),
    quick_argv=("redis-benchmark", "-h", "{host}", "-p", "{port}", "-n", "500", "--csv"),
    server=("redis-server", "--port", "{port}", "--save", ""),
)


# ------------------------------------------------------------------ pure


def test_the_port_goes_to_the_server_and_the_address_to_the_client():
    assert userserver.server_args(REDIS, 6400) == (
        "--server",
        "--port",
        "6400",
        "--cd",
        "/",
        "--",
        "redis-server",
        "--port",
        "6400",
        "--save",
        "",
    )
    assert userserver.client_args(REDIS, True, "172.17.0.1", 32768) == (
        "--cd",
        "/",
        "--",
        "redis-benchmark",
        "-h",
        "172.17.0.1",
        "-p",
        "32768",
        "-n",
        "500",
        "--csv",
    )
    assert userserver.client_args(REDIS, False, "127.0.0.1", 1)[-3:] == ("-n", "2000", "--csv")
    assert userserver.substitute(["--listen={host}:{port}"], 80, "::1") == ["--listen=::1:80"]


def records(status: int | None, log: str = "") -> list[dict]:
    """userrun's records: the log's tail as a chunk, the exit line (None: none)."""
    out = []
    if log:
        out.append(
            {
                "probe": "userrun",
                "op": "chunk",
                "stream": "stderr",
                "seq": 0,
                "b64": base64.b64encode(log.encode()).decode(),
            }
        )
    if status is not None:
        out.append({"probe": "userrun", "op": "exit", "metrics": {"exit_status": status}})
    return out


class StandIn:
    """A held instance that says whether it became ready, and records how it ended."""

    def __init__(self, ready: bool, launch: Launch):
        self.ready, self.launch, self.ended = ready, launch, ""
        self.name = "stand-in"

    def wait_ready(self):
        return self.ready

    def address(self, port):
        return ("10.0.0.2", port + 1)

    def stop(self):
        self.ended = "stopped"
        return self.launch

    def abort(self):
        self.ended = "aborted"


class Env:
    """An environment that starts a StandIn (or raises), and runs a client's launch."""

    kind = "stand-in"

    def __init__(self, inst=None, client=None, path=None, error=None):
        self.inst, self.client, self.path, self.error, self.invs = inst, client, path, error, []

    def net_path(self):
        return self.path

    def start(self, inv, timeout):
        if self.error:
            raise self.error
        self.invs.append(inv)
        return self.inst

    def launch(self, inv, timeout):
        self.invs.append(inv)
        if isinstance(self.client, BaseException):
            raise self.client
        return self.client


def test_a_server_that_exits_first_is_a_failed_round_with_its_log():
    said = (
        "*** FATAL CONFIG FILE ERROR\nBad directive\n\nuserrun: redis-server exited with "
        "status 1 before it listened on port 6400: Bad directive\n"
    )
    inst = StandIn(
        False,
        Launch(status="failed", reason="exited with status 1 before `ready`", stderr_tail=said),
    )
    launch = userserver.run_server_round(Env(inst), Env(), REDIS, True, 5, reach=reachable)
    assert launch.status == "failed" and inst.ended == "stopped"
    assert launch.reason == (
        "the server never listened: redis-server exited with status 1 before it listened on "
        "port 6400: Bad directive"
    )
    gone = StandIn(False, Launch(status="timeout", reason="no `ready` within 5 s: killed"))
    launch = userserver.run_server_round(Env(gone), Env(), REDIS, True, 5, reach=reachable)
    assert launch.reason == "the server was not ready: no `ready` within 5 s: killed"


def test_an_address_that_never_accepts_is_a_failed_round_and_the_server_stopped():
    inst = StandIn(True, Launch(records=records(0)))
    client = Env(client=Launch(records=records(0)))
    launch = userserver.run_server_round(
        Env(inst), client, REDIS, True, 5, reach=lambda host, port: "No route to host"
    )
    assert launch.status == "failed" and inst.ended == "stopped" and client.invs == []
    assert "no path to the server at" in launch.reason and "No route to host" in launch.reason


def test_no_path_no_start_and_a_failing_client_are_failed_rounds():
    launch = userserver.run_server_round(
        Env(path="network=none"), Env(), REDIS, True, 5, reach=reachable
    )
    assert launch.reason == "no network path to stand-in: network=none"
    launch = userserver.run_server_round(
        Env(error=StartError("no image")), Env(), REDIS, True, 5, reach=reachable
    )
    assert launch.reason == "the server did not start: no image"
    inst = StandIn(True, Launch(records=records(0)))
    client = Env(client=Launch(status="timeout", reason="no exit within 5 s: probe killed"))
    launch = userserver.run_server_round(Env(inst), client, REDIS, True, 5, reach=reachable)
    assert inst.ended == "stopped" and launch.status == "timeout"
    assert launch.reason == "the client: no exit within 5 s: probe killed"


def test_the_round_is_the_servers_launch_with_the_clients_records():
    server = Launch(records=records(0), cgroup={"cpu_total_ms": 12.0}, phases={"ready": 5})
    inst = StandIn(True, server)
    client = Env(client=Launch(records=records(0, "x")))
    env = Env(inst)
    launch = userserver.run_server_round(env, client, REDIS, True, 5, reach=reachable)
    port = int(env.invs[0].args[2])
    assert env.invs[0].args[:3] == ("--server", "--port", str(port))
    assert client.invs[0].args == userserver.client_args(REDIS, True, "10.0.0.2", port + 1)
    assert launch.status == "ok" and launch.cgroup == {"cpu_total_ms": 12.0}
    assert launch.records == client.client.records and launch.extra["server_exit"] == 0
    assert launch.userrun_args == list(client.invs[0].args)
    assert launch.net_path == f"loopback 10.0.0.2:{port + 1}"


def test_ctrl_c_in_the_client_aborts_the_server():
    inst = StandIn(True, Launch())
    with pytest.raises(KeyboardInterrupt):
        userserver.run_server_round(
            Env(inst), Env(client=KeyboardInterrupt()), REDIS, True, 5, reach=reachable
        )
    assert inst.ended == "aborted"


# ------------------------------------------------------------------ userrun --server


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.requires("compiler")
def test_userrun_says_ready_once_the_server_listens_and_stops_it_on_sigterm(bundle, tmp_path):
    port = _port()
    late = f"import time, http.server as h; time.sleep(0.3); h.test(port={port}, bind='127.0.0.1')"
    p = subprocess.Popen(
        [
            str(bundle.probes["userrun"]),
            "--server",
            "--port",
            str(port),
            "--cd",
            str(tmp_path),
            "--",
            sys.executable,
            "-c",
            late,
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        t0 = time.monotonic()
        assert p.stdout.readline() == "ready\n"
        assert time.monotonic() - t0 >= 0.3
        socket.create_connection(("127.0.0.1", port), timeout=2).close()  # it listens
        p.send_signal(signal.SIGTERM)
        out, _ = p.communicate(timeout=10)
    finally:
        p.kill()
    exit_line = json.loads(out.splitlines()[-1])
    assert p.returncode == 0 and exit_line["op"] == "exit"
    assert exit_line["metrics"]["exit_status"] == 128 + signal.SIGTERM


@pytest.mark.requires("compiler")
def test_userrun_reports_a_server_that_exits_before_it_listens(bundle):
    port = _port()
    res = subprocess.run(
        [
            str(bundle.probes["userrun"]),
            "--server",
            "--port",
            str(port),
            "--",
            "sh",
            "-c",
            "echo bad config; exit 3",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    lines = [json.loads(line) for line in res.stdout.splitlines()]  # no `ready`
    assert res.returncode == 1 and lines[-1]["metrics"]["exit_status"] == 3
    assert base64.b64decode(lines[0]["b64"]) == b"bad config\n"
    assert res.stderr.splitlines()[-1] == (
        f"userrun: sh exited with status 3 before it listened on port {port}: bad config"
    )


# ------------------------------------------------------------------ real: redis from a rootfs


def missing(why: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{why} (CI=true: a missing capability fails)", pytrace=False)
    pytest.skip(why)


def isobench(*args, cache: Path, cwd: Path, timeout=600):
    env = {
        **os.environ,
        "ISOBENCH_CACHE": str(cache),
        "ISOBENCH_LOCK": str(cwd / "lock"),
        "PYTHONPATH": str(Path(__file__).parents[1]),
    }
    return subprocess.run(
        [sys.executable, "-m", "bench.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        cwd=cwd,
    )


@pytest.fixture(scope="session")
def redis_rootfs(tmp_path_factory, bundle):
    """redis-server and redis-tools from Debian, in a cache of its own (the session's
    bundle copied in); its docker images and the cache are removed at the end."""
    if os.geteuid() != 0:
        missing("needs root")
    if not shutil.which("mmdebstrap"):
        missing("needs mmdebstrap (apt-get install mmdebstrap)")
    cache = tmp_path_factory.mktemp("userserver-cache")
    shutil.copytree(bundle.root, cache / "bundles" / bundle.hash, symlinks=True)
    work = tmp_path_factory.mktemp("userserver")
    res = isobench(
        "rootfs",
        "build",
        NAME,
        "--package",
        "redis-server",
        "--package",
        "redis-tools",
        cache=cache,
        cwd=work,
    )
    assert res.returncode == 0, res.stderr
    tree = rf.load(NAME, cache)
    yield cache, tree
    images = subprocess.run(
        [
            "docker",
            "images",
            "-q",
            "--no-trunc",
            "--filter",
            f"label={img.ROOTFS_LABEL}={tree.key}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout.split()
    for image in set(images):
        subprocess.run(["docker", "rmi", "-f", image], capture_output=True, timeout=120)
    shutil.rmtree(cache, ignore_errors=True)


MATRIX = f"""
rootfs = "{NAME}"
baseline = "host"

[[user_workload]]
name = "redis"
kind = "command"
parser = "redis-benchmark"
server = {json.dumps(list(REDIS.server) + ["--bind", "0.0.0.0", "--protected-mode", "no"])}
argv = {json.dumps(list(REDIS.quick_argv) + ["-t", "set,get"])}

[[user_workload]]
name = "dead"
kind = "command"
parser = "redis-benchmark"
server = ["redis-server", "--port", "{{port}}", "--no-such-directive", "1"]
argv = {json.dumps(list(REDIS.quick_argv))}

[[env]]
kind = "host"

[[env]]
kind = "docker"
label = "docker"
"""


def redis_servers() -> list[int]:
    return [p.pid for p in psutil.process_iter(["name"]) if p.info["name"] == "redis-server"]


@pytest.mark.requires("host", "docker")
def test_redis_benchmark_against_a_held_redis_server_on_the_host_and_in_docker(
    redis_rootfs, tmp_path
):
    from bench.clean import find_all

    cache, tree = redis_rootfs
    assert not redis_servers(), "a redis-server runs on this host already"
    (tmp_path / "m.toml").write_text(MATRIX)
    res = isobench(
        "run",
        "m.toml",
        "--quick",
        "--rounds",
        "1",
        "--max-rounds",
        "1",
        "--warmup",
        "0",
        "--results",
        "r",
        cache=cache,
        cwd=tmp_path,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    (run,) = (tmp_path / "r").iterdir()
    samples = [json.loads(ln) for ln in (run / "samples.jsonl").read_text().splitlines()]
    manifest = json.loads((run / "manifest.json").read_text())
    for env in ("host", "docker"):
        ok = {
            (s["op"], s["metric"]): s["value"]
            for s in samples
            if s["env"] == env
            and s["workload"] == "redis"
            and s["source"] == "probe"
            and s["status"] == "ok"
        }
        assert ok[("SET", "rps")] > 0 and ok[("GET", "rps")] > 0, (env, ok)
        assert ok[("GET", "p50_latency_ms")] > 0
        assert (run / "raw" / "redis").glob(f"{env}-r1-*.stdout.txt")
        assert manifest["environments"][env]["net_path"]
        (dead,) = [s for s in samples if s["env"] == env and s["workload"] == "dead"]
        assert dead["status"] == "failed"
        assert dead["reason"].startswith(
            "the server never listened: redis-server exited with status 1 before it listened "
            "on port "
        ), dead["reason"]
    assert (
        "published port" in manifest["environments"]["docker"]["net_path"]
        or "127.0.0.1" in (manifest["environments"]["docker"]["net_path"])
    )
    assert not redis_servers()
    left = [item.what for item in find_all() if run.name in item.what]  # others may run too
    assert not left, left
