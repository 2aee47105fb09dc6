"""Adaptive stopping, end to end: a real host + namespaces syscall run asked for a 1%
precision on a small budget either reaches it for every cell or says which cells did
not and why — and what the manifest says agrees with the samples on disk."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from bench import store
from bench.cli import cli
from bench.schedule import unreached

BUDGET = 8.0
PRECISION = 0.01


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    results = tmp_path_factory.mktemp("results")
    res = CliRunner().invoke(
        cli,
        [
            "run",
            "--env",
            "host",
            "--env",
            "namespaces",
            "--workload",
            "syscall",
            "--quick",
            "--precision",
            "1%",
            "--budget",
            str(BUDGET),
            "--rounds",
            "3",
            "--max-rounds",
            "40",
            "--seed",
            "5",
            "--results",
            str(results),
        ],
        catch_exceptions=False,
    )
    assert res.exit_code == 0, res.output
    (run,) = [p for p in results.iterdir() if p.is_dir()]
    return run


@pytest.mark.requires("host", "namespaces")
def test_manifest_stop_reason_matches_the_samples(run_dir):
    m = store.read_manifest(run_dir)
    assert m["status"] == "complete"
    assert m["matrix"]["precision"] == PRECISION
    records = store.read_records(run_dir)
    # The runner's verdict, recomputed from what is on disk, is what it recorded.
    cells = sorted({r["cell"] for r in records})
    assert unreached(records, m, cells) == pytest.approx(m["unreached"])
    reason = m["stop_reason"]
    if reason == "precision reached":
        assert m["unreached"] == {}
    elif reason == "time budget spent":  # before a figure's target, or the minimum rounds
        assert m["unreached"] or m["rounds_done"] < m["matrix"]["rounds"], m
    else:
        assert reason == "round cap reached"
        assert m["unreached"] and m["rounds_done"] == m["matrix"]["max_rounds"]
    measured_rounds = {r["round"] for r in records if r["round"] >= 1}
    assert measured_rounds == set(range(1, m["rounds_done"] + 1))
    for width in m["unreached"].values():
        assert width > PRECISION


@pytest.mark.requires("host", "namespaces")
def test_summary_says_which_cells_missed_the_target_and_why(run_dir):
    m = store.read_manifest(run_dir)
    text = CliRunner().invoke(cli, ["summary", str(run_dir)]).output
    if m["unreached"]:
        assert "precision not reached" in text and m["stop_reason"] in text
        for cell in m["unreached"]:  # one line each: "env / workload  ±width"
            assert cell.replace("|", " / ") in text
    else:
        assert "precision not reached" not in text
    rows = [
        json.loads(x)
        for x in CliRunner().invoke(cli, ["summary", str(run_dir), "--json"]).output.splitlines()
    ]
    assert rows
    missed = {
        f"{r['env']}|{r['workload']}"
        for r in rows
        if r["precision_target"] is not None and not r["reached_precision"]
    }
    assert missed == set(m["unreached"])
    for r in rows:
        assert {"p_value", "p_adjusted", "significant", "reached_precision", "outliers"} <= set(r)
