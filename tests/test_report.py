"""The HTML report: model and rendering of a REAL quick run (host + namespaces), plus the
escaping rules. The browser test is in test_report_browser.py."""

from __future__ import annotations

import dataclasses
import json
import re
import time
from pathlib import Path

import markupsafe
import pandas as pd
import pytest
from click.testing import CliRunner

from bench import store
from bench.commands.report import report as report_cmd
from bench.lock import LockError
from bench.report import fmt, html, view
from bench.report.sections import common, density, net, probes, summary, user, warnings
from bench.report.sections.provenance import provenance

EVIL = "<script>alert(1)</script><b>x</b>"


def make_run(tmp_path_factory) -> Path:
    """A real quick run with the real harness; shared by the report test files (the
    first test file that needs it makes it, the others find it in the session's tmp)."""
    root = tmp_path_factory.getbasetemp() / "report-run"
    found = sorted(root.glob("*/manifest.json"))
    if found:
        return found[0].parent
    args = [
        "run",
        "--env",
        "host",
        "--env",
        f"namespaces:label={EVIL}",
        "--workload",
        "startup",
        "--workload",
        "syscall",
        "--quick",
        "--rounds",
        "3",
        "--max-rounds",
        "3",
        "--results",
        str(root),
    ]
    return run_when_unlocked(args, root)


def run_when_unlocked(args: list[str], root: Path) -> Path:
    """`isobench ARGS` (a run into `root`), waiting for the measuring lock that other test
    runs on this host may hold; the run's directory."""
    from bench.cli import cli

    deadline = time.monotonic() + 900
    while True:
        try:
            res = CliRunner().invoke(cli, args, catch_exceptions=False)
            break
        except LockError:
            if time.monotonic() > deadline:
                raise
            time.sleep(5)
    assert res.exit_code == 0, res.output
    (run,) = [p.parent for p in root.glob("*/manifest.json")]
    return run


@pytest.fixture(scope="session")
def real_run(tmp_path_factory) -> Path:
    return make_run(tmp_path_factory)


needs_run = pytest.mark.requires("root", "cgroup", "compiler", "host", "namespaces")


def blob(text: str) -> dict:
    m = re.search(r'<script type="application/json" id="isobench-data">(.*?)</script>', text, re.S)
    assert m, "no data blob"
    return json.loads(m.group(1))


# -- pure pieces -----------------------------------------------------------------------------
def test_data_json_cannot_close_the_script_element():
    s = html.data_json({"a": "</script><!-- <b>&", "b": float("nan")})
    assert "</" not in s and "<!--" not in s and "<" not in s
    assert json.loads(s) == {"a": "</script><!-- <b>&", "b": None}


def test_formatting():
    assert fmt.fmt_num(19.63) == "19.6" and fmt.fmt_num(1234567) == "1.23M"
    assert fmt.fmt_quantity(19600, "ns") == "19.6 µs"
    assert fmt.fmt_quantity(0.5, "ms") == "500 µs"
    assert fmt.fmt_quantity(12.0, "MB/s") == "12.0 MB/s"


@pytest.mark.parametrize(
    ("x", "text"),
    [
        (149_651_069, "150M"),  # the rate the CLI summary printed as 149,651,069
        (2.4e9, "2.40G"),  # trailing zeros kept: 3 significant digits
        (116_000, "116k"),
        (12_345, "12.3k"),
        (-150e6, "-150M"),
        (9_999.6, "10.0k"),  # rounds up past 9,999: takes the prefix
        (999_700, "1.00M"),  # rounds up past 999k: the next prefix
        (9_999, "9999"),  # 4 digits are written out
        (1_234, "1234"),
        (999.7, "1000"),
        (9.996, "10.0"),  # rounds up to 10: still 3 digits
        (0.5, "0.500"),
        (0.000123, "0.000123"),
        (0, "0"),
        (None, "–"),
        (float("nan"), "–"),
    ],
)
def test_numbers_take_3_or_4_significant_digits_and_an_si_prefix(x, text):
    assert fmt.fmt_num(x) == text


def test_a_rate_with_its_ci_stays_short():
    assert fmt.fmt_quantity(149_651_069, "trans/s") == "150M trans/s"
    assert fmt.fmt_ci(149_651_069, 140_121_680, 272_343_140, "1/s") == (
        "150M",
        "[140M, 272M]",
        "1/s",
    )
    assert fmt.fmt_ratio(20_822.0) == "×20.8k"


