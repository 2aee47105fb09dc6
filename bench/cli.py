"""The `isobench` command. Every user error is one line on stderr and exit status 2."""

from __future__ import annotations

import json
import os
import re
import secrets
import sys
import time
from pathlib import Path

import click
from rich.console import Console, Group
from rich.progress import BarColumn, Progress, TextColumn
from rich.table import Table
from rich.text import Text

import bench
from bench import analysis, bundle, catalog, harness, provenance, store, userwork
from bench.envs import REGISTRY
from bench.envs.base import COMMON_OPTIONS
from bench.lock import LockError, RunLock
from bench.matrix import QUICK, Matrix, MatrixError, load_toml, parse_env_spec
from bench.metrics import noise
from bench.report import commands as report_commands
from bench.report import html, model
from bench.rootfs_cli import rootfs
from bench.runner import Interrupted, Runner, new_manifest
from bench.validate import validate

PIPED_WIDTH = 100  # columns when the output is not a terminal and COLUMNS is unset


def _console(stream) -> Console:
    """A console as wide as the terminal; piped, as wide as COLUMNS says, else 100."""
    tty_or_columns = stream.isatty() or os.environ.get("COLUMNS", "").isdigit()
    return Console(
        stderr=stream is sys.stderr, soft_wrap=True, width=None if tty_or_columns else PIPED_WIDTH
    )


out = _console(sys.stdout)
err = _console(sys.stderr)

USER_ERRORS = (MatrixError, store.StoreError, bundle.BuildError, LockError)
FAILURES = (store.StoreWriteError,)  # the run could not save what it measured: exit 1


class UserError(click.ClickException):
    exit_code = 2


def main() -> None:
    try:
        rv = cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        err.print("isobench: aborted")
        sys.exit(130)
    except click.ClickException as e:
        click.echo(f"isobench: error: {e.format_message()}", err=True)
        sys.exit(2)
    except USER_ERRORS as e:
        click.echo(f"isobench: error: {e}", err=True)
        sys.exit(2)
    except FAILURES as e:
        click.echo(f"isobench: error: {e.strerror}", err=True)
        sys.exit(1)
    sys.exit(rv or 0)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(bench.__version__, prog_name="isobench")
def cli():
    """isobench: the cost of isolation, measured on this host."""


# -- doctor / list / build ----------------------------------------------------------------
def doctor_data(checking=lambda what: None) -> dict:
    """Everything doctor shows; `checking(what)` is told what is being checked."""
    kinds = {}
    for name, cls in REGISTRY.items():
        checking(name)
        av = cls.probe()
        kinds[name] = {
            "available": av.ok,
            "reason": av.reason,
            "versions": av.versions,
            "summary": cls.summary,
            "details": [
                {"name": n, "available": a.ok, "reason": a.reason, "versions": a.versions}
                for n, a in cls.details()
                if n != name  # a kind's own row is the kind itself
            ],
        }
    checking("noise (load, steal, governor, busy processes)")
    snap = noise.snapshot()
    return {
        "host": provenance.host_facts(),
        "environments": kinds,
        "noise": snap,
        "warnings": noise.warnings(snap),
    }


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def doctor(as_json):
    """What this host can run, and what would make its numbers noisy."""
    with err.status("checking …") as status:
        data = doctor_data(lambda what: status.update(f"checking {what} …"))
    if as_json:
        click.echo(json.dumps(data, indent=2, default=str))
        return
    h = data["host"]
    _say(
        "host",
        "bold",
        f"{h['hostname']}: {h['os']}, kernel {h['kernel']}, "
        f"{h['cpu_count']}× {h['cpu_model']}, {h['memory_gib']} GiB, "
        f"virtualization {h['virtualization']}, cgroup {h['cgroup_layout']}",
    )
    t = Table("environment", "available", "reason / versions", box=None, pad_edge=False)
    for name, k in data["environments"].items():
        t.add_row(Text(name), _yes(k["available"]), Text(k["reason"] or _versions(k["versions"])))
        for d in k["details"]:
            why = Text(d["reason"] or _versions(d["versions"]))
            t.add_row(Text(f"  {d['name']}"), _yes(d["available"]), why)
    _emit(t)
    for w in data["warnings"]:
        _say("warning:", "yellow", w)
    if not data["warnings"]:
        out.print("no noise warnings")


