"""The canary section: the host's own speed through the run (bench/report/canary.py reads
it), plotted against time with the round boundaries marked, and what the diagnosis made
of it: the verdict, its sentence, the figures behind them, and what interleaving the
bursts bought.

The plot draws every burst pair up to MAX_POINTS (evenly thinned beyond: a 5-minute run
with a canary pair every 40 ms has 7,500) and a running median over SMOOTH_S, which
shows the phases that the single bursts' jitter hides."""

from __future__ import annotations

from typing import Any

import numpy as np

from bench.canary_diagnosis import running_median
from bench.report import canary
from bench.report.fmt import fmt_num
from bench.report.view import RunView

MAX_POINTS = 2000
SMOOTH_S = 0.5  # the running median's window (a phase of ~2 s is 4 windows long)
MIN_SMOOTH = 5  # points: a median of fewer follows the jitter


def section(v: RunView, records: list[dict[str, Any]] | None) -> dict[str, Any] | None:
    """None when the run has neither a canary series nor a canary diagnosis."""
    diag = canary.diagnosis(v.manifest)
    recorded = diag is not None
    if diag is None and records:
        diag = canary.diagnose(records)
    if diag is None and not records:
        return None
    out: dict[str, Any] = {
        "verdict": diag["verdict"] if diag else None,
        "sentence": diag["sentence"] if diag else "",
        "said": said(diag) if diag else "",
        "line": canary.line(diag) if diag else "",
        "pairing": canary.pairing(diag) if diag else "",
        "every_ms": diag.get("every_ms") if diag else None,
        "blocks": diag.get("blocks") if diag else None,
        "recorded": recorded,
        "figures": figures(diag) if diag else [],
        "plot": plot(records) if records else None,
    }
    return out


def said(diag: dict[str, Any]) -> str:
    """The sentence as the section shows it: without its general claim about pairing
    where the pairing line under it says what this run's pairing was."""
    if canary.pairing(diag):
        return diag["sentence"].removesuffix(canary.GENERAL_CLAIM)
    return diag["sentence"]


def figures(diag: dict[str, Any]) -> list[dict[str, str]]:
    """One row per column of the series: its range, jitter, slow part and phases."""
    rows = []
    for key, what, unit, scale in (
        ("null_ns", "getppid", "ns", 1.0),
        ("compute_ops_per_s", "compute", "ops/s", 1.0),
    ):
        c = diag.get(key)
        if not isinstance(c, dict):
            continue
        p = [
            fmt_num(c.get(k) * scale if c.get(k) is not None else None)
            for k in ("p5", "p50", "p95")
        ]
        phase = "–"
        if c.get("phases") and c.get("phase_s"):
            at_least = "≥ " if (c.get("phase_changes") or 0) < 2 else "~"
            phase = f"{at_least}{c['phase_s']:.1f} s"
        elif c.get("phases") is False:
            phase = "none"
        rows.append(
            {
                "what": what,
                "unit": unit,
                "p5": p[0],
                "p50": p[1],
                "p95": p[2],
                "jitter": _pct(c.get("jitter")),
                "slow": _pct(c.get("slow_sd")),
                "phase": phase,
            }
        )
    return rows


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f} %"


def plot(records: list[dict[str, Any]]) -> dict[str, Any]:
    """The series for the chart: times (s), both figures, their running medians, and the
    rounds' starts; thinned evenly to MAX_POINTS."""
    t = np.array([r["t"] for r in records], dtype=float)
    null = np.array([r["null_ns"] for r in records], dtype=float)
    comp = np.array([r["compute_ops"] for r in records], dtype=float)
    rnd = [r["round"] for r in records]
    spacing = float(np.median(np.diff(t))) if t.size > 1 else 0.0
    w = max(MIN_SMOOTH, int(round(SMOOTH_S / spacing)) | 1) if spacing > 0 else 0
    smooth = t.size > w > 0
    null_med = np.exp(running_median(np.log(null), w)) if smooth else None
    comp_med = np.exp(running_median(np.log(comp), w)) if smooth else None
    keep = np.arange(t.size)
    if t.size > MAX_POINTS:
        keep = np.linspace(0, t.size - 1, MAX_POINTS).round().astype(int)

    def cut(a: np.ndarray | None) -> list[float] | None:
        return None if a is None else [float(f"{x:.5g}") for x in a[keep]]

    starts = []
    for i, r in enumerate(rnd):
        if i == 0 or r != rnd[i - 1]:
            starts.append({"round": r, "t": float(t[i])})
    return {
        "n": int(t.size),
        "shown": int(keep.size),
        "spacing_ms": spacing * 1e3,
        "smooth_points": w if smooth else 0,
        "t": cut(t),
        "null_ns": cut(null),
        "compute_ops": cut(comp),
        "null_median": cut(null_med),
        "compute_median": cut(comp_med),
        "rounds": starts,
    }
