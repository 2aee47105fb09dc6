"""The `cri` kind's two images, without a registry: the probes' rootfs (the same bytes
as the docker image: image.rootfs_tar) and a pause image (the bundle's static `pause`),
each written as an OCI image archive (oci-layout, index.json naming the image in an
`io.containerd.image.name` annotation) and imported with `ctr images import` into the
endpoint's `k8s.io` namespace, where the CRI plugin sees it at once.

The archives are kept in the cache under the hash of what is in them (the bundle's hash,
the pause binary's), so a run only writes them once; an import happens only when the
endpoint does not have the image yet.

From an isobench rootfs (issue 16) the pod's container image is that rootfs plus the
bundle's probes: the very bytes docker and podman import (image.rootfs_image_stream) as
the archive's one layer, `isobench.local/rootfs:<rootfs key>-<bundle hash>`. That archive
is not kept (it would be the tree's size once more): it is streamed into `ctr images
import -`, after one pass over the layer for its digest (remembered in the cache).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import platform
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.envs import containers as ct
from bench.envs import image as img
from bench.envs import roots

REGISTRY_HOST = "isobench.local"  # a name no registry answers for: never pulled
NAMESPACE = "k8s.io"  # containerd's namespace of the CRI plugin
IMPORT_TIMEOUT_S = 120
ROOTFS_IMPORT_TIMEOUT_S = img.IMPORT_TIMEOUT_S  # a rootfs's tree: hundreds of MB
LAYER = "application/vnd.oci.image.layer.v1.tar"
CONFIG = "application/vnd.oci.image.config.v1+json"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def arch() -> str:
    machine = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


def probes_ref(bundle_hash: str) -> str:
    return f"{REGISTRY_HOST}/probes:{bundle_hash}"


def rootfs_ref(rootfs_key: str, bundle_hash: str) -> str:
    return f"{REGISTRY_HOST}/rootfs:{rootfs_key}-{bundle_hash}"


def pause_ref(pause_hash: str) -> str:
    return f"{REGISTRY_HOST}/pause:{pause_hash[:16]}"


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def image_config(
    diff_id: str,
    *,
    entrypoint: list[str] | None,
    workdir: str,
    labels: dict[str, str],
    env: tuple[str, ...] = ("PATH=/probes:/bin",),
) -> dict[str, Any]:
    """Pure: an OCI image config for one layer."""
    cfg: dict[str, Any] = {"Env": list(env), "WorkingDir": workdir, "Labels": labels}
    if entrypoint:
        cfg["Entrypoint"] = entrypoint
    return {
        "architecture": arch(),
        "os": "linux",
        "config": cfg,
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    }


def archive_files(
    ref: str, layer_digest: str, layer_size: int, config: dict[str, Any]
) -> list[tuple[str, bytes]]:
    """Pure: the small files of an OCI image archive of one layer named `ref` (the
    layout, the index, the config and manifest blobs), in tar order, before the layer."""
    config["rootfs"]["diff_ids"] = [layer_digest]
    config_bytes = json.dumps(config, sort_keys=True).encode()
    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "config": {"mediaType": CONFIG, "digest": _sha256(config_bytes), "size": len(config_bytes)},
        "layers": [{"mediaType": LAYER, "digest": layer_digest, "size": layer_size}],
    }
    manifest_bytes = json.dumps(manifest, sort_keys=True).encode()
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": MANIFEST,
                "digest": _sha256(manifest_bytes),
                "size": len(manifest_bytes),
                "platform": {"architecture": arch(), "os": "linux"},
                "annotations": {
                    "io.containerd.image.name": ref,
                    "org.opencontainers.image.ref.name": ref.rsplit(":", 1)[1],
                },
            }
        ],
    }
    return [
        ("oci-layout", b'{"imageLayoutVersion":"1.0.0"}'),
        ("index.json", json.dumps(index, sort_keys=True).encode()),
        ("blobs/sha256/" + manifest["config"]["digest"].split(":")[1], config_bytes),
        ("blobs/sha256/" + index["manifests"][0]["digest"].split(":")[1], manifest_bytes),
    ]


def _member(name: str, size: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = size, 0o644, 0
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


def _padding(size: int) -> bytes:
    return b"\0" * (-size % tarfile.BLOCKSIZE)


def write_archive(dest: Path, ref: str, layer: Path, config: dict[str, Any]) -> Path:
    """An OCI image archive of one uncompressed layer, named `ref`; deterministic."""
    size = layer.stat().st_size
    digest = _file_digest(layer)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}")

    def add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
        info = tarfile.TarInfo(name)
        info.size, info.mode, info.mtime = len(data), 0o644, 0
        tar.addfile(info, io.BytesIO(data))

    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in archive_files(ref, digest, size, config):
            add(tar, name, data)
        info = tarfile.TarInfo("blobs/sha256/" + digest.split(":")[1])
        info.size, info.mode, info.mtime = size, 0o644, 0
        with open(layer, "rb") as f:
            tar.addfile(info, f)
    tmp.replace(dest)
    return dest


def archive_stream(
    ref: str, layer, digest: str, size: int, config: dict[str, Any]
) -> Iterator[bytes]:
    """The same archive as write_archive's, as a stream, its layer from the chunks of
    `layer()` (`size` bytes whose sha256 is `digest`: a mismatch is an error)."""
    for name, data in archive_files(ref, digest, size, config):
        yield _member(name, len(data)) + data + _padding(len(data))
    yield _member("blobs/sha256/" + digest.split(":")[1], size)
    h, sent = hashlib.sha256(), 0
    for chunk in layer():
        h.update(chunk)
        sent += len(chunk)
        yield chunk
    if sent != size or "sha256:" + h.hexdigest() != digest:
        raise RuntimeError("the layer changed while it was streamed")
    yield _padding(size) + b"\0" * (2 * tarfile.BLOCKSIZE)


def pause_layer(pause: Path, dest: Path) -> Path:
    """A layer with the static pause binary as /pause."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}")
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("pause")
        info.size, info.mode, info.mtime = pause.stat().st_size, 0o755, 0
        with open(pause, "rb") as f:
            tar.addfile(info, f)
    tmp.replace(dest)
    return dest


