"""Virtual machines: what the `libvirt` and `qemu` kinds share, and the direct `qemu` kind.

`VmEnvironment` holds the common lifecycle: find the guest kernel, build the initramfs
from the bundle (bench/guest.py), choose the accelerator (KVM only where a tiny guest
really boots under it, checked once and cached; otherwise TCG, and then every result is
labelled emulated), and turn the guest's console into a `Launch`.

`QemuEnv` runs qemu-system-x86_64 itself (`-machine microvm` where the build has it),
serial console on stdio through `stream()`, inside a cgroup isobench makes: comparing it
with `libvirt` separates libvirt's share of startup.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import shutil
import threading
import time
from pathlib import Path
from typing import Any

from bench import guest
from bench.envs.base import Availability, Context, Environment, Invocation, Launch, Option
from bench.envs.process import stream
from bench.metrics.cgroup import Cgroup, CgroupError, delta, preexec_attach
from bench.metrics.procs import PeakSampler
from bench.probeio import parse_lines
from bench.resources import cache_dir

KVM_CHECK_S = 20.0  # a real KVM guest reaches init in well under a second
KERNEL_LINE = re.compile(r"^\[\s*\d+\.\d+\]")
_SEQ = itertools.count(1)  # launch numbers, unique across every VM environment of a run
_KVM_VERDICTS: dict[str, tuple[bool, str]] = {}
_KVM_LOCK = threading.Lock()

VM_OPTIONS: dict[str, Option] = {
    "vcpus": Option(1, "virtual CPUs", type=int),
    "memory": Option(512, "guest memory in MiB", type=int),
    "cpu": Option(
        "host-passthrough",
        "CPU model: host-passthrough (`max` under TCG) or the hypervisor's default model",
        choices=("host-passthrough", "default"),
    ),
    "accel": Option(
        "auto",
        "kvm, tcg, or auto: KVM only where a test guest boots under it",
        choices=("kvm", "tcg", "auto"),
    ),
    "kernel": Option(
        None,
        "guest kernel (vmlinuz); default $ISOBENCH_GUEST_KERNEL, then /boot/vmlinuz-$(uname -r)",
    ),
    "cache": Option("none", "host cache mode of the io disk", choices=guest.CACHE_MODES),
}


def next_name(ctx: Context) -> str:
    return f"isobench-{ctx.run_id}-{next(_SEQ)}"


# ---------------------------------------------------------------- availability


def qemu_availability() -> Availability:
    binary = guest.qemu_binary()
    if not binary:
        return Availability(False, "qemu-system-x86_64 not found: apt-get install qemu-system-x86")
    return Availability(True, versions={"qemu": guest.qemu_version(binary), "qemu_binary": binary})


def kernel_availability(path: str | None = None) -> Availability:
    try:
        k = guest.find_kernel(path)
    except guest.GuestError as e:
        return Availability(False, str(e))
    mods = str(k.modules) if k.modules else "none (virtio must be built in)"
    return Availability(True, f"{k.path} ({k.source}), modules {mods}", {"guest_kernel": k.version})


def _verdict_file(cache: Path) -> Path:
    return Path(cache) / "guest" / "kvm-check.json"


def _kvm_key(image: guest.GuestImage, binary: str) -> str:
    return f"{image.kernel.sha256[:16]}|{guest.qemu_version(binary)}|{os.uname().release}"


def recorded_kvm_verdict(cache: Path | None = None) -> tuple[bool, str] | None:
    """The last KVM boot check recorded in the cache, if any (cheap: for probe/doctor)."""
    with contextlib.suppress(OSError, ValueError, KeyError):
        data = json.loads(_verdict_file(cache or cache_dir()).read_text())
        last = data["verdicts"][data["last"]]
        return bool(last["ok"]), str(last["reason"])
    return None


def kvm_verdict(
    image: guest.GuestImage, binary: str, cache: Path, timeout: float = KVM_CHECK_S
) -> tuple[bool, str]:
    """Does this guest kernel really boot under KVM here? Checked once per (kernel, QEMU,
    host kernel) by a tiny boot with a timeout, remembered in memory and in the cache."""
    problem = guest.kvm_device_problem()
    if problem:
        return False, f"{problem}: using TCG, results are emulated"
    key = _kvm_key(image, binary)
    with _KVM_LOCK:
        if key in _KVM_VERDICTS:
            return _KVM_VERDICTS[key]
        path = _verdict_file(cache)
        data: dict[str, Any] = {"verdicts": {}}
        with contextlib.suppress(OSError, ValueError):
            data = json.loads(path.read_text())
        if key in data.get("verdicts", {}):
            v = data["verdicts"][key]
            _KVM_VERDICTS[key] = (bool(v["ok"]), str(v["reason"]))
            return _KVM_VERDICTS[key]
        machine = "microvm" if "microvm" in guest.qemu_machines(binary) else "q35"
        spec = guest.QemuSpec(binary, image, guest.cmdline(None, [], False), "kvm", machine)
        res = stream(guest.qemu_command(spec), timeout)
        if res.t_ready is not None and not res.timed_out:
            took = res.phases()["ready"] / 1e9
            verdict = (True, f"a test guest booted under KVM in {took:.2f} s")
        elif res.timed_out:
            verdict = (
                False,
                f"/dev/kvm is present but a test guest did not boot under it within "
                f"{timeout:g} s (nested PVM?): using TCG, results are emulated",
            )
        else:
            last = (res.stderr.strip().splitlines() or ["no output"])[-1][:200]
            verdict = (
                False,
                f"a test guest under KVM failed ({last}): using TCG, results are emulated",
            )
        _KVM_VERDICTS[key] = verdict
        data.setdefault("verdicts", {})[key] = {
            "ok": verdict[0],
            "reason": verdict[1],
            "checked": time.time(),
        }
        data["last"] = key
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=2) + "\n")
        os.replace(tmp, path)
        return verdict


def kvm_availability() -> Availability:
    problem = guest.kvm_device_problem()
    if problem:
        return Availability(False, f"{problem}: VMs run under TCG (emulated)")
    recorded = recorded_kvm_verdict()
    if recorded is None:
        return Availability(
            True,
            "/dev/kvm opens; not yet checked by a test boot "
            "(the first run with accel=auto does it)",
        )
    return Availability(*recorded)


# ---------------------------------------------------------------- the shared base


class VmEnvironment(Environment):
    """prepare → (launch → _boot)* → cleanup, for kinds whose instance is a guest."""

    options = VM_OPTIONS
    machine_default = "q35"

    def __init__(self, config: dict[str, Any], ctx: Context):
        super().__init__(config, ctx)
        self.image: guest.GuestImage | None = None
        self.binary = ""
        self.accel = ""
        self.accel_reason = ""
        self.disk_template: Path | None = None

    def opt(self, name: str) -> Any:
        value = self.config.get(name)
        return self.options[name].default if value is None else value

    @property
    def machine(self) -> str:
        return self.machine_default

    def prepare(self, bundle) -> None:
        av = qemu_availability()
        if not av.ok:
            raise guest.GuestError(av.reason)
        self.binary = av.versions["qemu_binary"]
        kernel = guest.find_kernel(self.opt("kernel"))
        self.image = guest.build_initramfs(bundle, kernel, self.ctx.cache)
        self.disk_template = guest.disk_template(self.ctx.cache)
        self._choose_accel()

    def _choose_accel(self) -> None:
        wanted = self.opt("accel")
        if wanted == "auto":
            ok, why = kvm_verdict(self.image, self.binary, self.ctx.cache)
            self.accel, self.accel_reason = ("kvm" if ok else "tcg"), why
        else:
            self.accel, self.accel_reason = wanted, f"accel={wanted} requested"
        self.emulated = self.accel == "tcg"

    def _spec(self, inv: Invocation, disk: Path | None) -> guest.QemuSpec:
        args, _ = guest.guest_argv(inv)
        return self._spec_for(guest.cmdline(inv.probe, args, disk is not None), disk)

    def _spec_for(self, cmdline: str, disk: Path | None) -> guest.QemuSpec:
        """The VM as configured; describe() shows it with placeholders."""
        return guest.QemuSpec(
            self.binary or "qemu-system-x86_64",
            self.image,
            cmdline,
            self.accel or "tcg",
            self.machine,
            self.opt("vcpus"),
            self.opt("memory"),
            self.opt("cpu"),
            disk,
            self.opt("cache"),
        )

    def _launch_dir(self, name: str, inv: Invocation) -> tuple[Path, Path | None]:
        d = self.ctx.scratch / name
        d.mkdir(parents=True)
        disk = guest.new_disk(self.disk_template, d / "io.raw") if inv.needs_workdir else None
        return d, disk

    def _labels(self) -> dict[str, Any]:
        return {"accel": self.accel, "emulated": self.emulated, "machine": self.machine}

    def guest_result(
        self,
        before: list[str],
        after: list[str],
        *,
        t_ready: int | None,
        timed_out: bool,
        timeout: float,
        what: str,
    ) -> Launch:
        """The Launch that the guest's console lines describe (phases are added by caller)."""
        con = guest.parse_console(before, after)
        probe_lines = [x for x in con.probe_lines if not KERNEL_LINE.match(x)]
        out = parse_lines(probe_lines)
        launch = Launch(records=out.records, exit_code=con.exit_code, extra=self._labels())
        if out.errors:
            launch.extra["probe_errors"] = out.errors
        if out.garbage:
            launch.extra["stray_lines"] = out.garbage[:5]
        tail = [x for x in con.other if x] + [x for x in con.probe_lines if KERNEL_LINE.match(x)]
        launch.stderr_tail = "\n".join(tail)[-guest_tail_chars() :]
        if con.uptime_s is not None and t_ready is not None:
            launch.phases["boot"] = int(con.uptime_s * 1e9)
        problem = "; ".join(con.errors) or (tail[-1][:200] if tail else "")
        if timed_out:
            launch.status = "timeout"
            waited = "printed no `ready`" if t_ready is None else "did not power off"
            launch.reason = f"guest {waited} within {timeout:g} s (accel={self.accel}): {what}"
        elif t_ready is None:
            launch.status = "failed"
            launch.reason = f"guest stopped before `ready`: {problem or 'no console output'}"
        elif con.exit_code is None:
            launch.status = "failed"
            launch.reason = f"guest stopped without the probe's exit status: {problem}".rstrip(": ")
        elif con.exit_code != 0:
            launch.status = "failed"
            launch.reason = f"probe exited with status {con.exit_code} in the guest"
        return launch

    def describe(self) -> dict[str, Any]:
        d = {
            **super().describe(),
            **self._labels(),
            "accel_reason": self.accel_reason,
            "vcpus": self.opt("vcpus"),
            "memory_mib": self.opt("memory"),
            "cpu": self.opt("cpu"),
            "io_disk": {
                "cache": self.opt("cache"),
                "fs": guest.DISK_FS,
                "size_mib": guest.DISK_MIB,
                "format": "raw",
            },
        }
        if self.binary:
            d["qemu"] = guest.qemu_version(self.binary)
        if self.image is not None:
            d.update(self.image.describe())
        return d


