"""Virtual machines: what the `libvirt` and `qemu` kinds share.

`VmEnvironment` holds the common lifecycle: find the guest kernel, build the initramfs
from the bundle (bench/envs/guest/), choose the accelerator (KVM only where a tiny guest
really boots under it, checked once and cached: guest/kvm.py; otherwise TCG, and then
every result is labelled emulated), and boot guests. A kind supplies `_guest`: start one
guest and hand back a `Guest`, the running guest seen from the host.

Two uses of a boot:
- a round (`launch_round`): one guest runs every workload of the round in turn (startup
  first) and powers off; its console becomes one `Launch` per workload: the startup's
  carries the boot's phases, cgroup and host-side figures, each carries its own records
  and verdict.
- a held instance (`start`): a guest that runs one invocation (the `hold` probe) and
  stays up after its `ready` until stopped. Stopping a guest powers it off: QEMU is
  killed / the domain destroyed, as a plug is pulled; the probe inside gets no signal,
  so its launch has no exit code and is ok once it was ready (phases ready, stop, exit,
  cleaned).

With `rootfs=NAME` (an isobench rootfs, issue 16) the guest boots from a root disk made
of that tree and the bundle's probes (guest/rootdisk.py, cached; each boot writes to a
copy-on-write overlay in its scratch directory): its initramfs mounts it and switches
root into it, and the probes run at roots.PROBE_DIR with the rootfs as /, the io disk
at roots.WORKDIR. Without it, the probes run from the initramfs itself.

A held guest that serves the net workload (`net --server`) gets a NIC: a tap isobench
makes before the boot (guest/tap.py), virtio-net in the guest, whose init gives it the
far address of the tap's /30; `address()` is that address, the path "virtio-net on tap
ibt<hex> ... (emulated: TCG)"; the tap is deleted when the guest has ended.

A held guest whose probe serves (`served()`, the burst design) gets a control channel:
a virtio-serial port whose host end is a unix socket in its scratch directory
(guest/channel.py); `ask()` writes a command there and reads the answer, which never
reaches the console. `ready` and the run's markers stay on the console.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import footprint as fp
from bench import interrupt
from bench.envs import roots
from bench.envs.base import (
    Availability,
    ChannelError,
    Context,
    Environment,
    Instance,
    Invocation,
    Launch,
    MemorySize,
    Option,
    OptionError,
    StartError,
    read_probe_output,
)
from bench.envs.containers import served_port
from bench.envs.guest import GuestError
from bench.envs.guest.channel import SOCKET_NAME, ControlPort
from bench.envs.guest.console import (
    GUEST_WORKDIR,
    ProbeRun,
    cmdline,
    guest_run,
    parse_console,
    run_order,
)
from bench.envs.guest.disk import DISK_FS, DISK_MIB, disk_template, new_disk
from bench.envs.guest.initramfs import GuestImage, build_initramfs
from bench.envs.guest.kernel import find_kernel
from bench.envs.guest.kvm import kvm_verdict
from bench.envs.guest.qemu_cmd import CACHE_MODES, QemuSpec, qemu_binary, qemu_version
from bench.envs.guest.rootdisk import RootDisk, overlay, root_disk
from bench.envs.guest.tap import Tap, make_tap
from bench.metrics.cgroup import CgroupReader, Layout

TAIL_CHARS = 2000  # console lines kept as a launch's stderr tail
MIN_MEMORY_MIB = 64  # less and the guest kernel does not boot
# A held guest's probe runs until the guest is stopped: init's per-probe time limit
# (which kills a probe that outlives it) is then a week, not the start's timeout.
HELD_LIMIT_S = 7 * 86400

VM_OPTIONS: dict[str, Option] = {
    "vcpus": Option(1, "virtual CPUs", type=int),
    "memory": Option(MemorySize("512m"), "guest memory (e.g. 512m, 1g)", type=MemorySize),
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
    "cache": Option("none", "host cache mode of the disks (io, root)", choices=CACHE_MODES),
    "rootfs": roots.ROOTFS_OPTION,
}


# ---------------------------------------------------------------- availability


def qemu_availability() -> Availability:
    binary = qemu_binary()
    if not binary:
        return Availability(False, "qemu-system-x86_64 not found: apt-get install qemu-system-x86")
    return Availability(True, versions={"qemu": qemu_version(binary), "qemu_binary": binary})


def kernel_availability(path: str | None = None) -> Availability:
    try:
        k = find_kernel(path)
    except GuestError as e:
        return Availability(False, str(e))
    mods = str(k.modules) if k.modules else "none (virtio must be built in)"
    return Availability(True, f"{k.path} ({k.source}), modules {mods}", {"guest_kernel": k.version})


# ---------------------------------------------------------------- a guest, from the host


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


class Guest:
    """A started guest, as a kind runs it (a QEMU child, a libvirt domain). `boot` fills
    in as the console is read; `finish` is called exactly once."""

    boot: Boot

    def wait_ready(self, timeout: float) -> bool:
        """True once the console said `ready` (within `timeout` s)."""
        raise NotImplementedError

    def wait_exit(self, timeout: float) -> bool:
        """True when the guest ended (powered off, or was powered off) within `timeout`."""
        raise NotImplementedError

    def power_off(self) -> None:
        """End the guest now: kill QEMU, destroy the domain (idempotent, never raises)."""
        raise NotImplementedError

    def finish(self, *, timed_out: bool, stopped: bool) -> Boot:
        """The ended guest's Boot (console, costs), after removing what the kind made for
        it outside its scratch directory (shielded from Ctrl-C)."""
        raise NotImplementedError

    def live_cgroup(self) -> CgroupReader | None:
        """The cgroup that holds this running guest, when the kind made one for it.
        Default: none known (a libvirt domain's scope is libvirt's)."""
        return None


class GuestInstance(Instance):
    """A booted guest that runs `invs` in turn. Held (one invocation, `start`): stop()
    powers it off. A round (`run_round`): waits until the guest powers off by itself."""

    def __init__(
        self,
        env: VmEnvironment,
        name: str,
        guest: Guest,
        invs: list[Invocation],
        scratch: Path,
        timeout: float,
        tap: Tap | None = None,
        port: ControlPort | None = None,
    ):
        super().__init__(name, timeout, guest.boot.t_submit)
        self.env = env
        self.guest = guest
        self.invs = invs
        self.scratch = scratch
        self.tap = tap  # the guest's NIC's host end (a net server), deleted at the end
        self.port = port  # a serving probe's control port (its host end), closed at the end
        self.launches: list[Launch] = []  # one per invocation, once ended

    def address(self, port: int) -> tuple[str, int]:
        if self.tap is None:
            raise StartError(f"{self.name}: this guest has no NIC (only a net server gets one)")
        return (str(self.tap.guest.ip), port)

    def live_cgroup(self, layout: Layout | None = None) -> CgroupReader | None:
        """The guest's own cgroup, as its kind knows it; no lookup by name."""
        return self.guest.live_cgroup()

    def ask(self, command: str, timeout: float) -> str:
        """One command over the guest's control port (guest/channel.py); the answer
        never reaches the console, so it is no record of the launch."""
        if self.port is None:
            raise ChannelError(f"{self.name}: no control channel (the probe does not serve)")
        if self.launch is not None:
            raise ChannelError(f"{self.name}: the instance has ended")
        if not self.guest.wait_ready(0):
            raise ChannelError(f"{self.name}: asked before the probe said `ready`")
        return self.port.ask(command, timeout)

    def run_round(self) -> list[Launch]:
        """Wait for the guest to power off (kill it at the timeout), then its Launches."""
        try:
            timed_out = not self._wait_exit(self.left())
            if timed_out:
                self._kill()
        except BaseException:
            self.abort()
            raise
        self.launch = self._end(stopped=False, timed_out=timed_out)
        return self.launches

    def _ready(self, timeout: float) -> bool:
        return self.guest.wait_ready(timeout)

    def _signal_stop(self) -> None:
        self.guest.power_off()  # a guest's stop: power it off (see the module's doc)

    def _wait_exit(self, timeout: float) -> bool:
        return self.guest.wait_exit(timeout)

    def _kill(self) -> None:
        self.guest.power_off()

    def _end(self, *, stopped: bool, timed_out: bool) -> Launch:
        try:
            boot = self.guest.finish(timed_out=timed_out, stopped=stopped)
        finally:
            with interrupt.shielded():
                if self.port is not None:
                    self.port.close()
                if self.tap is not None:
                    self.tap.remove()
                shutil.rmtree(self.scratch, ignore_errors=True)
        boot.phases["cleaned"] = time.monotonic_ns() - boot.t_submit
        self.launches = self.env._round_launches(boot, self.invs, self.timeout, stopped)
        for launch in self.launches:
            launch.extra["domain"] = self.name
        if self.tap is not None:
            self.launches[0].net_path = self.tap.path(self.env.emulated)
        return self.launches[0]


