"""Harness cost: pure arithmetic on recorded launches, and a real measurement."""

from __future__ import annotations

import math
import time

import pytest

from bench import harness


def test_components_are_paired_differences():
    host = {"ready_ms": 12.0, "exit_ms": 12.5, "cleaned_ms": 15.0, "wall_ms": 20.0}
    bare = {"ready_ms": 2.0, "exit_ms": 2.2}
    c = harness.components(host, bare)
    assert c == pytest.approx(
        {"spawn": 10.0, "collection": 0.3, "cleanup": 2.5, "setup": 5.0, "total": 17.8}
    )


def test_report_summarises_each_component_with_a_ci():
    pairs = [
        (
            {
                "ready_ms": 10 + i % 3,
                "exit_ms": 11 + i % 3,
                "cleaned_ms": 14 + i % 3,
                "wall_ms": 18 + i % 3,
                "sampler_cpu_ms": 1.0,
            },
            {"ready_ms": 1.0, "exit_ms": 1.5},
        )
        for i in range(12)
    ]
    cpu = [{"exit_ms": 200.0, "sampler_cpu_ms": 4.0}] * 3
    r = harness.report(pairs, cpu, seconds=1.0)
    assert r["n"] == 12
    for name in harness.COMPONENTS:
        s = r["overhead_ms"][name]
        assert s["ci_low"] <= s["median"] <= s["ci_high"]
    assert r["overhead_ms"]["cleanup"]["median"] == pytest.approx(3.0)
    assert r["sampler"]["cpu_fraction_during_cpu_probe"]["median"] == pytest.approx(0.02)
    assert "spawn" in harness.describe(r)


@pytest.mark.requires("host")
def test_bare_launch_of_the_startup_probe(bundle):
    t = harness.bare_launch(str(bundle.probes["startup"]))
    assert 0 < t["ready_ms"] <= t["exit_ms"] < 1000


@pytest.mark.requires("host")
def test_measure_is_fast_and_complete(bundle):
    t0 = time.monotonic()
    h = harness.measure(bundle, n=15)
    assert time.monotonic() - t0 < 6  # ~1.5 s idle; the lead calls it once per run
    assert h["n"] == 15
    for name in harness.COMPONENTS:
        s = h["overhead_ms"][name]
        assert s["median"] is not None and math.isfinite(s["median"])
        assert s["ci_low"] <= s["median"] <= s["ci_high"]
    # The host env does strictly more than posix_spawn: its total cost is positive.
    assert h["overhead_ms"]["total"]["median"] > 0
    smp = h["sampler"]
    assert smp["cpu_ms_per_startup_launch"]["median"] > 0
    assert 0 < smp["cpu_fraction_during_cpu_probe"]["median"] < 0.5
    assert h["seconds"] < 6
