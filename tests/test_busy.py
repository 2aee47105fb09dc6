"""Idle-class spinners: one per CPU while a run measures, none left after it, none left
after a kill -9 of the process that started them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psutil

from bench import busy


def _spinners() -> list[psutil.Process]:
    return [
        p
        for p in psutil.process_iter(["cmdline"])
        if busy.SPIN in " ".join(p.info["cmdline"] or [])
    ]


def test_one_idle_class_spinner_per_cpu_and_none_after():
    cpus = sorted(os.sched_getaffinity(0))
    with busy.busy_cpus():
        time.sleep(0.2)
        kids = psutil.Process().children()
        assert len(kids) == len(cpus)
        assert sorted(c for k in kids for c in k.cpu_affinity()) == cpus
        assert all(os.sched_getscheduler(k.pid) == os.SCHED_IDLE for k in kids)
    assert not any(k.is_running() and k.status() != psutil.STATUS_ZOMBIE for k in kids)
    with busy.busy_cpus(enabled=False):
        assert psutil.Process().children() == []


def test_spinners_die_with_a_killed_parent():
    code = "from bench import busy; import time\nwith busy.busy_cpus(): time.sleep(60)"
    parent = subprocess.Popen([sys.executable, "-c", code])
    deadline = time.monotonic() + 30
    while len(psutil.Process(parent.pid).children()) < len(os.sched_getaffinity(0)):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    kids = psutil.Process(parent.pid).children()
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    gone, alive = psutil.wait_procs(kids, timeout=10)
    assert not alive and not _spinners()
