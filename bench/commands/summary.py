"""`isobench summary`: statistics per figure, with ratios to the baseline, as a table
that reads in a terminal.

The table never breaks an environment's label or a ratio's CI: a label too long for
the label column gets a line of its own, the figures on the line under it. Numbers are
formatted by the report's functions (bench.report.model)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from rich.text import Text


@click.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="one JSON object per row")
@click.option(
    "--baseline",
    type=str,
    help="environment label to compare against [default: the run's baseline]",
)
@click.option("--footprint", is_flag=True, help="cgroup and host-side figures instead")
@click.option(
    "--reference",
    type=str,
    help="a fleet's host the others are tested against [default: the first usable one]",
)
def summary(run_dir, as_json, baseline, footprint, reference):
    """Statistics per figure, with ratios to the baseline. RUN_DIR may be a fleet
    directory (isobench fleet run): one column per host, and a between-hosts test."""
    from bench.report.fleet_load import is_fleet

    if is_fleet(run_dir):
        print_fleet_summary(
            run_dir, as_json=as_json, baseline=baseline, footprint=footprint, reference=reference
        )
        return
    if reference is not None:
        from bench.commands.output import UserError

        raise UserError("--reference: only for a fleet directory (isobench fleet run)")
    print_summary(run_dir, as_json=as_json, baseline=baseline, footprint=footprint)


def print_fleet_summary(fleet_dir: Path, *, as_json, baseline, footprint, reference) -> None:
    """The summary of a fleet directory (bench/report/fleet_text.py)."""
    from bench import analysis
    from bench.report import fleet, fleet_load, fleet_text

    loaded = fleet_load.load(fleet_dir)
    scope = analysis.FOOTPRINT if footprint else analysis.MAIN
    data = fleet.build(loaded, baseline=baseline, reference=reference, scope=scope)
    fleet_text.print_fleet(data, as_json=as_json)


SIG_LEGEND = (
    "ratio = value / baseline value, with its 95% CI (for rates, below 1 is slower); "
    "sig: yes = a tested difference (adjusted p < 0.05 and the CI excludes 1), "
    "no = tested, not significant, – = not tested (no ratio); in words, for a figure "
    "that is not significant: none ≥×1.04 = no difference of ×1.04 or more either way "
    "(this run would have called one that large with 80% power)"
)


def print_summary(run_dir: Path, *, as_json=False, baseline=None, footprint=False) -> None:
    """The summary table (or JSON rows); UserError for a run without samples or an
    unknown baseline."""
    from rich.text import Text

    from bench import analysis, store
    from bench.commands.output import UserError, emit, out, say
    from bench.report.view import env_order

    manifest = store.read_manifest(run_dir)
    df = store.load_samples(run_dir)
    if not len(df):
        raise UserError(f"{run_dir}: no samples recorded (run status: {manifest.get('status')})")
    order = env_order(manifest, df)
    if baseline is not None and baseline not in order:
        raise UserError(f"--baseline {baseline}: no such environment (known: {', '.join(order)})")
    scope = analysis.FOOTPRINT if footprint else analysis.MAIN
    rows = analysis.summarize_run(df, manifest, baseline=baseline, scope=scope)
    noise = canary_json(manifest)
    if as_json:
        for r in rows:
            click.echo(json.dumps(r | noise, sort_keys=True))
        return
    base = baseline or manifest.get("matrix", {}).get("baseline", "host")
    order = [base] + [e for e in order if e != base]
    emit(summary_table(rows, base, order, out.width))
    if rows:
        say("legend:", "dim", SIG_LEGEND, wrap=True)
    for note in sorted({r["note"] for r in rows if r["note"]}):
        say("note:", "cyan", note, wrap=True)
    _print_flags(rows)
    for f in analysis.failures(df):
        what = f"{f['env']} / {f['workload']} ×{f['count']}: {f['reason']}"
        say(f["status"], "red", what, wrap=True)
    if manifest.get("unreached"):
        say(
            "precision not reached",
            "yellow",
            f"({manifest.get('stop_reason')}); 95% CI half-width per cell:",
        )
        for cell, width in manifest["unreached"].items():
            out.print(Text(f"  {cell.replace('|', ' / ')}  ±{width:.1%}"))
    for w in manifest.get("warnings", []):
        say("warning:", "yellow", w, wrap=True)
    if noise:
        c = noise["canary"]
        verdict = c.get("verdict") or "?"
        say(f"canary ({verdict}):", CANARY_STYLE.get(verdict, "yellow"), c["line"], wrap=True)
    if footprint:
        print_disk(manifest, out)


CANARY_STYLE = {"noisy": "yellow", "quiet": "green"}


def canary_json(manifest: dict) -> dict:
    """{"canary": {verdict, line, sentence, every_ms, blocks}}: what the run's host canary
    saw (bench.report.canary.line is the line the table view prints), for every JSON row
    (the rows stay one object per figure); {} for a run without a canary diagnosis."""
    from bench.report import canary

    diag = canary.diagnosis(manifest)
    if diag is None:
        return {}
    keep = ("verdict", "sentence", "every_ms", "blocks")
    return {"canary": {k: diag.get(k) for k in keep} | {"line": canary.line(diag)}}


LABEL = "environment"
FIGURES = ("median [95% CI]", "n", "ratio [95% CI]", "in words", "sig")
RIGHT = ("median [95% CI]", "n", "ratio [95% CI]")
INDENT = 4  # the narrowest label column: under a label on its own line
GAP = 2  # between columns
# figure columns that may wrap at spaces (never inside a word), in the order they do,
# when the figures alone are wider than the terminal: the ratio, n and sig never wrap
WRAPPABLE = ("in words", "median [95% CI]")


def summary_table(rows: list[dict], base: str, order: list[str], width: int):
    """One section per figure (its name, unit and direction), one line per environment,
    the baseline first; ratios in words where a test says there is a difference. The
    sections are tables with the same column widths, so they read as one; a label longer
    than its column is a line of its own, with the environment's figures under it. A
    rich Group, `width` columns wide at most."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    from bench.report import fmt

    rank = {e: i for i, e in enumerate(order)}
    keys = {(r["workload"], r["op"], r["metric"]) for r in rows}
    figures: dict[tuple, list[dict]] = {}
    for r in sorted(rows, key=lambda r: rank.get(r["env"], len(rank))):
        figures.setdefault((r["workload"], r["op"], r["metric"]), []).append(r)
    sections = []
    for (workload, op, metric), group in sorted(figures.items()):
        scale, unit = fmt.time_scale([r["median"] for r in group], group[0]["unit"])
        head = Text.assemble(
            (fmt.short_label(workload, op, metric, keys), "bold"),
            f"  {unit}, {group[0]['better']} is better ({metric})",
        )
        sections.append((head, [_summary_cells(r, base, scale) for r in group]))
    label_w, widths = _widths([row for _, lines in sections for row in lines], width)

    def table(header: bool = False) -> Table:
        t = Table(box=None, pad_edge=False, show_header=header, padding=(0, GAP // 2))
        t.add_column(LABEL, width=label_w, no_wrap=True)
        for name, w in zip(FIGURES, widths, strict=True):
            right, wraps = name in RIGHT, name in WRAPPABLE
            t.add_column(name, width=w, justify="right" if right else "left", no_wrap=not wraps)
        return t

    def lines_of(lines: list[tuple]) -> list:
        """Tables of these lines, a label too long for its column on a line above."""
        parts, t = [], table()
        for label, *figs in lines:
            if label.cell_len > label_w:
                if t.row_count:
                    parts.append(t)
                    t = table()
                parts.append(label)
                label = Text("")
            t.add_row(label, *figs)
        return parts + ([t] if t.row_count else [])

    if len(LABEL) <= label_w:
        parts: list = [table(header=True)]
    else:
        parts = lines_of([(Text(LABEL, style="bold"), *(Text(n, style="bold") for n in FIGURES))])
    for head, lines in sections:
        parts += [head, *lines_of(lines)]
    return Group(*parts)


def _widths(cells: list[tuple], width: int) -> tuple[int, list[int]]:
    """(label column, figure columns) widths for a table `width` columns wide: the
    figures as wide as they are (wrapping words, then medians, at spaces if they alone
    are too wide); the label column what is left, up to the longest label."""
    figs = [len(name) for name in FIGURES]
    floor = [len(name) for name in FIGURES]  # a column wraps no word and no header
    for row in cells:
        for i, c in enumerate(row[1:]):
            figs[i] = max(figs[i], c.cell_len)
            floor[i] = max(floor[i], *map(len, c.plain.split(" ")))
    label = max([len(LABEL)] + [row[0].cell_len for row in cells])
    room = width - sum(figs) - GAP * len(FIGURES)
    if room >= INDENT:
        return min(label, room), figs
    over = INDENT - room
    for name in WRAPPABLE:
        i = FIGURES.index(name)
        cut = max(0, min(over, figs[i] - floor[i]))
        figs[i] -= cut
        over -= cut
    return INDENT, figs


def _summary_cells(r: dict, base: str, scale: float = 1.0) -> tuple[Text, ...]:
    """One environment's line; figures times `scale` (the section's unit)."""
    from rich.text import Text

    from bench import analysis
    from bench.report import fmt

    num = lambda x: fmt.fmt_num(None if x is None else x * scale)  # noqa: E731
    label = "  " + r["env"] + (" (emulated)" if r["emulated"] else "")
    if r["env"] == base:
        ratio, words, sig = "baseline", "", ""
    elif r["flags"]:
        ratio, words, sig = "flagged", "", "–"
    elif r["ratio"] is None:
        ratio, words, sig = "–", "", "–"
    else:
        ratio = fmt.fmt_ratio(r["ratio"])
        if r["ratio_ci_low"] is not None:
            ratio += f" [{fmt.fmt_num(r['ratio_ci_low'])}, {fmt.fmt_num(r['ratio_ci_high'])}]"
        words = analysis.verdict(r) if r["significant"] else analysis.undetected(r)
        sig = "–" if r["p_adjusted"] is None else ("yes" if r["significant"] else "no")
    return (
        Text(label, style="bold" if r["env"] == base else ""),
        Text(f"{num(r['median'])} [{num(r['ci_low'])}, {num(r['ci_high'])}]"),
        Text(str(r["n"])),
        Text(ratio),
        Text(words, style="bold"),
        Text(sig),
    )


def _print_flags(rows: list[dict]) -> None:
    """Self-check flags, grouped by sentence: those figures are not shown as results."""
    from bench.commands.output import say

    by_flag: dict[str, list[str]] = {}
    for r in rows:
        for flag in r.get("flags") or []:
            by_flag.setdefault(flag, []).append(f"{r['env']} {r['workload']} {r['op']}")
    for flag, where in sorted(by_flag.items()):
        say("flagged:", "red", f"{flag} ({', '.join(where)})", wrap=True)


def disk_rows(manifest: dict) -> list[tuple[str, str, str]]:
    """Pure: the manifest's disk footprints (environments[label]["disk"], recorded once
    per run) -> (environment, what, MiB or the reason there is no figure) rows."""
    rows = []
    for label, env in (manifest.get("environments") or {}).items():
        disk = env.get("disk")
        if not disk:
            continue
        if disk.get("error"):
            rows.append((label, "disk footprint", f"not measured: {disk['error']}"))
        for f in disk.get("figures") or []:
            n = f.get("bytes")
            value = (
                f"– ({f.get('reason', 'not measured')})"
                if n is None
                else f"{n / 2**20:.2f}" + (f" ({n} B)" if n < 10240 else "")
            )
            rows.append((label, f["what"], value))
    return rows


def print_disk(manifest: dict, console=None) -> None:
    """`summary --footprint`: the disk footprint of each environment, a small table
    (nothing when the run recorded none), on `console` (a rich Console) or standard
    output. What each figure counts is in the manifest."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    rows = disk_rows(manifest)
    if not rows:
        return
    out = console or Console(
        soft_wrap=True, highlight=False, width=None if sys.stdout.isatty() else 200
    )
    t = Table(
        title=Text(
            "disk footprint (MiB = 2^20 bytes; what each counts: manifest "
            "environments.<label>.disk)"
        )
    )
    t.add_column("environment")
    t.add_column("what")
    t.add_column("MiB", justify="right")
    for row in rows:
        t.add_row(*(Text(x) for x in row))
    out.print(t)
