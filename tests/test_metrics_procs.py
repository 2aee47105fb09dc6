from __future__ import annotations

import os
import subprocess
import sys
import time

import psutil
import pytest

from bench.metrics import procs
from bench.metrics.procs import PeakSampler, find_processes, tree_metrics


@pytest.fixture
def child_tree():
    """`sh` with two `sleep` children; killed after the test."""
    p = subprocess.Popen(["sh", "-c", "sleep 2 & sleep 2; wait"])
    deadline = time.monotonic() + 2
    while len(psutil.Process(p.pid).children()) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    yield p
    for c in psutil.Process(p.pid).children(recursive=True) if p.poll() is None else []:
        c.kill()
    p.kill()
    p.wait()


def test_tree_metrics_counts_descendants(child_tree):
    m = tree_metrics([child_tree.pid])
    assert m["nprocs"] >= 3
    assert m["rss_mib"] > 0
    assert m["pss_mib"] > 0  # we are the owner: readable
    assert m["pss_mib"] <= m["rss_mib"]
    assert m["num_ctx_switches_vol"] >= 1
    assert set(m) == {
        "cpu_user_ms",
        "cpu_system_ms",
        "rss_mib",
        "pss_mib",
        "num_ctx_switches_vol",
        "num_ctx_switches_invol",
        "nprocs",
    }


def test_tree_metrics_counts_each_process_once(child_tree):
    kids = [c.pid for c in psutil.Process(child_tree.pid).children()]
    both = tree_metrics([child_tree.pid, *kids])
    assert both["nprocs"] == tree_metrics([child_tree.pid])["nprocs"]


def test_tree_metrics_vanished_pid_is_skipped():
    p = subprocess.Popen(["true"])
    p.wait()
    m = tree_metrics([p.pid])
    assert m["nprocs"] == 0 and m["rss_mib"] == 0 and "pss_mib" not in m


def test_tree_metrics_measures_cpu():
    code = (
        "import sys, time\nt = time.process_time()\n"
        "while time.process_time() - t < 0.3: pass\nsys.stdin.read()"
    )
    p = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 5

        def cpu_ms():  # the loop's clock reads are syscalls: much of it is system time
            m = tree_metrics([p.pid])
            return m["cpu_user_ms"] + m["cpu_system_ms"]

        while cpu_ms() < 250 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert 250 <= cpu_ms() < 2000
    finally:
        p.communicate(b"")


def test_find_processes(child_tree):
    found = find_processes(lambda p: p.ppid() == child_tree.pid and p.name() == "sleep")
    assert len(found) == 2
    assert find_processes(lambda p: False) == []


def test_find_processes_predicate_races_are_skipped():
    def racy(p):
        raise psutil.NoSuchProcess(p.pid)

    assert find_processes(racy) == []


def test_peak_sampler_sees_allocation():
    code = (
        "import time\nb = bytearray(80 * 2**20)\n"
        "for i in range(0, len(b), 4096): b[i] = 1\ntime.sleep(0.5)"
    )
    p = subprocess.Popen([sys.executable, "-c", code])
    sampler = PeakSampler([p.pid], interval=0.02).start()
    p.wait()
    got = sampler.stop()
    assert got["rss_peak_mib"] >= 80
    assert got["pss_peak_mib"] >= 70
    assert got["samples"] >= 2  # at the start and at stop() at least
    assert 0 <= got["sampler_cpu_ms"] < 500


def test_peak_sampler_keeps_its_cpu_to_its_share_of_a_cpu(monkeypatch):
    """A sample that costs 10 ms of CPU (a page-table walk over a large tree) is
    followed by a wait of 10 ms / cpu_share, not by the interval: over 1 s of a 20 ms
    interval, 0.5% of a CPU allows the first sample and at most one more."""

    def costly(self):
        end = time.thread_time() + 0.01
        while time.thread_time() < end:
            pass
        self._samples += 1

    monkeypatch.setattr(PeakSampler, "_sample", costly)
    sampler = PeakSampler([os.getpid()], interval=0.02).start()
    time.sleep(1.0)
    got = sampler.stop()
    assert 2 <= got["samples"] <= 3, got  # + the one at stop()
    assert got["sampler_cpu_ms"] / 1000 < 0.05


def test_peak_sampler_rss_only():
    got = PeakSampler([1 << 22], pss=False).start().stop()  # no such pid: empty tree
    assert got["rss_peak_mib"] == 0 and "pss_peak_mib" not in got and got["samples"] >= 1


def test_tree_metrics_without_proc_children_files(child_tree, monkeypatch):
    # kernels without CONFIG_PROC_CHILDREN: falls back to psutil's full /proc scan
    monkeypatch.setattr(procs, "_child_pids", lambda pid: None)
    assert tree_metrics([child_tree.pid])["nprocs"] >= 3