def _view(manifest, **fields) -> view.RunView:
    """The view of an in-memory manifest with no samples, its fields set as given."""
    return dataclasses.replace(view.view(manifest, pd.DataFrame()), **fields)


def _net(manifest, rows, envs, fails):
    return net.section(_view(manifest, rows=rows, measured=envs, fails=fails))


def _row(env, median, ratio, lo, hi, sig, metric="ns_per_op", unit="ns", **extra):
    return {
        "env": env,
        "workload": "syscall",
        "op": "null",
        "metric": metric,
        "unit": unit,
        "median": median,
        "ratio": ratio,
        "ratio_ci_low": lo,
        "ratio_ci_high": hi,
        "significant": sig,
        "better": "lower",
        "flags": [],
        "note": "",
        "p_adjusted": 0.01 if sig else 0.5,
    } | extra


def test_sentence_significant_and_not():
    base = _row("host", 164.0, None, None, None, False)
    s = probes.sentence(_row("runsc", 19764.0, 120.5, 118.7, 122.3, True), base, False)
    assert s["text"] == (
        "runsc adds 19.6 µs [19.3, 19.9] per getppid(): 120× slower (ratio ×120 [119, 122])"
    )
    assert s["worse"]
    s = probes.sentence(_row("ns", 166.0, 1.01, 0.97, 1.05, False), base, False)
    assert "no detectable difference per getppid()" in s["text"] and "n.s." in s["text"]
    assert "could have detected" not in s["text"]  # no detectable ratio recorded
    row = _row("ns", 166.0, 1.01, 0.97, 1.05, False, detectable_ratio=1.043)
    s = probes.sentence(row, base, False)
    assert s["text"].endswith("n.s.); this run could have detected ≥×1.04")
    s = probes.sentence(_row("vm", 500.0, 3.0, 2.8, 3.2, True), base, True)
    assert "emulated (TCG), not a KVM overhead" in s["text"]


def test_sentence_of_a_rate_speaks_in_its_direction():
    base = _row("host", 1000.0, None, None, None, False, "mb_per_s", "MB/s", better="higher")
    row = _row("vm", 36.0, 0.036, 0.03, 0.04, True, "mb_per_s", "MB/s", better="higher")
    text = probes.sentence(row, base, False)["text"]
    assert text.startswith("vm loses 964 MB/s") and "28× slower" in text


def test_heatmap_orientation_makes_worse_positive():
    rows = [_row("x", 50.0, 0.5, 0.4, 0.6, True, "mb_per_s", "MB/s", better="higher")]
    h = probes.heatmap(rows, "host", ["host", "x"])
    assert h["cells"][0]["value"] == pytest.approx(1.0)  # half the bandwidth = 2x the cost
    assert h["cells"][0]["words"] == "2.00× slower"


def test_a_flagged_figure_is_never_a_finding():
    flag = "vDSO control failed: clock_gettime ×3,196 under runsc — no vDSO clock"
    rows = [
        _row("host", 20.0, None, None, None, False),
        _row("runsc", 60000.0, None, None, None, False, flags=[flag]),
        _row("ns", 20.0, 1.0, 0.98, 1.02, False, op="read"),
        _row("host", 20.0, None, None, None, False, op="read"),
    ]
    h = probes.heatmap(rows, "host", ["host", "runsc", "ns"])
    (cell,) = [c for c in h["cells"] if c["flags"]]
    assert cell["ratio"] is None and cell["flags"] == [flag]
    head = probes.headline(rows, {}, "host", ["host", "runsc", "ns"], {})
    runsc = next(h for h in head if h["env"] == "runsc")
    assert runsc["flags"] == [flag] and runsc["families"] == []
    table = {g["env"]: g["rows"] for g in summary.summary(rows, ["host", "runsc", "ns"], "host")}
    assert table["runsc"][0]["no_ratio"] == "flagged: no ratio"
    assert table["runsc"][0]["words"] == ""
    groups = warnings.warnings(_view({}, rows=rows), {"envs": []})
    assert groups[0]["kind"] == "self-check" and groups[0]["lines"] == [flag]


