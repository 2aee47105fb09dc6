"""`isobench run`: run a benchmark matrix and write results/<run-id>/.

The run's modules (the runner and pandas, the statistics and scipy) are imported when
the command runs, so its --help and the other commands start at once. The defaults
--help shows are the matrix's, read when --help is shown (matrix_default)."""

from __future__ import annotations

import os
import secrets
import time
from pathlib import Path

import click

from bench.commands.options import HelpDefault


def default_envs() -> list[str]:
    """--all: every kind in its default configuration, plus the attribution variants
    each kind declares (docker's seccomp=unconfined and runtime=runsc)."""
    from bench.envs import REGISTRY

    return [spec for cls in REGISTRY.values() for spec in cls.variants()]


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(2)


def matrix_default(name: str, fmt: str = "{}") -> str:
    """A run option's default as --help shows it (the matrix's, then --quick's)."""
    from bench.matrix import QUICK, Matrix

    text = fmt.format(getattr(Matrix, name))
    return text + (f"; --quick: {fmt.format(QUICK[name])}" if name in QUICK else "")


def matrix_option(flag: str, type, help: str, fmt: str = "{}"):
    """An option for a matrix setting; --help shows the matrix's default (formatted by fmt)."""
    return click.option(
        flag,
        type=type,
        help=help,
        cls=HelpDefault,
        shown=lambda name: matrix_default(name, fmt),
    )


@click.command()
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
@matrix_option("--rounds", int, "rounds at least")
@matrix_option("--max-rounds", int, "adaptive stopping adds rounds up to this")
@matrix_option("--warmup", int, "uncounted launches per environment before the first round")
@matrix_option(
    "--budget",
    float,
    "the whole run's wall clock in seconds, preparation included (with --quick and only "
    "workloads outside the main job, density or net, the quick default does not cut their "
    "minimum rounds)",
    "{:g}",
)
@matrix_option("--timeout", float, "seconds per launch before it is killed", "{:g}")
@matrix_option(
    "--precision",
    str,
    "target 95%-CI half-width relative to the median, in (0, 50%], e.g. 2% or 0.02",
    "{:.0%}",
)
@matrix_option("--baseline", str, "environment label the ratios are against")
@click.option(
    "--busy-cpus/--no-busy-cpus",
    default=None,
    help="keep CPUs out of idle with idle-class spinners while measuring: a CPU "
    "quota then reads 1/q on a VM whose halted vCPUs come back slower, but a "
    "spinner on a sibling hyperthread slows CPU-bound probes (here null +30%) "
    "[default: off]",
)
@matrix_option(
    "--memory-reserve",
    float,
    "density: stop the ramp before the host would have less than this share of its "
    "memory available (0 to below 1)",
    "{:.0%}",
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
    from bench import catalog
    from bench.matrix import QUICK, Matrix, load_toml, parse_env_spec

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
    from bench.matrix import MatrixError

    try:
        value = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        raise MatrixError(f"--precision {text}: expected a percentage like 2% or 0.02") from None
    return _check_precision(value, f"--precision {text}")


def _check_precision(value: float, where: str) -> float:
    from bench.matrix import MatrixError

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
    from bench.envs import REGISTRY
    from bench.matrix import MatrixError

    for s in specs:
        why = REGISTRY[s.kind].refusal(s.options)
        if why:
            raise MatrixError(f"{s.label}: {why}")


def _resume(run_dir: Path, with_report: bool) -> int:
    from bench import catalog, store
    from bench.matrix import Matrix, MatrixError

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
    from bench import harness
    from bench.commands.output import err
    from bench.envs import REGISTRY

    if not REGISTRY["host"].probe().ok:
        return {"error": "not measured: " + REGISTRY["host"].probe().reason}
    err.print("measuring the harness's own cost …", highlight=False)
    try:
        return harness.measure(b, n=15)
    except Exception as e:  # a measurement of ourselves must not stop the run
        return {"error": f"{type(e).__name__}: {e}"}


def _execute(m, run_dir, run_id, cat, *, new, manifest=None, with_report=False) -> int:
    from rich.progress import BarColumn, Progress, TextColumn
    from rich.text import Text

    from bench import bundle, store
    from bench.commands.output import UserError, err, log, out, say
    from bench.commands.summary import print_summary
    from bench.lock import RunLock
    from bench.matrix import MatrixError, with_catalog
    from bench.report import html
    from bench.runner import Interrupted, Runner, new_manifest

    cat = with_catalog(cat, m.user_workloads)  # the matrix's own workloads too
    with RunLock(run_dir.resolve()):
        b = bundle.build()
        if new:
            run_dir.mkdir(parents=True, exist_ok=False)
            try:
                manifest = new_manifest(run_id, m, b, cat)
                manifest["harness"] = _harness_cost(b)
            except BaseException:  # Ctrl-C while preparing: no run to resume, no directory
                run_dir.rmdir()
                raise
        elif manifest["bundle"]["hash"] != b.hash:
            raise MatrixError(
                f"{run_dir}: the probes changed since this run (bundle {manifest['bundle']['hash']}"
                f", now {b.hash}): resuming would mix different bytes"
            )
        manifest.update(status="running", pid=os.getpid())
        store.write_manifest(run_dir, manifest)
        for w in manifest["warnings"]:
            say("warning:", "yellow", w, err)
        log(f"run {run_id} → {run_dir}")
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

            runner = Runner(m, run_dir, run_id, b, cat, manifest, progress, log)
            try:
                runner.run()
            except Interrupted as e:
                log(f"interrupted ({e}): cleaned up; measured samples kept in {run_dir}")
                log(f"resume with: isobench run --resume {run_dir}")
                return e.exit_code
    try:
        print_summary(run_dir)
    except UserError as e:  # a run that measured nothing: say so, it is no input error
        log(e.message)
    out.print(Text(f"results: {run_dir}"))
    if with_report:
        path = html.write(run_dir / "report.html", html.render_run(run_dir))
        out.print(Text(f"report: {path}"))
    return 0
