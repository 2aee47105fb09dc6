"""The container artifact made from a probe bundle: the same static files, three forms.

- `rootfs_tar(bundle)`: a deterministic tar (probes in /probes, static busybox as /bin/sh
  etc., /work for the io workload) — input of `docker import` and `podman import`.
- `ensure_docker_image(client, bundle)`: that tar imported as `isobench-probes:<hash>`,
  labelled `isobench=1`; imported only when the tag is missing.
- `unpack_rootfs(bundle, dest)` + `oci_config(...)`: an OCI runtime bundle for `oci`.

Everything a probe sees is in the bundle, so the report can tie a container result to the
very bytes that ran on the host, by hash.

From an isobench rootfs (issue 16), `ensure_docker_rootfs_image(client, bundle, rootfs)`:
the rootfs's tar with the bundle's probes added at roots.PROBE_DIR, imported as
`isobench-rootfs:<rootfs key>-<bundle hash>` (labelled with both), only when missing.
The same stream goes into `podman import -` (podman_rootfs_import_argv, feed) and, as
one layer of an OCI archive, into containerd (cri_images); `add_probes` writes the same
probe files into a directory (the upper layer of the oci kind's overlay on the tree).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import tarfile
import tempfile
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from bench.envs import roots

REPOSITORY = "isobench-probes"
ROOTFS_REPOSITORY = "isobench-rootfs"
LABEL = "isobench"
BUNDLE_LABEL = "isobench.bundle"
ROOTFS_LABEL = "isobench.rootfs"  # the key of the rootfs an image was made from
IMPORT_TIMEOUT_S = 600  # importing a rootfs's tree (hundreds of MB) into the daemon
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


def rootfs_image_tag(rootfs_key: str, bundle_hash: str) -> str:
    return f"{ROOTFS_REPOSITORY}:{rootfs_key}-{bundle_hash}"


def rootfs_image_labels(rootfs_key: str, bundle_hash: str) -> dict[str, str]:
    return {**image_labels(bundle_hash), ROOTFS_LABEL: rootfs_key}


def probe_layer(bundle) -> bytes:
    """A tar of the bundle's probes at roots.PROBE_DIR and an empty roots.WORKDIR (fixed
    owners, modes and mtimes), what a rootfs's tar gets added."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, mode in (
            ("isobench", 0o755),
            (roots.PROBE_DIR.lstrip("/"), 0o755),
            (roots.WORKDIR.lstrip("/"), 0o1777),
        ):
            info = tarfile.TarInfo(f"./{name}")
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, mode, 0
            tar.addfile(info)
        for name in sorted(bundle.probes):
            info = tarfile.TarInfo(f"./{roots.probe_path(name).lstrip('/')}")
            info.size, info.mode, info.mtime = bundle.probes[name].stat().st_size, 0o755, 0
            with open(bundle.probes[name], "rb") as f:
                tar.addfile(info, f)
    return buf.getvalue()


def rootfs_image_stream(rootfs, bundle, chunk: int = 1 << 20) -> Iterator[bytes]:
    """The rootfs's tar (rootfs.tar_file(), kept beside its tree) up to its end-of-archive
    blocks, then the probe layer: one tar, streamed, nothing more written to disk."""
    path = rootfs.tar_file()
    with tarfile.open(path) as tar:
        for _ in tar:  # headers only: the end of the last member
            pass
        end = tar.offset
    with open(path, "rb") as f:
        while (left := end - f.tell()) > 0:
            yield f.read(min(chunk, left))
    yield probe_layer(bundle)


def find_docker_rootfs_image(client, rootfs_key: str, bundle_hash: str):
    """The image of this rootfs with this bundle's probes, or None."""
    import docker.errors

    try:
        return client.images.get(rootfs_image_tag(rootfs_key, bundle_hash))
    except docker.errors.ImageNotFound:
        return None


def ensure_docker_rootfs_image(client, bundle, rootfs):
    """`isobench-rootfs:<key>-<hash>` in the daemon, imported when missing."""
    image = find_docker_rootfs_image(client, rootfs.key, bundle.hash)
    if image is not None:
        return image
    changes = [f"LABEL {k}={v}" for k, v in rootfs_image_labels(rootfs.key, bundle.hash).items()]
    changes.append(f"WORKDIR {roots.WORKDIR}")
    api, timeout = client.api, client.api.timeout
    api.timeout = IMPORT_TIMEOUT_S  # the daemon answers once the whole tree is in
    try:
        answer = api.import_image(
            src=rootfs_image_stream(rootfs, bundle),
            repository=ROOTFS_REPOSITORY,
            tag=f"{rootfs.key}-{bundle.hash}",
            changes=changes,
            stream_src=True,
        )
    finally:
        api.timeout = timeout
    for line in str(answer).splitlines():  # a JSON line per step; an error in one of them
        with contextlib.suppress(ValueError, AttributeError):
            if error := json.loads(line).get("error"):
                raise RuntimeError(f"docker import of rootfs {rootfs.name}: {error}")
    return client.images.get(rootfs_image_tag(rootfs.key, bundle.hash))


