"""The runner's planning on a fake environment and a fake clock (no root, no engine):
warm-up per environment, one instance per round where a kind asks for it, the emulated
round cap, the wall-clock budget, and extra rounds only where figures are still wide."""

from __future__ import annotations

import pytest

from bench import runner
from bench.envs.base import Launch
from bench.matrix import QUICK, EnvSpec
from bench.schedule import Cell
from tests.fakes import CLOCK, LOG, FakeEnv, catalog_for_tests, make_run, patch_fakes, stand_ins


@pytest.fixture
def run(tmp_path, monkeypatch):
    """run(envs, **matrix) -> (manifest, records) of a finished fake run."""
    patch_fakes(monkeypatch)
    go = make_run(tmp_path, catalog_for_tests())

    def run_(*a, **kw):
        manifest, records, _ = go(*a, **kw)
        return manifest, records

    return run_


def _rounds(records, env):
    return sorted({r["round"] for r in records if r["env"] == env and r["round"] >= 1})


def test_warm_up_is_one_launch_per_environment(run):
    _, records = run(["fake:label=a", "fake:label=b"], rounds=3, max_rounds=3)
    warm = {(r["env"], r["workload"]) for r in records if r["round"] == 0}
    assert len(warm) == 2 and {e for e, _ in warm} == {"a", "b"}


def test_a_kind_that_asks_runs_a_whole_round_in_one_instance(run):
    _, records = run(["fake:label=host", "batch:label=vm"], rounds=3, max_rounds=3, warmup=0)
    vm_calls = [w for label, w in FakeEnv.calls if len(w) > 1]
    assert len(vm_calls) == 3 and all(sorted(w) == ["cpu", "syscall"] for w in vm_calls)
    assert _rounds(records, "vm") == [1, 2, 3]


def test_emulated_guests_get_their_own_warm_up_count(run):
    _, records = run(
        ["fake:label=host", "batch:label=vm"], rounds=2, max_rounds=2, emulated_warmup=0
    )
    assert {r["env"] for r in records if r["round"] == 0} == {"host"}
    assert _rounds(records, "vm") == [1, 2]
    _, records = run(["fake:label=host", "batch:label=vm"], rounds=2, max_rounds=2)
    assert {r["env"] for r in records if r["round"] == 0} == {"host", "vm"}  # as warmup


def test_emulated_guests_stop_at_their_round_cap(run):
    m, records = run(
        ["fake:label=host", "batch:label=vm"], rounds=6, max_rounds=6, emulated_rounds=2
    )
    assert _rounds(records, "vm") == [1, 2] and _rounds(records, "host") == list(range(1, 7))


def test_the_budget_is_the_runs_wall_clock(run):
    # 2 envs × 2 workloads × 1 s a launch: a round takes 4 s; 2 s of warm-up.
    m, records = run(["fake:label=a", "fake:label=b"], rounds=20, max_rounds=20, budget=15)
    assert m["stop_reason"] == "time budget spent"
    assert _rounds(records, "a") == [1, 2, 3]  # 2 + 3 × 4 = 14 s; a fourth would end at 18
    assert any("ended the run after 3 of 20 rounds" in w for w in m["warnings"])


def test_extra_rounds_go_to_the_wide_figures_and_their_baseline(run):
    m, records = run(
        ["fake:label=a,noise=0.001", "fake:label=b,noise=0.001", "fake:label=c,noise=0.3"],
        rounds=3,
        max_rounds=8,
        precision=0.02,
    )
    assert m["stop_reason"] == "round cap reached"
    assert set(m["unreached"]) <= {"c|syscall", "c|cpu"}
    assert _rounds(records, "c") == list(range(1, 9))
    assert _rounds(records, "a") == list(range(1, 9))  # the baseline pairs with c
    assert _rounds(records, "b") == [1, 2, 3]


def test_progress_reports_seconds_with_an_honest_total(run, monkeypatch):
    seen = []
    orig = runner.Runner.__init__

    def init(self, *a, **kw):
        orig(self, *a, **kw)
        self.progress = lambda what, done, total: seen.append((CLOCK.now, done, total))

    monkeypatch.setattr(runner.Runner, "__init__", init)
    run(["fake:label=a", "fake:label=b"], rounds=5, max_rounds=5)
    start, end = seen[0][0], CLOCK.now
    for now, done, total in seen[3:]:  # once the warm-up has timed a launch
        left = end - now
        assert abs((total - done) - left) <= 0.2 * (end - start) + 1


def test_a_failed_launch_keeps_its_exit_code_and_stderr_tail():
    launch = Launch(
        status="failed",
        reason="probe failed",
        exit_code=2,
        stderr_tail="warming up\nsyscall: --op: unknown op 'nul'\n\n",
    )
    assert runner.failure_reason(launch) == (
        "probe failed (exit status 2) — stderr: warming up | syscall: --op: unknown op 'nul'"
    )
    cell = Cell(EnvSpec("fake"), "syscall")
    (rec,) = runner.launch_records(launch, cell, {"round": 1})
    assert rec["status"] == "failed" and rec["reason"] == runner.failure_reason(launch)


