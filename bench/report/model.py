"""The report's data model: a run (manifest + samples DataFrame) -> one JSON-ready dict.

Pure: no files, no HTML. Everything the report shows comes from here: the headline
sentences, the heatmap matrix, the per-op chart series, startup phases, the host-side
footprint, provenance, warnings, methodology and the raw samples (column-wise, for the
CSV download). Strings are left as they are; escaping is the renderer's job.
"""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np

from bench import analysis
from bench.store import json_safe

PHASES = ("ready_ms", "exit_ms", "cleaned_ms", "boot_ms")
# What the probes call an op, in words a reader recognises (the rest are shown as is).
OP_NAMES = {
    "null": "getppid()",
    "read": "1-byte read()",
    "write": "1-byte write()",
    "clock_gettime": "clock_gettime() (vDSO)",
    "open_close": "open()+close()",
    "stat": "stat()",
    "fstat": "fstat()",
    "page_fault": "page fault",
    "fork": "fork()+wait()",
    "fork_exec": "fork()+exec()",
    "pipe_pingpong": "pipe round trip",
}
TIME_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0}
STRIP_MAX = 400  # sample points drawn per series in a strip (the box uses all of them)
FOOTPRINT_KEY = ("cpu_total_ms", "mem_peak_mib", "cpu_ms", "rss_mib", "pss_mib")


# -- formatting --------------------------------------------------------------------------
def fmt_num(x: float | None, digits: int = 3) -> str:
    """3 significant digits, thousands separators, no exponent for usual magnitudes."""
    if x is None or not math.isfinite(x):
        return "–"
    if x == 0:
        return "0"
    ax = abs(x)
    if ax >= 10**digits:
        return f"{x:,.0f}"
    if ax < 1e-3:
        return f"{x:.{digits}g}"
    decimals = max(0, digits - 1 - math.floor(math.log10(ax)))
    return f"{x:.{decimals}f}"


def time_scale(values: list[float], unit: str) -> tuple[float, str]:
    """(factor, unit) that puts time figures in a readable unit (ns -> µs -> ms -> s)."""
    if unit not in TIME_UNITS:
        return 1.0, unit
    finite = [abs(v) for v in values if v is not None and math.isfinite(v) and v != 0]
    if not finite:
        return 1.0, "µs" if unit == "us" else unit
    seconds = min(finite) * TIME_UNITS[unit]
    for name, size in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6), ("ns", 1e-9)):
        if seconds >= size or name == "ns":
            return TIME_UNITS[unit] / size, name
    return 1.0, unit  # pragma: no cover


def fmt_quantity(x: float | None, unit: str) -> str:
    f, u = time_scale([x] if x is not None else [], unit)
    return f"{fmt_num(None if x is None else x * f)} {u}"


def fmt_ratio(r: float | None) -> str:
    return "–" if r is None else f"×{fmt_num(r)}"


def op_words(workload: str, op: str, metric: str) -> str:
    if op == "phases" or metric in PHASES:
        return f"to {metric.removesuffix('_ms')} (startup)"
    if metric == "ns_per_op":
        return f"per {OP_NAMES.get(op, op)}"
    return f"in {workload} {op} ({metric})"


def short_label(workload: str, op: str, metric: str, keys) -> str:
    """`workload · op`, plus the metric only where one op has several figures."""
    if op == "phases" or metric in PHASES:
        return f"{workload} · {metric.removesuffix('_ms')}"
    several = sum(1 for w, o, _ in keys if (w, o) == (workload, op)) > 1
    name = OP_NAMES.get(op, op).removesuffix(" (vDSO)")
    return f"{workload} · {name}" + (f" {metric}" if several else "")


def fmt_ci(median, lo, hi, unit: str) -> tuple[str, str, str]:
    """(median, "[lo, hi]", unit) in one readable unit."""
    f, u = time_scale([median], unit)
    n = lambda x: fmt_num(None if x is None else x * f)  # noqa: E731
    return n(median), f"[{n(lo)}, {n(hi)}]", u


