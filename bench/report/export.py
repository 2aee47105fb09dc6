"""Exports of a run's samples (or its summary rows) as CSV, JSON or Parquet."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

from bench import analysis, store

FORMATS = ("csv", "json", "parquet")


class ExportError(Exception):
    """A user error (unknown format, missing optional dependency); one line."""


def frame(run_dir: Path, *, summary: bool = False):
    """The samples DataFrame, or the summary rows (main and footprint scopes); of a
    fleet directory, the fleet's (bench/report/fleet_export.py)."""
    import pandas as pd

    from bench.report.fleet_load import is_fleet

    if is_fleet(run_dir):
        from bench.report import fleet_export

        return fleet_export.frame(run_dir, summary=summary)
    manifest = store.read_manifest(run_dir)
    df = store.load_samples(run_dir)
    if not summary:
        return df
    rows = []
    if len(df):
        for scope in (analysis.MAIN, analysis.FOOTPRINT):
            rows += analysis.summarize_run(df, manifest, scope=scope)
    return pd.DataFrame.from_records(rows)


def to_bytes(df, fmt: str) -> bytes:
    if fmt == "csv":
        return df.to_csv(index=False).encode()
    if fmt == "json":
        records: list[dict[str, Any]] = json.loads(df.to_json(orient="records"))
        return (json.dumps(records, indent=1) + "\n").encode()
    if fmt == "parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise ExportError(
                "parquet export needs pyarrow: pip install 'isobench[parquet]'"
            ) from None
        buf = io.BytesIO()
        df.to_parquet(buf, index=False, engine="pyarrow")
        return buf.getvalue()
    raise ExportError(f"unknown format {fmt!r} (choose from {', '.join(FORMATS)})")


def default_path(run_dir: Path, fmt: str, summary: bool) -> Path:
    return Path(run_dir) / f"{'summary' if summary else 'samples'}.{fmt}"


def write(path: Path, data: bytes) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path
