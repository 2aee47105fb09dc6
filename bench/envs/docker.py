"""`docker`: one container per launch through the Docker SDK (any runtime the daemon
lists: runc, runsc, crun, kata...), with one knob per option so overhead can be
attributed: seccomp on/off, network none/bridge/host, storage overlay/volume/tmpfs, a
CPU quota, a cpuset, a memory limit.

Phases (ns since submit): created (create returned), started (start returned), ready
(the probe's `ready` line seen on the stream attached before start), exit (wait
returned), cleaned (container, volume dir and per-launch cgroup removed).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import threading
import time
from pathlib import Path
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
from bench.probeio import is_ready, parse_lines
from bench.resources import cache_dir

SOCKET = "/var/run/docker.sock"
UNREACHABLE = f"dockerd not reachable at {SOCKET}: start it (systemctl start docker)"
CALL_TIMEOUT_S = 30  # one API call (create, remove...) outside a launch's own deadline
CHECK_TIMEOUT_S = 10  # the tiny `true` run that decides whether a runtime works here
LEGACY_RUNTIMES = ("io.containerd.runc.v2", "io.containerd.runtime.v1.linux")
STORAGE_TARGET = img.WORKDIR


def client(timeout: float = CALL_TIMEOUT_S):
    """A docker SDK client; raises (docker.errors.DockerException) when unreachable."""
    import docker

    return docker.DockerClient(base_url=f"unix://{SOCKET}", timeout=timeout)


def _explain(exc: Exception) -> str:
    """The daemon's one-line message for an API error."""
    text = getattr(exc, "explanation", None) or str(exc)
    return ct.first_line(text)


# ---------------------------------------------------------------- runtime availability


def runtime_problem(name: str, spec: dict[str, Any], layout: str) -> str:
    """Pure: why a runtime the daemon lists cannot be used here ("" when no known reason)."""
    path = spec.get("path", name)
    args = spec.get("runtimeArgs") or []
    base = Path(path).name
    if base == "runsc" and "--network=host" not in args:
        return f"{name}: needs --network=host in this daemon's runtimeArgs"
    if base == "crun" and layout == "hybrid":
        return f"{name}: refuses the hybrid cgroup layout"
    return ""


_checked: dict[str, Availability] = {}  # trial_key -> result, this process
VERDICTS_FILE = "docker-runtime-checks.json"  # in the cache: trial results between calls


def listed(runtimes: dict[str, Any]) -> list[str]:
    """The runtimes a daemon lists that a user would name (not containerd's legacy ones)."""
    return [r for r in runtimes if r not in LEGACY_RUNTIMES]


def daemon_runtimes() -> list[str] | None:
    """The daemon's runtimes, or None when it does not answer (for input checks)."""
    try:
        return listed(client(timeout=5).info().get("Runtimes") or {})
    except Exception:  # noqa: BLE001 - unreachable: the run reports it unavailable
        return None


def trial_key(info: dict[str, Any], name: str) -> str:
    """What could change a runtime's trial result: the daemon, the runtime's binary,
    version and arguments (daemon.json), the kernel."""
    spec = (info.get("Runtimes") or {}).get(name) or {}
    return json.dumps([info.get("ID"), info.get("ServerVersion"), name, spec.get("path", name),
                       spec.get("runtimeArgs") or [], _runtime_version(spec),
                       os.uname().release])  # fmt: skip


def _recorded(key: str) -> Availability | None:
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        v = json.loads((cache_dir() / VERDICTS_FILE).read_text())[key]
        when = f" (remembered from a trial on {v['date']})" if not v["ok"] else ""
        return Availability(bool(v["ok"]), v["reason"] + when, v["versions"])
    return None


def _record(key: str, av: Availability) -> None:
    path = cache_dir() / VERDICTS_FILE
    data: dict[str, Any] = {}
    with contextlib.suppress(OSError, ValueError):
        data = json.loads(path.read_text())
    data[key] = {"ok": av.ok, "reason": av.reason, "versions": av.versions,
                 "date": time.strftime("%Y-%m-%d")}  # fmt: skip
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=1) + "\n")
        tmp.replace(path)


