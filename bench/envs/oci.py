"""`oci`: `runc run` / `crun run` / `runsc run` straight on an OCI bundle, no daemon.

The difference between `oci:runtime=runc` and `docker:runtime=runc` is the daemon's
share (dockerd + containerd + shim). The rootfs is the image's files unpacked once per
environment in its own scratch directory (no other environment reads or removes it);
each instance gets its own bundle dir next to it with a config.json (image.oci_config:
namespaces pid/mount/ipc/uts/net, no seccomp, Docker's default capabilities) whose
cgroupsPath is /<instance>/probe: the runtime creates and removes the leaf; isobench
reads and removes the per-launch parent /<instance>.

The instance is the runtime's `run` process (process.Child). A stop is SIGTERM: runc and
crun pass it from their process group to the container's init; `runsc run` does not (it
dies of it, and its gofer with it), so runsc's stop is `runsc kill <id> TERM`.

A held instance names its carriers (carriers()): the foreground `run` process (in the
harness's cgroup: outside the instance's) and, for runsc, the sandbox and gofer it started
(in the container's cgroup); density counts the PSS of those outside.

With rootfs=NAME the bundle's rootfs is that isobench rootfs's tree, never written:
prepare() mounts an overlay at <scratch>/rootfs (the tree below; above it, in
<scratch>/rootfs.overlay, the bundle's probes at roots.PROBE_DIR and an empty
roots.WORKDIR: the files docker's image of the rootfs adds), shared by the
environment's instances as the unpacked probes' rootfs is; cleanup() unmounts it. A
crash leaves the mount: `isobench clean` lists an overlay mounted at `rootfs` inside an
isobench scratch directory and detaches it before the scratch directory goes.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import psutil

from bench import footprint as fp
from bench import interrupt, scratch
from bench.envs import containers as ct
from bench.envs import image as img
from bench.envs import roots
from bench.envs.base import (
    Availability,
    Context,
    Environment,
    Instance,
    Invocation,
    Launch,
    Leftover,
    Option,
    OptionError,
    StartError,
)
from bench.envs.cri_daemon import mounts_under, unmount_under
from bench.envs.process import Child, ProcessInstance
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


ROOTFS = "rootfs"  # in the environment's scratch directory
OVERLAY = "rootfs.overlay"  # upper and work of the overlay on a rootfs's tree, beside it
BUNDLES = "bundles"  # one bundle directory per instance, in the same place


class OciEnv(Environment):
    kind = "oci"
    channel = True  # the foreground runtime's stdin and stdout, passed to the container
    summary = "an OCI runtime run directly on a bundle (runc, crun, runsc), no daemon"
    options = {
        "runtime": Option("runc", "OCI runtime binary", RUNTIMES),
        "network": Option("none", "a new empty network namespace, or the host's", ("none", "host")),
        "rootfs": roots.ROOTFS_OPTION,
    }

    def __init__(self, config: dict[str, Any], ctx: Context):
        super().__init__(config, ctx)
        self._bundle = None
        self._rootfs: Path | None = None  # the bundle's rootfs directory
        self._tree = None  # the isobench rootfs mounted there, if any
        self._layout = cg.Layout.detect()

    @classmethod
    def probe(cls, opts: dict[str, Any] | None = None) -> Availability:
        runtime = (opts or {}).get("runtime")
        if runtime:  # the runtime these options name
            return ct.runtime_availability(str(runtime), cg.Layout.detect())
        found = [rt for rt in RUNTIMES if shutil.which(rt)]
        if not found:
            return Availability(False, "no OCI runtime installed (apt-get install runc)")
        versions = {rt: ct.tool_version([rt, "--version"]) for rt in found}
        return Availability(True, "", versions)

    @classmethod
    def details(cls) -> list[tuple[str, Availability]]:
        layout = cg.Layout.detect()
        return [(f"oci:runtime={rt}", ct.runtime_availability(rt, layout)) for rt in RUNTIMES]

    @classmethod
    def leftovers(cls, opts: dict[str, Any] | None = None) -> list[Leftover]:
        out = []
        for rt in RUNTIMES:
            if not shutil.which(rt):
                continue
            try:
                found = _list(rt, strict=True)
            except RuntimeError as e:  # said, so that clean does not report "nothing"
                out.append(Leftover(f"oci: could not look for {rt} containers ({e})", lambda: None))
                continue
            for cid in found:
                out.append(Leftover(f"{rt} container {cid}", lambda r=rt, c=cid: _delete(r, c)))
        for point in overlay_leftovers():  # after the containers that run from them
            out.append(Leftover(f"oci rootfs overlay {point}", lambda p=point: _unmount(p)))
        return out

    def prepare(self, bundle) -> None:
        av = ct.runtime_availability(self.opts["runtime"], self._layout)
        if not av.ok:
            raise OptionError(f"oci: {av.reason}")
        self._bundle = bundle
        self._tree = roots.load(self.opts["rootfs"], self.ctx.cache)
        self._rootfs = probe_root(self._tree, bundle, self.ctx.scratch)

    def _start(self, inv: Invocation, timeout: float) -> Instance:
        if self._rootfs is None:
            raise RuntimeError("oci: start() before prepare()")
        name = self.new_name()
        runtime = self.opts["runtime"]
        bundle_dir = self.ctx.scratch / BUNDLES / name
        if self._tree is None:
            probe, cwd, env = img.probe_path(inv.probe), img.WORKDIR, img.PROBES_ENV
        else:  # the rootfs's own PATH; the probes and the io directory where docker's are
            probe, cwd, env = roots.probe_path(inv.probe), roots.WORKDIR, img.ROOTFS_ENV
        config = img.oci_config(
            inv.argv(probe, cwd),
            self._rootfs,
            f"/{name}/probe",
            network=self.opts["network"],
            hostname=name,
            cwd=cwd,
            env=env,
        )
        cgroup = ct.LaunchCgroup(name, self._layout)
        argv = [
            *runtime_argv(runtime, self.opts["network"]),
            "run",
            "--bundle",
            str(bundle_dir),
            name,
        ]
        sampler = ct.HostSideSampler(lambda: _carriers(name), interval=0.02, find_every=0.05)

        def teardown() -> None:
            sampler.stop()
            _delete(runtime, name)
            cgroup.remove()
            shutil.rmtree(bundle_dir, ignore_errors=True)

        def collect(launch: Launch) -> None:
            sampler.stop()
            launch.host_side = sampler.result()
            launch.cgroup = cgroup.read()
            launch.extra.update(cgroup_parent=cgroup.rel)

        try:
            bundle_dir.mkdir(parents=True)
            (bundle_dir / "config.json").write_text(json.dumps(config, indent=1))
            sampler.__enter__()  # before the runtime starts: runsc's carriers appear then
            child = Child(argv, on_kill=lambda: _delete(runtime, name), serve=inv.serves)
        except BaseException as e:
            with interrupt.shielded():
                teardown()
            if isinstance(e, OSError):
                raise StartError(f"could not set up {name}: {e}") from None
            raise
        cls = RunscInstance if runtime == "runsc" else OciInstance
        instance = cls(name, child, timeout, collect=collect, teardown=teardown)
        instance.watchers.append(sampler)
        return instance

    def net_path(self) -> str | None:
        if self.opts["network"] == "none":
            return "network=none: the container has only its own loopback; use network=host"
        return None

    def _cleanup(self) -> None:
        """This environment's containers (its name prefix) and its own directories."""
        runtime = self.opts["runtime"]
        for cid in _list(runtime):
            if cid.startswith(f"{self.ctx.prefix}-"):
                _delete(runtime, cid)
        shutil.rmtree(self.ctx.scratch / BUNDLES, ignore_errors=True)
        rootfs = self.ctx.scratch / ROOTFS
        if not _unmount(rootfs):  # never delete through a mount: it is the tree's view
            raise RuntimeError(f"oci: could not unmount the overlay at {rootfs}")
        shutil.rmtree(rootfs, ignore_errors=True)
        shutil.rmtree(self.ctx.scratch / OVERLAY, ignore_errors=True)
        self._rootfs = None

    def disk_footprint(self, bundle, io, timeout) -> list[dict[str, Any]]:
        """The unpacked rootfs; with `io`, the instance's bundle directory and what the
        shared rootfs grew by."""
        rootfs = self.ctx.scratch / ROOTFS
        before = fp.du(rootfs)
        out = fp.tree_figures("rootfs", before, f"the unpacked rootfs {rootfs}")
        if not io:
            return [*out, fp.no_io()]

        def measure(instance) -> list[dict[str, Any]]:
            bundle_dir = self.ctx.scratch / BUNDLES / instance.name
            usage = fp.du(bundle_dir)  # only config.json: the rootfs is shared, not copied
            return [
                fp.figure(
                    "bundle dir",
                    usage.allocated,
                    f"allocated blocks of the instance's bundle directory ({usage.inodes} "
                    "inodes: its config.json); the instance has no layer of its own, it "
                    "writes into the shared rootfs",
                )
            ]

        figures = fp.after_io(self, io, timeout, measure)
        if figures and figures[0]["bytes"] is not None:
            grown = fp.du(rootfs).allocated - before.allocated
            figures.append(
                fp.figure(
                    "rootfs growth after io",
                    grown,
                    "allocated blocks of the shared rootfs after the io launch "
                    "minus before it (the probe removes its files at exit)",
                )
            )
        return out + figures

    def describe(self) -> dict[str, Any]:
        runtime = self.opts["runtime"]
        return {
            **super().describe(),
            "runtime": {
                "name": runtime,
                "version": ct.tool_version([runtime, "--version"]),
                "argv": runtime_argv(runtime, self.opts["network"]),
            },
            "seccomp": "none",
            "cgroup_layout": self._layout.name,
            "bundle": self._bundle.hash if self._bundle else None,
            "rootfs": roots.describe(self._tree),
        }