def guest_tail_chars() -> int:
    return 2000


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


# ---------------------------------------------------------------- direct QEMU


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
        chosen = self.opt("machine") or self._machine
        if chosen:
            return chosen
        # microvm has no HPET / ACPI PM timer: under TCG on a busy host the guest cannot
        # calibrate its TSC against the PIT, marks it unstable and hangs (3 of 8 boots
        # here), and its clock falls back to jiffies. KVM gives it kvmclock instead.
        has_microvm = self.binary and "microvm" in guest.qemu_machines(self.binary)
        return "microvm" if has_microvm and self.accel == "kvm" else "q35"

    def prepare(self, bundle) -> None:
        super().prepare(bundle)
        self._machine = self.machine  # resolve once
        if self._machine not in guest.qemu_machines(self.binary):
            raise guest.GuestError(f"this QEMU has no machine type {self._machine}")

    @classmethod
    def probe(cls) -> Availability:
        q = qemu_availability()
        if not q.ok:
            return q
        k = kernel_availability()
        if not k.ok:
            return Availability(False, k.reason, q.versions)
        kvm = kvm_availability()
        note = "" if kvm.ok else f"TCG only: {kvm.reason}"
        return Availability(True, note, {**q.versions, **k.versions})

    @classmethod
    def details(cls) -> list[tuple[str, Availability]]:
        return [
            ("qemu binary", qemu_availability()),
            ("KVM", kvm_availability()),
            ("guest kernel", kernel_availability()),
        ]

    def launch(self, inv: Invocation, timeout: float) -> Launch:
        name = next_name(self.ctx)
        t0 = time.monotonic_ns()
        launch_dir, disk = self._launch_dir(name, inv)
        cg = None
        try:
            spec = self._spec(inv, disk)
            argv = [*guest.qemu_command(spec), "-pidfile", str(launch_dir / "qemu.pid")]
            with contextlib.suppress(CgroupError, OSError):
                cg = Cgroup.create(name)
            before = cg.read() if cg else {}
            sampler = _LateSampler(launch_dir / "qemu.pid").start()
            try:
                res = stream(
                    argv,
                    timeout,
                    preexec_fn=preexec_attach(cg.procs_files) if cg else None,
                    on_kill=cg.kill_all if cg else None,
                )
            finally:
                peaks = sampler.stop()
            launch = self.guest_result(
                res.before_ready,
                res.lines,
                t_ready=res.t_ready,
                timed_out=res.timed_out,
                timeout=timeout,
                what="QEMU killed",
            )
            if res.exit_code not in (0, None) and launch.status == "ok":
                launch.status = "failed"
                launch.reason = f"QEMU exited with status {res.exit_code}"
            if launch.status != "ok" and res.stderr.strip():
                launch.reason += f" (QEMU: {res.stderr.strip().splitlines()[-1][:200]})"
            t0 = res.t_submit  # submit = QEMU spawned; the io disk copy comes before
            launch.phases.update(res.phases())
            if cg:
                launch.cgroup = delta(before, cg.read())
                launch.host_side["cpu_ms"] = launch.cgroup.get("cpu_total_ms", 0.0)
            launch.host_side.update({k: v for k, v in peaks.items() if k.endswith("_mib")})
            launch.extra["domain"] = name
        finally:
            if cg:
                with contextlib.suppress(CgroupError, OSError):
                    cg.kill_all()
                    cg.remove()
            shutil.rmtree(launch_dir, ignore_errors=True)
        launch.phases["cleaned"] = time.monotonic_ns() - t0
        return launch

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        if self.image is not None:
            spec = self._spec_for("<cmdline>", Path("<io.raw>"))
            d["argv_template"] = guest.qemu_command(spec)
        return d