def archives(bundle, cache: Path) -> dict[str, Path]:
    """ref -> OCI archive in the cache, for the probes image and the pause image."""
    out = {}
    where = Path(cache) / "cri"
    probes = probes_ref(bundle.hash)
    dest = where / f"probes-{bundle.hash}.oci.tar"
    if not dest.is_file():
        labels = img.image_labels(bundle.hash)
        cfg = image_config("", entrypoint=None, workdir=img.WORKDIR, labels=labels)
        write_archive(dest, probes, img.rootfs_tar(bundle, cache), cfg)
    out[probes] = dest
    out.update(pause_archive(bundle, cache))
    return out


def pause_archive(bundle, cache: Path) -> dict[str, Path]:
    """ref -> OCI archive in the cache of the pause image (the bundle's static pause)."""
    out = {}
    where = Path(cache) / "cri"
    pause_bin = bundle.probes["pause"]
    pause_hash = _file_digest(pause_bin).split(":")[1]
    pause = pause_ref(pause_hash)
    dest = where / f"pause-{pause_hash[:16]}.oci.tar"
    if not dest.is_file():
        layer = pause_layer(pause_bin, where / f"pause-{pause_hash[:16]}.layer.tar")
        cfg = image_config("", entrypoint=["/pause"], workdir="/", labels={img.LABEL: "1"})
        write_archive(dest, pause, layer, cfg)
        layer.unlink()
    out[pause] = dest
    return out


def rootfs_layer(rootfs, bundle, cache: Path) -> tuple[str, int]:
    """(digest, size) of the rootfs image's layer (image.rootfs_image_stream): one pass
    over it the first time, then remembered in the cache under the rootfs key and the
    bundle hash (both content hashes)."""
    known = Path(cache) / "cri" / f"rootfs-{rootfs.key}-{bundle.hash}.layer.json"
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        data = json.loads(known.read_text())
        return str(data["digest"]), int(data["size"])
    digest, size = img.stream_digest(img.rootfs_image_stream(rootfs, bundle))
    known.parent.mkdir(parents=True, exist_ok=True)
    tmp = known.with_name(f".{known.name}.{os.getpid()}")
    tmp.write_text(json.dumps({"digest": digest, "size": size}) + "\n")
    tmp.replace(known)
    return digest, size


def rootfs_config(rootfs_key: str, bundle_hash: str) -> dict[str, Any]:
    """Pure: the rootfs image's config: Debian's PATH, the io directory as its workdir,
    labelled as docker's image of the same rootfs and bundle."""
    labels = img.rootfs_image_labels(rootfs_key, bundle_hash)
    return image_config(
        "", entrypoint=None, workdir=roots.WORKDIR, labels=labels, env=img.ROOTFS_ENV[:1]
    )


def import_rootfs(socket: str, rootfs, bundle, cache: Path) -> str:
    """Stream the rootfs image's archive into `ctr images import -` at `socket`; its ref.
    ctr is killed on a timeout or Ctrl-C before its input ends (no half image)."""
    ref = rootfs_ref(rootfs.key, bundle.hash)
    digest, size = rootfs_layer(rootfs, bundle, cache)
    stream = archive_stream(
        ref,
        lambda: img.rootfs_image_stream(rootfs, bundle),
        digest,
        size,
        rootfs_config(rootfs.key, bundle.hash),
    )
    try:
        code, err = img.feed(import_argv(socket, "-"), stream, ROOTFS_IMPORT_TIMEOUT_S)
    except TimeoutError as e:
        raise RuntimeError(f"ctr import of rootfs {rootfs.name}: {e}") from None
    if code != 0:
        raise RuntimeError(f"ctr import of rootfs {rootfs.name}: {ct.first_line(err)}")
    return ref


def import_argv(socket: str, archive: Path | str) -> list[str]:
    return [
        "ctr",
        "-a",
        socket,
        "-n",
        NAMESPACE,
        "images",
        "import",
        "--platform",
        f"linux/{arch()}",
        str(archive),
    ]


def import_archive(socket: str, archive: Path) -> None:
    """`ctr images import` into the daemon at `socket`; RuntimeError with ctr's words."""
    try:
        res = subprocess.run(
            import_argv(socket, archive),
            capture_output=True,
            text=True,
            timeout=IMPORT_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"ctr import of {archive.name} took over {IMPORT_TIMEOUT_S} s") from None
    if res.returncode != 0:
        raise RuntimeError(f"ctr import of {archive.name}: {ct.first_line(res.stderr)}")
