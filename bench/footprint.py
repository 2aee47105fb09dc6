"""Disk footprint of a prepared environment, measured once per run: what its artefacts
take on disk (an image, an unpacked rootfs, a guest's kernel + initramfs + disk
template, the probe bundle itself) and what one instance adds after one io launch (a
container's writable layer, a guest's io disk, an OCI bundle directory).

Every figure says what it counts, in words: allocated blocks (st_blocks * 512, what the
filesystem gives up) or apparent size (st_size), and where the number comes from (an
engine's API, a walk of a directory). A figure that cannot be had honestly has
``bytes: None`` and a ``reason``; nothing is estimated.

    disk_footprint(env, bundle, io=<the io Invocation>) -> {"figures": [...]}

The per-instance figure starts one io launch through the environment's own
``start()``; the instance is waited for, or aborted on any error (Ctrl-C included), so
nothing is left behind.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.envs.base import Environment, Instance, Invocation

CALL_TIMEOUT_S = 60  # one engine call (inspect --size walks the layer: not instant)
IO_TIMEOUT_S = 600  # the io launch (a TCG guest boots for a while)
BLOCK = 512  # st_blocks unit (POSIX)


# ---------------------------------------------------------------- pure helpers


@dataclass(frozen=True)
class Usage:
    """A tree's size: allocated (st_blocks * 512) and apparent (st_size), each inode once."""

    allocated: int
    apparent: int
    inodes: int


def tally(entries: Iterable[tuple[int, int, int, int, int]]) -> Usage:
    """Pure: (st_dev, st_ino, st_nlink, st_blocks, st_size) per directory entry -> Usage,
    an inode with several links (a hard link) counted once, as du does."""
    seen: set[tuple[int, int]] = set()
    allocated = apparent = inodes = 0
    for dev, ino, nlink, blocks, size in entries:
        if nlink > 1:
            if (dev, ino) in seen:
                continue
            seen.add((dev, ino))
        allocated += blocks * BLOCK
        apparent += size
        inodes += 1
    return Usage(allocated, apparent, inodes)


def parse_find_listing(text: str) -> list[tuple[int, int, int, int, int]]:
    """Pure: lines of `find DIR -printf '%D %i %n %b %s %p\\n'` -> tally()'s entries
    (%b is in 512-byte blocks, as st_blocks)."""
    out = []
    for line in text.splitlines():
        if not line.strip():
            continue
        dev, ino, nlink, blocks, size, _path = line.split(" ", 5)
        out.append((int(dev), int(ino), int(nlink), int(blocks), int(size)))
    return out


def _walk(root: Path):
    """lstat of root and of every entry below it; symlinks are not followed, other
    filesystems are not entered (du -x)."""
    top = os.lstat(root)
    yield top
    if not os.path.isdir(root) or os.path.islink(root):
        return
    for dirpath, dirnames, filenames in os.walk(root):
        keep = []
        for name in dirnames:
            st = os.lstat(os.path.join(dirpath, name))
            yield st
            if st.st_dev == top.st_dev and not os.path.islink(os.path.join(dirpath, name)):
                keep.append(name)
        dirnames[:] = keep
        for name in filenames:
            yield os.lstat(os.path.join(dirpath, name))


def du(root: Path) -> Usage:
    """What `root` (a file or a tree) takes on disk: du -x with hard links counted once
    (a symlink given as `root` is followed, as du -D does; none below it is)."""
    root = Path(root).resolve()
    return tally((s.st_dev, s.st_ino, s.st_nlink, s.st_blocks, s.st_size) for s in _walk(root))


def parse_size(text: str, what: str) -> int:
    """Pure: an engine's one-number answer (`podman image inspect --format {{.Size}}`,
    `podman container inspect --size --format {{.SizeRw}}`) -> bytes; ValueError with
    what was asked when it is not one number."""
    words = text.split()
    if len(words) != 1 or not words[0].isdigit():
        raise ValueError(f"{what}: expected one number of bytes, got {text.strip()[:80]!r}")
    return int(words[0])


