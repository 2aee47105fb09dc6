"""`isobench history` end to end on REAL runs: a series of short runs of the host and
docker with the cpu workload, docker under a CPU quota (QUOTA) from the 6th run on (the
same label), and a series that changes nothing. The change is found at the 6th run on
docker's compute ratio, the gate fails on the first 7 runs and passes on the first 5 and
on the unchanged series, the page renders in headless Chromium offline, and bad input is
one line with exit status 2.

The runs are as short as a run can be: --quick, 3 rounds (a ratio needs 3), no warm-up,
five burst blocks of compute a round, the figure the test is about, and no other op, with
small buffers (the catalog's cpu bursts cut down in the run's process, RUN_CODE). Under a
quota every burst lasts `quota_ms`: the catalog's 300 ms (three CFS periods, for a ratio of
exactly 1/q) made a quota run take 18 s here against 5.6 s for another; one period (100
ms, 11 s a run) still reads the quota as x0.10 and the change this test is about."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.test_report_browser import chromium, console_messages

pytest.importorskip("otava.analysis", reason="the history extra (apache-otava) is not installed")

ROOT = Path(__file__).resolve().parent.parent
# The example is cpus=0.5. A quota binds only where the host's own probe gets more
# than the quota: on this shared 2-core VM under other sessions' load the host's compute
# read less than half a CPU in the 300 ms bursts, docker at 0.5 read the same, and there
# was no change to find. At 0.1 the quota binds under any load this machine has seen.
QUOTA = "docker:cpus=0.1,label=docker"
# `isobench ARGS` with the cpu workload's bursts cut to one block per op and round
RUN_CODE = """
import dataclasses, sys
from bench import catalog
_load = catalog.load
def load(path=None):
    out = _load(path)
    w = out["cpu"]
    plan = dataclasses.replace(
        w.bursts, ops=("compute",), blocks=5, quick_blocks=5, op_blocks={}, quota_ms=100,
        quick_serve_args=("--mem-mib", "8", "--lat-mib", "4"),
    )
    out["cpu"] = dataclasses.replace(w, bursts=plan)
    return out
