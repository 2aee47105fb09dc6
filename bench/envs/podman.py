"""`podman`: one container per instance through the podman CLI (no daemon to keep up).

`podman run` attaches to the container's output itself, so the instance is the CLI
process (process.Child): ready = the probe's `ready` line, stop = SIGTERM to the CLI,
which passes it to the container (runsc included: podman signals it through the
runtime), exit = the CLI returned, cleaned = `podman rm -f` done and the per-launch
cgroup removed.

Rlimits: podman asks for nofile/nproc limits (1048576 / 4194304) that hosts with lower
hard limits refuse ("error setting rlimit type 7: operation not permitted"). The first
launch's prepare() finds limits that work here (the host's hard limits, then smaller
ones) with a tiny `true` run and passes them explicitly; describe() records them.

conmon (podman's per-container monitor) sits in <parent>/conmon of the per-launch
cgroup: its usage is subtracted from the container's and reported host-side. A held
instance names its carriers (carriers()): the attached `podman run` (in the harness's
cgroup, for the container's whole life: outside the per-launch cgroup) and conmon
(inside it); density counts the PSS of those outside.

With rootfs=NAME the container's image is that isobench rootfs plus the bundle's probes:
the very stream docker imports (image.rootfs_image_stream), fed to `podman import -` as
`localhost/isobench-rootfs:<rootfs key>-<bundle hash>` (labelled with both) only when the
tag is missing; probes at roots.PROBE_DIR, the io directory at roots.WORKDIR. `clean`
lists an isobench image once its bundle or its rootfs is no longer in the cache, as
docker's.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from bench import footprint as fp
from bench import interrupt
from bench.envs import containers as ct
from bench.envs import image as img
from bench.envs import roots
from bench.envs.base import (
    SERVE,
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
from bench.envs.process import Child, ProcessInstance
from bench.metrics import cgroup as cg
from bench.metrics.cgroup_parse import GAUGES
from bench.resources import cache_dir
from bench.rootfs import store_dir as rootfs_store

CALL_TIMEOUT_S = 60
IMPORT_TIMEOUT_S = img.IMPORT_TIMEOUT_S  # a rootfs's tree (hundreds of MB) into storage
RUNTIMES = ("runc", "crun", "runsc")
PODMAN_DEFAULT_ULIMITS = {"nofile": 1048576, "nproc": 4194304}
FALLBACK_NPROC = (4096, 1024)


def _podman(*args: str, timeout: float = CALL_TIMEOUT_S) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["podman", *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def runtime_argv(runtime: str) -> list[str]:
    """Global podman flags for a runtime (runsc needs host networking on this kind of host)."""
    argv = ["--runtime", runtime]
    if runtime == "runsc":
        argv += ["--runtime-flag", "network=host"]
    return argv


# The control channel's relay: the attached `podman run` (Go) passes each command on to
# conmon and each answer back, and its runtime's idle threads went on running after a
# command had passed: ~0.6 ms of CPU a command, which on a 2-core host took the CPU
# from the probe's window just begun. Measured in a held set of host, podman and docker
# (200 blocks of 5 ms bursts): 15% of podman's windows lost over 5% of their CPU time
# (the others 3.5-4%), and clock_gettime (the vDSO, no system call) read x1.010 [1.001,
# 1.017] of the host; with GOMAXPROCS=1 for the CLI, 7% (the host's 9.5%) and x0.996
# [0.989, 1.003]. Only for a serving instance: the CLI's threads are its own, and a
# held instance that does not serve (density's) keeps the CLI as users run it.
SERVE_CLI_ENV = {"GOMAXPROCS": "1"}


def _cli_env(inv: Invocation) -> dict[str, str] | None:
    return {**os.environ, **SERVE_CLI_ENV} if inv.serves else None


def ulimit_candidates(host: dict[str, tuple[int, int]]) -> list[dict[str, int] | None]:
    """Pure: what to try, in order. None = podman's defaults (when the host allows them)."""
    nofile = min(host["nofile"][1], PODMAN_DEFAULT_ULIMITS["nofile"])
    nproc = min(host["nproc"][1], PODMAN_DEFAULT_ULIMITS["nproc"])
    if all(host[k][1] >= v for k, v in PODMAN_DEFAULT_ULIMITS.items()):
        return [None]
    out: list[dict[str, int] | None] = [{"nofile": nofile, "nproc": nproc}]
    out += [{"nofile": nofile, "nproc": min(nproc, n)} for n in FALLBACK_NPROC]
    out.append({"nofile": 1024, "nproc": 1024})
    unique = []
    for cand in out:
        if cand not in unique:
            unique.append(cand)
    return unique


