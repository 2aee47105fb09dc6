"""The `libvirt` kind: transient domains through libvirt-python; the shared VM lifecycle
(one domain per round running all its workloads, held guests) is bench/envs/vm.py's.

A boot: createXML(paused) = "defined" (libvirt set up QEMU), resume = "started", the
serial console (a file under this environment's scratch directory) tailed until the
first probe's `ready` = "ready", the guest's own uptime at that moment = "boot", the
domain gone (the guest ran `poweroff -f`, QEMU exited, the transient domain vanished; or
a held guest's stop destroyed it) = "exit", files removed = "cleaned". QEMU's CPU time
and its cgroup are read when the guest prints a probe's exit line, the last one just
before it powers off (libvirt's qemu driver cannot keep a powered-off QEMU alive:
on_poweroff=preserve is refused), right before a stop destroys it, and every 100 ms
while the console is read, as a fallback.

libvirt is imported lazily: the package imports (and `probe()` answers) without it.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape, quoteattr

from bench import interrupt
from bench.envs.base import Availability, Leftover
from bench.envs.guest import GuestError
from bench.envs.guest.channel import PORT_NAME
from bench.envs.guest.console import EXIT_PREFIX, READY
from bench.envs.guest.kvm import kvm_availability
from bench.envs.guest.qemu_cmd import QemuSpec
from bench.envs.guest.rootdisk import IO_SERIAL, ROOT_SERIAL
from bench.envs.vm import (
    VM_OPTIONS,
    Boot,
    Guest,
    VmEnvironment,
    kernel_availability,
    qemu_availability,
)
from bench.metrics.cgroup import CgroupError, CgroupReader
from bench.metrics.cgroup_parse import delta
from bench.metrics.procs import PeakSampler, tree_metrics

URI = "qemu:///system"
PREFIX = "isobench-"
POLL_S = 0.005  # console tail and domain state poll interval
COST_EVERY_S = 0.1  # QEMU CPU time / cgroup reading interval until the exit line
UNREACHABLE = f"libvirtd not reachable at {URI}: start libvirtd and virtlogd"
MACHINE = "q35"
DESTROYED = "domain destroyed"


def _libvirt():
    import libvirt  # noqa: PLC0415 - optional dependency, imported on use

    return libvirt


def _silence(lv) -> None:
    """libvirt prints every error to stderr by default; we report them ourselves."""
    lv.registerErrorHandler(lambda _ctx, _err: None, None)


def connect():
    lv = _libvirt()
    _silence(lv)
    return lv.open(URI)


def domain_xml(name: str, spec: QemuSpec, console: Path) -> str:
    """The domain: direct kernel boot, serial console to a file, optional virtio root
    disk (a boot's overlay of an isobench rootfs's disk), virtio io disk and virtio-net
    NIC (on a tap isobench made: type ethernet, managed='no'), a serving guest's control
    port (a virtio <channel> whose QEMU connects to the host's unix socket), QEMU as
    root without relabelling (the cache lives in root's home)."""
    kvm = spec.accel == "kvm"
    if spec.cpu == "host-passthrough":
        cpu = "<cpu mode='host-passthrough'/>" if kvm else "<cpu mode='maximum'/>"
    else:
        cpu = ""
    disk = nic = ctl = ""
    if spec.ctl is not None:  # QEMU connects to the host's socket (guest/channel.py)
        ctl = (
            f"<channel type='unix'><source mode='connect' path={quoteattr(str(spec.ctl))}/>"
            f"<target type='virtio' name={quoteattr(PORT_NAME)}/></channel>"
        )
    if spec.nic is not None:  # the tap isobench made: libvirt attaches, changes nothing
        tap, mac = spec.nic
        nic = (
            f"<interface type='ethernet'><target dev={quoteattr(tap)} managed='no'/>"
            f"<mac address={quoteattr(mac)}/><model type='virtio'/><rom enabled='no'/>"
            "</interface>"
        )
    if spec.root is not None:  # vda; the guest finds it (and the io disk) by serial
        path, fmt = spec.root
        disk = (
            f"<disk type='file' device='disk'><driver name='qemu' type={quoteattr(fmt)} "
            f"cache={quoteattr(spec.cache)}/><source file={quoteattr(str(path))}/>"
            f"<target dev='vda' bus='virtio'/><serial>{ROOT_SERIAL}</serial></disk>"
        )
    if spec.disk is not None:
        dev, serial = ("vdb", f"<serial>{IO_SERIAL}</serial>") if spec.root else ("vda", "")
        disk += (
            f"<disk type='file' device='disk'><driver name='qemu' type='raw' "
            f"cache={quoteattr(spec.cache)}/><source file={quoteattr(str(spec.disk))}/>"
            f"<target dev='{dev}' bus='virtio'/>{serial}</disk>"
        )
    return f"""<domain type='{"kvm" if kvm else "qemu"}'>
  <name>{escape(name)}</name>
  <memory unit='MiB'>{int(spec.memory_mib)}</memory>
  <vcpu>{int(spec.vcpus)}</vcpu>
  <os>
    <type arch='x86_64' machine={quoteattr(spec.machine)}>hvm</type>
    <kernel>{escape(str(spec.image.kernel.path))}</kernel>
    <initrd>{escape(str(spec.image.initramfs))}</initrd>
    <cmdline>{escape(spec.cmdline)}</cmdline>
  </os>
  {cpu}
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>{escape(spec.binary)}</emulator>
    {disk}
    {nic}
    <serial type='file'><source path={quoteattr(str(console))}/><target port='0'/></serial>
    {ctl}
    <controller type='usb' model='none'/>
    <memballoon model='none'/>
  </devices>
  <seclabel type='static' model='dac' relabel='no'><label>+0:+0</label></seclabel>
</domain>
"""


def _destroy(dom) -> None:
    """Destroy a (transient) domain; gone already is fine."""
    lv = _libvirt()
    try:
        dom.destroy()
    except lv.libvirtError as e:
        if e.get_error_code() not in (lv.VIR_ERR_NO_DOMAIN, lv.VIR_ERR_OPERATION_INVALID):
            raise
    with contextlib.suppress(lv.libvirtError):
        dom.undefine()  # only a persistent leftover has a definition


class _ConsoleTail:
    """Lines of a file that QEMU appends to, with the moment each complete line was seen."""

    def __init__(self, path: Path):
        self.path = path
        self._f = None
        self._buf = b""

    def poll(self) -> list[str]:
        if self._f is None:
            try:
                self._f = open(self.path, "rb")  # noqa: SIM115 - kept open while tailing
            except FileNotFoundError:
                return []
        data = self._f.read()
        if not data:
            return []
        *lines, self._buf = (self._buf + data).split(b"\n")
        return [x.decode(errors="replace").rstrip("\r") for x in lines]

    def rest(self) -> list[str]:
        lines = self.poll()
        if self._buf:
            lines.append(self._buf.decode(errors="replace").rstrip("\r"))
            self._buf = b""
        return lines

    def close(self) -> None:
        if self._f is not None:
            self._f.close()


class DomainGuest(Guest):
    """A transient domain, created paused (the "defined" phase) then resumed ("started");
    its console is a file tailed while the caller waits. A libvirt error ends it with
    that error as the boot's failure."""

    def __init__(self, connection, name: str, spec: QemuSpec, console: Path):
        lv = _libvirt()
        t0 = time.monotonic_ns()
        self.boot = Boot(t0, DESTROYED)
        self.name = name
        self.dom = None
        self.ended = False
        self.pid: int | None = None
        self.cg: CgroupReader | None = None
        self.before: dict[str, float] = {}
        self.sampler: PeakSampler | None = None
        self.tail = _ConsoleTail(console)
        self.final: dict[str, float] = {}  # QEMU's CPU time, last read
        self.after_cg: dict[str, float] = {}
        self.read_at = 0.0
        try:
            xml = domain_xml(name, spec, console)
            self.dom = connection().createXML(xml, lv.VIR_DOMAIN_START_PAUSED)
            self.boot.phases["defined"] = time.monotonic_ns() - t0
            self.pid = _qemu_pid(name)
            with contextlib.suppress(CgroupError, OSError, TypeError):
                self.cg = _own_cgroup(CgroupReader.for_pid(self.pid), name)
            self.before = self.cg.read() if self.cg else {}
            self.sampler = PeakSampler([self.pid]).start() if self.pid else None
            self.dom.resume()
            self.boot.phases["started"] = time.monotonic_ns() - t0
        except lv.libvirtError as e:
            self._failed(e)
        except BaseException:
            self._end()
            raise

    def _failed(self, e) -> None:
        """libvirt refused or lost the domain: that is the boot's whole story."""
        self._end()
        self.boot = Boot(self.boot.t_submit, DESTROYED, failure=f"libvirt: {e.get_error_message()}")

    def _end(self) -> None:
        self.ended = True
        self._destroy()
        if self.sampler:
            self.sampler.stop()
        self.tail.close()

    def _destroy(self, quiet: bool = True) -> None:
        if self.dom is not None:
            with interrupt.shielded(), contextlib.suppress(*((Exception,) if quiet else ())):
                _destroy(self.dom)

    def _read_costs(self) -> None:
        self.final, self.after_cg = _read_costs(self.pid, self.cg, self.final, self.after_cg)
        self.read_at = time.monotonic() + COST_EVERY_S

    def _pump(self, timeout: float, until) -> bool:
        """Read the console (and the costs) until `until()` holds (True), the domain is
        gone (True: "exit" recorded) or `timeout` s pass (False)."""
        if self.ended:
            return True
        lv = _libvirt()
        boot = self.boot
        deadline = time.monotonic() + timeout
        try:
            while True:
                for line in self.tail.poll():
                    boot.lines.append(line)
                    if "ready" not in boot.phases and line.strip() == READY:
                        boot.phases["ready"] = time.monotonic_ns() - boot.t_submit
                    elif line.startswith(EXIT_PREFIX):  # a probe ended: costs now
                        self._read_costs()
                if time.monotonic() >= self.read_at:
                    self._read_costs()
                if _state(self.dom, lv) not in (lv.VIR_DOMAIN_RUNNING, lv.VIR_DOMAIN_PAUSED):
                    boot.phases["exit"] = time.monotonic_ns() - boot.t_submit
                    self.ended = True
                    return True
                if until():
                    return True
                if time.monotonic() > deadline:
                    return False
                time.sleep(POLL_S)
        except lv.libvirtError as e:
            self._failed(e)
            return True

    def wait_ready(self, timeout: float) -> bool:
        self._pump(timeout, lambda: "ready" in self.boot.phases)
        return "ready" in self.boot.phases

    def wait_exit(self, timeout: float) -> bool:
        return self._pump(timeout, lambda: False)

    def power_off(self) -> None:
        if self.dom is not None and not self.ended:
            with contextlib.suppress(Exception):
                self._read_costs()  # the last reading while QEMU still runs
        self._destroy()

    def finish(self, *, timed_out: bool, stopped: bool) -> Boot:
        boot = self.boot
        if self.dom is None or boot.failure:  # never started, or libvirt lost it
            return boot
        try:
            boot.timed_out = timed_out
            boot.lines += self.tail.rest()
            peaks = self.sampler.stop() if self.sampler else {}
            self.tail.close()
            if self.cg and self.after_cg:
                boot.cgroup = delta(self.before, self.after_cg)
            boot.host_side = {
                "cpu_ms": self.final.get("cpu_user_ms", 0.0) + self.final.get("cpu_system_ms", 0.0),
                **{k: v for k, v in peaks.items() if k.endswith("_mib")},
            }
            return boot
        finally:
            self._destroy(quiet=False)  # a domain that cannot be destroyed: say so


class LibvirtEnv(VmEnvironment):
    kind = "libvirt"
    summary = "a KVM guest (QEMU TCG where KVM is unusable) as a transient libvirt domain"
    options = VM_OPTIONS
    machine_default = MACHINE

    def __init__(self, config: dict[str, Any], ctx):
        super().__init__(config, ctx)
        self._conn = None

    # ---- availability

    @classmethod
    def _libvirt_availability(cls) -> Availability:
        try:
            lv = _libvirt()
        except ImportError:
            return Availability(
                False, "libvirt-python is not installed: pip install 'isobench[vm]'"
            )
        try:
            _silence(lv)
            conn = lv.open(URI)
        except lv.libvirtError:
            return Availability(False, UNREACHABLE)
        try:
            v = conn.getLibVersion()
            return Availability(
                True, versions={"libvirt": f"{v // 1000000}.{v // 1000 % 1000}.{v % 1000}"}
            )
        finally:
            conn.close()

    @classmethod
    def probe(cls, opts: dict[str, Any] | None = None) -> Availability:
        lv = cls._libvirt_availability()
        if not lv.ok:
            return lv
        q = qemu_availability()
        if not q.ok:
            return Availability(False, q.reason, lv.versions)
        k = kernel_availability((opts or {}).get("kernel"))
        versions = {**lv.versions, **q.versions, **k.versions}
        if not k.ok:
            return Availability(False, k.reason, versions)
        kvm = kvm_availability()
        return Availability(True, "" if kvm.ok else f"TCG only: {kvm.reason}", versions)

    @classmethod
    def details(cls) -> list[tuple[str, Availability]]:
        return [
            ("libvirtd", cls._libvirt_availability()),
            ("qemu binary", qemu_availability()),
            ("KVM", kvm_availability(trial=True)),
            ("guest kernel", kernel_availability()),
        ]

    @classmethod
    def leftovers(cls, opts: dict[str, Any] | None = None) -> list[Leftover]:
        try:
            conn = connect()
        except Exception:  # no libvirt here: nothing of ours can be left in it
            return []
        out = []
        for dom in conn.listAllDomains(0):
            name = dom.name()
            if name.startswith(PREFIX):
                out.append(Leftover(f"libvirt domain {name}", lambda d=dom: _destroy(d)))
        return out

    # ---- lifecycle

    def prepare(self, bundle) -> None:
        av = self._libvirt_availability()
        if not av.ok:
            raise GuestError(av.reason)
        self.versions = av.versions
        super().prepare(bundle)
        if self._conn is None:
            self._conn = connect()

    def _connection(self):
        """The libvirt connection, made again if libvirtd went away and came back;
        libvirtError when it is not reachable now."""
        if self._conn is not None:
            with contextlib.suppress(Exception):
                if self._conn.isAlive():
                    return self._conn
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None
        self._conn = connect()
        return self._conn

    def _guest(self, name: str, spec: QemuSpec, scratch: Path) -> Guest:
        return DomainGuest(self._connection, name, spec, scratch / "console.log")

    def _cleanup(self) -> None:
        """This environment's domains that outlived their instance (none should)."""
        if self._conn is None:
            return  # never connected: nothing of ours can exist
        try:
            for dom in self._connection().listAllDomains(0):
                if dom.name().startswith(f"{self.ctx.prefix}-"):
                    _destroy(dom)
        except Exception as e:  # libvirtd is gone: say so, `clean` finds them by name later
            raise RuntimeError(
                f"could not remove this environment's domains ({e}): "
                "run `isobench clean` once libvirtd is back"
            ) from None
        finally:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d["libvirt"] = getattr(self, "versions", {}).get("libvirt")
        d["uri"] = URI
        if self.image is not None:
            root = (Path("<root.qcow2>"), "qcow2") if self.root_disk else None
            spec = self._spec_for("<cmdline>", Path("<io.raw>"), root=root)
            d["domain_xml_template"] = domain_xml("<name>", spec, Path("<console.log>"))
        return d


def _state(dom, lv) -> int:
    try:
        return dom.state()[0]
    except lv.libvirtError as e:
        if e.get_error_code() == lv.VIR_ERR_NO_DOMAIN:
            return lv.VIR_DOMAIN_SHUTOFF
        raise


def _read_costs(pid, cg, final, after_cg):
    """QEMU's CPU time and its cgroup now; the previous reading once they are gone."""
    now = tree_metrics([pid]) if pid else {}
    if now.get("nprocs"):
        final = now
    if cg:
        with contextlib.suppress(CgroupError, OSError):
            after_cg = cg.read() or after_cg
    return final, after_cg


def _own_cgroup(cg: CgroupReader, name: str) -> CgroupReader | None:
    """The domain's own cgroup dirs (libvirt names them after the domain); None where
    QEMU only shares a parent's (e.g. cgroup v1 controllers left at the root)."""
    own = {
        k: p
        for k, p in cg.paths.items()
        if name.replace("-", "") in str(p).replace("\\x2d", "").replace("-", "")
    }
    return CgroupReader(cg.layout, own) if own else None


def _qemu_pid(name: str) -> int | None:
    with contextlib.suppress(OSError, ValueError, IndexError):
        return int(Path(f"/run/libvirt/qemu/{name}.pid").read_text().split()[0])
    return None
