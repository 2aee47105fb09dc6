"""The bare host: the probe as a child process in a fresh cgroup that the harness makes
and removes, so the baseline is measured exactly like every other environment. With
rootfs=NAME the probe runs chrooted into that isobench rootfs (bench/envs/roots.py): the
very tree the containers and guests run from."""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import Any

from bench import footprint as fp
from bench import interrupt
from bench.envs import roots
from bench.envs.base import (
    Availability,
    CpuSet,
    Environment,
    Instance,
    Invocation,
    Launch,
    Option,
    StartError,
)
from bench.envs.process import Child, ProcessInstance
from bench.envs.roots import ROOTFS_OPTION
from bench.metrics.cgroup import (
    Cgroup,
    CgroupError,
    Layout,
    warm_migration_lock,
)
from bench.metrics.cgroup_parse import delta
from bench.metrics.procs import PeakSampler

CGROUP_OPTIONS = {
    "cpus": Option(None, "CPU quota on the launch's cgroup, in CPUs (e.g. 0.5)", type=float),
    "cpuset": Option(None, "CPUs the probe may run on (cpuset list, e.g. 1 or 0-1)", type=CpuSet),
    "weight": Option(
        None,
        "CPU weight of the launch's cgroup, 1024 = a plain process (cgroup v1 cpu.shares; "
        "v2 cpu.weight = weight/1024*100): shields the probe from other load on the host",
        type=int,
    ),
    "sampler": Option(
        "on",
        "psutil sampler of the probe's processes (peak RSS/PSS) during each launch; its own "
        "CPU time is recorded as sampler_cpu_ms, so its perturbation can be measured",
        choices=("on", "off"),
    ),
}
SAMPLER_INTERVAL_S = 0.1  # at least: longer where a sample costs more (PeakSampler)
ONLINE = Path("/sys/devices/system/cpu/online")


def parse_cpu_list(text: str) -> set[int]:
    """A kernel CPU list ("0-3,6") -> {0, 1, 2, 3, 6}; ValueError on anything else."""
    cpus: set[int] = set()
    for part in filter(None, (p.strip() for p in text.split(","))):
        lo, _, hi = part.partition("-")
        cpus.update(range(int(lo), int(hi or lo) + 1))
    return cpus


def is_pinned(cpuset: str | None, online: str | None) -> bool:
    """True when `cpuset` leaves out at least one online CPU (the probe is pinned)."""
    if not cpuset:
        return False
    try:
        chosen = parse_cpu_list(cpuset)
        return online is None or chosen < parse_cpu_list(online)
    except ValueError:
        return True  # the kernel would refuse it anyway; it was meant as a pinning


class CgroupSampler(PeakSampler):
    """PeakSampler over whatever processes are in the launch's cgroup right now: the
    probe's whole tree (unshare and its children too), found without knowing the pid."""

    def __init__(self, cg: Cgroup, interval: float = SAMPLER_INTERVAL_S):
        super().__init__([], interval=interval)
        self._cg = cg

    def _sample(self) -> None:
        # One cgroup.procs file is enough (every hierarchy holds the same pids) and
        # costs ~0.03 ms; Cgroup.pids() reads them all (~0.5 ms on a v1/hybrid host).
        try:
            with open(self._cg.procs_files[0]) as f:
                self.pids = [int(x) for x in f.read().split()]
        except (OSError, ValueError, IndexError):
            self.pids = []
        super()._sample()


def sampler_figures(figures: dict[str, float]) -> tuple[dict[str, float], dict[str, float]]:
    """PeakSampler.stop() -> (the instance's own peaks, the sampler's cost on the host)."""
    instance = {"rss_peak_mib": figures["rss_peak_mib"]}
    if "pss_peak_mib" in figures:
        instance["pss_peak_mib"] = figures["pss_peak_mib"]
    harness = {"sampler_cpu_ms": figures["sampler_cpu_ms"], "sampler_samples": figures["samples"]}
    return instance, harness


def _cgroup_availability() -> Availability:
    if os.geteuid() != 0:
        return Availability(False, "needs root: isobench creates a cgroup for every launch")
    layout = Layout.detect()
    if not layout.usable:
        return Availability(False, "no cgroup filesystem at /sys/fs/cgroup: mount cgroup2 there")
    return Availability(True, versions={"cgroup": layout.name, "kernel": os.uname().release})


