"""Exports of a fleet directory: every usable host's samples with a `host` column, or
the fleet's summary rows (bench/report/fleet.py: a run's summary row per host and
figure with the between-hosts test as `between_*`, main and footprint scopes, and one
row per host without a usable run)."""

from __future__ import annotations

from pathlib import Path


def frame(fleet_dir: Path, *, summary: bool = False):
    import pandas as pd

    from bench import analysis
    from bench.report import fleet, fleet_load

    loaded = fleet_load.load(fleet_dir)
    if not summary:
        parts = [h.df.assign(host=h.name) for h in loaded.done]
        df = pd.concat(parts, ignore_index=True)
        return df[["host", *[c for c in df.columns if c != "host"]]]
    rows = []
    for scope in (analysis.MAIN, analysis.FOOTPRINT):
        data = fleet.build(loaded, scope=scope)
        rows += [r for r in data["rows"] if scope == analysis.MAIN or r["host_status"] == "done"]
    return pd.DataFrame.from_records(rows)
