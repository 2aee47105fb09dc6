"""The `isobench` command. Every user error is one line on stderr and exit status 2."""

from __future__ import annotations

import json
import os
import secrets
import sys
import time
from pathlib import Path

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

import bench
from bench import analysis, bundle, catalog, harness, provenance, store
from bench.envs import REGISTRY
from bench.envs.base import COMMON_OPTIONS
from bench.lock import LockError, RunLock
from bench.matrix import QUICK, Matrix, MatrixError, load_toml, parse_env_spec
from bench.metrics import noise
from bench.report import commands as report_commands
from bench.report import html
from bench.runner import Interrupted, Runner, new_manifest
from bench.validate import validate

out = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 200)

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
def doctor_data() -> dict:
    kinds = {}
    for name, cls in REGISTRY.items():
        av = cls.probe()
        kinds[name] = {
            "available": av.ok,
            "reason": av.reason,
            "versions": av.versions,
            "summary": cls.summary,
            "details": [
                {"name": n, "available": a.ok, "reason": a.reason, "versions": a.versions}
                for n, a in cls.details()
            ],
        }
    snap = noise.snapshot()
    return {"host": provenance.host_facts(), "environments": kinds, "noise": snap,
            "warnings": noise.warnings(snap)}  # fmt: skip


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def doctor(as_json):
    """What this host can run, and what would make its numbers noisy."""
    data = doctor_data()
    if as_json:
        click.echo(json.dumps(data, indent=2, default=str))
        return
    h = data["host"]
    _say("host", "bold", f"{h['hostname']}: {h['os']}, kernel {h['kernel']}, "
         f"{h['cpu_count']}× {h['cpu_model']}, {h['memory_gib']} GiB, "
         f"virtualization {h['virtualization']}, cgroup {h['cgroup_layout']}")  # fmt: skip
    t = Table("environment", "available", "reason / versions", box=None, pad_edge=False)
    for name, k in data["environments"].items():
        t.add_row(Text(name), _yes(k["available"]), Text(k["reason"] or _versions(k["versions"])))
        for d in k["details"]:
            why = Text(d["reason"] or _versions(d["versions"]))
            t.add_row(Text(f"  {d['name']}"), _yes(d["available"]), why)
    out.print(t)
    for w in data["warnings"]:
        _say("warning:", "yellow", w)
    if not data["warnings"]:
        out.print("no noise warnings")


def _say(head: str, style: str, rest: str, console: Console = out) -> None:
    """One line whose text is never read as markup (labels and reasons are user data)."""
    console.print(Text.assemble((head, style), " ", str(rest)), highlight=False)


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
    out.print(t)
    t = Table("environment", "options", "what it is", box=None)
    for name, cls in REGISTRY.items():
        opts = {**COMMON_OPTIONS, **cls.options}
        text = "; ".join(
            f"{k}" + (f"={'|'.join(o.choices)}" if o.choices else "") for k, o in opts.items()
        )
        t.add_row(*map(Text, (name, text, cls.summary)))
    out.print(t)


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
    """--all: every kind in its default configuration, plus the attribution variants."""
    specs = list(REGISTRY)
    specs.insert(specs.index("docker") + 1, "docker:seccomp=unconfined")
    specs.insert(specs.index("docker") + 2, "docker:runtime=runsc")
    return specs


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(2)


@cli.command()
@click.argument("matrix_file", required=False, type=click.Path(path_type=Path))
@click.option("--env", "envs", multiple=True, metavar="SPEC", help="KIND or KIND:key=value,...")
@click.option("--all", "all_envs", is_flag=True, help="every environment kind (unavailable "
              "ones are recorded with their reason)")  # fmt: skip
@click.option("--workload", "workloads", multiple=True, metavar="NAME")
@click.option("--quick", is_flag=True, help="few rounds, small sizes: a first look in minutes")
@click.option("--results", type=click.Path(path_type=Path), default=Path("results"),
              show_default=True)  # fmt: skip
@click.option("--seed", type=int)
@click.option("--rounds", type=int, help="rounds at least")
@click.option("--max-rounds", type=int, help="adaptive stopping adds rounds up to this")
@click.option("--warmup", type=int)
@click.option("--budget", type=float, help="seconds for measured rounds")
@click.option("--timeout", type=float, help="seconds per launch before it is killed")
@click.option("--precision", type=str, help="target CI half-width, e.g. 2%% or 0.02")
@click.option("--baseline", type=str)
@click.option("--resume", type=click.Path(path_type=Path), help="complete an interrupted run")
@click.option("--report", "with_report", is_flag=True, help="write RUN_DIR/report.html at the end")
def run(matrix_file, envs, all_envs, workloads, quick, results, seed, resume, with_report,
        **settings):  # fmt: skip
    """Run a benchmark matrix and write results/<run-id>/."""
    if resume:
        return _resume(resume, with_report)
    cat = catalog.load()
    file_envs, file_workloads, file_settings = (
        load_toml(matrix_file) if matrix_file else ([], [], {})
    )
    specs = [parse_env_spec(s) for s in (default_envs() if all_envs else envs)]
    chosen = {**(QUICK if quick else {}), **file_settings}
    if settings.get("precision") is not None:
        settings["precision"] = _precision(settings["precision"])
    chosen.update({k: v for k, v in settings.items() if v is not None})
    if seed is not None:
        chosen["seed"] = seed
    elif "seed" not in chosen:
        chosen["seed"] = secrets.randbelow(2**31)
    m = Matrix(
        envs=file_envs + specs or [parse_env_spec("host"), parse_env_spec("namespaces")],
        workloads=list(workloads) or file_workloads or list(cat),
        quick=quick,
        **chosen,
    )
    m.check(cat, str(matrix_file) if matrix_file else "command line")
    run_id = new_run_id()
    run_dir = results / run_id
    return _execute(m, run_dir, run_id, cat, new=True, with_report=with_report)


