"""The summary table's logic on constructed samples (pure: no run needed)."""

import numpy as np
import pandas as pd

from bench import analysis, store


def samples(env, values, args="", op="null", workload="syscall"):
    return [
        {**dict.fromkeys(store.COLUMNS), "env": env, "workload": workload, "op": op,
         "metric": "ns_per_op", "unit": "ns", "value": v, "round": i + 1, "status": "ok",
         "source": "probe", "args": args}
        for i, v in enumerate(values)
    ]  # fmt: skip


MANIFEST = {"matrix": {"baseline": "host", "precision": 0.02},
            "environments": {"host": {"kind": "host"}, "vm": {"kind": "libvirt"}}}  # fmt: skip


def test_ratio_significance_and_holm_on_a_clear_shift():
    rng = np.random.default_rng(1)
    df = pd.DataFrame(samples("host", 100 + rng.normal(0, 1, 20))
                      + samples("vm", 200 + rng.normal(0, 1, 20)))  # fmt: skip
    rows = {r["env"]: r for r in analysis.summarize_run(df, MANIFEST)}
    vm = rows["vm"]
    assert 1.95 < vm["ratio_ci_low"] < vm["ratio"] < vm["ratio_ci_high"] < 2.05
    assert vm["significant"] and vm["p_adjusted"] < 1e-6 and vm["n"] == 20
    assert rows["host"]["ratio"] is None and not rows["host"]["significant"]


def test_no_ratio_against_a_baseline_that_ran_other_arguments():
    df = pd.DataFrame(samples("host", [100.0] * 5, args="--mem-mib 96")
                      + samples("vm", [50.0] * 5, args="--mem-mib 48"))  # fmt: skip
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
