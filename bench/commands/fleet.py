"""`isobench fleet run INVENTORY [MATRIX] [run's flags] [--limit P] [--forks N]
[--prepare]`: the same matrix on every host of an Ansible inventory (bench/fleet/).

The run flags are `isobench run`'s own options, checked here and passed on as given;
--results is where results/fleet-<id>/ is made. Without ansible-core (the extra
`isobench[fleet]`) the group says in one line what to install and exits 2."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from click.core import ParameterSource

from bench.commands import run as run_mod

NOT_PASSED = ("matrix_file", "results", "resume")  # the fleet handles these itself


def _run_options() -> list[click.Option]:
    return [p for p in run_mod.run.params if p.name not in NOT_PASSED]


def run_args(ctx: click.Context) -> list[str]:
    """The run options given on the command line, as `isobench run` arguments."""
    args: list[str] = []
    for p in _run_options():
        if ctx.get_parameter_source(p.name) is not ParameterSource.COMMANDLINE:
            continue
        value = ctx.params[p.name]
        if p.is_flag and p.secondary_opts:
            args.append(p.opts[0] if value else p.secondary_opts[0])
        elif p.is_flag:
            args += [p.opts[0]] if value else []
        elif p.multiple:
            for v in value:
                args += [p.opts[0], str(v)]
        else:
            args += [p.opts[0], str(value)]
    return args


def _need_ansible(ctx: click.Context) -> None:
    from bench import fleet

    if not fleet.available():
        click.echo(f"isobench: {fleet.INSTALL_HINT}", err=True)
        ctx.exit(2)


class FleetGroup(click.Group):
    """Checks that ansible-core is there before anything but `isobench fleet --help`
    (a subcommand's --help included)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if not set(args[:1]) & set(ctx.help_option_names):
            _need_ansible(ctx)
        return super().parse_args(ctx, args)


@click.group("fleet", cls=FleetGroup)
def fleet() -> None:
    """The same matrix on many hosts through Ansible (needs isobench[fleet])."""


def _fleet_run(ctx: click.Context, inventory, matrix_file, results, limit, forks, prepare, **_):
    from bench.commands.run import new_run_id
    from bench.fleet import fleet_run, wheelhouse
    from bench.fleet import inventory as inv_mod

    if matrix_file is not None and not matrix_file.is_file():
        raise click.UsageError(f"matrix {matrix_file}: no such file")
    opts = fleet_run.FleetOptions(
        inventory=inventory,
        matrix=matrix_file,
        run_args=run_args(ctx),
        results=results,
        limit=limit,
        forks=forks,
        prepare=prepare,
        command=["isobench", *sys.argv[1:]],
        fleet_id=new_run_id(),
    )
    try:
        code = fleet_run.execute(opts)
    except inv_mod.InventoryError as e:
        raise click.ClickException(str(e)) from None
    except wheelhouse.WheelError as e:
        click.echo(f"isobench: fleet: {e}", err=True)
        code = 1
    ctx.exit(code)


def _make_run_command() -> click.Command:
    params = [
        click.Argument(["inventory"], type=click.Path(path_type=Path)),
        click.Argument(["matrix_file"], required=False, type=click.Path(path_type=Path)),
        *_run_options(),
        click.Option(
            ["--results"],
            type=click.Path(path_type=Path),
            default=Path("results"),
            show_default=True,
            help="where results/fleet-<id>/ is made",
        ),
        click.Option(["--limit"], metavar="PATTERN", help="an Ansible host pattern (as -l)"),
        click.Option(
            ["--forks"],
            type=click.IntRange(min=1),
            default=5,
            show_default=True,
            help="hosts at once (one run at a time on each host, always)",
        ),
        click.Option(
            ["--prepare"], is_flag=True, help="run `isobench setup` on each host first (root)"
        ),
    ]
    return click.Command(
        "run",
        params=params,
        callback=click.pass_context(_fleet_run),
        help="Run a matrix with `isobench run` on every host of an Ansible INVENTORY "
        "(INI or YAML); results/fleet-<id>/ gets fleet.json and each host's run directory.",
    )


fleet.add_command(_make_run_command())
