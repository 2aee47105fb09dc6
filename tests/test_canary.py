"""The host canary: the diagnosis on the recorded noisy series (tests/data/noise) and on
synthetic ones (steady, square-wave phases, jitter only, phases below the threshold,
steal), and the live client on this host (2 s at most at a time): the series it returns,
its pinning, its children stopped after a run, an exception and Ctrl-C; stand-in probes
(shell scripts) for a probe that dies, answers an error line or never answers."""

from __future__ import annotations

import json
import os
import signal
import stat
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

from bench import canary, interrupt
from bench.bundle import Bundle
from bench.canary_diagnosis import (
    JITTER_NOISY,
    PHASE_SD,
    Series,
    diagnose,
    load,
    merge_short,
    running_median,
    two_levels,
)

RECORDED = Path(__file__).parent / "data" / "noise" / "bursts-30s.txt"
needs_cc = pytest.mark.requires("compiler")


def synthetic(null_log, compute_log=None, spacing=0.01, steal=None, load=None, seed=1):
    """A series of len(null_log) pairs one `spacing` apart around 180 ns and 300M ops/s,
    with the given log deviations (compute: 1 % white jitter unless given)."""
    n = len(null_log)
    rng = np.random.default_rng(seed)
    if compute_log is None:
        compute_log = rng.normal(0, 0.01, n)
    t = np.arange(n) * spacing
    null = 180 * np.exp(np.asarray(null_log))
    compute = 3e8 * np.exp(np.asarray(compute_log))
    return Series(tuple(t), tuple(null), tuple(compute), 5.0, steal, load)


