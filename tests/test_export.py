"""Exports of a real run: CSV, JSON, Parquet, the summary, and the errors."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from bench import store
from bench.commands.report import export as export_cmd
from tests.test_report import make_run

needs_run = pytest.mark.requires("root", "cgroup", "compiler", "host", "namespaces")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return make_run(tmp_path_factory)


def invoke(*args):
    return CliRunner().invoke(export_cmd, [str(a) for a in args], catch_exceptions=False)


@needs_run
@pytest.mark.parametrize("fmt", ["csv", "json", "parquet"])
def test_export_samples(run, tmp_path, fmt):
    if fmt == "parquet":
        pytest.importorskip("pyarrow")
    out = tmp_path / f"s.{fmt}"
    assert invoke(run, "--format", fmt, "-o", out).exit_code == 0
    df = {
        "csv": pd.read_csv,
        "json": lambda p: pd.DataFrame(json.loads(p.read_text())),
        "parquet": pd.read_parquet,
    }[fmt](out)
    assert len(df) == len(store.load_samples(run))
    assert list(df.columns) == list(store.COLUMNS)


@needs_run
def test_export_summary_csv(run, tmp_path):
    out = tmp_path / "sum.csv"
    assert invoke(run, "--format", "csv", "--summary", "-o", out).exit_code == 0
    df = pd.read_csv(out)
    assert {"ratio", "p_adjusted", "scope"} <= set(df.columns)
    assert set(df["scope"]) == {"main", "footprint"}


def test_unknown_format_is_a_user_error(tmp_path):
    (tmp_path / "manifest.json").write_text(json.dumps({"schema_version": 1, "run_id": "x"}))
    res = CliRunner().invoke(export_cmd, [str(tmp_path), "--format", "xlsx"])
    assert res.exit_code == 2 and "'xlsx' is not one of" in res.output  # click.Choice


def test_not_a_run_is_a_store_error(tmp_path):
    with pytest.raises(store.StoreError):
        invoke(tmp_path / "nope", "--format", "csv")


def test_export_of_a_run_recorded_at_schema_1(tmp_path):
    """An old run (no exit_code / stderr_tail in its records) exports every column."""
    run = Path(__file__).parent / "data" / "runs" / "v1"
    out = tmp_path / "old.csv"
    assert invoke(run, "--format", "csv", "-o", out).exit_code == 0
    df = pd.read_csv(out)
    assert list(df.columns) == list(store.COLUMNS) and len(df) == 248
    assert df["exit_code"].isna().all() and df["stderr_tail"].isna().all()
