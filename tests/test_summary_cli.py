"""The terminal summary of a real run: as wide as the terminal says, human units, the
baseline first, sig yes/no/–, ratios in words, flags and precision misses grouped."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bench import cli
from tests.test_report import make_run

ROOT = Path(__file__).parents[1]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    return make_run(tmp_path_factory)


def summary(run: Path, columns: str | None, *args: str) -> list[str]:
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    env["PYTHONPATH"] = str(ROOT)
    if columns:
        env["COLUMNS"] = columns
    res = subprocess.run(
        [sys.executable, "-m", "bench.cli", "summary", str(run), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    return res.stdout.splitlines()


@pytest.mark.requires("root", "cgroup", "compiler", "host", "namespaces")
@pytest.mark.parametrize("columns, width", [("80", 80), (None, cli.PIPED_WIDTH), ("120", 120)])
def test_piped_summary_fits_the_width(run, columns, width):
    lines = summary(run, columns)
    assert max(len(line) for line in lines) <= width
    assert not [line for line in lines if line != line.rstrip()]  # no padding when piped
    assert not [line for line in lines if re.search(r"\de[+-]\d", line)]  # no 3.9e+05


@pytest.mark.requires("root", "cgroup", "compiler", "host", "namespaces")
def test_baseline_first_units_and_sig(run):
    lines = summary(run, "100")
    assert lines[0].split()[0] == "environment" and lines[0].split()[-1] == "sig"
    sections = [i for i, line in enumerate(lines) if not line.startswith(" ")][1:]
    table_end = next(i for i, line in enumerate(lines) if line.startswith("legend:"))
    figures = [i for i in sections if i < table_end]
    assert figures
    for i in figures:  # every figure the host ran starts with the host, marked baseline
        first = lines[i + 1].split()
        assert first[0] == "host" and "baseline" in first
    head = next(x for x in lines if x.startswith("syscall · getppid()"))
    assert head.endswith("  ns, lower is better (ns_per_op)")  # nanoseconds, not 1.7e-07 s
    null = lines[lines.index(head) + 2].split()
    assert re.fullmatch(r"[\d.,]+ \[[\d.,]+, [\d.,]+\]", " ".join(null[1:4]))  # median [CI]
    assert null[-1] in ("yes", "no", "–")
    startup = next(x for x in lines if x.startswith("startup · ready"))
    assert startup.endswith("  ms, lower is better (ready_ms)")
    assert any("ratio = value / baseline value" in x for x in lines)


def row(env: str, **kw) -> dict:
    base = {
        "env": env,
        "workload": "io",
        "op": "create_unlink",
        "metric": "ops_per_s",
        "unit": "ops/s",
        "better": "higher",
        "median": 3500.0,
        "ci_low": 3400.0,
        "ci_high": 3600.0,
        "n": 5,
        "ratio": None,
        "ratio_ci_low": None,
        "ratio_ci_high": None,
        "p_adjusted": None,
        "significant": False,
        "emulated": False,
        "flags": [],
        "note": "",
    }
    return base | kw


def cells(r: dict) -> list[str]:
    return [c.plain for c in cli._summary_cells(r, "host")]


def test_ratio_words_and_sig_column():
    slower = row(
        "docker",
        ratio=0.036,
        ratio_ci_low=0.03,
        ratio_ci_high=0.04,
        p_adjusted=0.001,
        significant=True,
    )
    assert cells(slower)[3:] == ["×0.0360 [0.0300, 0.0400]", "28× slower", "yes"]
    same = row("podman", ratio=1.01, ratio_ci_low=0.9, ratio_ci_high=1.1, p_adjusted=0.6)
    assert cells(same)[3:] == ["×1.01 [0.900, 1.10]", "", "no"]  # no claim without a test
    untested = row("libvirt")
    assert cells(untested)[3:] == ["–", "", "–"]
    assert cells(row("host"))[3] == "baseline"


def test_flags_are_grouped_under_the_table(capsys):
    flag = "vDSO control failed"
    rows = [
        row("docker", op="clock_gettime", flags=[flag]),
        row("podman", op="clock_gettime", flags=[flag]),
        row("oci", op="stat", flags=["negative counter"]),
    ]
    assert cells(rows[0])[3] == "flagged"
    cli._print_flags(rows)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    assert lines[1] == (f"flagged: {flag} (docker io clock_gettime, podman io clock_gettime)")
    assert lines[0] == "flagged: negative counter (oci io stat)"


def test_long_labels_and_wide_figures_fold_and_are_never_cut():
    """Five environments with long labels at 80 columns: the label, the words and the
    ratio fold; no line is wider than 80, and no "yes" or closing bracket is cut off."""
    from rich.console import Console

    sig = dict(
        ratio=0.964,
        ratio_ci_low=0.943,
        ratio_ci_high=0.986,
        p_adjusted=0.01,
        significant=True,
        median=2_067_249.0,
        ci_low=1_806_539.0,
        ci_high=2_241_288.0,
    )
    rows = [row("host")] + [
        row(e, **sig)
        for e in ("docker:seccomp=unconfined", "docker:runtime=runsc", "podman:cpus=0.5")
    ]
    console = Console(width=80, soft_wrap=True)
    with console.capture() as cap:
        console.print(cli.summary_table(rows, "host", [r["env"] for r in rows], 80))
    lines = cap.get().splitlines()
    assert max(len(x.rstrip()) for x in lines) <= 80
    assert sum(x.rstrip().endswith("yes") for x in lines) == 3
    assert sum("×0.964 [0.943," in x for x in lines) == 3  # folded, whole
    assert sum("0.986]" in x for x in lines) == 3


def test_a_rate_reads_with_an_si_prefix():
    """The figure a main-job summary printed as `149,651,069 [140,121,680, 272,343,140`
    (bracket lost at 80 columns) reads as hyperfine writes it."""
    rate = row("docker", median=149_651_069.0, ci_low=140_121_680.0, ci_high=272_343_140.0)
    assert cells(rate)[1] == "150M [140M, 272M]"
    assert cells(row("docker", median=2_067.0, ci_low=1_806.5, ci_high=12_413.0))[1] == (
        "2067 [1806, 12.4k]"
    )