def ulimit_argv(limits: dict[str, int] | None) -> list[str]:
    if not limits:
        return []
    return [a for k, v in limits.items() for a in ("--ulimit", f"{k}={v}:{v}")]


_ulimits_found: dict[str, dict[str, int] | None] = {}  # runtime -> limits that work


class PodmanEnv(Environment):
    kind = "podman"
    channel = True  # `podman run --interactive`'s stdin and stdout
    summary = "a container per instance through the podman CLI (runc, crun, runsc)"
    options = {
        "runtime": Option("runc", "OCI runtime podman uses", RUNTIMES),
        "rootfs": roots.ROOTFS_OPTION,
        **ct.CONTAINER_OPTIONS,
    }

    def __init__(self, config: dict[str, Any], ctx: Context):
        super().__init__(config, ctx)
        self._bundle = None
        self._image_id: str | None = None
        self._rootfs = None  # the isobench rootfs the image is made from, if any
        self._ulimits: dict[str, int] | None = None
        self._info: dict[str, Any] = {}
        self._layout = cg.Layout.detect()

    # -- availability

    @classmethod
    def probe(cls, opts: dict[str, Any] | None = None) -> Availability:
        if not shutil.which("podman"):
            return Availability(False, "podman not installed (apt-get install podman)")
        try:
            out = _podman("version", "--format", "{{.Client.Version}}", timeout=20)
        except (OSError, subprocess.TimeoutExpired) as e:
            return Availability(False, f"podman does not answer: {e}")
        if out.returncode != 0:
            return Availability(False, "podman: " + ct.first_line(out.stderr))
        versions = {
            "podman": out.stdout.strip(),
            "conmon": ct.tool_version(["conmon", "--version"]),
        }
        runtime = (opts or {}).get("runtime")
        if runtime:  # the runtime these options name
            av = ct.runtime_availability(str(runtime), cg.Layout.detect())
            if not av.ok:
                return av
            versions.update(av.versions)
        return Availability(True, "", versions)

    @classmethod
    def details(cls) -> list[tuple[str, Availability]]:
        av = cls.probe()
        rows = [("podman", av)]
        if not av.ok:
            return rows
        layout = cg.Layout.detect()
        for rt in RUNTIMES:
            rows.append((f"podman:runtime={rt}", ct.runtime_availability(rt, layout)))
        return rows

    @classmethod
    def leftovers(cls, opts: dict[str, Any] | None = None) -> list[Leftover]:
        if not shutil.which("podman"):
            return []
        try:
            out = _podman(
                "ps",
                "-a",
                "--filter",
                "label=isobench",
                "--format",
                "{{.ID}} {{.Names}}",
                timeout=20,
            )
        except (OSError, subprocess.TimeoutExpired):
            return []
        found = []
        for line in out.stdout.splitlines():
            cid, _, name = line.partition(" ")
            found.append(Leftover(f"podman container {cid} ({name})", lambda c=cid: _remove(c)))
        return found + _image_leftovers()

    # -- lifecycle

    def prepare(self, bundle) -> None:
        av = ct.runtime_availability(self.opts["runtime"], self._layout)
        if not av.ok:
            raise OptionError(f"podman: {av.reason}")
        self._rootfs = roots.load(self.opts["rootfs"], self.ctx.cache)
        if self._rootfs is None:
            self._image_id = _ensure_probes_image(bundle, self.ctx.cache)
        else:
            self._image_id = _ensure_rootfs_image(bundle, self._rootfs)
        self._bundle = bundle
        self._ulimits = self._find_ulimits()
        info = _podman("info", "--format", "json")
        if info.returncode == 0:
            host = json.loads(info.stdout).get("host", {})
            self._info = {
                "cgroup_manager": host.get("cgroupManager"),
                "cgroup_version": host.get("cgroupVersion"),
                "security": host.get("security"),
                "conmon": (host.get("conmon") or {}).get("version"),
            }

    def _find_ulimits(self) -> dict[str, int] | None:
        runtime = self.opts["runtime"]
        if runtime in _ulimits_found:
            return _ulimits_found[runtime]
        reasons = []
        for cand in ulimit_candidates(ct.host_rlimits()):
            argv = [
                "podman",
                *runtime_argv(runtime),
                "run",
                "--rm",
                "--network",
                "none",
                "--label",
                "isobench=1",
                *ulimit_argv(cand),
                self._image_id,
                # a user's rootfs need not have /bin/true; every bundle has `startup`
                roots.probe_path("startup") if self._rootfs else "/bin/true",
            ]
            res = subprocess.run(
                argv, capture_output=True, text=True, timeout=CALL_TIMEOUT_S, check=False
            )
            if res.returncode == 0:
                _ulimits_found[runtime] = cand
                return cand
            reasons.append(ct.first_line(res.stderr))
        raise RuntimeError("podman: no rlimits work on this host: " + "; ".join(reasons[-1:]))

    def _run_argv(
        self,
        name: str,
        argv: list[str],
        volume: Path | None,
        network: str,
        port: int | None = None,
    ) -> list[str]:
        o = self.opts
        out = [
            "podman",
            *runtime_argv(o["runtime"]),
            "run",
            "--rm=false",
            "--name",
            name,
            *[a for k, v in ct.labels(self.ctx).items() for a in ("--label", f"{k}={v}")],
            "--cgroup-parent",
            ct.cgroup_parent_arg(self._driver, name),
            "--network",
            network,
            "--workdir",
            self._workdir,
            "--log-driver",
            "none",
            *ulimit_argv(self._ulimits),
        ]
        if SERVE in argv:  # the control channel: podman's stdin, passed on by conmon
            out.append("--interactive")
        if o["seccomp"] == "unconfined":
            out += ["--security-opt", "seccomp=unconfined"]
        if o["cpus"]:
            out += ["--cpus", str(o["cpus"])]
        if o["cpuset"]:
            out += ["--cpuset-cpus", str(o["cpuset"])]
        if o["memory"]:
            out += ["--memory", str(o["memory"])]
        if o["storage"] == "volume" and volume is not None:
            out += ["--volume", f"{volume}:{self._workdir}:rw"]
        elif o["storage"] == "tmpfs":
            out += ["--tmpfs", f"{self._workdir}:rw,mode=1777,size=2g"]
        if port is not None:  # a server on the bridge: published on the host's loopback
            out += ["--publish", f"127.0.0.1::{port}"]
        return [*out, self._image_id, *argv]

    @property
    def _workdir(self) -> str:
        """The io workload's directory inside the container (its image's WORKDIR)."""
        return roots.WORKDIR if self._rootfs else img.WORKDIR

    def _probe_path(self, probe: str) -> str:
        return roots.probe_path(probe) if self._rootfs else img.probe_path(probe)

    def net_path(self) -> str | None:
        given = self.config.get("network") is not None  # else a server gets the bridge
        return ct.net_path_problem(self.opts["network"] if given else "bridge")

    @property
    def _driver(self) -> str:
        return "systemd" if self._info.get("cgroup_manager") == "systemd" else "cgroupfs"

    def _start(self, inv: Invocation, timeout: float) -> Instance:
        if self._image_id is None:
            raise RuntimeError("podman: start() before prepare()")
        name = self.new_name()
        try:
            volume = ct.volume_dir(self.ctx, name, self.opts["storage"])
        except OSError as e:
            raise StartError(f"could not make the volume of {name}: {e}") from None
        cgroup = ct.LaunchCgroup(ct.parent_rel_path(self._driver, name), self._layout)
        conmon_cg = cgroup.child("conmon")
        network = ct.network_of(self.opts, self.config, inv)
        port = ct.served_port(inv) if network == "bridge" else None
        argv = self._run_argv(
            name, inv.argv(self._probe_path(inv.probe), self._workdir), volume, network, port
        )
        find = lambda: {pid: "conmon" for pid in conmon_cg.pids()}  # noqa: E731
        sampler = ct.HostSideSampler(find, interval=0.02, find_every=0.0)

        def teardown() -> None:
            sampler.stop()
            _remove(name)
            cgroup.remove()
            if volume is not None:
                shutil.rmtree(volume, ignore_errors=True)

        def collect(launch: Launch) -> None:
            sampler.stop()
            launch.host_side = sampler.result()
            total = cgroup.read()
            conmon = conmon_cg.read()
            launch.cgroup = _minus(total, conmon)
            if "cpu_total_ms" in conmon:  # conmon's own cgroup: exact, not sampled
                sampled = launch.host_side.get("conmon_cpu_ms", 0.0)
                launch.host_side["conmon_cpu_ms"] = round(conmon["cpu_total_ms"], 3)
                launch.host_side["cpu_ms"] = round(
                    launch.host_side.get("cpu_ms", 0.0) - sampled + conmon["cpu_total_ms"], 3
                )
            launch.extra.update(cgroup_parent=cgroup.rel)

        try:
            sampler.__enter__()  # before the CLI starts: conmon appears during its start
            child = Child(argv, on_kill=lambda: _remove(name), serve=inv.serves, env=_cli_env(inv))
        except BaseException as e:
            with interrupt.shielded():
                teardown()
            if isinstance(e, OSError):
                raise StartError(f"could not run podman for {name}: {e}") from None
            raise
        instance = PodmanInstance(name, child, timeout, collect=collect, teardown=teardown)
        instance.conmon_cgroup = conmon_cg
        instance.watchers.append(sampler)
        instance.network = network
        instance.runsc = self.opts["runtime"] == "runsc"
        return instance

    def _cleanup(self) -> None:
        mine = f"label={ct.ENV_LABEL}={self.ctx.prefix}"
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            for cid in _podman("ps", "-a", "-q", "--filter", mine).stdout.split():
                _remove(cid)
        shutil.rmtree(self.ctx.scratch / ct.VOLUMES, ignore_errors=True)

    def disk_footprint(self, bundle, io, timeout) -> list[dict[str, Any]]:
        """The image as podman's store reports it; with `io`, the writable layer of the
        container that ran the io probe (`podman container inspect --size`)."""
        size = fp.parse_size(
            fp.engine_cli("podman", "image", "inspect", "--format", "{{.Size}}", self._image_id),
            "podman image inspect",
        )
        out = [
            fp.figure(
                "image",
                size,
                "podman image inspect --format {{.Size}}: the image's layer "
                "as podman's store reports it (apparent sizes)",
            )
        ]

        def measure(instance) -> list[dict[str, Any]]:
            fp.engine_cli("podman", "wait", instance.name)  # exited: it stays until teardown
            rw = fp.parse_size(
                fp.engine_cli(
                    "podman",
                    "container",
                    "inspect",
                    "--size",
                    "--format",
                    "{{.SizeRw}}",
                    instance.name,
                ),
                "podman inspect --size",
            )
            storage = self.opts["storage"]
            note = "" if storage == "overlay" else f"; storage={storage}: io wrote elsewhere"
            return [
                fp.figure(
                    "writable layer after io",
                    rw,
                    "podman container inspect --size: SizeRw of the container that ran "
                    "the io probe, after it exited, before its removal; the probe "
                    f"removes its files at exit{note}",
                )
            ]

        return out + (fp.after_io(self, io, timeout, measure) if io else [fp.no_io()])

    def describe(self) -> dict[str, Any]:
        runtime = self.opts["runtime"]
        return {
            **super().describe(),
            "podman": ct.tool_version(["podman", "--version"]),
            "runtime": {"name": runtime, "version": ct.tool_version([runtime, "--version"])},
            "host": self._info,
            "ulimits": self._ulimits or "podman defaults",
            "image": {"id": self._image_id, "tag": self._image_tag()},
            "bundle": self._bundle.hash if self._bundle else None,
            "rootfs": roots.describe(self._rootfs),
        }

    def _image_tag(self) -> str | None:
        if self._bundle is None:
            return None
        if self._rootfs is not None:
            return img.rootfs_image_tag(self._rootfs.key, self._bundle.hash)
        return img.image_tag(self._bundle.hash)


