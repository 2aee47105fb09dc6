"""`lxc`: an LXC application container per launch, `lxc-execute` (liblxc 5) with LXC's
own init (init.lxc, bind-mounted from the host) as the container's pid 1 and the probe
as its one child.

Through the CLI, not the Python bindings (Debian's python3-lxc): `Container.start()`
forks the calling process, and the harness runs sampler threads (a fork of a threaded
Python is unsafe); the bindings exist for the distribution's python3 only, not a venv;
and the foreground `lxc-execute` is exactly what the other process kinds already drive:
a child (process.Child) whose stdin and stdout are the container's (init.lxc passes its
inherited descriptors to the probe), so the control channel of a serving probe is those
pipes, and a SIGTERM to it is forwarded by LXC's monitor to init.lxc and by that to
the probe, which exits 0.

The foreground `lxc-execute` is the container's monitor (what `lxc-start` would
daemonise): the instance's host-side carrier (carriers()), in its own cgroup
<name>.monitor, outside the container's <name>/payload (lxc_config.py says where LXC
puts both and why). The container's init dies with the monitor (LXC gives it a
parent-death signal); a kill also kills what is left in the payload cgroup.

Each environment has a private lxcpath, <scratch>/isobench-lxc (`-P`), holding one directory
per instance with its config file (marker first: `# isobench lxc instance <name>`),
removed with the instance. The rootfs is the bundle's probes unpacked once per
environment in <scratch>/rootfs, shared read-mostly by its instances, or with
rootfs=NAME an overlay on that isobench rootfs's tree (oci.mount_overlay: the same view
`oci` gives). liblxc keeps a lock file per container under /run/lxc/lock/<lxcpath>/:
removed with the instance, its directories with the environment.

After a kill -9 of the harness the containers run on (their monitors are in sessions of
their own): `clean` finds each by its monitor's command line (`lxc-execute -P PATH -n
isobench-...`) and the marker in PATH/<name>/config, and lock files of isobench's
lxcpaths; a look-alike without the marker is not listed.

Options: seccomp (LXC's denylist common.seccomp, or none), apparmor (only where the
kernel has AppArmor: this Debian VM's has not, and an AppArmor option is then refused),
cpus, cpuset, memory (lxc.cgroup.* or lxc.cgroup2.* by the cgroup layout), network
none (lxc.net type empty: loopback only), host (type none: the host's namespace) or veth
(LXC's pair, host end ibv<hash>h with isobench's alias and a /30 of
namespaces.VETH_BLOCK, given its address when a client first asks where to connect).
A server invocation with no network given gets veth, as docker's gets its bridge.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
from pathlib import Path
from typing import Any

import psutil

from bench import interrupt
from bench.envs import containers as ct
from bench.envs import image as img
from bench.envs import lxc_config as lc
from bench.envs import roots
from bench.envs.base import (
    Availability,
    Context,
    CpuSet,
    Environment,
    Instance,
    Invocation,
    Launch,
    Leftover,
    MemorySize,
    Option,
    OptionError,
    StartError,
)
from bench.envs.cri_daemon import mounts_under, unmount_under
from bench.envs.namespaces import (
    free_slash30,
    link_alias,
    remove_link,
    run_ip,
    taken_networks,
    veth_names,
)
from bench.envs.oci import OVERLAY, ROOTFS, probe_root
from bench.envs.process import Child, ProcessInstance
from bench.metrics.cgroup import CgroupReader, Layout

APPARMOR_ENABLED = Path("/sys/module/apparmor/parameters/enabled")
INSTALL = "apt-get install --no-install-recommends lxc"


class AppArmorProfile(str):
    """An AppArmor profile name as LXC takes it: generated, unconfined or a loaded one."""

    def __new__(cls, text: str):
        if not lc.SAFE_VALUE.match(text):
            raise ValueError(text)
        return super().__new__(cls, text)


AppArmorProfile.__name__ = "profile name (generated, unconfined or a loaded profile)"


def apparmor_problem() -> str | None:
    """Why the apparmor option cannot apply here (None: the kernel has AppArmor on)."""
    try:
        on = APPARMOR_ENABLED.read_text().strip() == "Y"
    except OSError:
        return "this kernel has no AppArmor (no /sys/module/apparmor): leave apparmor unset"
    return None if on else "AppArmor is disabled in this kernel: leave apparmor unset"


def lxc_execute() -> str | None:
    return shutil.which("lxc-execute")


class LxcEnv(Environment):
    kind = "lxc"
    channel = True  # lxc-execute's stdin and stdout, which init.lxc hands to the probe
    summary = "LXC application containers: lxc-execute with LXC's init, defaults and seccomp"
    options = {
        "seccomp": Option(
            "default",
            "LXC's default seccomp policy (common.seccomp, a denylist), or none",
            ("default", "unconfined"),
        ),
        "apparmor": Option(
            None,
            "lxc.apparmor.profile (generated, unconfined, a loaded profile); only where "
            "the kernel has AppArmor (unset: LXC's own choice)",
            type=AppArmorProfile,
        ),
        "cpus": Option(None, "CPU quota in CPUs (e.g. 0.5)", type=float),
        "cpuset": Option(None, "CPUs the container may use (e.g. 0-1)", type=CpuSet),
        "memory": Option(None, "memory limit (e.g. 512m)", type=MemorySize),
        "network": Option(
            "none",
            "loopback only (lxc.net type empty), the host's network (type none), or a "
            "veth pair a host-side client reaches (a server gets veth unless given)",
            ("none", "veth", "host"),
        ),
        "rootfs": roots.ROOTFS_OPTION,
    }

    def __init__(self, config: dict[str, Any], ctx: Context):
        super().__init__(config, ctx)
        self._bundle = None
        self._rootfs: Path | None = None
        self._tree = None  # the isobench rootfs mounted at the rootfs, if any
        self._layout = Layout.detect()

    @property
    def lxcpath(self) -> Path:
        return self.ctx.scratch / lc.LXCPATH

    # -- availability, leftovers
    @classmethod
    def probe(cls, opts: dict[str, Any] | None = None) -> Availability:
        if os.geteuid() != 0:
            return Availability(False, "needs root: LXC runs privileged containers here")
        path = lxc_execute()
        if not path:
            return Availability(False, f"lxc-execute not found: {INSTALL}")
        if not lc.COMMON_CONF.is_file():
            return Availability(
                False, f"LXC's {lc.COMMON_CONF} is missing: apt-get install liblxc-common"
            )
        layout = Layout.detect()
        if not layout.usable:
            return Availability(False, "no cgroup filesystem at /sys/fs/cgroup: mount cgroup2")
        version = ct.tool_version([path, "--version"])
        if not version:
            return Availability(False, f"{path} --version failed: reinstall lxc ({INSTALL})")
        if (opts or {}).get("apparmor") and (problem := apparmor_problem()):
            return Availability(False, f"apparmor={opts['apparmor']}: {problem}")
        return Availability(True, "", {"lxc": version, "cgroup": layout.name})

    @classmethod
    def refusal(cls, opts: dict[str, Any]) -> str | None:
        if opts.get("apparmor") and (problem := apparmor_problem()):
            return f"apparmor={opts['apparmor']}: {problem}"
        return None

    @classmethod
    def variants(cls) -> list[str]:
        """The default only: the main job's five minutes have no room for a second LXC
        cell; its seccomp share is `--env lxc --env lxc:seccomp=unconfined`."""
        return ["lxc"]

    @classmethod
    def leftovers(cls, opts: dict[str, Any] | None = None) -> list[Leftover]:
        out = [
            Leftover(
                f"lxc container {name} (monitor pid {pid}, lxcpath {path})",
                lambda p=pid, x=path, n=name: _remove_container(p, x, n),
            )
            for pid, path, name in running()
        ]
        alive = {(str(path), name) for _, path, name in running()}
        for lock, lxcpath, name in lc.lock_leftovers():
            if (str(lxcpath), name) not in alive and _config_ours_or_gone(lxcpath, name):
                out.append(Leftover(f"lxc lock file {lock} ({name})", lambda f=lock: _unlock(f)))
        return out

    # -- lifecycle
    def prepare(self, bundle) -> None:
        if problem := self.refusal(self.opts):
            raise OptionError(f"lxc: {problem}")
        av = self.probe()
        if not av.ok:
            raise OptionError(f"lxc: {av.reason}")
        self._bundle = bundle
        self._tree = roots.load(self.opts["rootfs"], self.ctx.cache)
        self._rootfs = probe_root(self._tree, bundle, self.ctx.scratch)

    def network_of(self, inv: Invocation) -> str:
        """The option when given; else veth for a server the host must reach."""
        if self.config.get("network") is not None:
            return self.opts["network"]
        return "veth" if ct.served_port(inv) is not None else "none"

    def net_path(self) -> str | None:
        if self.config.get("network") is not None and self.opts["network"] == "none":
            return "network=none: the container has only its own loopback; use network=veth"
        return None

    def _config(self, name: str, inv: Invocation, net: lc.Net) -> tuple[str, list[str]]:
        """The container's config file and the probe's argv inside it."""
        if self._tree is None:
            probe, cwd, env = img.probe_path(inv.probe), img.WORKDIR, img.PROBES_ENV
        else:  # the rootfs's own PATH; the probes and the io directory where oci has them
            probe, cwd, env = roots.probe_path(inv.probe), roots.WORKDIR, img.ROOTFS_ENV
        memory = self.opts["memory"]
        limits = lc.limit_lines(
            self._layout.name,
            self.opts["cpus"],
            self.opts["cpuset"],
            memory.bytes() if memory else None,
        )
        text = lc.config_text(
            name,
            self._rootfs,
            env=env,
            cwd=cwd,
            net=net,
            seccomp=self.opts["seccomp"],
            apparmor=self.opts["apparmor"],
            limits=limits,
        )
        return text, inv.argv(probe, cwd)

    def _start(self, inv: Invocation, timeout: float) -> Instance:
        if self._rootfs is None:
            raise RuntimeError("lxc: start() before prepare()")
        name = self.new_name()
        lxcpath, layout = self.lxcpath, self._layout
        cdir = lxcpath / name
        parent = ct.LaunchCgroup(name, layout)
        monitor: dict[str, int] = {}
        sampler = ct.HostSideSampler(
            lambda: {monitor["pid"]: "monitor"} if "pid" in monitor else {},
            interval=0.05,
            find_every=0.05,
        )
        net = lc.Net(self.network_of(inv))
        veth: tuple[str, str, str] | None = None

        def kill_container() -> None:
            """The container's processes (init.lxc dies with its monitor; this makes sure)."""
            layout.remove(lc.payload_rel(name))

        def teardown() -> None:
            sampler.stop()
            kill_container()
            layout.remove(lc.monitor_rel(name))
            parent.remove()
            if net.host_end:
                remove_link(net.host_end)  # gone with the container's netns already
            shutil.rmtree(cdir, ignore_errors=True)
            with contextlib.suppress(OSError):
                lc.lock_of(lxcpath, name).unlink()

        def collect(launch: Launch) -> None:
            sampler.stop()
            launch.host_side = sampler.result()
            launch.cgroup = parent.read()
            launch.extra.update(cgroup_parent=parent.rel, lxcpath=str(lxcpath))

        def started(pid: int) -> None:
            monitor["pid"] = pid
            sampler.__enter__()

        try:
            if net.mode == "veth":
                subnet = free_slash30(taken_networks() + self._veth_nets(), name)
                near, far = (f"{a}/30" for a in list(subnet.hosts())[:2])
                net = lc.Net("veth", veth_names(name)[0], far)
                veth = (net.host_end, near, far)
            text, argv = self._config(name, inv, net)
            cdir.mkdir(parents=True)
            (cdir / "config").write_text(text)
            command = [lxc_execute() or "lxc-execute", "-P", str(lxcpath), "-n", name, "--"]
            child = Child(
                [*command, *argv], on_kill=kill_container, on_start=started, serve=inv.serves
            )
        except BaseException as e:
            with interrupt.shielded():
                teardown()
            if isinstance(e, (OSError, ValueError)):
                raise StartError(f"could not set up {name}: {e}") from None
            raise
        instance = LxcInstance(name, child, timeout, collect=collect, teardown=teardown)
        instance.watchers.append(sampler)
        instance.veth = veth
        return instance

    def _veth_nets(self) -> list[str]:
        """The /30s this environment's live instances were given (not yet on the host)."""
        return [
            i.veth[1] for i in self._live if isinstance(i, LxcInstance) and i.veth and not i.launch
        ]

    def _cleanup(self) -> None:
        """This environment's containers still running, its lxcpath (and liblxc's lock
        directory of it), its rootfs."""
        lxcpath = self.lxcpath
        for pid, path, name in running():
            if Path(path) == lxcpath:
                _remove_container(pid, path, name)
        shutil.rmtree(lxcpath, ignore_errors=True)
        lock_dir = lc.lock_dir(lxcpath)
        if lock_dir.is_dir():
            for lock in lock_dir.glob(f".{lc.NAME_PREFIX}*"):
                with contextlib.suppress(OSError):
                    lock.unlink()
            lc.prune(lock_dir)
        rootfs = self.ctx.scratch / ROOTFS
        with interrupt.shielded():
            unmount_under(rootfs)
        if mounts_under(rootfs):  # never delete through a mount: it is the tree's view
            raise RuntimeError(f"lxc: could not unmount the overlay at {rootfs}")
        shutil.rmtree(rootfs, ignore_errors=True)
        shutil.rmtree(self.ctx.scratch / OVERLAY, ignore_errors=True)
        self._rootfs = None

    def describe(self) -> dict[str, Any]:
        seccomp = str(lc.COMMON_SECCOMP) if self.opts["seccomp"] == "default" else "none"
        return {
            **super().describe(),
            "lxc": ct.tool_version([lxc_execute() or "lxc-execute", "--version"]),
            "seccomp": seccomp,
            "apparmor": self.opts["apparmor"] or (apparmor_problem() or "LXC's default"),
            "init": "init.lxc (lxc-execute)",
            "cgroup_layout": self._layout.name,
            "bundle": self._bundle.hash if self._bundle else None,
            "rootfs": roots.describe(self._tree),
        }


