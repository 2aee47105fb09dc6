"""The core sections, from launched probes: the headline sentences per environment, the
heatmap of ratios, one chart per figure, the startup waterfall and the host-side
footprint of every launch."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from bench import analysis
from bench.report.fmt import (
    OP_NAMES,
    PHASES,
    fmt_num,
    fmt_quantity,
    fmt_ratio,
    op_words,
    short_label,
    time_scale,
)
from bench.report.sections.common import cost, finding, wide
from bench.report.view import RunView, better, family
from bench.store import json_safe

STRIP_MAX = 400  # sample points drawn per series in a strip (the box uses all of them)
FOOTPRINT_KEY = ("cpu_total_ms", "mem_peak_mib", "cpu_ms", "rss_mib", "pss_mib")


def section(v: RunView) -> dict[str, Any] | None:
    """headline, heatmap, charts, startup and footprint; None when the run has neither a
    main figure nor a footprint figure."""
    foot = footprint_rows(v) if len(v.df) else []
    if not v.rows and not foot:
        return None
    emulated = {e: v.emulated(e) for e in v.manifest.environments}
    return {
        "headline": headline(v.rows, v.catalog, v.baseline, v.measured, emulated, v.n_boot),
        "heatmap": heatmap(v.rows, v.baseline, v.measured),
        "charts": charts(v.rows, v.data, v.catalog, v.measured) if len(v.data) else [],
        "startup": startup(v.rows, v.measured),
        "footprint": footprint(foot, v.envs),
    }


def sentence(row: dict[str, Any], base: dict[str, Any], emulated: bool) -> dict:
    """The quotable line for one cell vs the baseline."""
    env, unit, b = row["env"], row["unit"], row.get("better", "lower")
    words = op_words(row["workload"], row["op"], row["metric"])
    med, bmed = row["median"], base["median"]
    diff = None if med is None or bmed is None else med - bmed
    lo = hi = None
    if bmed is not None and row["ratio_ci_low"] is not None:
        lo, hi = bmed * (row["ratio_ci_low"] - 1), bmed * (row["ratio_ci_high"] - 1)
    f, u = time_scale([diff, lo, hi], unit)
    num = lambda x: fmt_num(None if x is None else abs(x) * f)  # noqa: E731
    worse = (diff or 0) > 0 if b != "higher" else (diff or 0) < 0
    lo_r, hi_r = fmt_num(row["ratio_ci_low"]), fmt_num(row["ratio_ci_high"])
    ratio_ci = f"{fmt_ratio(row['ratio'])} [{lo_r}, {hi_r}]"
    if row["significant"] and diff is not None:
        a, z = (lo, hi) if diff > 0 else (hi, lo)
        if b != "higher":
            verb = "adds" if diff > 0 else "saves"
        else:
            verb = "loses" if diff < 0 else "gains"
        text = (
            f"{env} {verb} {num(diff)} {u} [{num(a)}, {num(z)}] {words}: "
            f"{analysis.verdict(row)} (ratio {ratio_ci})"
        )
    else:
        text = (
            f"{env}: no detectable difference {words} ({fmt_quantity(med, unit)} vs "
            f"{fmt_quantity(bmed, unit)} on {base['env']}, {ratio_ci}, n.s.)"
        )
        if mde := analysis.undetected(row):  # "none ≥×1.04": what this run could have seen
            text += f"; this run could have detected {mde.removeprefix('none ')}"
    if emulated:
        text += " — emulated (TCG), not a KVM overhead"
    return {
        "text": text,
        "significant": bool(row["significant"]),
        "worse": bool(worse),
        "workload": row["workload"],
        "op": row["op"],
        "metric": row["metric"],
    }


def geomean_ci(costs: list[tuple], n_boot: int = 2000, seed: int = 0) -> tuple[float, ...]:
    """Geometric mean of (ratio, low, high) cost ratios with a 95% bootstrap CI: each
    replicate resamples the figures and draws each figure's log ratio from a normal with
    the standard error its own CI implies, so the CI holds both which figures the family
    has and how precisely each was measured."""
    logs = np.log([c[0] for c in costs])
    se = np.array(
        [math.log(hi / lo) / (2 * 1.96) if lo and hi and lo > 0 else 0.0 for _, lo, hi in costs]
    )
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, logs.size, size=(n_boot, logs.size))
    draws = logs[idx] + rng.standard_normal(idx.shape) * se[idx]
    lo, hi = np.exp(np.quantile(draws.mean(axis=1), [0.025, 0.975]))
    return float(np.exp(logs.mean())), float(lo), float(hi)


def family_summary(fam: str, rows: list[dict[str, Any]], n_boot: int) -> str:
    costs = [cost(r, r.get("better", "lower")) for r in rows]
    sig = [c[0] for r, c in zip(rows, costs, strict=True) if r["significant"]]
    worse, good = sum(c > 1 for c in sig), sum(c < 1 for c in sig)
    text = f"{fam}: {worse} of {len(rows)} figures significantly worse, {good} better"
    positive = [c for c in costs if c[0] and c[0] > 0]
    if not positive:
        return text
    gm, lo, hi = geomean_ci(positive, n_boot)
    return f"{text}; geometric-mean cost {fmt_ratio(gm)} [{fmt_num(lo)}, {fmt_num(hi)}]"


def headline(
    rows, cat, baseline: str, envs: list[str], emulated: dict[str, bool], n_boot: int = 2000
) -> list[dict]:
    base = {(r["workload"], r["op"], r["metric"]): r for r in rows if r["env"] == baseline}
    out = []
    for env in envs:
        if env == baseline:
            continue
        fams: dict[str, list] = {}
        for r in rows:
            k = (r["workload"], r["op"], r["metric"])
            if r["env"] == env and finding(r) and k in base:
                fams.setdefault(family(cat, r["workload"]), []).append(r)
        families = [
            {
                "family": fam,
                "summary": family_summary(fam, frows, n_boot),
                "sentences": [
                    sentence(
                        r, base[(r["workload"], r["op"], r["metric"])], emulated.get(env, False)
                    )
                    for r in frows
                ],
            }
            for fam, frows in fams.items()
        ]
        flags = [f for r in rows if r["env"] == env for f in r.get("flags") or []]
        out.append(
            {"env": env, "emulated": emulated.get(env, False), "families": families, "flags": flags}
        )
    return out


def heatmap(rows, baseline: str, envs: list[str]) -> dict[str, Any]:
    """Ratio cells of every env but the baseline; a flagged figure, or one with a note on
    why it has no ratio, is a cell without a colour or ratio that says so."""
    shown = [
        r
        for r in rows
        if r["env"] in envs
        and r["env"] != baseline
        and (finding(r) or r.get("flags") or r.get("note"))
    ]
    cols = sorted({(r["workload"], r["op"], r["metric"]) for r in shown})
    ys = [e for e in envs if e != baseline and any(r["env"] == e for r in shown)]
    cells = []
    for r in shown:
        c, _, _ = cost(r, r.get("better", "lower"))
        cells.append(
            {
                "x": cols.index((r["workload"], r["op"], r["metric"])),
                "y": ys.index(r["env"]),
                "value": math.log2(c) if c and c > 0 else 0.0,
                "ratio": r["ratio"],
                "lo": r["ratio_ci_low"],
                "hi": r["ratio_ci_high"],
                "cost": c,
                "significant": bool(r["significant"]),
                "better": r.get("better", "lower"),
                "p": r["p_adjusted"],
                "median": r["median"],
                "unit": r["unit"],
                "words": analysis.verdict(r) if r["significant"] else "",
                "undetected": analysis.undetected(r),
                "flags": r.get("flags") or [],
                "note": r.get("note") or "",
            }
        )
    return {
        "columns": [
            {"workload": w, "op": o, "metric": m, "label": short_label(w, o, m, cols)}
            for w, o, m in cols
        ],
        "envs": ys,
        "cells": cells,
    }


def _box(values: np.ndarray) -> list[float]:
    q = np.percentile(values, [0, 25, 50, 75, 100])
    return [float(x) for x in q]


def _strip(values: np.ndarray) -> list[float]:
    if values.size > STRIP_MAX:  # evenly spaced order statistics keep the shape
        values = np.sort(values)[np.linspace(0, values.size - 1, STRIP_MAX).astype(int)]
    return [float(f"{v:.6g}") for v in values]


def charts(rows, data, cat, envs: list[str]) -> list[dict[str, Any]]:
    """One chart per (workload, op, metric): median + CI per env, box and strip."""
    by_key: dict[tuple, dict[str, np.ndarray]] = {}
    (values,) = analysis.by_cell(data, "value")
    for (env, w, o, m), v in values.items():
        by_key.setdefault((w, o, m), {})[env] = v
    index = {(r["env"], r["workload"], r["op"], r["metric"]): r for r in rows}
    out = []
    for (w, o, m), per_env in sorted(by_key.items()):
        series = []
        for env in [e for e in envs if e in per_env] + sorted(set(per_env) - set(envs)):
            v = per_env[env]
            v = v[np.isfinite(v)]
            r = index.get((env, w, o, m))
            if r is None or not v.size:
                continue
            series.append(
                {
                    "env": env,
                    "median": r["median"],
                    "ci_low": r["ci_low"],
                    "ci_high": r["ci_high"],
                    "n": r["n"],
                    "ratio": r["ratio"],
                    "significant": r["significant"],
                    "words": analysis.verdict(r) if r["significant"] else "",
                    "flags": r.get("flags") or [],
                    "box": _box(v),
                    "points": _strip(v),
                }
            )
        if not series:
            continue
        lows = [s["box"][0] for s in series] + [s["ci_low"] for s in series]
        unit = index[(series[0]["env"], w, o, m)]["unit"]
        out.append(
            {
                "id": f"c{len(out)}",
                "workload": w,
                "op": o,
                "metric": m,
                "unit": unit,
                "family": family(cat, w),
                "better": better(cat, w, m),
                "log": wide([s["median"] for s in series], lows),
                "title": f"{w} · {m if o == 'phases' else OP_NAMES.get(o, o)}",
                "description": cat.get(w, {}).get("metrics", {}).get(m, {}).get("description", ""),
                "series": series,
            }
        )
    return out


def startup(rows, envs: list[str]) -> dict[str, Any]:
    """Median launch-phase times per env (ms since submit). The main figures hold the
    phases of the startup workload only (analysis.MAIN)."""
    got = {(r["env"], r["metric"]): r for r in rows if r["metric"] in PHASES}
    out = []
    for env in envs:
        ph = {
            p: {
                "median": got[(env, p)]["median"],
                "ci_low": got[(env, p)]["ci_low"],
                "ci_high": got[(env, p)]["ci_high"],
                "n": got[(env, p)]["n"],
            }
            for p in PHASES
            if (env, p) in got
        }
        if ph:
            emulated = any(got[(env, p)].get("emulated") for p in ph)
            out.append({"env": env, "emulated": emulated, "phases": ph})
    return {"envs": out, "has_boot": any("boot_ms" in e["phases"] for e in out)}


def footprint(rows, envs: list[str]) -> dict[str, Any]:
    """Host-side and cgroup costs per env (all workloads), and a chart of the key ones."""
    order = {e: i for i, e in enumerate(envs)}
    keep = ("env", "workload", "op", "metric", "unit", "median", "ci_low", "ci_high", "n")
    table = sorted(
        ({k: r[k] for k in keep} for r in rows),
        key=lambda r: (r["op"], r["metric"], r["workload"], order.get(r["env"], 99), r["env"]),
    )
    charts = []
    for source, metric, unit in sorted({(r["op"], r["metric"], r["unit"]) for r in table}):
        if metric not in FOOTPRINT_KEY:
            continue
        series = [r for r in table if r["op"] == source and r["metric"] == metric]
        charts.append(
            {
                "id": f"f{len(charts)}",
                "source": source,
                "metric": metric,
                "unit": unit,
                "title": f"{source} · {metric}",
                "series": series,
                "log": wide([r["median"] for r in series], []),
            }
        )
    return {"rows": table, "charts": charts}


def footprint_rows(v: RunView) -> list[dict[str, Any]]:
    """Median and CI of every cgroup / host-side figure per cell. No ratios or tests:
    the footprint is shown, not tested (and a bootstrap per figure would cost seconds)."""
    from bench import stats

    data = analysis.measured(v.df, analysis.FOOTPRINT)
    rows = []
    values, units = analysis.by_cell(data, "value", "unit")
    for (env, workload, op, metric), vals in values.items():
        sm = stats.summarize(vals)
        e = v.env(env)
        rows.append(
            {
                "env": env,
                "env_kind": e.kind if e else None,
                "workload": workload,
                "op": op,
                "metric": metric,
                "unit": units[(env, workload, op, metric)],
                "n": int(sm.n),
                **{f: json_safe(getattr(sm, f)) for f in ("median", "ci_low", "ci_high")},
            }
        )
    return rows
