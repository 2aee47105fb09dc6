"""The guest side of the VM environments (libvirt, qemu), one job per module:

- `kernel`: which guest kernel to boot (an option, $ISOBENCH_GUEST_KERNEL, the host's
  own, a package unpacked into the cache) and the version in its bzImage header.
- `modules`: the kernel modules a guest needs (virtio, ext4), dependencies first.
- `cpio`: the initramfs format, a "newc" cpio archive (pure).
- `initramfs`: the guest's /init and the initramfs built from the bundle, cached.
- `console`: what host and guest say to each other: the kernel command line that tells
  init which probes to run, and the console lines that say how each went.
- `disk`: the io disk (an ext4 image copied per boot).
- `rootdisk`: a root disk from an isobench rootfs (its tree + the bundle's probes, ext4,
  cached; a qcow2 overlay per boot), which init switches root into.
- `qemu_cmd`: the QEMU binary, its machine types, the command line of a direct launch.
- `kvm`: whether KVM really works here (a trial boot, its verdict cached).

What the VM kinds themselves share (options, the boot per round, held guests) is in
bench/envs/vm.py.
"""

from __future__ import annotations


class GuestError(RuntimeError):
    """The guest image cannot be made; the message says what to provide."""