class PodmanInstance(ProcessInstance):
    """A `podman run` whose server a host-side client reaches: loopback on the host
    network, the port published on 127.0.0.1 on the bridge."""

    network = "none"
    runsc = False  # runsc runs with --network=host (runtime_argv)
    path = ""
    conmon_cgroup: ct.LaunchCgroup | None = None

    def carriers(self) -> dict[int, str]:
        """The attached `podman run` (this instance's process: it stays for the
        container's life, in the harness's cgroup) and conmon (in <parent>/conmon)."""
        out = {}
        if self.launch is None and self.child.proc.poll() is None:
            out[self.child.proc.pid] = "podman"
        if self.conmon_cgroup is not None:
            out.update(dict.fromkeys(self.conmon_cgroup.pids(), "conmon"))
        return out

    def address(self, port: int) -> tuple[str, int]:
        problem = ct.net_path_problem(self.network)
        if problem:
            raise StartError(problem)
        sandbox = " (runsc --network=host: the kernel's stack, not gVisor's netstack)"
        sandbox = sandbox if self.runsc else ""
        if self.network == "host":
            self.path = f"host network: loopback 127.0.0.1:{port}{sandbox}"
            return ("127.0.0.1", port)
        try:
            res = _podman("port", self.name, f"{port}/tcp", timeout=min(CALL_TIMEOUT_S, 30))
        except subprocess.TimeoutExpired:
            raise StartError(f"{self.name}: `podman port` did not answer") from None
        host, _, host_port = (
            res.stdout.strip().splitlines()[0].rpartition(":")
            if (res.returncode == 0 and res.stdout.strip())
            else ("", "", "")
        )
        if not host_port.isdigit():
            why = ct.first_line(res.stderr) or "not published"
            raise StartError(f"{self.name}: port {port}: {why}")
        self.path = f"bridge + NAT via published port 127.0.0.1:{host_port} -> {port}{sandbox}"
        return ("127.0.0.1", int(host_port))

    def _end(self, *, stopped: bool, timed_out: bool) -> Launch:
        launch = super()._end(stopped=stopped, timed_out=timed_out)
        if self.path:
            launch.net_path = self.path
        return launch