def _check_image(cl):
    """A one-file image (static busybox) for runtime checks: isobench-check:<hash>."""
    import hashlib

    import docker.errors

    from bench.bundle import find_busybox

    busybox = find_busybox()
    if busybox is None:
        return None
    tag = "isobench-check:" + hashlib.sha256(busybox.read_bytes()).hexdigest()[:12]
    try:
        return cl.images.get(tag)
    except docker.errors.ImageNotFound:
        pass
    import io
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("bin/busybox")
        info.size, info.mode = busybox.stat().st_size, 0o755
        with open(busybox, "rb") as f:
            tar.addfile(info, f)
        link = tarfile.TarInfo("bin/true")
        link.type, link.linkname = tarfile.SYMTYPE, "busybox"
        tar.addfile(link)
    repo, _, version = tag.partition(":")
    cl.api.import_image_from_data(
        buf.getvalue(), repository=repo, tag=version, changes=["LABEL isobench=1"]
    )
    return cl.images.get(tag)


def _trial_run(cl, runtime: str) -> tuple[str, bool]:
    """Run `true` with this runtime under a deadline: (why not, or "" when it worked;
    whether that is a verdict on the runtime worth remembering). A trial that hangs is
    killed with its sandbox processes and removed: it leaves nothing running."""
    image = _check_image(cl)
    if image is None:
        return "", False  # no static busybox to try with: trust the configuration
    api = cl.api
    cid = None
    hung = False
    try:
        cid = api.create_container(
            image.id,
            command=["/bin/true"],
            labels={"isobench": "1", "isobench.check": "1"},
            host_config=api.create_host_config(runtime=runtime, network_mode="none"),
        )["Id"]
        api.timeout = CHECK_TIMEOUT_S
        api.start(cid)
        code = api.wait(cid, timeout=CHECK_TIMEOUT_S)["StatusCode"]
        return ("" if code == 0 else f"{runtime}: a `true` container exited with {code}"), True
    except Exception as e:  # noqa: BLE001 - every failure is an availability reason
        if "timed out" in str(e).lower() or "timeout" in type(e).__name__.lower():
            hung = True
            return f"{runtime}: a `true` container did not finish within {CHECK_TIMEOUT_S} s", True
        return f"{runtime}: {_explain(e)}", False
    finally:
        api.timeout = CALL_TIMEOUT_S
        if cid:
            _force_remove(api, cid, hung=hung)


def _force_remove(api, cid: str, hung: bool = False) -> None:
    """Remove a container whatever its state; a hung runtime's processes are killed first
    (a force remove waits on them otherwise), and any that survive, after."""
    import docker.errors

    if hung:
        ct.kill_carriers(cid, ("sandbox", "gofer", "runtime"))
    try:
        api.remove_container(cid, force=True, v=True)
    except docker.errors.NotFound:
        pass
    except Exception:  # noqa: BLE001 - a hung runtime: kill its processes and retry once
        ct.kill_carriers(cid)
        with contextlib.suppress(Exception):
            api.remove_container(cid, force=True, v=True)
    ct.kill_carriers(cid)


# ---------------------------------------------------------------- the environment


