"""`isobench validate`: the command; the runs and checks are bench/validate.py, imported
when the command runs (it imports the runner and pandas)."""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import click

from bench.commands.options import HelpDefault


def quota_kinds_default(name: str = "quota_kinds") -> str:
    """--quota-kinds' default (for its value and for --help): every kind validate knows
    a quota's answer under."""
    from bench.validate import QUOTA_KINDS

    return ",".join(QUOTA_KINDS)


@click.command()
@click.option(
    "--results",
    type=click.Path(path_type=Path),
    default=None,
    help="keep the validation runs here (default: a temp dir, removed)",
)
@click.option("--keep", is_flag=True, help="keep the default temp dir and say where")
@click.option(
    "--budget",
    type=float,
    default=600.0,
    show_default=True,
    help="seconds for the measured runs of all checks together (the accuracy check's ~15 s aside)",
)
@click.option(
    "--quota-kinds",
    cls=HelpDefault,
    shown=quota_kinds_default,
    default=quota_kinds_default,
    help="environment kinds whose CPU quota known answers are checked (comma-separated)",
)
@click.option(
    "--neighbour",
    "neighbours",
    multiple=True,
    metavar="SPEC",
    help="an environment held idle beside the idle-neighbour A/A (repeatable; default: "
    "every held kind of `run --all` available here; `none`: that check is not run)",
)
@click.option("--seed", type=int, default=1, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="one JSON object instead of lines")
@click.pass_context
def validate(ctx, results, keep, budget, quota_kinds, neighbours, seed, as_json):
    """Check this host before trusting its numbers: A/A, known answers, vDSO control,
    idle neighbours (an A/A beside held idle instances and without them), harness cost
    and sampler perturbation, minimum detectable effect, the accuracy of short bursts
    against perf (not run where perf is not installed)."""
    from bench.lock import RunLock
    from bench.metrics import noise
    from bench.store import json_safe
    from bench.validate import QUOTA_KINDS, run_all

    started = time.monotonic()
    kinds = [k.strip() for k in quota_kinds.split(",") if k.strip()]
    if unknown := [k for k in kinds if k not in QUOTA_KINDS]:
        raise click.BadParameter(
            f"{', '.join(unknown)}: not one of {', '.join(QUOTA_KINDS)}", param_hint="--quota-kinds"
        )
    specs = None if not neighbours else [n for n in neighbours if n != "none"]
    for spec in specs or []:
        _check_spec(spec)
    snap = noise.snapshot()
    warns = noise.warnings(snap)
    if not as_json:
        for w in warns:
            click.echo(f"warning: {w}")
        if not warns:
            click.echo("no noise warnings")
    temp = results is None
    where = Path(tempfile.mkdtemp(prefix="isobench-validate-")) if temp else results
    log = (lambda s: None) if as_json else (lambda s: click.echo(f"  {s}", err=True))
    try:
        with RunLock(where.resolve()):  # validation runs measure too: one at a time
            checks, info = run_all(where, budget, seed, log, kinds, specs)
    finally:
        if temp and not keep:
            shutil.rmtree(where, ignore_errors=True)
    failed = [c.name for c in checks if c.failed]
    ran = [c for c in checks if c.ran and c.judged]
    if as_json:
        click.echo(
            json.dumps(
                json_safe(
                    {
                        "noise": snap,
                        "warnings": warns,
                        "passed": not failed,
                        "checks": [asdict(c) for c in checks],
                        **info,
                        "seconds": time.monotonic() - started,
                    }
                ),
                default=str,
                allow_nan=False,
            )
        )
    else:
        for c in checks:
            click.echo(c.text())
        for kind, reason in info["quota_skipped"].items():
            click.echo(f"NOT CHECKED known answers under {kind}: {reason}")
        click.echo(
            f"{len(ran) - len(failed)}/{len(ran)} checks passed" + _aside(checks) + f" in "
            f"{time.monotonic() - started:.0f} s; load average {_load(snap)}"
        )
        if not temp or keep:
            click.echo(f"runs kept in {where}")
    ctx.exit(1 if failed else 0)


def _aside(checks) -> str:
    """' (1 not run, 1 reported and not judged)', or '' when every check was judged."""
    parts = [
        f"{n} {what}"
        for n, what in (
            (sum(not c.ran for c in checks), "not run"),
            (sum(c.ran and not c.judged for c in checks), "reported and not judged"),
        )
        if n
    ]
    return f" ({', '.join(parts)})" if parts else ""


def _load(snap: dict) -> str:
    la = snap.get("loadavg")
    return " ".join(f"{x:.2f}" for x in la) if la else "unknown"


def _check_spec(spec: str) -> None:
    """A --neighbour that is no environment spec: a usage error, one line."""
    from bench.envs import REGISTRY
    from bench.envs.base import OptionError
    from bench.matrix import MatrixError, parse_env_spec

    try:
        e = parse_env_spec(spec)
        REGISTRY[e.kind].parse(e.options)
    except (MatrixError, OptionError, KeyError, ValueError) as ex:
        raise click.BadParameter(f"{spec}: {ex}", param_hint="--neighbour") from None
