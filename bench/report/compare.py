"""Compare two runs figure by figure: medians A and B over rounds, the change with its CI
from Yuen's two-sample trimmed t on the logs of the per-round figures (two runs' rounds
do not pair; Welch's degrees of freedom),
Benjamini–Hochberg across the figures, and a regression/improvement verdict that knows
whether lower or higher is better.

A figure that both runs paired with their baseline (the burst design, a start paired
with a baseline launch next to it) is compared on that pairing: the change of its
per-round log ratios to the baseline (its isolation cost), which the machine's speed
from one run to the next does not move as it moves the absolute figures (`basis`:
"ratio to host"). The baseline's own figures, and figures without such pairing, are
compared as absolute figures (`basis`: "absolute")."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from bench import analysis, provenance, stats, store
from bench.report.view import as_manifest, better, catalog_of
from bench.store import json_safe
from bench.targets import LOCAL


class CompareError(store.StoreError):
    """Two runs that cannot be compared; the message is one line for the user."""


def load(run_dir: Path) -> tuple[dict[str, Any], Any]:
    return store.read_manifest(run_dir), store.load_samples(run_dir)


def _groups(df) -> dict[tuple, Any]:
    """Per figure: its per-round values (analysis.per_round) and its unit."""
    data = analysis.measured(df, analysis.MAIN)
    (units,) = analysis.by_cell(data, "unit")
    return {k: (list(v.values()), units[k]) for k, v in analysis.per_round(data).items()}


def host_warnings(ma: dict[str, Any], mb: dict[str, Any]) -> list[str]:
    """What makes the two runs not directly comparable: the facts of each target machine
    both ran on (the local host, remote ones), env versions."""
    out = []
    ta, tb = _targets(ma), _targets(mb)
    for name in sorted(set(ta) & set(tb)):
        what = "hosts differ" if name == LOCAL else f"target {name} differs"
        out += [f"{what}: {d}" for d in provenance.differences(ta[name], tb[name])]
    ea, eb = ma.get("environments") or {}, mb.get("environments") or {}
    for label in sorted(set(ea) & set(eb)):
        va, vb = ea[label].get("versions") or {}, eb[label].get("versions") or {}
        for k in sorted(set(va) | set(vb)):
            if va.get(k) != vb.get(k):
                out.append(f"{label}: {k} version differs: {va.get(k)!r} vs {vb.get(k)!r}")
    if (ma.get("bundle") or {}).get("hash") != (mb.get("bundle") or {}).get("hash"):
        out.append("probe bundles differ: the runs did not execute the same probe binaries")
    return out


def _baseline(m: dict[str, Any]) -> str:
    return (m.get("matrix") or {}).get("baseline") or "host"


def _targets(m: dict[str, Any]) -> dict[str, Any]:
    return m.get("targets") or {LOCAL: m.get("host") or {}}


def compare(ma, dfa, mb, dfb, *, threshold: float = 5.0, n_boot: int = 2000) -> dict[str, Any]:
    """Per-figure changes from run A to run B; `threshold` in percent. CompareError when
    the runs have no figure in common."""
    cat = catalog_of(as_manifest(mb)) or catalog_of(as_manifest(ma))
    ga, gb = _groups(dfa), _groups(dfb)
    base_a, base_b = _baseline(ma), _baseline(mb)
    ra = analysis.paired_log_ratios(dfa, base_a)
    rb = analysis.paired_log_ratios(dfb, base_b) if base_a == base_b else {}
    if not set(ga) & set(gb):
        raise CompareError(
            f"runs {ma.get('run_id')} and {mb.get('run_id')} have no figure in common "
            "(environment, workload, op, metric): nothing to compare"
        )
    cells = []
    for key in sorted(set(ga) & set(gb)):
        env, workload, op, metric = key
        (a, unit), (b, _) = ga[key], gb[key]
        sa, sb = stats.summarize(a, n_boot=n_boot), stats.summarize(b, n_boot=n_boot)
        if key in ra and key in rb:  # the isolation cost's change, not the machine's
            t = stats.log_ratio_test(np.exp(rb[key]), np.exp(ra[key]), paired=False)
            basis = f"ratio to {base_a}"
        else:
            t, basis = stats.log_ratio_test(b, a, paired=False), "absolute"
        cells.append(
            {
                "env": env,
                "workload": workload,
                "op": op,
                "metric": metric,
                "unit": unit,
                "better": better(cat, workload, metric),
                "n_a": int(sa.n),
                "n_b": int(sb.n),
                "median_a": json_safe(sa.median),
                "median_b": json_safe(sb.median),
                "ci_a": [json_safe(sa.ci_low), json_safe(sa.ci_high)],
                "ci_b": [json_safe(sb.ci_low), json_safe(sb.ci_high)],
                "ratio": json_safe(t.ratio),
                "change_pct": _pct(t.ratio),
                "change_ci_low": _pct(t.low),
                "change_ci_high": _pct(t.high),
                "p_value": json_safe(t.p_value),
                "basis": basis,
            }
        )
    tested = [i for i, c in enumerate(cells) if c["p_value"] is not None]
    adjusted = stats.benjamini_hochberg([cells[i]["p_value"] for i in tested]) if tested else []
    for c in cells:
        c["p_adjusted"], c["significant"] = None, False
    for i, p in zip(tested, adjusted, strict=True):
        c = cells[i]
        c["p_adjusted"] = json_safe(p)
        lo, hi = c["change_ci_low"], c["change_ci_high"]
        c["significant"] = bool(lo is not None and stats.significant(p, 1 + lo / 100, 1 + hi / 100))
    for c in cells:
        c["verdict"] = verdict(c, threshold)
    return {
        "run_a": ma.get("run_id"),
        "run_b": mb.get("run_id"),
        "threshold": threshold,
        "cells": cells,
        "only_a": [list(k) for k in sorted(set(ga) - set(gb))],
        "only_b": [list(k) for k in sorted(set(gb) - set(ga))],
        "warnings": host_warnings(ma, mb),
        "regressions": sum(c["verdict"] == "regression" for c in cells),
        "improvements": sum(c["verdict"] == "improvement" for c in cells),
        "host_a": (ma.get("host") or {}).get("hostname"),
        "host_b": (mb.get("host") or {}).get("hostname"),
    }


def verdict(c: dict[str, Any], threshold: float) -> str:
    """regression | improvement: significant, and its CI reaches beyond the threshold
    (the change may be that large); `within threshold`: significant, and its whole CI is
    within +-threshold (shown to be small); else `n.s.`.

    Why the CI and not the point estimate: a gate should pass a change only when the run
    shows it is small. A real 5% cost (cpus=0.95 on compute) read -4.4% [-5.2, -3.6] in a
    quick run, and the estimate alone passed it at the default 5%."""
    if not c["significant"] or c["change_pct"] is None:
        return "n.s."
    lo, hi = c["change_ci_low"], c["change_ci_high"]
    if -threshold <= lo and hi <= threshold:
        return "within threshold"
    up = c["change_pct"] > 0
    return "regression" if up == (c["better"] != "higher") else "improvement"


def flagged(result: dict[str, Any]) -> bool:
    """True when any cell changed significantly and may have changed by more than the
    threshold (exit status 1)."""
    return any(c["verdict"] in ("regression", "improvement") for c in result["cells"])


def _pct(r) -> float | None:
    r = json_safe(r)
    return None if r is None else (r - 1.0) * 100.0
