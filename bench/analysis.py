"""From a run's samples to the summary table: per figure statistics over rounds, the
ratio to the baseline environment with its CI and a paired test (Benjamini–Hochberg
across the matrix), self-check flags, outlier counts, and whether each figure reached
its precision target."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Collection
from functools import cache
from typing import Any

import numpy as np

from bench import catalog, checks, stats
from bench.store import json_safe

KEY = ["env", "workload", "op", "metric"]
MAIN = "main"  # probe results + the phases of the workloads whose figures they are
FOOTPRINT = "footprint"  # cgroup and host-side costs of every launch


@cache
def _installed() -> dict[str, catalog.Workload]:
    return catalog.load()


def flag(manifest: dict[str, Any] | None, workload: str, key: str) -> bool:
    """A workload's catalog flag (phase_figures, writes_data): as the run recorded it, or
    the installed catalog's for a run recorded before the flag was."""
    recorded = ((manifest or {}).get("catalog") or {}).get(workload) or {}
    if key in recorded:
        return bool(recorded[key])
    w = _installed().get(workload)
    return bool(w and getattr(w, key))


def phase_workloads(manifest: dict[str, Any] | None = None) -> set[str]:
    """The workloads whose launch phases are their figures (catalog `phase_figures`)."""
    names = set((manifest or {}).get("catalog") or {}) | set(_installed())
    return {w for w in names if flag(manifest, w, "phase_figures")}


def counted(df):
    """Counted, successful samples (warm-up round 0 excluded)."""
    return df[(df["round"] >= 1) & (df["status"] == "ok") & df["value"].notna()]


def partner(df):
    """Which samples are a baseline's partners: its launches paired with another
    environment's start (runner._paired_starts, the set naming that environment). They
    pair with that environment's, and are no figure of the baseline's own."""
    if "set" not in df.columns:
        return np.zeros(len(df), dtype=bool)
    held_set = df["set"].fillna("").astype(str)
    return ((held_set != "") & (held_set != df["env"])).to_numpy()


def measured(df, scope: str = MAIN, timed: Collection[str] | None = None):
    """Counted, successful samples of one scope (warm-up round 0 excluded; a guest's
    baseline partner bursts too); `timed`: the workloads whose phases are figures
    (default: the installed catalog's)."""
    ok = counted(df)
    if scope == MAIN:
        timed = phase_workloads() if timed is None else timed
        keep = ~partner(ok) & (
            ok["source"].isin(["probe", "burst"])
            | ((ok["source"] == "phase") & ok["workload"].isin(list(timed)))
        )
    else:
        keep = ok["source"].isin(["cgroup", "host"])
    return ok[keep]


def failures(df) -> list[dict[str, Any]]:
    """Failed launches and probe errors with their reasons, grouped and counted."""
    bad = df[(df["round"] >= 0) & (df["status"] != "ok")]
    out = []
    for (env, workload, status, reason), g in bad.groupby(
        ["env", "workload", "status", "reason"], dropna=False
    ):
        out.append(
            {"env": env, "workload": workload, "status": status, "reason": reason, "count": len(g)}
        )
    return out


def by_cell(data, *columns: str) -> list[dict[tuple, Any]]:
    """Per (env, workload, op, metric), sorted: the values (floats), the first unit, and
    the set of probe arguments or notes, for each column asked (value, unit, args, note). Uses row
    positions, not sub-frames: iterating a groupby is the costly part of a big report."""
    positions = sorted(data.groupby(KEY).indices.items())
    out = []
    for col in columns:
        if col == "value":
            arr = data[col].to_numpy(dtype=float)
            out.append({k: arr[idx] for k, idx in positions})
        elif col in ("args", "note"):
            arr = data[col].fillna("").to_numpy(dtype=object)
            out.append({k: set(arr[idx]) for k, idx in positions})
        else:
            arr = data[col].to_numpy(dtype=object)
            out.append({k: arr[idx[0]] for k, idx in positions})
    return out


def per_round(data) -> dict[tuple, dict[int, float]]:
    """Per (env, workload, op, metric): round -> the median of that round's values.

    The round is the unit of every statistic: a launch's repetitions (``--reps``) are
    one measurement, summarised by their median so that one preempted window does
    not move it, and never counted as independent samples."""
    med = data.groupby([*KEY, "round"], sort=True)["value"].median()
    out: dict[tuple, dict[int, float]] = defaultdict(dict)
    for (env, workload, op, metric, rnd), value in med.items():
        out[(env, workload, op, metric)][int(rnd)] = float(value)
    return out


