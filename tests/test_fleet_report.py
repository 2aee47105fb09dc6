"""One report across the hosts of a fleet: `summary`, `summary --json`, `report` and
`export` of a fleet directory.

The fleet directories are made here without ssh, around REAL quick runs of this host
(`--env host --env namespaces --workload syscall`, three rounds each): each run is one
host's run directory, and fleet.json is written by the test (the pure-logic seam: the
runner that writes it over Ansible is tested in its own file). Then the statistics of the
between-hosts test by simulation, with fixed seeds, like tests/test_stats.py."""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from bench import stats
from bench.report import fleet as model
from bench.report import fleet_load
from bench.report.fleet_stats import detectable, ratio_of_ratios
from bench.report.sections import fleet as fleet_page
from tests.conftest import isobench
from tests.test_report import EVIL, run_when_unlocked

real = pytest.mark.requires("root", "cgroup", "compiler", "host", "namespaces")
HOSTS = ("alpha", "beta", "gamma")
FACTS = {
    "ansible_hostname": "",
    "ansible_kernel": "6.1.0-28-amd64",
    "ansible_distribution": "Debian",
    "ansible_distribution_version": "12",
    "ansible_processor": ["0", "GenuineIntel", "Intel(R) Xeon(R)"],
    "ansible_processor_vcpus": 2,
    "ansible_memtotal_mb": 3900,
    "ansible_virtualization_type": "kvm",
    "ansible_virtualization_role": "guest",
    "ansible_python_version": "3.11.2",
}


def one_run(root: Path, rounds: int) -> Path:
    """A real quick run of host and namespaces (syscall)."""
    args = ["run", "--env", "host", "--env", "namespaces", "--workload", "syscall", "--quick"]
    args += ["--rounds", str(rounds), "--max-rounds", str(rounds), "--results", str(root)]
    return run_when_unlocked(args, root)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> list[Path]:
    """Three real runs (3, 3 and 4 rounds): the three hosts' run directories."""
    base = tmp_path_factory.mktemp("fleet-runs")
    return [one_run(base / h, rounds) for h, rounds in zip(HOSTS, (3, 3, 4), strict=True)]


def make_fleet(where: Path, runs: list[Path], *, overlapped=False, failed=True, **facts) -> Path:
    """A fleet directory as `isobench fleet run` writes it: the runs copied under
    hosts/<name>/<run-id>/, fleet.json listing them (beta on another kernel, facts[host]
    overrides a host's facts) and, with `failed`, a fourth host that was unreachable."""
    fleet = where / "fleet-t1"
    hosts = []
    for name, run in zip(HOSTS, runs, strict=True):
        rel = Path("hosts") / name / run.name
        shutil.copytree(run, fleet / rel)
        f = FACTS | {"ansible_hostname": name} | facts.get(name, {})
        if name == "beta":
            f["ansible_kernel"] = "6.12.9-amd64"
        hosts.append(
            {
                "name": name,
                "status": "done",
                "reason": None,
                "run": str(rel),
                "started": "2026-12-07T10:00:00+00:00",
                "ended": "2026-12-07T10:01:00+00:00",
                "facts": f,
            }
        )
    if failed:
        hosts.append(
            {
                "name": "delta",
                "status": "unreachable",
                "reason": "ssh: connect to host 10.77.0.4 port 22: Connection refused",
                "run": None,
                "started": None,
                "ended": None,
                "facts": {},
            }
        )
    record = {
        "schema": 1,
        "id": "t1",
        "inventory": "inventory.ini",
        "command": ["isobench", "fleet", "run", "inventory.ini", "--workload", "syscall"],
        "started": "2026-12-07T10:00:00+00:00",
        "ended": "2026-12-07T10:04:00+00:00",
        "forks": 1,
        "overlapped": overlapped,
        "hosts": hosts,
    }
    (fleet / "fleet.json").write_text(json.dumps(record, indent=1))
    return fleet


@pytest.fixture(scope="module")
def fleet_dir(runs, tmp_path_factory) -> Path:
    return make_fleet(tmp_path_factory.mktemp("fleet"), runs)


def header(text: str) -> list[str]:
    """The host columns' names: the line above the differing facts."""
    lines = text.splitlines()
    at = next(i for i, x in enumerate(lines) if x.startswith("the hosts"))
    return lines[at - 1].split()


def command(*args) -> str:
    """A command that succeeds, in this process (no start-up's imports to pay again): its
    standard output. Bad input goes through `isobench` (the one-line error is main's)."""
    from bench.cli import cli

    res = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return res.stdout


