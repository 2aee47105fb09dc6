"""The host canary in the report and the summary (issue 22, part 5): a recorded noise series
(tests/data/noise/bursts-30s-getppid180.txt, this machine's serve-mode probes) turned into
a run's canary.jsonl and manifest diagnosis, on the recorded v1 run; the section's model,
the page in real headless Chromium (the plot drawn, with its points and round marks), the
summary's line and its --json; a run without a canary has no section and no line; the
burst rows' "how these numbers were made"."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from html import unescape
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from markupsafe import escape

from bench import store
from bench.canary_diagnosis import Series, diagnose
from bench.report import canary, html, view
from bench.report.sections import canary as canary_section
from bench.report.sections import summary as summary_section
from tests.test_report import blob
from tests.test_report_browser import chromium, console_messages

ROOT = Path(__file__).parents[1]
NOISE = ROOT / "tests" / "data" / "noise" / "bursts-30s-getppid180.txt"
V1 = ROOT / "tests" / "data" / "runs" / "v1"
ROUND_S = 7.5  # the recorded 30 s cut into 4 rounds
EVERY_MS = 12.0  # the pairing a run of 3 environments makes with 5 ms bursts


def canary_records(every: int = 2) -> list[dict]:
    """The recorded series as a run's canary.jsonl would hold it: one pair of bursts
    (every `every`-th of the recording: a canary between blocks, not back to back)."""
    data = np.loadtxt(NOISE)[::every]
    return [
        {"t": float(t), "round": 1 + int(t // ROUND_S), "null_ns": float(n), "compute_ops": m * 1e6}
        for t, n, m in data
    ]


def canary_run(where: Path, *, diagnosis: bool = True, series: bool = True) -> Path:
    """The recorded v1 run with a canary: canary.jsonl and manifest noise.canary."""
    shutil.copytree(V1, where)
    recs = canary_records()
    if series:
        text = "".join(json.dumps(r) + "\n" for r in recs)
        (where / canary.CANARY_FILE).write_text(text + '{"t": 31.0, "round": 5, "null_n\n')
    if diagnosis:
        m = json.loads((where / "manifest.json").read_text())
        s = Series(
            tuple(r["t"] for r in recs),
            tuple(r["null_ns"] for r in recs),
            tuple(r["compute_ops"] for r in recs),
            burst_ms=5.0,
        )
        m["noise"]["canary"] = diagnose(s) | {"every_ms": EVERY_MS, "blocks": 312}
        (where / "manifest.json").write_text(json.dumps(m))
    return where


# -- pure pieces -----------------------------------------------------------------------------
def test_the_series_is_read_and_a_cut_line_left_out(tmp_path):
    run = canary_run(tmp_path / "run")
    recs = canary.read(run)
    assert len(recs) == len(canary_records()) > 1000  # the cut last line is not a record
    assert [r["round"] for r in recs][:: len(recs) - 1] == [1, 4]
    assert canary.read(V1) is None  # an older run: no canary, no error


def test_the_pairing_clause_says_what_interleaving_bought():
    d = {"sentence": "x", "every_ms": 40.0, "null_ns": {"phases": True, "phase_s": 2.0}}
    assert canary.pairing(d) == (
        "bursts were interleaved every 40 ms, so each ratio pairs measurements made "
        "within the same phase; a figure's own median moves with the phases, so its "
        "interval spans them where a ratio's need not"
    )
    slow = canary.pairing(d | {"every_ms": 900.0})
    assert "not well within its phases of ~2.0 s" in slow
    assert canary.pairing(d | {"null_ns": {"phases": False}}) == (
        "bursts were interleaved every 40 ms"
    )
    assert canary.pairing({"sentence": "x"}) == ""
    assert canary.line({"sentence": "steady"}) == "steady"


def test_the_line_replaces_the_diagnosis_general_claim_with_the_runs_pairing(tmp_path):
    m = json.loads((canary_run(tmp_path / "run") / "manifest.json").read_text())
    d = m["noise"]["canary"]
    assert d["sentence"].endswith(canary.GENERAL_CLAIM)  # canary_diagnosis' wording
    line = canary.line(d)
    assert line.startswith("the host's speed moved between")
    assert line.endswith(
        "; bursts were interleaved every 12 ms, so each ratio pairs measurements made "
        "within the same phase" + canary.OWN
    )
    assert line.count("same phase") == 1


def test_the_section_model(tmp_path):
    run = canary_run(tmp_path / "run")
    d = blob(html.render_run(run, n_boot=200))
    c = d["canary"]
    assert c["verdict"] == "noisy" and c["recorded"] and c["every_ms"] == EVERY_MS
    assert c["blocks"] == 312 and "in phases of ~" in c["sentence"]
    p = c["plot"]
    assert p["n"] == p["shown"] == len(p["t"]) == len(p["null_ns"]) == len(p["compute_ops"])
    assert len(p["null_median"]) == p["n"] and p["smooth_points"] >= canary_section.MIN_SMOOTH
    assert [r["round"] for r in p["rounds"]] == [1, 2, 3, 4]
    assert [round(r["t"] / ROUND_S) for r in p["rounds"]] == [0, 1, 2, 3]
    assert min(p["null_ns"]) > 150 and max(p["null_ns"]) < 1000
    whats = [f["what"] for f in c["figures"]]
    assert whats == ["getppid", "compute"] and c["figures"][0]["phase"].startswith("~")


def test_a_long_series_is_thinned_for_the_plot_but_not_for_its_median():
    recs = [
        {"t": i * 0.01, "round": 1 + i // 3000, "null_ns": 100.0 + i % 7, "compute_ops": 1e8}
        for i in range(9000)
    ]
    p = canary_section.plot(recs)
    assert p["n"] == 9000 and p["shown"] == len(p["t"]) == canary_section.MAX_POINTS
    assert p["t"][0] == 0 and p["t"][-1] == pytest.approx(89.99)
    assert [r["round"] for r in p["rounds"]] == [1, 2, 3]


def test_without_the_manifest_diagnosis_the_report_makes_one(tmp_path):
    run = canary_run(tmp_path / "run", diagnosis=False)
    c = blob(html.render_run(run, n_boot=200))["canary"]
    assert c["verdict"] == "noisy" and not c["recorded"] and c["pairing"] == ""
    assert c["plot"]["n"] > 1000


def test_without_the_series_the_diagnosis_stands_alone(tmp_path):
    run = canary_run(tmp_path / "run", series=False)
    text = html.render_run(run, n_boot=200)
    c = blob(text)["canary"]
    assert c["plot"] is None and c["verdict"] == "noisy"
    assert 'data-chart="canary"' not in text and 'id="canary"' in text


def test_an_older_run_has_no_canary_section(tmp_path):
    text = html.render_run(V1, n_boot=200)
    assert blob(text)["canary"] is None and 'id="canary"' not in text


def test_burst_rows_say_how_they_were_made():
    """A figure measured in bursts (source "burst", as the runner records it) is tagged in
    the summary table with its rounds and blocks; a launched one is not."""
    rec = {"env": "docker", "workload": "syscall", "op": "null", "metric": "ns_per_op"}
    rows = [
        rec | {"source": "burst", "status": "ok", "round": r, "block": b, "value": 1.0}
        for r in (1, 2, 3)
        for b in range(1, 9)
    ]
    rows += [rec | {"op": "read", "source": "probe", "status": "ok", "round": 1, "value": 1.0}]
    partner = {"env": "host", "set": "qemu", "source": "burst", "status": "ok", "value": 1.0}
    rows += [rec | partner | {"round": 1, "block": b} for b in (1, 2)]  # pairs with qemu's
    rows += [rec | {"set": "", "source": "burst", "status": "ok", "round": 0, "block": 1}]
    cells = view.burst_cells(pd.DataFrame(rows))
    assert cells == {("docker", "syscall", "null", "ns_per_op"): {"rounds": 3, "blocks": 8}}
    said = summary_section.burst_words(cells[("docker", "syscall", "null", "ns_per_op")])
    assert "3 rounds" in said and "8 blocks" in said and "fresh random order" in said
    assert "cluster" in said and summary_section.burst_words(None) == ""


# -- the summary -----------------------------------------------------------------------------
def cli(*args: str) -> subprocess.CompletedProcess:
    env = {"PYTHONPATH": str(ROOT), "COLUMNS": "100", "PATH": "/usr/bin:/bin"}
    return subprocess.run(
        [sys.executable, "-m", "bench.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def test_the_summary_prints_the_canary_line_under_the_warnings(tmp_path):
    run = canary_run(tmp_path / "run")
    res = cli("summary", str(run))
    assert res.returncode == 0, res.stderr
    text = " ".join(res.stdout.split())  # the line is folded at the width
    assert "canary (noisy): the host's speed moved between" in text
    assert "bursts were interleaved every 12 ms, so each ratio pairs" in text
    lines = res.stdout.splitlines()
    first = next(i for i, x in enumerate(lines) if x.startswith("canary"))
    assert max(i for i, x in enumerate(lines) if x.startswith("warning:")) < first


def test_summary_json_carries_the_canary_on_every_row(tmp_path):
    run = canary_run(tmp_path / "run")
    res = cli("summary", str(run), "--json")
    assert res.returncode == 0, res.stderr
    rows = [json.loads(x) for x in res.stdout.splitlines()]
    assert rows and all({"env", "median", "detectable_ratio"} <= set(r) for r in rows)
    c = rows[0]["canary"]
    assert all(r["canary"] == c for r in rows)
    assert c["verdict"] == "noisy" and c["every_ms"] == EVERY_MS and c["blocks"] == 312
    assert c["line"] == canary.line(
        json.loads((run / "manifest.json").read_text())["noise"]["canary"]
    )
    old = [json.loads(x) for x in cli("summary", str(V1), "--json").stdout.splitlines()]
    assert old and not [r for r in old if "canary" in r]
    assert "canary" not in cli("summary", str(V1)).stdout


# -- the page in Chromium --------------------------------------------------------------------
@pytest.mark.requires("chromium")
def test_the_canary_plot_renders_in_chromium(tmp_path):
    run = canary_run(tmp_path / "run")
    page = tmp_path / "report.html"
    page.write_text(html.render_run(run, n_boot=200))
    d = blob(page.read_text())
    res = chromium(page.as_uri(), tmp_path / "profile", "--dump-dom", "--window-size=1280,3000")
    assert res.returncode == 0, res.stderr[-2000:]
    assert console_messages(res.stderr) == []
    dom = res.stdout
    every = re.findall(r"<div[^>]*\bdata-chart=[^>]*>", dom)
    assert [c for c in every if 'data-rendered="1"' not in c] == []
    (block,) = re.findall(r'data-chart="canary"[^>]*>(.*?)</svg>', dom, re.S)
    # one mark per burst and figure (ECharts draws a scatter point as a path each)
    assert block.count("<path") >= 2 * d["canary"]["plot"]["shown"]
    texts = [unescape(t) for t in re.findall(r"<(?:text|tspan)[^>]*>([^<]*)<", block)]
    assert {"round 2", "round 3", "round 4"} <= set(texts)
    assert {"ns per getppid", "compute ops/s", "getppid running median"} <= set(texts)
    section = dom.split('id="canary"')[1].split("</section>")[0]
    assert "noisy" in section and "The host's speed moved between" in unescape(section)
    assert "Bursts were interleaved every 12 ms" in section


def test_the_section_says_the_pairing_once(tmp_path):
    c = blob(html.render_run(canary_run(tmp_path / "run"), n_boot=200))["canary"]
    assert c["sentence"].endswith(canary.GENERAL_CLAIM)  # as the run recorded it
    assert c["said"] == c["sentence"].removesuffix(canary.GENERAL_CLAIM)
    assert c["pairing"].startswith("bursts were interleaved every 12 ms")


def test_a_noisy_canary_is_a_noise_warning(tmp_path):
    d = blob(html.render_run(canary_run(tmp_path / "run"), n_boot=200))
    (noise,) = [g for g in d["warnings"] if g["kind"] == "noise"]
    (line,) = [x for x in noise["lines"] if x.startswith("host canary: ")]
    assert "bursts were interleaved every 12 ms" in line
    quiet = blob(html.render_run(V1, n_boot=200))["warnings"]
    assert not [x for g in quiet for x in g["lines"] if "canary" in x]


def test_a_burst_row_is_tagged_and_the_method_explained():
    """The page of a run with burst figures: the row's tag carries how it was made, and
    the methodology explains blocks, the cluster and the MDE (the model as the analysis of
    a burst run gives it; bench.analysis decides which rows those are)."""
    from bench.report import model

    run = V1
    data = model.build(store.read_manifest(run), store.load_samples(run), n_boot=200)
    assert data["bursts"] is False and 'id="bursts"' not in html.render_template(
        "report.html.j2", data, title="t"
    )
    how = summary_section.burst_words({"rounds": 8, "blocks": 75})
    row = data["summary"][1]["rows"][0]
    row["burst"] = how
    data["bursts"] = True
    text = html.render_template("report.html.j2", data, title="t")
    assert f'<span class="badge burst" title="{escape(how)}">bursts</span>' in text
    method = text.split('<li id="bursts">')[1].split("</li>")[0]
    for said in ("fresh random order", "The round is the cluster", "none ≥×1.04", "held set"):
        assert said in method