def precision_target(manifest: dict[str, Any], workload: str, op: str, metric: str) -> float | None:
    """The figure's precision target; None for ops that are noisy by nature (fork, pipe
    ping-pong, latency tails): they are reported with their width and hold no one up."""
    w = manifest.get("catalog", {}).get(workload, {})
    if op in w.get("noisy", ()) or f"{op}.{metric}" in w.get("noisy", ()):
        return None
    return max(manifest.get("matrix", {}).get("precision", 0.02), w.get("precision_floor", 0.0))


def test_name(t: stats.RatioTest) -> str:
    """How a ratio was tested, in words: "paired trimmed t, n=8" (Yuen's; Student's
    below 5 rounds, where nothing is trimmed), "welch trimmed t, n=6", "paired trimmed t
    over rounds of blocks, n=8 (480 blocks)" (the burst design); "" untested."""
    if not t.method:
        return ""
    trimmed = " trimmed" if math.floor(stats.TRIM * t.n) else ""
    if isinstance(t, stats.BurstTest) and t.n_blocks == t.n:  # one pair a round
        return f"paired{trimmed} t, each launch with a baseline launch next to it, n={t.n}"
    if isinstance(t, stats.BurstTest):
        return f"paired{trimmed} t over rounds of blocks, n={t.n} ({t.n_blocks} blocks)"
    return f"{t.method}{trimmed} t, n={t.n}"


BlockValues = dict[int, dict[int, float]]  # round -> block -> the burst's figure


def burst_blocks(data) -> dict[tuple, BlockValues]:
    """Burst samples per (env, workload, op, metric, held set): round -> block -> value
    (the held set "": the run's one set of each round); also the phases of a launch
    paired with a baseline launch next to it (runner._paired_starts: block 1 of the set
    named after the environment, the baseline's partner launch included)."""
    if "block" not in data.columns:
        return {}
    b = data[data["source"].isin(["burst", "phase"]) & data["block"].notna()]
    out: dict[tuple, BlockValues] = defaultdict(lambda: defaultdict(dict))
    cols = zip(
        *(b[c] for c in KEY), b["set"].fillna(""), b["round"], b["block"], b["value"], strict=True
    )
    for env, workload, op, metric, held_set, rnd, block, value in cols:
        out[(env, workload, op, metric, held_set)][int(rnd)][int(block)] = float(value)
    return out


def compare_bursts(
    values: BlockValues, base: BlockValues, confidence: float = 0.95
) -> stats.BurstTest | None:
    """values / base in the burst design, block by block within each round both have
    (stats.burst_ratio_test, the round as the cluster); None below 3 such rounds."""
    if len(set(values) & set(base)) < 3:
        return None
    t = stats.burst_ratio_test(*aligned(values, base), confidence=confidence)
    return t if t.method else None


def aligned(values: BlockValues, base: BlockValues) -> tuple[list, list]:
    """The rounds both have, each as two lists aligned by block (nan where a block is
    missing on one side): what stats.burst_ratio_test and round_log_ratios take."""
    v, b = [], []
    for r in sorted(set(values) & set(base)):
        blocks = sorted(set(values[r]) | set(base[r]))
        v.append([values[r].get(k, math.nan) for k in blocks])
        b.append([base[r].get(k, math.nan) for k in blocks])
    return v, b


def paired_log_ratios(df, baseline: str) -> dict[tuple, np.ndarray]:
    """Per figure measured in the burst design (or paired in time with the baseline):
    its per-round log ratios to the baseline (stats.round_log_ratios), the figure
    `compare` holds against another run's: an isolation cost, which the machine's speed
    from one run to the next does not move."""
    blocks = burst_blocks(counted(df))
    out = {}
    for (env, workload, op, metric, held_set), values in blocks.items():
        base = blocks.get((baseline, workload, op, metric, held_set))
        if env == baseline or held_set not in ("", env) or not base:
            continue
        d = stats.round_log_ratios(*aligned(values, base))
        if np.isfinite(d).sum() >= 2:
            out[(env, workload, op, metric)] = d[np.isfinite(d)]
    return out


