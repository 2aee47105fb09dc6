"""`oci`: `runc run` / `crun run` / `runsc run` straight on an OCI bundle, no daemon.

The difference between `oci:runtime=runc` and `docker:runtime=runc` is the daemon's
share (dockerd + containerd + shim). The rootfs is the image's files unpacked once per
environment under ctx.scratch; each launch gets its own bundle dir with a config.json
(image.oci_config: namespaces pid/mount/ipc/uts/net, no seccomp, Docker's default
capabilities) whose cgroupsPath is /<instance>/probe: the runtime creates and removes
the leaf; isobench reads and removes the per-launch parent /<instance>.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
from typing import Any

from bench import interrupt
from bench.envs import containers as ct
from bench.envs import image as img
from bench.envs.base import (
    Availability,
    Context,
    Environment,
    Invocation,
    Launch,
    Leftover,
    Option,
    OptionError,
)
from bench.envs.process import stream, to_launch
from bench.metrics import cgroup as cg

RUNTIMES = ("runc", "crun", "runsc")
STATE_ROOT = "/run/isobench-oci"  # --root of every runtime: our containers only
CALL_TIMEOUT_S = 30


def runtime_argv(runtime: str, network: str) -> list[str]:
    """The runtime's global flags (runsc: its own netstack cannot set up here)."""
    path = shutil.which(runtime) or runtime
    argv = [path, "--root", f"{STATE_ROOT}/{runtime}"]
    if runtime == "runsc":
        argv += ["--network=host"] if network == "host" else ["--network=none"]
    return argv


def runtime_problem(runtime: str, layout: str) -> str:
    """Pure: a known reason this runtime cannot run here ("" when none)."""
    if runtime == "crun" and layout == "hybrid":
        return "crun: refuses the hybrid cgroup layout"
    return ""


class OciEnv(Environment):
    kind = "oci"
    summary = "an OCI runtime run directly on a bundle (runc, crun, runsc), no daemon"
    options = {
        "runtime": Option("runc", "OCI runtime binary", RUNTIMES),
        "network": Option("none", "a new empty network namespace, or the host's", ("none", "host")),
    }

    def __init__(self, config: dict[str, Any], ctx: Context):
        super().__init__(config, ctx)
        self.opts = ct.resolve_options(self.kind, self.options, config)
        self._bundle = None
        self._rootfs = None
        self._n = 0

    @classmethod
    def probe(cls, opts: dict[str, Any] | None = None) -> Availability:
        found = [rt for rt in RUNTIMES if shutil.which(rt)]
        if not found:
            return Availability(False, "no OCI runtime installed (apt-get install runc)")
        versions = {rt: ct.tool_version([rt, "--version"]) for rt in found}
        return Availability(True, "", versions)

    @classmethod
    def details(cls) -> list[tuple[str, Availability]]:
        layout = cg.detect_layout()
        rows = []
        for rt in RUNTIMES:
            if not shutil.which(rt):
                av = Availability(False, f"{rt}: not installed (apt-get install {rt})")
            elif problem := runtime_problem(rt, layout):
                av = Availability(False, problem)
            else:
                av = Availability(True, "", {rt: ct.tool_version([rt, "--version"])})
            rows.append((f"oci:runtime={rt}", av))
        return rows

    @classmethod
    def leftovers(cls) -> list[Leftover]:
        out = []
        for rt in RUNTIMES:
            if not shutil.which(rt):
                continue
            for cid in _list(rt):
                out.append(Leftover(f"{rt} container {cid}", lambda r=rt, c=cid: _delete(r, c)))
        return out

    def prepare(self, bundle) -> None:
        runtime = self.opts["runtime"]
        if not shutil.which(runtime):
            raise OptionError(f"oci: runtime={runtime} is not installed")
        if problem := runtime_problem(runtime, cg.detect_layout()):
            raise OptionError(f"oci: {problem}")
        self._bundle = bundle
        self._rootfs = img.unpack_rootfs(bundle, self.ctx.scratch / "oci" / "rootfs")

    def launch(self, inv: Invocation, timeout: float) -> Launch:
        if self._rootfs is None:
            raise RuntimeError("oci: launch() before prepare()")
        self._n += 1
        name = ct.instance_name(self.ctx.run_id, self._n)
        runtime = self.opts["runtime"]
        bundle_dir = self.ctx.scratch / "oci" / name
        bundle_dir.mkdir(parents=True)
        config = img.oci_config(
            inv.argv(img.probe_path(inv.probe), img.WORKDIR),
            self._rootfs,
            f"/{name}/probe",
            network=self.opts["network"],
            hostname=name,
        )
        (bundle_dir / "config.json").write_text(json.dumps(config, indent=1))
        cgroup = ct.LaunchCgroup(name)
        argv = [
            *runtime_argv(runtime, self.opts["network"]),
            "run",
            "--bundle",
            str(bundle_dir),
            name,
        ]
        try:
            with ct.HostSideSampler(
                lambda: _carriers(name), interval=0.02, find_every=0.05
            ) as sampler:
                res = stream(argv, timeout, on_kill=lambda: _delete(runtime, name))
            launch = to_launch(res, timeout, "instance")
            launch.host_side = sampler.result()
            launch.cgroup = cgroup.read()
            launch.extra.update(name=name, cgroup_parent=cgroup.rel)
        finally:
            with interrupt.shielded():
                _delete(runtime, name)
                cgroup.remove()
                shutil.rmtree(bundle_dir, ignore_errors=True)
        launch.phases["cleaned"] = ct.ns_since(res.t_submit)
        return launch

    def cleanup(self) -> None:
        prefix = f"isobench-{self.ctx.run_id}-"
        for cid in _list(self.opts["runtime"]):
            if cid.startswith(prefix):
                _delete(self.opts["runtime"], cid)
        shutil.rmtree(self.ctx.scratch / "oci", ignore_errors=True)

    def describe(self) -> dict[str, Any]:
        runtime = self.opts["runtime"]
        return {
            "kind": self.kind,
            "config": dict(self.config),
            "options": dict(self.opts),
            "runtime": {
                "name": runtime,
                "version": ct.tool_version([runtime, "--version"]),
                "argv": runtime_argv(runtime, self.opts["network"]),
            },
            "seccomp": "none",
            "cgroup_layout": cg.detect_layout(),
            "bundle": self._bundle.hash if self._bundle else None,
        }


def _carriers(name: str) -> dict[int, str]:
    """runsc's sandbox and gofer (runc has none: its `run` process is the launcher)."""
    return {pid: role for pid, role in ct.find_carriers(name).items() if role != "runtime"}


def _list(runtime: str) -> list[str]:
    try:
        out = subprocess.run(
            [*runtime_argv(runtime, "none"), "list", "-q"],
            capture_output=True,
            text=True,
            timeout=CALL_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line.strip() for line in out.stdout.splitlines() if line.strip()]


def _delete(runtime: str, cid: str) -> None:
    """kill + delete -f, then SIGKILL any runsc process of it that survived."""
    base = runtime_argv(runtime, "none")
    with contextlib.suppress(OSError, subprocess.TimeoutExpired):
        subprocess.run(
            [*base, "kill", cid, "KILL"], capture_output=True, timeout=CALL_TIMEOUT_S, check=False
        )
    with contextlib.suppress(OSError, subprocess.TimeoutExpired):
        subprocess.run(
            [*base, "delete", "-f", cid], capture_output=True, timeout=CALL_TIMEOUT_S, check=False
        )
    ct.kill_carriers(cid)
