"""The history's pure logic on edited numbers: change points found and confirmed
(Otava on the per-run points, isobench's test on the rounds), their class, the gate,
which runs form a series, and what changed between runs."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from bench.history import build, changes, runs, versions
from bench.history.points import Point

pytest.importorskip("otava.analysis", reason="the history extra (apache-otava) is not installed")

RNG = np.random.default_rng(7)


def series(levels: list[float], *, run_sd=0.01, round_sd=0.02, rounds=4) -> list[Point]:
    """One point per run at these levels (ratios), run-to-run spread `run_sd` and
    `rounds` per-round log values around the run's level with spread `round_sd`."""
    out = []
    for lv in levels:
        mid = np.log(lv) + RNG.normal(0, run_sd)
        r = mid + RNG.normal(0, round_sd, rounds)
        half = 2 * round_sd
        out.append(Point(float(np.exp(mid)), np.exp(mid - half), np.exp(mid + half), r))
    return out


def test_a_step_is_found_at_the_run_where_it_happened():
    (c,) = changes.find(series([1.10] * 5 + [2.0] * 5))
    assert c["index"] == 5
    assert c["magnitude"] == pytest.approx(0.82, abs=0.05)
    assert c["p_value"] < changes.MAX_PVALUE and c["p_rounds"] < 0.05
    before, after = c["level_before"], c["level_after"]
    assert before["runs"] == 5 and after["runs"] == 5
    assert before["ci_low"] < before["value"] < before["ci_high"] < after["ci_low"]


def test_a_flat_series_has_no_change_point():
    for _ in range(5):
        assert changes.find(series([1.2] * 12)) == []


def test_a_change_two_runs_old_is_found_and_a_level_of_one_run_keeps_its_ci():
    pts = series([1.0] * 5 + [0.5] * 2)
    (c,) = changes.find(pts)
    assert c["index"] == 5
    one = changes.level(pts[-1:])
    assert (one.value, one.low, one.high, one.runs) == (pts[-1].value, pts[-1].low, pts[-1].high, 1)


def test_a_candidate_the_rounds_cannot_tell_apart_is_dropped():
    """Per-run points that step by 8% with almost no run-to-run spread convince Otava's
    t-test, but each run's own rounds spread by 50%: pooled, they do not show it."""
    steady = series([1.0] * 5 + [1.08] * 5, run_sd=0.001, round_sd=0.5, rounds=3)
    assert changes.find(steady) == []


def test_a_step_below_the_minimum_magnitude_is_not_a_change_point():
    assert changes.find(series([1.0] * 6 + [1.01] * 6, run_sd=0.0005, round_sd=0.001)) == []


def test_missing_runs_of_a_figure_are_skipped_not_counted():
    pts = series([1.0] * 5 + [2.0] * 5)
    pts[2] = None
    (c,) = changes.find(pts)
    assert c["index"] == 5


def _figure(ratio_cps, base_cps, n):
    fake_runs = [runs.Run(Path(f"/r{i}"), {"run_id": f"r{i}"}) for i in range(n)]
    cps = build._classified(ratio_cps, base_cps, fake_runs, [[] for _ in range(n)])
    return {
        "env": "docker",
        "workload": "cpu",
        "op": "compute",
        "metric": "ops_per_s",
        "change_points": cps,
    }


def _cp(index, magnitude=-0.5):
    return {"index": index, "magnitude": magnitude, "level_before": {}, "level_after": {}}


def test_a_ratio_change_with_a_steady_baseline_is_an_isolation_cost_a_baseline_one_the_hosts():
    f = _figure([_cp(5)], [_cp(7, 0.3)], 10)
    assert [(c["series"], c["class"]) for c in f["change_points"]] == [
        ("ratio", build.COST),
        ("baseline", build.HOST),
    ]
    both = _figure([_cp(5)], [_cp(5)], 10)["change_points"]
    assert [c["class"] for c in both] == [build.COST_AND_HOST, build.HOST_AND_COST]


