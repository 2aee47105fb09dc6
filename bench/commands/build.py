"""`isobench build`: compile the probes into a content-hashed bundle."""

from __future__ import annotations

import click


@click.command("build")
def build_cmd():
    """Compile the probes into a content-hashed bundle (done by `run` too)."""
    from rich.text import Text

    from bench import bundle
    from bench.commands.output import out

    b = bundle.build()
    out.print(Text(f"bundle {b.hash} at {b.root}"))
    for name, h in b.probe_hashes.items():
        out.print(Text(f"  {name:10} sha256 {h}"))
    out.print(f"  busybox    {'included' if b.busybox else 'not found (install busybox-static)'}")
