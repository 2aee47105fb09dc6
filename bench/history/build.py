"""The history as one JSON-ready dict: the series' runs (with what changed at each and
whether it finished), the runs left out, one entry per figure (an environment's ratio to
the baseline per run and the baseline's own median per run, both with CIs, and their
change points, classified), and the gate's verdict.

A change point of a ratio whose baseline did not move at that run is a change of the
isolation cost; a change of the baseline's own figure is the host's (its kernel, its
speed, how the baseline was timed). The gate counts changes of the isolation cost: a
ratio pairs each environment with the baseline measured next to it, so the machine's
speed does not move it, and a host change alone is reported, not failed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.history import changes, points, runs, versions
from bench.history.runs import FINGERPRINT
from bench.store import json_safe

COST = "isolation cost"
COST_AND_HOST = "isolation cost (the baseline moved too)"
HOST = "host"
HOST_AND_COST = "host (the ratio moved too)"


def build(
    paths: list[Path],
    *,
    envs: tuple[str, ...] = (),
    ops: tuple[str, ...] = (),
    threshold: float = 5.0,
    window: int = 3,
    n_boot: int = 1000,
) -> dict[str, Any]:
    series, left_out = runs.load(paths)
    pts = [points.load(r.path, r.manifest, n_boot=n_boot) for r in series]
    facts = [versions.facts(r.manifest) | p.burst_ms for r, p in zip(series, pts, strict=True)]
    changed = versions.changes(facts)
    baseline = pts[-1].baseline
    figures, base_cps = [], {}
    keys = sorted({k for p in pts if p.baseline == baseline for k in p.ratios})
    for key in keys:
        env, workload, op, metric = key
        if (envs and env not in envs) or (ops and op not in ops and f"{workload}.{op}" not in ops):
            continue
        bkey = key[1:]
        ratio = [p.ratios.get(key) if p.baseline == baseline else None for p in pts]
        base = [p.base.get(bkey) if p.baseline == baseline else None for p in pts]
        if bkey not in base_cps:
            base_cps[bkey] = changes.find(base)
        rcps = changes.find(ratio)
        figures.append(
            {
                "env": env,
                "workload": workload,
                "op": op,
                "metric": metric,
                "unit": next((p.units[bkey] for p in pts if bkey in p.units), ""),
                "better": next((p.better[bkey] for p in pts if bkey in p.better), "lower"),
                "ratio": [_point(x) for x in ratio],
                "base": [_point(x) for x in base],
                "change_points": _classified(rcps, base_cps[bkey], series, changed),
            }
        )
    out = {
        "runs": [
            {
                "run_id": r.run_id,
                "path": str(r.path),
                "created": r.created,
                "status": r.manifest.get("status"),
                "flags": r.flags,
                "changes": c,
            }
            for r, c in zip(series, changed, strict=True)
        ],
        "left_out": left_out,
        "host": dict(zip(FINGERPRINT, series[-1].fingerprint(), strict=True)),
        "baseline": baseline,
        "parameters": {
            "detector": "Apache Otava e-divisive means + t-test, on the log of each point",
            "max_pvalue": changes.MAX_PVALUE,
            "window_len": changes.WINDOW,
            "min_magnitude": changes.MIN_MAGNITUDE,
            "confirmation": "Yuen's trimmed t on the pooled per-round values before/after",
        },
        "figures": figures,
    }
    out["gate"] = gate(out, threshold=threshold, window=window)
    return json_safe(out)


def _point(p: points.Point | None) -> dict[str, Any] | None:
    if p is None or p.value is None:
        return None
    return {"value": p.value, "ci_low": p.low, "ci_high": p.high, "rounds": int(len(p.rounds))}


def _classified(ratio_cps, base_cps, series, changed) -> list[dict[str, Any]]:
    r_at = {c["index"] for c in ratio_cps}
    b_at = {c["index"] for c in base_cps}
    out = []
    for c in ratio_cps:
        out.append(c | {"series": "ratio", "class": COST_AND_HOST if c["index"] in b_at else COST})
    for c in base_cps:
        out.append(
            c | {"series": "baseline", "class": HOST_AND_COST if c["index"] in r_at else HOST}
        )
    for c in out:
        c["run"] = series[c["index"]].run_id
        c["what_changed"] = [
            f"{d['what']}: {d['before'] or '–'} → {d['after'] or '–'}" for d in changed[c["index"]]
        ]
    return sorted(out, key=lambda c: (c["index"], c["series"] != "ratio"))


def gate(history: dict[str, Any], *, threshold: float, window: int) -> dict[str, Any]:
    """The change points of an isolation cost (a ratio's) beyond `threshold` percent in
    the newest `window` runs; `failed` when there is one."""
    first = max(0, len(history["runs"]) - window)
    hits = [
        {"env": f["env"], "workload": f["workload"], "op": f["op"], "metric": f["metric"]} | c
        for f in history["figures"]
        for c in f["change_points"]
        if c["series"] == "ratio" and c["index"] >= first and abs(c["magnitude"]) * 100 > threshold
    ]
    return {"threshold": threshold, "window": window, "failed": bool(hits), "changes": hits}
