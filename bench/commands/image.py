"""`isobench image`: the probes' container image, for clusters that pull it from a
registry."""

from __future__ import annotations

import re

import click


@click.group()
def image():
    """The probes' container image (for clusters that pull it from a registry)."""


@image.command("push")
@click.argument("repository")
def image_push(repository):
    """Tag the probe image as REPOSITORY:<bundle hash> and push it, for k8s:image=REPOSITORY."""
    from rich.text import Text

    from bench import bundle
    from bench.commands.output import UserError, out
    from bench.envs import docker as dk
    from bench.envs import image as img

    if not re.fullmatch(r"[a-z0-9]([a-z0-9._/:-]*[a-z0-9])?", repository) or "@" in repository:
        raise UserError(f"image push {repository}: not a repository name like registry/name")
    b = bundle.build()
    try:
        cl = dk.client()
        found = img.ensure_docker_image(cl, b, b.root.parent.parent)
    except Exception as e:  # noqa: BLE001 - no daemon: one line
        raise UserError(f"image push: {dk.UNREACHABLE} ({type(e).__name__})") from None
    target = f"{repository}:{b.hash}"
    cl.api.tag(found.id, repository, b.hash)
    try:
        for line in cl.api.push(repository, tag=b.hash, stream=True, decode=True):
            if line.get("error"):
                raise UserError(f"image push {target}: {line['error'].strip()}")
    except UserError:
        cl.api.remove_image(target)  # the tag was only for the push
        raise
    except Exception as e:  # noqa: BLE001 - the registry's or the daemon's refusal
        cl.api.remove_image(target)
        raise UserError(f"image push {target}: {str(e).splitlines()[0]}") from None
    out.print(Text(f"pushed {target}: run with --env k8s:image={repository}"))