def _emit(renderable, console: Console = out, **kwargs) -> None:
    """Print; piped, without the spaces rich pads lines with up to the width."""
    if console.is_terminal:
        console.print(renderable, **kwargs)
        return
    with console.capture() as cap:
        console.print(renderable, **kwargs)
    click.echo("\n".join(line.rstrip() for line in cap.get().splitlines()), err=console.stderr)


def _say(head: str, style: str, rest: str, console: Console = out, wrap: bool = False) -> None:
    """One line whose text is never read as markup (labels and reasons are user data);
    with wrap, folded at the console's width."""
    _emit(
        Text.assemble((head, style), " ", str(rest)), console, highlight=False, soft_wrap=not wrap
    )


def _yes(ok: bool) -> str:
    return "[green]yes[/]" if ok else "[red]no[/]"


def _versions(v: dict) -> str:
    return ", ".join(f"{k} {val}" for k, val in v.items())


@cli.command("list")
def list_cmd():
    """Workloads and environment kinds with their options."""
    t = Table("workload", "probe", "figures", "description", box=None)
    for w in catalog.load().values():
        figs = ", ".join(f"{m} ({x.unit}, {x.better} is better)" for m, x in w.metrics.items())
        phases = "phases: " + ", ".join(catalog.PHASE_METRICS)
        t.add_row(*map(Text, (w.name, w.probe, figs or phases, w.description)))
    _emit(t)
    t = Table("environment", "options", "what it is", box=None)
    for name, cls in REGISTRY.items():
        opts = {**COMMON_OPTIONS, **cls.options}
        text = "; ".join(
            f"{k}" + (f"={'|'.join(o.choices)}" if o.choices else "") for k, o in opts.items()
        )
        t.add_row(*map(Text, (name, text, cls.summary)))
    _emit(t)


@cli.command("build")
def build_cmd():
    """Compile the probes into a content-hashed bundle (done by `run` too)."""
    b = bundle.build()
    out.print(Text(f"bundle {b.hash} at {b.root}"))
    for name, h in b.probe_hashes.items():
        out.print(Text(f"  {name:10} sha256 {h}"))
    out.print(f"  busybox    {'included' if b.busybox else 'not found (install busybox-static)'}")


# -- run ------------------------------------------------------------------------------------
def default_envs() -> list[str]:
    """--all: every kind in its default configuration, plus the attribution variants
    each kind declares (docker's seccomp=unconfined and runtime=runsc)."""
    return [spec for cls in REGISTRY.values() for spec in cls.variants()]


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(2)


def _default(name: str, fmt: str = "{}") -> str:
    """A run option's default as --help shows it (the matrix's, then --quick's)."""
    text = fmt.format(getattr(Matrix, name))
    return text + (f"; --quick: {fmt.format(QUICK[name])}" if name in QUICK else "")


