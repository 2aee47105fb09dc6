"""`swarm`: each instance a one-replica Docker Swarm service of the probe image, through
the Docker SDK's swarm and services API (restart_condition none, labelled isobench,
removed after). A start takes the orchestrator's path: service -> task -> scheduler ->
dispatcher -> the node's executor -> the container; bench/envs/swarm_task.py says which
phases are seen and how.

Whose swarm and whose daemon (bench/envs/swarm_daemon.py): the machine's dockerd (or
host=), whose swarm is used as it is, or, when it is in none, a single-node swarm that
isobench makes for the run and leaves after; daemon=private: a dockerd of isobench's
own in a network namespace, optionally with workers=N more joined as workers (a second
node on the same kernel), all removed after (bench/envs/swarm_private.py).

What Swarm can and cannot set, knob by knob:
- runtime: a service cannot name an OCI runtime; its tasks run with the daemon's
  default-runtime. runtime= is accepted only when it names that runtime (a runsc swarm:
  a daemon whose daemon.json sets "default-runtime": "runsc").
- cpus, memory: the task's limits, with reservations equal to them (the scheduler
  places a task only where the reservation fits).
- network: none (no swarm network: Swarm cannot attach `none`, so the container gets
  the daemon's default bridge, or only loopback on a daemon without one, and nothing
  is published), ingress (a served port published through the routing mesh: the
  ingress overlay and IPVS), host (the node's own network).
- node: a placement constraint (a node id, a hostname, `worker` or `manager`).
- no cgroup parent (the service API has none): the task's container sits in the
  daemon's own cgroup parent, read live (live_cgroup); runc removes it at exit, so a
  launch carries no cgroup totals.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import Any

from bench.envs import containers as ct
from bench.envs import image as img
from bench.envs import swarm_daemon as sd
from bench.envs import swarm_private as sp
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
from bench.envs.swarm_task import INSTANCE_LABEL, STREAM_TIMEOUT_S, SwarmInstance

LOOPBACK = "127.0.0.1"  # the advertise address of a swarm isobench makes on the default daemon


IPVS = Path("/proc/net/ip_vs")  # the routing mesh's load balancer, in the kernel
NO_MESH = (
    "network=ingress: the routing mesh needs IPVS (the ip_vs kernel module) and this "
    "kernel has none (/proc/net/ip_vs is missing); network=host reaches the task directly"
)


class SwarmEnv(Environment):
    kind = "swarm"
    summary = "a one-replica Docker Swarm service per instance (service -> task -> container)"
    channel = True  # the SDK's attach to the task's container, its stdin kept open
    options = {
        "host": Option(
            None, "the dockerd to use (unix:///path, tcp://...); default: the machine's"
        ),
        "daemon": Option(
            "default",
            "default: the daemon of host=; private: a dockerd of isobench's own in a "
            "network namespace, made and removed with the run",
            ("default", "private"),
        ),
        "workers": Option(
            None, "daemon=private: this many more dockerds joined as workers", type=int
        ),
        "swarm": Option(
            "auto",
            "auto: the daemon's swarm, or a single-node one made for the run; "
            "existing: only a swarm the daemon is in already (never changed)",
            ("auto", "existing"),
        ),
        "runtime": Option(
            None, "only the daemon's default-runtime: Swarm cannot pick a runtime per service"
        ),
        "cpus": ct.CONTAINER_OPTIONS["cpus"],
        "memory": ct.CONTAINER_OPTIONS["memory"],
        "network": Option(
            "none",
            "none (no swarm network), ingress (a published port through the routing "
            "mesh), host (the node's network)",
            ("none", "ingress", "host"),
        ),
        "node": Option(None, "placement: a node id or hostname, `worker` or `manager`"),
    }

    def __init__(self, config: dict[str, Any], ctx: Context):
        super().__init__(config, ctx)
        self._client = None
        self._info: dict[str, Any] = {}
        self._image: str | None = None
        self._bundle = None
        self._joined = False
        self.made_swarm = False
        self.private: list[sp.PrivateDaemon] = []
        self.remote = LOOPBACK  # the manager's address as a host-side client reaches it

    # -- availability

    @classmethod
    def _host(cls, opts: dict[str, Any]) -> str:
        return opts.get("host") or sd.DEFAULT_HOST

    @classmethod
    def probe(cls, opts: dict[str, Any] | None = None) -> Availability:
        try:
            opts = cls.parse(opts)
        except OptionError as e:
            return Availability(False, str(e))
        local = opts["daemon"] == "private" or cls._host(opts).startswith("unix://")
        if opts["network"] == "ingress" and local and not IPVS.exists():  # also net_path
            return Availability(False, NO_MESH)
        if opts["daemon"] == "private":
            return cls._probe_private()
        host = cls._host(opts)
        try:
            cl = sd.client(host, timeout=5)
            info, version = cl.info(), cl.version()
        except Exception:  # noqa: BLE001 - unreachable, whatever the exception
            return Availability(False, sd.unreachable(host))
        versions = {"docker": version.get("Version", "")}
        state, manager = sd.swarm_state(info)
        if state == "active" and not manager:
            return Availability(False, f"the daemon at {host} is a swarm worker: give a manager")
        if state == "active":
            return Availability(True, "", versions)
        if opts["swarm"] == "existing":
            return Availability(
                False, f"swarm=existing: the daemon at {host} is in no swarm (docker swarm init)"
            )
        if state != "inactive":
            return Availability(False, f"the daemon at {host} is in swarm state {state!r}")
        return Availability(
            True,
            "the daemon is in no swarm: isobench makes one for the run, leaves it after",
            versions,
        )

    @classmethod
    def _probe_private(cls) -> Availability:
        if os.geteuid() != 0:
            return Availability(False, "daemon=private needs root (a network namespace)")
        missing = [t for t in ("dockerd", "nsenter", "ip") if not shutil.which(t)]
        if missing:
            return Availability(False, f"daemon=private needs {', '.join(missing)}")
        version = ct.tool_version(["dockerd", "--version"])
        return Availability(True, "", {"dockerd": version})

    @classmethod
    def refusal(cls, opts: dict[str, Any]) -> str | None:
        if opts.get("workers") and opts.get("daemon") != "private":
            return "swarm: workers= needs daemon=private (isobench makes those nodes)"
        if not opts.get("runtime"):
            return None
        default = "runc" if opts.get("daemon") == "private" else cls._default_runtime(opts)
        if default is None or opts["runtime"] == default:
            return None
        return (
            f"swarm: runtime={opts['runtime']}: a swarm service cannot pick an OCI runtime; "
            f"its tasks run with the daemon's default-runtime ({default})"
        )

    @classmethod
    def _default_runtime(cls, opts: dict[str, Any]) -> str | None:
        try:
            return sd.client(cls._host(opts), timeout=5).info().get("DefaultRuntime")
        except Exception:  # noqa: BLE001 - unreachable: probe() says so
            return None

    @classmethod
    def details(cls) -> list[tuple[str, Availability]]:
        rows = [("swarm", cls.probe()), ("swarm:daemon=private", cls._probe_private())]
        with contextlib.suppress(Exception):
            info = sd.client(timeout=5).info()
            default = info.get("DefaultRuntime")
            for name in ct_listed(info.get("Runtimes") or {}):
                if name != default:
                    why = f"{name}: Swarm runs tasks with the default-runtime ({default}) only"
                    rows.append((f"swarm:runtime={name}", Availability(False, why)))
        return rows

    @classmethod
    def variants(cls) -> list[str]:
        return ["swarm"]

    @classmethod
    def leftovers(cls, opts: dict[str, Any] | None = None) -> list[Leftover]:
        return sd.swarm_leftovers() + sp.private_leftovers()

    # -- lifecycle

    @property
    def cl(self):
        if self._client is None:
            self._client = sd.client(self.host)
        return self._client

    @property
    def host(self) -> str:
        return self.private[0].host if self.private else self._host(self.opts)

    @property
    def driver(self) -> str:
        return (self._info.get("CgroupDriver") or "cgroupfs").lower()

    @property
    def task_host(self) -> str:
        """The daemon whose node runs the tasks, when known: a private worker that
        node= names (its containers are not the manager daemon's), else the manager's."""
        node = self.opts["node"]
        for worker in self.private[1:]:
            if node == "worker" and len(self.private) == 2 or node == worker.node_id:
                return worker.host
        return self.host

    def stream_api(self, host: str | None = None):
        import docker

        return docker.APIClient(
            base_url=host or self.host, timeout=STREAM_TIMEOUT_S, version=self.cl.api.api_version
        )

    def call_api(self, host: str | None = None):
        import docker

        return docker.APIClient(
            base_url=host or self.host, timeout=sd.CALL_TIMEOUT_S, version=self.cl.api.api_version
        )

    def prepare(self, bundle) -> None:
        if self._image is not None:
            return
        why = self.refusal(self.opts)
        if why:
            raise OptionError(why)
        self._bundle = bundle
        advertise = LOOPBACK
        if self.opts["daemon"] == "private":
            advertise = self._start_private()
        sd.remember(self.host)  # `clean` looks there too after a kill -9
        self._info = self.cl.info()
        if self.opts["runtime"] and self.opts["runtime"] != self._info.get("DefaultRuntime"):
            raise OptionError(self.refusal({**self.opts, "daemon": "default", "host": self.host}))
        self.made_swarm = sd.join(
            self.cl, self.host, self.ctx.prefix, self.opts["swarm"], advertise
        )
        self._joined = True
        self._image = img.ensure_docker_image(self.cl, bundle, self.ctx.cache).tags[0]
        for worker in self.private[1:]:
            self._join_worker(worker, bundle, advertise)

    def _start_private(self) -> str:
        """The manager's (and workers') dockerd in network namespaces; returns the
        address the manager advertises (its end of the first worker's link, else of
        the host's)."""
        n = int(self.opts["workers"] or 0)
        roles = ["m"] + [f"w{i}" for i in range(1, n + 1)]
        for role in roles:
            name = f"{self.ctx.prefix}-{role}"
            self.private.append(sp.PrivateDaemon(name, self.ctx.scratch / f"dockerd-{role}"))
        manager = self.private[0]
        advertise = ""
        for daemon in self.private:
            daemon.make_netns()
            if daemon is manager:
                _, self.remote = daemon.link_to(None)
                advertise = self.remote
            else:
                near, _ = daemon.link_to(manager.netns)
                daemon.manager_address = near
                if daemon is self.private[1]:
                    advertise = near
            sd.remember(daemon.host)
            daemon.start()
        return advertise

    def _join_worker(self, worker, bundle, advertise: str) -> None:
        token = self.cl.api.inspect_swarm()["JoinTokens"]["Worker"]
        wcl = sd.client(worker.host)
        try:
            wcl.swarm.join(
                remote_addrs=[f"{worker.manager_address}:2377"],
                join_token=token,
                advertise_addr=worker.address,
                listen_addr=f"{worker.address}:2377",
            )
            img.ensure_docker_image(wcl, bundle, self.ctx.cache)
            worker.node_id = wcl.info()["Swarm"]["NodeID"]
        except Exception as e:  # noqa: BLE001 - the daemon's reason, one line
            raise StartError(f"worker {worker.name}: {sd.explain(e)}") from None
        finally:
            wcl.close()

    def _constraints(self) -> list[str]:
        node = self.opts["node"]
        if not node:
            return []
        if node in ("worker", "manager"):
            return [f"node.role=={node}"]
        ids = {n["ID"] for n in self.cl.api.nodes()}
        return [f"node.id=={node}" if node in ids else f"node.hostname=={node}"]

    def _start(self, inv: Invocation, timeout: float) -> Instance:
        from docker import types

        if self._image is None:
            raise RuntimeError("swarm: start() before prepare()")
        name = self.new_name()
        o = self.opts
        network = o["network"]
        port = ct.served_port(inv)
        if self.config.get("network") is None and port is not None:
            network = "ingress"  # a server the host must reach: published, as docker's bridge
        resources = None
        if o["cpus"] or o["memory"]:
            nano = int(o["cpus"] * 1e9) if o["cpus"] else None
            mem = o["memory"].bytes() if o["memory"] else None
            resources = types.Resources(
                cpu_limit=nano, mem_limit=mem, cpu_reservation=nano, mem_reservation=mem
            )
        container = types.ContainerSpec(
            image=self._image,
            command=inv.argv(img.probe_path(inv.probe), img.WORKDIR),
            workdir=img.WORKDIR,
            labels={INSTANCE_LABEL: name, ct.ENV_LABEL: self.ctx.prefix},
            open_stdin=inv.serves or None,
        )
        template = types.TaskTemplate(
            container,
            resources=resources,
            restart_policy=types.RestartPolicy(condition="none"),
            placement=types.Placement(constraints=self._constraints()) if o["node"] else None,
            networks=["host"] if network == "host" else None,
        )
        endpoint = None
        if network == "ingress" and port is not None:
            endpoint = types.EndpointSpec(
                ports=[{"Protocol": "tcp", "TargetPort": port, "PublishMode": "ingress"}]
            )
        instance = SwarmInstance(self, name, timeout, serve=inv.serves)
        instance.network = network
        instance.remote = (self.remote, None)
        try:
            instance.begin(
                dict(
                    task_template=template,
                    name=name,
                    labels={sd.SERVICE_LABEL: "1", ct.ENV_LABEL: self.ctx.prefix},
                    mode=types.ServiceMode("replicated", 1),
                    endpoint_spec=endpoint,
                )
            )
        except BaseException:
            instance.abort()
            raise
        return instance

    def net_path(self) -> str | None:
        given = self.config.get("network") is not None
        if given and self.opts["network"] == "none":
            return "network=none: a swarm task publishes nothing: use network=ingress or host"
        ingress = not given or self.opts["network"] == "ingress"  # a server's default
        if ingress and self._local() and not IPVS.exists():
            return NO_MESH
        return None

    def _local(self) -> bool:
        """The daemon runs on this machine (its kernel is the one the mesh needs)."""
        return self.opts["daemon"] == "private" or self._host(self.opts).startswith("unix://")

    def _cleanup(self) -> None:
        problems = []
        if self._client is not None and not self.private:
            try:
                mine = f"{ct.ENV_LABEL}={self.ctx.prefix}"
                sd.remove_services(self.cl, {"label": mine})
                if self._joined:
                    sd.release(self.cl, self.host, self.ctx.prefix)
            except Exception as e:  # noqa: BLE001 - dockerd is gone: clean finds it later
                problems.append(ct.first_line(str(e)))
        self._joined = False
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.close()
            self._client = None
        for daemon in reversed(self.private):
            daemon.stop()
            sd.forget(daemon.host)
        self.private = []
        if problems:
            raise RuntimeError(
                f"could not remove this environment's services or swarm ({problems[0]}): "
                "run `isobench clean` once dockerd is back"
            )

    def describe(self) -> dict[str, Any]:
        info = self._info
        swarm = info.get("Swarm") or {}
        return {
            **super().describe(),
            "daemon": {
                "host": self.host if not self.private else "private",
                "version": info.get("ServerVersion"),
                "default_runtime": info.get("DefaultRuntime"),
                "cgroup_driver": info.get("CgroupDriver"),
                "storage_driver": info.get("Driver"),
            },
            "swarm": {
                "made_by_isobench": self.made_swarm,
                "nodes": swarm.get("Nodes"),
                "managers": swarm.get("Managers"),
            },
            "private_daemons": sp.describe(self.private),
            "image": self._image,
            "bundle": self._bundle.hash if self._bundle else None,
        }


def ct_listed(runtimes: dict[str, Any]) -> list[str]:
    from bench.envs.docker_daemon import listed

    return listed(runtimes)
