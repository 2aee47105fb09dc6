"""podman environment: rlimit candidates (pure), real launches through the CLI."""

from __future__ import annotations

import subprocess

import pytest

from bench.envs.base import Context, Invocation, OptionError
from bench.envs.podman import PodmanEnv, ulimit_argv, ulimit_candidates


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
    with pytest.raises(OptionError):
        PodmanEnv({"runtime": "kata"}, ctx)


@pytest.mark.requires("podman")
def test_podman_launches_startup_and_null(tmp_path, bundle):
    env = PodmanEnv({}, Context("tp", tmp_path, tmp_path / "cache"))
    try:
        env.prepare(bundle)
        start = env.launch(Invocation("startup", "startup"), 60)
        assert start.status == "ok", start.reason
        assert start.phases["ready"] <= start.phases["exit"] <= start.phases["cleaned"]
        assert start.host_side.get("conmon_cpu_ms", 0) > 0
        null = env.launch(Invocation("syscall", "syscall", ("--op", "null")), 60)
        assert null.status == "ok", null.reason
        assert null.records and null.records[0]["op"] == "null"
        assert "ulimits" in env.describe()
    finally:
        env.cleanup()
    left = subprocess.run(
        ["podman", "ps", "-a", "-q", "--filter", "label=isobench"], capture_output=True, text=True
    ).stdout
    assert left.strip() == ""
