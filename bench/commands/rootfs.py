"""`isobench rootfs`: build, import, list, show and remove root filesystems (bench/rootfs.py).

Every user error is one line on stderr and exit status 2 (a click.ClickException that
`bench.commands.main` prints); Ctrl-C or SIGTERM leaves no partial tree, mount or
container. The rootfs modules are imported when a command runs.
"""

from __future__ import annotations

import json
import sys

import click


class RootfsUserError(click.ClickException):
    exit_code = 2


def _guarded(fn):
    """Run fn() with SIGINT/SIGTERM raising Interrupted (cleanups shielded); RootfsError
    becomes one line, exit 2."""
    from bench import interrupt
    from bench import rootfs as rf

    old = interrupt.install()
    try:
        return fn()
    except rf.RootfsError as e:
        raise RootfsUserError(str(e)) from None
    except interrupt.Interrupted as e:
        click.echo(f"isobench: interrupted ({e}); nothing was kept", err=True)
        sys.exit(e.exit_code)
    finally:
        interrupt.restore(old)


def _log(msg: str) -> None:
    click.echo(f"rootfs: {msg}", err=True)


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


@click.group("rootfs")
def rootfs():
    """Root filesystems your own workloads run from, the same bytes in every environment."""


@rootfs.command("build")
@click.argument("name")
@click.option(
    "--package",
    "packages",
    multiple=True,
    metavar="DEB",
    help="a Debian package to install (repeatable)",
)
@click.option(
    "--pip",
    "pip",
    multiple=True,
    metavar="REQ",
    help="a pip requirement installed inside (needs PyPI reachable; repeatable)",
)
@click.option(
    "--copy",
    "copies",
    multiple=True,
    metavar="SRC:DEST",
    help="a host file or directory copied to DEST inside (repeatable)",
)
def build_cmd(name, packages, pip, copies):
    """Build NAME: a Debian tree (mmdebstrap, the host's release and apt sources)."""
    from bench import rootfs as rf

    def go():
        parsed = [rf.parse_copy(c) for c in copies]
        return rf.build(name, list(packages), list(pip), parsed, log=_log)

    r = _guarded(go)
    click.echo(
        f"{r.name} {r.key} {_mib(r.record['size']['allocated'])} "
        f"{len(r.record['packages'])} packages {r.tree}"
    )


@rootfs.command("import")
@click.argument("image")
@click.option("--name", help="the rootfs name (default: from the image reference)")
@click.option(
    "--engine",
    type=click.Choice(["docker", "podman"]),
    default="docker",
    show_default=True,
    help="where the image is",
)
def import_cmd(image, name, engine):
    """Import IMAGE's filesystem (create + export) as a rootfs, keyed by its content."""
    from bench import rootfs as rf

    r = _guarded(lambda: rf.import_image(image, name, engine, log=_log))
    click.echo(
        f"{r.name} {r.key} {_mib(r.record['size']['allocated'])} "
        f"{len(r.record['packages'])} packages {r.tree}"
    )


@rootfs.command("ls")
@click.option("--json", "as_json", is_flag=True, help="one JSON object per rootfs")
def ls_cmd(as_json):
    """List the named root filesystems."""
    from bench import rootfs as rf

    for r in rf.names():
        if as_json:
            click.echo(
                json.dumps(
                    {**r.describe(), "packages": len(r.record["packages"]), "path": str(r.tree)}
                )
            )
        else:
            click.echo(
                f"{r.name:20} {r.key} {r.record['source']:13} "
                f"{_mib(r.record['size']['allocated']):>11} "
                f"{len(r.record['packages']):4} packages  {r.record['made']}"
            )


@rootfs.command("show")
@click.argument("name")
def show_cmd(name):
    """Print NAME's record (recipe or image, packages, size, hashes) as JSON."""
    from bench import rootfs as rf

    r = _guarded(lambda: rf.load(name))
    click.echo(json.dumps({"name": r.name, "path": str(r.tree), **r.record}, indent=1))


@rootfs.command("rm")
@click.argument("name")
def rm_cmd(name):
    """Remove NAME (its tree too, unless another name shares it)."""
    from bench import rootfs as rf

    gone = _guarded(lambda: rf.remove(name))
    click.echo(f"removed {name}" + ("" if gone else " (its tree is shared with another name)"))