def parse_inspect(text: str) -> dict[str, Any]:
    """Pure: `docker container inspect` output (a JSON list of one object) -> the object."""
    data = json.loads(text)
    if not isinstance(data, list) or len(data) != 1 or not isinstance(data[0], dict):
        raise ValueError(f"docker inspect: expected a list of one object, got {text[:80]!r}")
    return data[0]


def figure(what: str, nbytes: int | None, counts: str, reason: str = "") -> dict[str, Any]:
    """One line of the footprint: what it is, bytes (None: not measured) and what the
    number counts (or why there is none)."""
    out: dict[str, Any] = {"what": what, "bytes": nbytes, "counts": counts}
    if nbytes is None:
        out["reason"] = reason or "not measured"
    return out


def missing(what: str, reason: str) -> dict[str, Any]:
    return figure(what, None, "", reason)


def tree_figures(what: str, usage: Usage, where: str) -> list[dict[str, Any]]:
    """A directory or file as two figures: allocated first (what the disk gives up),
    apparent (what the files say they hold: sparse files and small files differ)."""
    return [
        figure(
            what,
            usage.allocated,
            f"allocated blocks (st_blocks x 512) of {where}, {usage.inodes} inodes, "
            "hard links once",
        ),
        figure(f"{what} (apparent)", usage.apparent, f"apparent size (st_size) of {where}"),
    ]


def docker_image_figures(attrs: dict[str, Any]) -> list[dict[str, Any]]:
    """Pure: the docker SDK's image attrs (GET /images/{id}/json) -> figures: Size, and
    VirtualSize where the API still reports it (removed in API 1.44); the layer count."""
    layers = len((attrs.get("RootFS") or {}).get("Layers") or [])
    counts = (
        f"docker SDK images.get().attrs['Size']: the image's {layers} layer(s) as "
        "the daemon reports them (uncompressed, apparent sizes of the layer's files)"
    )
    out = [figure("image", int(attrs["Size"]), counts)]
    if "VirtualSize" in attrs:
        out.append(
            figure(
                "image (VirtualSize)",
                int(attrs["VirtualSize"]),
                "attrs['VirtualSize']: this layer plus its parents' (deprecated)",
            )
        )
    else:
        out.append(
            missing(
                "image (VirtualSize)",
                "this daemon's API no longer reports VirtualSize (removed in API "
                "1.44; it equals Size for an image without a parent)",
            )
        )
    return out


def docker_rw_figure(inspect: dict[str, Any], storage: str, runsc: bool = False) -> dict[str, Any]:
    """Pure: `docker inspect --size` of the container that ran the io probe -> its
    writable layer (SizeRw), as the daemon computes it (apparent sizes in the upper dir)."""
    what = "writable layer after io"
    if inspect.get("SizeRw") is None:
        return missing(what, "the daemon did not report SizeRw for the container")
    note = (
        ""
        if storage == "overlay"
        else (f"; storage={storage}: the io probe wrote to a {storage}, not to this layer")
    )
    if runsc:
        note += "; runsc: the sandbox may hold writes in its own rootfs overlay (--overlay2)"
    state = inspect.get("State") or {}
    return figure(
        what,
        int(inspect["SizeRw"]),
        "docker inspect --size: SizeRw of the container that ran the io probe, "
        f"after it exited (status {state.get('ExitCode')}), before its removal; "
        f"the probe removes its files at exit{note}",
    )


# ---------------------------------------------------------------- one io instance


def after_io(
    env: Environment,
    io: Invocation,
    timeout: float,
    measure: Callable[[Instance], list[dict[str, Any]]],
) -> list[dict[str, Any]]:
    """Start one io instance through the environment, let `measure(instance)` read what
    it took (it waits for the instance's end itself), then let the instance finish and
    clean up. A failed launch gives no figure, its reason instead; any error (Ctrl-C
    included) aborts the instance, which removes everything it made."""
    what = "per instance after io"
    try:
        instance = env.start(io, timeout)
    except Exception as e:  # noqa: BLE001 - StartError and the engine's own
        return [missing(what, f"the io instance did not start: {e}")]
    try:
        figures = measure(instance) if instance.wait_ready() else None
    except Exception as e:  # noqa: BLE001 - an engine call failed: say which, remove all
        instance.abort()
        return [missing(what, f"{type(e).__name__}: {str(e)[:300]}")]
    except BaseException:
        instance.abort()
        raise
    launch = instance.wait()
    if launch.status != "ok":
        return [missing(what, f"the io launch was not ok: {launch.status}: {launch.reason}")]
    if figures is None:
        return [missing(what, "the instance ended before it could be measured")]
    return figures


