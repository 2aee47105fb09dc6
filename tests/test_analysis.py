"""The summary table's logic on constructed samples (pure: no run needed)."""

import numpy as np
import pandas as pd
import pytest

from bench import analysis, store


def samples(
    env, values, args="", op="null", workload="syscall", metric="ns_per_op", source="probe", note=""
):
    return [
        {
            **dict.fromkeys(store.COLUMNS),
            "env": env,
            "workload": workload,
            "op": op,
            "metric": metric,
            "unit": "ns",
            "value": v,
            "round": i + 1,
            "status": "ok",
            "source": source,
            "args": args,
            "note": note,
        }
        for i, v in enumerate(values)
    ]


MANIFEST = {
    "matrix": {"baseline": "host", "precision": 0.02},
    "environments": {"host": {"kind": "host"}, "vm": {"kind": "libvirt"}},
}


def test_ratio_and_significance_on_a_clear_shift():
    rng = np.random.default_rng(1)
    df = pd.DataFrame(
        samples("host", 100 + rng.normal(0, 1, 20)) + samples("vm", 200 + rng.normal(0, 1, 20))
    )
    rows = {r["env"]: r for r in analysis.summarize_run(df, MANIFEST)}
    vm = rows["vm"]
    assert 1.95 < vm["ratio_ci_low"] < vm["ratio"] < vm["ratio_ci_high"] < 2.05
    assert vm["significant"] and vm["p_adjusted"] < 1e-6 and vm["n"] == 20
    assert rows["host"]["ratio"] is None and not rows["host"]["significant"]


def test_no_ratio_against_a_baseline_that_ran_other_arguments():
    df = pd.DataFrame(
        samples("host", [100.0] * 5, args="--mem-mib 96")
        + samples("vm", [50.0] * 5, args="--mem-mib 48")
    )
    vm = next(r for r in analysis.summarize_run(df, MANIFEST) if r["env"] == "vm")
    assert vm["ratio"] is None and vm["p_value"] is None and "other arguments" in vm["note"]


def test_warmup_and_failures_are_not_counted():
    rows = samples("host", [1.0, 2.0, 3.0])
    rows[0]["round"] = 0  # warm-up
    rows.append({**rows[1], "status": "failed", "value": None, "reason": "boom"})
    df = pd.DataFrame(rows)
    (r,) = analysis.summarize_run(df, MANIFEST)
    assert r["n"] == 2 and r["median"] == 2.5
    assert analysis.failures(df)[0]["reason"] == "boom"


def test_a_round_is_one_measurement_whatever_its_repetitions():
    """Three repetitions a launch: the round's median is the figure, n counts rounds."""
    reps = [s for r in (samples("host", [100.0, 101.0, 99.0]),) for s in r]
    rows = []
    for rnd in (1, 2, 3, 4):
        for rec, v in zip(reps, (100.0, 101.0, 150.0), strict=True):  # one preempted rep
            rows.append({**rec, "round": rnd, "value": v + rnd})
    (r,) = analysis.summarize_run(pd.DataFrame(rows), MANIFEST)
    assert r["n"] == 4 and r["median"] == 103.5  # medians 102, 103, 104, 105


def test_pairs_by_round_cancel_a_drift_the_unpaired_view_cannot():
    drift = [100.0, 130.0, 90.0, 120.0, 80.0, 110.0]
    df = pd.DataFrame(samples("host", drift) + samples("vm", [d * 1.05 for d in drift]))
    vm = next(r for r in analysis.summarize_run(df, MANIFEST) if r["env"] == "vm")
    assert (
        vm["ratio"] == pytest.approx(1.05)
        and vm["significant"]
        and vm["test"] == "paired trimmed t, n=6"
    )


def test_identical_twin_is_not_significant():
    rng = np.random.default_rng(3)
    drift = 100 * np.exp(rng.normal(0, 0.05, 6))
    df = pd.DataFrame(
        samples("host", drift * np.exp(rng.normal(0, 0.01, 6)))
        + samples("vm", drift * np.exp(rng.normal(0, 0.01, 6)))
    )
    vm = next(r for r in analysis.summarize_run(df, MANIFEST) if r["env"] == "vm")
    assert not vm["significant"] and vm["ratio_ci_low"] < 1 < vm["ratio_ci_high"]