# ---------------------------------------------------------------- the shared base


class VmEnvironment(Environment):
    """prepare → (launch_round | start)* → cleanup, for kinds whose instance is a guest:
    one boot runs all the workloads of a round; a held guest runs one invocation."""

    options = VM_OPTIONS
    machine_default = "q35"
    one_instance_per_round = True
    channel = True  # a serving guest's virtio-serial port (guest/channel.py)

    def __init__(self, config: dict[str, Any], ctx: Context):
        super().__init__(config, ctx)
        self.memory_mib = self.opts["memory"].bytes() // 2**20
        if self.memory_mib < MIN_MEMORY_MIB:
            raise OptionError(
                f"option memory={self.opts['memory']}: a guest needs at least "
                f"{MIN_MEMORY_MIB}m (a plain number is bytes: say 512m)"
            )
        self.image: GuestImage | None = None
        self.binary = ""
        self.accel = ""
        self.accel_reason = ""
        self.disk_template: Path | None = None
        self._rootfs = None  # the isobench rootfs the guests boot from, if any
        self.root_disk: RootDisk | None = None

    @property
    def machine(self) -> str:
        return self.machine_default

    def prepare(self, bundle) -> None:
        av = qemu_availability()
        if not av.ok:
            raise GuestError(av.reason)
        self.binary = av.versions["qemu_binary"]
        kernel = find_kernel(self.opts["kernel"])
        self.image = build_initramfs(bundle, kernel, self.ctx.cache)
        self.disk_template = disk_template(self.ctx.cache)
        self._rootfs = roots.load(self.opts["rootfs"], self.ctx.cache)
        if self._rootfs is not None:
            self.root_disk = root_disk(self._rootfs, bundle, self.ctx.cache)
        self._choose_accel()

    def _choose_accel(self) -> None:
        wanted = self.opts["accel"]
        if wanted == "auto":
            ok, why = kvm_verdict(self.image, self.binary, self.ctx.cache)
            self.accel, self.accel_reason = ("kvm" if ok else "tcg"), why
        else:
            self.accel, self.accel_reason = wanted, f"accel={wanted} requested"
        self.emulated = self.accel == "tcg"

    def _spec_for(
        self,
        cmdline: str,
        disk: Path | None,
        nic: tuple[str, str] | None = None,
        root: tuple[Path, str] | None = None,
    ) -> QemuSpec:
        """The VM as configured; describe() shows it with placeholders."""
        return QemuSpec(
            self.binary or "qemu-system-x86_64",
            self.image,
            cmdline,
            self.accel or "tcg",
            self.machine,
            self.opts["vcpus"],
            self.memory_mib,
            self.opts["cpu"],
            disk,
            self.opts["cache"],
            nic,
            root,
        )

    def _labels(self) -> dict[str, Any]:
        return {"accel": self.accel, "emulated": self.emulated, "machine": self.machine}

    # -- booting

    def _boot_instance(self, invs: list[Invocation], limit: float, timeout: float):
        """Boot a guest that runs `invs` in turn, each within `limit` s in the guest;
        `timeout` bounds its `ready` and its end; a net server among them gets a NIC on
        a tap made now. Whatever was made is removed when the boot cannot be started
        (also when interrupted)."""
        if self.image is None:
            raise RuntimeError(f"{self.kind}: a guest started before prepare()")
        name = self.new_name()
        io_dir = roots.WORKDIR if self.root_disk else GUEST_WORKDIR
        runs = [guest_run(inv, io_dir) for inv in invs]
        scratch = self.ctx.scratch / name
        scratch.mkdir(parents=True)
        tap = port = None
        try:
            disk = root = None
            if self.root_disk is not None:  # this boot's copy-on-write root disk
                root = overlay(self.root_disk, scratch)
            if any(r.disk for r in runs):
                disk = new_disk(self.disk_template, scratch / "io.raw")
            if any(served_port(inv) is not None for inv in invs):
                tap = make_tap(name)
            if any(r.serves for r in runs):  # listening before QEMU starts: channel.py
                port = ControlPort(scratch / SOCKET_NAME)
            net, nic = (str(tap.guest), (tap.name, tap.mac)) if tap else (None, None)
            spec = self._spec_for(cmdline(runs, limit, net, root is not None), disk, nic, root)
            if port is not None:
                spec = dataclasses.replace(spec, ctl=port.path)
            guest = self._guest(name, spec, scratch)
        except BaseException:
            with interrupt.shielded():
                if port is not None:
                    port.close()
                if tap is not None:
                    tap.remove()
                shutil.rmtree(scratch, ignore_errors=True)
            raise
        return GuestInstance(self, name, guest, invs, scratch, timeout, tap, port)

    def _guest(self, name: str, spec: QemuSpec, scratch: Path) -> Guest:
        """Start the guest (its files under `scratch`); a failure to start is a Guest
        that has ended with `boot.failure` set, or an exception after removing what it
        made outside `scratch`."""
        raise NotImplementedError

    def _start(self, inv: Invocation, timeout: float) -> Instance:
        try:
            return self._boot_instance([inv], HELD_LIMIT_S, timeout)
        except (GuestError, OSError) as e:
            raise StartError(f"could not start a guest: {e}") from None

    def launch(self, inv: Invocation, timeout: float) -> Launch:
        return self.launch_round([inv], timeout)[0]

    def launch_round(self, invs: list[Invocation], timeout: float) -> list[Launch]:
        """Boot one guest that runs every invocation in turn (startup first); each probe
        may take `timeout` in the guest, the whole boot the sum of them."""
        order = run_order(invs)
        instance = self._boot_instance([invs[i] for i in order], timeout, timeout * len(invs))
        launches = instance.run_round()
        return [launches[order.index(i)] for i in range(len(invs))]

    # -- a boot's console -> Launches

    def _round_launches(
        self, boot: Boot, invs: list[Invocation], timeout: float, stopped: bool = False
    ) -> list[Launch]:
        """One Launch per invocation, in the guest's order, from the boot's console; the
        first (startup) carries the instance's phases, cgroup and host-side figures."""
        con = parse_console(boot.lines)
        problem = "; ".join(con.errors) or (con.other[-1][:200] if con.other else "")
        workloads = [inv.workload for inv in invs]
        out = []
        for k, inv in enumerate(invs):
            run = con.runs[k] if k < len(con.runs) else None
            launch = self._probe_launch(run, inv, boot, problem, timeout, stopped)
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
        self,
        run: ProbeRun | None,
        inv: Invocation,
        boot: Boot,
        problem: str,
        timeout: float,
        stopped: bool = False,
    ) -> Launch:
        """One probe's Launch: its records, exit status, stray lines and verdict. A held
        probe whose guest was powered off once it was ready (`stopped`) is ok."""
        launch = Launch()
        if run is not None:
            out = read_probe_output(launch, run.lines)
            launch.exit_code = run.exit_code
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
        elif run.exit_code is None and stopped and run.ready:
            pass  # held, then powered off: what a guest's stop is
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

    def disk_footprint(self, bundle, io, timeout) -> list[dict[str, Any]]:
        """The guest's kernel, initramfs and io disk template; with `io`, the guest's
        private io disk after the io probe ran."""
        image = self.image
        out = [
            fp.figure(
                "guest kernel",
                fp.du(image.kernel.path).allocated,
                f"allocated blocks of {image.kernel.path} (found by: {image.kernel.source})"
                + (
                    "; the host's own /boot file: no extra disk"
                    if Path(image.kernel.path).resolve().is_relative_to("/boot")
                    else ""
                ),
            ),
            fp.figure(
                "initramfs",
                fp.du(image.initramfs).allocated,
                f"allocated blocks of {image.initramfs} (probes, busybox, modules)",
            ),
            *fp.tree_figures(
                "disk template",
                fp.du(self.disk_template),
                f"the sparse ext4 io disk template {self.disk_template}",
            ),
        ]
        if not io:
            return [*out, fp.no_io()]

        def measure(instance) -> list[dict[str, Any]]:
            if not instance.guest.wait_exit(instance.left()):  # it powers off after io
                return None
            usage = fp.du(instance.scratch / "io.raw")
            return [
                fp.figure(
                    "io disk after io",
                    usage.allocated,
                    "allocated blocks of the guest's private copy of the io disk (raw, "
                    f"{usage.apparent / 2**20:.0f} MiB apparent) after the io probe ran "
                    "and the guest powered off, before its removal",
                )
            ]

        return out + fp.after_io(self, io, timeout, measure)

    def describe(self) -> dict[str, Any]:
        d = {
            **super().describe(),
            **self._labels(),
            "accel_reason": self.accel_reason,
            "vcpus": self.opts["vcpus"],
            "memory_mib": self.memory_mib,
            "cpu": self.opts["cpu"],
            "io_disk": {
                "cache": self.opts["cache"],
                "fs": DISK_FS,
                "size_mib": DISK_MIB,
                "format": "raw",
                "mount": roots.WORKDIR if self.opts["rootfs"] else GUEST_WORKDIR,
            },
        }
        if self.binary:
            d["qemu"] = qemu_version(self.binary)
        if self.image is not None:
            d.update(self.image.describe())
        d["rootfs"] = roots.describe(self._rootfs)
        if self.root_disk is not None:
            d["root_disk"] = self.root_disk.describe()
        return d
