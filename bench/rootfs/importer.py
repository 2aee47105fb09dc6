"""`isobench rootfs import`: a docker or podman image's filesystem (`create` + `export`)
as a rootfs, keyed by the content hash of the exported tree, with the image's metadata."""

from __future__ import annotations

import json
import re
import secrets
import shutil
import subprocess
from pathlib import Path

from bench import interrupt
from bench.rootfs._common import (
    BUILD_TIMEOUT_S,
    CALL_TIMEOUT_S,
    Rootfs,
    RootfsError,
    check_name,
    inspect_tree,
    last_line,
    make_or_reuse,
    need_root,
    run,
    stop_group,
)

IMPORT_LABEL = "isobench"  # the label `isobench clean` looks for on leftover containers


def import_image(
    image: str,
    name: str | None = None,
    engine: str = "docker",
    *,
    cache: Path | None = None,
    log=lambda msg: None,
) -> Rootfs:
    """The filesystem of a docker or podman image (`create` + `export`), keyed by the
    content hash of the tree."""
    if engine not in ("docker", "podman"):
        raise RootfsError(f"--engine {engine}: docker or podman")
    if not shutil.which(engine):
        raise RootfsError(f"rootfs import needs the {engine} command")
    if image.startswith("-") or not image.strip():
        raise RootfsError(f"rootfs import {image!r}: not an image reference")
    name = check_name(name or image_name(image))
    need_root("rootfs import")
    r = run([engine, "image", "inspect", image], CALL_TIMEOUT_S)
    if r.returncode != 0:
        raise RootfsError(
            f"no image {image} in {engine} ({last_line(r.stderr)}): {engine} pull or build it first"
        )
    meta = _image_meta(json.loads(r.stdout)[0], engine, image)

    def same(record: dict) -> bool:
        return (record.get("image") or {}).get("id") == meta["id"]

    def make(tmp: Path) -> dict:
        tree = tmp / "tree"
        tree.mkdir()
        log(f"{engine} export {image} …")
        _export(engine, image, tree)
        info = inspect_tree(tree, python=False)
        return {"key": info["content"][:16], "source": f"{engine} image", "image": meta, **info}

    other = f": `isobench rootfs rm {name}` first, or pass --name"
    return make_or_reuse(name, cache, log, make, same, "imported from the same image", other)


def image_name(image: str) -> str:
    """A rootfs name from an image reference: debian:bookworm -> debian-bookworm."""
    base = image.split("@", 1)[0].rsplit("/", 1)[-1].lower()
    return re.sub(r"[^a-z0-9._-]+", "-", base).strip("-._")[:63] or "image"


def _image_meta(attrs: dict, engine: str, ref: str) -> dict:
    cfg = attrs.get("Config") or {}
    return {
        "engine": engine,
        "ref": ref,
        "id": attrs.get("Id"),
        "tags": attrs.get("RepoTags") or [],
        "digests": attrs.get("RepoDigests") or [],
        "created": attrs.get("Created"),
        "architecture": attrs.get("Architecture"),
        "os": attrs.get("Os"),
        "env": cfg.get("Env") or [],
        "entrypoint": cfg.get("Entrypoint"),
        "cmd": cfg.get("Cmd"),
        "workdir": cfg.get("WorkingDir") or "",
        "user": cfg.get("User") or "",
    }


def _export(engine: str, image: str, tree: Path) -> None:
    cname = f"isobench-rootfs-import-{secrets.token_hex(4)}"
    r = run(
        [
            engine,
            "create",
            "--name",
            cname,
            "--label",
            f"{IMPORT_LABEL}=1",
            "--entrypoint",
            "/bin/true",
            image,
        ],
        CALL_TIMEOUT_S,
    )
    if r.returncode != 0:
        raise RootfsError(f"{engine} create {image}: {last_line(r.stderr)}")
    try:
        exp = subprocess.Popen(
            [engine, "export", cname],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        untar = subprocess.Popen(
            [
                "tar",
                "-x",
                "-C",
                str(tree),
                "--numeric-owner",
                "--same-owner",
                "--same-permissions",
                "--xattrs",
                "--xattrs-include=*",
                "-f",
                "-",
            ],
            stdin=exp.stdout,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        exp.stdout.close()
        try:
            tar_err = untar.communicate(timeout=BUILD_TIMEOUT_S)[1]
            exp_err = exp.communicate(timeout=CALL_TIMEOUT_S)[1]
        except BaseException:
            stop_group(untar)
            stop_group(exp)
            raise
        if exp.returncode != 0:
            raise RootfsError(f"{engine} export {image}: {last_line(exp_err.decode())}")
        if untar.returncode != 0:
            raise RootfsError(f"unpacking {image}: {last_line(tar_err.decode())}")
    finally:
        with interrupt.shielded():
            run([engine, "rm", "-f", cname], CALL_TIMEOUT_S)