# -- catalog -----------------------------------------------------------------------------
def catalog_of(manifest: dict[str, Any]) -> dict[str, Any]:
    """The catalog recorded in the run ({workload: {family, metrics: {m: {unit, better}}}})."""
    cat = manifest.get("catalog")
    if isinstance(cat, dict) and cat:
        return cat
    try:  # older runs without the catalog in the manifest: the installed one
        from bench import catalog

        return {
            name: {
                "family": w.family,
                "description": w.description,
                "metrics": {m: vars(v) for m, v in w.metrics.items()},
            }
            for name, w in catalog.load().items()
        }
    except Exception:  # noqa: BLE001 - a report without catalog facts still renders
        return {}


def better(cat: dict[str, Any], workload: str, metric: str) -> str:
    m = cat.get(workload, {}).get("metrics", {}).get(metric)
    return m.get("better", "lower") if isinstance(m, dict) else "lower"


def family(cat: dict[str, Any], workload: str) -> str:
    return cat.get(workload, {}).get("family", workload)


def env_order(manifest: dict[str, Any], df) -> list[str]:
    """Matrix order (baseline first), then any label seen only in the samples."""
    labels = [e.get("label") for e in manifest.get("matrix", {}).get("envs", [])]
    labels += [k for k in manifest.get("environments", {}) if k not in labels]
    if len(df):
        labels += [e for e in df["env"].dropna().unique().tolist() if e not in labels]
    base = manifest.get("matrix", {}).get("baseline", "host")
    out = [x for x in labels if x]
    return ([base] if base in out else []) + [x for x in out if x != base]


# -- sections ----------------------------------------------------------------------------
def cost(row: dict[str, Any], b: str) -> tuple[float | None, float | None, float | None]:
    """Ratio oriented so that > 1 is worse whatever `better` says."""
    r, lo, hi = row["ratio"], row["ratio_ci_low"], row["ratio_ci_high"]
    if b != "higher":
        return r, lo, hi
    inv = lambda x: None if not x else 1.0 / x  # noqa: E731
    return inv(r), inv(hi), inv(lo)


def finding(row: dict[str, Any]) -> bool:
    """A ratio the report may state: there is one and no self-check flagged the figure."""
    return row["ratio"] is not None and not row.get("flags")


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


def wide(medians: list, lows: list) -> bool:
    """A log axis where medians span more than 10x and everything drawn is positive."""
    meds = [x for x in medians if x is not None]
    drawn = [x for x in lows if x is not None]
    return bool(meds) and min(meds + drawn) > 0 and max(meds) / min(meds) > 10


