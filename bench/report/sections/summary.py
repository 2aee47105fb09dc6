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


def key(r: dict[str, Any]) -> tuple:
    return (r["env"], r["workload"], r["op"], r["metric"])


def burst_words(b: dict[str, Any] | None) -> str:
    """How a burst figure was made, for its row's tooltip; "" for a launched one."""
    if not b:
        return ""
    rounds, blocks = b["rounds"], b["blocks"]
    return (
        f"measured in bursts on held instances: {rounds} round{'s' if rounds != 1 else ''} "
        f"(held sets, every environment relaunched between them) of {blocks} "
        f"block{'s' if blocks != 1 else ''}, each block one burst per environment in a "
        "fresh random order; the round is the cluster (its ratio is the median of its "
        "blocks' ratios)"
    )


def summary(
    rows, envs: list[str], baseline: str, bursts: dict[tuple, dict] | None = None
) -> list[dict[str, Any]]:
    """The summary rows grouped by environment (matrix order), each with what its ratio
    column says when there is no ratio, its verdict in words, and how a figure measured
    in bursts was made ("burst": rounds and blocks per round, from RunView.bursts)."""
    bursts = bursts or {}
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
                    "burst": burst_words(bursts.get(key(r))),
                }
            )
        out.append({"env": env, "emulated": bool(cells[0].get("emulated")), "rows": shown})
    return out