class DockerEnv(Environment):
    kind = "docker"
    summary = "a container per launch through dockerd (runc, runsc, crun... as listed)"
    options = {
        "runtime": Option("runc", "OCI runtime, as listed by `docker info` (runc, runsc...)"),
        "seccomp": Option("default", "Docker's seccomp profile or none", ("default", "unconfined")),
        "network": Option("none", "network mode", ("none", "bridge", "host")),
        "storage": Option(
            "overlay",
            "where the io workload's directory is: the container's own fs, "
            "a bind-mounted host directory, or a tmpfs",
            ("overlay", "volume", "tmpfs"),
        ),
        "cpus": Option(None, "CPU quota in CPUs (e.g. 0.5)", type=float),
        "cpuset": Option(None, "CPUs the container may use (e.g. 0-1)", type=ct.CpuSet),
        "memory": Option(None, "memory limit (e.g. 512m)", type=ct.MemorySize),
    }

    def __init__(self, config: dict[str, Any], ctx: Context):
        super().__init__(config, ctx)
        self.opts = ct.resolve_options(self.kind, self.options, config)
        self._client = None
        self._image = None
        self._bundle = None
        self._n = 0
        self._info: dict[str, Any] = {}
        self._made_dirs: list[Path] = []

    # -- availability

    @classmethod
    def probe(cls, opts: dict[str, Any] | None = None) -> Availability:
        try:
            cl = client(timeout=5)
            cl.ping()
            version = cl.version()
        except Exception:  # noqa: BLE001 - unreachable, whatever the exception
            return Availability(False, UNREACHABLE)
        return Availability(True, "", cls._versions(version))

    @staticmethod
    def _versions(version: dict[str, Any]) -> dict[str, str]:
        out = {"docker": version.get("Version", "")}
        for comp in version.get("Components") or []:
            name = comp.get("Name", "").lower()
            if name in ("containerd", "runc"):
                out[name] = comp.get("Version", "")
        return out

    @classmethod
    def runtime_available(cls, name: str) -> Availability:
        """Is runtime `name` listed by the daemon and able to run `true` here? (cached)"""
        try:
            cl = client(timeout=CALL_TIMEOUT_S)
            info = cl.info()
        except Exception:  # noqa: BLE001
            return Availability(False, UNREACHABLE)
        runtimes = info.get("Runtimes") or {}
        if name not in runtimes:
            return Availability(
                False,
                f"{name}: not a runtime of this daemon (it lists {', '.join(listed(runtimes))}); "
                'add it under "runtimes" in /etc/docker/daemon.json',
            )
        from bench.metrics.cgroup import detect_layout

        problem = runtime_problem(name, runtimes[name], detect_layout())
        if problem:
            return Availability(False, problem)
        key = trial_key(info, name)
        if key not in _checked:
            recorded = _recorded(key)
            if recorded is None:
                why, lasting = _trial_run(cl, name)
                recorded = Availability(not why, why, {name: _runtime_version(runtimes[name])})
                if lasting:
                    _record(key, recorded)
            _checked[key] = recorded
        return _checked[key]

    @classmethod
    def details(cls) -> list[tuple[str, Availability]]:
        av = cls.probe()
        if not av.ok:
            return [("docker", av)]
        rows = [("docker", av)]
        try:
            info = client().info()
        except Exception:  # noqa: BLE001
            return rows
        for name in listed(info.get("Runtimes") or {}):
            rows.append((f"docker:runtime={name}", cls.runtime_available(name)))
        if "crun" not in (info.get("Runtimes") or {}) and shutil.which("crun"):
            rows.append(
                (
                    "docker:runtime=crun",
                    Availability(
                        False,
                        "crun: installed but not a runtime of this daemon "
                        '(add it under "runtimes" in /etc/docker/daemon.json)',
                    ),
                )
            )
        return rows

    @classmethod
    def leftovers(cls) -> list[Leftover]:
        try:
            cl = client()
            containers = cl.api.containers(all=True, filters={"label": "isobench"})
            images = cl.api.images(filters={"label": "isobench"})
        except Exception:  # noqa: BLE001 - no daemon: nothing we can list
            return []
        out = []
        for c in containers:
            name = (c.get("Names") or ["?"])[0].lstrip("/")
            out.append(
                Leftover(
                    f"docker container {c['Id'][:12]} ({name})",
                    lambda cid=c["Id"]: _force_remove(client().api, cid),
                )
            )
        bundles = cache_dir() / "bundles"
        for im in images:
            bundle_hash = (im.get("Labels") or {}).get(img.BUNDLE_LABEL)
            if bundle_hash and not (bundles / bundle_hash).is_dir():
                tags = ", ".join(im.get("RepoTags") or []) or im["Id"][:19]
                out.append(
                    Leftover(
                        f"docker image {tags} (bundle {bundle_hash} no longer in the cache)",
                        lambda iid=im["Id"]: client().api.remove_image(iid, force=True),
                    )
                )
        return out

    # -- lifecycle

    @property
    def cl(self):
        if self._client is None:
            self._client = client()
        return self._client

    def prepare(self, bundle) -> None:
        self._info = self.cl.info()
        runtime = self.opts["runtime"]
        runtimes = self._info.get("Runtimes") or {}
        if runtime not in runtimes:
            raise OptionError(
                f"docker: runtime={runtime} is not listed by the daemon "
                f"({', '.join(listed(runtimes))})"
            )
        self._bundle = bundle
        self._image = img.ensure_docker_image(self.cl, bundle, self.ctx.cache)

    def _host_config(self, name: str, volume: Path | None) -> dict[str, Any]:
        o = self.opts
        kwargs: dict[str, Any] = {
            "runtime": o["runtime"],
            "network_mode": o["network"],
            "cgroup_parent": ct.cgroup_parent_arg(self._driver, name),
        }
        if o["seccomp"] == "unconfined":
            kwargs["security_opt"] = ["seccomp=unconfined"]
        if o["cpus"]:
            kwargs["nano_cpus"] = int(o["cpus"] * 1e9)
        if o["cpuset"]:
            kwargs["cpuset_cpus"] = str(o["cpuset"])
        if o["memory"]:
            kwargs["mem_limit"] = str(o["memory"])
        if o["storage"] == "volume" and volume is not None:
            kwargs["binds"] = {str(volume): {"bind": STORAGE_TARGET, "mode": "rw"}}
        elif o["storage"] == "tmpfs":
            kwargs["tmpfs"] = {STORAGE_TARGET: "rw,mode=1777,size=2g"}
        return self.cl.api.create_host_config(**kwargs)

    @property
    def _driver(self) -> str:
        return (self._info.get("CgroupDriver") or "cgroupfs").lower()

    def launch(self, inv: Invocation, timeout: float) -> Launch:
        if self._image is None:
            raise RuntimeError("docker: launch() before prepare()")
        self._n += 1
        name = ct.instance_name(self.ctx.run_id, self._n)
        volume = ct.volume_dir(self.ctx, "docker", name, self.opts["storage"])
        cgroup = ct.LaunchCgroup(ct.parent_rel_path(self._driver, name))
        run = _Run(self.cl.api, timeout)
        try:
            launch = run.execute(
                image=self._image.id,
                argv=inv.argv(img.probe_path(inv.probe), STORAGE_TARGET),
                name=name,
                labels={"isobench": "1", "isobench.run": self.ctx.run_id},
                host_config=self._host_config(name, volume),
                cgroup=cgroup,
            )
        finally:
            with interrupt.shielded():
                run.teardown(cgroup)
                if volume is not None:
                    shutil.rmtree(volume, ignore_errors=True)
        launch.phases["cleaned"] = ct.ns_since(run.t_submit)
        return launch

    def cleanup(self) -> None:
        if self._client is None:
            return
        shutil.rmtree(self.ctx.scratch / "docker-volumes", ignore_errors=True)
        try:
            for c in self.cl.api.containers(
                all=True, filters={"label": f"isobench.run={self.ctx.run_id}"}
            ):
                _force_remove(self.cl.api, c["Id"])
        except Exception as e:  # dockerd is gone: say so, `clean` finds them by label later
            raise RuntimeError(
                f"could not remove this run's containers ({ct.first_line(str(e))}): "
                "run `isobench clean` once dockerd is back"
            ) from None
        finally:
            with contextlib.suppress(Exception):
                self._client.close()
            self._client = None

    def describe(self) -> dict[str, Any]:
        info = self._info
        runtimes = info.get("Runtimes") or {}
        runtime = self.opts["runtime"]
        return {
            "kind": self.kind,
            "config": dict(self.config),
            "options": {k: (str(v) if v is not None else None) for k, v in self.opts.items()},
            "runtime": {
                "name": runtime,
                "spec": runtimes.get(runtime),
                "version": _runtime_version(runtimes.get(runtime) or {"path": runtime}),
            },
            "daemon": {
                "version": info.get("ServerVersion"),
                "containerd": (info.get("ContainerdCommit") or {}).get("ID"),
                "storage_driver": info.get("Driver"),
                "cgroup_driver": info.get("CgroupDriver"),
                "cgroup_version": info.get("CgroupVersion"),
                "security_options": info.get("SecurityOptions"),
                "kernel": info.get("KernelVersion"),
            },
            "image": {
                "id": self._image.id if self._image else None,
                "tag": img.image_tag(self._bundle.hash) if self._bundle else None,
            },
            "bundle": self._bundle.hash if self._bundle else None,
        }


