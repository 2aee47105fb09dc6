"""`isobench setup`: prepare this host for isobench (as root, Debian/Ubuntu): the
packages, the container engines and their daemons, libvirt/QEMU and a guest kernel.

The scripts are package data (bench/hostprep/), the one copy that .ci/setup runs too, so
a host that has only the wheel (a fleet host: `isobench fleet run --prepare`) is
prepared exactly as CI prepares its machine."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import click

HOSTPREP = Path(__file__).resolve().parents[1] / "hostprep"
STEPS = ("packages", "containers", "libvirt")


@click.command("setup")
@click.option(
    "--only",
    type=click.Choice(STEPS),
    multiple=True,
    help="run only these steps (repeatable)  [default: all, in this order]",
)
def setup_cmd(only: tuple[str, ...]) -> None:
    """Prepare this host (root, Debian/Ubuntu): packages, container engines, libvirt."""
    if os.geteuid() != 0:
        raise click.ClickException("setup installs packages and starts daemons: run it as root")
    if not shutil.which("apt-get"):
        raise click.ClickException("setup knows Debian/Ubuntu hosts only (no apt-get here)")
    for step in [s for s in STEPS if not only or s in only]:
        res = subprocess.run(["bash", str(HOSTPREP / f"{step}.sh")], check=False)
        if res.returncode != 0:
            click.echo(f"isobench: setup: step {step} failed (exit {res.returncode})", err=True)
            raise SystemExit(1)
    click.echo("isobench: setup: this host is prepared", err=True)
