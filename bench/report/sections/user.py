"""The user's own workloads (bench/families/user.py and userserver.py), one table each: a row
per benchmark by its pytest name (or per command figure), a column per environment with
the median, its CI, the ratio and the verdict; and each environment's failed launches or
benchmarks with their reasons."""

from __future__ import annotations

from typing import Any

from bench.report.sections.common import figure
from bench.report.view import RunView

STRATEGIES = ("user", "userserver")


def section(v: RunView) -> list[dict[str, Any]] | None:
    """One table per user workload in the catalog; None when the run has none."""
    declared = {u.get("name"): u for u in v.manifest.matrix.get("user_workloads", [])}
    out = [_table(v, w, declared.get(w, {})) for w in v.workloads(*STRATEGIES)]
    return out or None


def _table(v: RunView, w: str, u: dict[str, Any]) -> dict[str, Any]:
    what = (
        f"pytest-benchmark suite in {u.get('dir')}"
        if u.get("kind") == "pytest-benchmark"
        else f"{' '.join(u.get('argv') or ())} (parser {u.get('parser')})"
    )
    got = {(r["env"], r["op"], r["metric"]): r for r in v.rows if r["workload"] == w}
    shown = [e for e in v.measured if any(k[0] == e for k in got)]
    figures = [
        {
            "op": op,
            "metric": m,
            "unit": got[next(k for k in got if k[1:] == (op, m))]["unit"],
            "better": v.better(w, m),
            "cells": {e: figure(got[(e, op, m)], v.baseline) for e in shown if (e, op, m) in got},
        }
        for op, m in sorted({k[1:] for k in got})
    ]
    failed = [
        f"{f['env']}: {f['count']}× {f['status']}: {f['reason'] or 'no reason'}"
        for f in v.fails
        if f["workload"] == w
    ]
    return {
        "name": w,
        "description": what if u else "",
        "envs": shown,
        "emulated": {e: v.emulated(e) for e in shown},
        "figures": figures,
        "failed": failed,
    }