def json_rows(path: Path, *extra: str) -> list[dict]:
    return [json.loads(line) for line in command("summary", path, "--json", *extra).splitlines()]


# -- the real fleet ------------------------------------------------------------------
@real
def test_summary_has_a_column_per_host_and_a_verdict_between_hosts(fleet_dir):
    rows = json_rows(fleet_dir)
    figures = {(r["workload"], r["op"], r["metric"]) for r in rows if r.get("env") == "namespaces"}
    text = command("summary", fleet_dir)
    assert header(text) == list(HOSTS)  # one column per host, in fleet.json's order
    words = " ".join(text.split())
    assert "3 of 4 hosts done" in words and "hosts ran one at a time" in words
    # a ratio line per environment and figure, and under it the test against alpha
    assert text.count("  namespaces  ") >= 2 * len(figures)  # ratios, then absolute figures
    assert len(re.findall(r"^ +vs alpha +reference ", text, re.M)) == len(figures)
    # the differing fact with each host's value, before the figures
    facts = text.split("the hosts differ in")[1].split("ratio to each host's own")[0]
    assert re.search(r"ansible_kernel +6\.1\.0-28-amd64 +6\.12\.9-amd64 +6\.1\.0-28-amd64", facts)
    assert "absolute figures per host:" in text and "hardware" in text
    assert "delta: unreachable ssh: connect to host 10.77.0.4 port 22: Connection refused" in text


@real
def test_json_rows_carry_each_hosts_own_summary_and_the_bh_adjusted_test(fleet_dir, runs):
    rows = json_rows(fleet_dir)
    done = [r for r in rows if r["host_status"] == "done"]
    assert {r["host"] for r in done} == set(HOSTS)
    # each host's row is exactly what `summary --json` of its run directory says
    for host, run in zip(HOSTS, runs, strict=True):
        own = {(r["env"], r["op"], r["metric"]): r for r in json_rows(run)}
        mine = [r for r in done if r["host"] == host]
        assert len(mine) == len(own)
        for r in mine:
            o = own[(r["env"], r["op"], r["metric"])]
            for k in ("median", "ratio", "ratio_ci_low", "p_adjusted", "significant", "n"):
                assert r[k] == o[k], (host, k)
    by = {(r["host"], r["env"], r["op"], r["metric"]): r for r in done}
    tested = [r for r in done if r["between_p_value"] is not None]
    assert tested and all(
        r["host"] in ("beta", "gamma") and r["env"] == "namespaces" for r in tested
    )
    n_fig = len({(r["op"], r["metric"]) for r in done if r["env"] == "namespaces"})
    assert len(tested) == 2 * n_fig  # beta and gamma against alpha, every figure
    for r in tested:  # the ratio of ratios is the quotient of the two hosts' ratios
        ref = by[("alpha", r["env"], r["op"], r["metric"])]
        assert r["between_ratio"] == pytest.approx(r["ratio"] / ref["ratio"], rel=1e-9)
        assert r["between_ci_low"] < r["between_ratio"] < r["between_ci_high"]
        assert r["reference_host"] == "alpha" and "welch" in r["between_test"]
    # Benjamini-Hochberg over every between-hosts test of the fleet at once
    adjusted = stats.benjamini_hochberg([r["between_p_value"] for r in tested])
    assert [r["between_p_adjusted"] for r in tested] == pytest.approx(list(adjusted))
    for r in tested:
        assert r["between_significant"] == stats.significant(
            r["between_p_adjusted"], r["between_ci_low"], r["between_ci_high"]
        )
    # the reference host and the baseline are not tested
    assert all(r["between_p_value"] is None for r in done if r["host"] == "alpha")
    assert all(r["between_p_value"] is None for r in done if r["env"] == "host")
    (failed,) = [r for r in rows if r["host_status"] != "done"]
    assert failed == {
        "fleet": "t1",
        "host": "delta",
        "host_status": "unreachable",
        "reason": "ssh: connect to host 10.77.0.4 port 22: Connection refused",
    }