@cli.command()
@click.argument("matrix_file", required=False, type=click.Path(path_type=Path))
@click.option(
    "--env",
    "envs",
    multiple=True,
    metavar="SPEC",
    show_default="host, namespaces",
    help="KIND or KIND:key=value,... (repeatable)",
)
@click.option(
    "--all",
    "all_envs",
    is_flag=True,
    help="every environment kind (unavailable ones are recorded with their reason)",
)
@click.option(
    "--workload",
    "workloads",
    multiple=True,
    metavar="NAME",
    show_default="all",
    help="a workload of `isobench list` (repeatable)",
)
@click.option("--quick", is_flag=True, help="few rounds, small sizes: a first look in minutes")
@click.option(
    "--results",
    type=click.Path(path_type=Path),
    default=Path("results"),
    show_default=True,
    help="where the run directory is made",
)
@click.option(
    "--seed",
    type=int,
    show_default="random, recorded in the manifest",
    help="seed of the shuffled launch order",
)
@click.option("--rounds", type=int, show_default=_default("rounds"), help="rounds at least")
@click.option(
    "--max-rounds",
    type=int,
    show_default=_default("max_rounds"),
    help="adaptive stopping adds rounds up to this",
)
@click.option(
    "--warmup",
    type=int,
    show_default=_default("warmup"),
    help="uncounted launches per environment before the first round",
)
@click.option(
    "--budget",
    type=float,
    show_default=_default("budget", "{:g}"),
    help="the whole run's wall clock in seconds, preparation included (with --quick and only "
    "workloads outside the main job, density or net, the quick default does not cut their "
    "minimum rounds)",
)
@click.option(
    "--timeout",
    type=float,
    show_default=_default("timeout", "{:g}"),
    help="seconds per launch before it is killed",
)
@click.option(
    "--precision",
    type=str,
    show_default=_default("precision", "{:.0%}"),
    help="target 95%-CI half-width relative to the median, in (0, 50%], e.g. 2% or 0.02",
)
@click.option(
    "--baseline",
    type=str,
    show_default=Matrix.baseline,
    help="environment label the ratios are against",
)
@click.option(
    "--busy-cpus/--no-busy-cpus",
    default=None,
    help="keep CPUs out of idle with idle-class spinners while measuring: a CPU "
    "quota then reads 1/q on a VM whose halted vCPUs come back slower, but a "
    "spinner on a sibling hyperthread slows CPU-bound probes (here null +30%) "
    "[default: off]",
)
@click.option(
    "--memory-reserve",
    type=float,
    show_default=_default("memory_reserve", "{:.0%}"),
    help="density: stop the ramp before the host would have less than this share of its "
    "memory available (0 to below 1)",
)
@click.option(
    "--resume",
    type=click.Path(path_type=Path),
    metavar="RUN_DIR",
    help="complete an interrupted run",
)
@click.option("--report", "with_report", is_flag=True, help="write RUN_DIR/report.html at the end")
def run(
    matrix_file, envs, all_envs, workloads, quick, results, seed, resume, with_report, **settings
):
    """Run a benchmark matrix and write results/<run-id>/."""
    if resume:
        return _resume(resume, with_report)
    cat = catalog.load()
    file_envs, file_workloads, file_settings = (
        load_toml(matrix_file) if matrix_file else ([], [], {})
    )
    specs = [parse_env_spec(s) for s in (default_envs() if all_envs else envs)]
    _check_refusals(file_envs + specs)
    chosen = {**(QUICK if quick else {}), **file_settings}
    if "precision" in file_settings:
        _check_precision(file_settings["precision"], f"{matrix_file}: precision")
    if settings.get("precision") is not None:
        settings["precision"] = _precision(settings["precision"])
    chosen.update({k: v for k, v in settings.items() if v is not None})
    if seed is not None:
        chosen["seed"] = seed
    elif "seed" not in chosen:
        chosen["seed"] = secrets.randbelow(2**31)
    defaults = (
        [] if file_settings.get("user_workloads") else [n for n, w in cat.items() if w.default]
    )
    m = Matrix(
        envs=file_envs + specs or [parse_env_spec("host"), parse_env_spec("namespaces")],
        workloads=list(workloads) or file_workloads or defaults,
        quick=quick,
        **chosen,
    )
    m.check(cat, str(matrix_file) if matrix_file else "command line")
    run_id = new_run_id()
    run_dir = results / run_id
    return _execute(m, run_dir, run_id, cat, new=True, with_report=with_report)


MAX_PRECISION = 0.5  # a CI half-width of half the median is as loose as a target gets


def _precision(text: str) -> float:
    try:
        value = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        raise MatrixError(f"--precision {text}: expected a percentage like 2% or 0.02") from None
    return _check_precision(value, f"--precision {text}")


def _check_precision(value: float, where: str) -> float:
    if not 0 < value <= MAX_PRECISION:
        raise MatrixError(
            f"{where}: must be in (0, {MAX_PRECISION:.0%}] (a CI half-width relative to the "
            "median: 2% is 2% or 0.02)"
        )
    return value


