"""`isobench summary FLEET_DIR`: the fleet's report as a terminal table, one column per
host.

Per figure, each environment has two lines: its ratio to each host's own baseline with
the run's verdict (yes/no), and under it, in each host's column, the ratio of ratios to
the reference host with the between-hosts verdict. The facts in which the hosts differ
come first, in the same columns, so a column reads down from "kernel 6.12" to its
figures. The absolute figures follow, apart and under their warning. All the sections
are tables with the same column widths, so they read as one."""

from __future__ import annotations

import json
from typing import Any

from bench.report import fmt

GAP = 2
LEGEND = (
    "each host's column: ratio = value / that host's own baseline value, with its 95% CI "
    "and the run's verdict (yes = significant after Benjamini–Hochberg across that run); "
    "'vs REF': the ratio of ratios, this host's ratio / the reference host's, with its "
    "95% CI (Yuen's two-sample trimmed t on the per-round log ratios, Welch's degrees of "
    "freedom) and its verdict, Benjamini–Hochberg adjusted across every between-hosts "
    "test of the fleet; – = not tested (--json says why: between_note). What a figure that "
    "is not significant could have shown is in --json (between_detectable) and the HTML "
    "report"
)


def print_fleet(data: dict[str, Any], *, as_json: bool = False) -> None:
    """The summary of a fleet (bench.report.fleet.build's data) on standard output."""
    import click

    from bench.commands.output import emit, out, say

    if as_json:
        for r in data["rows"]:
            click.echo(json.dumps(r, sort_keys=True, default=str))
        return
    f = data["fleet"]
    done, ref = data["done"], data["reference"]
    say(
        "fleet",
        "bold",
        f"{f['id']} ({f['inventory'] or 'inventory ?'}): {len(done)} of "
        f"{len(data['hosts'])} hosts done; baseline {data['baseline']} on each host; "
        f"reference host {ref}; "
        + ("hosts ran at the same time" if f["overlapped"] else "hosts ran one at a time"),
        wrap=True,
    )
    ratios, absolute = table(data, out.width)
    emit(ratios)
    for line in data["differences"]:
        say("differs between hosts:", "bold magenta", line, wrap=True)
    if not data["differences"]:
        say("between hosts:", "bold", "no figure's isolation cost differs significantly", wrap=True)
    say("absolute figures per host:", "bold", data["absolute_warning"], wrap=True)
    emit(absolute)
    say("legend:", "dim", LEGEND.replace("REF", ref), wrap=True)
    for h in data["hosts"]:
        if not h["usable"]:
            say(f"{h['name']}: {h['status']}", "red", h["reason"] or "(no reason given)", wrap=True)
    for w in data["warnings"]:
        say("warning:", "yellow", w, wrap=True)


def table(data: dict[str, Any], width: int):
    """Two rich Groups of tables with the same columns: the differing facts and the
    ratios per figure; the absolute figures."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    done, ref, base = data["done"], data["reference"], data["baseline"]
    head = [Text("", style="bold")] + [Text(h, style="bold") for h in done]
    facts = [
        (Text(f"  {x['fact']}" + (" (isobench)" if x["source"] == "isobench" else "")),)
        + tuple(Text(x["by_host"][h]) for h in done)
        for x in data["facts"]["differ"]
    ]
    ratio_sections, abs_sections = [], []
    for fig in data["figures"]:
        lines, absolute = [], []
        for line in fig["envs"]:
            absolute.append(_absolute(line, fig, done))
            if line["baseline"]:
                continue
            lines.append(
                (Text(f"  {line['env']}"),)
                + tuple(Text(_ratio(line["cells"].get(h))) for h in done)
            )
            lines.append(
                (Text(f"    vs {ref}", style="dim"),)
                + tuple(
                    Text("reference", style="dim")
                    if h == ref
                    else Text(_between(line["between"].get(h)))
                    for h in done
                )
            )
        title = Text.assemble(
            (fig["label"], "bold"),
            f"  {fig['shown_unit']}, {fig['better']} is better ({fig['metric']})",
        )
        if lines:
            ratio_sections.append((title, lines))
        abs_sections.append((title, absolute))
    rows = [head, *facts] + [r for _, ls in ratio_sections + abs_sections for r in ls]
    label_w, col_w = _widths(rows, len(done), width)

    def grid(lines, header=False) -> Table:
        t = Table(box=None, pad_edge=False, show_header=False, padding=(0, GAP // 2))
        t.add_column(width=label_w, no_wrap=True, overflow="fold")
        for _ in done:
            t.add_column(width=col_w, overflow="fold")
        for ln in lines:
            t.add_row(*ln)
        return t

    parts: list = [grid([head])]
    if facts:
        parts += [Text("the hosts differ in", style="bold"), grid(facts)]
    else:
        parts.append(Text("the hosts' recorded facts do not differ", style="dim"))
    parts.append(Text(f"ratio to each host's own baseline ({base})", style="bold underline"))
    for title, lines in ratio_sections:
        parts += [title, grid(lines)]
    absolute: list = []
    for title, lines in abs_sections:
        absolute += [title, grid(lines)]
    return Group(*parts), Group(*absolute)


def _widths(rows: list[tuple], n_hosts: int, width: int) -> tuple[int, int]:
    """(label column, host column): each host column as wide as its widest cell (the same
    for every host), the label column what is left, at least 12."""
    label = max(r[0].cell_len for r in rows)
    col = max((c.cell_len for r in rows for c in r[1:]), default=8)
    room = width - GAP * (n_hosts + 1) - label
    if room < col * n_hosts:
        col = max(12, (width - GAP * (n_hosts + 1) - min(label, 16)) // max(n_hosts, 1))
        label = max(12, width - GAP * (n_hosts + 1) - col * n_hosts)
    return label, col


def _ratio(c: dict[str, Any] | None) -> str:
    """×1.09 [1.08, 1.11] yes; "flagged", "–" (no ratio), "not measured"."""
    if c is None:
        return "not measured"
    if c["flags"]:
        return "flagged"
    if c["ratio"] is None:
        return "–"
    ci = ""
    if c["ratio_ci_low"] is not None:
        ci = f" [{fmt.fmt_num(c['ratio_ci_low'])}, {fmt.fmt_num(c['ratio_ci_high'])}]"
    sig = "–" if c["p_adjusted"] is None else ("yes" if c["significant"] else "no")
    return f"{fmt.fmt_ratio(c['ratio'])}{ci} {sig}"


def _between(b: dict[str, Any] | None) -> str:
    if not b or b["ratio"] is None:
        return "–"
    ci = f"[{fmt.fmt_num(b['ci_low'])}, {fmt.fmt_num(b['ci_high'])}]"
    sig = "–" if b["p_adjusted"] is None else ("yes" if b["significant"] else "no")
    return f"{fmt.fmt_ratio(b['ratio'])} {ci} {sig}"


def _absolute(line: dict[str, Any], fig: dict[str, Any], done: list[str]) -> tuple:
    from rich.text import Text

    s = fig["scale"]
    num = lambda x: fmt.fmt_num(None if x is None else x * s)  # noqa: E731
    cells = []
    for h in done:
        c = line["cells"].get(h)
        cells.append(
            Text(
                "not measured"
                if c is None
                else f"{num(c['median'])} [{num(c['ci_low'])}, {num(c['ci_high'])}]"
            )
        )
    return (Text(f"  {line['env']}", style="bold" if line["baseline"] else ""), *cells)
