"""`isobench doctor`: readable versions, a trial of a hanging runtime that leaves nothing
running, and a second call that answers from the recorded verdicts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from bench.envs import containers as ct
from bench.envs import docker_daemon as dk

ROOT = Path(__file__).parents[1]


@pytest.mark.parametrize(
    "tool, text, version",
    [
        (
            "runc",
            "runc version 1.1.5+ds1\ncommit: 1.1.5+ds1-1+deb12u1\nspec: 1.0.2-dev",
            "1.1.5+ds1",
        ),
        ("/usr/bin/runsc", "runsc version 0.0~20221219.0\nspec: 1.0.2-dev", "0.0~20221219.0"),
        ("conmon", "conmon version 2.1.6\ncommit: unknown", "2.1.6"),
        ("unshare", "unshare from util-linux 2.38.1", "util-linux 2.38.1"),
        ("podman", "podman version 4.3.1", "4.3.1"),
    ],
)
def test_versions_do_not_repeat_the_tools_name(tool, text, version):
    assert ct.version_of(tool, text) == version


def test_a_runtime_verdict_is_keyed_by_what_could_change_it():
    spec = {"path": "/nonexistent/runsc", "runtimeArgs": ["--platform=kvm"]}
    info = {"ID": "d1", "ServerVersion": "20.10", "Runtimes": {"runsc-kvm": spec}}
    other_args = json.loads(json.dumps(info))
    other_args["Runtimes"]["runsc-kvm"]["runtimeArgs"] = ["--platform=ptrace"]
    other_daemon = {**info, "ServerVersion": "24.0"}
    keys = {dk.trial_key(i, "runsc-kvm") for i in (info, other_args, other_daemon)}
    assert len(keys) == 3
    assert dk.trial_key(info, "runsc-kvm") == dk.trial_key(
        json.loads(json.dumps(info)), "runsc-kvm"
    )


def kvm_sandboxes() -> list[str]:
    found = []
    for proc in psutil.process_iter():
        argv = ct.cmdline(proc)
        if argv and "runsc" in os.path.basename(argv[0]) and "--platform=kvm" in argv:
            found.append(" ".join(argv))
    return found


def check_containers() -> str:
    res = subprocess.run(
        ["docker", "ps", "-aq", "--filter", "label=isobench.check"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return res.stdout.strip()


@pytest.mark.requires("docker")
def test_a_hanging_runtime_trial_leaves_nothing_running():
    runtimes = dk.client().info().get("Runtimes") or {}
    hanging = [n for n, spec in runtimes.items() if "--platform=kvm" in spec.get("runtimeArgs", [])]
    if not hanging:
        pytest.skip("the daemon lists no runsc runtime with --platform=kvm")
    assert not kvm_sandboxes(), "a KVM sandbox was running before the test"
    t0 = time.monotonic()
    why, _ = dk.trial_run(dk.client(), hanging[0])
    took = time.monotonic() - t0
    if not why:
        pytest.skip(f"{hanging[0]} works on this host: nothing hangs here")
    assert took < dk.CHECK_TIMEOUT_S + 2 * dk.CALL_TIMEOUT_S + 10
    assert kvm_sandboxes() == [] and check_containers() == ""


def doctor(*args: str) -> tuple[float, dict]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    t0 = time.monotonic()
    res = subprocess.run(
        [sys.executable, "-m", "bench.cli", "doctor", "--json", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr
    return time.monotonic() - t0, json.loads(res.stdout)  # --json: nothing else on stdout


@pytest.mark.requires("docker")
def test_doctor_twice_leaves_nothing_and_the_second_is_quick():
    """The remembered verdicts make a second call quick (the speed check, which measures
    for as long as it is told, is left out of the timing: --speed-check 0)."""
    _, first = doctor("--speed-check", "2")
    assert first["speed"]["verdict"] in ("quiet", "noisy"), first["speed"]
    assert first["speed"]["pairs"] > 20 and first["speed"]["sentence"]
    took, data = doctor("--speed-check", "0")
    assert data["speed"] is None
    assert took <= 15, f"the second doctor took {took:.1f} s"
    assert kvm_sandboxes() == [] and check_containers() == ""
    for kind, k in data["environments"].items():
        assert kind not in [d["name"] for d in k["details"]]  # no sub-row of itself
        for row in [k, *k["details"]]:
            for tool, version in row["versions"].items():
                assert not version.lower().startswith((tool.lower(), "version")), (tool, version)