def test_a_burst_keeps_its_block_window_and_cpu_time():
    """A windowed burst's sample carries what validate's quota check reads: its window
    (ms) and the CPU time the probe ran in it (cpu_ns); a probe's launch has neither."""
    burst = {"op": "compute", "metrics": {"ops_per_s": 1e8}, "units": {"ops_per_s": "ops/s"}}
    launch = Launch(records=[{**burst, "block": 3, "set": "", "ms": 300, "cpu_ns": 75_000_000}])
    cell = Cell(EnvSpec("fake"), "cpu")
    (rec,) = [r for r in runner.launch_records(launch, cell, {"round": 1}) if r["op"] == "compute"]
    assert (rec["source"], rec["block"], rec["ms"], rec["cpu_ns"]) == ("burst", 3, 300, 75e6)
    launch = Launch(records=[burst])
    (rec,) = [r for r in runner.launch_records(launch, cell, {"round": 1}) if r["op"] == "compute"]
    assert rec["source"] == "probe" and "cpu_ns" not in rec


# ---------------------------------------------------------------- density's rounds and budget


@pytest.fixture
def fake_density(monkeypatch):
    """The held families' rounds on the fake clock; density(calls) -> [(env prefix,
    levels or "warm-up")] of density's."""
    return stand_ins(monkeypatch)


def density(calls):
    return [(prefix, what) for family, prefix, what in calls if family == "density"]


def test_a_quick_density_run_gets_its_minimum_rounds_on_the_quick_budget(run, fake_density):
    """--quick --workload density without --budget: 8 rounds of 2 x 100 s, far past the
    285 s quick budget; no rounds beyond them (the budget is spent), no warning that the
    budget cut the run, and the progress output says why."""
    m, records = run(["fake:label=a", "fake:label=b"], ["density"], quick=True, **QUICK)
    n = QUICK["rounds"]
    assert _rounds(records, "a") == _rounds(records, "b") == list(range(1, n + 1))
    assert m["stop_reason"] in ("time budget spent", "precision reached")
    assert not any("ended the run" in w for w in m["warnings"])
    assert any(f"{n} minimum rounds run whatever the 285 s quick budget" in line for line in LOG)
    assert m["matrix"]["budget_from_quick"] is True


def test_a_density_warm_up_holds_one_instance_not_a_ramp(run, fake_density):
    run(["fake:label=a", "batch:label=vm"], ["density"], quick=True, **QUICK)
    calls = density(fake_density)
    warm = [c for c in calls if c[1] == "warm-up"]
    assert len(warm) == 1 + QUICK["emulated_warmup"]  # a's (vm: emulated), before any round
    assert calls[: len(warm)] == warm
    ramps = [levels for _, levels in calls if levels != "warm-up"]
    assert [1, 4] in ramps and [1, 2] not in ramps  # no quick_guests list: guests fall back
    assert len(ramps) == QUICK["rounds"] + QUICK["emulated_rounds"]  # a's rounds, vm's


def test_a_given_budget_holds_for_a_quick_density_run(run, fake_density):
    settings = {**QUICK, "budget": 285.0}  # as --budget 285 gives it: a plain number
    m, records = run(["fake:label=a", "fake:label=b"], ["density"], quick=True, **settings)
    assert m["matrix"]["budget_from_quick"] is False
    assert _rounds(records, "a") == [1]  # 10 s warm-up + 200 s; a second would end at 410
    assert any(f"ended the run after 1 of {QUICK['rounds']} rounds" in w for w in m["warnings"])
    assert not any("minimum rounds" in line for line in LOG)


@pytest.mark.parametrize("workloads", [("syscall", "cpu"), ("density", "syscall")])
def test_the_quick_budget_holds_when_a_main_job_workload_is_in_the_run(
    run, fake_density, workloads, monkeypatch
):
    """The main job (`run --all --quick`) and any run that includes one of its workloads
    keep the quick budget as the run's wall clock."""
    monkeypatch.setattr(FakeEnv, "seconds", 20.0)
    m, records = run(["fake:label=a", "fake:label=b"], workloads, quick=True, **QUICK)
    assert m["stop_reason"] == "time budget spent"
    assert len(_rounds(records, "a")) < QUICK["rounds"]
    assert m["wall_seconds"] <= QUICK["budget"]
    assert not any("minimum rounds" in line for line in LOG)


def test_a_quick_density_runs_progress_counts_its_minimum_rounds(run, fake_density, monkeypatch):
    seen = []
    orig = runner.Runner.__init__

    def init(self, *a, **kw):
        orig(self, *a, **kw)
        self.progress = lambda what, done, total: seen.append((CLOCK.now, done, total))

    monkeypatch.setattr(runner.Runner, "__init__", init)
    run(["fake:label=a", "fake:label=b"], ["density"], quick=True, **QUICK)
    start, end = seen[0][0], CLOCK.now
    assert end - start > 2 * QUICK["budget"]
    # from the first round on (the warm-up timed one held instance), 6 rounds ahead: the
    # total is not cut at the quick budget
    assert all(total > QUICK["budget"] for _, _, total in seen[2:])
    for now, done, total in seen[4:]:  # once a round of each has been timed
        assert abs((total - done) - (end - now)) <= 0.2 * (end - start) + 1