def _check_refusals(specs) -> None:
    """A configuration its kind refuses (a docker runtime the daemon does not list) is
    refused now, not after preparation. (An engine that does not answer is recorded as
    unavailable by the run.)"""
    for s in specs:
        why = REGISTRY[s.kind].refusal(s.options)
        if why:
            raise MatrixError(f"{s.label}: {why}")


def _resume(run_dir: Path, with_report: bool) -> int:
    manifest = store.read_manifest(run_dir)
    if manifest.get("status") == "complete":
        raise MatrixError(f"{run_dir}: this run is complete; nothing to resume")
    m = Matrix.from_dict(manifest["matrix"])
    return _execute(
        m,
        run_dir,
        manifest["run_id"],
        catalog.load(),
        new=False,
        manifest=manifest,
        with_report=with_report,
    )


def _harness_cost(b) -> dict:
    """What the harness itself adds to a launch, measured once per run (~2 s)."""
    if not REGISTRY["host"].probe().ok:
        return {"error": "not measured: " + REGISTRY["host"].probe().reason}
    err.print("measuring the harness's own cost …", highlight=False)
    try:
        return harness.measure(b, n=15)
    except Exception as e:  # a measurement of ourselves must not stop the run
        return {"error": f"{type(e).__name__}: {e}"}


def _log(msg: str) -> None:
    err.print(msg, markup=False, highlight=False)


def _execute(m, run_dir, run_id, cat, *, new, manifest=None, with_report=False) -> int:
    cat = userwork.with_catalog(cat, m.user_workloads)  # the matrix's own workloads too
    with RunLock(run_dir.resolve()):
        b = bundle.build()
        if new:
            run_dir.mkdir(parents=True, exist_ok=False)
            manifest = new_manifest(run_id, m, b, cat)
            manifest["harness"] = _harness_cost(b)
        elif manifest["bundle"]["hash"] != b.hash:
            raise MatrixError(
                f"{run_dir}: the probes changed since this run (bundle {manifest['bundle']['hash']}"
                f", now {b.hash}): resuming would mix different bytes"
            )
        manifest.update(status="running", pid=os.getpid())
        store.write_manifest(run_dir, manifest)
        for w in manifest["warnings"]:
            _say("warning:", "yellow", w, err)
        _log(f"run {run_id} → {run_dir}")
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[eta]}"),
            console=err,
            transient=True,
        ) as bar:
            task = bar.add_task("starting", total=None, eta="")

            def progress(what: str, done: int, total: int) -> None:
                """done and total in seconds of the run (the runner's own estimate)."""
                left = max(0, total - done)
                eta = f"{done // 60}:{done % 60:02d} elapsed, ETA {left // 60}:{left % 60:02d}"
                bar.update(task, description=what, completed=done, total=total, eta=eta)

            runner = Runner(m, run_dir, run_id, b, cat, manifest, progress, _log)
            try:
                runner.run()
            except Interrupted as e:
                _log(f"interrupted ({e}): cleaned up; measured samples kept in {run_dir}")
                _log(f"resume with: isobench run --resume {run_dir}")
                return e.exit_code
            except KeyboardInterrupt:
                return 130
    try:
        print_summary(run_dir)
    except UserError as e:  # a run that measured nothing: say so, it is no input error
        _log(e.message)
    out.print(Text(f"results: {run_dir}"))
    if with_report:
        path = html.write(
            run_dir / "report.html", html.render(manifest, store.load_samples(run_dir))
        )
        out.print(Text(f"report: {path}"))
    return 0


@cli.group()
def image():
    """The probes' container image (for clusters that pull it from a registry)."""