# ---------------------------------------------------------------- per kind


def _bundle_figures(bundle) -> list[dict[str, Any]]:
    return tree_figures(
        "probe bundle",
        du(Path(bundle.root)),
        f"the bundle directory {bundle.root} (the same probes every kind runs)",
    )


def _host(env, bundle, io, timeout) -> list[dict[str, Any]]:
    return [
        *_bundle_figures(bundle),
        missing(
            "per instance after io",
            "none kept: the instance is a process on the host's filesystem; the io "
            "probe writes in a scratch directory and removes its files",
        ),
    ]


def _docker(env, bundle, io, timeout) -> list[dict[str, Any]]:
    api = env.cl.api
    image = env.cl.images.get(env.describe()["image"]["id"])
    out = docker_image_figures(image.attrs)

    def measure(instance) -> list[dict[str, Any]]:
        cid = instance.cid
        if cid is None:
            return None
        api.wait(cid, timeout=max(1, int(instance.left()) + 1))
        # the SDK's inspect_container has no size flag: the CLI's `inspect --size`
        inspect = parse_inspect(_cli("docker", "container", "inspect", "--size", cid))
        runsc = bool(getattr(instance, "runsc", False))
        return [docker_rw_figure(inspect, env.opts["storage"], runsc)]

    return out + (after_io(env, io, timeout, measure) if io else [_no_io()])


def _cli(*argv: str) -> str:
    """An engine CLI's stdout; RuntimeError with its first words and stderr on failure."""
    res = subprocess.run(
        list(argv), capture_output=True, text=True, timeout=CALL_TIMEOUT_S, check=False
    )
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:4])}: {res.stderr.strip()[:200]}")
    return res.stdout


def _podman_cli(*args: str) -> str:
    return _cli("podman", *args)


def _podman(env, bundle, io, timeout) -> list[dict[str, Any]]:
    image_id = env.describe()["image"]["id"]
    size = parse_size(
        _podman_cli("image", "inspect", "--format", "{{.Size}}", image_id), "podman image inspect"
    )
    out = [
        figure(
            "image",
            size,
            "podman image inspect --format {{.Size}}: the image's layer "
            "as podman's store reports it (apparent sizes)",
        )
    ]

    def measure(instance) -> list[dict[str, Any]]:
        _podman_cli("wait", instance.name)  # exited: the container stays until teardown
        rw = parse_size(
            _podman_cli("container", "inspect", "--size", "--format", "{{.SizeRw}}", instance.name),
            "podman inspect --size",
        )
        storage = env.opts["storage"]
        note = "" if storage == "overlay" else f"; storage={storage}: io wrote elsewhere"
        return [
            figure(
                "writable layer after io",
                rw,
                "podman container inspect --size: SizeRw of the container that ran "
                "the io probe, after it exited, before its removal; the probe "
                f"removes its files at exit{note}",
            )
        ]

    return out + (after_io(env, io, timeout, measure) if io else [_no_io()])


def _oci(env, bundle, io, timeout) -> list[dict[str, Any]]:
    from bench.envs.oci import BUNDLES, ROOTFS

    rootfs = env.ctx.scratch / ROOTFS
    before = du(rootfs)
    out = tree_figures("rootfs", before, f"the unpacked rootfs {rootfs}")
    if not io:
        return [*out, _no_io()]

    def measure(instance) -> list[dict[str, Any]]:
        bundle_dir = env.ctx.scratch / BUNDLES / instance.name
        usage = du(bundle_dir)  # only config.json: the rootfs is shared, not copied
        return [
            figure(
                "bundle dir",
                usage.allocated,
                f"allocated blocks of the instance's bundle directory ({usage.inodes} "
                "inodes: its config.json); the instance has no layer of its own, it "
                "writes into the shared rootfs",
            )
        ]

    figures = after_io(env, io, timeout, measure)
    if figures and figures[0]["bytes"] is not None:
        grown = du(rootfs).allocated - before.allocated
        figures.append(
            figure(
                "rootfs growth after io",
                grown,
                "allocated blocks of the shared rootfs after the io launch "
                "minus before it (the probe removes its files at exit)",
            )
        )
    return out + figures