class LxcInstance(ProcessInstance):
    """An lxc-execute child; with network=veth, LXC's pair, whose host end gets its
    address (and isobench's alias) on the first address()."""

    veth: tuple[str, str, str] | None = None  # host end, its address, the container's
    path = ""

    def carriers(self) -> dict[int, str]:
        """The monitor (the foreground lxc-execute, in <name>.monitor): outside the
        container's cgroup. init.lxc is inside it, counted with the container."""
        if self.launch is not None or self.child.proc.poll() is not None:
            return {}
        return {self.child.proc.pid: "monitor"}

    def live_cgroup(self, layout: Layout | None = None) -> CgroupReader | None:
        reader = (layout or Layout.detect()).reader(lc.payload_rel(self.name))
        if reader is not None and reader.read().get("mem_current_mib") is not None:
            return reader
        return None

    def address(self, port: int) -> tuple[str, int]:
        if self.veth is None:
            return super().address(port)  # network=host, or none (net_path refuses it)
        host_end, near, far = self.veth
        if not self.path:
            if self.child.proc.poll() is not None:
                raise StartError(f"{self.name}: the instance has ended")
            run_ip("link", "set", "dev", host_end, "alias", link_alias(self.name))
            run_ip("addr", "add", near, "dev", host_end)
            run_ip("link", "set", "dev", host_end, "up")
            self.path = f"LXC veth {host_end} {near} <-> eth0 {far} (in the container's netns)"
        return (far.split("/")[0], port)

    def _end(self, *, stopped: bool, timed_out: bool) -> Launch:
        launch = super()._end(stopped=stopped, timed_out=timed_out)
        if self.path:
            launch.net_path = self.path
        return launch


