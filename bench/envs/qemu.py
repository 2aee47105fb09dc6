"""Virtual machines: what the `libvirt` and `qemu` kinds share, and the direct `qemu` kind.

`VmEnvironment` holds the common lifecycle: find the guest kernel, build the initramfs
from the bundle (bench/guest.py), choose the accelerator (KVM only where a tiny guest
really boots under it, checked once and cached; otherwise TCG, and then every result is
labelled emulated), boot one guest per round that runs every workload of the round in
turn (startup first), and turn its console into one `Launch` per workload: the startup's
carries the boot's phases, cgroup and host-side figures, each carries its own records
and verdict. A kind supplies `_boot` (start the guest, collect its console, remove it).

`QemuEnv` runs qemu-system-x86_64 itself (`-machine microvm` where the build has it),
serial console on stdio through `stream()`, inside a cgroup isobench makes: comparing it
with `libvirt` separates libvirt's share of startup.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import guest, interrupt
from bench.envs.base import Availability, Context, Environment, Invocation, Launch, Option
from bench.envs.process import stream
from bench.metrics.cgroup import Cgroup, CgroupError, delta, preexec_attach
from bench.metrics.procs import PeakSampler
from bench.probeio import parse_lines
from bench.resources import cache_dir

KVM_CHECK_S = 20.0  # a real KVM guest reaches init in well under a second
TAIL_CHARS = 2000  # console lines kept as a launch's stderr tail
_SEQ = itertools.count(1)  # launch numbers, unique across every VM environment of a run
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


def _kvm_key(kernel: guest.GuestKernel, binary: str) -> str:
    """What a KVM verdict holds for: the guest kernel, the QEMU binary (path and
    version) and the host kernel."""
    return f"{kernel.sha256[:16]}|{binary}|{guest.qemu_version(binary)}|{os.uname().release}"


def _recorded(path: Path) -> dict[str, Any]:
    with contextlib.suppress(OSError, ValueError):
        data = json.loads(path.read_text())
        if isinstance(data.get("verdicts"), dict):
            return data
    return {"verdicts": {}}


def recorded_kvm_verdict(
    kernel: guest.GuestKernel, binary: str, cache: Path
) -> tuple[bool, str] | None:
    """The KVM verdict recorded in the cache for this guest kernel, QEMU and host
    kernel, if any (cheap: no guest is booted)."""
    v = _recorded(_verdict_file(cache))["verdicts"].get(_kvm_key(kernel, binary))
    return None if v is None else (bool(v["ok"]), str(v["reason"]))


def kvm_verdict(
    image: guest.GuestImage, binary: str, cache: Path, timeout: float = KVM_CHECK_S
) -> tuple[bool, str]:
    """Does this guest kernel really boot under KVM here? Checked once per (guest
    kernel, QEMU, host kernel) by a tiny boot with a timeout, recorded in the cache."""
    problem = guest.kvm_device_problem()
    if problem:
        return False, f"{problem}: using TCG, results are emulated"
    with _KVM_LOCK:
        recorded = recorded_kvm_verdict(image.kernel, binary, cache)
        if recorded is not None:
            return recorded
        verdict = _kvm_trial(image, binary, timeout)
        path = _verdict_file(cache)
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


def _kvm_trial(image: guest.GuestImage, binary: str, timeout: float) -> tuple[bool, str]:
    """Boot a guest without probes under KVM (init says `ready`). The guest is a child
    in its own session: stream() kills and reaps it at the timeout or on an exception;
    it makes no files."""
    machine = "microvm" if "microvm" in guest.qemu_machines(binary) else "q35"
    spec = guest.QemuSpec(binary, image, guest.cmdline([], timeout), "kvm", machine)
    res = stream(guest.qemu_command(spec), timeout)
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
    problem = guest.kvm_device_problem()
    if problem:
        return Availability(False, f"{problem}: VMs run under TCG (emulated)")
    binary = guest.qemu_binary()
    if not binary:
        return Availability(False, "cannot check KVM: qemu-system-x86_64 not found")
    try:
        kernel = guest.find_kernel()
        recorded = recorded_kvm_verdict(kernel, binary, cache_dir())
        if recorded is None and trial:
            image = guest.trial_initramfs(kernel, cache_dir())
            recorded = kvm_verdict(image, binary, cache_dir())
    except guest.GuestError as e:
        return Availability(False, f"cannot check KVM: {e}")
    if recorded is None:
        return Availability(
            True,
            "/dev/kvm opens; not yet checked by a test boot "
            "(`isobench doctor` or the first run with accel=auto does it)",
        )
    return Availability(*recorded)


# ---------------------------------------------------------------- the shared base


@dataclass
class Boot:
    """One guest instance seen from the host: every console line in order, its phases
    (ns since submit: "ready" = the first `ready` line, "exit", kinds' own), its costs."""

    t_submit: int  # host CLOCK_MONOTONIC ns
    killed: str  # what a timeout does: "QEMU killed", "domain destroyed"
    lines: list[str] = field(default_factory=list)
    phases: dict[str, int] = field(default_factory=dict)
    timed_out: bool = False
    failure: str = ""  # the instance failed outside the guest (QEMU's status, libvirt)
    detail: str = ""  # added to every failure's reason (QEMU's last stderr line)
    cgroup: dict[str, float] = field(default_factory=dict)
    host_side: dict[str, float] = field(default_factory=dict)


class VmEnvironment(Environment):
    """prepare → (launch_round → _boot)* → cleanup, for kinds whose instance is a guest:
    one boot runs all the workloads of a round."""

    options = VM_OPTIONS
    machine_default = "q35"
    one_instance_per_round = True

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

    def _labels(self) -> dict[str, Any]:
        return {"accel": self.accel, "emulated": self.emulated, "machine": self.machine}

    def launch(self, inv: Invocation, timeout: float) -> Launch:
        return self.launch_round([inv], timeout)[0]

    def launch_round(self, invs: list[Invocation], timeout: float) -> list[Launch]:
        """Boot one guest that runs every invocation in turn (startup first); each probe
        may take `timeout` in the guest, the whole boot the sum of them."""
        name = next_name(self.ctx)
        order = guest.run_order(invs)
        runs = [guest.guest_run(invs[i]) for i in order]
        scratch = self.ctx.scratch / name
        scratch.mkdir(parents=True)
        try:
            disk = None
            if any(r.disk for r in runs):
                disk = guest.new_disk(self.disk_template, scratch / "io.raw")
            spec = self._spec_for(guest.cmdline(runs, timeout), disk)
            boot = self._boot(name, spec, scratch, timeout * len(invs))
        finally:
            with interrupt.shielded():
                shutil.rmtree(scratch, ignore_errors=True)
        boot.phases["cleaned"] = time.monotonic_ns() - boot.t_submit
        launches = self._round_launches(boot, [invs[i] for i in order], timeout * len(invs))
        for launch in launches:
            launch.extra["domain"] = name
        return [launches[order.index(i)] for i in range(len(invs))]

    def _boot(self, name: str, spec: guest.QemuSpec, scratch: Path, timeout: float) -> Boot:
        """Run the guest to its end (or kill it at `timeout` s) and remove what the kind
        made for it outside `scratch`, also when interrupted."""
        raise NotImplementedError

    def _round_launches(self, boot: Boot, invs: list[Invocation], timeout: float) -> list[Launch]:
        """One Launch per invocation, in the guest's order, from the boot's console; the
        first (startup) carries the instance's phases, cgroup and host-side figures."""
        con = guest.parse_console(boot.lines)
        problem = "; ".join(con.errors) or (con.other[-1][:200] if con.other else "")
        workloads = [inv.workload for inv in invs]
        out = []
        for k, inv in enumerate(invs):
            run = con.runs[k] if k < len(con.runs) else None
            launch = self._probe_launch(run, inv, boot, problem, timeout)
            launch.extra.update(self._labels(), round=workloads)
            out.append(launch)
        first = out[0]
        first.stderr_tail = "\n".join([*con.other, first.stderr_tail]).strip()[-TAIL_CHARS:]
        if con.uptime_s is not None and "ready" in boot.phases:
            first.phases["boot"] = int(con.uptime_s * 1e9)
        first.phases.update(boot.phases)
        if len(invs) > 1:  # the guest ran the round's other workloads before it ended
            for name in ("exit", "cleaned"):
                if name in first.phases:
                    first.phases[f"round_{name}"] = first.phases.pop(name)
        first.cgroup, first.host_side = boot.cgroup, boot.host_side
        return out

    def _probe_launch(
        self, run: guest.ProbeRun | None, inv: Invocation, boot: Boot, problem: str, timeout: float
    ) -> Launch:
        """One probe's Launch: its records, exit status, stray lines and verdict."""
        launch = Launch()
        if run is not None:
            out = parse_lines(run.lines)
            launch.records, launch.exit_code = out.records, run.exit_code
            if out.errors:
                launch.extra["probe_errors"] = out.errors
            if out.garbage:
                launch.extra["stray_lines"] = out.garbage[:5]
            launch.stderr_tail = "\n".join(out.garbage)[-TAIL_CHARS:]
        if boot.timed_out:
            launch.status = "timeout"
            waited = "printed no `ready`" if "ready" not in boot.phases else "did not power off"
            launch.reason = (
                f"guest {waited} within {timeout:g} s (accel={self.accel}): {boot.killed}"
            )
        elif run is None and boot.failure:  # the instance failed before the probe ran
            launch.status = "failed"
            launch.reason = boot.failure
        elif run is None:
            launch.status = "failed"
            when = "`ready`" if "ready" not in boot.phases else f"{inv.workload} ran"
            launch.reason = f"guest stopped before {when}: {problem or 'no console output'}"
        elif run.limit_s is not None:
            launch.status = "timeout"
            launch.reason = f"probe did not finish within {run.limit_s} s in the guest: killed"
        elif run.exit_code is None:
            launch.status = "failed"
            launch.reason = f"guest stopped without the probe's exit status: {problem}".rstrip(": ")
        elif run.exit_code != 0:
            launch.status = "failed"
            launch.reason = f"probe exited with status {run.exit_code} in the guest"
        elif not run.ready:
            launch.status = "failed"
            launch.reason = "probe exited without printing `ready`"
        elif boot.failure:
            launch.status = "failed"
            launch.reason = boot.failure
        if launch.status != "ok" and boot.detail:
            launch.reason += f" ({boot.detail})"
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
    def probe(cls, opts: dict[str, Any] | None = None) -> Availability:
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
            ("KVM", kvm_availability(trial=True)),
            ("guest kernel", kernel_availability()),
        ]

    def _boot(self, name: str, spec: guest.QemuSpec, scratch: Path, timeout: float) -> Boot:
        argv = [*guest.qemu_command(spec), "-pidfile", str(scratch / "qemu.pid")]
        cg = None
        try:
            with contextlib.suppress(CgroupError, OSError):
                cg = Cgroup.create(name)
            before = cg.read() if cg else {}
            sampler = _LateSampler(scratch / "qemu.pid").start()
            try:
                res = stream(
                    argv,
                    timeout,
                    preexec_fn=preexec_attach(cg.procs_files) if cg else None,
                    on_kill=cg.kill_all if cg else None,
                )
            finally:
                peaks = sampler.stop()
            # submit = QEMU spawned (the io disk copy comes before)
            boot = Boot(res.t_submit, "QEMU killed", phases=res.phases(), timed_out=res.timed_out)
            ready = [guest.READY] if res.t_ready is not None else []
            boot.lines = [*res.before_ready, *ready, *res.lines]
            if res.exit_code not in (0, None) and not res.timed_out:
                boot.failure = f"QEMU exited with status {res.exit_code}"
            if res.stderr.strip():
                boot.detail = f"QEMU: {res.stderr.strip().splitlines()[-1][:200]}"
            if cg:
                boot.cgroup = delta(before, cg.read())
                boot.host_side["cpu_ms"] = boot.cgroup.get("cpu_total_ms", 0.0)
            boot.host_side.update({k: v for k, v in peaks.items() if k.endswith("_mib")})
            return boot
        finally:
            if cg:
                with interrupt.shielded(), contextlib.suppress(CgroupError, OSError):
                    cg.kill_all()
                    cg.remove()

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        if self.image is not None:
            spec = self._spec_for("<cmdline>", Path("<io.raw>"))
            d["argv_template"] = guest.qemu_command(spec)
        return d