@real
def test_a_known_difference_between_hosts_is_called(runs, fleet_dir, tmp_path):
    """beta's namespaces made 5x as costly (every burst of its run's copy): each of its
    ratios of ratios is exactly 5x what it was and called different, gamma's are not
    touched, and beta's vDSO control at x5 is flagged, so that figure is not tested."""
    before = {(r["host"], r["op"]): r for r in json_rows(fleet_dir) if r.get("env") == "namespaces"}
    fleet = make_fleet(tmp_path, runs)
    samples = next((fleet / "hosts" / "beta").glob("*/samples.jsonl"))
    records = [json.loads(line) for line in samples.read_text().splitlines()]
    for r in records:
        if r["env"] == "namespaces" and r["source"] == "burst" and r["value"] is not None:
            r["value"] *= 5
    samples.write_text("".join(json.dumps(r) + "\n" for r in records))
    rows = [r for r in json_rows(fleet) if r.get("env") == "namespaces"]
    beta = {r["op"]: r for r in rows if r["host"] == "beta"}
    assert "no vDSO" in " ".join(beta["clock_gettime"]["flags"])
    assert beta.pop("clock_gettime")["between_note"] == "flagged on beta: no ratio"
    noisy = {"fork", "fork_exec", "pipe_pingpong"}  # the catalog's: 3 rounds may not tell
    for op, r in beta.items():
        assert r["between_ratio"] == pytest.approx(5 * before[("beta", op)]["between_ratio"])
        assert r["between_significant"] or op in noisy, (op, r["between_p_adjusted"])
    for r in rows:
        if r["host"] == "gamma":
            assert r["between_ratio"] == pytest.approx(before[("gamma", r["op"])]["between_ratio"])
    text = " ".join(command("summary", fleet).split())
    assert "differs between hosts: namespaces · syscall · getppid(): ×" in text
    page = fleet_page.render_fleet(fleet)
    assert page.count("differs between hosts</span>") == sum(r["between_significant"] for r in rows)


@real
def test_another_reference_host(fleet_dir):
    rows = json_rows(fleet_dir, "--reference", "gamma")
    tested = {r["host"] for r in rows if r.get("between_p_value") is not None}
    assert tested == {"alpha", "beta"}
    res = isobench("summary", fleet_dir, "--reference", "delta")
    assert res.returncode == 2 and res.stderr.count("\n") == 1
    assert "--reference delta: no such host with a usable run" in res.stderr


@real
def test_facts_from_both_sources_that_differ_are_shown(runs, tmp_path):
    fleet = make_fleet(tmp_path, runs)
    manifest = next((fleet / "hosts" / "gamma").glob("*/manifest.json"))
    m = json.loads(manifest.read_text())
    m["host"]["cpu_model"] = "AMD EPYC 7B13"  # as if gamma were another machine
    m["host"]["mitigations"]["spectre_v2"] = "Vulnerable"
    manifest.write_text(json.dumps(m))
    data = model.build(fleet_load.load(fleet))
    differ = {(x["source"], x["fact"]): x["by_host"] for x in data["facts"]["differ"]}
    assert differ[("ansible", "ansible_kernel")]["beta"] == "6.12.9-amd64"
    assert differ[("isobench", "cpu_model")]["gamma"] == "AMD EPYC 7B13"
    assert differ[("isobench", "mitigations.spectre_v2")]["gamma"] == "Vulnerable"
    # names are never a difference; what all hosts share is listed once
    assert ("ansible", "ansible_hostname") not in differ and ("isobench", "hostname") not in differ
    same = {x["fact"] for x in data["facts"]["same"]}
    assert {"ansible_distribution", "cgroup_layout", "kernel"} <= same


