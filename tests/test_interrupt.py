"""Signals during a run: raised at once while measuring, deferred inside a teardown."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench import interrupt


@pytest.fixture
def installed():
    old = interrupt.install()
    yield
    interrupt.restore(old)


def test_a_signal_raises_at_once_while_measuring(installed):
    with pytest.raises(interrupt.Interrupted) as e:
        os.kill(os.getpid(), signal.SIGTERM)
        signal.pause()  # not reached: the handler raises
    assert e.value.exit_code == 128 + signal.SIGTERM


def test_a_teardown_is_never_cut_in_half(installed):
    done = []
    with pytest.raises(interrupt.Interrupted), interrupt.shielded():
        os.kill(os.getpid(), signal.SIGINT)
        with interrupt.shielded():  # nested: still deferred when the inner block ends
            done.append("kill")
        done.append("remove cgroup")
    assert done == ["kill", "remove cgroup"]


def test_no_except_exception_swallows_it(installed):
    with pytest.raises(interrupt.Interrupted):
        try:
            os.kill(os.getpid(), signal.SIGINT)
            signal.pause()
        except Exception:  # what an engine's error handling looks like
            pytest.fail("Interrupted was caught as an Exception")


def test_check_raises_a_recorded_signal(installed):
    with interrupt.shielded():
        os.kill(os.getpid(), signal.SIGINT)
        with pytest.raises(interrupt.Interrupted):
            interrupt.check()
        interrupt._pending.clear()  # handled: leaving the block raises nothing more


def test_after_ignore_a_recorded_signal_no_longer_ends_a_shielded_block():
    """The run's final cleanup (every environment's shielded cleanup, the scratch
    removal) runs to the end after the Ctrl-C that started it."""
    old = interrupt.install()
    try:
        with pytest.raises(interrupt.Interrupted):
            os.kill(os.getpid(), signal.SIGINT)
            interrupt.check()
        interrupt.ignore()
        with interrupt.shielded():
            pass  # raised Interrupted here before: the next cleanup step was skipped
        interrupt.check()
    finally:
        interrupt.restore(old)


ROOT = Path(__file__).parents[1]


def _loaded(pid: int, library: str) -> bool:
    try:
        return library in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_while_run_imports_is_one_line(tmp_path, sig, code):
    """Ctrl-C (or SIGTERM) in the first second of `isobench run`, while it imports what
    it runs with (numpy is loaded, pandas and scipy follow): one line and 128 + signal,
    no traceback from inside an import."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "ISOBENCH_LOCK": str(tmp_path / "lock")}
    args = ["run", "--env", "host", "--workload", "syscall", "--quick"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.cli", *args, "--results", str(tmp_path / "results")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    deadline = time.monotonic() + 60
    while not _loaded(proc.pid, "numpy") and time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.01)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    assert [line for line in err.splitlines() if line.strip()] == [
        f"isobench: interrupted ({signal.Signals(sig).name})"
    ]
    assert not (tmp_path / "results").exists()  # it had not begun


@pytest.mark.requires("host")
def test_ctrl_c_while_a_run_prepares_leaves_no_run_directory(tmp_path):
    """Ctrl-C while the run measures the harness's own cost (before its manifest is
    written): one line, 130, and no run directory, since there is nothing to resume."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "ISOBENCH_LOCK": str(tmp_path / "lock")}
    results = tmp_path / "results"
    args = ["run", "--env", "host", "--workload", "syscall", "--quick", "--results", str(results)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    first = proc.stderr.readline()
    assert first.startswith("measuring the harness's own cost"), first + proc.communicate()[1]
    assert [p.name for p in results.iterdir()]  # the run's directory, made
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert [line for line in err.splitlines() if line.strip()] == ["isobench: interrupted (SIGINT)"]
    assert list(results.iterdir()) == []
