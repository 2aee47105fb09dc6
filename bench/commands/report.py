"""The report commands: `report`, `compare`, `notebook`, `export` (see COMMANDS).

User errors are `click.ClickException` or `store.StoreError`, which `bench.commands.main`
turns into one line and exit status 2. `compare` exits 1 when a cell changed
significantly beyond the threshold, so CI pipelines can gate on it. The report's modules
are imported when a command runs.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from bench.commands.options import LazyChoice

RUN_DIR = click.Path(path_type=Path)  # existence is checked by store (one clear message)
OUTPUT = click.Path(path_type=Path, allow_dash=True, dir_okay=False)  # "-": standard output


def to_stdout(output: Path | None) -> bool:
    return output is not None and str(output) == "-"


def write_output(path: Path, write) -> Path:
    """write(path) -> path, with any OSError (a read-only place, a parent that is a file)
    turned into one line for the user."""
    try:
        return write(path)
    except OSError as e:
        blocker = next((p for p in Path(path).parents if p.exists()), None)
        why = f"{blocker} is not a directory" if blocker and not blocker.is_dir() else e.strerror
        raise click.ClickException(f"cannot write {path}: {why or e}") from None


def echo_bytes(data: bytes) -> None:
    sys.stdout.buffer.write(data)
    sys.stdout.flush()


def deliver(output: Path | None, default: Path, data, write) -> Path | None:
    """data() on standard output when `output` is "-" (None); else write(path) to
    `output` or `default`: the path written."""
    if to_stdout(output):
        echo_bytes(data())
        return None
    return write_output(output or default, write)


def output_option(what: str, default: str):
    """-o/--output: where the command writes `what`, - for standard output."""
    return click.option(
        "-o",
        "--output",
        type=OUTPUT,
        default=None,
        help=f"{what} to write, - for standard output [default: {default}]",
    )


def run_dir_command(what: str, default: str):
    """A command of one RUN_DIR that writes `what` (see output_option)."""

    def decorate(f):
        f = output_option(what, default)(f)
        return click.command()(click.argument("run_dir", type=RUN_DIR)(f))

    return decorate


@run_dir_command("HTML file", "RUN_DIR/report.html")
def report(run_dir: Path, output: Path | None):
    """Write the run's self-contained HTML report (works offline). RUN_DIR may be a
    fleet directory (isobench fleet run): one report across its hosts."""
    from bench.report import html
    from bench.report.fleet_load import is_fleet

    if is_fleet(run_dir):
        from bench.report.sections import fleet

        page = fleet.render_fleet(run_dir)
    else:
        page = html.render_run(run_dir)
    path = deliver(output, run_dir / "report.html", page.encode, lambda p: html.write(p, page))
    if path:
        click.echo(f"report: {path} ({path.stat().st_size / 1e6:.1f} MB)")


@click.command()
@click.argument("run_a", type=RUN_DIR)
@click.argument("run_b", type=RUN_DIR)
@click.option(
    "-o",
    "--output",
    type=OUTPUT,
    default=None,
    help="also write the comparison as an HTML page (- for standard output; the "
    "table then goes to standard error)",
)
@click.option(
    "--threshold",
    type=click.FloatRange(min=0),
    default=5.0,
    show_default=True,
    help="a significant change whose whole CI lies within this many percent either way "
    "does not fail",
)
@click.option("--json", "as_json", is_flag=True, help="machine-readable output on stdout")
@click.pass_context
def compare(ctx, run_a: Path, run_b: Path, output: Path | None, threshold: float, as_json: bool):
    """Changes from RUN_A to RUN_B per cell; exit status 1 on a significant change
    beyond the threshold (regression or improvement)."""
    from rich.console import Console
    from rich.text import Text

    from bench.report import compare as compare_mod
    from bench.report import html

    if as_json and to_stdout(output):
        raise click.UsageError("--json and -o - would both write to standard output")
    ma, dfa = compare_mod.load(run_a)
    mb, dfb = compare_mod.load(run_b)
    result = compare_mod.compare(ma, dfa, mb, dfb, threshold=threshold)
    err = Console(stderr=True)
    for w in result["warnings"]:
        err.print(Text("warning: ", style="yellow") + Text(w), highlight=False)
    if as_json:
        click.echo(json.dumps(result, indent=1, default=str))
    else:
        print_table(result, stderr=to_stdout(output))
    if output:
        title = f"isobench compare {result['run_a']} → {result['run_b']}"
        page = html.render_template("compare.html.j2", result, title=title)
        path = deliver(output, output, page.encode, lambda p: html.write(p, page))
        if path:
            click.echo(f"comparison: {path}", err=as_json)
    if compare_mod.flagged(result):
        ctx.exit(1)


def print_table(result: dict, stderr: bool = False) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from bench.report import fmt

    stream = sys.stderr if stderr else sys.stdout
    out = Console(
        stderr=stderr, soft_wrap=True, highlight=False, width=None if stream.isatty() else 200
    )
    t = Table(
        title=Text(f"{result['run_a']} → {result['run_b']} (threshold ±{result['threshold']:g} %)")
    )
    for col in (
        "env",
        "workload",
        "op",
        "metric",
        "median A",
        "median B",
        "change [95% CI]",
        "p (BH)",
        "verdict",
    ):
        t.add_column(col, justify="right" if col.startswith(("median", "change", "p ")) else "left")
    style = {"regression": "bold red", "improvement": "bold green", "n.s.": "dim"}
    for c in result["cells"]:
        a = fmt.fmt_quantity(c["median_a"], c["unit"])
        b = fmt.fmt_quantity(c["median_b"], c["unit"])
        lo, hi = c["change_ci_low"], c["change_ci_high"]
        ci = "[–]" if lo is None or hi is None else f"[{lo:+.1f}, {hi:+.1f}]"  # one round: no CI
        ch = "–" if c["change_pct"] is None else f"{c['change_pct']:+.1f} % {ci}"
        p = "–" if c["p_adjusted"] is None else f"{c['p_adjusted']:.3g}"
        cells = (c["env"], c["workload"], c["op"], c["metric"], a, b, ch, p, c["verdict"])
        t.add_row(*(Text(str(x)) for x in cells), style=style.get(c["verdict"]))
    out.print(t)
    for side, keys in (("only in A", result["only_a"]), ("only in B", result["only_b"])):
        if keys:
            out.print(f"{side}: " + ", ".join("/".join(map(str, k)) for k in keys), markup=False)
    out.print(
        f"{result['regressions']} regression(s), {result['improvements']} improvement(s) "
        f"of {len(result['cells'])} cells"
    )


@run_dir_command("notebook", "RUN_DIR/analysis.ipynb")
def notebook(run_dir: Path, output: Path | None):
    """Write a Jupyter notebook that loads the run and reproduces the main tables."""
    from bench import store
    from bench.report import notebook as nb

    manifest = store.read_manifest(run_dir)
    path = deliver(
        output,
        run_dir / "analysis.ipynb",
        lambda: nb.text(run_dir, manifest).encode(),
        lambda p: nb.write(run_dir, manifest, p),
    )
    if path:
        click.echo(f"notebook: {path}")


def export_formats() -> tuple[str, ...]:
    from bench.report.export import FORMATS

    return FORMATS


@click.command()
@click.argument("run_dir", type=RUN_DIR)
@click.option(
    "--format",
    "fmt",
    required=True,
    type=LazyChoice(export_formats, case_sensitive=False),
    help="file format",
)
@output_option("file", "RUN_DIR/samples.FORMAT or summary.FORMAT")
@click.option("--summary", is_flag=True, help="the summary rows instead of the samples")
def export(run_dir: Path, fmt: str, output: Path | None, summary: bool):
    """Export the run's samples (or summary) as CSV, JSON or Parquet; of a fleet
    directory, every host's, with a `host` column."""
    from bench.report import export as export_mod

    fmt = fmt.lower()
    try:
        data = export_mod.to_bytes(export_mod.frame(run_dir, summary=summary), fmt)
    except export_mod.ExportError as e:
        raise click.ClickException(str(e)) from None
    default = export_mod.default_path(run_dir, fmt, summary)
    path = deliver(output, default, lambda: data, lambda p: export_mod.write(p, data))
    if path:
        click.echo(f"export: {path}")


COMMANDS = (report, compare, notebook, export)