@image.command("push")
@click.argument("repository")
def image_push(repository):
    """Tag the probe image as REPOSITORY:<bundle hash> and push it, for k8s:image=REPOSITORY."""
    from bench.envs import docker as dk
    from bench.envs import image as img

    if not re.fullmatch(r"[a-z0-9]([a-z0-9._/:-]*[a-z0-9])?", repository) or "@" in repository:
        raise UserError(f"image push {repository}: not a repository name like registry/name")
    b = bundle.build()
    try:
        cl = dk.client()
        found = img.ensure_docker_image(cl, b, b.root.parent.parent)
    except Exception as e:  # noqa: BLE001 - no daemon: one line
        raise UserError(f"image push: {dk.UNREACHABLE} ({type(e).__name__})") from None
    target = f"{repository}:{b.hash}"
    cl.api.tag(found.id, repository, b.hash)
    try:
        for line in cl.api.push(repository, tag=b.hash, stream=True, decode=True):
            if line.get("error"):
                raise UserError(f"image push {target}: {line['error'].strip()}")
    except UserError:
        cl.api.remove_image(target)  # the tag was only for the push
        raise
    except Exception as e:  # noqa: BLE001 - the registry's or the daemon's refusal
        cl.api.remove_image(target)
        raise UserError(f"image push {target}: {str(e).splitlines()[0]}") from None
    out.print(Text(f"pushed {target}: run with --env k8s:image={repository}"))


@cli.command("clean")
@click.option("--dry-run", is_flag=True, help="list what would be removed, remove nothing")
def clean_cmd(dry_run):
    """Remove what crashed runs left behind (containers, guests, cgroups, temp files)."""
    from bench.clean import clean

    clean(dry_run, log=lambda msg: out.print(msg, markup=False, highlight=False))


# -- summary --------------------------------------------------------------------------------
@cli.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="one JSON object per row")
@click.option(
    "--baseline",
    type=str,
    help="environment label to compare against [default: the run's baseline]",
)
@click.option("--footprint", is_flag=True, help="cgroup and host-side figures instead")
def summary(run_dir, as_json, baseline, footprint):
    """Statistics per figure, with ratios to the baseline."""
    print_summary(run_dir, as_json=as_json, baseline=baseline, footprint=footprint)


SIG_LEGEND = (
    "ratio = value / baseline value, with its 95% CI (for rates, below 1 is slower); "
    "sig: yes = a tested difference (adjusted p < 0.05 and the CI excludes 1), "
    "no = tested, not significant, – = not tested (no ratio)"
)


def print_summary(run_dir: Path, *, as_json=False, baseline=None, footprint=False) -> None:
    """The summary table (or JSON rows); UserError for a run without samples or an
    unknown baseline."""
    manifest = store.read_manifest(run_dir)
    df = store.load_samples(run_dir)
    if not len(df):
        raise UserError(f"{run_dir}: no samples recorded (run status: {manifest.get('status')})")
    order = model.env_order(manifest, df)
    if baseline is not None and baseline not in order:
        raise UserError(f"--baseline {baseline}: no such environment (known: {', '.join(order)})")
    scope = analysis.FOOTPRINT if footprint else analysis.MAIN
    rows = analysis.summarize_run(df, manifest, baseline=baseline, scope=scope)
    if as_json:
        for r in rows:
            click.echo(json.dumps(r, sort_keys=True))
        return
    base = baseline or manifest.get("matrix", {}).get("baseline", "host")
    order = [base] + [e for e in order if e != base]
    _emit(summary_table(rows, base, order, out.width))
    if rows:
        _say("legend:", "dim", SIG_LEGEND, wrap=True)
    for note in sorted({r["note"] for r in rows if r["note"]}):
        _say("note:", "cyan", note, wrap=True)
    _print_flags(rows)
    for f in analysis.failures(df):
        what = f"{f['env']} / {f['workload']} ×{f['count']}: {f['reason']}"
        _say(f["status"], "red", what, wrap=True)
    if manifest.get("unreached"):
        _say(
            "precision not reached",
            "yellow",
            f"({manifest.get('stop_reason')}); 95% CI half-width per cell:",
        )
        for cell, width in manifest["unreached"].items():
            out.print(Text(f"  {cell.replace('|', ' / ')}  ±{width:.1%}"))
    for w in manifest.get("warnings", []):
        _say("warning:", "yellow", w, wrap=True)
    if footprint:
        report_commands.print_disk(manifest, out)


