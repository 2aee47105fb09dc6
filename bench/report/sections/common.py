"""What several sections share: a ratio turned into a cost, a summary row cut to a table
cell, when an axis goes logarithmic, near-duplicate lines merged."""

from __future__ import annotations

import re
from typing import Any

from bench import analysis

LOG_SPAN = 20  # a line chart gets a log axis where its values span more than this


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


def wide(medians: list, lows: list) -> bool:
    """A log axis where medians span more than 10x and everything drawn is positive."""
    meds = [x for x in medians if x is not None]
    drawn = [x for x in lows if x is not None]
    return bool(meds) and min(meds + drawn) > 0 and max(meds) / min(meds) > 10


def log_axis(lines: list[list[tuple]]) -> bool:
    """A log axis where every drawn value (CI ends too) is positive and the medians span
    more than LOG_SPAN times."""
    pts = [p for line in lines for p in line]
    meds = [p[1] for p in pts if p[1] is not None]
    drawn = meds + [x for p in pts for x in (p[2], p[3]) if x is not None]
    return bool(meds) and min(drawn) > 0 and max(meds) / min(meds) > LOG_SPAN


def merge_similar(lines: list[str]) -> list[str]:
    """One line per warning that differs only in its numbers (the same condition seen at
    the start and at the end of a run), with how often it was seen."""
    seen: dict[str, list[str]] = {}
    for line in lines:
        seen.setdefault(re.sub(r"\d+(\.\d+)?", "#", line), []).append(line)
    return [v[0] + (f" (seen {len(v)}×)" if len(v) > 1 else "") for v in seen.values()]