def detectable(values: dict[int, float], base: dict[int, float]) -> float | None:
    """The smallest ratio this run could have called (80% power, before the false
    discovery rate's adjustment), from the spread of its own per-round log ratios; None
    where rounds do not pair (fewer than 3 in common) or no ratio is finite."""
    common = sorted(set(values) & set(base))
    if len(common) < 3:
        return None
    v = np.array([values[r] for r in common], dtype=float)
    b = np.array([base[r] for r in common], dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        d = np.log(v / b)
    return json_safe(stats.detectable_ratio(d))


def compare_rounds(
    values: dict[int, float], base: dict[int, float], confidence: float = 0.95
) -> stats.RatioTest:
    """values / base, paired by round where at least 3 rounds have both, else Welch."""
    common = sorted(set(values) & set(base))
    if len(common) >= 3:
        v, b = [values[r] for r in common], [base[r] for r in common]
        return stats.log_ratio_test(v, b, paired=True, confidence=confidence)
    v, b = list(values.values()), list(base.values())
    return stats.log_ratio_test(v, b, paired=False, confidence=confidence)


def summarize_run(
    df,
    manifest: dict[str, Any],
    *,
    baseline: str | None = None,
    scope: str = MAIN,
    n_boot: int = 2000,
) -> list[dict[str, Any]]:
    """One row per (env, workload, op, metric): the median over rounds with its CI, the
    ratio to the baseline with its CI and test, Benjamini-Hochberg across the rows."""
    baseline = baseline or manifest.get("matrix", {}).get("baseline", "host")
    envs = manifest.get("environments", {})
    data = measured(df, scope, phase_workloads(manifest))
    rounds = per_round(data)
    blocks = burst_blocks(counted(df)) if scope == MAIN else {}
    units, args, notes = by_cell(data, "unit", "args", "note")
    layout = (manifest.get("host") or {}).get("cgroup_layout", "")
    rows = []
    for key, by_rnd in rounds.items():
        env, workload, op, metric = key
        values = np.array(list(by_rnd.values()))
        s = stats.summarize(values, n_boot=n_boot)
        target = precision_target(manifest, workload, op, metric) if scope == MAIN else None
        row = {
            "env": env,
            "scope": scope,
            "env_kind": envs.get(env, {}).get("kind"),
            "emulated": bool(envs.get(env, {}).get("emulated")),
            "workload": workload,
            "op": op,
            "metric": metric,
            "unit": units[key],
            **{f: json_safe(getattr(s, f)) for f in stats.FIELDS},
            "n": int(s.n),
            "ci_halfwidth": json_safe(stats.ci_halfwidth_rel(s)),
            "precision_target": target,
            "reached_precision": target is not None and stats.ci_halfwidth_rel(s) <= target,
            "outliers": int(np.count_nonzero(stats.outliers(values))),
            "ratio": None,
            "ratio_ci_low": None,
            "ratio_ci_high": None,
            "test": "",
            "p_value": None,
            "p_adjusted": None,
            "significant": False,
            "detectable_ratio": None,
            "baseline": baseline,
            "better": _better(manifest, workload, metric),
            "note": "",
            "flags": [],
        }
        base_key = (baseline, workload, op, metric)
        base = rounds.get(base_key)
        # the burst design pairs with the baseline's bursts of the same held set, which
        # ran the same invocation
        bursts = _paired_bursts(blocks, key, baseline) if env != baseline else None
        if base is not None and not bursts and sizes(args[key]) != sizes(args[base_key]):
            base = None  # other probe arguments (an emulated guest's sizes): no ratio
            row["note"] = "no ratio: the baseline ran this probe with other arguments"
        if (base or bursts) and _signed(manifest, workload, metric):
            base = bursts = None  # a difference around 0: a ratio of two means nothing
            row["note"] = "no ratio: a signed figure (a difference that can be 0 or below)"
        if env != baseline and (base or bursts):
            t = bursts or compare_rounds(by_rnd, base)
            row.update(
                ratio=json_safe(t.ratio),
                ratio_ci_low=json_safe(t.low),
                ratio_ci_high=json_safe(t.high),
            )
            row.update(p_value=json_safe(t.p_value), test=test_name(t))
            row["detectable_ratio"] = (
                json_safe(bursts.detectable) if bursts else detectable(by_rnd, base)
            )
        writes = flag(manifest, workload, "writes_data")
        row["flags"] = checks.figure_flags(
            row, values, layout=layout, notes=notes[key], writes_data=writes
        )
        if row["flags"]:  # an implausible figure or a failed control is no finding
            row.update(ratio=None, ratio_ci_low=None, ratio_ci_high=None, p_value=None)
            row["detectable_ratio"] = None
        rows.append(row)
    tested = [i for i, r in enumerate(rows) if r["p_value"] is not None]
    adjusted = stats.benjamini_hochberg([rows[i]["p_value"] for i in tested]) if tested else []
    for i, p in zip(tested, adjusted, strict=True):
        r = rows[i]
        r["p_adjusted"] = json_safe(p)
        r["significant"] = bool(
            r["ratio_ci_low"] is not None
            and stats.significant(p, r["ratio_ci_low"], r["ratio_ci_high"])
        )
    return rows


# probe options that shape how long or how often an op is timed, not what it does: a
# launch's repetitions and windows, the serve mode's bursts (workloads/probe.h)
TIMING_OPTIONS = {"--reps": 1, "--min-ms": 1, "--window-ms": 1, "--serve": 0}


def sizes(argsets: set[str]) -> set[str]:
    """Probe argument strings without their timing options: two figures whose probes ran
    with the same sizes compare, whether timed in bursts or in a launch's windows (an
    emulated guest launched, its baseline in bursts)."""
    out = set()
    for text in argsets:
        words, kept = text.split(), []
        while words:
            w = words.pop(0)
            if w in TIMING_OPTIONS:
                del words[: TIMING_OPTIONS[w]]
            else:
                kept.append(w)
        out.add(" ".join(kept))
    return out


def _paired_bursts(blocks: dict[tuple, BlockValues], key: tuple, baseline: str):
    """The burst test of figure `key` against the baseline's of the same set (the held
    set, or a start's own pairing with a baseline launch); None where either side has
    none in at least 3 common rounds (then rounds pair: compare_rounds)."""
    env = key[0]
    for held_set in ("", env):
        mine = blocks.get((*key, held_set))
        theirs = blocks.get((baseline, *key[1:], held_set))
        if mine and theirs:
            return compare_bursts(mine, theirs)
    return None


def _signed(manifest: dict[str, Any], workload: str, metric: str) -> bool:
    """A figure the run's catalog declares signed (it can be 0 or below)."""
    metrics = manifest.get("catalog", {}).get(workload, {}).get("metrics", {})
    return bool(metrics.get(metric, {}).get("signed"))


def _better(manifest: dict[str, Any], workload: str, metric: str) -> str:
    """'lower' or 'higher' from the run's catalog; phases and footprint are costs."""
    metrics = manifest.get("catalog", {}).get(workload, {}).get("metrics", {})
    return metrics.get(metric, {}).get("better", "lower")


TIME_UNITS = {"ns", "us", "µs", "ms", "s"}


def undetected(row: dict[str, Any]) -> str:
    """What a tested row that is not significant could have shown: "none ≥×1.04" (no
    difference of 4% or more either way: this run would have called one that large in
    80% of runs); "" for a significant or untested row."""
    mde = row.get("detectable_ratio")
    if row.get("significant") or row.get("p_adjusted") is None or mde is None:
        return ""
    return f"none ≥×{mde:.3g}" if mde < 10 else f"none ≥×{mde:.0f}"


def verdict(row: dict[str, Any]) -> str:
    """The ratio in words, in the direction a reader means: "28× slower", "1.30× faster",
    "1.8× more" (a footprint cost, even one in ms of CPU time); "" when there is no ratio.

    ``ratio`` is always value / baseline value; whether that is worse depends on
    ``better``: a ratio of 0.036 for a rate (higher is better) is "28× slower"."""
    ratio = row.get("ratio")
    if ratio is None or ratio <= 0:
        return ""
    worse = ratio > 1 if row.get("better", "lower") == "lower" else ratio < 1
    factor = ratio if ratio >= 1 else 1 / ratio
    unit = row.get("unit") or ""
    timed = row.get("scope", MAIN) == MAIN and (
        unit in TIME_UNITS or "/s" in unit or unit == "IOPS"
    )
    word = ("slower" if worse else "faster") if timed else ("more" if ratio > 1 else "less")
    return f"{factor:.2f}× {word}" if factor < 10 else f"{factor:.0f}× {word}"