MIN_LABEL = 12  # the environment column's narrowest width
SUMMARY_COLUMNS = ("environment", "median [95% CI]", "n", "ratio [95% CI]", "in words", "sig")
# (column, narrowest width) in the order they fold when the terminal is too narrow
FOLDABLE = ((0, MIN_LABEL), (4, 7), (3, 13))


def summary_table(rows: list[dict], base: str, order: list[str], width: int) -> Group:
    """One section per figure (its name, unit and direction), one line per environment,
    the baseline first; ratios in words where a test says there is a difference. The
    sections are tables with the same column widths, so they read as one."""
    rank = {e: i for i, e in enumerate(order)}
    keys = {(r["workload"], r["op"], r["metric"]) for r in rows}
    figures: dict[tuple, list[dict]] = {}
    for r in sorted(rows, key=lambda r: rank.get(r["env"], len(rank))):
        figures.setdefault((r["workload"], r["op"], r["metric"]), []).append(r)
    sections = []
    for (workload, op, metric), group in sorted(figures.items()):
        scale, unit = model.time_scale([r["median"] for r in group], group[0]["unit"])
        head = Text.assemble(
            (model.short_label(workload, op, metric, keys), "bold"),
            f"  {unit}, {group[0]['better']} is better ({metric})",
        )
        sections.append((head, [_summary_cells(r, base, scale) for r in group]))
    widths = [len(c) for c in SUMMARY_COLUMNS]
    for _, cells in sections:
        for row in cells:
            widths = [max(w, c.cell_len) for w, c in zip(widths, row, strict=True)]
    over = sum(widths) + 2 * (len(widths) - 1) - width
    for i, floor in FOLDABLE:  # fold a long label, then the words, then the ratio: never cut
        cut = min(max(over, 0), max(0, widths[i] - floor))
        widths[i] -= cut
        over -= cut

    def table(header: bool) -> Table:
        t = Table(box=None, pad_edge=False, show_header=header)
        for name, w in zip(SUMMARY_COLUMNS, widths, strict=True):
            right = name in ("median [95% CI]", "n", "ratio [95% CI]")
            folds = name in ("environment", "ratio [95% CI]", "in words")
            t.add_column(
                name,
                width=w,
                justify="right" if right else "left",
                overflow="fold",
                no_wrap=not folds,
            )
        return t

    parts: list = [table(header=True)]
    for head, cells in sections:
        t = table(header=False)
        for row in cells:
            t.add_row(*row)
        parts += [head, t]
    return Group(*parts)


def _summary_cells(r: dict, base: str, scale: float = 1.0) -> tuple[Text, ...]:
    """One environment's line; figures times `scale` (the section's unit)."""
    num = lambda x: model.fmt_num(None if x is None else x * scale)  # noqa: E731
    label = "  " + r["env"] + (" (emulated)" if r["emulated"] else "")
    if r["env"] == base:
        ratio, words, sig = "baseline", "", ""
    elif r["flags"]:
        ratio, words, sig = "flagged", "", "–"
    elif r["ratio"] is None:
        ratio, words, sig = "–", "", "–"
    else:
        ratio = model.fmt_ratio(r["ratio"])
        if r["ratio_ci_low"] is not None:
            ratio += f" [{model.fmt_num(r['ratio_ci_low'])}, {model.fmt_num(r['ratio_ci_high'])}]"
        words = analysis.verdict(r) if r["significant"] else ""
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
    by_flag: dict[str, list[str]] = {}
    for r in rows:
        for flag in r.get("flags") or []:
            by_flag.setdefault(flag, []).append(f"{r['env']} {r['workload']} {r['op']}")
    for flag, where in sorted(by_flag.items()):
        _say("flagged:", "red", f"{flag} ({', '.join(where)})", wrap=True)


for _command in (*report_commands.COMMANDS, validate, rootfs):
    cli.add_command(_command)

if __name__ == "__main__":
    main()