def test_a_row_that_is_not_significant_says_what_this_run_could_have_detected():
    """The twin's rounds at 1% launch noise: its minimum detectable ratio is a few percent
    (the power formula on its own spread), in words "none ≥×1.0x"; twice the noise, twice
    the ratio's excess (40 rounds, where the spread is well estimated); a significant row
    says its verdict instead."""
    rng = np.random.default_rng(7)

    def twin(noise: float, n: int = 8) -> dict:
        drift = 100 * np.exp(rng.normal(0, 0.05, n))
        df = pd.DataFrame(
            samples("host", drift * np.exp(rng.normal(0, noise, n)))
            + samples("vm", drift * np.exp(rng.normal(0, noise, n)))
        )
        return next(r for r in analysis.summarize_run(df, MANIFEST) if r["env"] == "vm")

    quiet = twin(0.01)
    assert not quiet["significant"] and 1.01 < quiet["detectable_ratio"] < 1.06
    steady, shaky = twin(0.01, n=40), twin(0.02, n=40)  # 40 rounds: a steady spread
    assert 1.6 < (shaky["detectable_ratio"] - 1) / (steady["detectable_ratio"] - 1) < 2.5
    assert analysis.undetected(quiet) == f"none ≥×{quiet['detectable_ratio']:.3g}"
    shifted = {**quiet, "significant": True}
    assert analysis.undetected(shifted) == ""
    assert analysis.undetected({**quiet, "p_adjusted": None}) == ""  # untested


def test_failed_vdso_control_is_flagged_not_a_finding():
    df = pd.DataFrame(
        samples("host", [23.0, 23.1, 22.9, 23.0], op="clock_gettime")
        + samples("vm", [7e4, 7.1e4, 6.9e4, 7.2e4], op="clock_gettime")
    )
    vm = next(r for r in analysis.summarize_run(df, MANIFEST) if r["env"] == "vm")
    assert vm["flags"] and vm["flags"][0].startswith("vDSO control failed: clock_gettime ×3,")
    assert vm["ratio"] is None and not vm["significant"] and vm["p_value"] is None
    emulated = {**MANIFEST, "environments": {"vm": {"kind": "qemu", "emulated": True}}}
    vm = next(r for r in analysis.summarize_run(df, emulated) if r["env"] == "vm")
    assert not vm["flags"] and vm["significant"]  # everything is slow under TCG


def test_implausible_counters_are_flagged():
    manifest = {**MANIFEST, "host": {"cgroup_layout": "hybrid"}}
    neg = samples(
        "host",
        [-0.45, -0.3, 0.1],
        workload="io",
        op="cgroup",
        metric="io_read_mib",
        source="cgroup",
    )
    zero = samples(
        "vm", [0.0, 0.0, 0.0], workload="io", op="cgroup", metric="io_write_mib", source="cgroup"
    )
    zero_host = samples(
        "host",
        [32.0, 32.0, 32.0],
        workload="io",
        op="cgroup",
        metric="io_write_mib",
        source="cgroup",
    )
    rows = analysis.summarize_run(
        pd.DataFrame(neg + zero + zero_host), manifest, scope=analysis.FOOTPRINT
    )
    by = {(r["env"], r["metric"]): r for r in rows}
    assert "negative io_read_mib" in by[("host", "io_read_mib")]["flags"][0]
    z = by[("vm", "io_write_mib")]
    assert "cgroup v1 keeps no I/O counts" in z["flags"][0] and z["ratio"] is None


def test_page_cache_reads_are_flagged():
    df = pd.DataFrame(
        samples("host", [900.0, 910.0, 905.0], workload="io", op="seq_read")
        + samples(
            "vm",
            [9e3, 9.1e3, 9e3],
            workload="io",
            op="seq_read",
            note="O_DIRECT not honoured: page cache",
        )
    )
    vm = next(r for r in analysis.summarize_run(df, MANIFEST) if r["env"] == "vm")
    assert "page-cache speed" in vm["flags"][0] and vm["ratio"] is None


def test_a_density_figure_is_not_taken_for_a_counter_or_a_page_cache_read():
    """density's MemAvailable drop per instance can be negative (noise), and its notes
    speak of the page cache settling: neither is the io probe's or a counter's flag."""
    note = "MemAvailable read after the page cache settled"
    df = pd.DataFrame(
        samples(
            "host",
            [-0.5, 0.2, 0.1],
            workload="density",
            op="n04",
            metric="mem_system_mib",
            note=note,
        )
        + samples(
            "vm", [9.0, 9.5, 9.2], workload="density", op="n04", metric="mem_system_mib", note=note
        )
    )
    rows = analysis.summarize_run(df, MANIFEST)
    assert not any(r["flags"] for r in rows)


