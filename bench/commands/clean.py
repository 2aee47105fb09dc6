"""`isobench clean`: remove what crashed runs left behind (the finding is bench/clean.py)."""

from __future__ import annotations

import click


@click.command("clean")
@click.option("--dry-run", is_flag=True, help="list what would be removed, remove nothing")
def clean_cmd(dry_run):
    """Remove what crashed runs left behind (containers, guests, cgroups, temp files)."""
    from bench.clean import clean
    from bench.commands.output import out

    clean(dry_run, log=lambda msg: out.print(msg, markup=False, highlight=False))
