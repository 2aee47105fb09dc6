"""Report figures, printed (not a test):

* the size of the report of a real quick run (RUN_DIR argument, or the newest run under
  ./results) - the budget is 5 MB;
* the time to render a synthetic run of 100,000 samples (model + statistics + HTML) - the
  budget is 3 s. Synthetic data is only used for this speed figure.

    python benchmarks/bench_report.py [RUN_DIR]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from bench import store
from bench.report import fmt, html

OPS = list(fmt.OP_NAMES)  # the syscall probe's ops, each named in the report
FOOT = ["cpu_user_ms", "cpu_system_ms", "cpu_total_ms", "mem_peak_mib", "pids_peak"]


def synthetic(n_target: int = 100_000, rounds: int = 30, seed: int = 0):
    """A run shaped like a big real one: the default max_rounds (30) and as many
    environments as it takes (syscall ops + startup phases + cgroup figures per launch)
    to reach n_target records."""
    rng = np.random.default_rng(seed)
    per_env_round = len(OPS) + 3 + 2 * len(FOOT)
    envs = ["host"] + [f"env{i}" for i in range(1, n_target // (rounds * per_env_round) + 1)]
    rows = []
    for r in range(rounds):
        for i, env in enumerate(envs):
            f = 1 + 0.3 * i
            for op in OPS:
                rows.append(
                    (
                        r,
                        env,
                        "syscall",
                        op,
                        "ns_per_op",
                        "ns",
                        "probe",
                        rng.lognormal(np.log(200 * f), 0.05),
                    )
                )
            for p, base in (("ready_ms", 20), ("exit_ms", 21), ("cleaned_ms", 24)):
                rows.append(
                    (
                        r,
                        env,
                        "startup",
                        "phases",
                        p,
                        "ms",
                        "phase",
                        rng.lognormal(np.log(base * f), 0.1),
                    )
                )
            for w in ("syscall", "startup"):
                for m in FOOT:
                    rows.append((r, env, w, "cgroup", m, "ms", "cgroup", rng.gamma(5, f)))
    df = pd.DataFrame(
        rows[:n_target],
        columns=["round", "env", "workload", "op", "metric", "unit", "source", "value"],
    )
    df["round"] += 1
    df = df.assign(
        run_id="synthetic",
        cell=df["env"] + "|" + df["workload"],
        env_kind="x",
        spec=df["env"],
        options="{}",
        emulated=False,
        launch=0,
        t=0.0,
        status="ok",
        reason="",
        note="",
        args="",
        exit_code=None,
        stderr_tail="",
    )
    manifest = {
        "schema_version": 1,
        "run_id": "synthetic",
        "status": "complete",
        "matrix": {"baseline": "host", "envs": [{"label": e} for e in envs]},
        "environments": {e: {"kind": "x", "available": True} for e in envs},
    }
    return manifest, df[list(store.COLUMNS)]


def main() -> None:
    runs = sorted(Path("results").glob("*/manifest.json")) if len(sys.argv) < 2 else []
    run = Path(sys.argv[1]) if len(sys.argv) > 1 else (runs[-1].parent if runs else None)
    if run:
        m, df = store.read_manifest(run), store.load_samples(run)
        t = time.perf_counter()
        text = html.render(m, df)
        dt = time.perf_counter() - t
        size = len(text.encode())
        print(
            f"quick run {run.name}: {len(df)} samples, report {size / 1e6:.2f} MB "
            f"(budget 5 MB: {'ok' if size < 5e6 else 'OVER'}), rendered in {dt:.2f} s"
        )
    else:
        print("no run given and none under ./results: report size not measured")
    manifest, df = synthetic()
    html.render(manifest, df.head(2000))  # warm the template and asset caches
    t = time.perf_counter()
    text = html.render(manifest, df)
    dt = time.perf_counter() - t
    cells = df.groupby(["env", "workload"]).ngroups
    print(
        f"synthetic run: {len(df)} samples ({cells} cells x 30 rounds) rendered in {dt:.2f} s "
        f"(budget 3 s: {'ok' if dt < 3 else 'OVER'}), report {len(text.encode()) / 1e6:.2f} MB"
    )


if __name__ == "__main__":
    main()