def _precision(text: str) -> float:
    try:
        value = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        raise MatrixError(f"--precision {text}: expected a percentage like 2% or 0.02") from None
    if value <= 0:
        raise MatrixError(f"--precision {text}: must be positive")
    return value


def _resume(run_dir: Path, with_report: bool) -> int:
    manifest = store.read_manifest(run_dir)
    if manifest.get("status") == "complete":
        raise MatrixError(f"{run_dir}: this run is complete; nothing to resume")
    m = Matrix.from_dict(manifest["matrix"])
    return _execute(
        m, run_dir, manifest["run_id"], catalog.load(), new=False, manifest=manifest,
        with_report=with_report,
    )  # fmt: skip


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
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("ETA"), TimeRemainingColumn(), console=err, transient=True,
        ) as bar:  # fmt: skip
            task = bar.add_task("starting", total=None)

            def progress(what: str, done: int, total: int) -> None:
                bar.update(task, description=what, completed=done, total=total)

            runner = Runner(m, run_dir, run_id, b, cat, manifest, progress, _log)
            try:
                runner.run()
            except Interrupted as e:
                _log(f"interrupted ({e}): cleaned up; measured samples kept in {run_dir}")
                _log(f"resume with: isobench run --resume {run_dir}")
                return e.exit_code
            except KeyboardInterrupt:
                return 130
    print_summary(run_dir)
    out.print(Text(f"results: {run_dir}"))
    if with_report:
        path = html.write(
            run_dir / "report.html", html.render(manifest, store.load_samples(run_dir))
        )
        out.print(Text(f"report: {path}"))
    return 0


@cli.command("clean")
@click.option("--dry-run", is_flag=True, help="list what would be removed, remove nothing")
def clean_cmd(dry_run):
    """Remove what crashed runs left behind (containers, guests, cgroups, temp files)."""
    from bench.clean import clean

    clean(dry_run, log=lambda msg: out.print(msg, markup=False, highlight=False))


# -- summary --------------------------------------------------------------------------------
def _fmt(x, digits=4) -> str:
    if x is None:
        return "–"
    return f"{x:.{digits}g}"


@cli.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="one JSON object per row")
@click.option("--baseline", type=str, help="environment label to compare against")
@click.option("--footprint", is_flag=True, help="cgroup and host-side figures instead")
def summary(run_dir, as_json, baseline, footprint):
    """Statistics per cell, with ratios to the baseline."""
    print_summary(run_dir, as_json=as_json, baseline=baseline, footprint=footprint)


def print_summary(run_dir: Path, *, as_json=False, baseline=None, footprint=False) -> None:
    manifest = store.read_manifest(run_dir)
    df = store.load_samples(run_dir)
    scope = analysis.FOOTPRINT if footprint else analysis.MAIN
    rows = analysis.summarize_run(df, manifest, baseline=baseline, scope=scope)
    if as_json:
        for r in rows:
            click.echo(json.dumps(r, sort_keys=True))
        return
    t = Table("env", "workload", "op", "metric", "median [95% CI]", "n", "× baseline [95% CI]",
              "sig", box=None)  # fmt: skip
    for r in rows:
        ci = f" [{_fmt(r['ci_low'])}, {_fmt(r['ci_high'])}]" if r["ci_low"] is not None else ""
        ratio = ""
        if r["ratio"] is not None:
            ratio = f"{_fmt(r['ratio'], 3)}"
            if r["ratio_ci_low"] is not None:
                ratio += f" [{_fmt(r['ratio_ci_low'], 3)}, {_fmt(r['ratio_ci_high'], 3)}]"
        label = r["env"] + (" (emulated)" if r["emulated"] else "")
        cells = (label, r["workload"], r["op"], r["metric"],
                 f"{_fmt(r['median'])}{ci} {r['unit']}", str(r["n"]), ratio,
                 "yes" if r["significant"] else "")  # fmt: skip
        t.add_row(*map(Text, cells))
    out.print(t)
    for note in sorted({r["note"] for r in rows if r["note"]}):
        _say("note:", "cyan", note)
    for f in analysis.failures(df):
        _say(f["status"], "red", f"{f['env']} / {f['workload']} ×{f['count']}: {f['reason']}")
    if manifest.get("unreached"):
        cells = ", ".join(f"{c} (±{w:.1%})" for c, w in manifest["unreached"].items())
        _say("precision not reached", "yellow", f"({manifest.get('stop_reason')}): {cells}")
    for w in manifest.get("warnings", []):
        _say("warning:", "yellow", w)


for _command in (*report_commands.COMMANDS, validate):
    cli.add_command(_command)

if __name__ == "__main__":
    main()
