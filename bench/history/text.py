"""`isobench history` as text: the series' runs with what changed at each, the runs left
out, per figure its ratio per run and its change points, and the gate's verdict."""

from __future__ import annotations

import time
from typing import Any

import click

from bench.report import fmt


def _when(t: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(t)) if t else "?"


def level(lv: dict[str, Any], ratio: bool, unit: str) -> str:
    def one(x):
        if x is None:
            return "–"
        return fmt.fmt_ratio(x) if ratio else fmt.fmt_quantity(x, unit)

    return f"{one(lv['value'])} [{one(lv['ci_low'])}, {one(lv['ci_high'])}]"


def change_line(c: dict[str, Any], unit: str, n: int) -> str:
    ratio = c["series"] == "ratio"
    what = "ratio" if ratio else "baseline"
    lo, hi = c["change_ci"]
    ci = "" if lo is None or hi is None else f" [{lo * 100:+.1f}, {hi * 100:+.1f}]"
    line = (
        f"change at run {c['index'] + 1}/{n} ({c['run']}) in the {what}: {c['class']}; "
        f"{level(c['level_before'], ratio, unit)} → {level(c['level_after'], ratio, unit)}, "
        f"{c['magnitude'] * 100:+.1f}%{ci}, p {_p(c['p_value'])} (rounds: p {_p(c['p_rounds'])})"
    )
    if c["what_changed"]:
        line += "; changed then: " + "; ".join(c["what_changed"])
    return line


def _p(p: float | None) -> str:
    if p is None:
        return "–"
    return "< 0.0001" if p < 0.0001 else f"{p:.2g}"


def show(h: dict[str, Any]) -> None:
    runs, host = h["runs"], h["host"]
    click.echo(
        f"history: {len(runs)} runs of one host ({host['cpu_model']}, {host['cpu_count']} CPUs, "
        f"{host['memory_gib']} GiB), {_when(runs[0]['created'])} → {_when(runs[-1]['created'])}, "
        f"ratios to {h['baseline']}"
    )
    for i, r in enumerate(runs, 1):
        notes = [*r["flags"]]
        if r["changes"]:
            notes.append(
                "changed: "
                + "; ".join(
                    f"{d['what']} {d['before'] or '–'} → {d['after'] or '–'}" for d in r["changes"]
                )
            )
        click.echo(f"  {i:>3} {r['run_id']}  {_when(r['created'])}  " + "  ".join(notes))
    for x in h["left_out"]:
        click.echo(f"  left out: {x['run']}: {x['reason']}")
    for f in h["figures"]:
        click.echo(
            f"{f['env']} · {f['workload']} · {f['op']}  {f['unit']}, {f['better']} is better "
            f"({f['metric']})"
        )
        ratios = " ".join(fmt.fmt_ratio(p["value"]) if p else "–" for p in f["ratio"])
        click.echo(f"  ratio per run: {ratios}")
        if not f["change_points"]:
            click.echo("  no change point")
        for c in f["change_points"]:
            click.echo("  " + change_line(c, f["unit"], len(runs)))
    g = h["gate"]
    verdict = "FAIL" if g["failed"] else "pass"
    click.echo(
        f"gate ({verdict}): {len(g['changes'])} change(s) of an isolation cost beyond "
        f"±{g['threshold']:g}% in the newest {g['window']} runs"
    )
