"""The density section (issue 14): per environment and level of N instances held, both
memory sources side by side, line charts against N with CI bands, where the two sources
disagree, the levels that did not fit and why, and the claim as measured."""

from __future__ import annotations

import re
from typing import Any

from bench.report.fmt import with_ci
from bench.report.sections.common import figure, log_axis, merge_similar
from bench.report.view import RunView

STRATEGY = "density"
DENSITY_CHARTS = (  # (metric, title): one line per environment against N
    ("mem_accounted_mib", "memory per instance, accounted (cgroup + carriers)"),
    ("mem_system_mib", "memory per instance, system-wide (MemAvailable drop / N)"),
    ("start_ms", "start of one more instance with N held"),
)
DENSITY_TABLE = (
    "mem_accounted_mib",
    "mem_system_mib",
    "mem_cgroup_mib",
    "mem_carriers_mib",
    "start_ms",
    "stop_ms",
    "idle_cpu_ms_per_s",
    "cgroup_idle_cpu_ms_per_s",
)
DISAGREE_NOTE = "memory sources disagree"
NO_NOTES = {
    "rounds": 0,
    "disagree": 0,
    "disagree_min": None,
    "disagree_max": None,
    "example": "",
    "other": [],
    "guest": [],
}


def section(v: RunView) -> dict[str, Any] | None:
    """The density section, or None when the run planned and recorded no density
    workload."""
    if not len(v.df):
        return None
    workloads = v.workloads(STRATEGY)
    got = [r for r in v.rows_of(STRATEGY) if level_n(r["op"]) is not None]
    unfit = unfit_levels(v.df, v.envs, workloads)
    if not got and not unfit and not v.planned(STRATEGY):
        return None
    order = [e for e in v.envs if any(r["env"] == e for r in got)]
    idx = {(r["env"], level_n(r["op"]), r["metric"]): r for r in got}
    lines: dict[str, dict[str, list]] = {}
    table = []
    for env in order:
        levels = sorted({n for (e, n, _) in idx if e == env})
        notes = level_notes(v.data, env, workloads) if len(v.data) else {}
        for n in levels:
            cells = {
                m: figure(idx[(env, n, m)], v.baseline) for m in DENSITY_TABLE if (env, n, m) in idx
            }
            table.append(
                {
                    "env": env,
                    "n": n,
                    "emulated": v.emulated(env),
                    "cells": cells,
                    "notes": notes.get(n) or dict(NO_NOTES),
                }
            )
            for m, c in cells.items():
                lines.setdefault(env, {}).setdefault(m, []).append(
                    {
                        "n": n,
                        "median": c["median"],
                        "ci_low": c["ci_low"],
                        "ci_high": c["ci_high"],
                        "count": c["n"],
                    }
                )
    guest_notes = sorted({g for t in table for g in t["notes"]["guest"]})
    described = {e: _described(v, e) for e in lines}
    return {
        "envs": order,
        "levels": sorted({t["n"] for t in table}),
        "table": table,
        "charts": charts(lines, order, v),
        "headline": density_headline(lines, described),
        "disagree": any(t["notes"].get("disagree") for t in table),
        "guest_notes": guest_notes,
        "unfit": unfit,
    }


def _described(v: RunView, env: str) -> dict[str, Any]:
    """What density_headline reads of an environment: kind, runtime, emulated."""
    e = v.env(env)
    if e is None:
        return {}
    return {"kind": e.kind, "emulated": e.emulated, "runtime": v.extra(env, "runtime")}


def charts(lines: dict[str, dict[str, list]], order: list[str], v: RunView) -> list[dict]:
    out = []
    for metric, title in DENSITY_CHARTS:
        series = [
            {"env": env, "emulated": v.emulated(env), "points": lines[env][metric]}
            for env in order
            if metric in lines.get(env, {})
        ]
        if not series:
            continue
        tuples = [
            [(p["n"], p["median"], p["ci_low"], p["ci_high"]) for p in s["points"]] for s in series
        ]
        out.append(
            {
                "id": f"d{len(out)}",
                "metric": metric,
                "title": title,
                "unit": "ms" if metric.endswith("_ms") else "MiB",
                "log": log_axis(tuples),
                "series": series,
            }
        )
    return out


def level_n(op: str) -> int | None:
    """The level's N from its op (`n08` -> 8); None for anything else."""
    m = re.fullmatch(r"n(\d+)", op)
    return int(m.group(1)) if m else None


