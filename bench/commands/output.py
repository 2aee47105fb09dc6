"""What the commands print with: the consoles (as wide as the terminal; piped, as wide
as COLUMNS says, else PIPED_WIDTH), lines whose text is never read as markup, and
UserError (one line, exit status 2).

rich costs about 50 ms at import: a command imports this module inside its function, so
`isobench --version` and `--help` do not pay it."""

from __future__ import annotations

import os
import sys

import click
from rich.console import Console
from rich.text import Text

PIPED_WIDTH = 100  # columns when the output is not a terminal and COLUMNS is unset


class UserError(click.ClickException):
    exit_code = 2


def console(stream) -> Console:
    """A console as wide as the terminal; piped, as wide as COLUMNS says, else 100."""
    tty_or_columns = stream.isatty() or os.environ.get("COLUMNS", "").isdigit()
    return Console(
        stderr=stream is sys.stderr, soft_wrap=True, width=None if tty_or_columns else PIPED_WIDTH
    )


out = console(sys.stdout)
err = console(sys.stderr)


def emit(renderable, to: Console = out, **kwargs) -> None:
    """Print; piped, without the spaces rich pads lines with up to the width."""
    if to.is_terminal:
        to.print(renderable, **kwargs)
        return
    with to.capture() as cap:
        to.print(renderable, **kwargs)
    click.echo("\n".join(line.rstrip() for line in cap.get().splitlines()), err=to.stderr)


def say(head: str, style: str, rest: str, to: Console = out, wrap: bool = False) -> None:
    """One line whose text is never read as markup (labels and reasons are user data);
    with wrap, folded at the console's width."""
    emit(Text.assemble((head, style), " ", str(rest)), to, highlight=False, soft_wrap=not wrap)


def log(msg: str) -> None:
    """A progress line on standard error, as written."""
    err.print(msg, markup=False, highlight=False)
