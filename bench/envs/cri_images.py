"""The `cri` kind's two images, without a registry: the probes' rootfs (the same bytes
as the docker image: image.rootfs_tar) and a pause image (the bundle's static `pause`),
each written as an OCI image archive (oci-layout, index.json naming the image in an
`io.containerd.image.name` annotation) and imported with `ctr images import` into the
endpoint's `k8s.io` namespace, where the CRI plugin sees it at once.

The archives are kept in the cache under the hash of what is in them (the bundle's hash,
the pause binary's), so a run only writes them once; an import happens only when the
endpoint does not have the image yet.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import platform
import subprocess
import tarfile
from pathlib import Path
from typing import Any

from bench.envs import containers as ct
from bench.envs import image as img

REGISTRY_HOST = "isobench.local"  # a name no registry answers for: never pulled
NAMESPACE = "k8s.io"  # containerd's namespace of the CRI plugin
IMPORT_TIMEOUT_S = 120
LAYER = "application/vnd.oci.image.layer.v1.tar"
CONFIG = "application/vnd.oci.image.config.v1+json"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def arch() -> str:
    machine = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


def probes_ref(bundle_hash: str) -> str:
    return f"{REGISTRY_HOST}/probes:{bundle_hash}"


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


def image_config(diff_id: str, *, entrypoint: list[str] | None, workdir: str,
                 labels: dict[str, str]) -> dict[str, Any]:  # fmt: skip
    """Pure: an OCI image config for one layer."""
    cfg: dict[str, Any] = {"Env": ["PATH=/probes:/bin"], "WorkingDir": workdir, "Labels": labels}
    if entrypoint:
        cfg["Entrypoint"] = entrypoint
    return {
        "architecture": arch(),
        "os": "linux",
        "config": cfg,
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    }


def write_archive(dest: Path, ref: str, layer: Path, config: dict[str, Any]) -> Path:
    """An OCI image archive of one uncompressed layer, named `ref`; deterministic."""
    layer_digest = _file_digest(layer)
    config["rootfs"]["diff_ids"] = [layer_digest]
    config_bytes = json.dumps(config, sort_keys=True).encode()
    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "config": {"mediaType": CONFIG, "digest": _sha256(config_bytes),
                   "size": len(config_bytes)},
        "layers": [{"mediaType": LAYER, "digest": layer_digest,
                    "size": layer.stat().st_size}],
    }  # fmt: skip
    manifest_bytes = json.dumps(manifest, sort_keys=True).encode()
    index = {
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": MANIFEST, "digest": _sha256(manifest_bytes),
            "size": len(manifest_bytes),
            "platform": {"architecture": arch(), "os": "linux"},
            "annotations": {"io.containerd.image.name": ref,
                            "org.opencontainers.image.ref.name": ref.rsplit(":", 1)[1]},
        }],
    }  # fmt: skip
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}")

    def add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
        info = tarfile.TarInfo(name)
        info.size, info.mode, info.mtime = len(data), 0o644, 0
        tar.addfile(info, io.BytesIO(data))

    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
        add(tar, "oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        add(tar, "index.json", json.dumps(index, sort_keys=True).encode())
        for digest, data in ((manifest["config"]["digest"], config_bytes),
                             (index["manifests"][0]["digest"], manifest_bytes)):  # fmt: skip
            add(tar, "blobs/sha256/" + digest.split(":")[1], data)
        info = tarfile.TarInfo("blobs/sha256/" + layer_digest.split(":")[1])
        info.size, info.mode, info.mtime = layer.stat().st_size, 0o644, 0
        with open(layer, "rb") as f:
            tar.addfile(info, f)
    tmp.replace(dest)
    return dest


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


def import_argv(socket: str, archive: Path) -> list[str]:
    return ["ctr", "-a", socket, "-n", NAMESPACE, "images", "import",
            "--platform", f"linux/{arch()}", str(archive)]  # fmt: skip


def import_archive(socket: str, archive: Path) -> None:
    """`ctr images import` into the daemon at `socket`; RuntimeError with ctr's words."""
    try:
        res = subprocess.run(import_argv(socket, archive), capture_output=True, text=True,
                             timeout=IMPORT_TIMEOUT_S, check=False)  # fmt: skip
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"ctr import of {archive.name} took over {IMPORT_TIMEOUT_S} s") from None
    if res.returncode != 0:
        raise RuntimeError(f"ctr import of {archive.name}: {ct.first_line(res.stderr)}")