# ---------------------------------------------------------------- what clean finds


def running() -> list[tuple[int, str, str]]:
    """(monitor pid, lxcpath, name) of every running container isobench started: an
    `lxc-execute -P PATH -n isobench-...` process whose PATH/<name>/config has the marker."""
    out = []
    for proc in psutil.process_iter():
        found = lc.monitor_of(ct.cmdline(proc))
        if found is None:
            continue
        path, name = found
        try:
            config = (Path(path) / name / "config").read_text()
        except OSError:
            continue
        if lc.is_ours(config, name):
            out.append((proc.pid, path, name))
    return out


def _config_ours_or_gone(lxcpath: Path, name: str) -> bool:
    try:
        return lc.is_ours((lxcpath / name / "config").read_text(), name)
    except FileNotFoundError:
        return True  # the scratch directory went first: only the lock is left
    except OSError:
        return False


def _remove_container(pid: int, lxcpath: str, name: str) -> None:
    """SIGKILL the monitor and whatever is in the container's cgroup, remove its cgroups,
    its directory (marker checked again) and liblxc's lock file of it."""
    with contextlib.suppress(ProcessLookupError, PermissionError, psutil.Error):
        if lc.monitor_of(ct.cmdline(psutil.Process(pid))) == (lxcpath, name):
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(psutil.Error):
        psutil.Process(pid).wait(5)
    layout = Layout.detect()
    for rel in (lc.payload_rel(name), lc.monitor_rel(name), name):
        layout.remove(rel)
    cdir = Path(lxcpath) / name
    with contextlib.suppress(OSError):
        if lc.is_ours((cdir / "config").read_text(), name):
            shutil.rmtree(cdir, ignore_errors=True)
    _unlock(lc.lock_of(Path(lxcpath), name))


def _unlock(lock: Path) -> None:
    lc.remove_lock(lock)
