"""The summary table: every main figure grouped by environment (matrix order), with what
its ratio column says when there is no ratio, and its verdict in words."""

from __future__ import annotations

from typing import Any

from bench import analysis
from bench.report.sections.common import cost, finding


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
                    "undetected": analysis.undetected(r),
                }
            )
        out.append({"env": env, "emulated": bool(cells[0].get("emulated")), "rows": shown})
    return out
