"""The terminal summary of a real run: as wide as the terminal says, human units, the
baseline first, sig yes/no/–, ratios in words, flags and precision misses grouped; the
main job's environments at 80 and 100 columns: a long label on a line of its own, no
label broken, no ratio CI wrapped, the header whole."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bench.commands import output
from bench.commands import summary as summary_cmd

ROOT = Path(__file__).parents[1]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    from tests.test_report import make_run

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
@pytest.mark.parametrize("columns, width", [("80", 80), (None, output.PIPED_WIDTH), ("120", 120)])
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
    return [c.plain for c in summary_cmd._summary_cells(r, "host")]


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
    summary_cmd._print_flags(rows)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    assert lines[1] == (f"flagged: {flag} (docker io clock_gettime, podman io clock_gettime)")
    assert lines[0] == "flagged: negative counter (oci io stat)"


def test_long_labels_and_wide_figures_are_never_cut():
    """Four environments with long labels and wide figures at 80 columns: no line is
    wider than 80, and no "yes" or closing bracket is cut off."""
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
        console.print(summary_cmd.summary_table(rows, "host", [r["env"] for r in rows], 80))
    lines = cap.get().splitlines()
    assert max(len(x.rstrip()) for x in lines) <= 80
    assert sum(x.rstrip().endswith("yes") for x in lines) == 3
    assert sum("×0.964 [0.943," in x for x in lines) == 3  # folded, whole
    assert sum("0.986]" in x for x in lines) == 3


def test_a_row_that_is_not_significant_says_what_could_have_been_detected():
    tested = row(
        "docker",
        ratio=1.01,
        ratio_ci_low=0.99,
        ratio_ci_high=1.03,
        p_adjusted=0.4,
        detectable_ratio=1.0412,
    )
    assert cells(tested)[4] == "none ≥×1.04" and cells(tested)[5] == "no"
    assert cells({**tested, "significant": True, "ratio": 1.3})[4] == "1.30× faster"


def test_a_rate_reads_with_an_si_prefix():
    """The figure a main-job summary printed as `149,651,069 [140,121,680, 272,343,140`
    (bracket lost at 80 columns) reads as hyperfine writes it."""
    rate = row("docker", median=149_651_069.0, ci_low=140_121_680.0, ci_high=272_343_140.0)
    assert cells(rate)[1] == "150M [140M, 272M]"
    assert cells(row("docker", median=2_067.0, ci_low=1_806.5, ci_high=12_413.0))[1] == (
        "2067 [1806, 12.4k]"
    )


# the main job's environments, and longer labels still
MAIN_JOB = (
    "host",
    "namespaces",
    "docker",
    "docker:seccomp=unconfined",
    "docker:runtime=runsc",
    "podman",
    "podman:runtime=runsc",
    "oci",
    "libvirt:accel=tcg",
    "qemu",
    "cri",
)


def render(rows: list[dict], width: int) -> list[str]:
    from rich.console import Console

    console = Console(width=width, soft_wrap=True)
    table = summary_cmd.summary_table(rows, "host", [r["env"] for r in rows], width)
    with console.capture() as cap:
        console.print(table)
    return [line.rstrip() for line in cap.get().splitlines()]


def main_job_rows() -> list[dict]:
    """Two figures of the main job's environments: a rate in the hundreds of millions
    (the widest medians) and a time; ratios with CIs, some significant."""
    rows = []
    for i, env in enumerate(MAIN_JOB):
        emulated = env.startswith(("libvirt", "qemu"))
        tested = env != "host" and not emulated
        for metric, unit, better, median in (
            ("ops_per_s", "ops/s", "higher", 149_651_069.0 + i),
            ("ns_per_op", "ns", "lower", 170.0 * (1 + i / 10)),
        ):
            rows.append(
                row(
                    env,
                    workload="cpu",
                    op="compute",
                    metric=metric,
                    unit=unit,
                    better=better,
                    median=median,
                    ci_low=median * 0.9364,
                    ci_high=median * 1.8198,
                    n=12,
                    emulated=emulated,
                    ratio=0.0360 * (i + 1) if tested else None,
                    ratio_ci_low=0.0300 * (i + 1) if tested else None,
                    ratio_ci_high=0.0400 * (i + 1) if tested else None,
                    p_adjusted=0.001 if tested else None,
                    significant=tested and i % 2 == 0,
                )
            )
    return rows


@pytest.mark.parametrize("width", [80, 100])
def test_main_job_summary_breaks_no_label_and_wraps_no_ci(width):
    """At 80 and 100 columns: no line wider, every label whole on a line (a long one on
    its own), every ratio with its whole CI on one line, the header's names whole."""
    rows = main_job_rows()
    lines = render(rows, width)
    assert max(map(len, lines)) <= width
    header = " ".join(lines[:2])
    for name in ("environment", "median [95% CI]", "ratio [95% CI]", "in words"):
        assert name in header
    assert re.search(r"(^|\s)sig$", lines[0]) or re.search(r"(^|\s)sig$", lines[1])
    words = [w for line in lines for w in line.split()]
    for env in MAIN_JOB:  # each label whole, once per figure, and never a piece of one
        assert words.count(env) == 2, (env, lines)
    assert not [w for w in words if ":" in w and w not in MAIN_JOB]
    for r in rows:
        if r["ratio_ci_low"] is not None:
            cells = summary_cmd._summary_cells(r, "host")
            assert sum(cells[3].plain in line for line in lines) >= 1, (cells[3].plain, lines)


def test_labels_that_fit_stay_on_their_line():
    """At 160 columns every label fits its column: one line per environment."""
    rows = main_job_rows()
    lines = render(rows, 160)
    assert len(lines) == 1 + 2 * (1 + len(MAIN_JOB))  # header, 2 × (figure + envs)
    assert any(line.startswith("  docker:seccomp=unconfined ") for line in lines)
