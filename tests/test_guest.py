"""Pure parts of the guest image: bzImage header, module order, cpio, command line."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from bench import guest

DATA = Path(__file__).parent / "data" / "guest"


def test_bzimage_version_from_recorded_header():
    head = (DATA / "bzimage-6.1.0-56-amd64.head").read_bytes()
    assert guest.bzimage_version(head) == "6.1.0-56-amd64"


def test_bzimage_version_rejects_other_files():
    assert guest.bzimage_version(b"\x7fELF" + b"\0" * 4096) is None
    assert guest.bzimage_version(b"") is None


def test_modules_dep_order_puts_dependencies_first():
    deps = {
        n: d for n, (_, d) in guest.parse_modules_dep((DATA / "modules.dep").read_text()).items()
    }
    order = guest.module_load_order(deps, ["virtio_pci", "virtio_blk", "ext4"])
    assert set(order) == {
        "virtio",
        "virtio_ring",
        "virtio_pci_modern_dev",
        "virtio_pci_legacy_dev",
        "virtio_pci",
        "virtio_blk",
        "crc16",
        "mbcache",
        "jbd2",
        "ext4",
    }
    for name in order:
        assert all(order.index(d) < order.index(name) for d in deps[name])
    assert len(order) == len(set(order))


def test_module_order_skips_builtin_and_names_missing():
    deps = {"a": ["b"], "b": []}
    assert guest.module_load_order(deps, ["a"], builtin=["b"]) == ["a"]
    with pytest.raises(guest.GuestError, match="virtio_mmio"):
        guest.module_load_order(deps, ["virtio_mmio"])


def test_module_name_strips_compression():
    assert guest.module_name("kernel/fs/ext4/ext4.ko.xz") == "ext4"
    assert guest.module_name("kernel/x/crc32c-generic.ko") == "crc32c_generic"


def test_cpio_round_trip():
    entries = [
        guest.CpioEntry("bin", guest.DIR | 0o755),
        guest.CpioEntry("bin/x", guest.REG | 0o755, b"abc"),
        guest.CpioEntry("bin/sh", guest.LNK | 0o777, b"busybox"),
        guest.CpioEntry("empty", guest.REG | 0o644, b""),
    ]
    data = guest.write_newc(entries)
    assert len(data) % 4 == 0
    assert guest.read_newc(data) == entries


def test_cmdline_carries_each_argument_as_data():
    args = ["--dir", "/mnt/io", "a b; $(reboot)", "'\""]
    line = guest.cmdline("io", args, disk=True)
    words = line.split()
    assert "isobench.probe=io" in words and "isobench.disk=1" in words
    decoded = [
        base64.b64decode(w.split("=", 1)[1]).decode()
        for w in words
        if w.startswith("isobench.arg=")
    ]
    assert decoded == args
    with pytest.raises(guest.GuestError):
        guest.cmdline("../x", [], disk=False)


def test_parse_console_separates_init_kernel_and_probe():
    con = guest.parse_console(
        ["Probing EDD", "isobench-uptime 1.25"], ['{"a": 1}', "isobench-exit 3"]
    )
    assert con.uptime_s == 1.25 and con.exit_code == 3
    assert con.probe_lines == ['{"a": 1}'] and con.other == ["Probing EDD"]


def test_find_kernel_explains_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("ISOBENCH_CACHE", str(tmp_path / "cache"))
    with pytest.raises(guest.GuestError, match="ISOBENCH_GUEST_KERNEL"):
        guest.find_kernel(env={}, boot=tmp_path, release="0.0-none")


def test_find_kernel_falls_back_to_a_package_unpacked_in_the_cache(tmp_path, monkeypatch):
    """No /boot kernel: the newest vmlinuz under <cache>/guest-kernel/boot is used."""
    monkeypatch.setenv("ISOBENCH_CACHE", str(tmp_path / "cache"))
    boot = tmp_path / "cache" / "guest-kernel" / "boot"
    boot.mkdir(parents=True)
    (boot / "vmlinuz-6.1.0-1-amd64").write_bytes(
        (DATA / "bzimage-6.1.0-56-amd64.head").read_bytes()
    )
    k = guest.find_kernel(env={}, boot=tmp_path, release="0.0-none")
    assert k.source == "cache" and k.path == boot / "vmlinuz-6.1.0-1-amd64"
