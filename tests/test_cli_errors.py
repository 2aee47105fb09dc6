"""Bad input from the command line: one line on stderr, exit status 2, no traceback."""

import subprocess
import sys

import pytest


def isobench(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "bench.cli", *args], capture_output=True, text=True, cwd=cwd,
        timeout=120,
    )  # fmt: skip


@pytest.mark.parametrize(
    "args, message",
    [
        (["run", "--env", "dokcer"], "unknown environment kind 'dokcer'"),
        (["run", "--env", "host", "--workload", "sycall"], "unknown workload 'sycall'"),
        (["run", "--env", "host", "--rounds", "-1"], "rounds must be at least 1"),
        (["run", "--env", "host:cpus=x"], "expected a float"),
        (["run", "--precision", "abc"], "--precision abc"),
        (["run", "--bogus"], "No such option"),
        (["summary", "/nonexistent-run"], "no such directory"),
        (["run", "--resume", "/"], "not an isobench run"),
    ],
)
def test_one_line_error_exit_2(args, message):
    res = isobench(*args)
    assert res.returncode == 2, res
    assert "Traceback" not in res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("isobench: error:"), res.stderr
    assert message in lines[0]


def test_malformed_matrix_file(tmp_path):
    f = tmp_path / "m.toml"
    f.write_text("[[env]]\nkind = 'host'\nrounds = 'x'\n")
    res = isobench("run", str(f))
    assert res.returncode == 2 and "Traceback" not in res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and f"{f}: env[0]: host has no option 'rounds'" in lines[0]


def test_newer_schema_is_refused(tmp_path):
    (tmp_path / "manifest.json").write_text('{"schema_version": 99}')
    res = isobench("summary", str(tmp_path))
    assert res.returncode == 2 and "newer isobench" in res.stderr and "Traceback" not in res.stderr
