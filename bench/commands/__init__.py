"""The `isobench` commands: one module per command or group, assembled by `cli` from
COMMANDS; `main` is the entry point (`isobench`, `python -m bench.cli`).

A command module imports click at the top and what its command uses (rich, the runner
and pandas, the statistics and scipy, the environments) inside the command, so every
command starts without paying for the others: `isobench --version`, `--help`, `list`
and `clean --dry-run` answer in a fraction of a second.

Every user error is one line on stderr and exit status 2. Ctrl-C is one line and exit
status 130 at any moment, the start-up's imports included; SIGTERM likewise, 143."""

from __future__ import annotations

import sys

import click

import bench
from bench import interrupt
from bench.commands import (
    build,
    clean,
    doctor,
    fleet,
    history,
    image,
    listing,
    report,
    rootfs,
    run,
    setup,
    summary,
    validate,
)

COMMANDS = (
    doctor.doctor,
    listing.list_cmd,
    build.build_cmd,
    run.run,
    summary.summary,
    *report.COMMANDS,
    history.history,
    validate.validate,
    clean.clean_cmd,
    image.image,
    rootfs.rootfs,
    fleet.fleet,
    setup.setup_cmd,
)

# (module, class) of the errors that are the user's: one line, exit status 2
USER_ERRORS = (
    ("bench.matrix", "MatrixError"),
    ("bench.store", "StoreError"),
    ("bench.bundle", "BuildError"),
    ("bench.lock", "LockError"),
)
# the run could not save what it measured: one line, exit status 1
FAILURES = (("bench.store", "StoreWriteError"),)
CTRL_C = "interrupted (SIGINT)"  # as a SIGTERM's line says (SIGTERM)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(bench.__version__, prog_name="isobench")
def cli():
    """isobench: the cost of isolation, measured on this host."""


for _command in COMMANDS:
    cli.add_command(_command)


def _one_of(e: BaseException, errors) -> bool:
    """Whether e is one of these (module, class) errors. A module that was never
    imported cannot have raised its error, so none is imported to find out."""
    return any(
        isinstance(e, getattr(sys.modules[module], name))
        for module, name in errors
        if module in sys.modules
    )


def main() -> None:
    """Run the command line; exit with its status (see the module's docstring)."""
    interrupt.terminate_raises()
    try:
        rv = cli.main(standalone_mode=False)
    except click.exceptions.Abort as e:  # click's Ctrl-C (KeyboardInterrupt), or EOF
        ctrl_c = isinstance(e.__cause__, KeyboardInterrupt)
        click.echo(f"isobench: {CTRL_C if ctrl_c else 'aborted'}", err=True)
        sys.exit(130)
    except KeyboardInterrupt:  # outside a command (while click closes its context)
        click.echo(f"isobench: {CTRL_C}", err=True)
        sys.exit(130)
    except interrupt.Interrupted as e:  # SIGTERM, or a signal a command did not handle
        click.echo(f"isobench: interrupted ({e})", err=True)
        sys.exit(e.exit_code)
    except click.ClickException as e:
        click.echo(f"isobench: error: {e.format_message()}", err=True)
        sys.exit(2)
    except Exception as e:
        if _one_of(e, USER_ERRORS):
            click.echo(f"isobench: error: {e}", err=True)
            sys.exit(2)
        if _one_of(e, FAILURES):
            click.echo(f"isobench: error: {e.strerror}", err=True)
            sys.exit(1)
        raise
    sys.exit(rv or 0)
