"""The report's data model: a run (manifest + samples DataFrame) -> one JSON-ready dict.

Pure: no files, no HTML. The run's view (bench/report/view.py) is built once; each
section of bench/report/sections/ reads it: the probes' headline, heatmap, per-figure
charts, startup phases and footprint; density; net; the user's workloads; then
provenance, warnings, methodology, the summary table and the raw samples (column-wise,
for the CSV download). Strings are left as they are; escaping is the renderer's job.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bench.manifest import Manifest
from bench.report.sections import SECTIONS, canary
from bench.report.sections.provenance import disk, methodology, provenance
from bench.report.sections.summary import summary
from bench.report.sections.warnings import warnings
from bench.report.view import view
from bench.store import json_safe

# What the report shows when the run has no probe figure (a run that failed early).
NO_PROBES = {
    "headline": [],
    "heatmap": {"columns": [], "envs": [], "cells": []},
    "charts": [],
    "startup": {"envs": [], "has_boot": False},
    "footprint": {"rows": [], "charts": []},
}


def build(
    manifest: Manifest | dict[str, Any],
    df,
    *,
    n_boot: int = 2000,
    canary_series: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The report's data: the run, its environments, every section of SECTIONS (the
    probes' parts at the top level, as the page lays them out; the others under their
    names, None when the run has nothing for them), the host canary (its series from
    canary.jsonl, bench.report.canary.read; None without one) and the shared parts."""
    v = view(manifest, df, n_boot=n_boot)
    m = v.manifest
    shown = {name: make(v) for name, make in SECTIONS.items()}
    prov = provenance(v)
    return {
        "run": {
            "run_id": m.run_id,
            "status": m.status,
            "created": m.created,
            "finished": m.finished,
            "stop_reason": m.stop_reason,
            "rounds_done": m.rounds_done,
        },
        "baseline": v.baseline,
        "envs": [
            {
                "label": e,
                "kind": v.env(e).kind if v.env(e) else None,
                "emulated": v.emulated(e),
                "measured": e in v.measured,
            }
            for e in v.envs
        ],
        **(shown.pop("probes") or NO_PROBES),
        **shown,
        "canary": canary.section(v, canary_series),
        "bursts": bool(v.bursts),
        "disk": disk(v),
        "summary": summary(v.rows, v.envs, v.baseline, v.bursts),
        "provenance": prov,
        "warnings": warnings(v, prov),
        "methodology": methodology(v),
        "samples": samples_columns(df),
    }


def samples_columns(df) -> dict[str, Any]:
    """All records (warm-up and failures too), column-wise; repeated strings coded."""
    cols: dict[str, Any] = {}
    for c in df.columns:
        s = df[c]
        if c in ("value", "t"):
            a = s.to_numpy(dtype=float, na_value=np.nan)
            cols[c] = {"num": json_safe(a.tolist())}
        elif c in ("round", "launch", "exit_code"):
            cols[c] = {"num": [None if x is None or x != x else int(x) for x in s.tolist()]}
        else:
            codes, uniques = _factorize(s)
            cols[c] = {"dict": uniques, "codes": codes}
    return {"columns": list(df.columns), "n": len(df), "data": cols}


def _factorize(s) -> tuple[list[int], list[Any]]:
    import pandas as pd

    codes, uniques = pd.factorize(s.astype(object).where(s.notna(), ""), sort=False)
    return codes.tolist(), [u if isinstance(u, str | bool | int) else str(u) for u in uniques]
