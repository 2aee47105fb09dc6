"""`isobench history`: the runs of one host as a series per figure, with change points
and a gate for nightly CI (exit 1 on a recent change of an isolation cost).

Exit status: 0, or 1 with --fail-on-change when a change of an isolation cost beyond
--threshold lies in the newest --window runs; 2 for bad input (fewer than two runs of
one host, a directory that is not a run) and when the `history` extra (Apache Otava) is
not installed. The statistics are imported when the command runs.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from bench.commands.report import write_output

HTML = click.Path(path_type=Path, dir_okay=False)


@click.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--env", "envs", multiple=True, metavar="LABEL", help="only this environment")
@click.option("--op", "ops", multiple=True, metavar="OP", help="only this op (or WORKLOAD.OP)")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output on stdout")
@click.option("-o", "--output", type=HTML, default=None, help="also write an HTML page")
@click.option(
    "--fail-on-change",
    is_flag=True,
    help="exit 1 when an isolation cost changed within the newest --window runs",
)
@click.option(
    "--threshold",
    type=click.FloatRange(min=0),
    default=5.0,
    show_default=True,
    help="percent change below which a change point does not fail the gate",
)
@click.option(
    "--window",
    type=click.IntRange(min=1),
    default=3,
    show_default=True,
    help="the newest runs the gate looks at",
)
@click.pass_context
def history(ctx, paths, envs, ops, as_json, output, fail_on_change, threshold, window):
    """Trends and change points across runs: RUN_DIR... or a RESULTS_DIR of runs."""
    from bench.commands.output import UserError
    from bench.history import changes

    try:
        changes.detector()
    except changes.MissingExtra as e:
        raise UserError(str(e)) from None
    from bench.history import build, text

    h = build.build(list(paths), envs=envs, ops=ops, threshold=threshold, window=window)
    if not h["figures"]:
        raise UserError("no figure with a ratio to the baseline in these runs (see --env, --op)")
    if output is not None:
        from bench.history import page

        html = page.render(h)
        path = write_output(output, lambda p: page.write(p, html, h))
        click.echo(f"history: {path}", err=True)
    if as_json:
        click.echo(json.dumps(h, indent=1))
    else:
        text.show(h)
    if fail_on_change and h["gate"]["failed"]:
        ctx.exit(1)
