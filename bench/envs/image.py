"""The container artifact made from a probe bundle: the same static files, three forms.

- `rootfs_tar(bundle)`: a deterministic tar (probes in /probes, static busybox as /bin/sh
  etc., /work for the io workload) — input of `docker import` and `podman import`.
- `ensure_docker_image(client, bundle)`: that tar imported as `isobench-probes:<hash>`,
  labelled `isobench=1`; imported only when the tag is missing.
- `unpack_rootfs(bundle, dest)` + `oci_config(...)`: an OCI runtime bundle for `oci`.

Everything a probe sees is in the bundle, so the report can tie a container result to the
very bytes that ran on the host, by hash.
"""

from __future__ import annotations

import io
import os
import shutil
import tarfile
from pathlib import Path
from typing import Any

REPOSITORY = "isobench-probes"
LABEL = "isobench"
BUNDLE_LABEL = "isobench.bundle"
PROBE_DIR = "/probes"
WORKDIR = "/work"  # the io workload's directory in the container's own filesystem
BUSYBOX_LINKS = ("sh", "true", "sleep", "cat", "ls")
DIRS = ("bin", "dev", "etc", "probes", "proc", "sys", "tmp", "work")


def image_tag(bundle_hash: str) -> str:
    return f"{REPOSITORY}:{bundle_hash}"


def image_labels(bundle_hash: str) -> dict[str, str]:
    return {LABEL: "1", BUNDLE_LABEL: bundle_hash}


def probe_path(name: str) -> str:
    """Where probe `name` is inside the image."""
    return f"{PROBE_DIR}/{name}"


def _entries(bundle) -> list[tuple[str, Path | None, str | None]]:
    """(path in the image, source file or None for a dir, symlink target) in tar order."""
    out: list[tuple[str, Path | None, str | None]] = [(d, None, None) for d in DIRS]
    for name in sorted(bundle.probes):
        out.append((f"probes/{name}", bundle.probes[name], None))
    if bundle.busybox:
        out.append(("bin/busybox", bundle.busybox, None))
        out.extend((f"bin/{link}", None, "busybox") for link in BUSYBOX_LINKS)
    out.append(("etc/passwd", None, "root:x:0:0:root:/:/bin/sh\n"))
    out.append(("etc/group", None, "root:x:0:\n"))
    return out


def write_rootfs_tar(bundle, dest: Path) -> Path:
    """Write the image's files to `dest` as a tar: fixed owners, modes and mtimes, so the
    same bundle always gives the same bytes."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}")
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
        for name, src, target in _entries(bundle):
            info = tarfile.TarInfo(name)
            info.mtime = 0
            if src is not None:
                info.size = src.stat().st_size
                info.mode = 0o755
                with open(src, "rb") as f:
                    tar.addfile(info, f)
            elif target is None:
                info.type = tarfile.DIRTYPE
                info.mode = 0o1777 if name in ("tmp", "work") else 0o755
                tar.addfile(info)
            elif name.startswith("etc/"):  # small text files
                data = target.encode()
                info.size, info.mode = len(data), 0o644
                tar.addfile(info, io.BytesIO(data))
            else:
                info.type, info.linkname, info.mode = tarfile.SYMTYPE, target, 0o777
                tar.addfile(info)
    tmp.replace(dest)
    return dest


def rootfs_tar(bundle, cache: Path) -> Path:
    """The bundle's rootfs tar in the cache (cache/images/<hash>.tar), written if missing."""
    dest = Path(cache) / "images" / f"{bundle.hash}.tar"
    if not dest.is_file():
        write_rootfs_tar(bundle, dest)
    return dest


def unpack_rootfs(bundle, dest: Path) -> Path:
    """The same files as a directory (an OCI bundle's rootfs); rebuilt if incomplete."""
    marker = dest / ".isobench-bundle"
    if marker.is_file() and marker.read_text() == bundle.hash:
        return dest
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    for name, src, target in _entries(bundle):
        path = dest / name
        if src is not None:
            shutil.copyfile(src, path)
            path.chmod(0o755)
        elif target is None:
            path.mkdir(exist_ok=True)
            path.chmod(0o1777 if name in ("tmp", "work") else 0o755)
        elif name.startswith("etc/"):
            path.write_text(target)
        else:
            path.symlink_to(target)
    marker.write_text(bundle.hash)
    return dest