def square(n: int, phase_s: float, depth: float, jitter: float, spacing=0.01, seed=2):
    """Log deviations: phases of phase_s alternating 0 and -depth, plus white jitter."""
    t = np.arange(n) * spacing
    slow = np.where((t // phase_s) % 2 == 0, 0.0, -depth)
    return slow + np.random.default_rng(seed).normal(0, jitter, n)


# -- the diagnosis ---------------------------------------------------------------------------
def test_recorded_noisy_series():
    d = diagnose(load(RECORDED))
    null = d["null_ns"]
    assert d["pairs"] == 2927 and d["seconds"] == pytest.approx(30.0, abs=0.1)
    assert null["p5"] == pytest.approx(483, abs=2) and null["p95"] == pytest.approx(817, abs=2)
    assert null["p50"] == pytest.approx(703, abs=1)
    assert null["jitter"] == pytest.approx(0.137, abs=0.001)  # issue 22's paired SD
    assert null["adjacent_correlation"] == pytest.approx(0.59, abs=0.01)
    assert null["slow_sd"] > 5 * PHASE_SD
    assert null["phases"] and 2.0 <= null["phase_s"] <= 6.0 and null["phase_changes"] >= 5
    assert d["verdict"] == "noisy"
    s = d["sentence"]
    assert s.startswith("the host's speed moved between 483 and 817 ns per getppid (p5–p95")
    assert "in phases of ~4 s" in s and "by 14% from one 5 ms burst" in s
    assert "(likely a busy SMT sibling or CPU steal on the VM's host)" in s
    assert "interleaved bursts pair measurements made within the same phase" in s
    json.dumps(d)


@pytest.mark.parametrize("part", [slice(0, 1000), slice(1000, 2000), slice(1927, 2927)])
def test_recorded_series_every_10_s_is_noisy_in_phases_of_seconds(part):
    """doctor's check lasts 10 s: every 10 s of the recording tells the same story."""
    s = load(RECORDED)
    d = diagnose(Series(s.t[part], s.null_ns[part], s.compute_ops[part], 5.0))
    assert d["verdict"] == "noisy" and d["null_ns"]["phases"]
    assert 1.5 <= d["null_ns"]["phase_s"] <= 5.0


def test_steady_series_is_quiet():
    d = diagnose(synthetic(np.random.default_rng(3).normal(0, 0.02, 1000)))
    null = d["null_ns"]
    assert d["verdict"] == "quiet" and not null["phases"] and null["phase_s"] is None
    assert null["jitter"] == pytest.approx(0.02, rel=0.1) and null["slow_sd"] < PHASE_SD
    assert 172 < null["p5"] < null["p50"] < null["p95"] < 188
    s = d["sentence"]
    assert s.startswith("the host's speed held steady: getppid 1")
    assert s.endswith("ns, compute 295M–305M ops/s (p5–p95), no phases")


@pytest.mark.parametrize("offset", [0.0, 0.7, 1.5])
@pytest.mark.parametrize("jitter", [0.02, 0.137])
def test_square_wave_phases_of_2_s(offset, jitter):
    log = square(1000 + round(offset * 100), 2.0, depth=0.3, jitter=jitter)[round(offset * 100) :]
    d = diagnose(synthetic(log))
    null = d["null_ns"]
    assert null["phases"] and null["phase_s"] == pytest.approx(2.0, abs=0.3)
    assert null["phase_changes"] in (4, 5)
    assert d["verdict"] == "noisy" and "in phases of ~2." in d["sentence"]


def test_phase_length_follows_the_phases_and_the_spacing():
    for phase_s, spacing in ((0.8, 0.01), (3.0, 0.01), (2.0, 0.04)):
        n = round(12 / spacing)
        d = diagnose(synthetic(square(n, phase_s, 0.2, 0.05, spacing), spacing=spacing))
        assert d["null_ns"]["phase_s"] == pytest.approx(phase_s, rel=0.15), (phase_s, spacing)


def test_jitter_without_phases_is_noisy_without_phases():
    d = diagnose(synthetic(np.random.default_rng(4).normal(0, 0.137, 1000)))
    null = d["null_ns"]
    assert not null["phases"] and null["jitter"] >= JITTER_NOISY  # no phases out of pure noise
    assert d["verdict"] == "noisy"
    assert d["sentence"].startswith("the host's speed jumped by 14% from one 5 ms burst")
    assert "with no phases" in d["sentence"] and "phases of" not in d["sentence"]


def test_phases_below_the_threshold_are_quiet():
    """1 % phases under 0.5 % jitter are real (adjacent bursts correlate) but too small to
    matter; 5 % phases are not."""
    small = diagnose(synthetic(square(1000, 2.0, 0.01, 0.005)))
    assert small["null_ns"]["adjacent_correlation"] > 0.3
    assert small["null_ns"]["slow_sd"] < PHASE_SD and small["verdict"] == "quiet"
    big = diagnose(synthetic(square(1000, 2.0, 0.05, 0.005)))
    assert big["null_ns"]["phases"] and big["verdict"] == "noisy"


def test_compute_phases_alone_make_it_noisy():
    rng = np.random.default_rng(5)
    d = diagnose(synthetic(rng.normal(0, 0.01, 1000), square(1000, 2.0, 0.4, 0.02)))
    assert not d["null_ns"]["phases"] and d["compute_ops_per_s"]["phases"]
    assert d["verdict"] == "noisy" and "in phases of ~2." in d["sentence"]


def test_steal_and_load_are_folded_into_the_sentence():
    steady = np.random.default_rng(6).normal(0, 0.02, 500)
    assert diagnose(synthetic(steady, steal=0.004))["sentence"].endswith("; CPU steal 0.4%")
    assert diagnose(synthetic(steady, steal=0.0004))["sentence"].endswith("; CPU steal 0.04%")
    assert "steal" not in diagnose(synthetic(steady, steal=0.0))["sentence"]
    noisy = square(1000, 2.0, 0.3, 0.1)
    said = diagnose(synthetic(noisy, steal=0.031))["sentence"]
    assert "(the VM's host stole 3.1% of CPU time)" in said
    assert "no CPU steal was reported" in diagnose(synthetic(noisy, steal=0.0))["sentence"]
    said = diagnose(synthetic(noisy, steal=0.004))["sentence"]
    assert "(likely a busy SMT sibling or CPU steal on the VM's host; CPU steal 0.4%)" in said
    said = diagnose(synthetic(noisy, steal=0.0, load=1.74))["sentence"]
    assert "(other work on this machine: a load of 1.7 per CPU before the check; no CPU" in said
    said = diagnose(synthetic(noisy, steal=0.0, load=0.3))["sentence"]
    assert "(likely a busy SMT sibling" in said
    quiet = diagnose(synthetic(steady, steal=0.0, load=1.74))
    assert quiet["verdict"] == "quiet" and quiet["load_per_cpu"] == 1.74
    assert diagnose(synthetic(noisy, steal=0.031))["verdict"] == "noisy"


def test_one_phase_change_is_a_lower_bound():
    log = np.r_[np.zeros(300), np.full(700, -0.3)] + np.random.default_rng(7).normal(0, 0.02, 1000)
    d = diagnose(synthetic(log))
    assert d["null_ns"]["phase_changes"] == 1 and "in phases of ≥ " in d["sentence"]


def test_bad_series_are_refused():
    with pytest.raises(ValueError, match="too few"):
        diagnose(synthetic(np.zeros(10)))
    s = synthetic(np.zeros(100))
    with pytest.raises(ValueError, match="<= 0"):
        diagnose(Series(s.t, (0.0,) + s.null_ns[1:], s.compute_ops, 5.0))
    with pytest.raises(ValueError, match="differ in length"):
        diagnose(Series(s.t, s.null_ns[:-1], s.compute_ops, 5.0))


def test_helpers():
    x = np.array([1.0, 9.0, 2.0, 3.0, 8.0, 4.0])
    assert running_median(x, 3).tolist() == [1.0, 2.0, 3.0, 3.0, 4.0, 4.0]
    assert two_levels(np.r_[np.zeros(50), np.ones(50)]) == (0.0, 1.0)
    # a short run is merged with both neighbours; runs long enough stay
    assert merge_short([2.0, 0.1, 3.0, 1.0], 0.5) == [5.1, 1.0]
    assert merge_short([0.1, 3.0], 0.5) == [3.1]
    assert merge_short([4.0], 0.5) == [4.0]


# -- the live client -------------------------------------------------------------------------
# the two probes and the syscall probe's pipe_pingpong partner, forked as it starts (it
# prepares its ops before its first command): pinned, it is pinned from birth too
PROCESSES = 3


def probe_children() -> list[psutil.Process]:
    return [
        p
        for p in psutil.Process().children(recursive=True)
        if p.name() in ("syscall", "cpu", "sh", "sleep")
    ]


class Spy:
    """Wraps interrupt.check: notes the probes (and their CPUs) while the run measures,
    and raises `error` at call number `at`."""

    def __init__(self, at: int | None = None, error: BaseException | None = None):
        self.calls, self.at, self.error = 0, at, error
        self.seen: dict[int, list[int]] = {}
        self.real = interrupt.check

    def __call__(self):
        self.calls += 1
        if self.calls == 2:
            self.seen = {p.pid: p.cpu_affinity() for p in probe_children()}
        if self.calls == self.at:
            raise self.error
        self.real()


def gone(pids) -> bool:
    return not any(psutil.pid_exists(p) for p in pids) and not probe_children()


@needs_cc
def test_record_live_pinned(bundle, monkeypatch):
    cpu = max(os.sched_getaffinity(0))
    spy = Spy()
    monkeypatch.setattr(canary.interrupt, "check", spy)
    s = canary.record(bundle, 2.0, burst_ms=5, cpus={cpu})
    expected = 2.0 / 0.010  # a pair of 5 ms bursts every 10 ms at best
    assert 0.3 * expected <= len(s.t) <= expected + 1, len(s.t)
    assert len(s.t) == len(s.null_ns) == len(s.compute_ops) == spy.calls
    assert s.t[0] == pytest.approx(0, abs=0.05) and s.t[-1] < 2.0 and list(s.t) == sorted(s.t)
    assert all(10 < v < 1e6 for v in s.null_ns) and all(1e6 < v < 1e11 for v in s.compute_ops)
    assert s.burst_ms == 5.0 and s.steal is not None and 0 <= s.steal <= 1
    assert s.load_per_cpu is not None and s.load_per_cpu >= 0
    assert len(spy.seen) == PROCESSES and all(cpus == [cpu] for cpus in spy.seen.values())
    assert gone(spy.seen)


@needs_cc
def test_check_live(bundle):
    d = canary.check(bundle, seconds=1.0)
    assert d["error"] is None and d["verdict"] in ("quiet", "noisy") and d["cpus"] is None
    assert d["pairs"] >= 20 and d["sentence"].startswith("the host's speed ")
    json.loads(json.dumps(d))
    assert not probe_children()


@needs_cc
def test_an_exception_mid_run_stops_the_probes(bundle, monkeypatch):
    spy = Spy(at=10, error=RuntimeError("boom"))
    monkeypatch.setattr(canary.interrupt, "check", spy)
    with pytest.raises(RuntimeError, match="boom"):
        canary.record(bundle, 3.0)
    assert len(spy.seen) == PROCESSES and gone(spy.seen)


@needs_cc
def test_ctrl_c_mid_run_stops_the_probes(bundle, monkeypatch):
    spy = Spy()
    monkeypatch.setattr(canary.interrupt, "check", spy)
    old = interrupt.install()
    timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT))
    start = time.monotonic()
    try:
        timer.start()
        with pytest.raises(interrupt.Interrupted):
            canary.record(bundle, 3.0)
    finally:
        timer.cancel()
        interrupt.restore(old)
    assert time.monotonic() - start < 2.5
    assert len(spy.seen) == PROCESSES and gone(spy.seen)


