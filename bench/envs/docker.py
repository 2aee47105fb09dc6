"""`docker`: one container per instance through the Docker SDK (any runtime the daemon
lists: runc, runsc, crun, kata...), with one knob per option so overhead can be
attributed: seccomp on/off, network none/bridge/host, storage overlay/volume/tmpfs, a
CPU quota, a cpuset, a memory limit. With rootfs=NAME the container's image is that
isobench rootfs plus the bundle's probes (image.ensure_docker_rootfs_image), the very
tree host and namespaces chroot into.

Phases (ns since submit): created (create returned), started (start returned), ready
(the probe's `ready` line seen on the stream attached before start), stop (a held
instance was sent SIGTERM), exit (wait returned), cleaned (container, volume dir and
per-launch cgroup removed).
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
from bench.envs.process import Streamed, to_launch
from bench.metrics.cgroup import Layout
from bench.probeio import is_ready
from bench.resources import cache_dir
from bench.rootfs import store_dir as rootfs_store

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


def runtime_problem(name: str, spec: dict[str, Any], layout: Layout) -> str:
    """Pure: why a runtime the daemon lists cannot be used here ("" when no known reason)."""
    path = spec.get("path", name)
    args = spec.get("runtimeArgs") or []
    base = Path(path).name
    if base == "runsc" and "--network=host" not in args:
        return f"{name}: needs --network=host in this daemon's runtimeArgs"
    problem = layout.runtime_problem(base)
    if problem and name != base:
        return f"{name} ({base}): {problem}"
    return problem


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
    return json.dumps(
        [
            info.get("ID"),
            info.get("ServerVersion"),
            name,
            spec.get("path", name),
            spec.get("runtimeArgs") or [],
            _runtime_version(spec),
            os.uname().release,
        ]
    )


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
    data[key] = {
        "ok": av.ok,
        "reason": av.reason,
        "versions": av.versions,
        "date": time.strftime("%Y-%m-%d"),
    }
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
    summary = "a container per instance through dockerd (runc, runsc, crun... as listed)"
    options = {
        "runtime": Option("runc", "OCI runtime, as listed by `docker info` (runc, runsc...)"),
        "rootfs": roots.ROOTFS_OPTION,
        **ct.CONTAINER_OPTIONS,
    }

    def __init__(self, config: dict[str, Any], ctx: Context):
        super().__init__(config, ctx)
        self._client = None
        self._image = None
        self._bundle = None
        self._rootfs = None  # the isobench rootfs the image is made from, if any
        self._info: dict[str, Any] = {}
        self._layout = Layout.detect()

    # -- availability

    @classmethod
    def probe(cls, opts: dict[str, Any] | None = None) -> Availability:
        try:
            cl = client(timeout=5)
            cl.ping()
            version = cl.version()
        except Exception:  # noqa: BLE001 - unreachable, whatever the exception
            return Availability(False, UNREACHABLE)
        versions = cls._versions(version)
        runtime = (opts or {}).get("runtime")
        if runtime:  # the runtime these options name: listed, and able to run here?
            av = cls.runtime_available(str(runtime))
            if not av.ok:
                return av
            versions.update(av.versions)
        return Availability(True, "", versions)

    @staticmethod
    def _versions(version: dict[str, Any]) -> dict[str, str]:
        out = {"docker": version.get("Version", "")}
        for comp in version.get("Components") or []:
            name = comp.get("Name", "").lower()
            if name in ("containerd", "runc"):
                out[name] = comp.get("Version", "")
        return out

    @classmethod
    def refusal(cls, opts: dict[str, Any]) -> str | None:
        """A runtime the daemon does not list (when the daemon answers)."""
        if "runtime" not in opts:
            return None
        listed = daemon_runtimes()
        if listed is None or opts["runtime"] in listed:
            return None
        return f"docker has no runtime {opts['runtime']!r} (the daemon lists {', '.join(listed)})"

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
        problem = runtime_problem(name, runtimes[name], Layout.detect())
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
    def variants(cls) -> list[str]:
        """The default, seccomp off (the filter's share), gVisor (the sandbox's share)."""
        return ["docker", "docker:seccomp=unconfined", "docker:runtime=runsc"]

    @classmethod
    def leftovers(cls, opts: dict[str, Any] | None = None) -> list[Leftover]:
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
        trees = rootfs_store()
        for im in images:
            labels = im.get("Labels") or {}
            bundle_hash, key = labels.get(img.BUNDLE_LABEL), labels.get(img.ROOTFS_LABEL)
            why = ""
            if bundle_hash and not (bundles / bundle_hash).is_dir():
                why = f"bundle {bundle_hash} no longer in the cache"
            elif key and not (trees / key).is_dir():
                why = f"rootfs {key} no longer in the cache"
            if why:
                tags = ", ".join(im.get("RepoTags") or []) or im["Id"][:19]
                out.append(
                    Leftover(
                        f"docker image {tags} ({why})",
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
        self._rootfs = roots.load(self.opts["rootfs"], self.ctx.cache)
        if self._rootfs is None:
            self._image = img.ensure_docker_image(self.cl, bundle, self.ctx.cache)
        else:
            self._image = img.ensure_docker_rootfs_image(self.cl, bundle, self._rootfs)

    @property
    def _workdir(self) -> str:
        """The io workload's directory inside the container (its image's WORKDIR)."""
        return roots.WORKDIR if self._rootfs else STORAGE_TARGET

    def _probe_path(self, probe: str) -> str:
        return roots.probe_path(probe) if self._rootfs else img.probe_path(probe)

    def _host_config(
        self, name: str, volume: Path | None, network: str, port: int | None = None
    ) -> dict[str, Any]:
        o = self.opts
        kwargs: dict[str, Any] = {
            "runtime": o["runtime"],
            "network_mode": network,
            "cgroup_parent": ct.cgroup_parent_arg(self._driver, name),
        }
        if port is not None:  # a server on the bridge: published on the host's loopback
            kwargs["port_bindings"] = {port: ("127.0.0.1",)}
        if o["seccomp"] == "unconfined":
            kwargs["security_opt"] = ["seccomp=unconfined"]
        if o["cpus"]:
            kwargs["nano_cpus"] = int(o["cpus"] * 1e9)
        if o["cpuset"]:
            kwargs["cpuset_cpus"] = str(o["cpuset"])
        if o["memory"]:
            kwargs["mem_limit"] = str(o["memory"])
        if o["storage"] == "volume" and volume is not None:
            kwargs["binds"] = {str(volume): {"bind": self._workdir, "mode": "rw"}}
        elif o["storage"] == "tmpfs":
            kwargs["tmpfs"] = {self._workdir: "rw,mode=1777,size=2g"}
        return self.cl.api.create_host_config(**kwargs)

    @property
    def _driver(self) -> str:
        return (self._info.get("CgroupDriver") or "cgroupfs").lower()

    def _start(self, inv: Invocation, timeout: float) -> Instance:
        if self._image is None:
            raise RuntimeError("docker: start() before prepare()")
        name = self.new_name()
        try:
            volume = ct.volume_dir(self.ctx, name, self.opts["storage"])
        except OSError as e:
            raise StartError(f"could not make the volume of {name}: {e}") from None
        cgroup = ct.LaunchCgroup(ct.parent_rel_path(self._driver, name), self._layout)
        instance = DockerInstance(self.cl.api, name, timeout, cgroup, volume)
        instance.network = ct.network_of(self.opts, self.config, inv)
        instance.runsc = Path(self._runtime_spec().get("path", "")).name == "runsc"
        port = ct.served_port(inv) if instance.network == "bridge" else None
        try:
            instance.begin(
                image=self._image.id,
                argv=inv.argv(self._probe_path(inv.probe), self._workdir),
                labels=ct.labels(self.ctx),
                host_config=self._host_config(name, volume, instance.network, port),
                ports=[port] if port is not None else None,
                workdir=self._workdir,
            )
        except BaseException:  # Ctrl-C mid-start: remove what was made, then re-raise
            instance.abort()
            raise
        return instance

    def _runtime_spec(self) -> dict[str, Any]:
        runtime = self.opts["runtime"]
        return (self._info.get("Runtimes") or {}).get(runtime) or {"path": runtime}

    def net_path(self) -> str | None:
        given = self.config.get("network") is not None  # else a server gets the bridge
        return ct.net_path_problem(self.opts["network"] if given else "bridge")

    def _cleanup(self) -> None:
        shutil.rmtree(self.ctx.scratch / ct.VOLUMES, ignore_errors=True)
        if self._client is None:
            return
        try:
            mine = f"{ct.ENV_LABEL}={self.ctx.prefix}"
            for c in self.cl.api.containers(all=True, filters={"label": mine}):
                _force_remove(self.cl.api, c["Id"])
        except Exception as e:  # dockerd is gone: say so, `clean` finds them by label later
            raise RuntimeError(
                f"could not remove this environment's containers ({ct.first_line(str(e))}): "
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
            **super().describe(),
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
                "tag": self._image_tag(),
            },
            "bundle": self._bundle.hash if self._bundle else None,
            "rootfs": roots.describe(self._rootfs),
        }

    def _image_tag(self) -> str | None:
        if self._bundle is None:
            return None
        if self._rootfs is not None:
            return img.rootfs_image_tag(self._rootfs.key, self._bundle.hash)
        return img.image_tag(self._bundle.hash)


def _runtime_version(spec: dict[str, Any]) -> str:
    path = spec.get("path", "runc")
    if Path(path).name.startswith("io.containerd"):
        return ""
    return ct.tool_version([path, "--version"])


# ---------------------------------------------------------------- one instance


class DockerInstance(Instance):
    """One container: begin() = create → attach → start (phases created, started), then
    ready on the attached stream, exit from `wait`; a stop is SIGTERM through the API.
    An engine failure or a hang while starting is this instance's verdict (its launch
    says which step), as a `podman run` that fails is a failed launch, not an exception.
    _end reads the launch cgroup and the host-side sampler, concludes, and removes the
    container (its runsc processes too when it hung), the volume and the cgroup."""

    def __init__(self, api, name: str, timeout: float, cgroup: ct.LaunchCgroup, volume):
        super().__init__(name, timeout)
        self.api = api
        self.cgroup = cgroup
        self.volume = volume
        self.cid: str | None = None
        self.step = "create"
        self.phases: dict[str, int] = {}
        self.failure: tuple[str, str] | None = None  # (status, reason) of a failed step
        self.hung = False  # teardown kills its runsc processes before removing it
        self.res = Streamed(t_submit=self.t_submit)
        self._ready_seen = threading.Event()
        self._stream_ended = threading.Event()
        self._stderr: list[bytes] = []
        self._stream = None
        self._reader: threading.Thread | None = None
        self._sampler: ct.HostSideSampler | None = None
        self.network = "none"  # the container's network mode (its path from the host)
        self.runsc = False  # runsc: run with --network=host (the daemon's runtimeArgs)
        self.path = ""  # the network path taken, once address() was asked

    def address(self, port: int) -> tuple[str, int]:
        """network=host: loopback; bridge: the port published on 127.0.0.1 (the daemon's
        userland proxy for loopback, its NAT rules otherwise)."""
        problem = ct.net_path_problem(self.network)
        if problem or self.cid is None:
            raise StartError(problem or f"{self.name}: no container")
        sandbox = (
            " (runsc --network=host: the kernel's stack, not gVisor's netstack)"
            if self.runsc
            else ""
        )
        if self.network == "host":
            self.path = f"host network: loopback 127.0.0.1:{port}{sandbox}"
            return ("127.0.0.1", port)
        try:
            bound = self._call(self.api.port, self.cid, port) or []
        except Exception as e:  # noqa: BLE001 - the daemon's reason
            raise StartError(f"{self.name}: published port of {port}: {_explain(e)}") from None
        host_port = next((int(b["HostPort"]) for b in bound if b.get("HostPort")), None)
        if host_port is None:
            raise StartError(f"{self.name}: port {port} is not published")
        self.path = (
            f"bridge via published port 127.0.0.1:{host_port} -> {port} "
            f"(docker-proxy for loopback){sandbox}"
        )
        return ("127.0.0.1", host_port)

    def _call(self, fn, *args, **kwargs):
        """An API call bounded by what is left of the instance's deadline."""
        left = self.left()
        if left <= 0:
            raise TimeoutError(self.step)
        self.api.timeout = left
        try:
            return fn(*args, **kwargs)
        finally:
            self.api.timeout = CALL_TIMEOUT_S

    def begin(self, *, image, argv, labels, host_config, ports=None, workdir=img.WORKDIR) -> None:
        """create → attach → start; a failed step is recorded (self.failure), not raised."""
        self._guarded(self._begin, image, argv, labels, host_config, ports, workdir)

    def _begin(self, image, argv, labels, host_config, ports=None, workdir=img.WORKDIR) -> None:
        self.cid = self._call(
            self.api.create_container,
            image,
            command=argv,
            name=self.name,
            labels=labels,
            host_config=host_config,
            working_dir=workdir,
            ports=ports,
        )["Id"]
        self.phases["created"] = ct.ns_since(self.t_submit)
        self.step = "attach"
        self.api.timeout = self.timeout + CALL_TIMEOUT_S  # a stream, not a call
        try:
            self._stream = self.api.attach(
                self.cid, stdout=True, stderr=True, stream=True, demux=True
            )
        finally:
            self.api.timeout = CALL_TIMEOUT_S
        self._reader = threading.Thread(target=self._read, daemon=True, name="isobench-attach")
        self._reader.start()
        self.step = "start"
        self._call(self.api.start, self.cid)
        self.phases["started"] = ct.ns_since(self.t_submit)
        self._sampler = ct.HostSideSampler(lambda: ct.find_carriers(self.cid), find_every=0.1)
        self._sampler.__enter__()
        self.step = "ready"

    def _guarded(self, fn, *args) -> bool:
        """Run an API step; True when it worked. A timeout, a daemon that went away or an
        API error becomes this instance's failure (status, reason)."""
        import docker.errors
        import requests

        try:
            fn(*args)
            return True
        except (TimeoutError, requests.exceptions.Timeout):
            self.failure = ("timeout", self._timeout_reason())
            self.hung = True
        except requests.exceptions.ConnectionError as e:
            reason = f"dockerd went away during {self.step}: {ct.first_line(str(e))}"
            self.failure = ("failed", reason)
            self.hung = True
        except docker.errors.APIError as e:
            self.failure = ("failed", f"{self.step}: {_explain(e)}")
        return False

    def _timeout_reason(self) -> str:
        return f"{self.step} did not return within {self.timeout:g} s: instance removed"

    # -- the attached stream (a thread: `ready` is timestamped as it arrives)

    def _read(self) -> None:
        buf = b""
        try:
            for out, err in self._stream:
                if err:
                    self._stderr.append(err)
                if not out:
                    continue
                *complete, buf = (buf + out).split(b"\n")
                for raw in complete:
                    self._take(raw.decode(errors="replace").rstrip("\r"))
        except Exception:  # noqa: BLE001 - the stream ends when the container is removed
            pass
        if buf:
            self._take(buf.decode(errors="replace"))
        self._stream_ended.set()

    def _take(self, line: str) -> None:
        res = self.res
        if res.t_ready is None:
            if is_ready(line):
                res.t_ready = time.monotonic_ns()
                self._ready_seen.set()
            else:
                res.before_ready.append(line)
            return
        res.lines.append(line)

    # -- the Instance hooks

    def _ready(self, timeout: float) -> bool:
        """`ready` seen within `timeout` (False at once when the stream ended without)."""
        deadline = time.monotonic() + timeout
        while self.failure is None and not self._ready_seen.is_set():
            left = deadline - time.monotonic()
            if left <= 0 or self._stream_ended.is_set():
                break
            self._ready_seen.wait(min(left, 0.05))
        return self._ready_seen.is_set()

    def _signal_stop(self) -> None:
        if self.failure is None and self.cid is not None:
            # exited already (a 409), or the daemon does not answer: _wait_exit times out
            with contextlib.suppress(Exception):
                self._call(self.api.kill, self.cid, "SIGTERM")

    def _wait_exit(self, timeout: float) -> bool:
        if self.failure is not None or self.cid is None:
            return True  # it never started: nothing to wait for
        self.step = "exit"

        def wait() -> None:
            if timeout <= 0:
                raise TimeoutError(self.step)
            self.api.timeout = timeout
            try:
                status = self.api.wait(self.cid, timeout=max(1, int(timeout) + 1))
            finally:
                self.api.timeout = CALL_TIMEOUT_S
            self.res.t_exit = time.monotonic_ns()
            self.res.exit_code = status.get("StatusCode")

        if self._guarded(wait):
            return True
        if self.failure and self.failure[0] == "timeout":
            self.failure = None  # not an engine failure: conclude() says "no exit"
            return False
        return True

    def _kill(self) -> None:
        """A hung runsc (its sandbox, gofer, runtime CLI) is killed now; the container
        itself goes with the force remove in _end."""
        self.hung = True
        if self.cid is not None:
            ct.kill_carriers(self.cid)

    def _end(self, *, stopped: bool, timed_out: bool) -> Launch:
        try:
            res = self.res
            exited = res.t_exit is not None
            if exited and self._reader is not None:
                self._reader.join(max(0.1, min(5.0, self.left())))  # the last lines
            if self._sampler is not None:
                self._sampler.stop()
            cgroup = self.cgroup.read() if exited else {}
            res.timed_out = timed_out
            res.stderr = b"".join(self._stderr).decode(errors="replace")
            res.lines = list(res.lines)  # a snapshot: a hung stream's reader may still run
            launch = to_launch(res, self.timeout, "instance", stopped=stopped)
            launch.phases.update(self.phases)
            launch.cgroup = cgroup
            launch.host_side = self._sampler.result() if self._sampler else {}
            if self.failure is not None:  # an engine step failed: its own reason
                launch.status, launch.reason = self.failure
            launch.extra.update(
                container_id=self.cid, name=self.name, cgroup_parent=self.cgroup.rel
            )
            if self.path:
                launch.net_path = self.path
            return launch
        finally:
            with interrupt.shielded():
                self._teardown()

    def _teardown(self) -> None:
        """Remove the container (force), its runsc processes, the stream, the launch
        cgroup and the volume directory."""
        self.api.timeout = CALL_TIMEOUT_S
        if self._sampler is not None:
            self._sampler.stop()
        if self.cid is not None:
            _force_remove(self.api, self.cid, hung=self.hung)
        if self._stream is not None:
            with contextlib.suppress(Exception):
                self._stream.close()
        self.cgroup.remove()
        if self.volume is not None:
            shutil.rmtree(self.volume, ignore_errors=True)
