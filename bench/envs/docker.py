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

A probe in serve mode is driven over the attach socket's stdin (docker_instance.py).

The daemon and its runtimes are docker_daemon.py's; one container is docker_instance.py's;
this module is the environment and its disk footprint.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from pathlib import Path
from typing import Any

from bench import footprint as fp
from bench.envs import containers as ct
from bench.envs import image as img
from bench.envs import roots
from bench.envs.base import (
    Availability,
    Context,
    Environment,
    Instance,
    Invocation,
    Leftover,
    Option,
    OptionError,
    StartError,
)
from bench.envs.docker_daemon import (
    UNREACHABLE,
    client,
    daemon_runtimes,
    force_remove,
    listed,
    runtime_available,
    runtime_version,
)
from bench.envs.docker_instance import DockerInstance
from bench.metrics.cgroup import Layout
from bench.resources import cache_dir
from bench.rootfs import store_dir as rootfs_store

STORAGE_TARGET = img.WORKDIR


# ---------------------------------------------------------------- the environment


class DockerEnv(Environment):
    kind = "docker"
    summary = "a container per instance through dockerd (runc, runsc, crun... as listed)"
    options = {
        "runtime": Option("runc", "OCI runtime, as listed by `docker info` (runc, runsc...)"),
        "rootfs": roots.ROOTFS_OPTION,
        **ct.CONTAINER_OPTIONS,
    }
    channel = True  # serve mode: the container's stdin over the attach socket

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
            av = runtime_available(str(runtime))
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
            rows.append((f"docker:runtime={name}", runtime_available(name)))
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
                    lambda cid=c["Id"]: force_remove(client().api, cid),
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
                serve=inv.serves,
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
                force_remove(self.cl.api, c["Id"])
        except Exception as e:  # dockerd is gone: say so, `clean` finds them by label later
            raise RuntimeError(
                f"could not remove this environment's containers ({ct.first_line(str(e))}): "
                "run `isobench clean` once dockerd is back"
            ) from None
        finally:
            with contextlib.suppress(Exception):
                self._client.close()
            self._client = None

    def disk_footprint(self, bundle, io, timeout) -> list[dict[str, Any]]:
        """The image as the daemon reports it; with `io`, the writable layer of the
        container that ran the io probe (`docker inspect --size`)."""
        api = self.cl.api
        image = self.cl.images.get(self._image.id if self._image else None)
        out = docker_image_figures(image.attrs)

        def measure(instance) -> list[dict[str, Any]]:
            cid = instance.cid
            if cid is None:
                return None
            api.wait(cid, timeout=max(1, int(instance.left()) + 1))
            # the SDK's inspect_container has no size flag: the CLI's `inspect --size`
            inspect = parse_inspect(fp.engine_cli("docker", "container", "inspect", "--size", cid))
            runsc = bool(getattr(instance, "runsc", False))
            return [docker_rw_figure(inspect, self.opts["storage"], runsc)]

        return out + (fp.after_io(self, io, timeout, measure) if io else [fp.no_io()])

    def describe(self) -> dict[str, Any]:
        info = self._info
        runtimes = info.get("Runtimes") or {}
        runtime = self.opts["runtime"]
        return {
            **super().describe(),
            "runtime": {
                "name": runtime,
                "spec": runtimes.get(runtime),
                "version": runtime_version(runtimes.get(runtime) or {"path": runtime}),
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


# ---------------------------------------------------------------- footprint (pure)


def parse_inspect(text: str) -> dict[str, Any]:
    """Pure: `docker container inspect` output (a JSON list of one object) -> the object."""
    data = json.loads(text)
    if not isinstance(data, list) or len(data) != 1 or not isinstance(data[0], dict):
        raise ValueError(f"docker inspect: expected a list of one object, got {text[:80]!r}")
    return data[0]


def docker_image_figures(attrs: dict[str, Any]) -> list[dict[str, Any]]:
    """Pure: the docker SDK's image attrs (GET /images/{id}/json) -> figures: Size, and
    VirtualSize where the API still reports it (removed in API 1.44); the layer count."""
    layers = len((attrs.get("RootFS") or {}).get("Layers") or [])
    counts = (
        f"docker SDK images.get().attrs['Size']: the image's {layers} layer(s) as "
        "the daemon reports them (uncompressed, apparent sizes of the layer's files)"
    )
    out = [fp.figure("image", int(attrs["Size"]), counts)]
    if "VirtualSize" in attrs:
        out.append(
            fp.figure(
                "image (VirtualSize)",
                int(attrs["VirtualSize"]),
                "attrs['VirtualSize']: this layer plus its parents' (deprecated)",
            )
        )
    else:
        out.append(
            fp.missing(
                "image (VirtualSize)",
                "this daemon's API no longer reports VirtualSize (removed in API "
                "1.44; it equals Size for an image without a parent)",
            )
        )
    return out


def docker_rw_figure(inspect: dict[str, Any], storage: str, runsc: bool = False) -> dict[str, Any]:
    """Pure: `docker inspect --size` of the container that ran the io probe -> its
    writable layer (SizeRw), as the daemon computes it (apparent sizes in the upper dir)."""
    what = "writable layer after io"
    if inspect.get("SizeRw") is None:
        return fp.missing(what, "the daemon did not report SizeRw for the container")
    note = (
        ""
        if storage == "overlay"
        else (f"; storage={storage}: the io probe wrote to a {storage}, not to this layer")
    )
    if runsc:
        note += "; runsc: the sandbox may hold writes in its own rootfs overlay (--overlay2)"
    state = inspect.get("State") or {}
    return fp.figure(
        what,
        int(inspect["SizeRw"]),
        "docker inspect --size: SizeRw of the container that ran the io probe, "
        f"after it exited (status {state.get('ExitCode')}), before its removal; "
        f"the probe removes its files at exit{note}",
    )
