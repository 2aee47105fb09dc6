"""`isobench validate`: its pure checks on synthetic samples with known answers (rounds
and bursts), perf's output parsed from a recorded string, and real (short) runs on this
host."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from bench import store
from bench import validate as v
from bench import validate_accuracy as acc
from bench import validate_checks as vc
from bench.commands.validate import validate as validate_cmd


def _lognormal(median: float, sigma: float, n: int, seed: int) -> dict[int, float]:
    """n rounds of a figure: round -> value (what bench.validate.rounds returns)."""
    values = median * np.exp(np.random.default_rng(seed).normal(0.0, sigma, n))
    return {r + 1: float(x) for r, x in enumerate(values)}


def test_aa_passes_on_identical_distributions():
    pairs = {
        f"fig{i}": (_lognormal(100, 0.05, 40, i), _lognormal(100, 0.05, 40, 100 + i))
        for i in range(4)
    }
    c = v.aa_check(pairs)
    assert c.passed, c.line
    assert not c.data["significant"]
    for f in c.data["figures"].values():
        assert f["ci_low"] <= 1.0 <= f["ci_high"]


def test_aa_false_alarm_rate_is_about_alpha():
    """Under the null the check fails in at most ~alpha of the repetitions (BH over
    figures that are all null keeps the family-wise rate at or below alpha)."""
    fails = 0
    for i in range(200):
        pairs = {
            "a": (_lognormal(100, 0.1, 20, 3 * i), _lognormal(100, 0.1, 20, 3 * i + 1)),
            "b": (_lognormal(50, 0.1, 20, 3 * i + 2), _lognormal(50, 0.1, 20, 10_000 + i)),
        }
        fails += not v.aa_check(pairs).passed
    assert fails / 200 <= 0.09


def test_aa_fails_on_a_real_shift():
    pairs = {"shifted": (_lognormal(110, 0.03, 30, 1), _lognormal(100, 0.03, 30, 2))}
    c = v.aa_check(pairs)
    assert not c.passed
    assert c.data["significant"] == ["shifted"]


def test_aa_a_significant_but_negligible_difference_passes_and_is_named():
    """0.4% with 0.2% noise over 30 rounds: significant, its 90% CI inside 1 ± 1%."""
    pairs = {"tiny": (_lognormal(100.4, 0.002, 30, 1), _lognormal(100, 0.002, 30, 2))}
    c = v.aa_check(pairs)
    assert c.data["figures"]["tiny"]["significant"]
    assert c.passed and c.data["negligible"] == ["tiny"] and not c.data["significant"]
    assert "negligible: tiny" in c.line
    wide = {"tiny": (_lognormal(101.5, 0.002, 30, 1), _lognormal(100, 0.002, 30, 2))}
    assert not v.aa_check(wide).passed  # 1.5%: not within 1%


def test_unknown_quota_kind_is_a_usage_error():
    res = CliRunner().invoke(validate_cmd, ["--quota-kinds", "host,qemu"])
    assert res.exit_code == 2 and "qemu: not one of" in res.output


def test_aa_without_data_fails():
    assert not v.aa_check({}).passed


def test_known_answer_on_throughput_uses_time_per_op():
    base = _lognormal(1e6, 0.02, 25, 1)  # ops/s, higher is better
    half = _lognormal(0.5e6, 0.02, 25, 2)
    c = v.known_answer_check("known", half, base, 2.0, better="higher")
    assert c.passed, c.line
    assert c.data["ratio"] == pytest.approx(2.0, rel=0.03)
    # The same data read as lower-is-better gives 0.5: the check must fail then.
    assert not v.known_answer_check("known", half, base, 2.0, better="lower").passed


def test_known_answer_fails_when_quota_has_no_effect():
    base = _lognormal(1e6, 0.02, 25, 1)
    c = v.known_answer_check("known", _lognormal(1e6, 0.02, 25, 2), base, 2.0, better="higher")
    assert not c.passed


def test_vdso_control_tolerates_a_chance_offset_and_fails_without_a_vdso_clock():
    host = _lognormal(21.5, 0.03, 20, 1)  # ns per clock_gettime
    c = v.equivalence_check("vDSO", _lognormal(21.5 * 0.98, 0.03, 20, 2), host, vc.VDSO_MARGIN)
    assert c.passed, c.line  # 2% off (the 95% CI may exclude 1): still the vDSO clock
    c = v.equivalence_check("vDSO", _lognormal(21.5 * 3000, 0.03, 20, 3), host, vc.VDSO_MARGIN)
    assert not c.passed and "differs by more than 10%" in c.line


def test_quota_known_answer_needs_its_whole_ci_within_five_percent():
    base = _lognormal(3e8, 0.01, 30, 1)  # ops/s without a quota
    quarter = _lognormal(0.25 * 3e8 * 1.01, 0.01, 30, 2)  # 1% more than q: still 4 ± 5%
    c = v.known_answer_check("q", quarter, base, 4.0, better="higher")
    assert c.passed and "within 4 ± 5%" in c.line
    assert c.data["ratio"] == pytest.approx(4 / 1.01, rel=0.01)
    # The old 10 ms windows read a quarter quota as x2.73: off, and said so.
    c = v.known_answer_check("q", _lognormal(3e8 / 2.73, 0.01, 30, 3), base, 4.0, better="higher")
    assert not c.passed and "off by -31." in c.line
    # Right on average, but too noisy to show +-5%.
    spread = dict(enumerate(np.exp([0.3, -0.3, 0.2, -0.2, 0.1, -0.1]), start=1))
    noisy = {r: 0.25 * 3e8 * e for r, e in spread.items()}  # per-round ratios 4 * e^-+0.1..0.3
    c = v.known_answer_check("q", noisy, dict.fromkeys(spread, 3e8), 4.0, better="higher")
    assert not c.passed and "more rounds needed" in c.line
    assert "no data" in v.known_answer_check("q", {}, base, 4.0, better="higher").line


def test_quota_cells_parse_and_name_every_check():
    cells = v.quota_cells("docker")
    assert len(cells) == 2 * (1 + len(v.QUOTAS))
    m = v._matrix(cells, ["quota"], 10.0)  # the real spec parser and matrix check
    opts = {e.label: e.options for e in m.envs}
    assert opts["docker-q0.25-pinned"]["cpus"] == 0.25
    assert str(opts["docker-q0.25-pinned"]["cpuset"]) == v.PIN
    assert "cpus" not in opts["docker"] and "weight" not in opts["docker"]
    host = {e.label: e.options for e in v._matrix(v.quota_cells("host"), ["quota"], 10.0).envs}
    assert host["host-q0.5"]["weight"] == v.WEIGHT  # host and namespaces get the weight
    # Every (quota, pinning) of a kind is one check, against its own baseline.
    recs = [
        {
            "round": i + 1,
            "status": "ok",
            "value": 3e8 * (q or 1) * (1 + 0.001 * i),
            "env": v.quota_label("host", q, pin),
            "workload": "quota",
            "op": "compute",
            "metric": "ops_per_s",
            "source": "probe",
            "ms": 300,
            "cpu_ns": 3e8 * (q or 1) * (1 + 0.001 * i),
        }
        for q in (None, *v.QUOTAS)
        for pin in (False, True)
        for i in range(9)
    ]
    checks = v.check_quota(recs, ["host"])
    assert [c.name for c in checks] == [
        "known answer (host:cpus=0.25, a CPU / the CPU time per window)",
        "known answer (host:cpus=0.5, a CPU / the CPU time per window)",
        "known answer (host:cpus=0.25,cpuset=1, a CPU / the CPU time per window)",
        "known answer (host:cpus=0.5,cpuset=1, a CPU / the CPU time per window)",
    ]
    assert all(c.passed for c in checks)


def test_container_quotas_are_against_the_weighted_host():
    """docker and podman have no weight option: their known answers use the host's
    baselines, which the run then includes even when host itself is not checked."""
    cells = v.all_quota_cells(["docker"])
    labels = sorted(c.rsplit("label=", 1)[1] for c in cells)
    assert labels == [
        "docker-q0.25",
        "docker-q0.25-pinned",
        "docker-q0.5",
        "docker-q0.5-pinned",
        "host",
        "host-pinned",
    ]
    assert len(v.all_quota_cells(["host", "podman"])) == 6 + 4
    recs = [
        {
            "round": i + 1,
            "status": "ok",
            "value": 3e8 * (q or 1),
            "env": env,
            "workload": "quota",
            "op": "compute",
            "metric": "ops_per_s",
            "source": "probe",
            "ms": 300,
            "cpu_ns": 3e8 * (q or 1) * (1 + 0.001 * i),
        }
        for env, q in [
            ("host", None),
            ("host-pinned", None),
            ("docker-q0.25", 0.25),
            ("docker-q0.5", 0.5),
            ("docker-q0.25-pinned", 0.25),
            ("docker-q0.5-pinned", 0.5),
        ]
        for i in range(6)
    ]
    checks = v.check_quota(recs, ["docker"])
    assert checks[0].name == "known answer (docker:cpus=0.25, a CPU / the CPU time per window)"
    assert "; host without a quota: its windows got 1.00" in checks[0].line
    assert [c.data["ratio"] for c in checks] == pytest.approx([4, 2, 4, 2], rel=0.01)
    assert [c.data["time_per_op"]["ratio"] for c in checks] == pytest.approx([4, 2, 4, 2])


def _quota_bursts(env: str, share: float, ops_per_cpu_s: float, seed: int) -> list[dict]:
    """Bursts of 300 ms of one cell, 6 rounds of 3 blocks: the CPU time each got (share of
    the window, +-0.5%) and its ops/s (share x speed, the speed moving +-10% by round)."""
    rng = np.random.default_rng(seed)
    out = []
    for r in range(1, 7):
        speed = ops_per_cpu_s * (0.9 if r % 2 else 1.1)  # the machine's phases
        for b in range(3):
            got = share * (1 + rng.normal(0, 0.005))
            out.append(
                {
                    **dict(round=r, block=b, set="", ms=300, cpu_ns=got * 300e6),
                    **dict(status="ok", env=env, workload="quota", op="compute"),
                    **dict(metric="ops_per_s", value=got * speed, source="burst"),
                }
            )
    return out


def test_a_quota_known_answer_is_the_cpu_time_and_shows_the_rest_beside_it():
    """The check is on what a quota sets: the CPU time its windows got, q of a CPU. Beside
    it: the cell without a quota, which here got 96.5% of a CPU (the machine's other work
    took the rest), and the time per op, which that and the speed per CPU-second move. A
    burst that hides the quota (a whole CPU's time in its window) fails."""
    base = _quota_bursts("host", 0.965, 3e8, 1)
    faster = _quota_bursts("host-q0.25", 0.25, 3e8 * 1.04, 2)  # 4% more work per CPU-s
    checks = v.check_quota(base + faster + _quota_bursts("host-q0.5", 0.5, 3e8, 3), ["host"])
    c = checks[0]
    assert c.passed, c.line
    assert c.data["ratio"] == pytest.approx(4, rel=0.01)
    assert c.data["share"] == pytest.approx(0.25, rel=0.01)
    assert c.data["baseline_share"] == pytest.approx(0.965, rel=0.01)
    per_op = 0.965 / (0.25 * 1.04)  # the time per op: CPU shares over speeds
    assert c.data["time_per_op"]["ratio"] == pytest.approx(per_op, rel=0.01)
    assert c.data["speed_per_cpu_second"] == pytest.approx(1.04, rel=0.01)
    assert "got 0.96" in c.line and "time per op 3.7" in c.line and "quota / none, 1.04" in c.line
    hidden = _quota_bursts("host-q0.25", 1.0, 3e8, 4)  # the window never throttled
    c = v.check_quota(base + hidden, ["host"])[0]
    assert not c.passed and "off by" in c.line


def test_equivalence_needs_the_whole_ci_inside_the_margin():
    base = _lognormal(1e6, 0.003, 60, 1)
    same = _lognormal(1e6, 0.003, 60, 2)
    assert v.equivalence_check("s", same, base, 0.01, "higher").passed
    slower = _lognormal(0.97e6, 0.003, 60, 3)  # 3% fewer ops/s
    c = v.equivalence_check("s", slower, base, 0.01, "higher")
    assert not c.passed and "more than" in c.line
    noisy = _lognormal(1e6, 0.2, 10, 4)  # a CI far wider than +-1%: not shown
    c = v.equivalence_check("s", noisy, _lognormal(1e6, 0.2, 10, 5), 0.01, "higher")
    assert not c.passed and "not shown" in c.line


def test_mde_check_reports_each_family_and_its_limit():
    quiet = (_lognormal(100, 0.01, 20, 1), _lognormal(100, 0.01, 20, 2))
    noisy = (_lognormal(100, 0.5, 20, 3), _lognormal(100, 0.5, 20, 4))
    c = vc.mde_check({"quiet": quiet, "noisy": noisy}, n=6, limit=0.10)
    assert not c.passed and "too noisy: noisy" in c.line and "in 6 rounds" in c.line
    assert 0.01 < c.data["quiet"] < 0.05  # (t + t) * sqrt(2) * 1% / sqrt(6)
    assert vc.mde_check({"quiet": quiet}, n=6).passed
    c = vc.mde_check({"quiet": quiet, "noisy": noisy}, n=6, limits={"noisy": None})
    assert c.passed and "(reported, not judged)" in c.line and c.data["noisy"] > 0.5


def test_rounds_keeps_measured_ok_samples_only_one_per_round():
    base = {"env": "A", "workload": "w", "op": "o", "metric": "m", "source": "probe"}
    recs = [
        {**base, "round": 0, "status": "ok", "value": 1.0},  # warm-up
        {**base, "round": 1, "status": "ok", "value": 2.0},
        {**base, "round": 1, "status": "ok", "value": 4.0},  # a second repetition
        {**base, "round": 2, "status": "failed", "value": None},
        {**base, "round": 3, "status": "ok", "value": 3.0, "env": "B"},
    ]
    assert v.rounds(recs, "A", "w", "o", "m") == {1: 3.0}


@pytest.mark.requires("host", "namespaces")
def test_validate_runs_on_this_host(tmp_path):
    """A short real validation: every check runs, reports figures and the JSON (strict:
    no NaN for undefined figures) says which passed. Pass/fail itself depends on the
    host's load; the full-length command is what a user runs (and what the issue's
    acceptance asks for). The known answers of this short run must still read 1/q (the
    guards at the end): that tells 300 ms bursts apart from short ones (a 5 ms burst
    under cpus=0.25 runs at full speed) and from a quota with no effect. Their run has
    its minimum rounds (v.QUOTA_MIN_ROUNDS) whatever the budget: a budget too short for
    them resumes it."""
    res = CliRunner().invoke(
        validate_cmd,
        [
            *("--results", str(tmp_path), "--budget", "30", "--quota-kinds", "host"),
            *("--neighbour", "none", "--json"),  # its own test: test_idle_neighbours_...
        ],
        catch_exceptions=False,
    )
    assert res.exit_code in (0, 1), res.output
    out = json.loads(res.output, parse_constant=lambda c: pytest.fail(f"{c} in JSON"))
    names = [c["name"] for c in out["checks"]]
    assert names[0] == "harness cost" and names[1] == "A/A"
    assert sum(n.startswith("known answer (host:cpus=") for n in names) == 4
    assert any(n.startswith("vDSO") for n in names)
    assert any(n.startswith("sampler") for n in names)
    nb = [c for c in out["checks"] if c["name"] in (v.NEIGHBOURS_IDLE, v.NEIGHBOURS_FROZEN)]
    assert len(nb) == 2 and not any(c["ran"] for c in nb)
    assert names[-2] == "minimum detectable effect" and names[-1] == vc.ACCURACY
    assert out["passed"] == all(c["passed"] for c in out["checks"])
    assert (res.exit_code == 0) == out["passed"]
    assert out["harness"]["overhead_ms"]["total"]["median"] is not None
    assert len(list(tmp_path.iterdir())) == 3  # the syscall, cpu and quota runs, kept
    quota_rounds = out["quota_run"]["host"]["rounds_done"]
    assert out["quota_skipped"] == {} and quota_rounds >= v.QUOTA_MIN_ROUNDS
    by_name = {c["name"]: c for c in out["checks"]}
    aa = by_name["A/A"]["data"]["figures"]
    for fig in ("null", "compute"):  # by bursts from 3 rounds on (a short run may have 2)
        assert aa[fig]["bursts"] == (min(aa[fig]["n"]) >= 3), aa[fig]
    assert not aa["startup ready"]["bursts"]
    if acc.find_perf():  # the lead's .ci/setup installs linux-perf
        assert (
            by_name[vc.ACCURACY]["ran"]
            and len(by_name[vc.ACCURACY]["data"]["segments"]) == v.ACCURACY_TRIPLES
        )
    # last: the burst design's known-answer guard, from the minimum rounds: each answer
    # within 20% of 1/q. That tells a quota apart from none and 300 ms bursts from 5 ms
    # ones (x1), and the quota refill bug at q=0.25 (x2.9). A tighter guard flaked: under
    # the suite's own load a CI rehearsal read q=0.25 x3.49 and q=0.5 x2.07 unpinned
    # (their quotient 1.69, not 2); validate's own check (1/q +- 5% with its whole CI, at
    # the default budget) is the exact one.
    for name, c in by_name.items():
        if name.startswith("known answer"):
            assert c["data"]["ratio"] == pytest.approx(c["data"]["expected"], rel=0.20), c


# -- the burst design --------------------------------------------------------------------
def _bursts(
    env, effect, rounds, blocks, seed, *, workload="syscall", op="null", base=600.0, metric=None
):
    """Burst records of one environment under a shared noise model: slow phases per
    round and block (the same seed: the same machine for every environment) times the
    environment's effect times its own burst-to-burst jitter."""
    phase = np.random.default_rng(0)
    speed = np.exp(phase.normal(0, 0.15, (rounds, 1)) + phase.normal(0, 0.10, (rounds, blocks)))
    jitter = np.exp(np.random.default_rng(seed).normal(0, 0.02, (rounds, blocks)))
    values = base * effect * speed * jitter
    return [
        {
            "env": env,
            "workload": workload,
            "op": op,
            "metric": metric or "ns_per_op",
            "source": "burst",
            "status": "ok",
            "round": r + 1,
            "block": k + 1,
            "set": "",
            "value": float(values[r, k]),
        }
        for r in range(rounds)
        for k in range(blocks)
    ]


def test_bursts_pair_block_by_block_and_see_through_the_machines_phases():
    """Both sides share the machine's phases (SD 15% between rounds, 10% between
    blocks): paired by block, a 3% effect is significant and an A/A is not; by rounds
    alone the same data could not tell."""
    recs = [*_bursts("A", 1.0, 8, 100, 1), *_bursts("B", 1.0, 8, 100, 2)]
    recs += _bursts("C", 1.03, 8, 100, 3)
    f = vc.Figures(recs)
    a, b, c = f.get("A", *v.NULL), f.get("B", *v.NULL), f.get("C", *v.NULL)
    assert len(a) == 8 and len(a.blocks[1]) == 100
    t = vc.ratio(c, a)
    assert type(t).__name__ == "BurstTest" and t.n == 8 and t.n_blocks == 800
    assert t.ratio == pytest.approx(1.03, rel=0.005) and t.low > 1
    assert v.aa_check({"null": (b, a)}).passed
    assert not v.aa_check({"null": (c, a)}).passed
    rounds_only = vc.ratio(c.rounds, a.rounds)  # the same medians, paired by round
    assert type(rounds_only).__name__ == "RatioTest"


def test_mde_from_the_burst_tests_detectable_ratio():
    recs = [*_bursts("A", 1.0, 8, 100, 1), *_bursts("B", 1.0, 8, 100, 2)]
    f = vc.Figures(recs)
    b, a = f.get("B", *v.NULL), f.get("A", *v.NULL)
    mde = vc.minimum_detectable(b, a, n=8)
    assert mde == pytest.approx(vc.ratio(b, a).detectable - 1)
    assert 0 < mde < 0.03  # 2% jitter per burst, median of 100 blocks, 8 rounds
    c = vc.mde_check({"syscall (null)": (b, a)}, n=8)
    assert c.passed and "syscall (null)" in c.line and "limit 3%" in c.line
    shift = np.exp(np.random.default_rng(9).normal(0, 0.05, 9))  # per launch: 5% SD
    noisy = [
        {**r, "value": r["value"] * (shift[r["round"]] if r["env"] == "B" else 1)} for r in recs
    ]
    f = vc.Figures(noisy)
    assert not vc.mde_check({"n": (f.get("B", *v.NULL), f.get("A", *v.NULL))}, n=8).passed


def test_quota_known_answer_in_bursts_reads_time_per_op():
    """compute in ops/s: a quarter quota reads a quarter of the ops, x4 the time per op,
    paired block by block with the baseline (both 300 ms bursts)."""

    def ops(env, q, seed):
        return [
            {**r, "metric": "ops_per_s", "value": 3e8 * q * 600 / r["value"]}
            | {"ms": 300, "cpu_ns": q * 300e6}
            for r in _bursts(env, 1.0, 5, 6, seed, workload="quota", op="compute")
        ]

    f = vc.Figures([*ops("host", 1.0, 1), *ops("host-q0.25", 0.25, 2)])
    c = v.known_answer_check(
        "q", f.get("host-q0.25", *v.QUOTA), f.get("host", *v.QUOTA), 4.0, better="higher"
    )
    assert c.passed and "rounds (30 blocks)" in c.line, c.line
    checks = v.check_quota([*ops("host", 1.0, 1), *ops("host-q0.25", 0.25, 2)], ["host"])
    assert checks[0].passed and "no data" in checks[1].line  # cpus=0.5 was not measured


def test_validate_workloads_are_burst_plans_as_runs_have():
    w = v.WORKLOADS
    assert w["syscall"].strategy == w["compute"].strategy == w["quota"].strategy == "bursts"
    assert w["startup"].strategy == "probes" and w["startup"].phase_figures
    quota = w["quota"].bursts
    assert quota.burst_ms("compute", quota=True) == quota.burst_ms("compute", quota=False) == 300
    assert w["syscall"].bursts.burst_ms("null", quota=False) == v.ACCURACY_MS
    assert w["syscall"].served(quick=False, emulated=False).serves
    m = v._matrix(v.all_quota_cells(["docker"]), ["quota"], 10.0, baseline="host")
    assert sorted(e.label for e in m.envs)[:2] == ["docker-q0.25", "docker-q0.25-pinned"]


# -- accuracy against perf -----------------------------------------------------------------
PERF_OUTPUT = """# Running 'syscall/basic' benchmark:
# Executed 10000000 getppid() calls
     Total time: 6.052 [sec]

       0.605229 usecs/op
        1652267 ops/sec
"""


def test_perf_output_parses_to_ns_per_call():
    assert acc.parse_perf(PERF_OUTPUT) == pytest.approx(605.229)
    with pytest.raises(ValueError, match="usecs/op"):
        acc.parse_perf("# Running 'syscall/basic' benchmark:\n")
    assert acc.loops_for(605.229, 2.0) == 3_304_534
    assert acc.loops_for(1e9, 1.0) == acc.MIN_LOOPS


def _segment(ratio, ms=5, perf=600.0):
    return acc.Segment(ms, (perf * ratio,) * 3, perf, perf).as_dict()


def test_accuracy_check_takes_the_geometric_mean_of_its_triples():
    c = vc.accuracy_check([_segment(1.02), _segment(0.99), _segment(1.04)])
    assert c.passed and "within 5%" in c.line and "3 interleaved triples" in c.line
    c = vc.accuracy_check([_segment(1.11), _segment(1.25), _segment(1.40)])
    assert not c.passed and "off by +24.8%" in c.line
    assert not vc.accuracy_check([]).passed
    # a segment's figure is its bursts' pooled time per op (what a loop over the same
    # time reads: the harmonic mean of equal windows), its median beside it: half its
    # bursts in a slow phase (230 ns) pull the pooled figure up as they pull perf's
    seg = acc.Segment(5, (165.0, 165.0, 230.0, 230.0, 165.0), 188.0, 192.0)
    pooled = 5 / (3 / 165 + 2 / 230)
    assert seg.median_ns == 165.0 and seg.burst_ns == pytest.approx(pooled)
    assert seg.ratio == pytest.approx(pooled / (188 * 192) ** 0.5)
    c = vc.accuracy_check([seg.as_dict()])
    assert c.passed and "read 186-186 ns pooled (median 165-165)" in c.line, c.line


def test_accuracy_is_not_run_without_perf(monkeypatch):
    monkeypatch.setattr(acc, "find_perf", lambda: None)
    c = v.run_accuracy(None, lambda s: None)
    assert not c.ran and c.text().startswith("NOT RUN accuracy") and "perf not installed" in c.line


def test_a_check_not_run_is_no_failure(monkeypatch):
    """validate exits 0 when every check that ran passed; one not run is listed as such."""
    import bench.validate

    ok = vc.Check("A/A", True, "fine")
    skipped = vc.not_run(vc.ACCURACY, "perf not installed")
    monkeypatch.setattr(
        bench.validate, "run_all", lambda *a: ([ok, skipped], {"quota_skipped": {}})
    )
    res = CliRunner().invoke(validate_cmd, ["--budget", "1"])
    assert res.exit_code == 0, res.output
    assert "NOT RUN accuracy" in res.output and "1/1 checks passed (1 not run)" in res.output


def test_a_run_short_of_its_minimum_rounds_is_resumed_for_the_missing_ones():
    """Its budget: what it spent, plus each missing round at the pace of those made."""
    manifest = {"rounds_done": 2, "measured_seconds": 30.0, "wall_seconds": 40.0}
    assert v.resumed_budget(manifest, 4, spare=1.0) == pytest.approx(40 + 2 * 15 + 2)
    assert v.resumed_budget(manifest, 4) > v.resumed_budget(manifest, 4, spare=1.0)


# -- idle neighbours -------------------------------------------------------------------------
def _aa(cond_effect: float, seed: int) -> list[dict]:
    """An A/A pair's bursts (twin and A), the twin's shifted by `cond_effect`."""
    recs = _bursts("A", 1.0, 6, 60, seed, workload="nb-null")
    return recs + _bursts("twin", cond_effect, 6, 60, seed + 1, workload="nb-null")


def test_idle_neighbours_agree_within_one_percent_or_fail():
    """Each condition's A/A ratio against the one without neighbours: the same machine
    agrees; a neighbour that slows one side of the pair by 3% is caught."""
    without = vc.Figures(_aa(1.0, 10))

    def pairs(f):
        return {"null": (f.get("twin", *v.NB["null"]), f.get("A", *v.NB["null"]))}

    same = vc.agreement_check("n", pairs(vc.Figures(_aa(1.0, 20))), pairs(without))
    assert same.passed and "within 1%" in same.line, same.line
    x = same.data["figures"]["null"]
    assert x["ci_low"] < x["ratio"] < x["ci_high"] and x["n"] == [6, 6]
    off = vc.agreement_check("n", pairs(vc.Figures(_aa(1.03, 30))), pairs(without))
    assert not off.passed and "not shown within 1%: null" in off.line
    empty = {"null": (vc.Figure(), vc.Figure())}
    assert not vc.agreement_check("n", empty, pairs(without)).passed


def _nb(effect: float, seed: int) -> list[dict]:
    """Both figures of the idle-neighbour A/A (nb-null, nb-compute), the twin's shifted."""
    compute = {"workload": "nb-compute", "op": "compute", "metric": "ops_per_s"}
    return (
        _aa(effect, seed)
        + _bursts("A", 1.0, 6, 60, seed + 2, **compute)
        + _bursts("twin", 1 / effect, 6, 60, seed + 3, **compute)
    )


def test_neighbour_checks_carry_the_idle_cpu_of_each_kind():
    recs = {"quiet": _nb(1.0, 20), "frozen": _nb(1.0, 41), "absent": _nb(1.0, 10)}
    info = {
        "specs": ["docker", "lxc"],
        "failed": {"lxc": "no `ready`"},
        "idle_cpu": {"docker": {"instance_cpu_pct": 0.01, "sampler_cpu_pct": 6.2}},
    }
    idle, frozen = v.check_neighbours(recs, info)
    assert idle.name == v.NEIGHBOURS_IDLE and frozen.name == v.NEIGHBOURS_FROZEN
    assert "docker 0.01% (sampler 6.2%)" in idle.line and "neighbours: docker" in frozen.line
    assert idle.data["failed"] == {"lxc": "no `ready`"}
    assert idle.passed and not frozen.judged and "REPORTED frozen" in frozen.text()
    assert not frozen.failed and "reported, not judged: nothing here is frozen" in frozen.line
    assert v.nb.PRIVATE["swarm"] in v.nb.default_specs()
    assert "host" not in {s.split(":")[0] for s in v.nb.default_specs()}


def test_the_frozen_neighbour_check_is_judged_where_a_run_here_freezes():
    """Judged where a neighbour says freeze=yes, or the idle neighbours do perturb (a
    3% shift of one side of the pair beside them); then its own 3% shift fails it."""
    recs = {"quiet": _nb(1.0, 20), "frozen": _nb(1.03, 51), "absent": _nb(1.0, 10)}
    _, frozen = v.check_neighbours(recs, {"specs": ["docker:freeze=yes"]})
    assert frozen.judged and frozen.failed and frozen.text().startswith("FAIL frozen")
    recs["quiet"] = _nb(1.03, 53)
    idle, frozen = v.check_neighbours(recs, {"specs": ["docker"]})
    assert idle.failed and frozen.judged and frozen.failed


def test_bad_neighbour_spec_is_a_usage_error():
    res = CliRunner().invoke(validate_cmd, ["--neighbour", "nosuchkind"])
    assert res.exit_code == 2 and "--neighbour" in res.output and "Traceback" not in res.output


@pytest.mark.requires("host", "namespaces")
def test_idle_neighbours_run_on_this_host(tmp_path, monkeypatch):
    """One unit (two cycles) of the three conditions beside a held namespaces instance
    (light rounds): every condition measured twice, the neighbour's idle CPU measured,
    nothing left held. Pass/fail needs the real units (the command's)."""
    import dataclasses

    from bench import bundle as bundle_mod

    for name, blocks in (("nb-null", 10), ("nb-compute", 4)):
        w = v.WORKLOADS[name]
        plan = dataclasses.replace(w.bursts, blocks=blocks, quick_blocks=blocks)
        monkeypatch.setitem(v.WORKLOADS, name, dataclasses.replace(w, bursts=plan))
    monkeypatch.setattr(v, "NEIGHBOUR_UNITS", (1, 1))
    monkeypatch.setattr(v.nb, "SAMPLE_S", 0.5)
    checks, info = v.run_neighbours(
        tmp_path, 1.0, 1, bundle_mod.build(), lambda s: None, ["namespaces"]
    )
    assert [c.name for c in checks] == [v.NEIGHBOURS_IDLE, v.NEIGHBOURS_FROZEN]
    assert info["cycles"] == 2 and info["failed"] == {}
    assert set(info["idle_cpu"]) == {"namespaces"}
    assert info["idle_cpu"]["namespaces"]["instance_cpu_pct"] < 5
    runs = sorted(p.name.rsplit("-validate-", 1)[1] for p in next(tmp_path.iterdir()).iterdir())
    assert runs == sorted(f"{c}-{n}" for c in v.CONDITIONS for n in (1, 2))
    for c in checks:
        assert c.data["figures"]["null"]["n"] == [2, 2]
    [run] = next(tmp_path.iterdir()).glob("*-validate-frozen-1")
    envs = store.read_manifest(run)["matrix"]["envs"]
    assert [e["label"] for e in envs] == ["A", "twin", "nb1"]
    assert envs[2]["options"]["freeze"] == "yes"


def test_known_answer_rounds_from_the_widest_interval():
    """Stein's two stages: a 90% CI of ±4.4% in 6 rounds needs 14 for ±3%; one already
    within ±3% needs no more; at most QUOTA_MAX_ROUNDS; fewer than 3 rounds say nothing."""

    def answer(r: float, lo: float, hi: float, n: int) -> vc.Check:
        return vc.Check("k", True, "", {"ratio": r, "ci_low": lo, "ci_high": hi, "rounds": n})

    assert v.known_answer_rounds([answer(1.946, 1.861, 2.034, 6)]) == 14
    assert (
        v.known_answer_rounds([answer(4.0, 3.98, 4.02, 6), answer(2.0, 1.9, 2.1, 6)])
        == v.QUOTA_MAX_ROUNDS
    )
    assert v.known_answer_rounds([answer(4.0, 3.98, 4.02, 6)]) <= 6
    assert v.known_answer_rounds([answer(2.0, 1.5, 2.5, 2)]) == 0
    c = vc.known_answer_check("k", _lognormal(50, 0.02, 7, 1), _lognormal(100, 0.02, 7, 2), 2.0)
    assert c.data["rounds"] == 7
