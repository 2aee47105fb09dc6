"""Whether KVM really works here. /dev/kvm may open and guests still hang under it (a
nested PVM host): a tiny guest without probes is booted under KVM once per (guest kernel,
QEMU, host kernel), with a timeout, and the verdict recorded in the cache; where it does
not boot, guests run under TCG and every result is labelled emulated."""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

from bench.envs.base import Availability
from bench.envs.guest import GuestError
from bench.envs.guest.console import cmdline
from bench.envs.guest.initramfs import GuestImage, trial_initramfs
from bench.envs.guest.kernel import GuestKernel, find_kernel
from bench.envs.guest.qemu_cmd import (
    QemuSpec,
    qemu_binary,
    qemu_command,
    qemu_machines,
    qemu_version,
)
from bench.envs.process import stream
from bench.resources import cache_dir

KVM_CHECK_S = 20.0  # a real KVM guest reaches init in well under a second
_KVM_LOCK = threading.Lock()


def kvm_device_problem() -> str | None:
    """Why /dev/kvm cannot even be opened (None: it can)."""
    if not Path("/dev/kvm").exists():
        return "/dev/kvm does not exist (no hardware virtualisation, or kvm module not loaded)"
    try:
        fd = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    except OSError as e:
        return f"/dev/kvm cannot be opened: {e.strerror}"
    os.close(fd)
    return None


def verdict_file(cache: Path) -> Path:
    return Path(cache) / "guest" / "kvm-check.json"


def _kvm_key(kernel: GuestKernel, binary: str) -> str:
    """What a KVM verdict holds for: the guest kernel, the QEMU binary (path and
    version) and the host kernel."""
    return f"{kernel.sha256[:16]}|{binary}|{qemu_version(binary)}|{os.uname().release}"


def _recorded(path: Path) -> dict[str, Any]:
    with contextlib.suppress(OSError, ValueError):
        data = json.loads(path.read_text())
        if isinstance(data.get("verdicts"), dict):
            return data
    return {"verdicts": {}}


def recorded_kvm_verdict(kernel: GuestKernel, binary: str, cache: Path) -> tuple[bool, str] | None:
    """The KVM verdict recorded in the cache for this guest kernel, QEMU and host
    kernel, if any (cheap: no guest is booted)."""
    v = _recorded(verdict_file(cache))["verdicts"].get(_kvm_key(kernel, binary))
    return None if v is None else (bool(v["ok"]), str(v["reason"]))


def kvm_verdict(
    image: GuestImage, binary: str, cache: Path, timeout: float = KVM_CHECK_S
) -> tuple[bool, str]:
    """Does this guest kernel really boot under KVM here? Checked once per (guest
    kernel, QEMU, host kernel) by a tiny boot with a timeout, recorded in the cache."""
    problem = kvm_device_problem()
    if problem:
        return False, f"{problem}: using TCG, results are emulated"
    with _KVM_LOCK:
        recorded = recorded_kvm_verdict(image.kernel, binary, cache)
        if recorded is not None:
            return recorded
        verdict = _kvm_trial(image, binary, timeout)
        path = verdict_file(cache)
        data = _recorded(path)
        data["verdicts"][_kvm_key(image.kernel, binary)] = {
            "ok": verdict[0],
            "reason": verdict[1],
            "checked": time.time(),
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=2) + "\n")
        os.replace(tmp, path)
        return verdict


def _kvm_trial(image: GuestImage, binary: str, timeout: float) -> tuple[bool, str]:
    """Boot a guest without probes under KVM (init says `ready`). The guest is a child
    in its own session: stream() kills and reaps it at the timeout or on an exception;
    it makes no files."""
    machine = "microvm" if "microvm" in qemu_machines(binary) else "q35"
    spec = QemuSpec(binary, image, cmdline([], timeout), "kvm", machine)
    res = stream(qemu_command(spec), timeout)
    if res.t_ready is not None and not res.timed_out:
        return True, f"a test guest booted under KVM in {res.phases()['ready'] / 1e9:.2f} s"
    if res.timed_out:
        return (
            False,
            f"/dev/kvm is present but a test guest did not boot under it within "
            f"{timeout:g} s (nested PVM?): using TCG, results are emulated",
        )
    last = (res.stderr.strip().splitlines() or ["no output"])[-1][:200]
    return False, f"a test guest under KVM failed ({last}): using TCG, results are emulated"


def kvm_availability(*, trial: bool = False) -> Availability:
    """Whether guests can use KVM here: the recorded verdict for the default guest kernel
    and this QEMU while its key still matches; without one, a trial boot when `trial`
    (doctor's detail row; recorded for the next time), else "not yet checked"."""
    problem = kvm_device_problem()
    if problem:
        return Availability(False, f"{problem}: VMs run under TCG (emulated)")
    binary = qemu_binary()
    if not binary:
        return Availability(False, "cannot check KVM: qemu-system-x86_64 not found")
    try:
        kernel = find_kernel()
        recorded = recorded_kvm_verdict(kernel, binary, cache_dir())
        if recorded is None and trial:
            image = trial_initramfs(kernel, cache_dir())
            recorded = kvm_verdict(image, binary, cache_dir())
    except GuestError as e:
        return Availability(False, f"cannot check KVM: {e}")
    if recorded is None:
        return Availability(
            True,
            "/dev/kvm opens; not yet checked by a test boot "
            "(`isobench doctor` or the first run with accel=auto does it)",
        )
    return Availability(*recorded)
