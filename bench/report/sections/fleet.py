"""The fleet's HTML page (reports/fleet.html.j2): the fleet model (bench/report/fleet.py)
laid out for the template, and rendered into one self-contained file.

The page reads across: one column per host. Its figures table starts with the facts in
which the hosts differ (kernel, CPU, virtualization...), in the host columns, so each
figure sits under the facts that may explain it; then, per workload, each environment's
ratio to its own host's baseline, and under it the ratio of ratios to the reference host
with the between-hosts verdict. The absolute figures are a table of their own under
their warning. No script is needed to read it: the page is tables and text, with the
stylesheet inlined, and the fleet's rows in one JSON element for whoever wants them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from markupsafe import Markup

from bench.report import fleet as model
from bench.report import fmt


def page(data: dict[str, Any]) -> dict[str, Any]:
    """The template's data: the model's, with the figures grouped by workload and every
    cell's text made once here (the template only places it)."""
    done, ref = data["done"], data["reference"]
    groups: dict[str, list[dict[str, Any]]] = {}
    for f in data["figures"]:
        groups.setdefault(f["workload"], []).append(_figure(f, done, ref))
    tested = [b for f in data["figures"] for ln in f["envs"] for b in ln["between"].values()]
    n_tested = sum(1 for b in tested if b["p_adjusted"] is not None)
    return data | {
        "workloads": [{"name": w, "figures": figs} for w, figs in groups.items()],
        "n_tested": n_tested,
        "n_differ": sum(1 for b in tested if b["significant"]),
        "failed": [h for h in data["hosts"] if not h["usable"]],
    }


def _figure(f: dict[str, Any], done: list[str], ref: str) -> dict[str, Any]:
    s = f["scale"]
    num = lambda x: fmt.fmt_num(None if x is None else x * s)  # noqa: E731
    lines = []
    for ln in f["envs"]:
        cells, between, absolute = [], [], []
        for h in done:
            c = ln["cells"].get(h)
            absolute.append(
                None
                if c is None
                else {
                    "median": num(c["median"]),
                    "ci": f"[{num(c['ci_low'])}, {num(c['ci_high'])}]",
                }
            )
            cells.append(_ratio_cell(c, ln["baseline"]))
            between.append(None if h == ref else _between_cell(ln["between"].get(h), ref))
        lines.append(
            {
                "env": ln["env"],
                "baseline": ln["baseline"],
                "cells": cells,
                "between": between,
                "absolute": absolute,
            }
        )
    return {
        "label": f["label"],
        "metric": f["metric"],
        "unit": f["shown_unit"],
        "better": f["better"],
        "lines": lines,
    }


def _ratio_cell(c: dict[str, Any] | None, baseline: bool) -> dict[str, Any]:
    if c is None:
        return {"text": "not measured", "ci": "", "verdict": "", "cls": "muted"}
    if baseline:
        return {"text": "baseline", "ci": "", "verdict": "", "cls": "muted"}
    if c["flags"]:
        return {
            "text": "flagged: no ratio",
            "ci": "",
            "verdict": "; ".join(c["flags"]),
            "cls": "flag",
        }
    if c["ratio"] is None:
        return {"text": c["note"] or "–", "ci": "", "verdict": "", "cls": "muted"}
    ci = ""
    if c["ratio_ci_low"] is not None:
        ci = f"[{fmt.fmt_num(c['ratio_ci_low'])}, {fmt.fmt_num(c['ratio_ci_high'])}]"
    if c["significant"]:
        worse = (c["ratio"] > 1) == (c["better"] != "higher")
        return {
            "text": fmt.fmt_ratio(c["ratio"]),
            "ci": ci,
            "verdict": c["words"],
            "cls": "worse" if worse else "better",
        }
    return {
        "text": fmt.fmt_ratio(c["ratio"]),
        "ci": ci,
        "verdict": f"n.s. · {c['words']}" if c["words"] else "n.s.",
        "cls": "ns",
    }


def _between_cell(b: dict[str, Any] | None, ref: str) -> dict[str, Any]:
    if not b or b["ratio"] is None:
        return {
            "text": "–",
            "ci": "",
            "verdict": (b or {}).get("note") or "not tested",
            "cls": "muted",
            "p": "",
        }
    ci = f"[{fmt.fmt_num(b['ci_low'])}, {fmt.fmt_num(b['ci_high'])}]"
    p = "–" if b["p_adjusted"] is None else f"{b['p_adjusted']:.3g}"
    if b["significant"]:
        return {
            "text": fmt.fmt_ratio(b["ratio"]),
            "ci": ci,
            "verdict": f"differs: {model.between_words(b, ref)}",
            "cls": "differs",
            "p": p,
        }
    words = model.between_words(b, ref)
    return {
        "text": fmt.fmt_ratio(b["ratio"]),
        "ci": ci,
        "verdict": f"n.s. · {words}" if words else "n.s.",
        "cls": "ns",
        "p": p,
    }


def render(data: dict[str, Any]) -> str:
    """The page as one HTML string (stylesheet inlined, no script fetched)."""
    from bench.report import html

    shown = page(data)
    blob = {"fleet": data["fleet"], "hosts": data["hosts"], "rows": data["rows"]}
    env = html.environment()
    return env.get_template("fleet.html.j2").render(
        d=shown,
        data_blob=Markup(html.data_json(blob)),
        title=f"isobench · fleet {data['fleet']['id']}",
    )


def render_fleet(path: Path | str, *, n_boot: int = 2000) -> str:
    """The report of the fleet directory `path` (FleetError when it cannot be read)."""
    from bench.report import fleet_load

    return render(model.build(fleet_load.load(path), n_boot=n_boot))