def test_the_ratio_column_says_why_there_is_none():
    rows = [
        _row("host", 20.0, None, None, None, False),
        _row("vm", 90.0, None, None, None, False, note="no ratio: other arguments"),
        _row("docker", 9.0, None, None, None, False, metric="created_ms", unit="ms"),
        _row("ns", 20.0, 1.0, 0.9, 1.1, False),
    ]
    table = {
        g["env"]: g["rows"][0]
        for g in summary.summary(rows, ["host", "vm", "docker", "ns"], "host")
    }
    assert table["host"]["no_ratio"] == "baseline"
    assert table["vm"]["no_ratio"] == "no ratio: other arguments"
    assert table["docker"]["no_ratio"] == "no ratio: host has no such figure"
    assert table["ns"]["ratio"] == 1.0 and table["ns"]["words"] == ""


def test_geometric_mean_ci_holds_the_figures_own_uncertainty():
    tight = probes.geomean_ci([(2.0, 1.99, 2.01), (8.0, 7.9, 8.1), (4.0, 3.95, 4.05)])
    assert tight[0] == pytest.approx(4.0)
    assert tight[1] < 4.0 < tight[2]
    one = probes.geomean_ci([(4.0, 2.0, 8.0)])  # one figure: its own CI, about
    assert one[1] == pytest.approx(2.0, rel=0.1) and one[2] == pytest.approx(8.0, rel=0.1)


def test_provenance_hides_unset_options_and_names_the_runtime_and_kernel():
    manifest = {
        "host": {"kernel": "6.18.44"},
        "environments": {
            "docker:runtime=runsc": {
                "kind": "docker",
                "options": {"cpus": None, "runtime": "runsc"},
                "versions": {"docker": "20.10", "runc": "1.1.5"},
                "runtime": {"name": "runsc", "version": "runsc version 0.0~2022"},
            },
            "qemu": {"kind": "qemu", "emulated": True, "versions": {"guest_kernel": "6.1.0-56"}},
            "same": {"kind": "qemu", "versions": {"guest_kernel": "6.18.44"}},
        },
    }
    prov = provenance(_view(manifest, envs=["qemu", "docker:runtime=runsc"]))
    assert [e["label"] for e in prov["envs"]] == ["qemu", "docker:runtime=runsc", "same"]
    runsc = prov["envs"][1]
    assert runsc["options"] == {"runtime": "runsc"}
    assert runsc["versions"]["runsc"] == "0.0~2022"
    assert "6.1.0-56 is not the host's 6.18.44" in prov["envs"][0]["kernel_note"]
    assert prov["envs"][2]["kernel_note"] == ""
    kinds = [g["kind"] for g in warnings.warnings(_view(manifest), prov)]
    assert kinds == ["emulated", "kernel"]


def test_warnings_are_grouped_and_near_duplicates_merged():
    manifest = {
        "matrix": {"precision": 0.02},
        "warnings": [
            "load average 2.1 on 2 CPUs: busy",
            "SMT is on",
            "load average 3.4 on 2 CPUs: busy",
        ],
        "unreached": {
            "host|cpu": 0.055,
            "docker|cpu": 0.17,
            "docker|syscall": 0.57,
            "vm|io": float("inf"),
        },
    }
    prov = {
        "envs": [
            {"label": e, "available": True, "emulated": False, "kernel_note": ""}
            for e in ("host", "docker", "vm")
        ]
    }
    groups = {g["kind"]: g for g in warnings.warnings(_view(manifest), prov)}
    assert groups["noise"]["lines"] == ["load average 2.1 on 2 CPUs: busy (seen 2×)", "SMT is on"]
    assert groups["precision"]["title"].startswith("Precision: 4 cell(s)")
    assert groups["precision"]["lines"] == [
        "host: cpu ±5.5%",
        "docker: cpu ±17.0%, syscall ±57.0%",
        "vm: io (no figure)",
    ]