class OciInstance(ProcessInstance):
    def carriers(self) -> dict[int, str]:
        """The runtime's foreground `run` process and the carriers it started (runsc's
        sandbox and gofer); not the container's own processes."""
        if self.launch is not None:
            return {}
        try:
            run = psutil.Process(self.child.proc.pid)
            below = run.children(recursive=True)
        except psutil.Error:
            return {}
        out = {run.pid: "runtime"}
        for proc in below:
            role = ct.role_of(ct.cmdline(proc), self.name)
            if role in ("sandbox", "gofer"):
                out[proc.pid] = role
        return out


class RunscInstance(OciInstance):
    """`runsc run` does not pass a SIGTERM on to the container (it dies of it, with its
    gofer, and the sandbox follows): the stop goes through `runsc kill <id> TERM`."""

    def _signal_stop(self) -> None:
        _signal("runsc", self.name, "TERM")


def probe_root(tree, bundle, where: Path) -> Path:
    """The root filesystem a kind that runs from a directory runs the probes in, at
    <where>/rootfs: the bundle's probes unpacked, or over rootfs `tree` (mount_overlay)."""
    if tree is None:
        return img.unpack_rootfs(bundle, where / ROOTFS)
    return mount_overlay(tree, bundle, where)


def mount_overlay(tree, bundle, where: Path) -> Path:
    """An overlay of rootfs `tree` at <where>/rootfs, the probes in its upper layer;
    already mounted (a second prepare): left as it is."""
    target, layers = where / ROOTFS, where / OVERLAY
    if mounts_under(target):
        return target
    upper, work = layers / "upper", layers / "work"
    paths = [str(tree.tree), str(upper), str(work)]
    if bad := [p for p in paths if any(c in p for c in roots.OVERLAY_UNSAFE)]:
        raise RuntimeError(f"oci: overlay cannot take the path {bad[0]} (it has , : or \\)")
    shutil.rmtree(layers, ignore_errors=True)  # an earlier prepare's, never mounted
    for path in (target, upper, work):
        path.mkdir(parents=True, exist_ok=True)
    img.add_probes(bundle, upper)
    opts = f"lowerdir={paths[0]},upperdir={paths[1]},workdir={paths[2]}"
    try:
        res = subprocess.run(
            ["mount", "-t", "overlay", "overlay", "-o", opts, str(target)],
            capture_output=True,
            text=True,
            timeout=CALL_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise RuntimeError(f"oci: mount of the overlay on {tree.tree}: {e}") from None
    if res.returncode != 0:
        raise RuntimeError(
            f"oci: mount of the overlay on {tree.tree}: " + ct.first_line(res.stderr)
        )
    return target


def _unmount(path: Path | str) -> bool:
    """Detach the mounts at `path`; True when none is left there."""
    with interrupt.shielded():
        unmount_under(Path(path))
    return not mounts_under(Path(path))


def overlay_leftovers(mountinfo: str | None = None) -> list[str]:
    """Overlays mounted at `rootfs` below an isobench scratch directory (its owner
    marker proves isobench made it), from the host's mount table: what mount_overlay
    left when its run was killed."""
    if mountinfo is None:
        try:
            mountinfo = Path("/proc/self/mountinfo").read_text()
        except OSError:
            return []
    found = []
    for line in mountinfo.splitlines():
        fields, _, after = line.partition(" - ")
        fields, after = fields.split(), after.split()
        if len(fields) < 5 or not after or after[0] != "overlay":
            continue
        point = Path(fields[4].encode().decode("unicode_escape"))
        if point.name != ROOTFS:
            continue
        tops = [p for p in point.parents if p.parent != p and p.name.startswith(scratch.PREFIX)]
        if any(scratch.owner(p) is not None for p in tops):
            found.append(str(point))
    return found


def _carriers(name: str) -> dict[int, str]:
    """runsc's sandbox and gofer (runc has none: its `run` process is the launcher)."""
    return {pid: role for pid, role in ct.find_carriers(name).items() if role != "runtime"}


def _list(runtime: str, strict: bool = False) -> list[str]:
    """The ids of the runtime's containers under isobench's --root (`--quiet`: runsc has
    no `-q`). A listing that fails is [] or, when `strict` (clean), an error naming why:
    an empty answer must not read as "nothing left"."""
    try:
        out = subprocess.run(
            [*runtime_argv(runtime, "none"), "list", "--quiet"],
            capture_output=True,
            text=True,
            timeout=CALL_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        if strict:
            raise RuntimeError(f"{runtime} list: {e}") from None
        return []
    if out.returncode != 0 and strict:
        raise RuntimeError(f"{runtime} list: " + ct.first_line(out.stderr or out.stdout))
    return [line.strip() for line in out.stdout.splitlines() if line.strip()]


def _signal(runtime: str, cid: str, sig: str) -> None:
    """`<runtime> kill <id> <sig>` (a container that already exited: nothing to do)."""
    with contextlib.suppress(OSError, subprocess.TimeoutExpired):
        subprocess.run(
            [*runtime_argv(runtime, "none"), "kill", cid, sig],
            capture_output=True,
            timeout=CALL_TIMEOUT_S,
            check=False,
        )


def _delete(runtime: str, cid: str) -> None:
    """kill + delete --force (runsc has no -f), then SIGKILL any runsc process of it that
    survived."""
    base = runtime_argv(runtime, "none")
    _signal(runtime, cid, "KILL")
    with contextlib.suppress(OSError, subprocess.TimeoutExpired):
        subprocess.run(
            [*base, "delete", "--force", cid],
            capture_output=True,
            timeout=CALL_TIMEOUT_S,
            check=False,
        )
    ct.kill_carriers(cid)