catalog.load = load
from bench.commands import main
sys.argv = ["isobench", *sys.argv[1:]]
main()
"""
# `isobench ARGS` on a Python where Otava cannot be imported
NO_OTAVA = """
import sys
sys.modules["otava"] = sys.modules["otava.analysis"] = None
from bench.commands import main
sys.argv = ["isobench", *sys.argv[1:]]
main()
"""
needs = pytest.mark.requires("root", "cgroup", "compiler", "host", "docker")


def isobench(*args, code: str | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-c", code] if code else [sys.executable, "-m", "bench.cli"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [*cmd, *map(str, args)], capture_output=True, text=True, env=env, timeout=timeout
    )


def short_run(results: Path, docker: str) -> Path:
    args = ["run", "--env", "host", "--env", docker, "--workload", "cpu", "--quick"]
    args += ["--rounds", 3, "--max-rounds", 3, "--warmup", 0, "--results", results]
    deadline = time.monotonic() + 600
    while True:  # other test runs on this host may hold the measuring lock
        before = set(results.glob("*/manifest.json"))
        res = isobench(*args, code=RUN_CODE)
        if res.returncode == 0 or "lock" not in res.stderr or time.monotonic() > deadline:
            break
        time.sleep(5)
    assert res.returncode == 0, res.stderr[-2000:]
    (new,) = set(results.glob("*/manifest.json")) - before
    return new.parent


@pytest.fixture(scope="module")
def series(tmp_path_factory) -> dict[str, list[Path]]:
    """base: 5 runs; changed: 5 runs under the quota; same: 5 more runs like base."""
    root = tmp_path_factory.mktemp("history")
    out = {"base": [], "changed": [], "same": []}
    for name, docker in (("base", "docker"), ("changed", QUOTA), ("same", "docker")):
        (root / name).mkdir()
        out[name] = [short_run(root / name, docker) for _ in range(5)]
    return out


def history_json(*paths) -> dict:
    res = isobench("history", *paths, "--json")
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def figure(h: dict, op: str) -> dict:
    (f,) = [f for f in h["figures"] if f["env"] == "docker" and f["op"] == op]
    return f


@needs
def test_the_quota_from_the_6th_run_is_a_change_of_dockers_compute_cost(series):
    h = history_json(*series["base"], *series["changed"])
    assert len(h["runs"]) == 10 and h["baseline"] == "host"
    sixth = h["runs"][5]["changes"]
    assert {"what": "docker: cpus", "before": "", "after": "0.1"} in sixth
    compute = figure(h, "compute")
    ratio = [c for c in compute["change_points"] if c["series"] == "ratio"]
    assert [c["index"] for c in ratio] == [5], compute
    (c,) = ratio
    assert c["class"].startswith("isolation cost") and c["magnitude"] < -0.2
    assert c["level_after"]["ci_high"] < c["level_before"]["ci_low"]
    # the change is docker's: the host's own compute may move between runs on a machine
    # whose speed moves in phases (~240M or ~400M ops/s here), and such a move is the
    # host's, never classed as an isolation cost
    host = [c for c in compute["change_points"] if c["series"] == "baseline"]
    assert all(c["class"].startswith("host") for c in host), host
    # no ratio moved at any other run
    others = [
        (f["op"], c["index"])
        for f in h["figures"]
        for c in f["change_points"]
        if c["series"] == "ratio" and c["index"] != 5
    ]
    assert others == []


@needs
def test_a_series_that_changes_nothing_has_no_change_of_an_isolation_cost(series):
    h = history_json(*series["base"], *series["same"])
    assert all(r["changes"] == [] for r in h["runs"]), [r["changes"] for r in h["runs"]]
    found = [
        (f["op"], c) for f in h["figures"] for c in f["change_points"] if c["series"] == "ratio"
    ]
    assert found == []


@needs
def test_the_gate_fails_on_a_change_in_the_newest_runs_only(series):
    def gate(*paths) -> tuple[int, list]:
        res = isobench("history", *paths, "--fail-on-change", "--json")
        h = json.loads(res.stdout)
        seen = [(f["op"], [p and round(p["value"], 3) for p in f["ratio"]]) for f in h["figures"]]
        return res.returncode, seen

    assert gate(*series["base"], *series["changed"][:2])[0] == 1, gate(
        *series["base"], *series["changed"][:2]
    )
    assert gate(*series["base"])[0] == 0
    assert gate(*series["base"], *series["same"])[0] == 0


@needs
@pytest.mark.requires("chromium")
def test_the_page_renders_every_chart_offline_and_the_newest_report_links_to_it(series, tmp_path):
    runs = [*series["base"], *series["changed"]]
    page = tmp_path / "H.html"
    res = isobench("history", *runs, "-o", page)
    assert res.returncode == 0, res.stderr
    assert "change at run 6/10" in res.stdout
    n_figures = res.stdout.count("ratio per run:")
    dom = chromium(page.as_uri(), tmp_path / "profile", "--dump-dom")
    assert console_messages(dom.stderr) == []
    charts = [line for line in dom.stdout.split("<div") if 'data-chart="trend"' in line]
    assert len(charts) == n_figures == 1  # docker's compute (its ratio and the host's own)
    assert [c for c in charts if 'data-rendered="1"' not in c] == []
    report = isobench("report", runs[-1], "-o", "-")
    assert f'href="{os.path.relpath(page, runs[-1])}"' in report.stdout


@needs
def test_a_torn_unfinished_run_is_shown_as_such(series, tmp_path):
    torn = tmp_path / "torn"
    shutil.copytree(series["base"][-1], torn)
    m = json.loads((torn / "manifest.json").read_text())
    m.update(run_id="torn", status="running", created=m["created"] + 1)
    del m["finished"]
    (torn / "manifest.json").write_text(json.dumps(m))
    with open(torn / "samples.jsonl", "a") as f:
        f.write('{"round": 3, "val')
    res = isobench("history", *series["base"], torn)
    assert res.returncode == 0, res.stderr
    (line,) = [x for x in res.stdout.splitlines() if " torn " in x]
    assert "unfinished (running)" in line and "torn samples (1 line(s) unreadable)" in line


@needs
def test_bad_input_is_one_line_and_exit_status_2(series, tmp_path):
    one = isobench("history", series["base"][0])
    assert one.returncode == 2 and "a history needs at least two" in one.stderr
    assert len(one.stderr.strip().splitlines()) == 1
    none = isobench("history", tmp_path / "nothing")
    assert none.returncode == 2 and len(none.stderr.strip().splitlines()) == 1
    extra = isobench("history", *series["base"], code=NO_OTAVA)
    assert extra.returncode == 2
    assert extra.stderr.strip() == (
        "isobench: error: isobench history needs Apache Otava: pip install 'isobench[history]'"
    )
