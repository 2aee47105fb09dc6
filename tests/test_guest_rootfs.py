"""Guests that boot from an isobench rootfs (`rootfs=NAME` on qemu and libvirt, issue 16):
the root disk's recipe and the init's text (fast), then real TCG boots from a minbase
tree built once for this module (in a private cache, with a marker directory copied
in): the probes run with the tree as / (a directory only the tree has, the tree's own
/bin/sh and /etc/debian_version), the cached disk is reused and never written, nothing
is left after a round, a timeout, a held guest's stop or Ctrl-C."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import psutil
import pytest

from bench.envs import roots
from bench.envs.base import HOLD, Context, Invocation
from bench.envs.guest import GuestError, initramfs, kernel, qemu_cmd, rootdisk
from bench.envs.guest.console import cmdline, guest_run
from bench.envs.guest.cpio import read_newc, write_newc
from bench.envs.guest.kernel import sha256_file
from bench.envs.libvirt import URI, LibvirtEnv, domain_xml
from bench.envs.qemu import QemuEnv
from bench.runner import Interrupted
from tests.conftest import MARKER, MARKER_DIR, MARKER_ROOTFS, missing

NAME = MARKER_ROOTFS  # conftest's tree
# a probe of the test's bundle that is a script for the tree's own /bin/sh: it runs only
# where / is the tree, and reports the tree's /etc/debian_version and what it sees as /
OSCHECK = """#!/bin/sh
echo ready
v=$(cat /etc/debian_version)
m=$(cat /opt/isobench-test/marker.txt)
echo "{\\"probe\\": \\"oscheck\\", \\"op\\": \\"os\\", \\"iterations\\": 1, \\"elapsed_ns\\": 1, \
\\"metrics\\": {\\"ppid\\": $PPID}, \\"units\\": {\\"ppid\\": \\"pid\\"}, \
\\"debian_version\\": \\"$v\\", \\"marker\\": \\"$m\\", \\"path\\": \\"$PATH\\"}"
"""


# ---------------------------------------------------------------- pure parts


def test_the_debugfs_script_adds_probes_busybox_and_the_io_directory():
    text = rootdisk.debugfs_commands(["syscall", "io"])
    lines = text.splitlines()
    assert lines[:4] == [
        "mkdir isobench",
        "mkdir isobench/probes",
        "mkdir isobench/work",
        "sif isobench/work mode 041777",
    ]
    assert "write probes/io isobench/probes/io" in lines
    assert lines.index("write probes/io isobench/probes/io") < lines.index(
        "write probes/syscall isobench/probes/syscall"
    )
    assert "sif isobench/probes/syscall mode 0100755" in lines
    assert lines[-2:] == ["write busybox isobench/busybox", "sif isobench/busybox mode 0100755"]
    with pytest.raises(GuestError, match="plain file name"):
        rootdisk.debugfs_commands(["a b"])


def test_the_disk_key_changes_with_each_input():
    keys = {
        rootdisk.disk_key("r1", "b1", "s1"),
        rootdisk.disk_key("r2", "b1", "s1"),
        rootdisk.disk_key("r1", "b2", "s1"),
        rootdisk.disk_key("r1", "b1", "s2"),
    }
    assert len(keys) == 4 and rootdisk.disk_key("r1", "b1", "s1") in keys


def test_debugfs_listing_is_parsed():
    text = "/2/040755/0/0/./\n/2/040755/0/0/../\n/12/100755/0/0/io/8800/\n/13/100755/0/0/cpu/10/\n"
    assert rootdisk.listed(text) == {"io": 8800, "cpu": 10}


def test_a_rootfs_boot_switches_root_and_its_io_directory_is_the_workdir():
    inv = Invocation("io", "io", ("--dir", "{workdir}", "--op", "seq_write"))
    run = guest_run(inv, roots.WORKDIR)
    assert run.args[1] == roots.WORKDIR and run.disk
    assert guest_run(inv).args[1] == "/mnt/io"  # the initramfs path as before
    words = cmdline([run], 60, root=True).split()
    assert "isobench.root=1" in words and "isobench.disk=1" in words
    assert "isobench.root=1" not in cmdline([run], 60).split()
    # the init: the root stage before the probes, stage 2 on the disk's busybox
    init = initramfs.INIT_SCRIPT
    assert init.index("root_stage; done") < init.index("probes=/probes")
    assert f"switch_root /newroot {rootdisk.BUSYBOX_PATH} sh -c" in init
    assert f"find_disk {rootdisk.ROOT_SERIAL}" in init and f"/newroot{roots.WORKDIR}" in init
    stage2 = initramfs.STAGE2_SCRIPT
    assert f"probes={roots.PROBE_DIR}" in stage2 and initramfs.RUN_SCRIPT in stage2
    assert stage2.rstrip().endswith("poweroff -f")


def test_the_initramfs_carries_stage_two(tmp_path):
    busybox = tmp_path / "busybox"
    busybox.write_bytes(b"bb")
    entries = initramfs.initramfs_entries({}, busybox, {}, {"base": [], "disk": []})
    by_name = {e.name: e for e in read_newc(write_newc(entries))}
    assert by_name["etc/isobench/stage2"].data == initramfs.STAGE2_SCRIPT.encode()
    assert "newroot" in by_name


def _spec(tmp_path, **kw):
    k = kernel.GuestKernel(tmp_path / "vmlinuz", "6.1", "0" * 64, None, "option")
    img = initramfs.GuestImage(k, tmp_path / "i.gz", "0" * 64, {})
    return qemu_cmd.QemuSpec("/usr/bin/qemu-system-x86_64", img, "x", "tcg", "q35", **kw)


def test_qemu_and_libvirt_attach_the_root_disk_by_serial(tmp_path):
    root = (tmp_path / "root.qcow2", "qcow2")
    spec = _spec(tmp_path, disk=tmp_path / "io.raw", root=root)
    argv = qemu_cmd.qemu_command(spec)
    devices = [argv[i + 1] for i, a in enumerate(argv) if a == "-device"]
    assert devices == [
        "virtio-blk-pci,drive=root,serial=isobench-root",
        "virtio-blk-pci,drive=io,serial=isobench-io",
    ]
    assert f"file={tmp_path / 'root.qcow2'},if=none,id=root,format=qcow2,cache=none" in argv
    disks = ET.fromstring(domain_xml("isobench-x-1", spec, tmp_path / "c.log")).findall(
        "devices/disk"
    )
    got = [
        (d.find("target").get("dev"), d.find("serial").text, d.find("driver").get("type"))
        for d in disks
    ]
    assert got == [("vda", "isobench-root", "qcow2"), ("vdb", "isobench-io", "raw")]
    # without a root disk: the io disk as before (vda, no serial)
    plain = qemu_cmd.qemu_command(_spec(tmp_path, disk=tmp_path / "io.raw"))
    assert "virtio-blk-pci,drive=io" in plain and "id=root" not in " ".join(plain)


# ---------------------------------------------------------------- the disk, for real


@dataclasses.dataclass
class _Tree:
    """What root_disk reads of a Rootfs: a tiny tree stands in for a built one."""

    tree: Path
    key: str
    name: str = "tiny"

    @property
    def record(self):
        return {"size": {"allocated": 1 << 20, "inodes": 16}}


def _debugfs(image: Path, request: str) -> str:
    return subprocess.run(
        ["debugfs", "-R", request, str(image)], capture_output=True, text=True, check=True
    ).stdout


def test_the_root_disk_is_made_once_from_the_tree_and_the_probes(tmp_path, bundle, monkeypatch):
    monkeypatch.setattr(rootdisk, "HEADROOM_MIB", 8)  # a small image: quicker
    if not shutil.which("mke2fs") and not Path("/sbin/mke2fs").exists():
        missing("needs mke2fs (apt-get install e2fsprogs)")
    tree = tmp_path / "tree"
    (tree / "etc").mkdir(parents=True)
    (tree / "etc" / "os-release").write_text("ID=tiny\n")
    cache = tmp_path / "cache"
    disk = rootdisk.root_disk(_Tree(tree, "k" * 16), bundle, cache)
    assert disk.path.is_file() and sha256_file(disk.path) == disk.sha256
    assert rootdisk.listed(_debugfs(disk.path, f"ls -p {roots.PROBE_DIR}")) == {
        n: p.stat().st_size for n, p in bundle.probes.items()
    }
    assert _debugfs(disk.path, "cat /etc/os-release") == "ID=tiny\n"
    top = _debugfs(disk.path, "ls -p /isobench").splitlines()
    assert any(line.split("/")[2:6] == ["041777", "0", "0", "work"] for line in top), top
    stat = disk.path.stat()
    again = rootdisk.root_disk(_Tree(tree, "k" * 16), bundle, cache)
    assert again == disk and disk.path.stat().st_mtime_ns == stat.st_mtime_ns  # reused
    assert not list((cache / "guest").glob(".rootdisk-*"))
    # a tree with probes of its own at /isobench/probes: said, nothing left
    (tree / "isobench" / "probes").mkdir(parents=True)
    (tree / "isobench" / "probes" / "other").write_text("x")
    with pytest.raises(GuestError, match="not the bundle's probes"):
        rootdisk.root_disk(_Tree(tree, "j" * 16), bundle, cache)
    assert not list((cache / "guest").glob(".rootdisk-*"))
    # its rootfs is not in this cache: `clean` would remove the disk
    assert [p for _, p in rootdisk.leftovers(cache)] == [disk.path.parent]


def test_a_boots_overlay_is_backed_by_the_untouched_image(tmp_path, bundle):
    if not shutil.which("qemu-img"):
        missing("needs qemu-img (apt-get install qemu-utils)")
    image = tmp_path / "root.ext4"
    image.touch()
    os.truncate(image, 4 << 20)
    disk = rootdisk.RootDisk(image, "k", sha256_file(image), "r", "b", 4 << 20)
    path, fmt = rootdisk.overlay(disk, tmp_path)
    info = json.loads(
        subprocess.run(
            ["qemu-img", "info", "--output=json", str(path)], capture_output=True, check=True
        ).stdout
    )
    assert fmt == "qcow2" and info["format"] == "qcow2"
    assert info["backing-filename"] == str(image) and info["backing-filename-format"] == "raw"


# ---------------------------------------------------------------- real boots


@pytest.fixture(scope="module")
def tree(marker_rootfs):
    """The minbase rootfs with a marker directory (conftest), in a cache of its own."""
    if absent := [t for t in ("mke2fs", "debugfs") if not shutil.which(t)]:
        missing(f"needs {', '.join(absent)} (apt-get install e2fsprogs)")
    return marker_rootfs


@pytest.fixture(scope="module")
def guest_kernel():
    try:
        return str(kernel.find_kernel().path)  # in the normal cache, not the tree's
    except GuestError as e:
        missing(str(e))


@pytest.fixture
def ctx(tree, guest_kernel, tmp_path, monkeypatch):
    monkeypatch.setenv("ISOBENCH_CACHE", str(tree.root.parent.parent))  # where names resolve
    return Context(f"t{os.getpid()}", tmp_path / "scratch", tree.root.parent.parent)


@pytest.fixture(scope="module")
def oscheck_bundle(bundle, tmp_path_factory):
    """The real bundle plus the `oscheck` script probe (its own hash: its own disk)."""
    script = tmp_path_factory.mktemp("oscheck") / "oscheck"
    script.write_text(OSCHECK)
    script.chmod(0o755)
    probes = {**bundle.probes, "oscheck": script}
    return dataclasses.replace(bundle, probes=probes, hash=f"{bundle.hash}-oscheck")


def _left(ctx: Context) -> list[str]:
    files = [str(p) for p in ctx.scratch.iterdir()] if ctx.scratch.is_dir() else []
    qemus = [
        " ".join(p.info["cmdline"] or [])
        for p in psutil.process_iter(["cmdline"])
        if ctx.prefix in " ".join(p.info["cmdline"] or [])
    ]
    return files + qemus


@pytest.mark.requires("libvirt")
def test_qemu_boots_the_tree_and_runs_the_probes_in_it(ctx, tree, oscheck_bundle, guest_kernel):
    env = QemuEnv({"rootfs": NAME, "accel": "tcg", "memory": "1g", "kernel": guest_kernel}, ctx)
    round_ = [
        Invocation("syscall", "syscall", ("--op", "null", "--op", "stat", "--reps", "1")),
        Invocation("marker", "io", ("--dir", MARKER_DIR, "--op", "create_unlink")),
        Invocation("io", "io", ("--dir", "{workdir}", "--file-mib", "4", "--op", "seq_write")),
        Invocation("startup", "startup"),
        Invocation("oscheck", "oscheck"),
    ]
    try:
        env.prepare(oscheck_bundle)
        disk = env.root_disk
        made = disk.path.stat()
        syscall, marker, io, startup, oscheck = env.launch_round(round_, 180)
        desc = env.describe()
        (late,) = env.launch_round([Invocation("startup", "startup")], 0.5)  # a timeout
    finally:
        env.cleanup()
    for launch in (syscall, marker, io, startup, oscheck):
        assert launch.status == "ok", (launch.reason, launch.stderr_tail)
        assert launch.extra["emulated"] is True
    assert {r["op"] for r in syscall.records} == {"null", "stat"}
    assert [r["op"] for r in marker.records] == ["create_unlink"]  # only the tree has the dir
    assert [r["op"] for r in io.records] == ["seq_write"]  # the io disk at roots.WORKDIR
    (rec,) = oscheck.records
    assert rec["debian_version"] == (tree.tree / "etc/debian_version").read_text().strip()
    assert rec["marker"] == MARKER.strip() and "/usr/bin" in rec["path"]
    assert startup.phases["boot"] > 0
    assert late.status == "timeout" and "QEMU killed" in late.reason
    # the manifest: the rootfs as the other kinds record it, and the disk's hash
    assert desc["rootfs"] == roots.describe(tree)
    assert desc["root_disk"]["sha256"] == disk.sha256 and desc["root_disk"]["rootfs"] == tree.key
    assert any("serial=isobench-root" in a for a in desc["argv_template"])
    # the cached disk: written by nobody, reused by the next prepare
    assert sha256_file(disk.path) == disk.sha256
    again = QemuEnv({"rootfs": NAME, "accel": "tcg", "kernel": guest_kernel}, ctx.for_env(2))
    again.prepare(oscheck_bundle)
    assert again.root_disk == disk and disk.path.stat().st_mtime_ns == made.st_mtime_ns
    assert not _left(ctx)


@pytest.mark.requires("libvirt")
def test_a_libvirt_guest_from_the_tree_leaves_nothing_after_stop_or_ctrl_c(
    ctx, tree, oscheck_bundle, guest_kernel
):
    import libvirt

    env = LibvirtEnv({"rootfs": NAME, "accel": "tcg", "kernel": guest_kernel}, ctx)
    try:
        env.prepare(oscheck_bundle)  # the disk the qemu test made, if it ran
        disk = env.root_disk
        held = env.start(HOLD, 180)
        assert held.wait_ready(), held.guest.boot.lines[-20:]
        overlay = held.scratch / "root.qcow2"
        info = json.loads(
            subprocess.run(
                ["qemu-img", "info", "-U", "--output=json", str(overlay)],
                capture_output=True,
                check=True,
            ).stdout
        )
        assert info["backing-filename"] == str(disk.path)
        conn = libvirt.open(URI)
        try:
            xml = ET.fromstring(conn.lookupByName(held.name).XMLDesc(0))
        finally:
            conn.close()
        root = xml.find("devices/disk")
        assert root.find("source").get("file") == str(overlay)
        assert root.find("serial").text == rootdisk.ROOT_SERIAL
        assert any(held.name in x.what for x in LibvirtEnv.leftovers())
        launch = held.stop()
        old = signal.signal(signal.SIGALRM, _interrupt)  # Ctrl-C during the next boot
        signal.setitimer(signal.ITIMER_REAL, 3.0)
        try:
            with pytest.raises(Interrupted):
                env.launch_round([Invocation("startup", "startup")], 120)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old)
    finally:
        env.cleanup()
    assert launch.status == "ok", launch.reason
    assert launch.phases["ready"] < launch.phases["stop"] <= launch.phases["exit"]
    assert not [x for x in LibvirtEnv.leftovers() if ctx.prefix in x.what]
    assert sha256_file(disk.path) == disk.sha256
    assert not _left(ctx)


def _interrupt(signum, frame):
    raise Interrupted(signum)