# -- the real run ----------------------------------------------------------------------------
@needs_run
def test_report_of_a_real_run(real_run, tmp_path):
    out = tmp_path / "r.html"
    res = CliRunner().invoke(report_cmd, [str(real_run), "-o", str(out)], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    text = out.read_text()
    assert out.stat().st_size < 5_000_000
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", text), "external reference"
    # the hostile label: escaped in the markup, never raw
    assert EVIL not in text.split('<script type="application/json"')[0]
    assert "&lt;script&gt;alert(1)&lt;/script&gt;&lt;b&gt;x&lt;/b&gt;" in text
    d = blob(text)
    assert d["baseline"] == "host"
    assert [e["label"] for e in d["envs"]] == ["host", EVIL]
    ops = {(c["workload"], c["op"]) for c in d["charts"]}
    assert ("syscall", "null") in ops and ("startup", "phases") in ops
    assert {e["env"] for e in d["startup"]["envs"]} == {"host", EVIL}
    assert d["headline"][0]["env"] == EVIL and d["headline"][0]["families"]
    assert [g["env"] for g in d["summary"]] == ["host", EVIL]
    assert {r["no_ratio"] for r in d["summary"][0]["rows"]} == {"baseline"}
    assert all(r["better"] in ("lower", "higher") for g in d["summary"] for r in g["rows"])
    assert d["samples"]["n"] == len(store.load_samples(real_run))
    for section in (
        "headline",
        "warnings",
        "heatmap",
        "workloads",
        "startup",
        "footprint",
        "summary",
        "provenance",
        "methodology",
        "data",
    ):
        assert f'id="{section}"' in text
    assert text.count('data-chart="op"') == len(d["charts"])


def _copy(real_run, where: Path, emulated: bool, vdso_factor: float) -> Path:
    """A copy of the real run with an odd case the real hosts of this suite do not give."""
    import shutil

    shutil.copytree(real_run, where)
    manifest = json.loads((where / "manifest.json").read_text())
    manifest["environments"][EVIL]["emulated"] = emulated
    (where / "manifest.json").write_text(json.dumps(manifest))
    lines = []
    for line in (where / "samples.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if rec["env"] == EVIL and rec["op"] == "clock_gettime" and rec["value"] is not None:
            rec["value"] *= vdso_factor
        lines.append(json.dumps(rec))
    (where / "samples.jsonl").write_text("\n".join(lines) + "\n")
    return where


@needs_run
def test_a_failed_control_is_flagged_not_reported(real_run, tmp_path):
    """The namespaces environment's vDSO control 40x slower (as under gVisor, whose
    clock_gettime is a real system call)."""
    odd_run = _copy(real_run, tmp_path / "vdso", emulated=False, vdso_factor=40)
    text = html.render(store.read_manifest(odd_run), store.load_samples(odd_run))
    d = blob(text)
    (row,) = [
        r for g in d["summary"] if g["env"] == EVIL for r in g["rows"] if r["op"] == "clock_gettime"
    ]
    assert row["flags"] and row["flags"][0].startswith("vDSO control failed")
    assert row["ratio"] is None and row["no_ratio"] == "flagged: no ratio"
    markup = text.split('<script type="application/json"')[0]
    flag = re.escape(str(markupsafe.escape(row["flags"][0])))
    # next to the figure (summary table, chart), in the headline and in the self-checks
    assert len(re.findall(flag, markup)) == 4
    sentences = [s["text"] for h in d["headline"] for f in h["families"] for s in f["sentences"]]
    assert not [t for t in sentences if "clock_gettime" in t]
    (cell,) = [c for c in d["heatmap"]["cells"] if c["flags"]]
    assert cell["ratio"] is None


@needs_run
def test_an_emulated_environment_is_tagged_everywhere(real_run, tmp_path):
    odd_run = _copy(real_run, tmp_path / "emulated", emulated=True, vdso_factor=1)
    text = html.render(store.read_manifest(odd_run), store.load_samples(odd_run))
    d = blob(text)
    markup = text.split('<script type="application/json"')[0]
    # the emulated tag beside the name: headline, startup table, summary table, provenance,
    # and each row of its disk footprint where the run recorded one
    label = str(markupsafe.escape(EVIL))
    disk_rows = sum(len(e["figures"]) + bool(e["error"]) for e in d["disk"] if e["env"] == EVIL)
    assert markup.count(f'{label} <span class="badge emulated">') == 4 + disk_rows
    assert next(e for e in d["envs"] if e["label"] == EVIL)["emulated"] is True


@needs_run
def test_report_default_output_path(real_run, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(real_run, run)
    res = CliRunner().invoke(report_cmd, [str(run)], catch_exceptions=False)
    assert res.exit_code == 0 and (run / "report.html").is_file()


def test_report_refuses_what_is_not_a_run(tmp_path):
    with pytest.raises(store.StoreError, match="not an isobench run"):
        CliRunner().invoke(report_cmd, [str(tmp_path)], catch_exceptions=False)
    (tmp_path / "manifest.json").write_text(json.dumps({"schema_version": 99}))
    with pytest.raises(store.StoreError, match="newer isobench"):
        CliRunner().invoke(report_cmd, [str(tmp_path)], catch_exceptions=False)


def test_report_of_an_empty_run(tmp_path):
    manifest = {
        "schema_version": 1,
        "run_id": "empty",
        "status": "interrupted",
        "matrix": {"baseline": "host", "envs": [{"label": "host"}]},
        "environments": {
            "host": {"kind": "host", "available": True},
            "vm": {"kind": "libvirt", "available": False, "reason": "libvirtd <not> running"},
        },
    }
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    text = html.render(store.read_manifest(tmp_path), store.load_samples(tmp_path))
    assert "vm: not available — libvirtd &lt;not&gt; running" in text
    assert "run status: interrupted" in text


def test_a_run_recorded_at_schema_1_still_renders():
    """A real version-1 run (tests/data/runs/v1): migrated, summarised, rendered; its
    records have no exit_code / stderr_tail, which the raw data then carries as empty."""
    run = Path(__file__).parent / "data" / "runs" / "v1"
    manifest = store.read_manifest(run)
    text = html.render(manifest, store.load_samples(run), n_boot=200)
    d = blob(text)
    assert [(e["label"], e["measured"]) for e in d["envs"]] == [
        ("host", True),
        ("namespaces", True),
    ]
    assert {r["op"] for g in d["summary"] for r in g["rows"]} >= {"null", "stat", "fork"}
    ns = [r for g in d["summary"] for r in g["rows"] if r["p_adjusted"] and not r["significant"]]
    assert ns and all(r["undetected"].startswith("none ≥×") for r in ns)  # what it could see
    assert f"n.s. · {ns[0]['undetected']}" in text
    assert d["provenance"]["host"]["kernel"] == manifest["targets"]["local"]["kernel"]
    cols = d["samples"]["data"]
    assert d["samples"]["columns"] == list(store.COLUMNS)
    assert set(cols["exit_code"]["num"]) == {None} and cols["stderr_tail"]["dict"] == [""]


# -- density and network sections (issues 14, 15) --------------------------------------------
RUNS = Path(__file__).parent / "data" / "runs"


def recorded(name: str) -> tuple[dict, str, dict]:
    """A recorded real run (tests/data/runs/<name>, see its README): manifest, HTML, model."""
    run = RUNS / name
    manifest = store.read_manifest(run)
    text = html.render(manifest, store.load_samples(run), n_boot=200)
    return manifest, text, blob(text)


def test_log_axis_only_for_a_positive_wide_spread():
    assert common.log_axis([[(1, 0.5, 0.4, 0.6)], [(1, 200.0, 150.0, 250.0)]])  # 400x
    assert not common.log_axis([[(1, 10.0, 9.0, 11.0)], [(1, 150.0, 140.0, 160.0)]])  # 15x
    assert not common.log_axis([[(1, 0.5, -0.2, 0.6)], [(1, 200.0, 150.0, 250.0)]])  # CI < 0


def test_density_headline_is_built_from_the_figures():
    def pts(*xs):
        return [
            {"n": n, "median": m, "ci_low": lo, "ci_high": hi, "count": 5} for n, m, lo, hi in xs
        ]

    lines = {
        "docker": {
            "mem_accounted_mib": pts((1, 13.0, 12.5, 13.4), (4, 10.4, 10.1, 10.9)),
            "mem_system_mib": pts((4, 3.4, 3.3, 3.5)),
            "start_ms": pts((1, 420.0, 400.0, 450.0), (4, 610.0, 580.0, 650.0)),
        },
        "libvirt": {
            "mem_accounted_mib": pts((2, 182.0, 170.0, 190.0)),
            "start_ms": pts((1, 6635.5, 6612.0, 6714.0), (2, 6556.2, 6509.0, 6902.0)),
        },
    }
    described = {
        "docker": {"kind": "docker", "runtime": {"name": "runc"}},
        "libvirt": {"kind": "libvirt", "emulated": True},
    }
    docker, libvirt = density.density_headline(lines, described)
    assert docker["text"] == (
        "a docker container (runc) costs the host 10.4 MiB [10.1, 10.9] per instance with 4 held "
        "(accounted); system-wide 3.40 MiB [3.30, 3.50]; with 4 held, one more starts in 610 ms "
        "[580, 650] vs 420 ms [400, 450] with 1 held"
    )
    assert libvirt["emulated"] and libvirt["text"] == (
        "a libvirt guest (emulated) costs the host 182 MiB [170, 190] per instance with 2 held "
        "(accounted); with 2 held, one more starts in 6.56 s [6.51, 6.90] vs 6.64 s [6.61, 6.71] "
        "with 1 held"
    )  # the CI in the median's unit


def test_an_instance_is_named_by_its_kind():
    runc, runsc = {"kind": "oci", "runtime": {"name": "runc"}}, {"runtime": {"name": "runsc"}}
    assert density.env_noun("oci", runc) == "an oci container (runc)"
    assert density.env_noun("docker:runtime=runsc", runsc | {"kind": "docker"}) == (
        "a docker:runtime=runsc container"
    )
    assert density.env_noun("qemu", {"kind": "qemu", "emulated": True}) == "a qemu guest (emulated)"
    assert density.env_noun("namespaces", {"kind": "namespaces"}) == "a namespaces instance"


def test_density_section_of_a_recorded_run():
    manifest, text, d = recorded("density")
    den = d["density"]
    described = manifest["environments"]
    assert den["envs"] == [
        e for e in ["host", "docker", "docker:runtime=runsc", "libvirt"] if e in described
    ]
    assert [c["metric"] for c in den["charts"]] == [
        "mem_accounted_mib",
        "mem_system_mib",
        "start_ms",
    ]
    for c in den["charts"]:
        assert {s["env"] for s in c["series"]} == set(den["envs"])
        for s in c["series"]:
            assert s["emulated"] == bool(described[s["env"]].get("emulated"))
            ns = [p["n"] for p in s["points"]]
            assert ns == sorted(ns) and len(ns) >= 2, (s["env"], ns)  # at least two levels
            for p in s["points"]:
                assert p["ci_low"] <= p["median"] <= p["ci_high"]
    # each table row's figures are the summary table's, level by level
    summary = {(r["env"], r["op"], r["metric"]): r for g in d["summary"] for r in g["rows"]}
    for t in den["table"]:
        row = summary[(t["env"], f"n{t['n']:02d}", "mem_accounted_mib")]
        assert t["cells"]["mem_accounted_mib"]["median"] == row["median"]
    # the headline: every environment, its numbers those of its largest level
    heads = {h["env"]: h["text"] for h in den["headline"]}
    assert set(heads) == set(den["envs"])
    assert heads["libvirt"].startswith("a libvirt guest (emulated) costs the host")
    assert heads["docker"].startswith("a docker container (runc) costs the host")
    top = max((t for t in den["table"] if t["env"] == "docker"), key=lambda t: t["n"])
    assert f"{fmt.fmt_num(top['cells']['mem_accounted_mib']['median'])} MiB" in heads["docker"]
    # the two sources' disagreement, as the records noted it, and what a guest's figure means
    noted = [t for t in den["table"] if t["notes"]["disagree"]]
    assert noted and den["disagree"]
    assert all(t["notes"]["example"].startswith("memory sources disagree by") for t in noted)
    assert den["guest_notes"] and den["guest_notes"][0].startswith("guest:")
    markup = text.split('<script type="application/json"')[0]
    assert 'id="density"' in markup and 'href="#density"' in markup
    assert markup.count('data-chart="density"') == len(den["charts"])
    assert str(markupsafe.escape(den["headline"][0]["text"])) in markup
    assert d["net"] is None and 'id="network"' not in markup


def test_network_section_of_a_recorded_run():
    manifest, text, d = recorded("net")
    net = d["net"]
    assert [e["env"] for e in net["envs"]] == [
        "host",
        "namespaces",
        "docker",
        "docker:network=host",
    ]
    for e in net["envs"]:
        assert e["path"] == manifest["environments"][e["env"]]["net_path"]
    figs = {(f["op"], f["metric"]): f for f in net["figures"]}
    for key in [
        ("tcp_rr", "p50_us"),
        ("tcp_rr", "p99_us"),
        ("tcp_rr", "trans_per_s"),
        ("tcp_crr", "conn_per_s"),
        ("tcp_stream_c2s", "mb_per_s"),
        ("tcp_stream_s2c", "mb_per_s"),
        ("tcp_rr", "client_cpu_us_per_trans"),
        ("tcp_rr", "server_cpu_us_per_trans"),
    ]:
        assert set(figs[key]["cells"]) == {e["env"] for e in net["envs"]}, key
    p50 = figs[("tcp_rr", "p50_us")]["cells"]
    assert p50["host"]["no_ratio"] == "baseline" and p50["host"]["ratio"] is None
    # issue 15's claims as this run measured them: the bridge round trip significantly
    # slower than the host's; host networking cheaper than the bridge
    assert p50["docker"]["significant"] and p50["docker"]["worse"]
    assert p50["docker"]["words"].endswith("slower")
    assert p50["docker:network=host"]["median"] < p50["docker"]["median"]
    rate = figs[("tcp_rr", "trans_per_s")]
    assert rate["better"] == "higher" and rate["cells"]["docker"]["ratio"] < 1
    assert [c["id"] for c in net["charts"]] == ["nlatency", "nthroughput", "nrates", "ncpu"]
    assert [s["name"] for s in net["charts"][0]["series"]] == ["p50", "p99"]
    markup = text.split('<script type="application/json"')[0]
    assert 'id="network"' in markup and markup.count('data-chart="net"') == 4
    for e in net["envs"]:
        assert str(markupsafe.escape(e["path"])) in markup
    assert p50["docker"]["words"] in markup
    assert d["density"] is None and 'id="density"' not in markup


def test_no_density_or_network_section_without_those_workloads():
    text = html.render(
        store.read_manifest(RUNS / "v1"), store.load_samples(RUNS / "v1"), n_boot=200
    )
    d = blob(text)
    assert d["density"] is None and d["net"] is None
    assert 'id="density"' not in text and 'id="network"' not in text


def test_the_disk_footprint_recorded_in_the_manifest_is_shown(tmp_path):
    disk = {
        "figures": [
            {"what": "image", "bytes": 3.5 * 2**20, "counts": "the engine's Size"},
            {
                "what": "writable layer",
                "bytes": None,
                "counts": "",
                "reason": "cgroup <v1> keeps none",
            },
        ]
    }
    manifest = {
        "schema_version": 1,
        "run_id": "disk",
        "status": "complete",
        "matrix": {"baseline": "host", "envs": [{"label": "host"}, {"label": "vm"}]},
        "environments": {
            "host": {"kind": "host", "available": True},
            "vm": {"kind": "libvirt", "emulated": True, "disk": disk},
            "oci": {"kind": "oci", "disk": {"figures": [], "error": "no runc"}},
        },
    }
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    text = html.render(store.read_manifest(tmp_path), store.load_samples(tmp_path))
    d = blob(text)
    assert [(e["env"], e["error"]) for e in d["disk"]] == [("vm", ""), ("oci", "no runc")]
    image, layer = d["disk"][0]["figures"]
    assert image["mib"] == 3.5 and image["counts"] == "the engine's Size"
    assert layer["mib"] is None and layer["reason"] == "cgroup <v1> keeps none"
    markup = text.split('<script type="application/json"')[0]
    assert 'id="disk"' in markup and '<td class="nw">3.50</td>' in markup
    assert "cgroup &lt;v1&gt; keeps none" in markup and "not measured: no runc" in markup
    assert blob(html.render({"run_id": "x"}, pd.DataFrame()))["disk"] == []


def test_a_section_takes_the_workloads_its_recorded_strategy_names():
    """The recorded catalog's strategy picks a section's workloads, whatever their names;
    a run recorded before the catalog had one goes by the family (tests/data/runs/*)."""
    cat = {
        "tcp": {"family": "net", "strategy": "net"},
        "net": {"family": "net", "strategy": "probe"},  # a probe that happens to say "net"
        "pack": {"family": "density", "strategy": "density"},
        "old_density": {"family": "density"},
        "mine": {"family": "user"},
        "served": {"family": "user", "strategy": "userserver"},
        "syscall": {"family": "syscall"},
    }
    assert [view.strategy(cat, w) for w in cat] == [
        "net",
        "probe",
        "density",
        "density",
        "user",
        "userserver",
        "probe",
    ]
    manifest = {"matrix": {"workloads": ["tcp"]}, "catalog": cat}
    rows = [
        _row("host", 70.0, None, None, None, False, "p50_us", "us", workload=w, op="tcp_rr")
        | {"ci_low": 65.0, "ci_high": 75.0, "n": 5}
        for w in ("tcp", "net")
    ]
    v = _view(manifest, rows=rows, measured=["host"])
    assert v.rows_of("net") == rows[:1] and v.planned("net") and not v.planned("density")
    assert net.section(v)["figures"][0]["cells"]["host"]["median"] == 70.0
    assert net.section(_view(manifest, rows=rows[1:], measured=["host"]))["figures"] == []
    assert [u["name"] for u in user.section(v)] == ["mine", "served"]
    assert user.section(_view({"catalog": {"syscall": {"family": "syscall"}}})) is None


def test_an_environment_without_a_network_path_says_why():
    manifest = {
        "matrix": {"baseline": "host", "workloads": ["net"]},
        "environments": {
            "host": {"kind": "host", "net_path": "loopback 127.0.0.1:5"},
            "vm": {"kind": "libvirt", "emulated": True},
        },
    }
    rows = [
        _row(
            "host",
            70.0,
            None,
            None,
            None,
            False,
            "p50_us",
            "us",
            workload="net",
            op="tcp_rr",
            ci_low=65.0,
            ci_high=75.0,
            n=5,
        )
    ]
    fails = [
        {
            "env": "vm",
            "workload": "net",
            "status": "failed",
            "count": 3,
            "reason": "libvirt: the guest's network path is not built yet",
        },
        {"env": "vm", "workload": "cpu", "status": "failed", "count": 1, "reason": "x"},
    ]
    net = _net(manifest, rows, ["host", "vm"], fails)
    assert [(e["env"], e["measured"]) for e in net["envs"]] == [("host", True), ("vm", False)]
    why = "3× failed: libvirt: the guest's network path is not built yet"
    assert net["envs"][1]["failed"] == [why]
    assert net["measured"] == ["host"] and net["figures"][0]["cells"]["host"]["median"] == 70.0
    manifest["matrix"]["workloads"] = ["cpu"]
    assert _net(manifest, [], ["host"], fails) is None
    assert _net(manifest, rows, ["host"], []) is not None  # figures: shown


def test_density_levels_that_did_not_fit_are_shown_with_their_reason(tmp_path):
    """The recorded density run plus the records a ramp stopped at the memory reserve
    writes (as bench/runner.py records a level's probe error), in two rounds."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(RUNS / "density", run)
    lines = (run / "samples.jsonl").read_text().splitlines()
    first = json.loads(next(x for x in lines if json.loads(x)["env"] == "docker"))
    for rnd, avail in ((1, 812), (2, 790)):
        reason = (
            f"n08: skipped: MemAvailable {avail} MiB minus the level's need would leave "
            "less than the 25% reserve"
        )
        lines.append(
            json.dumps(
                first
                | {
                    "round": rnd,
                    "op": "n08",
                    "metric": None,
                    "value": None,
                    "unit": "",
                    "status": "failed",
                    "reason": reason,
                    "note": "",
                }
            )
        )
    (run / "samples.jsonl").write_text("\n".join(lines) + "\n")
    text = html.render(store.read_manifest(run), store.load_samples(run), n_boot=200)
    den = blob(text)["density"]
    assert den["unfit"] == [
        {
            "env": "docker",
            "lines": [
                "n08: skipped: MemAvailable 812 MiB minus the level's need would leave less "
                "than the 25% reserve (seen 2×)"
            ],
        }
    ]
    assert 8 not in den["levels"]  # a level that did not fit is no point on the lines
    assert "<b>docker</b>: n08: skipped: MemAvailable 812 MiB" in text


def test_a_cpu_cost_is_more_or_less_cpu_not_slower_or_faster():
    rows = [
        _row(
            "docker",
            21.3,
            0.81,
            0.75,
            0.88,
            True,
            "client_cpu_us_per_trans",
            "us",
            ci_low=18.0,
            ci_high=23.0,
            n=5,
        ),
        _row(
            "docker",
            121.7,
            1.73,
            1.61,
            1.85,
            True,
            "p50_us",
            "us",
            ci_low=120.0,
            ci_high=123.0,
            n=5,
        ),
        _row(
            "vm",
            23.7,
            2.5,
            2.0,
            3.1,
            True,
            "idle_cpu_ms_per_s",
            "ms/s",
            ci_low=12.0,
            ci_high=42.0,
            n=4,
        ),
    ]
    cpu, p50, idle = (common.figure(r, "host") for r in rows)
    assert cpu["words"] == "1.23× less CPU" and not cpu["worse"]
    assert p50["words"] == "1.73× slower" and p50["worse"]
    assert idle["words"] == "2.50× more CPU" and idle["worse"]