class HostEnv(Environment):
    kind = "host"
    channel = True  # the probe child's stdin and stdout
    summary = "the bare host: a child process in a fresh cgroup (the baseline)"
    options = {**CGROUP_OPTIONS, "rootfs": ROOTFS_OPTION}

    def __init__(self, config: dict[str, Any], ctx):
        super().__init__(config, ctx)
        self._bundle = None
        self._rootfs = None  # the isobench rootfs the probes run chrooted into, if any

    @classmethod
    def probe(cls, opts: dict[str, Any] | None = None) -> Availability:
        return _cgroup_availability()

    def prepare(self, bundle) -> None:
        self._rootfs = roots.load(self.opts["rootfs"], self.ctx.cache)
        self._bundle = bundle

    def wrap(self, argv: list[str]) -> list[str]:
        """The command that runs argv in this environment (the host: argv itself)."""
        return argv

    def command(self, procs: list[str], argv: list[str], root: list[str]) -> list[str]:
        """The whole command of a launch: the bundle's `attach` joins the cgroup (its
        `procs` files) and, given `root` (roots.attach_options), enters the rootfs, then
        execs argv: no preexec_fn, so the spawn is a vfork, not a fork of the harness
        (workloads/attach.c)."""
        return [str(self._bundle.probes["attach"]), *root, *procs, "--", *self.wrap(argv)]

    def _start(self, inv: Invocation, timeout: float) -> Instance:
        if self._bundle is None:
            raise RuntimeError(f"{self.kind}: start() before prepare()")
        name = self.new_name()
        workdir = cg = sampler = launch_root = None

        def teardown() -> None:  # what was made so far (Cgroup.remove kills what is left)
            if sampler:
                sampler.stop()
            if cg is not None:
                with contextlib.suppress(CgroupError, OSError):
                    cg.remove()
            if workdir is not None:
                shutil.rmtree(workdir, ignore_errors=True)
            if launch_root is not None:  # its mounts went with its processes
                shutil.rmtree(launch_root, ignore_errors=True)

        try:
            if inv.needs_workdir:
                workdir = self.ctx.scratch / name
                workdir.mkdir(parents=True)
            cg = Cgroup.create(name, cpus=self.opts["cpus"], cpuset=self.opts["cpuset"])
            if self.opts["weight"]:
                cg.set_weight(self.opts["weight"])
            sampler = CgroupSampler(cg) if self.opts["sampler"] == "on" else None
            probe, root = str(self._bundle.probes[inv.probe]), []
            if self._rootfs is not None:  # the same probe, seen inside the tree
                launch_root = self.ctx.scratch / f"{name}.root"
                root = roots.attach_options(self._rootfs, self._bundle, launch_root, workdir)
                probe = roots.probe_path(inv.probe)
            argv = inv.argv(probe, roots.WORKDIR if root else str(workdir or ""))
            before = cg.read()
            warm_migration_lock()  # the probe is moved like one born there: see its doc
            child = Child(
                self.command(cg.procs_files, argv, root),
                on_kill=cg.kill_all,
                on_start=(lambda pid: sampler.start()) if sampler else None,
                serve=inv.serves,
            )
        except BaseException as e:
            with interrupt.shielded():
                teardown()
            if isinstance(e, (CgroupError, OSError, KeyError)):
                raise StartError(f"could not set up {name}: {e}") from None
            raise

        def collect(launch: Launch) -> None:
            figures = sampler.stop() if sampler else {}
            launch.cgroup = delta(before, cg.read())
            if figures:
                instance, harness = sampler_figures(figures)
                launch.cgroup.update(instance)
                launch.host_side.update(harness)

        return ProcessInstance(
            name, child, timeout, what="probe", collect=collect, teardown=teardown
        )

    def disk_footprint(self, bundle, io, timeout) -> list[dict[str, Any]]:
        """The probe bundle; nothing kept per instance (a process on the host's files)."""
        return [
            *fp.bundle_figures(bundle),
            fp.missing(
                "per instance after io",
                "none kept: the instance is a process on the host's filesystem; the io "
                "probe writes in a scratch directory and removes its files",
            ),
        ]

    def describe(self) -> dict[str, Any]:
        av = self.probe()
        online = None
        with contextlib.suppress(OSError):
            online = ONLINE.read_text().strip()
        cpuset = self.opts["cpuset"]
        sampler_on = self.opts["sampler"] == "on"
        return {
            **super().describe(),
            "versions": av.versions,
            "argv_prefix": self.wrap([]),
            "rootfs": roots.describe(self._rootfs),
            "resources": {
                "cpus": self.opts["cpus"],  # CPU quota in CPUs; None: no quota
                "cpuset": cpuset,
                "weight": self.opts["weight"],  # None: the default 1024 (v2: 100)
                "pinned": is_pinned(cpuset, online),
                "online_cpus": online,
                "sampler": self.opts["sampler"],
                "sampler_interval_s": SAMPLER_INTERVAL_S if sampler_on else None,
            },
        }