# -- stand-in probes ----------------------------------------------------------------------
GOOD_CPU = """#!/bin/sh
echo ready
while read -r line; do
  [ "$line" = quit ] && exit 0
  echo '{"probe":"cpu","op":"compute","metrics":{"ops_per_s":3e8},"burst":1}'
done
"""
DIES = "#!/bin/sh\necho ready\nread -r line\necho 'syscall: cannot set up null' >&2\nexit 3\n"
ERROR_LINE = """#!/bin/sh
echo ready
while read -r line; do
  [ "$line" = quit ] && exit 0
  echo '{"probe":"syscall","op":"null","error":"getppid: Operation not permitted","burst":1}'
done
"""
SILENT = "#!/bin/sh\nexec sleep 60\n"  # never ready, ignores quit
GARBAGE = "#!/bin/sh\necho ready\nread -r line\necho 'hello'\nexec sleep 60\n"
NO_FIGURE = """#!/bin/sh
echo ready
read -r line
echo '{"probe":"syscall","op":"null","metrics":[],"burst":1}'
exec sleep 60
"""


def standin(tmp_path: Path, syscall: str) -> Bundle:
    probes = {}
    for name, text in (("syscall", syscall), ("cpu", GOOD_CPU)):
        path = tmp_path / name
        path.write_text(text)
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
        probes[name] = path
    return Bundle(tmp_path, "standin", probes, {}, None, "none")


