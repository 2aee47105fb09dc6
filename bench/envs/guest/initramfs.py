"""The guest's initramfs: static busybox as /init's shell, the bundle's static probes
under /probes, the kernel modules; gzip, cached under the cache directory by (bundle,
kernel, init script). `trial_initramfs` is the same without probes, for the KVM trial.

/init (INIT_SCRIPT) mounts, loads the modules, runs the probes the kernel command line
names (RUN_SCRIPT, see console.py for both ends of that protocol) and powers off. A boot
for the net workload (`isobench.net=ADDR/30`) first loads virtio-net and gives the
guest's NIC that address (net_up). A boot from an isobench rootfs (`isobench.root=1`)
mounts its root disk (rootdisk.py) and switch_roots into it first (ROOT_STAGE), where
STAGE2_SCRIPT runs the probes the same way. A probe in serve mode (`isobench.serve=1`)
gets the control port (channel.py, CTL_SCRIPT) as its stdin and, behind a relay that
puts its lines up to `ready` on the console, its stdout."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from bench.bundle import find_busybox
from bench.envs.guest import GuestError
from bench.envs.guest.channel import PORT_NAME
from bench.envs.guest.cpio import DIR, LNK, REG, CpioEntry, write_newc
from bench.envs.guest.kernel import GuestKernel, sha256_file
from bench.envs.guest.modules import (
    BASE_MODULES,
    DISK_MODULES,
    NET_MODULES,
    ModuleTree,
    read_module,
)
from bench.envs.guest.rootdisk import BUSYBOX_PATH, IO_SERIAL, ROOT_SERIAL
from bench.envs.roots import PROBE_DIR, WORKDIR

NO_BUSYBOX = "no static busybox for the guest's init: apt-get install busybox-static"

# What init does once its modules are loaded: read the words of the kernel command line
# ($words), mount the io disk if asked (mount_io), bring up the NIC if asked (net_up
# ADDR/30), then run each probe in sequence, every
# one delimited on the console and killed when it outlives the time limit. Kept apart
# from the rest of init so the tests run it under the host's busybox sh on fake probes.
RUN_SCRIPT = (
    f"\nport_name={PORT_NAME}"
    + r"""
disk=0; limit=0; net=""
for w in $words; do
  case "$w" in
    isobench.disk=1) disk=1 ;;
    isobench.timeout=*) limit="${w#isobench.timeout=}" ;;
    isobench.net=*) net="${w#isobench.net=}" ;;
  esac
