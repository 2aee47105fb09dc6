"""The direct `qemu` kind: qemu-system-x86_64 itself (`-machine microvm` where the build
has it, under KVM), serial console on stdio read by a `Child`, inside a cgroup isobench
makes: comparing it with `libvirt` separates libvirt's share of startup. The shared VM
lifecycle (a boot per round, held guests) is bench/envs/vm.py's.

A guest's phases: submit = QEMU spawned (the io disk copy comes before), "ready" = the
console's first `ready`, "boot" = the guest's own uptime then, "exit" = QEMU exited
(it powers off, or a held guest's stop kills it), "cleaned" = its cgroup and files gone.
Every QEMU it starts is named (`-name`) after its instance, so `clean` can find it.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import threading
from pathlib import Path
from typing import Any

import psutil

from bench import interrupt
from bench.envs.base import Availability, Leftover, Option
from bench.envs.guest import GuestError, rootdisk
from bench.envs.guest.console import READY
from bench.envs.guest.kvm import kvm_availability
from bench.envs.guest.qemu_cmd import QemuSpec, qemu_command, qemu_machines
from bench.envs.process import Child
from bench.envs.vm import (
    VM_OPTIONS,
    Boot,
    Guest,
    VmEnvironment,
    kernel_availability,
    qemu_availability,
)
from bench.metrics.cgroup import (
    Cgroup,
    CgroupError,
    CgroupReader,
    find_leftovers,
    preexec_attach,
)
from bench.metrics.cgroup_parse import delta
from bench.metrics.procs import PeakSampler
from bench.resources import cache_dir

PREFIX = "isobench-"
KILLED = "QEMU killed"


class _LateSampler:
    """PeakSampler on a process whose pid appears later (QEMU's -pidfile)."""

    def __init__(self, pidfile: Path):
        self.pidfile = pidfile
        self._stop = threading.Event()
        self._sampler: PeakSampler | None = None
        self._thread = threading.Thread(target=self._run, name="isobench-qemu-pid", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(OSError, ValueError, IndexError):
                pid = int(self.pidfile.read_text().split()[0])
                self._sampler = PeakSampler([pid]).start()
                return
            self._stop.wait(0.005)

    def start(self) -> _LateSampler:
        self._thread.start()
        return self

    def stop(self) -> dict[str, float]:
        self._stop.set()
        self._thread.join()
        return self._sampler.stop() if self._sampler else {}


class QemuGuest(Guest):
    """QEMU as a child in its own session and in a cgroup of its own (when one can be
    made): its console is the child's stdout."""

    def __init__(self, argv: list[str], name: str, pidfile: Path):
        self.cg = None
        with contextlib.suppress(CgroupError, OSError):
            self.cg = Cgroup.create(name)
        try:
            self.before = self.cg.read() if self.cg else {}
            self.sampler = _LateSampler(pidfile).start()
            try:
                self.child = Child(
                    argv,
                    preexec_fn=preexec_attach(self.cg.procs_files) if self.cg else None,
                    on_kill=self.cg.kill_all if self.cg else None,
                )
            except BaseException:
                self.sampler.stop()
                raise
        except BaseException:
            self._remove_cgroup()
            raise
        self.boot = Boot(self.child.res.t_submit, KILLED)

    def live_cgroup(self) -> CgroupReader | None:
        """QEMU's cgroup while it runs (made for it under the instance's name), when its
        memory can be read."""
        if self.cg is None or self.cg.read().get("mem_current_mib") is None:
            return None
        return self.cg

    def wait_ready(self, timeout: float) -> bool:
        return self.child.wait_ready(timeout)

    def wait_exit(self, timeout: float) -> bool:
        return self.child.wait_exit(timeout)

    def power_off(self) -> None:
        self.child.kill()

    def finish(self, *, timed_out: bool, stopped: bool) -> Boot:
        try:
            res = self.child.result(timed_out=timed_out)
            peaks = self.sampler.stop()
            boot = self.boot
            boot.phases, boot.timed_out = res.phases(), res.timed_out
            ready = [READY] if res.t_ready is not None else []
            boot.lines = [*res.before_ready, *ready, *res.lines]
            if res.exit_code not in (0, None) and not res.timed_out and not stopped:
                boot.failure = f"QEMU exited with status {res.exit_code}"
            if res.stderr.strip():
                boot.detail = f"QEMU: {res.stderr.strip().splitlines()[-1][:200]}"
            if self.cg:
                boot.cgroup = delta(self.before, self.cg.read())
                boot.host_side["cpu_ms"] = boot.cgroup.get("cpu_total_ms", 0.0)
            boot.host_side.update({k: v for k, v in peaks.items() if k.endswith("_mib")})
            return boot
        finally:
            self._remove_cgroup()

    def _remove_cgroup(self) -> None:
        if self.cg:
            with interrupt.shielded(), contextlib.suppress(CgroupError, OSError):
                self.cg.kill_all()
                self.cg.remove()


def _named_qemus(prefix: str) -> list[tuple[psutil.Process, str]]:
    """QEMU processes whose `-name` starts with `prefix` (what isobench names them)."""
    found = []
    for proc in psutil.process_iter(["name", "cmdline"]):
        argv = proc.info["cmdline"] or []
        if not (proc.info["name"] or "").startswith("qemu-system"):
            continue
        for flag, value in zip(argv, argv[1:], strict=False):
            if flag == "-name" and value.startswith(prefix):
                found.append((proc, value))
    return found


def _kill(proc: psutil.Process) -> None:
    with contextlib.suppress(psutil.Error):
        proc.send_signal(signal.SIGKILL)
        proc.wait(5)


class QemuEnv(VmEnvironment):
    kind = "qemu"
    summary = "a guest under qemu-system-x86_64 directly (microvm), no libvirt"
    options = {
        **VM_OPTIONS,
        "machine": Option(
            None,
            "QEMU machine type (default: microvm where available under KVM, q35 under TCG)",
            choices=("microvm", "q35"),
        ),
    }

    _machine = ""

    @property
    def machine(self) -> str:
        chosen = self.opts["machine"] or self._machine
        if chosen:
            return chosen
        # microvm has no HPET / ACPI PM timer: under TCG on a busy host the guest cannot
        # calibrate its TSC against the PIT, marks it unstable and hangs (3 of 8 boots
        # here), and its clock falls back to jiffies. KVM gives it kvmclock instead.
        has_microvm = self.binary and "microvm" in qemu_machines(self.binary)
        return "microvm" if has_microvm and self.accel == "kvm" else "q35"

    def prepare(self, bundle) -> None:
        super().prepare(bundle)
        self._machine = self.machine  # resolve once
        if self._machine not in qemu_machines(self.binary):
            raise GuestError(f"this QEMU has no machine type {self._machine}")

    @classmethod
    def probe(cls, opts: dict[str, Any] | None = None) -> Availability:
        q = qemu_availability()
        if not q.ok:
            return q
        k = kernel_availability((opts or {}).get("kernel"))
        if not k.ok:
            return Availability(False, k.reason, q.versions)
        kvm = kvm_availability()
        note = "" if kvm.ok else f"TCG only: {kvm.reason}"
        return Availability(True, note, {**q.versions, **k.versions})

    @classmethod
    def details(cls) -> list[tuple[str, Availability]]:
        return [
            ("qemu binary", qemu_availability()),
            ("KVM", kvm_availability(trial=True)),
            ("guest kernel", kernel_availability()),
        ]

    @classmethod
    def leftovers(cls, opts: dict[str, Any] | None = None) -> list[Leftover]:
        """QEMU processes isobench named (their cgroups are found as cgroups); and, for
        both VM kinds, root disks in the guest cache whose rootfs is gone or whose build
        was interrupted (guest/rootdisk.py)."""
        out = [
            Leftover(f"QEMU process {proc.pid} ({name})", lambda p=proc: _kill(p))
            for proc, name in _named_qemus(PREFIX)
        ]
        for why, path in rootdisk.leftovers(cache_dir()):
            out.append(Leftover(f"{path} ({why})", lambda p=path: shutil.rmtree(p, True)))
        return out

    def _guest(self, name: str, spec: QemuSpec, scratch: Path) -> Guest:
        pidfile = scratch / "qemu.pid"
        argv = [*qemu_command(spec), "-name", name, "-pidfile", str(pidfile)]
        return QemuGuest(argv, name, pidfile)

    def _cleanup(self) -> None:
        """A QEMU or cgroup of this environment that outlived its instance (none should)."""
        for proc, _ in _named_qemus(f"{self.ctx.prefix}-"):
            _kill(proc)
        for path in find_leftovers():
            if path.name.startswith(f"{self.ctx.prefix}-"):
                with contextlib.suppress(CgroupError, OSError):
                    Cgroup.at(path).remove()

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        if self.image is not None:
            root = (Path("<root.qcow2>"), "qcow2") if self.root_disk else None
            spec = self._spec_for("<cmdline>", Path("<io.raw>"), root=root)
            d["argv_template"] = qemu_command(spec)
        return d
