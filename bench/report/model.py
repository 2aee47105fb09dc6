"""The report's data model: a run (manifest + samples DataFrame) -> one JSON-ready dict.

Pure: no files, no HTML. Everything the report shows comes from here: the headline
sentences, the heatmap matrix, the per-op chart series, startup phases, the host-side
footprint, provenance, warnings, methodology and the raw samples (column-wise, for the
CSV download). Strings are left as they are; escaping is the renderer's job.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from bench import analysis

PHASES = ("ready_ms", "exit_ms", "cleaned_ms", "boot_ms")
# What the probes call an op, in words a reader recognises (the rest are shown as is).
OP_NAMES = {"null": "getppid()", "read": "1-byte read()", "write": "1-byte write()",
            "clock_gettime": "clock_gettime() (vDSO)", "open_close": "open()+close()",
            "stat": "stat()", "fstat": "fstat()", "page_fault": "page fault",
            "fork": "fork()+wait()", "fork_exec": "fork()+exec()",
            "pipe_pingpong": "pipe round trip"}  # fmt: skip
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
    if metric in PHASES:
        return f"to {metric.removesuffix('_ms')} (startup)"
    if metric == "ns_per_op":
        return f"per {OP_NAMES.get(op, op)}"
    return f"in {workload} {op} ({metric})"


def short_label(workload: str, op: str, metric: str, keys) -> str:
    """`workload · op`, plus the metric only where one op has several figures."""
    if metric in PHASES:
        return f"{workload} · {metric.removesuffix('_ms')}"
    several = sum(1 for w, o, _ in keys if (w, o) == (workload, op)) > 1
    name = OP_NAMES.get(op, op).removesuffix(" (vDSO)")
    return f"{workload} · {name}" + (f" {metric}" if several else "")


def fmt_ci(median, lo, hi, unit: str) -> tuple[str, str, str]:
    """(median, "[lo, hi]", unit) in one readable unit."""
    f, u = time_scale([median], unit)
    n = lambda x: fmt_num(None if x is None else x * f)  # noqa: E731
    return n(median), f"[{n(lo)}, {n(hi)}]", u


def _finite(x) -> float | None:
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


# -- catalog -----------------------------------------------------------------------------
def catalog_of(manifest: dict[str, Any]) -> dict[str, Any]:
    """The catalog recorded in the run ({workload: {family, metrics: {m: {unit, better}}}})."""
    cat = manifest.get("catalog")
    if isinstance(cat, dict) and cat:
        return cat
    try:  # older runs without the catalog in the manifest: the installed one
        from bench import catalog

        return {
            name: {"family": w.family, "description": w.description,
                   "metrics": {m: vars(v) for m, v in w.metrics.items()}}
            for name, w in catalog.load().items()
        }  # fmt: skip
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


def sentence(row: dict[str, Any], base: dict[str, Any], b: str, emulated: bool) -> dict:
    """The quotable line for one cell vs the baseline."""
    env, unit = row["env"], row["unit"]
    words = op_words(row["workload"], row["op"], row["metric"])
    med, bmed = row["median"], base["median"]
    diff = None if med is None or bmed is None else med - bmed
    lo = hi = None
    if bmed is not None and row["ratio_ci_low"] is not None:
        lo, hi = bmed * (row["ratio_ci_low"] - 1), bmed * (row["ratio_ci_high"] - 1)
    f, u = time_scale([diff, lo, hi], unit)
    num = lambda x: fmt_num(None if x is None else abs(x) * f)  # noqa: E731
    worse = (diff or 0) > 0 if b != "higher" else (diff or 0) < 0
    ratio = fmt_ratio(row["ratio"])
    if row["significant"] and diff is not None:
        a, z = (lo, hi) if diff > 0 else (hi, lo)
        ci = f"[{num(a)}, {num(z)}]"
        if b != "higher":
            verb = "adds" if diff > 0 else "saves"
            text = f"{env} {verb} {num(diff)} {u} {ci} {words} ({ratio}, significant)"
        else:
            verb = "loses" if diff < 0 else "gains"
            text = f"{env} {verb} {num(diff)} {u} {ci} {words} ({ratio}, significant)"
    else:
        ci = f"[{fmt_num(row['ratio_ci_low'])}, {fmt_num(row['ratio_ci_high'])}]"
        text = (f"{env}: no detectable difference {words} ({fmt_quantity(med, unit)} vs "
                f"{fmt_quantity(bmed, unit)} on {base['env']}, {ratio} {ci}, n.s.)")  # fmt: skip
    if emulated:
        text += " — emulated (TCG), not a KVM overhead"
    return {"text": text, "significant": bool(row["significant"]), "worse": bool(worse),
            "workload": row["workload"], "op": row["op"], "metric": row["metric"]}  # fmt: skip


def headline(rows, cat, baseline: str, envs: list[str], emulated: dict[str, bool]) -> list[dict]:
    base = {(r["workload"], r["op"], r["metric"]): r for r in rows if r["env"] == baseline}
    out = []
    for env in envs:
        if env == baseline:
            continue
        fams: dict[str, list] = {}
        for r in rows:
            k = (r["workload"], r["op"], r["metric"])
            if r["env"] != env or r["ratio"] is None or k not in base:
                continue
            fams.setdefault(family(cat, r["workload"]), []).append(r)
        families = []
        for fam, frows in fams.items():
            costs = [cost(r, better(cat, r["workload"], r["metric"])) for r in frows]
            logs = [math.log(c[0]) for c in costs if c[0] and c[0] > 0]
            gm = math.exp(sum(logs) / len(logs)) if logs else None
            sig = [c[0] for r, c in zip(frows, costs, strict=True) if r["significant"]]
            worse, good = sum(c > 1 for c in sig), sum(c < 1 for c in sig)
            summary = (f"{fam}: {worse} of {len(frows)} figures significantly worse, "
                       f"{good} better; geometric-mean cost {fmt_ratio(gm)}")  # fmt: skip
            lines = [
                sentence(r, base[(r["workload"], r["op"], r["metric"])],
                         better(cat, r["workload"], r["metric"]), emulated.get(env, False))
                for r in frows
            ]  # fmt: skip
            families.append({"family": fam, "summary": summary, "sentences": lines})
        out.append({"env": env, "emulated": emulated.get(env, False), "families": families})
    return out


def heatmap(rows, cat, baseline: str, envs: list[str]) -> dict[str, Any]:
    cols = sorted({(r["workload"], r["op"], r["metric"]) for r in rows if r["ratio"] is not None})
    ys = [e for e in envs if e != baseline]
    cells = []
    for r in rows:
        k = (r["workload"], r["op"], r["metric"])
        if r["ratio"] is None or r["env"] not in ys:
            continue
        b = better(cat, r["workload"], r["metric"])
        c, clo, chi = cost(r, b)
        cells.append({
            "x": cols.index(k), "y": ys.index(r["env"]),
            "value": math.log2(c) if c and c > 0 else 0.0,
            "ratio": r["ratio"], "lo": r["ratio_ci_low"], "hi": r["ratio_ci_high"],
            "cost": c, "significant": bool(r["significant"]), "better": b,
            "p": r["p_adjusted"], "median": r["median"], "unit": r["unit"],
        })  # fmt: skip
    return {
        "columns": [{"workload": w, "op": o, "metric": m, "label": short_label(w, o, m, cols)}
                    for w, o, m in cols],
        "envs": ys,
        "cells": cells,
    }  # fmt: skip


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
            series.append({
                "env": env, "median": r["median"], "ci_low": r["ci_low"],
                "ci_high": r["ci_high"], "n": r["n"], "ratio": r["ratio"],
                "significant": r["significant"], "box": _box(v), "points": _strip(v),
            })  # fmt: skip
        if not series:
            continue
        meds = [s["median"] for s in series if s["median"] and s["median"] > 0]
        mins = [s["box"][0] for s in series]
        log = bool(meds) and min(mins) > 0 and max(meds) / min(meds) > 10
        unit = series[0] and index[(series[0]["env"], w, o, m)]["unit"]
        out.append({
            "id": f"c{len(out)}", "workload": w, "op": o, "metric": m, "unit": unit,
            "family": family(cat, w), "better": better(cat, w, m), "log": log,
            "title": f"{w} · {OP_NAMES.get(o, o) if m not in PHASES else m}",
            "description": cat.get(w, {}).get("metrics", {}).get(m, {}).get("description", ""),
            "series": series,
        })  # fmt: skip
    return out


def startup(rows, envs: list[str]) -> dict[str, Any]:
    """Median phase times of the startup workload per env (ms since submit)."""
    got = {(r["env"], r["metric"]): r for r in rows
           if r["workload"] == "startup" and r["metric"] in PHASES}  # fmt: skip
    out = []
    for env in envs:
        ph = {p: {"median": got[(env, p)]["median"], "ci_low": got[(env, p)]["ci_low"],
                  "ci_high": got[(env, p)]["ci_high"], "n": got[(env, p)]["n"]}
              for p in PHASES if (env, p) in got}  # fmt: skip
        if ph:
            out.append({"env": env, "phases": ph})
    return {"envs": out, "has_boot": any("boot_ms" in e["phases"] for e in out)}


def footprint(rows, envs: list[str]) -> dict[str, Any]:
    """Host-side and cgroup costs per env (all workloads), and a chart of the key ones."""
    order = {e: i for i, e in enumerate(envs)}
    table = sorted(
        ({k: r[k] for k in ("env", "workload", "op", "metric", "unit", "median", "ci_low",
                            "ci_high", "n")} for r in rows),
        key=lambda r: (r["op"], r["metric"], r["workload"], order.get(r["env"], 99), r["env"]),
    )  # fmt: skip
    metrics = sorted({(r["op"], r["metric"], r["unit"]) for r in table})
    key = [m for m in metrics if m[1] in FOOTPRINT_KEY]
    return {
        "rows": table,
        "charts": [{"id": f"f{i}", "source": s, "metric": m, "unit": u,
                    "title": f"{s} · {m}",
                    "series": [r for r in table if r["op"] == s and r["metric"] == m]}
                   for i, (s, m, u) in enumerate(key)],
    }  # fmt: skip


def provenance(manifest: dict[str, Any]) -> dict[str, Any]:
    host = dict(manifest.get("host") or {})
    mitigations = host.pop("mitigations", {}) or {}
    cmdline = host.pop("cmdline", None)
    envs = []
    for label, e in (manifest.get("environments") or {}).items():
        envs.append({
            "label": label, "kind": e.get("kind"), "spec": e.get("spec"),
            "options": e.get("options") or {}, "available": e.get("available", True),
            "reason": e.get("reason") or "", "emulated": bool(e.get("emulated")),
            "versions": e.get("versions") or {}, "config": e.get("config") or {},
        })  # fmt: skip
    bundle = manifest.get("bundle") or {}
    return {
        "host": host, "mitigations": mitigations, "cmdline": cmdline, "envs": envs,
        "bundle": {k: v for k, v in bundle.items() if k != "probes"},
        "probes": bundle.get("probes") or {},
    }  # fmt: skip


def warnings(manifest: dict[str, Any], df, rows, envs_emulated: dict[str, bool]) -> list[dict]:
    out = []
    if manifest.get("status") not in (None, "complete"):
        out.append({"kind": "status", "text": f"run status: {manifest.get('status')}"
                    f" ({manifest.get('stop_reason') or 'no reason recorded'})"})  # fmt: skip
    for w in manifest.get("warnings") or []:
        out.append({"kind": "noise", "text": str(w)})
    steal = _finite((manifest.get("noise") or {}).get("steal_fraction"))
    if steal is not None and steal > 0.01:
        out.append({"kind": "noise", "text": f"CPU steal time {steal:.1%} during the run: "
                    "the hypervisor took CPU away from this host"})  # fmt: skip
    for env, emu in envs_emulated.items():
        if emu:
            out.append({"kind": "emulated", "text": f"{env}: emulated (TCG) — not a KVM "
                        "overhead; its figures measure software emulation"})  # fmt: skip
    for label, e in (manifest.get("environments") or {}).items():
        if e.get("available") is False:
            out.append(
                {
                    "kind": "unavailable",
                    "text": f"{label}: not available — {e.get('reason') or 'no reason'}",
                }
            )
    if len(df):
        for f in analysis.failures(df):
            reason = f["reason"] if isinstance(f["reason"], str) and f["reason"] else "no reason"
            out.append({"kind": "failed", "text": f"{f['env']} · {f['workload']}: {f['count']}× "
                        f"{f['status']} — {reason}"})  # fmt: skip
    precision = (manifest.get("matrix") or {}).get("precision", 0.02)
    for cell, width in sorted((manifest.get("unreached") or {}).items()):
        w = _finite(width)
        out.append(
            {
                "kind": "precision",
                "text": f"{cell}: did not reach the ±{precision:.0%} "
                f"precision target" + (f" (CI half-width {w:.1%})" if w is not None else ""),
            }
        )
    return out


def methodology(manifest: dict[str, Any]) -> dict[str, Any]:
    m = manifest.get("matrix") or {}
    return {k: m.get(k) for k in ("rounds", "max_rounds", "warmup", "budget", "timeout",
                                  "precision", "seed", "baseline", "quick")} | {
        "rounds_done": manifest.get("rounds_done"),
        "measured_seconds": manifest.get("measured_seconds"),
        "stop_reason": manifest.get("stop_reason"),
    }  # fmt: skip


def samples_columns(df) -> dict[str, Any]:
    """All records (warm-up and failures too), column-wise; repeated strings coded."""
    cols: dict[str, Any] = {}
    for c in df.columns:
        s = df[c]
        if c in ("value", "t"):
            a = s.to_numpy(dtype=float, na_value=np.nan)
            cols[c] = {"num": [None if not math.isfinite(x) else x for x in a.tolist()]}
        elif c in ("round", "launch"):
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
        rows.append({
            "env": env, "env_kind": envs.get(env, {}).get("kind"), "workload": workload,
            "op": op, "metric": metric, "unit": units[(env, workload, op, metric)],
            "n": int(sm.n),
            **{f: _finite(getattr(sm, f)) for f in ("median", "ci_low", "ci_high")},
        })  # fmt: skip
    return rows


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
    return {
        "run": {k: manifest.get(k) for k in ("run_id", "status", "created", "finished",
                                             "stop_reason", "rounds_done")},
        "baseline": baseline,
        "envs": [{"label": e, "kind": (manifest.get("environments") or {}).get(e, {}).get("kind"),
                  "emulated": emulated.get(e, False), "measured": e in envs_in} for e in envs],
        "headline": headline(main, cat, baseline, envs_in, emulated),
        "heatmap": heatmap(main, cat, baseline, envs_in),
        "charts": charts(main, data, cat, envs_in) if len(data) else [],
        "startup": startup(main, envs_in),
        "footprint": footprint(foot, envs),
        "summary": sorted(main, key=lambda r: (envs.index(r["env"]) if r["env"] in envs else 99,
                                               r["workload"], r["op"], r["metric"])),
        "provenance": provenance(manifest),
        "warnings": warnings(manifest, df, main, emulated),
        "methodology": methodology(manifest),
        "samples": samples_columns(df),
    }  # fmt: skip
