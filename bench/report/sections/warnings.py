"""The report's warnings in groups, most serious first: failed self-checks, the run's
status, failed launches, unavailable and emulated environments, guest kernels, noise (the
run's noise warnings, and the host canary's line where it found the machine noisy) and the
precision target."""

from __future__ import annotations

from typing import Any

from bench.report import canary
from bench.report.sections.common import merge_similar
from bench.report.view import RunView
from bench.store import json_safe


def precision_items(unreached: dict[str, float], order: list[str]) -> list[str]:
    """The cells that missed the precision target, one compact line per environment."""
    per_env: dict[str, list[str]] = {e: [] for e in order}
    for cell, width in sorted(unreached.items()):
        env, _, workload = cell.rpartition("|")
        w = json_safe(width)
        per_env.setdefault(env or cell, []).append(
            f"{workload or cell} ±{w:.1%}" if w is not None else f"{workload or cell} (no figure)"
        )
    return [f"{env}: {', '.join(items)}" for env, items in per_env.items() if items]


def warnings(v: RunView, prov: dict[str, Any]) -> list[dict]:
    """Warnings in groups, most serious first: {kind, title, lines}; empty groups left out."""
    m = v.manifest
    groups = []

    def group(kind: str, title: str, items: list[str]) -> None:
        if items:
            groups.append({"kind": kind, "title": title, "lines": items})

    flags = [f for r in v.rows for f in r.get("flags") or []]
    group(
        "self-check",
        f"Self-checks: {len(flags)} figure(s) flagged, shown without a ratio or verdict",
        flags,
    )
    if m.status not in (None, "complete"):
        group(
            "status",
            "Run status",
            [f"run status: {m.status} ({m.stop_reason or 'no reason recorded'})"],
        )
    failed = []
    for f in v.fails:
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
    noise = merge_similar([str(w) for w in m.warnings])
    diag = canary.diagnosis(m)
    if diag and diag.get("verdict") == "noisy":
        noise.append(f"host canary: {canary.line(diag)} (plotted under “The machine's speed”)")
    group("noise", "Noise", noise)
    precision = m.matrix.get("precision", 0.02)
    unreached = precision_items(m.unreached, [e["label"] for e in prov["envs"]])
    group(
        "precision",
        f"Precision: {len(m.unreached)} cell(s) did not reach the ±{precision:.0%} target "
        "(the widest 95% CI half-width per cell)",
        unreached,
    )
    return groups