def level_notes(data, env: str, workloads: list[str]) -> dict[int, dict[str, Any]]:
    """Per level of one environment: how many measured rounds carry the two-sources
    disagreement note (and its range of %), what a guest's memory figure means, and the
    other notes (those differing only in their numbers merged)."""
    sub = data[(data["env"] == env) & data["workload"].isin(workloads)]
    out: dict[int, dict[str, Any]] = {}
    for op, g in sub.groupby("op"):
        n = level_n(str(op))
        if n is None:
            continue
        per_round = g.groupby("round")["note"].first().fillna("")
        disagree, pct, other, guest = 0, [], [], []
        for note in per_round:
            parts = [p.strip() for p in str(note).split("; ") if p.strip()]
            hits = [p for p in parts if p.startswith(DISAGREE_NOTE)]
            disagree += bool(hits)
            pct += [float(x) for p in hits for x in re.findall(r"by (\d+(?:\.\d+)?)%", p)]
            other += [p for p in parts if not p.startswith((DISAGREE_NOTE, "guest:"))]
            guest += [p for p in parts if p.startswith("guest:")]
        out[n] = {
            "rounds": len(per_round),
            "disagree": disagree,
            "disagree_min": min(pct) if pct else None,
            "disagree_max": max(pct) if pct else None,
            "example": next(
                (
                    p
                    for note in per_round
                    for p in str(note).split("; ")
                    if p.startswith(DISAGREE_NOTE)
                ),
                "",
            ),
            "other": merge_similar(other),
            "guest": sorted(set(guest)),
        }
    return out


def env_noun(label: str, e: dict[str, Any]) -> str:
    """How the headline names one instance of an environment ("an oci container (runc)")."""
    kind = e.get("kind") or ""
    runtime = (e.get("runtime") or {}).get("name") if isinstance(e.get("runtime"), dict) else None
    if kind in ("libvirt", "qemu"):
        noun = f"{label} guest" + (" (emulated)" if e.get("emulated") else "")
    elif kind in ("docker", "podman", "oci", "cri", "k8s"):
        noun = f"{label} container" + (f" ({runtime})" if runtime and runtime not in label else "")
    elif kind == "host":
        return f"a bare process on {label}" if label != "host" else "a bare host process"
    else:
        noun = f"{label} instance"
    return ("an " if noun[:1].lower() in "aeio" else "a ") + noun


def density_headline(lines: dict[str, dict[str, list]], described: dict[str, Any]) -> list[dict]:
    """The claim as measured, per environment: accounted memory per instance at its largest
    level (system-wide beside it), and the start of one more at the largest level against
    the smallest. Built from the figures only."""
    out = []
    for env, by_metric in lines.items():
        e = described.get(env, {})
        mem = by_metric.get("mem_accounted_mib") or []
        sysm = {p["n"]: p for p in by_metric.get("mem_system_mib") or []}
        start = by_metric.get("start_ms") or []
        parts = []
        if mem:
            top = mem[-1]
            text = (
                f"{env_noun(env, e)} costs the host {with_ci(top, 'MiB')} per instance with "
                f"{top['n']} held (accounted)"
            )
            if top["n"] in sysm:
                text += f"; system-wide {with_ci(sysm[top['n']], 'MiB')}"
            parts.append(text)
        if len(start) >= 2:
            lo, hi = start[0], start[-1]
            parts.append(
                f"with {hi['n']} held, one more starts in {with_ci(hi, 'ms')} vs "
                f"{with_ci(lo, 'ms')} with {lo['n']} held"
            )
        elif start:
            parts.append(f"with {start[0]['n']} held, one more starts in {with_ci(start[0], 'ms')}")
        if parts:
            out.append({"env": env, "emulated": bool(e.get("emulated")), "text": "; ".join(parts)})
    return out


def unfit_levels(df, envs: list[str], workloads: list[str]) -> list[dict[str, Any]]:
    """The density levels recorded as failed or skipped (the memory reserve, a start that
    failed, the level before failed), per environment, their reasons merged."""
    bad = df[df["workload"].isin(workloads) & (df["status"] != "ok") & (df["round"] >= 0)]
    out = []
    order = {e: i for i, e in enumerate(envs)}
    for env, g in sorted(bad.groupby("env"), key=lambda kv: (order.get(kv[0], 99), kv[0])):
        reasons = [r if isinstance(r, str) and r else "no reason" for r in g["reason"]]
        out.append({"env": env, "lines": merge_similar(reasons)})
    return out