@pytest.mark.parametrize(
    ("n", "index", "magnitude", "failed"),
    [
        (7, 5, -0.5, True),  # the change at run 6 lies in the newest 3 of 7
        (10, 5, -0.5, False),  # ... not in the newest 3 of 10
        (7, 5, -0.04, False),  # within the 5% threshold
    ],
)
def test_the_gate_looks_at_the_newest_window_of_runs(n, index, magnitude, failed):
    h = {"runs": [{}] * n, "figures": [_figure([_cp(index, magnitude)], [], n)]}
    assert build.gate(h, threshold=5.0, window=3)["failed"] is failed


def test_the_gate_does_not_fail_on_a_host_change_alone():
    h = {"runs": [{}] * 7, "figures": [_figure([], [_cp(6, 0.4)], 7)]}
    assert build.gate(h, threshold=5.0, window=3)["failed"] is False


def test_without_otava_the_message_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "otava.analysis", None)
    with pytest.raises(changes.MissingExtra, match=r"pip install 'isobench\[history\]'"):
        changes.detector()


# -- which runs form a series ---------------------------------------------------------------
HOST = {"cpu_model": "EPYC", "cpu_count": 2, "memory_gib": 23.5, "kernel": "6.1"}


def write_run(root: Path, name: str, created: float, *, version=2, finished=True, **host):
    d = root / name
    d.mkdir(parents=True)
    m = {
        "schema_version": version,
        "run_id": name,
        "created": created,
        "host": HOST | host,
        "status": "complete" if finished else "running",
    }
    if finished:
        m["finished"] = created + 10
    (d / "manifest.json").write_text(json.dumps(m))
    (d / "samples.jsonl").write_text("")
    return d


def test_runs_of_another_host_are_left_out_with_the_reason_the_kernel_is_no_reason(tmp_path):
    write_run(tmp_path, "a", 1, version=1)  # an old schema, migrated
    write_run(tmp_path, "b", 2, kernel="6.2")
    write_run(tmp_path, "c", 3, cpu_count=4)
    write_run(tmp_path, "d", 4, finished=False)
    with open(tmp_path / "d" / "samples.jsonl", "w") as f:
        f.write('{"round": 1}\n{"round": 2, "va')
    series, left_out = runs.load([tmp_path])
    assert [r.run_id for r in series] == ["a", "b", "d"]
    assert left_out == [{"run": "c", "reason": "another host: cpu_count 4 (series: 2)"}]
    assert series[0].manifest["schema_version"] == 2
    assert series[-1].flags == ["unfinished (running)", "torn samples (1 line(s) unreadable)"]


def test_fewer_than_two_runs_is_one_line(tmp_path):
    write_run(tmp_path, "a", 1)
    with pytest.raises(runs.HistoryError, match="1 run\\(s\\) of one host: a history needs"):
        runs.load([tmp_path])
    with pytest.raises(runs.HistoryError, match="no such directory"):
        runs.load([tmp_path / "nope"])


def test_what_changed_between_runs_lists_a_new_bundle_first():
    a = {
        "host": {"kernel": "6.1", "isobench": "0.1"},
        "bundle": {"hash": "aa"},
        "environments": {"docker": {"versions": {"runc": "1.1"}, "options": {"cpus": None}}},
    }
    b = json.loads(json.dumps(a))
    b["bundle"]["hash"] = "bb"
    b["environments"]["docker"]["versions"]["runc"] = "1.2"
    b["environments"]["docker"]["options"]["cpus"] = 0.5
    b["host"]["kernel"] = "6.2"
    diff = versions.changes([versions.facts(a), versions.facts(b)])
    assert diff[0] == []
    assert [d["what"] for d in diff[1]] == [
        "probe bundle",
        "docker: cpus",
        "docker: runc",
        "kernel",
    ]
    assert diff[1][0] == {"what": "probe bundle", "before": "aa", "after": "bb"}