def _image_id(tag: str) -> str | None:
    found = _podman("image", "inspect", "--format", "{{.Id}}", tag)
    return found.stdout.strip() if found.returncode == 0 else None


def _ensure_probes_image(bundle, cache: Path) -> str:
    """`isobench-probes:<hash>` in podman's storage, imported from the tar when missing."""
    tag = img.image_tag(bundle.hash)
    if found := _image_id(tag):
        return found
    res = subprocess.run(
        img.podman_import_argv(img.rootfs_tar(bundle, cache), bundle.hash),
        capture_output=True,
        text=True,
        timeout=CALL_TIMEOUT_S,
        check=False,
    )
    if res.returncode != 0:
        raise RuntimeError("podman import: " + ct.first_line(res.stderr))
    if found := _image_id(tag):
        return found
    raise RuntimeError(f"podman import said it made {tag}, which podman cannot find")


def _ensure_rootfs_image(bundle, rootfs) -> str:
    """`isobench-rootfs:<key>-<hash>` in podman's storage, streamed into `podman import`
    when missing (killed on a timeout or Ctrl-C: no half image under the tag)."""
    tag = img.rootfs_image_tag(rootfs.key, bundle.hash)
    if found := _image_id(tag):
        return found
    argv = img.podman_rootfs_import_argv(rootfs.key, bundle.hash)
    try:
        code, err = img.feed(argv, img.rootfs_image_stream(rootfs, bundle), IMPORT_TIMEOUT_S)
    except TimeoutError as e:
        raise RuntimeError(f"podman import of rootfs {rootfs.name}: {e}") from None
    if code != 0:
        raise RuntimeError(f"podman import of rootfs {rootfs.name}: {ct.first_line(err)}")
    if found := _image_id(tag):
        return found
    raise RuntimeError(f"podman import said it made {tag}, which podman cannot find")


