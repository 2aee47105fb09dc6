"""noise: /proc/stat parsing on recorded files, warnings on synthetic snapshots.

proc/stat.before|after: recorded on the 2-CPU Debian 12 VM around a 1 s busy loop.
proc/stat.steal.*: a hand-made pair (cpu lines only) with 300 of 1700 ticks stolen.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.metrics import noise
from bench.metrics.noise import parse_proc_stat, snapshot, steal_fraction, warnings

DATA = Path(__file__).parent / "data/proc"


def stat(name: str) -> dict[str, int]:
    return parse_proc_stat((DATA / name).read_text())


def test_parse_proc_stat_recorded():
    assert stat("stat.before") == {
        "user": 18981,
        "nice": 0,
        "system": 5525,
        "idle": 123007,
        "iowait": 624,
        "irq": 0,
        "softirq": 100,
        "steal": 51,
    }


def test_parse_proc_stat_old_kernel_and_empty():
    assert parse_proc_stat("cpu  1 2 3 4\ncpu0 1 2 3 4\n") == {
        "user": 1,
        "nice": 2,
        "system": 3,
        "idle": 4,
        "iowait": 0,
        "irq": 0,
        "softirq": 0,
        "steal": 0,
    }
    assert parse_proc_stat("intr 0\n") == {}


def test_steal_fraction_recorded_no_steal():
    assert steal_fraction(stat("stat.before"), stat("stat.after")) == 0.0


def test_steal_fraction_known_answer():
    got = steal_fraction(stat("stat.steal.before"), stat("stat.steal.after"))
    assert got == pytest.approx(300 / 1700)


def test_steal_fraction_no_ticks():
    s = stat("stat.before")
    assert steal_fraction(s, s) == 0.0
    assert steal_fraction({}, {}) == 0.0


QUIET = {
    "loadavg": (0.2, 0.1, 0.1),
    "cpu_count": 2,
    "governor": "performance",
    "turbo": False,
    "smt": False,
    "swap_used_mib": 0.0,
    "busy_processes": [],
}


def test_quiet_machine_has_no_warnings():
    assert warnings(QUIET) == []
    assert warnings(QUIET, steal=noise.STEAL_WARN) == []
    assert warnings({}) == []  # nothing known: nothing claimed


def test_each_warning_at_its_threshold():
    cases = [
        (
            {"loadavg": (3.1, 1.0, 0.5)},
            "load average 3.1 on 2 CPUs: other work may perturb results",
        ),
        (
            {"governor": "powersave"},
            "frequency governor is 'powersave': set 'performance' for stable numbers",
        ),
        ({"smt": True}, "SMT is on: sibling threads share cores"),
        ({"turbo": True}, "turbo boost is on: clock speed follows temperature and load"),
        ({"swap_used_mib": 512.0}, "swap in use: 512 MiB"),
        (
            {"busy_processes": [{"pid": 123, "name": "stress", "cpu_percent": 95.0}]},
            "busy process: pid 123 (stress) at 95% CPU",
        ),
    ]
    for change, expected in cases:
        assert warnings({**QUIET, **change}) == [expected]
    assert warnings(QUIET, steal=0.042) == [
        "CPU steal 4.2% during the run: this is a VM whose host is busy"
    ]
    # just under the thresholds
    assert (
        warnings(
            {
                **QUIET,
                "loadavg": (noise.LOAD_PER_CPU_WARN * 2, 0, 0),
                "swap_used_mib": noise.SWAP_WARN_MIB,
            }
        )
        == []
    )


def test_snapshot_live_shape():
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.1)
        snap = snapshot()
    finally:
        busy.kill()
        busy.wait()
    assert set(snap) == {
        "t",
        "loadavg",
        "proc_stat",
        "governor",
        "turbo",
        "smt",
        "swap_used_mib",
        "cpu_count",
        "busy_processes",
        "mitigations",
    }
    assert snap["cpu_count"] == os.cpu_count()
    assert len(snap["loadavg"]) == 3
    assert snap["proc_stat"]["user"] > 0
    assert busy.pid not in [b["pid"] for b in snap["busy_processes"]]  # our child: excluded
    assert abs(snap["t"] - time.time()) < 5
    for value in snap["mitigations"].values():
        assert isinstance(value, str)
    assert isinstance(warnings(snap), list)
