"""oci environment: runc and runsc run straight on a generated bundle."""

from __future__ import annotations

import subprocess

import pytest

from bench.envs.base import Context, Invocation, OptionError
from bench.envs.oci import OciEnv, runtime_problem


def test_options_and_known_problems(tmp_path):
    ctx = Context("t", tmp_path, tmp_path)
    with pytest.raises(OptionError):
        OciEnv({"network": "bridge"}, ctx)
    assert "hybrid" in runtime_problem("crun", "hybrid")
    assert runtime_problem("runc", "hybrid") == ""


@pytest.mark.requires("oci", "root")
@pytest.mark.parametrize("runtime", ["runc", "runsc"])
def test_oci_launches_startup_and_null(tmp_path, bundle, runtime):
    if runtime == "runsc" and not OciEnv.details()[2][1].ok:
        pytest.skip("runsc not installed")
    env = OciEnv({"runtime": runtime}, Context("to", tmp_path, tmp_path / "cache"))
    try:
        env.prepare(bundle)
        start = env.launch(Invocation("startup", "startup"), 60)
        assert start.status == "ok", start.reason + start.stderr_tail
        assert start.cgroup.get("cpu_total_ms", 0) > 0
        null = env.launch(Invocation("syscall", "syscall", ("--op", "null")), 60)
        assert null.status == "ok", null.reason
        assert null.records[0]["op"] == "null"
    finally:
        env.cleanup()
    assert not list(tmp_path.glob("oci/isobench-*"))
    assert subprocess.run(["pgrep", "-f", "isobench-to-"], capture_output=True).stdout == b""