def podman_import_argv(tar: Path, bundle_hash: str) -> list[str]:
    argv = ["podman", "import"]
    for k, v in image_labels(bundle_hash).items():
        argv += ["--change", f"LABEL {k}={v}"]
    argv += ["--change", f"WORKDIR {WORKDIR}", str(tar), image_tag(bundle_hash)]
    return argv


def podman_rootfs_import_argv(rootfs_key: str, bundle_hash: str) -> list[str]:
    """`podman import` of rootfs_image_stream() from its standard input, tagged and
    labelled as docker's image of the same rootfs and bundle."""
    argv = ["podman", "import"]
    for k, v in rootfs_image_labels(rootfs_key, bundle_hash).items():
        argv += ["--change", f"LABEL {k}={v}"]
    tag = rootfs_image_tag(rootfs_key, bundle_hash)
    return [*argv, "--change", f"WORKDIR {roots.WORKDIR}", "-", tag]


def stream_digest(chunks: Iterable[bytes]) -> tuple[str, int]:
    """("sha256:<hex>", size in bytes) of a stream."""
    h, size = hashlib.sha256(), 0
    for chunk in chunks:
        h.update(chunk)
        size += len(chunk)
    return "sha256:" + h.hexdigest(), size


_PR_SET_PDEATHSIG = 1


def _dies_with_parent():
    """A preexec_fn: SIGKILL when the harness dies (kill -9 included), before the end of
    the stream could reach the command as an end of file (a tar cut between two members
    reads as complete: `podman import` would keep a partial tree under the tag)."""
    import ctypes

    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up before the fork
    parent = os.getpid()

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # died already, before the prctl
            os._exit(1)

    return preexec


def feed(argv: list[str], chunks: Iterable[bytes], timeout: float) -> tuple[int, str]:
    """Run `argv` with `chunks` on its standard input: (exit status, its stderr). The
    command is killed (its process group) before its input is closed when the chunks
    fail, when it runs past `timeout` (TimeoutError) or on Ctrl-C, and by the kernel when
    this process dies, so a half stream is never taken for a whole one."""
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=err,
            start_new_session=True,
            preexec_fn=_dies_with_parent(),
        )
        failed: list[BaseException] = []

        def kill() -> None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)

        def write() -> None:
            try:
                for chunk in chunks:
                    proc.stdin.write(chunk)
            except BrokenPipeError:
                pass  # the command stopped reading: its status says why
            except BaseException as e:  # noqa: BLE001 - re-raised by the caller's thread
                failed.append(e)
                kill()
            finally:
                with contextlib.suppress(OSError):
                    proc.stdin.close()

        writer = threading.Thread(target=write, daemon=True, name="isobench-feed")
        try:
            writer.start()
            try:
                code = proc.wait(timeout)
            except subprocess.TimeoutExpired:
                raise TimeoutError(f"{argv[0]} {argv[1]} took over {timeout:g} s") from None
        finally:
            if proc.poll() is None:
                kill()
                proc.wait()
            writer.join()
        if failed:
            raise failed[0]
        err.seek(0)
        return code, err.read().decode(errors="replace")


def add_probes(bundle, root: Path) -> None:
    """The probe layer's files written below `root` (an overlay's upper directory): the
    bundle's probes at roots.PROBE_DIR, an empty roots.WORKDIR (mode 1777)."""
    probes = root / roots.PROBE_DIR.lstrip("/")
    probes.mkdir(parents=True, exist_ok=True)
    probes.parent.chmod(0o755)
    probes.chmod(0o755)
    work = root / roots.WORKDIR.lstrip("/")
    work.mkdir(exist_ok=True)
    work.chmod(0o1777)
    for name in sorted(bundle.probes):
        dest = probes / name
        shutil.copyfile(bundle.probes[name], dest)
        dest.chmod(0o755)


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
PROBES_ENV = ("PATH=/probes:/bin", "HOME=/")  # the probes' own image
# an isobench rootfs: the PATH docker gives an image without one, Debian's default
ROOTFS_ENV = ("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root")


def oci_config(
    args: list[str],
    rootfs: Path,
    cgroups_path: str,
    *,
    network: str = "none",
    hostname: str = "isobench",
    rlimits: dict[str, tuple[int, int]] | None = None,
    extra_mounts: list[dict[str, Any]] | None = None,
    cwd: str = WORKDIR,
    env: tuple[str, ...] = PROBES_ENV,
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
            "env": list(env),
            "cwd": cwd,
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