def _runtime_version(spec: dict[str, Any]) -> str:
    path = spec.get("path", "runc")
    if Path(path).name.startswith("io.containerd"):
        return ""
    return ct.tool_version([path, "--version"])


# ---------------------------------------------------------------- one launch


class _Run:
    """create → attach → start → ready → wait → read cgroup → remove, with a deadline."""

    def __init__(self, api, timeout: float):
        self.api = api
        self.timeout = timeout
        self.t_submit = time.monotonic_ns()
        self.deadline = time.monotonic() + timeout
        self.cid: str | None = None
        self.phase = "create"
        self.ready = threading.Event()
        self.t_ready: int | None = None
        self.lines: list[str] = []
        self.before: list[str] = []
        self.stderr: list[bytes] = []
        self._stream = None
        self.hung = False

    def _left(self) -> float:
        return self.deadline - time.monotonic()

    def _call(self, fn, *args, **kwargs):
        """An API call bounded by what is left of the launch's deadline."""
        left = self._left()
        if left <= 0:
            raise TimeoutError(self.phase)
        self.api.timeout = left
        try:
            return fn(*args, **kwargs)
        finally:
            self.api.timeout = CALL_TIMEOUT_S

    def execute(self, *, image, argv, name, labels, host_config, cgroup) -> Launch:
        import docker.errors
        import requests

        launch = Launch()
        phases = launch.phases
        sampler = None
        try:
            self.cid = self._call(
                self.api.create_container,
                image,
                command=argv,
                name=name,
                labels=labels,
                host_config=host_config,
                working_dir=img.WORKDIR,
            )["Id"]
            phases["created"] = ct.ns_since(self.t_submit)
            self.phase = "attach"
            self.api.timeout = self.timeout + CALL_TIMEOUT_S  # a stream, not a call
            self._stream = self.api.attach(
                self.cid, stdout=True, stderr=True, stream=True, demux=True
            )
            self.api.timeout = CALL_TIMEOUT_S
            reader = threading.Thread(target=self._read, daemon=True, name="isobench-attach")
            reader.start()
            self.phase = "start"
            self._call(self.api.start, self.cid)
            phases["started"] = ct.ns_since(self.t_submit)
            sampler = ct.HostSideSampler(lambda: ct.find_carriers(self.cid), find_every=0.1)
            sampler.__enter__()
            self.phase = "ready"
            if not self.ready.wait(max(0.0, self._left())) and reader.is_alive():
                raise TimeoutError("ready")
            self.phase = "exit"
            status = self._call(self.api.wait, self.cid, timeout=max(1, int(self._left()) + 1))
            phases["exit"] = ct.ns_since(self.t_submit)
            launch.exit_code = status.get("StatusCode")
            reader.join(max(0.1, min(5.0, self._left())))
            sampler.stop()
            launch.cgroup = cgroup.read()
        except (TimeoutError, requests.exceptions.Timeout):
            launch.status = "timeout"
            launch.reason = self._timeout_reason()
            self.hung = True
        except requests.exceptions.ConnectionError as e:
            launch.status = "failed"
            launch.reason = f"dockerd went away during {self.phase}: {ct.first_line(str(e))}"
            self.hung = True
        except docker.errors.APIError as e:
            launch.status = "failed"
            launch.reason = f"{self.phase}: {_explain(e)}"
        except BaseException:  # Ctrl-C included: teardown() runs in launch()'s finally
            self.hung = True
            raise
        finally:
            if sampler is not None:
                sampler.stop()
                launch.host_side = sampler.result()
        if self.t_ready is not None:
            phases["ready"] = self.t_ready - self.t_submit
        out = parse_lines(self.lines)
        launch.records = out.records
        launch.extra = {"container_id": self.cid, "name": name, "cgroup_parent": cgroup.rel}
        if out.errors:
            launch.extra["probe_errors"] = out.errors
        if out.garbage or self.before:
            launch.extra["garbage"] = (self.before + out.garbage)[:20]
        launch.stderr_tail = b"".join(self.stderr).decode(errors="replace")[-4000:]
        if launch.status == "ok" and launch.exit_code:
            launch.status = "failed"
            launch.reason = f"the probe exited with {launch.exit_code}: " + ct.first_line(
                launch.stderr_tail[-400:] or "(no stderr)"
            )
        elif launch.status == "ok" and self.t_ready is None:
            launch.status = "failed"
            launch.reason = "the probe never printed `ready`"
        return launch

    def _timeout_reason(self) -> str:
        what = {
            "create": "create did not return",
            "attach": "attach did not return",
            "start": "start did not return",
            "ready": "no `ready`",
            "exit": "the probe did not exit",
        }[self.phase]
        return f"{what} within {self.timeout:g} s: instance removed"

    def _read(self) -> None:
        buf = b""
        try:
            for out, err in self._stream:
                if err:
                    self.stderr.append(err)
                if not out:
                    continue
                *complete, buf = (buf + out).split(b"\n")
                for raw in complete:
                    self._take(raw.decode(errors="replace").rstrip("\r"))
        except Exception:  # noqa: BLE001 - the stream ends when the container is removed
            pass
        if buf:
            self._take(buf.decode(errors="replace"))

    def _take(self, line: str) -> None:
        if self.t_ready is None:
            if is_ready(line):
                self.t_ready = time.monotonic_ns()
                self.ready.set()
            else:
                self.before.append(line)
            return
        self.lines.append(line)

    def teardown(self, cgroup: ct.LaunchCgroup) -> None:
        """Remove the container (force), its runsc processes and the launch cgroup."""
        self.api.timeout = CALL_TIMEOUT_S
        if self.cid is not None:
            _force_remove(self.api, self.cid, hung=self.hung)
        if self._stream is not None:
            with contextlib.suppress(Exception):
                self._stream.close()
        cgroup.remove()