def _guest(env, bundle, io, timeout) -> list[dict[str, Any]]:
    image = env.image
    out = [
        figure(
            "guest kernel",
            du(image.kernel.path).allocated,
            f"allocated blocks of {image.kernel.path} (found by: {image.kernel.source})"
            + (
                "; the host's own /boot file: no extra disk"
                if Path(image.kernel.path).resolve().is_relative_to("/boot")
                else ""
            ),
        ),
        figure(
            "initramfs",
            du(image.initramfs).allocated,
            f"allocated blocks of {image.initramfs} (probes, busybox, modules)",
        ),
        *tree_figures(
            "disk template",
            du(env.disk_template),
            f"the sparse ext4 io disk template {env.disk_template}",
        ),
    ]
    if not io:
        return [*out, _no_io()]

    def measure(instance) -> list[dict[str, Any]]:
        if not instance.guest.wait_exit(instance.left()):  # the guest powers off after io
            return None
        disk = instance.scratch / "io.raw"
        usage = du(disk)
        return [
            figure(
                "io disk after io",
                usage.allocated,
                "allocated blocks of the guest's private copy of the io disk (raw, "
                f"{usage.apparent / 2**20:.0f} MiB apparent) after the io probe ran "
                "and the guest powered off, before its removal",
            )
        ]

    return out + after_io(env, io, timeout, measure)


def _cri(env, bundle, io, timeout) -> list[dict[str, Any]]:
    from bench.envs import cri_images as ci

    out = []
    archives = ci.archives(bundle, env.ctx.cache)
    client = getattr(env, "_client", None)  # the kind's CRI client (no public accessor)
    for ref, archive in sorted(archives.items()):
        name = "pause image" if "/pause:" in ref else "image"
        if client is not None:
            pb = client.pb
            req = pb.ImageStatusRequest(image=pb.ImageSpec(image=ref))
            status = client.call("ImageStatus", req, CALL_TIMEOUT_S, service="images")
            out.append(
                figure(
                    name,
                    int(status.image.size),
                    f"CRI ImageService ImageStatus({ref}).image.size, as the "
                    "endpoint's image store reports it",
                )
            )
        out.append(
            figure(
                f"{name} (OCI archive)",
                du(archive).apparent,
                f"apparent size of the OCI image archive imported: {archive}",
            )
        )
    out.append(
        missing(
            "writable layer after io",
            "not measured: needs the pod's container id from the cri kind "
            "(then ContainerStats().writable_layer.used_bytes)",
        )
    )
    return out


def _k8s(env, bundle, io, timeout) -> list[dict[str, Any]]:
    return [missing("image", "not measured: the image lives in the cluster nodes' stores")]


def _no_io() -> dict[str, Any]:
    return missing(
        "per instance after io", "measured in runs with the density workload (one io launch)"
    )


KINDS: dict[str, Callable[..., list[dict[str, Any]]]] = {
    "host": _host,
    "namespaces": _host,
    "docker": _docker,
    "podman": _podman,
    "oci": _oci,
    "libvirt": _guest,
    "qemu": _guest,
    "cri": _cri,
    "k8s": _k8s,
}


def disk_footprint(
    env: Environment, bundle, io: Invocation | None = None, timeout: float = IO_TIMEOUT_S
) -> dict[str, Any]:
    """The disk footprint of a prepared environment: {"figures": [figure...]}; with `io`
    (the run's io invocation), one io launch to measure what an instance adds. An engine
    error is the footprint's `error`, never an exception (Ctrl-C is re-raised)."""
    measure = KINDS.get(env.kind)
    if measure is None:
        return {"figures": [], "error": f"no disk footprint for kind {env.kind}"}
    try:
        return {"figures": measure(env, bundle, io, timeout)}
    except Exception as e:  # noqa: BLE001 - one line in the manifest, the run goes on
        return {"figures": [], "error": f"{type(e).__name__}: {str(e)[:300]}"}