@real
def test_report_in_chromium(fleet_dir, tmp_path):
    from tests.test_report_browser import chromium, console_messages

    command("report", fleet_dir)
    page = fleet_dir / "report.html"
    text = page.read_text()
    # self-contained: no script, stylesheet, image or link fetched from anywhere
    assert not re.search(r"""(src|href)=["']?(https?:|//)""", text)
    assert "<link" not in text
    dom = chromium(page.as_uri(), tmp_path / "profile", "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert console_messages(dom.stderr) == []
    html = dom.stdout
    figures = html.split('id="figures"')[1].split("</section>")[0]
    head = re.search(r"<thead>(.*?)</thead>", figures, re.S).group(1)
    assert re.findall(r"<th>(\w+)", head)[1:] == list(HOSTS)  # one column per host
    n_env = figures.count('<tr class="env">')
    assert n_env >= 10 and figures.count('<tr class="between">') == n_env
    assert figures.count(">reference</td>") == n_env  # alpha's column under each
    assert len(re.findall(r"p=\d", figures)) == 2 * n_env  # beta and gamma tested
    fact = re.search(r'<tr class="fact">(.*?)</tr>', figures, re.S).group(1)
    assert "ansible_kernel" in fact and "6.12.9-amd64" in fact
    absolute = html.split('id="absolute"')[1].split("</section>")[0]
    assert "hardware, not isolation" in absolute
    warnings = html.split('id="warnings"')[1].split("</section>")[0]
    assert "delta" in warnings and "Connection refused" in warnings
    assert "No two hosts' runs overlapped in time." in html
    blob = json.loads(re.search(r'id="isobench-data">(.*?)</script>', text, re.S).group(1))
    assert {r["host"] for r in blob["rows"]} == {*HOSTS, "delta"}


@real
def test_overlap_and_a_done_host_whose_run_is_missing(runs, tmp_path):
    fleet = make_fleet(tmp_path, runs, overlapped=True)
    shutil.rmtree(next((fleet / "hosts" / "beta").iterdir()))
    text = command("summary", fleet)
    assert "hosts ran at the same time" in " ".join(text.split())
    assert "beta: unusable run directory:" in text and "no such directory" in text
    assert header(text) == ["alpha", "gamma"]
    page = fleet_page.render_fleet(fleet)
    assert "hosts ran at the same time" in page and "may have competed" in page
    # what fleet.json says is text on the page, never markup
    record = json.loads((fleet / "fleet.json").read_text())
    record["hosts"][3]["reason"] = EVIL
    (fleet / "fleet.json").write_text(json.dumps(record))
    page = fleet_page.render_fleet(fleet)
    assert EVIL not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page


@real
def test_an_unknown_baseline_is_one_line(fleet_dir):
    res = isobench("summary", fleet_dir, "--baseline", "nope")
    assert res.returncode == 2 and res.stderr.count("\n") == 1
    assert "--baseline nope: no such environment on any host (known: host, namespaces)" in (
        res.stderr
    )


@real
def test_export_of_a_fleet(fleet_dir, runs, tmp_path):
    import pandas as pd

    out = tmp_path / "samples.csv"
    command("export", fleet_dir, "--format", "csv", "-o", out)
    df = pd.read_csv(out)
    assert list(df.columns)[0] == "host"
    counts = df.groupby("host").size().to_dict()
    assert counts == {
        h: sum(1 for _ in (r / "samples.jsonl").open()) for h, r in zip(HOSTS, runs, strict=True)
    }
    rows = json.loads(command("export", fleet_dir, "--format", "json", "--summary", "-o", "-"))
    assert {"host", "between_ratio", "between_p_adjusted"} <= set(rows[0])
    assert {r["scope"] for r in rows if r["host_status"] == "done"} == {"main", "footprint"}
    assert sum(r["host_status"] == "unreachable" for r in rows) == 1


@real
def test_every_command_still_takes_an_ordinary_run(runs, tmp_path):
    run = runs[0]
    assert command("summary", run).startswith("environment")
    command("report", run, "-o", tmp_path / "r.html")
    assert "isobench-data" in (tmp_path / "r.html").read_text()
    assert command("export", run, "--format", "csv", "-o", "-").startswith("run_id,")
    res = isobench("summary", run, "--reference", "alpha")
    assert res.returncode == 2 and "only for a fleet directory" in res.stderr


@real
def test_a_fleet_with_no_done_host_is_one_line(runs, tmp_path):
    fleet = make_fleet(tmp_path, runs)
    record = json.loads((fleet / "fleet.json").read_text())
    for h in record["hosts"][:3]:
        h.update(status="run-failed", reason="isobench run exited 1")
    (fleet / "fleet.json").write_text(json.dumps(record))
    for cmd in (["summary"], ["report"], ["export", "--format", "csv"]):
        res = isobench(*cmd, fleet)
        assert res.returncode == 2, (cmd, res.stderr)
        assert res.stderr.count("\n") == 1 and "Traceback" not in res.stderr
        assert "no host completed a usable run" in res.stderr
        assert "alpha: run-failed (isobench run exited 1)" in res.stderr


# -- bad fleet.json (no runs needed) -------------------------------------------------
@pytest.mark.parametrize(
    "text, message",
    [
        ('{"schema": 1, "id": "x", "hosts": [{"name": "a", "sta', "not valid JSON"),
        ('{"id": "x"}', "not an isobench fleet manifest"),
        ('{"schema": 7, "id": "x", "hosts": []}', "written by a newer isobench"),
        ('{"schema": 1, "id": "x", "hosts": [{"name": "a", "status": "fine"}]}', "hosts.0.status"),
        ('{"schema": 1, "id": "x", "hosts": []}', "no host completed a usable run"),
        (
            '{"schema": 1, "id": "x", "hosts": [{"name": "a", "status": "done", "run": "../.."}]}',
            "outside the fleet directory",
        ),
    ],
)
def test_a_bad_fleet_json_is_one_line(tmp_path, text, message):
    (tmp_path / "fleet.json").write_text(text)
    every = (["summary"], ["report"], ["export", "--format", "json"])
    for cmd in every if "JSON" in message else every[:1]:  # they share the reading
        res = isobench(*cmd, tmp_path)
        assert res.returncode == 2, (cmd, res.stderr)
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("isobench: error:"), res.stderr
        assert message in lines[0]


# -- the between-hosts test, by simulation --------------------------------------------
def _rounds(rng, n: int, sd: float, noise: str) -> np.ndarray:
    """n per-round log ratios around 0: normal, heavy-tailed (t with 3 degrees of
    freedom, same sd) or with slow episodes (a round 5-50% off either way, 15%)."""
    if noise == "normal":
        return rng.normal(0, sd, n)
    if noise == "t3":
        return sd * rng.standard_t(3, n) / math.sqrt(3)
    x = rng.normal(0, sd, n)
    return x + (rng.random(n) < 0.15) * rng.uniform(0.05, 0.5, n) * rng.choice([-1, 1], n)


def test_the_ratio_of_ratios_is_the_quotient_of_each_hosts_own_ratio():
    rng = np.random.default_rng(3)
    a, b = rng.normal(0.25, 0.03, 8), rng.normal(0.09, 0.02, 6)
    t = ratio_of_ratios(a, b)
    own = lambda d: stats.log_ratio_test(np.exp(d), np.ones(d.size), paired=True).ratio  # noqa: E731
    assert t.ratio == pytest.approx(own(a) / own(b))
    assert t.method == "welch" and t.low < t.ratio < t.high
    assert not ratio_of_ratios(a, b[:1]).method  # one round a side: not tested
    assert math.isnan(detectable(a[:1], b))


CASES = [  # noise, rounds on each host, per-round spread on each host
    ("normal", 8, 8, 0.02, 0.05),
    ("normal", 4, 4, 0.02, 0.04),
    ("t3", 8, 8, 0.02, 0.05),
    ("episodes", 8, 8, 0.02, 0.02),
]


@pytest.mark.parametrize("noise, na, nb, sa, sb", CASES)
def test_the_ci_covers_and_equal_costs_are_rarely_called_different(noise, na, nb, sa, sb):
    rng = np.random.default_rng(11)
    reps, covered, called = 1000, 0, 0
    for _ in range(reps):
        a, b = _rounds(rng, na, sa, noise), _rounds(rng, nb, sb, noise)
        called += ratio_of_ratios(a + 0.2, b + 0.2).p_value < 0.05  # same cost on both
        t = ratio_of_ratios(a + math.log(1.25), b + 0.2)  # ratio of ratios 1.25/e^0.2
        covered += t.low <= 1.25 / math.exp(0.2) <= t.high
    assert 0.93 <= covered / reps <= 0.99
    assert called / reps <= 0.06


def test_a_ten_percent_difference_is_found_and_bh_keeps_the_false_ones_rare():
    """A fleet of 20 figures that differ by 10% between two hosts among 30 that do not,
    8 rounds a host, 2% and 3% per-round spread: after Benjamini-Hochberg across the
    fleet, >= 90% of the real differences are called and <= 5% of the calls are false."""
    rng = np.random.default_rng(5)
    found, false, calls = 0, 0, 0
    for _ in range(100):
        p, lo, hi, real_ = [], [], [], []
        for i in range(50):
            shift = math.log(1.1) if i < 20 else 0.0
            t = ratio_of_ratios(
                _rounds(rng, 8, 0.02, "normal") + shift, _rounds(rng, 8, 0.03, "normal")
            )
            p.append(t.p_value), lo.append(t.low), hi.append(t.high), real_.append(i < 20)
        adj = stats.benjamini_hochberg(p)
        for q, low, high, r in zip(adj, lo, hi, real_, strict=True):
            sig = stats.significant(q, low, high)
            calls += sig
            found += sig and r
            false += sig and not r
    assert found / (100 * 20) >= 0.9
    assert false / calls <= 0.05


def test_at_its_detectable_ratio_the_test_finds_about_four_in_five():
    rng = np.random.default_rng(8)
    mde = np.median(
        [
            detectable(_rounds(rng, 8, 0.02, "normal"), _rounds(rng, 8, 0.03, "normal"))
            for _ in range(300)
        ]
    )
    hits = sum(
        ratio_of_ratios(
            _rounds(rng, 8, 0.02, "normal") + math.log(mde), _rounds(rng, 8, 0.03, "normal")
        ).p_value
        < 0.05
        for _ in range(1000)
    )
    assert 0.65 <= hits / 1000 <= 0.9