done
[ "$disk" = 1 ] && mount_io
[ -n "$net" ] && net_up "$net"
read up idle < /proc/uptime
echo "isobench-uptime $up"
n=0; probe=""; serve=0; ctl=""; tmp="${tmp:-/tmp}"
relay() {  # a serving probe's stdout: its lines up to `ready` to the console, then the port
  while IFS= read -r l; do
    printf '%s\n' "$l"
    [ "$l" = ready ] && exec $bb cat >&3
  done
}
run() {  # the pending $probe with "$@" in a session of its own, watched by a dog that
  # kills the session (the probe and its children) once it outlives $limit seconds; in
  # serve mode its stdin is the control port (fd 3) and its stdout goes through relay
  if [ "$serve" = 1 ] && [ -z "$ctl" ]; then
    ctl_open || { echo "isobench-error no control port ($port_name) for $probe"; return; }
    ctl=1
  fi
  n=$((n + 1))
  echo "isobench-begin $n $probe"
  rpid=""
  if [ "$serve" = 1 ]; then
    out="$tmp/isobench-out.$n"
    $bb mkfifo "$out"
    relay < "$out" &
    rpid=$!
    $bb setsid "$probes/$probe" "$@" <&3 > "$out" &
  else
    $bb setsid "$probes/$probe" "$@" &
  fi
  pid=$!
  (
    t=0
    while [ "$t" -lt "$limit" ]; do
      $bb sleep 1
      $bb kill -0 "$pid" 2>/dev/null || exit 0
      t=$((t + 1))
    done
    echo "isobench-timeout $n $limit"
    $bb kill -9 "-$pid"
  ) &
  wait "$pid"
  rc=$?
  if [ -n "$rpid" ]; then wait "$rpid"; $bb rm -f "$out"; fi
  echo "isobench-exit $n $rc"
}
set --
for w in $words; do
  case "$w" in
    isobench.run=*)
      [ -n "$probe" ] && run "$@"
      probe="${w#isobench.run=}"; serve=0
      set --
      ;;
    isobench.serve=1) serve=1 ;;
    isobench.arg=*) set -- "$@" "$(echo "${w#isobench.arg=}" | $bb base64 -d)" ;;
  esac
done
[ -n "$probe" ] && run "$@"
[ "$n" = 0 ] && echo ready
"""
)

# A serving probe's control port (channel.py): the virtserialport named $port_name,
# found by that name in sysfs once the host has named it, opened once (a port takes one
# opener) read-write as init's fd 3; RUN_SCRIPT gives it to the probe. Kept out of
# RUN_SCRIPT, as mount_io and net_up are, so that the tests can give it a port of theirs.
CTL_SCRIPT = r"""
ctl_open() {  # fd 3: the control port, read and written; 1 when it never showed up
  i=0
  while [ "$i" -lt 500 ]; do
    for f in /sys/class/virtio-ports/*/name; do
      [ "$($bb cat "$f" 2>/dev/null)" = "$port_name" ] || continue
      d="${f%/name}"; d="/dev/${d##*/}"
      [ -c "$d" ] && command exec 3<>"$d" && return 0  # `command`: init outlives a failure
    done
    $bb usleep 10000; i=$((i + 1))
  done
  return 1
}
"""

# A guest with a root disk (`isobench.root=1`: an isobench rootfs, rootdisk.py): init
# loads the disk modules, finds the root disk and the io disk by their virtio serials,
# mounts the root disk at /newroot, the io disk (if asked) at its roots.WORKDIR, a tmpfs
# at /tmp and /dev/shm, brings the NIC up (if asked: the modules go with the
# initramfs), moves /proc /sys /dev into it and switch_roots there into STAGE2_SCRIPT,
# run by the busybox on the disk: the same RUN_SCRIPT, the probes at roots.PROBE_DIR.
ROOT_STAGE = rf"""
find_disk() {{  # the vdX whose virtio serial is $1
  i=0
  while [ "$i" -lt 500 ]; do
    for s in /sys/block/vd*/serial; do
      [ "$($bb cat "$s" 2>/dev/null)" = "$1" ] || continue
      d="${{s%/serial}}"; echo "${{d##*/}}"; return 0
    done
    $bb usleep 10000; i=$((i + 1))
  done
  return 1
}}
root_stage() {{
  load /etc/isobench/modules.disk
  dev=$(find_disk {ROOT_SERIAL}) || fail "no root disk (virtio serial {ROOT_SERIAL})"
  $bb mount -t ext4 "/dev/$dev" /newroot || fail "mount /dev/$dev (root disk) on /newroot"
  for w in $words; do
    case "$w" in
      isobench.disk=1)
        dev=$(find_disk {IO_SERIAL}) || fail "no io disk (virtio serial {IO_SERIAL})"
        $bb mount -t ext4 "/dev/$dev" /newroot{WORKDIR} || fail "mount /dev/$dev on {WORKDIR}"
        ;;
      isobench.net=*) net_up "${{w#isobench.net=}}" ;;
    esac
  done
  for d in proc sys dev tmp; do $bb mkdir -p "/newroot/$d"; done
  $bb mount -t tmpfs -o mode=1777 tmpfs /newroot/tmp || fail "mount /tmp"
  for d in proc sys dev; do $bb mount --move "/$d" "/newroot/$d" || fail "mount --move /$d"; done
  $bb mkdir -p /newroot/dev/shm /newroot/dev/pts
  $bb mount -t tmpfs -o mode=1777 tmpfs /newroot/dev/shm
  $bb mount -t devpts devpts /newroot/dev/pts
  exec $bb switch_root /newroot {BUSYBOX_PATH} sh -c "$($bb cat /etc/isobench/stage2)"
  fail "switch_root /newroot"
}}
"""

# After switch_root: / is the rootfs; proc, sys, dev, /tmp, the io disk and the NIC are
# set up already (mount_io and net_up do nothing).
STAGE2_SCRIPT = (
    rf"""# isobench guest init, stage 2: / is the rootfs; run the probes, power off.
bb={BUSYBOX_PATH}
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8
mount_io() {{ :; }}
net_up() {{ :; }}
words=$($bb cat /proc/cmdline)
probes={PROBE_DIR}
cd /
"""
    + CTL_SCRIPT
    + RUN_SCRIPT
    + rf"""[ "$disk" = 1 ] && $bb umount {WORKDIR}
$bb poweroff -f
"""
)

INIT_SCRIPT = (
    r"""#!/bin/sh
# isobench guest init: mount, load modules, run the probes on the command line, power off.
bb=/bin/busybox
$bb mount -t proc proc /proc
$bb mount -t sysfs sysfs /sys
$bb mount -t devtmpfs devtmpfs /dev
fail() { echo "isobench-error $*"; $bb poweroff -f; }
load() { for m in $($bb cat "$1"); do $bb insmod "/lib/modules/$m.ko" || fail "insmod $m"; done; }
mount_io() {
  load /etc/isobench/modules.disk
  i=0
  while [ ! -b /dev/vda ] && [ "$i" -lt 500 ]; do $bb usleep 10000; i=$((i + 1)); done
  $bb mount -t ext4 /dev/vda /mnt/io || fail "mount /dev/vda"
}
net_up() {  # the guest's only NIC (eth0) gets ADDR/30
  load /etc/isobench/modules.net
  i=0
  while [ ! -e /sys/class/net/eth0 ] && [ "$i" -lt 500 ]; do $bb usleep 10000; i=$((i + 1)); done
  $bb ip link set lo up
  $bb ip addr add "$1" dev eth0 || fail "ip addr add $1 dev eth0"
  $bb ip link set eth0 up || fail "ip link set eth0 up"
}
"""
    + ROOT_STAGE
    + r"""