def image_leftover_reason(labels: dict[str, str], bundles: Path, trees: Path) -> str:
    """Pure: why an isobench image is no longer needed ("" when it is), as docker's: its
    bundle or the rootfs it was made from is gone from the cache."""
    bundle_hash, key = labels.get(img.BUNDLE_LABEL), labels.get(img.ROOTFS_LABEL)
    if bundle_hash and not (bundles / bundle_hash).is_dir():
        return f"bundle {bundle_hash} no longer in the cache"
    if key and not (trees / key).is_dir():
        return f"rootfs {key} no longer in the cache"
    return ""


def _image_leftovers() -> list[Leftover]:
    """podman images labelled isobench whose bundle or rootfs is no longer in the cache."""
    try:
        out = _podman("images", "--filter", f"label={img.LABEL}", "--format", "json", timeout=20)
        images = json.loads(out.stdout or "[]") if out.returncode == 0 else []
    except (OSError, subprocess.TimeoutExpired, ValueError):
        return []
    bundles, trees = cache_dir() / "bundles", rootfs_store()
    found = []
    for im in images:
        why = image_leftover_reason(im.get("Labels") or {}, bundles, trees)
        if why:
            iid = im.get("Id", "")
            tags = ", ".join(im.get("Names") or []) or iid[:12]
            found.append(Leftover(f"podman image {tags} ({why})", lambda i=iid: _remove_image(i)))
    return found


def _remove_image(iid: str) -> None:
    with contextlib.suppress(OSError, subprocess.TimeoutExpired):
        _podman("rmi", "-f", iid)


def _minus(total: dict[str, float], part: dict[str, float]) -> dict[str, float]:
    """Counters: total - part; gauges (peaks) stay as the total's."""
    return {k: (v - part.get(k, 0.0) if k not in GAUGES else v) for k, v in total.items()}


def _remove(name_or_id: str) -> None:
    """podman rm -f, then kill any runsc process of that container that survived."""
    cid = ""
    with contextlib.suppress(OSError, subprocess.TimeoutExpired):
        cid = _podman("inspect", "--format", "{{.Id}}", name_or_id, timeout=20).stdout.strip()
    with contextlib.suppress(OSError, subprocess.TimeoutExpired):
        _podman("rm", "-f", "-t", "0", name_or_id)
    ct.kill_carriers(name_or_id)
    if cid:
        ct.kill_carriers(cid)