def startup(rows, envs: list[str]) -> dict[str, Any]:
    """Median phase times of the startup workload per env (ms since submit)."""
    got = {
        (r["env"], r["metric"]): r
        for r in rows
        if r["workload"] == "startup" and r["metric"] in PHASES
    }
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
    table = sorted(
        (
            {
                k: r[k]
                for k in (
                    "env",
                    "workload",
                    "op",
                    "metric",
                    "unit",
                    "median",
                    "ci_low",
                    "ci_high",
                    "n",
                )
            }
            for r in rows
        ),
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


def versions(e: dict[str, Any]) -> dict[str, Any]:
    """The environment's versions, with its container runtime's own where the
    description names the runtime but the versions leave it out (docker with runsc)."""
    out = dict(e.get("versions") or {})
    rt = e.get("runtime") if isinstance(e.get("runtime"), dict) else {}
    name, version = rt.get("name"), rt.get("version")
    if name and version and name not in out:
        out[name] = str(version).removeprefix(f"{name} version ")
    return out


def kernel_mismatch(e: dict[str, Any], host_kernel: str | None) -> str:
    """A sentence when a guest boots another kernel than the host's (else "")."""
    guest = (e.get("versions") or {}).get("guest_kernel")
    if not guest or not host_kernel or guest == host_kernel:
        return ""
    return (
        f"guest kernel {guest} is not the host's {host_kernel}: its figures include the "
        "difference between the two kernels (the fairest guest boots the host's own "
        "kernel: kernel=/boot/vmlinuz-" + host_kernel + ")"
    )


def provenance(manifest: dict[str, Any], order: list[str]) -> dict[str, Any]:
    host = dict(manifest.get("host") or {})
    mitigations = host.pop("mitigations", {}) or {}
    cmdline = host.pop("cmdline", None)
    described = manifest.get("environments") or {}
    envs = []
    for label in sorted(described, key=lambda k: (order.index(k) if k in order else len(order), k)):
        e = described[label]
        envs.append(
            {
                "label": label,
                "kind": e.get("kind"),
                "spec": e.get("spec"),
                "options": {k: v for k, v in (e.get("options") or {}).items() if v is not None},
                "available": e.get("available", True),
                "reason": e.get("reason") or "",
                "emulated": bool(e.get("emulated")),
                "versions": versions(e),
                "config": e.get("config") or {},
                "kernel_note": kernel_mismatch(e, host.get("kernel")),
            }
        )
    bundle = manifest.get("bundle") or {}
    return {
        "host": host,
        "mitigations": mitigations,
        "cmdline": cmdline,
        "envs": envs,
        "bundle": {k: v for k, v in bundle.items() if k != "probes"},
        "probes": bundle.get("probes") or {},
    }


def merge_similar(lines: list[str]) -> list[str]:
    """One line per warning that differs only in its numbers (the same condition seen at
    the start and at the end of a run), with how often it was seen."""
    seen: dict[str, list[str]] = {}
    for line in lines:
        seen.setdefault(re.sub(r"\d+(\.\d+)?", "#", line), []).append(line)
    return [v[0] + (f" (seen {len(v)}×)" if len(v) > 1 else "") for v in seen.values()]


def precision_items(manifest: dict[str, Any], order: list[str]) -> list[str]:
    """The cells that missed the precision target, one compact line per environment."""
    per_env: dict[str, list[str]] = {e: [] for e in order}
    for cell, width in sorted((manifest.get("unreached") or {}).items()):
        env, _, workload = cell.rpartition("|")
        w = json_safe(width)
        per_env.setdefault(env or cell, []).append(
            f"{workload or cell} ±{w:.1%}" if w is not None else f"{workload or cell} (no figure)"
        )
    return [f"{env}: {', '.join(items)}" for env, items in per_env.items() if items]


def warnings(manifest: dict[str, Any], df, rows, prov: dict[str, Any]) -> list[dict]:
    """Warnings in groups, most serious first: {kind, title, lines}; empty groups left out."""
    groups = []

    def group(kind: str, title: str, items: list[str]) -> None:
        if items:
            groups.append({"kind": kind, "title": title, "lines": items})

    flags = [f for r in rows for f in r.get("flags") or []]
    group(
        "self-check",
        f"Self-checks: {len(flags)} figure(s) flagged, shown without a ratio or verdict",
        flags,
    )
    if manifest.get("status") not in (None, "complete"):
        group(
            "status",
            "Run status",
            [
                f"run status: {manifest.get('status')} "
                f"({manifest.get('stop_reason') or 'no reason recorded'})"
            ],
        )
    failed = []
    for f in analysis.failures(df) if len(df) else []:
        reason = f["reason"] if isinstance(f["reason"], str) and f["reason"] else "no reason"
        failed.append(f"{f['env']} · {f['workload']}: {f['count']}× {f['status']} — {reason}")
    group("failed", "Failed launches", failed)
    group(
        "unavailable",
        "Unavailable environments",
        [
            f"{e['label']}: not available — {e['reason'] or 'no reason'}"
            for e in prov["envs"]
            if e["available"] is False
        ],
    )
    group(
        "emulated",
        "Emulated environments",
        [
            f"{e['label']}: emulated (TCG) — not a KVM overhead; its figures measure software "
            "emulation"
            for e in prov["envs"]
            if e["emulated"]
        ],
    )
    group(
        "kernel",
        "Guest kernel",
        [f"{e['label']}: {e['kernel_note']}" for e in prov["envs"] if e["kernel_note"]],
    )
    group("noise", "Noise", merge_similar([str(w) for w in manifest.get("warnings") or []]))
    precision = (manifest.get("matrix") or {}).get("precision", 0.02)
    unreached = precision_items(manifest, [e["label"] for e in prov["envs"]])
    n_cells = len(manifest.get("unreached") or {})
    group(
        "precision",
        f"Precision: {n_cells} cell(s) did not reach the ±{precision:.0%} target "
        "(the widest 95% CI half-width per cell)",
        unreached,
    )
    return groups


def no_ratio(row: dict[str, Any], baseline: str, base_keys: set[tuple]) -> str:
    """What the ratio column says for a row without a ratio, and why."""
    if row["env"] == baseline:
        return "baseline"
    if row.get("flags"):
        return "flagged: no ratio"
    if row.get("note"):
        return row["note"]
    if (row["workload"], row["op"], row["metric"]) not in base_keys:
        return f"no ratio: {baseline} has no such figure"
    return "–"


def summary(rows, envs: list[str], baseline: str) -> list[dict[str, Any]]:
    """The summary rows grouped by environment (matrix order), each with what its ratio
    column says when there is no ratio, and its verdict in words."""
    base_keys = {(r["workload"], r["op"], r["metric"]) for r in rows if r["env"] == baseline}
    out = []
    for env in envs + sorted({r["env"] for r in rows} - set(envs)):
        cells = sorted(
            (r for r in rows if r["env"] == env),
            key=lambda r: (r["workload"], r["op"], r["metric"]),
        )
        if not cells:
            continue
        shown = []
        for r in cells:
            sig = r["significant"] and finding(r)
            worse = sig and cost(r, r.get("better", "lower"))[0] > 1
            shown.append(
                {
                    **r,
                    "no_ratio": no_ratio(r, baseline, base_keys),
                    "worse": bool(worse),
                    "words": analysis.verdict(r) if sig else "",
                }
            )
        out.append({"env": env, "emulated": bool(cells[0].get("emulated")), "rows": shown})
    return out


def methodology(manifest: dict[str, Any]) -> dict[str, Any]:
    m = manifest.get("matrix") or {}
    return {
        k: m.get(k)
        for k in (
            "rounds",
            "max_rounds",
            "warmup",
            "budget",
            "timeout",
            "precision",
            "seed",
            "baseline",
            "quick",
        )
    } | {
        "rounds_done": manifest.get("rounds_done"),
        "measured_seconds": manifest.get("measured_seconds"),
        "stop_reason": manifest.get("stop_reason"),
    }


def samples_columns(df) -> dict[str, Any]:
    """All records (warm-up and failures too), column-wise; repeated strings coded."""
    cols: dict[str, Any] = {}
    for c in df.columns:
        s = df[c]
        if c in ("value", "t"):
            a = s.to_numpy(dtype=float, na_value=np.nan)
            cols[c] = {"num": json_safe(a.tolist())}
        elif c in ("round", "launch", "exit_code"):
            cols[c] = {"num": [None if x is None or x != x else int(x) for x in s.tolist()]}
        else:
            codes, uniques = _factorize(s)
            cols[c] = {"dict": uniques, "codes": codes}
    return {"columns": list(df.columns), "n": len(df), "data": cols}


def _factorize(s) -> tuple[list[int], list[Any]]:
    import pandas as pd

    codes, uniques = pd.factorize(s.astype(object).where(s.notna(), ""), sort=False)
    return codes.tolist(), [u if isinstance(u, str | bool | int) else str(u) for u in uniques]


def footprint_rows(df, manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """Median and CI of every cgroup / host-side figure per cell. No ratios or tests:
    the footprint is shown, not tested (and a bootstrap per figure would cost seconds)."""
    from bench import stats

    envs = manifest.get("environments") or {}
    data = analysis.measured(df, analysis.FOOTPRINT)
    rows = []
    values, units = analysis.by_cell(data, "value", "unit")
    for (env, workload, op, metric), v in values.items():
        sm = stats.summarize(v)
        rows.append(
            {
                "env": env,
                "env_kind": envs.get(env, {}).get("kind"),
                "workload": workload,
                "op": op,
                "metric": metric,
                "unit": units[(env, workload, op, metric)],
                "n": int(sm.n),
                **{f: json_safe(getattr(sm, f)) for f in ("median", "ci_low", "ci_high")},
            }
        )
    return rows


# -- density (issue 14) -----------------------------------------------------------------------
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
LOG_SPAN = 20  # a line chart gets a log axis where its values span more than this


def level_n(op: str) -> int | None:
    """The level's N from its op (`n08` -> 8); None for anything else."""
    m = re.fullmatch(r"n(\d+)", op)
    return int(m.group(1)) if m else None


def words(r: dict[str, Any]) -> str:
    """The verdict in words; a CPU cost (per transaction, per MB, per second idle) is more
    or less CPU, not slower or faster."""
    if "cpu" in r["metric"]:
        said = analysis.verdict({**r, "scope": analysis.FOOTPRINT})
        return f"{said} CPU" if said else ""
    return analysis.verdict(r)


def figure(r: dict[str, Any], baseline: str) -> dict[str, Any]:
    """One summary row cut to what a section cell shows: value, CI, ratio, verdict."""
    sig = bool(r["significant"]) and finding(r)
    return {
        "median": r["median"],
        "ci_low": r["ci_low"],
        "ci_high": r["ci_high"],
        "n": r["n"],
        "unit": r["unit"],
        "better": r.get("better", "lower"),
        "ratio": r["ratio"],
        "ratio_ci_low": r["ratio_ci_low"],
        "ratio_ci_high": r["ratio_ci_high"],
        "p_adjusted": r["p_adjusted"],
        "significant": sig,
        "worse": bool(sig and cost(r, r.get("better", "lower"))[0] > 1),
        "words": words(r) if sig else "",
        "flags": r.get("flags") or [],
        "no_ratio": "baseline"
        if r["env"] == baseline
        else ("flagged: no ratio" if r.get("flags") else r.get("note") or "–"),
    }


def log_axis(lines: list[list[tuple]]) -> bool:
    """A log axis where every drawn value (CI ends too) is positive and the medians span
    more than LOG_SPAN times."""
    pts = [p for line in lines for p in line]
    meds = [p[1] for p in pts if p[1] is not None]
    drawn = meds + [x for p in pts for x in (p[2], p[3]) if x is not None]
    return bool(meds) and min(drawn) > 0 and max(meds) / min(meds) > LOG_SPAN


def level_notes(data, env: str) -> dict[int, dict[str, Any]]:
    """Per level of one environment: how many measured rounds carry the two-sources
    disagreement note (and its range of %), what a guest's memory figure means, and the
    other notes (those differing only in their numbers merged)."""
    sub = data[(data["env"] == env) & (data["workload"] == "density")]
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


def with_ci(p: dict[str, Any], unit: str) -> str:
    """`median unit [low, high]`, all three in one readable unit."""
    med, ci, u = fmt_ci(p["median"], p["ci_low"], p["ci_high"], unit)
    return f"{med} {u} {ci}"


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


def unfit_levels(df, envs: list[str]) -> list[dict[str, Any]]:
    """The density levels recorded as failed or skipped (the memory reserve, a start that
    failed, the level before failed), per environment, their reasons merged."""
    if not len(df):
        return []
    bad = df[(df["workload"] == "density") & (df["status"] != "ok") & (df["round"] >= 0)]
    out = []
    order = {e: i for i, e in enumerate(envs)}
    for env, g in sorted(bad.groupby("env"), key=lambda kv: (order.get(kv[0], 99), kv[0])):
        reasons = [r if isinstance(r, str) and r else "no reason" for r in g["reason"]]
        out.append({"env": env, "lines": merge_similar(reasons)})
    return out


def density(rows, data, df, manifest: dict[str, Any], envs: list[str]) -> dict[str, Any] | None:
    """The density section, or None when the run has no density workload: per environment
    and level the figures (both memory sources side by side), line charts against N with
    CI bands, the notes where the two memory sources disagree, the levels that did not fit
    and why, and the headline."""
    baseline = (manifest.get("matrix") or {}).get("baseline", "host")
    described = manifest.get("environments") or {}
    got = [r for r in rows if r["workload"] == "density" and level_n(r["op"]) is not None]
    unfit = unfit_levels(df, envs)
    planned = "density" in ((manifest.get("matrix") or {}).get("workloads") or [])
    if not got and not unfit and not planned:
        return None
    order = [e for e in envs if any(r["env"] == e for r in got)]
    idx = {(r["env"], level_n(r["op"]), r["metric"]): r for r in got}
    emulated = lambda env: bool(described.get(env, {}).get("emulated"))  # noqa: E731
    lines: dict[str, dict[str, list]] = {}
    table = []
    for env in order:
        levels = sorted({n for (e, n, _) in idx if e == env})
        notes = level_notes(data, env) if len(data) else {}
        for n in levels:
            cells = {
                m: figure(idx[(env, n, m)], baseline) for m in DENSITY_TABLE if (env, n, m) in idx
            }
            table.append(
                {
                    "env": env,
                    "n": n,
                    "emulated": emulated(env),
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
    charts = []
    for metric, title in DENSITY_CHARTS:
        series = [
            {"env": env, "emulated": emulated(env), "points": lines[env][metric]}
            for env in order
            if metric in lines.get(env, {})
        ]
        if not series:
            continue
        tuples = [
            [(p["n"], p["median"], p["ci_low"], p["ci_high"]) for p in s["points"]] for s in series
        ]
        charts.append(
            {
                "id": f"d{len(charts)}",
                "metric": metric,
                "title": title,
                "unit": "ms" if metric.endswith("_ms") else "MiB",
                "log": log_axis(tuples),
                "series": series,
            }
        )
    guest_notes = sorted({g for t in table for g in t["notes"]["guest"]})
    return {
        "envs": order,
        "levels": sorted({t["n"] for t in table}),
        "table": table,
        "charts": charts,
        "headline": density_headline(lines, described),
        "disagree": any(t["notes"].get("disagree") for t in table),
        "guest_notes": guest_notes,
        "unfit": unfit,
    }


def disk(manifest: dict[str, Any], envs: list[str]) -> list[dict[str, Any]]:
    """The disk footprint each environment recorded once per run (environments[label]
    ["disk"]): its artefacts and what one instance adds, in MiB, each figure with what it
    counts, or why there is none. Empty when the run recorded none."""
    described = manifest.get("environments") or {}
    order = envs + sorted(set(described) - set(envs))
    out = []
    for label in order:
        d = (described.get(label) or {}).get("disk")
        if not isinstance(d, dict):
            continue
        figures = [
            {
                "what": f.get("what", "?"),
                "counts": f.get("counts") or "",
                "mib": None if f.get("bytes") is None else f["bytes"] / 2**20,
                "reason": f.get("reason") or "",
            }
            for f in d.get("figures") or []
        ]
        out.append(
            {
                "env": label,
                "emulated": bool(described[label].get("emulated")),
                "error": d.get("error") or "",
                "figures": figures,
            }
        )
    return out


# -- network (issue 15) -----------------------------------------------------------------------
NET_FIGURES = (  # (op, metric, words): the rows of the network table, in reading order
    ("tcp_rr", "p50_us", "round trip p50"),
    ("tcp_rr", "p99_us", "round trip p99"),
    ("tcp_rr", "trans_per_s", "transactions/s"),
    ("tcp_crr", "conn_per_s", "connections/s (connect + RR + close)"),
    ("tcp_stream_c2s", "mb_per_s", "stream client → server"),
    ("tcp_stream_s2c", "mb_per_s", "stream server → client"),
    ("tcp_rr", "client_cpu_us_per_trans", "client CPU per transaction"),
    ("tcp_rr", "server_cpu_us_per_trans", "server process CPU per transaction"),
    ("tcp_rr", "server_cgroup_cpu_us_per_trans", "server cgroup CPU per transaction"),
    ("tcp_crr", "client_cpu_us_per_trans", "client CPU per connection"),
    ("tcp_crr", "server_cpu_us_per_trans", "server process CPU per connection"),
    ("tcp_crr", "server_cgroup_cpu_us_per_trans", "server cgroup CPU per connection"),
    ("tcp_stream_c2s", "client_cpu_ms_per_mb", "client CPU per MB, client → server"),
    ("tcp_stream_c2s", "server_cpu_ms_per_mb", "server process CPU per MB, client → server"),
    ("tcp_stream_c2s", "server_cgroup_cpu_ms_per_mb", "server cgroup CPU per MB, client → server"),
    ("tcp_stream_s2c", "client_cpu_ms_per_mb", "client CPU per MB, server → client"),
    ("tcp_stream_s2c", "server_cpu_ms_per_mb", "server process CPU per MB, server → client"),
    ("tcp_stream_s2c", "server_cgroup_cpu_ms_per_mb", "server cgroup CPU per MB, server → client"),
)
NET_CHARTS = (  # (id, title, [(op, metric, legend)])
    (
        "latency",
        "tcp_rr round trip (1-byte request/response)",
        [("tcp_rr", "p50_us", "p50"), ("tcp_rr", "p99_us", "p99")],
    ),
    (
        "throughput",
        "tcp_stream throughput",
        [
            ("tcp_stream_c2s", "mb_per_s", "client → server"),
            ("tcp_stream_s2c", "mb_per_s", "server → client"),
        ],
    ),
    (
        "rates",
        "request/response and connection rates",
        [
            ("tcp_rr", "trans_per_s", "tcp_rr transactions/s"),
            ("tcp_crr", "conn_per_s", "tcp_crr connections/s"),
        ],
    ),
    (
        "cpu",
        "CPU per tcp_rr transaction",
        [
            ("tcp_rr", "client_cpu_us_per_trans", "client"),
            ("tcp_rr", "server_cpu_us_per_trans", "server process"),
            ("tcp_rr", "server_cgroup_cpu_us_per_trans", "server cgroup"),
        ],
    ),
)


def network(
    rows, manifest: dict[str, Any], envs: list[str], fails: list[dict[str, Any]] = ()
) -> dict[str, Any] | None:
    """The network section, or None when the run has no net workload: per environment the
    path its server was reached by (from the manifest) or why it has no figures (its failed
    launches' reasons), and per figure the median with its CI, the ratio to the baseline
    with its CI and the verdict; grouped charts."""
    baseline = (manifest.get("matrix") or {}).get("baseline", "host")
    described = manifest.get("environments") or {}
    got = {(r["env"], r["op"], r["metric"]): r for r in rows if r["workload"] == "net"}
    failed: dict[str, list[str]] = {}
    for f in fails:
        if f["workload"] == "net":
            reason = f["reason"] if isinstance(f["reason"], str) and f["reason"] else "no reason"
            failed.setdefault(f["env"], []).append(f"{f['count']}× {f['status']}: {reason}")
    if not got and "net" not in ((manifest.get("matrix") or {}).get("workloads") or []):
        return None
    order = [e for e in envs if any(k[0] == e for k in got)]
    unmeasured = [
        e for e in list(envs) + sorted(set(failed) - set(envs)) if e in failed and e not in order
    ]
    env_rows = [
        {
            "env": e,
            "emulated": bool(described.get(e, {}).get("emulated")),
            "path": described.get(e, {}).get("net_path") or "not recorded",
            "measured": True,
            "failed": failed.get(e, []),
        }
        for e in order
    ]
    env_rows += [
        {
            "env": e,
            "emulated": bool(described.get(e, {}).get("emulated")),
            "path": described.get(e, {}).get("net_path") or "none",
            "measured": False,
            "failed": failed[e],
        }
        for e in unmeasured
    ]
    figures = []
    for op, metric, words in NET_FIGURES:
        cells = {e: figure(got[(e, op, metric)], baseline) for e in order if (e, op, metric) in got}
        if cells:
            unit = next(iter(cells.values()))["unit"]
            figures.append(
                {
                    "op": op,
                    "metric": metric,
                    "words": words,
                    "unit": unit,
                    "better": better(catalog_of(manifest), "net", metric),
                    "cells": cells,
                }
            )
    charts = []
    for cid, title, parts in NET_CHARTS:
        series = []
        for op, metric, legend in parts:
            pts = [
                {"env": e, **figure(got[(e, op, metric)], baseline)}
                for e in order
                if (e, op, metric) in got
            ]
            if pts:
                series.append({"name": legend, "op": op, "metric": metric, "points": pts})
        if not series:
            continue
        meds = [p["median"] for s in series for p in s["points"]]
        lows = [p["ci_low"] for s in series for p in s["points"]]
        charts.append(
            {
                "id": f"n{cid}",
                "title": title,
                "unit": series[0]["points"][0]["unit"],
                "better": better(catalog_of(manifest), "net", series[0]["metric"]),
                "log": wide(meds, lows),
                "envs": order,
                "series": series,
            }
        )
    return {
        "baseline": baseline,
        "envs": env_rows,
        "measured": order,
        "figures": figures,
        "charts": charts,
    }


def user_workloads(
    rows, manifest: dict[str, Any], envs: list[str], fails: list[dict[str, Any]] = ()
) -> list[dict[str, Any]]:
    """The user's own workloads (catalog family "user", bench/userwork.py), one table each:
    a row per benchmark by its pytest name (or per command figure), a column per
    environment with the median, its CI, the ratio and the verdict; and each environment's
    failed launches or benchmarks with their reasons."""
    cat = catalog_of(manifest)
    baseline = (manifest.get("matrix") or {}).get("baseline", "host")
    declared = {u.get("name"): u for u in (manifest.get("matrix") or {}).get("user_workloads", [])}
    out = []
    for w in [n for n, c in cat.items() if c.get("family") == "user"]:
        u = declared.get(w, {})
        what = (
            f"pytest-benchmark suite in {u.get('dir')}"
            if u.get("kind") == "pytest-benchmark"
            else f"{' '.join(u.get('argv') or ())} (parser {u.get('parser')})"
        )
        got = {(r["env"], r["op"], r["metric"]): r for r in rows if r["workload"] == w}
        shown = [e for e in envs if any(k[0] == e for k in got)]
        figures = [
            {
                "op": op,
                "metric": m,
                "unit": got[next(k for k in got if k[1:] == (op, m))]["unit"],
                "better": better(cat, w, m),
                "cells": {e: figure(got[(e, op, m)], baseline) for e in shown if (e, op, m) in got},
            }
            for op, m in sorted({k[1:] for k in got})
        ]
        failed = [
            f"{f['env']}: {f['count']}× {f['status']}: {f['reason'] or 'no reason'}"
            for f in fails
            if f["workload"] == w
        ]
        described = manifest.get("environments") or {}
        out.append(
            {
                "name": w,
                "description": what if u else "",
                "envs": shown,
                "emulated": {e: bool(described.get(e, {}).get("emulated")) for e in shown},
                "figures": figures,
                "failed": failed,
            }
        )
    return out


# -- the whole model ---------------------------------------------------------------------
def build(manifest: dict[str, Any], df, *, n_boot: int = 2000) -> dict[str, Any]:
    cat = catalog_of(manifest)
    baseline = (manifest.get("matrix") or {}).get("baseline", "host")
    envs = env_order(manifest, df)
    emulated = {k: bool(e.get("emulated")) for k, e in (manifest.get("environments") or {}).items()}
    if len(df):
        main = analysis.summarize_run(df, manifest, scope=analysis.MAIN, n_boot=n_boot)
        foot = footprint_rows(df, manifest)
        data = analysis.measured(df, analysis.MAIN)
    else:
        main, foot, data = [], [], df
    envs_in = [e for e in envs if any(r["env"] == e for r in main)]
    prov = provenance(manifest, envs)
    return {
        "run": {
            k: manifest.get(k)
            for k in ("run_id", "status", "created", "finished", "stop_reason", "rounds_done")
        },
        "baseline": baseline,
        "envs": [
            {
                "label": e,
                "kind": (manifest.get("environments") or {}).get(e, {}).get("kind"),
                "emulated": emulated.get(e, False),
                "measured": e in envs_in,
            }
            for e in envs
        ],
        "headline": headline(main, cat, baseline, envs_in, emulated, n_boot),
        "heatmap": heatmap(main, baseline, envs_in),
        "charts": charts(main, data, cat, envs_in) if len(data) else [],
        "startup": startup(main, envs_in),
        "footprint": footprint(foot, envs),
        "density": density(main, data, df, manifest, envs) if len(df) else None,
        "network": network(main, manifest, envs_in, analysis.failures(df) if len(df) else []),
        "user": user_workloads(main, manifest, envs_in, analysis.failures(df) if len(df) else []),
        "disk": disk(manifest, envs),
        "summary": summary(main, envs, baseline),
        "provenance": prov,
        "warnings": warnings(manifest, df, main, prov),
        "methodology": methodology(manifest),
        "samples": samples_columns(df),
    }