# ---------------------------------------------------------------- docker / podman images


def find_docker_image(client, bundle_hash: str):
    """The imported image for this bundle, or None."""
    import docker.errors

    try:
        return client.images.get(image_tag(bundle_hash))
    except docker.errors.ImageNotFound:
        return None


def ensure_docker_image(client, bundle, cache: Path):
    """`isobench-probes:<hash>` in the daemon, imported from the rootfs tar when missing."""
    image = find_docker_image(client, bundle.hash)
    if image is not None:
        return image
    tar = rootfs_tar(bundle, cache)
    changes = [f"LABEL {k}={v}" for k, v in image_labels(bundle.hash).items()]
    changes.append(f"WORKDIR {WORKDIR}")
    client.api.import_image_from_file(
        str(tar), repository=REPOSITORY, tag=bundle.hash, changes=changes
    )
    return client.images.get(image_tag(bundle.hash))


def podman_import_argv(tar: Path, bundle_hash: str) -> list[str]:
    argv = ["podman", "import"]
    for k, v in image_labels(bundle_hash).items():
        argv += ["--change", f"LABEL {k}={v}"]
    argv += ["--change", f"WORKDIR {WORKDIR}", str(tar), image_tag(bundle_hash)]
    return argv


# ---------------------------------------------------------------- OCI runtime config

OCI_VERSION = "1.0.2"
DEFAULT_CAPS = (
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
)  # Docker's default set, so `oci` and `docker` differ only in the daemon
MASKED = (
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/sys/firmware",
    "/proc/scsi",
)
READONLY = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")


def oci_config(
    args: list[str],
    rootfs: Path,
    cgroups_path: str,
    *,
    network: str = "none",
    hostname: str = "isobench",
    rlimits: dict[str, tuple[int, int]] | None = None,
    extra_mounts: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """An OCI runtime config like `runc spec`'s defaults, for one probe invocation.

    Namespaces pid/mount/ipc/uts, plus network unless network="host"; no seccomp (the
    `docker:seccomp=…` knob is where the filter's cost is measured); cgroupsPath as given
    (runc creates it); terminal off so stdout is a plain pipe.
    """
    caps = list(DEFAULT_CAPS)
    namespaces = [{"type": t} for t in ("pid", "mount", "ipc", "uts")]
    if network != "host":
        namespaces.append({"type": "network"})
    rl = rlimits or {"RLIMIT_NOFILE": (1024, 1024)}
    mounts = [
        {"destination": "/proc", "type": "proc", "source": "proc"},
        {
            "destination": "/dev",
            "type": "tmpfs",
            "source": "tmpfs",
            "options": ["nosuid", "strictatime", "mode=755", "size=65536k"],
        },
        {
            "destination": "/dev/pts",
            "type": "devpts",
            "source": "devpts",
            "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"],
        },
        {
            "destination": "/dev/shm",
            "type": "tmpfs",
            "source": "shm",
            "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        },
        {
            "destination": "/dev/mqueue",
            "type": "mqueue",
            "source": "mqueue",
            "options": ["nosuid", "noexec", "nodev"],
        },
        {
            "destination": "/sys",
            "type": "sysfs",
            "source": "sysfs",
            "options": ["nosuid", "noexec", "nodev", "ro"],
        },
        *(extra_mounts or []),
    ]
    return {
        "ociVersion": OCI_VERSION,
        "process": {
            "terminal": False,
            "user": {"uid": 0, "gid": 0},
            "args": list(args),
            "env": ["PATH=/probes:/bin", "HOME=/"],
            "cwd": WORKDIR,
            "capabilities": {k: caps for k in ("bounding", "effective", "permitted")},
            "rlimits": [
                {"type": name, "soft": soft, "hard": hard} for name, (soft, hard) in rl.items()
            ],
            "noNewPrivileges": True,
        },
        "root": {"path": str(rootfs), "readonly": False},
        "hostname": hostname,
        "mounts": mounts,
        "linux": {
            "cgroupsPath": cgroups_path,
            "resources": {"devices": [{"allow": False, "access": "rwm"}]},
            "namespaces": namespaces,
            "maskedPaths": list(MASKED),
            "readonlyPaths": list(READONLY),
        },
    }