load /etc/isobench/modules.base
words=$($bb cat /proc/cmdline)
for w in $words; do [ "$w" = isobench.root=1 ] && root_stage; done
probes=/probes
"""
    + CTL_SCRIPT
    + RUN_SCRIPT
    + r"""[ "$disk" = 1 ] && $bb umount /mnt/io
$bb poweroff -f
"""
)


@dataclass(frozen=True)
class GuestImage:
    kernel: GuestKernel
    initramfs: Path
    initramfs_sha256: str
    modules: dict[str, list[str]]  # "base"/"disk"/"net" -> load order

    def describe(self) -> dict:
        return {
            "kernel": self.kernel.describe(),
            "initramfs": str(self.initramfs),
            "initramfs_sha256": self.initramfs_sha256,
            "modules": self.modules,
        }


def initramfs_entries(
    probes: Mapping[str, Path],
    busybox: Path,
    modules: Mapping[str, bytes],
    order: Mapping[str, list[str]],
) -> list[CpioEntry]:
    """The initramfs contents, in archive order (directories before their files)."""
    entries = [
        CpioEntry(d, DIR | 0o755)
        for d in (
            "bin",
            "dev",
            "etc",
            "etc/isobench",
            "lib",
            "lib/modules",
            "mnt",
            "mnt/io",
            "newroot",
            "probes",
            "proc",
            "sys",
            "tmp",
        )
    ]
    entries.append(CpioEntry("bin/busybox", REG | 0o755, busybox.read_bytes()))
    entries.append(CpioEntry("bin/sh", LNK | 0o777, b"busybox"))
    entries.append(CpioEntry("init", REG | 0o755, INIT_SCRIPT.encode()))
    entries.append(CpioEntry("etc/isobench/stage2", REG | 0o644, STAGE2_SCRIPT.encode()))
    for group, names in order.items():
        entries.append(
            CpioEntry(
                f"etc/isobench/modules.{group}",
                REG | 0o644,
                "".join(f"{n}\n" for n in names).encode(),
            )
        )
    for name in sorted(modules):
        entries.append(CpioEntry(f"lib/modules/{name}.ko", REG | 0o644, modules[name]))
    for name in sorted(probes):
        entries.append(CpioEntry(f"probes/{name}", REG | 0o755, probes[name].read_bytes()))
    return entries


def build_initramfs(bundle, kernel: GuestKernel, cache: Path) -> GuestImage:
    """The bundle's guest initramfs for this kernel, built once into cache/guest/."""
    if bundle.busybox is None:
        raise GuestError(NO_BUSYBOX)
    probes = {n: p for n, p in bundle.probes.items() if n != "busybox"}
    return _initramfs(bundle.hash, probes, bundle.busybox, kernel, cache)


def trial_initramfs(kernel: GuestKernel, cache: Path) -> GuestImage:
    """An initramfs without probes (init itself says `ready`): enough for the KVM
    trial, so doctor needs no compiled bundle."""
    busybox = find_busybox()
    if busybox is None:
        raise GuestError(NO_BUSYBOX)
    return _initramfs(f"trial-{sha256_file(busybox)[:16]}", {}, busybox, kernel, cache)


def _initramfs(
    name: str, probes: Mapping[str, Path], busybox: Path, kernel: GuestKernel, cache: Path
) -> GuestImage:
    """Built once per (name, kernel, init script) into cache/guest/."""
    init = hashlib.sha256((INIT_SCRIPT + STAGE2_SCRIPT).encode()).hexdigest()[:8]
    key = f"{name}-{kernel.sha256[:16]}-{init}"
    out_dir = Path(cache) / "guest"
    target = out_dir / f"initramfs-{key}.cpio.gz"
    meta_path = out_dir / f"initramfs-{key}.json"
    if target.is_file() and meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        return GuestImage(kernel, target, meta["sha256"], meta["modules"])
    order: dict[str, list[str]] = {"base": [], "disk": [], "net": []}
    blobs: dict[str, bytes] = {}
    if kernel.modules is not None:
        tree = ModuleTree.open(kernel.modules)
        base = tree.order([m for m in BASE_MODULES if m in tree.files or m in tree.builtin])
        disk = [m for m in tree.order(DISK_MODULES) if m not in base]
        # a kernel without virtio-net boots every other workload; its net boot says why
        have = [m for m in NET_MODULES if m in tree.files or m in tree.builtin]
        net = [m for m in tree.order(have) if m not in base and m not in disk]
        order = {"base": base, "disk": disk, "net": net}
        blobs = {n: read_module(tree.files[n]) for n in base + disk + net}
    archive = gzip.compress(
        write_newc(initramfs_entries(probes, busybox, blobs, order)),
        compresslevel=6,
        mtime=0,
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    _atomic_write(target, archive)
    digest = hashlib.sha256(archive).hexdigest()
    _atomic_write(
        meta_path,
        json.dumps(
            {"sha256": digest, "modules": order, "kernel": kernel.describe()}, indent=2
        ).encode(),
    )
    return GuestImage(kernel, target, digest, order)


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
