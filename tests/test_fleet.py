"""`isobench fleet run` on three real hosts: network namespaces on a private /24, each
with its own sshd (tests/fleet_hosts.py), reached through ansible-core as a user's
inventory reaches them. The runs are short (--quick, three rounds, a 20 s budget): what
is tested is the fleet, not the figures."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.fleet import events
from bench.fleet.results import Fleet, HostRecord, overlapped
from tests import fleet_hosts
from tests.conftest import ROOT, isobench, missing

RUN = ["--env", "host", "--env", "namespaces", "--workload", "syscall", "--quick"]
SHORT = ["--rounds", "3", "--max-rounds", "3", "--budget", "20"]
needs_hosts = pytest.mark.requires("root", "cgroup", "host", "namespaces", "compiler")


def _ansible() -> None:
    from bench import fleet

    if not fleet.available():
        missing("ansible-core is not installed (pip install 'isobench[fleet]')")


@pytest.fixture
def hosts():
    """Three namespace hosts, removed after the test (also when it fails)."""
    _ansible()
    if why := fleet_hosts.missing():
        missing(why)
    made = fleet_hosts.make()
    yield made
    made.close()


def fleet(*args, results: Path, **kw) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "ISOBENCH_LOCK": str(results / "lock")}
    results.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        [sys.executable, "-m", "bench.cli", "fleet", "run", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        **kw,
    )


def finish(proc: subprocess.Popen, timeout: float = 240) -> tuple[int, list[str]]:
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        pytest.fail(f"the fleet run did not end in {timeout} s: {err[-2000:]}")
    return proc.returncode, err.splitlines()


def fleet_json(results: Path) -> dict:
    (root,) = results.glob("fleet-*")
    return json.loads((root / "fleet.json").read_text())


def scratch_on(host) -> list[str]:
    """isobench's directories in the host's private /var/tmp and /tmp."""
    res = host.run("ls", "-A", "/var/tmp", "/tmp")
    return [n for n in res.stdout.split() if n.startswith("isobench-")]


@needs_hosts
def test_a_fleet_run_on_three_hosts(hosts, tmp_path):
    results = tmp_path / "results"
    rc, err = finish(fleet(hosts.inventory(), *RUN, *SHORT, "--results", results, results=results))
    assert rc == 0, "\n".join(err)
    data = fleet_json(results)
    assert data["schema"] == 1 and data["forks"] == 5 and isinstance(data["overlapped"], bool)
    assert data["command"][:3] == ["isobench", "fleet", "run"]
    assert [h["name"] for h in data["hosts"]] == ["h1", "h2", "h3"]
    root = next(results.glob("fleet-*"))
    for h in data["hosts"]:
        assert h["status"] == "done", h
        assert h["reason"] is None and h["started"] and h["ended"]
        assert h["facts"]["ansible_kernel"] == os.uname().release
        run = root / h["run"]
        assert run.parent == root / "hosts" / h["name"]
        manifest = json.loads((run / "manifest.json").read_text())
        assert manifest["host"], "isobench's own host facts are in the run's manifest"
        res = isobench("summary", run)  # an ordinary run directory
        assert res.returncode == 0, res.stderr
    assert err[-1].startswith("isobench: fleet: 3 of 3 host(s) done")
    for h in hosts.hosts:
        assert scratch_on(h) == [], f"{h.name} kept its scratch"


@needs_hosts
def test_a_host_that_is_down_gets_one_line_and_the_others_complete(hosts, tmp_path):
    results = tmp_path / "results"
    hosts.stop_sshd(hosts.hosts[2])
    rc, err = finish(fleet(hosts.inventory(), *RUN, *SHORT, "--results", results, results=results))
    assert rc == 1, "\n".join(err)
    status = {h["name"]: h for h in fleet_json(results)["hosts"]}
    assert status["h1"]["status"] == status["h2"]["status"] == "done"
    assert status["h3"]["status"] == "unreachable"
    assert "10.213.47.13" in status["h3"]["reason"]
    about_h3 = [line for line in err if "h3" in line]
    assert len(about_h3) == 1 and "unreachable" in about_h3[0], err
    assert err[-1].startswith("isobench: fleet: 2 of 3 host(s) done")


@needs_hosts
def test_a_host_whose_python_cannot_use_the_wheels_gets_one_line(hosts, tmp_path):
    # answers the playbook's check as a Python 3.9 would (not under /tmp: private per host)
    old = hosts.dir / "python3.9"
    old.write_text("#!/bin/sh\necho 3.9 $(uname -m)\n")
    old.chmod(0o755)
    inv = hosts.inventory(host_vars={"h1": {"isobench_python": str(old)}})
    results = tmp_path / "results"
    rc, err = finish(fleet(inv, *RUN, "--limit", "h1", "--results", results, results=results))
    assert rc == 1, "\n".join(err)
    (h1,) = fleet_json(results)["hosts"]
    assert h1["status"] == "unusable" and "3.9" in h1["reason"], h1
    assert h1["facts"]["ansible_hostname"], "the facts are kept"
    assert [line for line in err if "h1" in line and "3.9" in line], err
    assert err[-1].startswith("isobench: fleet: 0 of 1 host(s) done")


@needs_hosts
def test_ctrl_c_stops_every_remote_run_and_leaves_nothing(hosts, tmp_path):
    from bench.metrics.cgroup import find_leftovers

    cgroups_before = set(find_leftovers())
    results = tmp_path / "results"
    proc = fleet(hosts.inventory(), *RUN, "--results", results, results=results)
    deadline, running = time.monotonic() + 180, set()
    while len(running) < 3 and time.monotonic() < deadline and proc.poll() is None:
        for log in results.glob("fleet-*/events.jsonl"):
            lines = [json.loads(x) for x in log.read_text().splitlines() if x.strip()]
            running = {e["host"] for e in lines if e["event"] == "start" and e["task"] == "run"}
        time.sleep(0.5)
    assert running == {"h1", "h2", "h3"}, "the runs did not start"
    time.sleep(8)  # the remote runs are measuring
    proc.send_signal(signal.SIGINT)
    rc, err = finish(proc, timeout=180)
    assert rc == 130, "\n".join(err)
    assert {h["status"] for h in fleet_json(results)["hosts"]} == {"interrupted"}
    for h in hosts.hosts:
        assert scratch_on(h) == [], f"{h.name}: scratch left: " + "\n".join(err)
        assert h.pids() == [h.proc.pid], f"{h.name}: processes left: {h.pids()}"
    assert set(find_leftovers()) - cgroups_before == set(), "cgroups left"
    hosts.close()
    left = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert fleet_hosts.PREFIX not in left
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert fleet_hosts.PREFIX not in netns


def _one_line(res) -> str:
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    return lines[0]


def test_a_bad_inventory_is_one_line(tmp_path):
    _ansible()
    bad = tmp_path / "hosts.yml"
    bad.write_text("all: [\n  bad: {")
    res = isobench("fleet", "run", bad, "--results", tmp_path, cwd=tmp_path)
    assert res.returncode == 2
    assert "inventory" in _one_line(res) and str(bad) in _one_line(res)
    res = isobench("fleet", "run", tmp_path / "nothing.ini", cwd=tmp_path)
    assert res.returncode == 2 and "no such file" in _one_line(res)


def test_a_limit_that_matches_no_host_is_one_line(tmp_path):
    _ansible()
    inv = tmp_path / "hosts.ini"
    inv.write_text("[web]\nh1 ansible_host=10.213.47.11\n[db]\nh2 ansible_host=10.213.47.12\n")
    res = isobench("fleet", "run", inv, "--limit", "nosuch", "--results", tmp_path, cwd=tmp_path)
    assert res.returncode == 2 and "--limit 'nosuch' matches no host" in _one_line(res)
    assert not list(tmp_path.glob("fleet-*")), "nothing is made for a user error"


def test_fleet_without_ansible_says_what_to_install(tmp_path):
    shadow = tmp_path / "shadow" / "ansible"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('ansible-core is not installed')\n")
    env = {**os.environ, "PYTHONPATH": f"{tmp_path / 'shadow'}:{ROOT}"}
    res = subprocess.run(
        [sys.executable, "-m", "bench.cli", "fleet", "run", "hosts.ini"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert res.returncode == 2
    assert "pip install 'isobench[fleet]'" in _one_line(res)


def _fleet(tmp_path) -> Fleet:
    hosts = [HostRecord("a"), HostRecord("b")]
    return Fleet(tmp_path, "x", "inv", ["isobench"], 2, hosts, 0.0)


def test_events_give_each_host_its_status_and_one_line(tmp_path):
    fleet, said = _fleet(tmp_path), []

    def say(host, line):
        said.append((host, line))

    recorded = [
        {"event": "ok", "host": "a", "task": "facts", "time": 1, "result": {"facts": {"k": 1}}},
        {"event": "unreachable", "host": "b", "task": "facts", "time": 1, "msg": "refused"},
        {"event": "start", "host": "a", "task": "run", "time": 5},
        {"event": "failed", "host": "a", "task": "run", "time": 9, "msg": "isobench: boom"},
        {"event": "failed", "host": "a", "task": "remove scratch", "time": 10, "msg": "x"},
    ]
    for e in recorded:
        events.apply(fleet, e, tmp_path, say)
    a, b = fleet.hosts
    assert (a.status, a.reason, a.started, a.ended, a.facts) == (
        "run-failed",
        "isobench: boom",
        5,
        9,
        {"k": 1},
    )
    assert (b.status, b.reason) == ("unreachable", "refused")
    assert said == [("b", "unreachable: refused"), ("a", "run failed (run): isobench: boom")]


def test_overlap_is_whether_two_runs_shared_time():
    a, b, c = HostRecord("a"), HostRecord("b"), HostRecord("c")
    a.started, a.ended, b.started, b.ended = 0, 10, 10, 20
    assert not overlapped([a, b, c], now=30)
    c.started = 15  # still running
    assert overlapped([a, b, c], now=30)


def test_the_host_list_is_ansibles_in_group_order():
    from bench.fleet.inventory import parse_list

    listed = {  # `ansible-inventory --list` of a two-group INI file
        "_meta": {"hostvars": {"h1": {"ansible_host": "192.0.2.1", "ansible_port": 2222}}},
        "all": {"children": ["ungrouped", "web", "db"]},
        "web": {"hosts": ["h1", "h2"]},
        "db": {"hosts": ["h2", "h3"]},
    }
    hosts = parse_list(listed)
    assert [(h.name, h.address, h.port) for h in hosts] == [
        ("h1", "192.0.2.1", 2222),
        ("h2", "h2", None),
        ("h3", "h3", None),
    ]


def test_run_spans_come_from_the_hosts_clock_not_the_order_events_arrive(tmp_path):
    fleet = _fleet(tmp_path)

    def ev(event, host, task, time, **result):
        return {"event": event, "host": host, "task": task, "time": time, "result": result}

    recorded = [  # --forks 1: b's start is heard before a's end
        ev("ok", "a", "facts", 0, facts={"k": 1}, tz_offset="+0100"),
        ev("ok", "b", "facts", 0, facts={"k": 1}, tz_offset="-0500"),
        ev("start", "a", "run", 1),
        ev("start", "b", "run", 10),
        ev("ok", "a", "run", 11, rc=0, start="2026-12-07 10:00:00.5", end="2026-12-07 10:00:09.9"),
        ev("ok", "b", "run", 20, rc=0, start="2026-12-07 04:00:10.0", end="2026-12-07 04:00:19.0"),
    ]
    for e in recorded:
        events.apply(fleet, e, tmp_path, lambda *_: None)
    a, b = fleet.hosts
    assert b.started - a.ended == pytest.approx(0.1)
    assert fleet.to_json(now=30)["overlapped"] is False
    assert "tz_offset" not in fleet.to_json(now=30)["hosts"][0]