@pytest.mark.parametrize(
    ("script", "message"),
    [
        (DIES, r"^the syscall probe ended \(status 3\): syscall: cannot set up null$"),
        (ERROR_LINE, r"^the syscall probe could not run null: getppid: Operation not permitted$"),
        (SILENT, r"^the syscall probe gave no answer in 0.3 s$"),
        (GARBAGE, r"^the syscall probe said 'hello'$"),
        (NO_FIGURE, r"^the syscall probe's null burst has no ns_per_op: \{"),
    ],
)
def test_a_failing_probe_is_one_line_and_stopped(tmp_path, monkeypatch, script, message):
    monkeypatch.setattr(canary, "REPLY_S", 0.3)
    monkeypatch.setattr(canary, "QUIT_S", 0.3)
    with pytest.raises(canary.CanaryError, match=message):
        canary.record(standin(tmp_path, script), 1.0)
    assert not probe_children()
    d = canary.check(standin(tmp_path, script), seconds=1.0)
    assert d["verdict"] == "unknown" and d["sentence"].startswith("the noise check could not run")
    assert "\n" not in d["error"] and not probe_children()
    json.dumps(d)


def test_bad_arguments(tmp_path):
    b = standin(tmp_path, GOOD_CPU)
    with pytest.raises(canary.CanaryError, match="are not among"):
        canary.record(b, 1.0, cpus={max(os.sched_getaffinity(0)) + 64})
    with pytest.raises(canary.CanaryError, match="seconds > 0"):
        canary.record(b, 0)
    missing = Bundle(tmp_path, "standin", {"syscall": b.probes["syscall"]}, {}, None, "none")
    with pytest.raises(canary.CanaryError, match="has no cpu probe"):
        canary.record(missing, 1.0)
    assert not probe_children()