def test_a_signed_figure_gets_no_ratio():
    """A figure declared signed (a difference that straddles 0) is shown with its median
    and CI; a ratio of two such differences (here -0.2 vs 9) would be no finding."""
    manifest = {
        **MANIFEST,
        "catalog": {
            "density": {
                "metrics": {"mem_system_mib": {"unit": "MiB", "better": "lower", "signed": True}}
            }
        },
    }
    df = pd.DataFrame(
        samples("host", [-0.5, 0.2, -0.1], workload="density", op="n04", metric="mem_system_mib")
        + samples("vm", [9.0, 9.5, 9.2], workload="density", op="n04", metric="mem_system_mib")
    )
    vm = next(r for r in analysis.summarize_run(df, manifest) if r["env"] == "vm")
    assert vm["ratio"] is None and vm["p_value"] is None and not vm["significant"]
    assert "signed figure" in vm["note"] and vm["median"] == 9.2
    plain = next(r for r in analysis.summarize_run(df, MANIFEST) if r["env"] == "vm")
    assert plain["ratio"] is not None  # the same rows, undeclared: a ratio (old runs)


def test_noisy_ops_have_no_precision_target():
    manifest = {
        **MANIFEST,
        "catalog": {"syscall": {"noisy": ["fork"]}, "startup": {"precision_floor": 0.1}},
    }
    df = pd.DataFrame(
        samples("host", [1.0, 2.0, 3.0], op="fork")
        + samples(
            "host",
            [10.0, 10.5, 11.0],
            workload="startup",
            op="phases",
            metric="ready_ms",
            source="phase",
        )
    )
    rows = {r["op"]: r for r in analysis.summarize_run(df, manifest)}
    assert rows["fork"]["precision_target"] is None and not rows["fork"]["reached_precision"]
    assert rows["phases"]["precision_target"] == 0.1


def test_verdict_words_follow_the_better_direction():
    assert analysis.verdict({"ratio": 0.036, "better": "higher", "unit": "ops/s"}) == "28× slower"
    assert analysis.verdict({"ratio": 1.3, "better": "lower", "unit": "ns"}) == "1.30× slower"
    assert analysis.verdict({"ratio": 0.8, "better": "lower", "unit": "ms"}) == "1.25× faster"
    assert analysis.verdict({"ratio": 1.8, "better": "lower", "unit": "MiB"}) == "1.80× more"
    assert analysis.verdict({"ratio": None}) == ""
    cpu = {"ratio": 6.59, "better": "lower", "unit": "ms", "scope": analysis.FOOTPRINT}
    assert analysis.verdict(cpu) == "6.59× more"


def test_the_checks_follow_the_catalogs_flags_not_the_workloads_name():
    """writes_data as the run recorded it: a workload of another name that writes data is
    checked as io is; io recorded without the flag is not; a run recorded before the flag
    existed takes the installed catalog's (io writes data)."""
    zero = {"op": "cgroup", "metric": "io_write_mib", "source": "cgroup"}
    df = pd.DataFrame(
        samples("host", [32.0] * 3, workload="disk", **zero)
        + samples("vm", [0.0] * 3, workload="disk", **zero)
        + samples("host", [32.0] * 3, workload="io", **zero)
        + samples("vm", [0.0] * 3, workload="io", **zero)
    )

    def flagged(catalog):
        rows = analysis.summarize_run(df, {**MANIFEST, "catalog": catalog}, scope="footprint")
        return {r["workload"] for r in rows if r["env"] == "vm" and r["flags"]}

    assert flagged({"disk": {"writes_data": True}, "io": {"writes_data": False}}) == {"disk"}
    assert flagged({"io": {"probe": "io"}}) == {"io"}  # recorded before the flag: installed


def test_phases_are_figures_of_the_workloads_the_catalog_says():
    df = pd.DataFrame(
        samples("host", [5.0, 5.1, 5.2], workload="startup", op="phases", source="phase")
        + samples("host", [7.0, 7.1, 7.2], workload="other", op="phases", source="phase")
    )
    assert set(analysis.measured(df)["workload"]) == {"startup"}
    assert set(analysis.measured(df, timed={"other"})["workload"]) == {"other"}
    recorded = {"catalog": {"other": {"phase_figures": True}}}
    assert analysis.phase_workloads(recorded) == {"startup", "other"}
