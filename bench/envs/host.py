"""The bare host: the probe as a child process in a fresh cgroup that the harness makes
and removes, so the baseline is measured exactly like every other environment."""

from __future__ import annotations

import itertools
import os
import shutil
import time
from typing import Any

from bench.envs.base import Availability, Environment, Invocation, Launch, Option
from bench.envs.process import stream, to_launch
from bench.metrics.cgroup import Cgroup, CgroupError, delta, detect_layout, preexec_attach

CGROUP_OPTIONS = {
    "cpus": Option(None, "CPU quota on the launch's cgroup, in CPUs (e.g. 0.5)", type=float),
    "cpuset": Option(None, "CPUs the probe may run on (cpuset list, e.g. 1 or 0-1)"),
}


def _cgroup_availability() -> Availability:
    if os.geteuid() != 0:
        return Availability(False, "needs root: isobench creates a cgroup for every launch")
    layout = detect_layout()
    if layout == "none":
        return Availability(False, "no cgroup filesystem at /sys/fs/cgroup: mount cgroup2 there")
    return Availability(True, versions={"cgroup": layout, "kernel": os.uname().release})


class HostEnv(Environment):
    kind = "host"
    summary = "the bare host: a child process in a fresh cgroup (the baseline)"
    options = CGROUP_OPTIONS

    def __init__(self, config: dict[str, Any], ctx):
        super().__init__(config, ctx)
        self._seq = itertools.count(1)
        self._bundle = None

    @classmethod
    def probe(cls) -> Availability:
        return _cgroup_availability()

    def prepare(self, bundle) -> None:
        self._bundle = bundle

    def wrap(self, argv: list[str]) -> list[str]:
        """The command that runs argv in this environment (the host: argv itself)."""
        return argv

    def launch(self, inv: Invocation, timeout: float) -> Launch:
        n = next(self._seq)
        name = f"isobench-{self.ctx.run_id}-{self.kind}-{os.getpid()}-{n}"
        workdir = None
        if inv.needs_workdir:
            workdir = self.ctx.scratch / name
            workdir.mkdir(parents=True)
        try:
            cg = Cgroup.create(name, cpus=self.config.get("cpus"), cpuset=self.config.get("cpuset"))
        except (CgroupError, OSError) as e:
            if workdir:
                shutil.rmtree(workdir, ignore_errors=True)
            return Launch(status="failed", reason=f"could not create cgroup {name}: {e}")
        try:
            before = cg.read()
            argv = self.wrap(inv.argv(str(self._bundle.probes[inv.probe]), str(workdir or "")))
            res = stream(
                argv, timeout, preexec_fn=preexec_attach(cg.procs_files), on_kill=cg.kill_all
            )
            launch = to_launch(res, timeout, "probe")
            launch.cgroup = delta(before, cg.read())
        finally:
            cg.remove()
            if workdir:
                shutil.rmtree(workdir, ignore_errors=True)
        launch.phases["cleaned"] = time.monotonic_ns() - res.t_submit
        return launch

    def describe(self) -> dict[str, Any]:
        av = self.probe()
        return {**super().describe(), "versions": av.versions, "argv_prefix": self.wrap([])}
