"""The daemon side of the `swarm` kind: which dockerd (the default socket, `host=`, or a
private one), whether it is in a swarm and whose that swarm is, and what a crashed run
left there.

Whose swarm. A daemon already in a swarm is used as it is (its configuration is never
changed; only isobench's labelled services are removed). A daemon in no swarm gets a
single-node swarm for the run: `swarm init` with the swarm's own labels saying that
isobench made it (isobench.swarm = the maker's name prefix) and whether docker_gwbridge
existed before (init makes that network and its bridge device, and `swarm leave` keeps
them). The labels are part of the init call itself, so a kill -9 at any moment after it
leaves a swarm that `clean` can prove is isobench's. Within a process the environments
that use one daemon's swarm are counted: the last one to finish leaves it.

Every non-default daemon a run used is remembered in the cache (KNOWN_FILE), so `clean`
also looks there for labelled services and isobench-made swarms.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

from bench.envs import containers as ct
from bench.envs.base import Leftover, OptionError
from bench.envs.docker_daemon import SOCKET, explain
from bench.resources import cache_dir

DEFAULT_HOST = f"unix://{SOCKET}"
SWARM_LABEL = "isobench.swarm"  # the swarm's label: the name prefix of the env that made it
GWBRIDGE_LABEL = "isobench.gwbridge"  # "made": init made docker_gwbridge; "kept": it was there
SERVICE_LABEL = "isobench"  # every service isobench makes (what `clean` looks for)
GWBRIDGE = "docker_gwbridge"
KNOWN_FILE = "swarm-daemons.json"  # the non-default daemons a run used (for `clean`)
CALL_TIMEOUT_S = 30
LIST_TIMEOUT_S = 5  # `clean` and `doctor` asking a daemon that may be gone
REMOVED_WAIT_S = 15  # how long a removed service's containers may take to go

_lock = threading.Lock()
_users: dict[str, set[str]] = {}  # daemon host -> prefixes of the envs using its swarm


def client(host: str | None = None, timeout: float = CALL_TIMEOUT_S):
    """A docker SDK client of `host` (default: the machine's dockerd)."""
    import docker

    return docker.DockerClient(base_url=host or DEFAULT_HOST, timeout=timeout)


def unreachable(host: str | None) -> str:
    if not host or host == DEFAULT_HOST:
        return f"dockerd not reachable at {SOCKET}: start it (systemctl start docker)"
    return f"dockerd not reachable at {host}: start it, or give the swarm kind another host="


# ---------------------------------------------------------------- known daemons


def remember(host: str) -> None:
    """Note a non-default daemon in the cache, so `clean` looks there too."""
    if host == DEFAULT_HOST:
        return
    with _lock:
        hosts = known_hosts()
        if host not in hosts:
            _write_known([*hosts, host])


def forget(host: str) -> None:
    with _lock:
        hosts = known_hosts()
        if host in hosts:
            _write_known([h for h in hosts if h != host])


def known_hosts() -> list[str]:
    with contextlib.suppress(OSError, ValueError):
        data = json.loads((cache_dir() / KNOWN_FILE).read_text())
        return [h for h in data if isinstance(h, str)]
    return []


def _write_known(hosts: list[str]) -> None:
    path = cache_dir() / KNOWN_FILE
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(hosts, indent=1) + "\n")
        tmp.replace(path)


def reachable_hosts() -> list[str]:
    """The default daemon and the remembered ones whose unix socket still exists."""
    out = [DEFAULT_HOST]
    for host in known_hosts():
        if host.startswith("unix://") and not Path(host.removeprefix("unix://")).exists():
            continue
        out.append(host)
    return out


# ---------------------------------------------------------------- the swarm


def swarm_state(info: dict[str, Any]) -> tuple[str, bool]:
    """Pure: `docker info` -> (the node's swarm state, whether it is a manager)."""
    sw = info.get("Swarm") or {}
    return sw.get("LocalNodeState") or "inactive", bool(sw.get("ControlAvailable"))


def isobench_labels(cl) -> dict[str, str] | None:
    """The swarm's isobench labels when isobench made it; None otherwise (a user's
    swarm, no swarm, a worker that cannot see the swarm's spec)."""
    try:
        labels = (cl.api.inspect_swarm().get("Spec") or {}).get("Labels") or {}
    except Exception:  # noqa: BLE001 - not a manager / not in a swarm
        return None
    return labels if SWARM_LABEL in labels else None


def join(cl, host: str, prefix: str, mode: str, advertise: str) -> bool:
    """Make sure the daemon is a manager of a swarm this env may use; True when this
    call made the swarm. mode "existing": the daemon must be in one already."""
    state, manager = swarm_state(cl.info())
    with _lock:
        if state == "active":
            if not manager:
                raise OptionError(
                    f"swarm: the daemon at {host} is a worker of a swarm; services are "
                    "made on a manager: give host= of a manager"
                )
            _users.setdefault(host, set()).add(prefix)
            return False
        if mode == "existing":
            raise OptionError(
                f"swarm=existing: the daemon at {host} is in no swarm (state {state}): "
                "run `docker swarm init`, or leave out swarm=existing to let isobench make one"
            )
        if state != "inactive":
            raise OptionError(f"swarm: the daemon at {host} is in swarm state {state!r}")
        had_gwbridge = bool(cl.api.networks(names=[GWBRIDGE]))
        labels = {SWARM_LABEL: prefix, GWBRIDGE_LABEL: "kept" if had_gwbridge else "made"}
        try:
            cl.swarm.init(advertise_addr=advertise, listen_addr=f"{advertise}:2377", labels=labels)
        except Exception as e:  # noqa: BLE001 - the daemon's reason, one line
            raise OptionError(f"swarm init on {host}: {explain(e)}") from None
        _users.setdefault(host, set()).add(prefix)
        return True


def release(cl, host: str, prefix: str) -> None:
    """This env is done with the daemon's swarm: the last user leaves it when isobench
    made it (and removes docker_gwbridge when init made that)."""
    with _lock:
        users = _users.get(host, set())
        users.discard(prefix)
        if users:
            return
        _users.pop(host, None)
    leave_if_ours(cl)


def leave_if_ours(cl) -> bool:
    """Leave the daemon's swarm if isobench made it, after removing isobench's services;
    then docker_gwbridge when init made it. True when it left."""
    labels = isobench_labels(cl)
    if labels is None:
        return False
    remove_services(cl, {"label": SERVICE_LABEL})
    cl.swarm.leave(force=True)
    if labels.get(GWBRIDGE_LABEL) == "made":
        remove_gwbridge(cl)
    return True


def remove_gwbridge(cl) -> None:
    """docker_gwbridge goes once the swarm's sandboxes have left it (a few tries)."""
    for _ in range(20):
        nets = cl.api.networks(names=[GWBRIDGE])
        if not nets:
            return
        try:
            cl.api.remove_network(nets[0]["Id"])
            return
        except Exception:  # noqa: BLE001 - endpoints still being removed
            time.sleep(0.25)


def remove_services(cl, filters: dict[str, str], wait: float = REMOVED_WAIT_S) -> None:
    """Remove the services matching `filters` and wait (bounded) for their containers."""
    import docker.errors

    try:
        services = cl.api.services(filters=filters)
    except docker.errors.APIError:
        return  # not a manager any more: nothing to list
    for svc in services:
        with contextlib.suppress(docker.errors.NotFound):
            cl.api.remove_service(svc["ID"])
    deadline = time.monotonic() + wait
    for svc in services:
        sid = svc["ID"]
        while time.monotonic() < deadline:
            left = cl.api.containers(
                all=True, filters={"label": f"com.docker.swarm.service.id={sid}"}
            )
            if not left:
                break
            time.sleep(0.1)
        for c in cl.api.containers(
            all=True, filters={"label": f"com.docker.swarm.service.id={sid}"}
        ):
            with contextlib.suppress(Exception):
                cl.api.remove_container(c["Id"], force=True)
            ct.kill_carriers(c["Id"])


# ---------------------------------------------------------------- leftovers


def swarm_leftovers() -> list[Leftover]:
    """On every daemon isobench knows: its labelled services (each names the instance),
    then a swarm isobench made (named by its maker's prefix: kept while that run lives)."""
    out: list[Leftover] = []
    for host in reachable_hosts():
        try:
            cl = client(host, timeout=LIST_TIMEOUT_S)
            state, manager = swarm_state(cl.info())
        except Exception:  # noqa: BLE001 - a daemon that is gone has nothing to list
            continue
        if state != "active" or not manager:
            continue
        with contextlib.suppress(Exception):
            for svc in cl.api.services(filters={"label": SERVICE_LABEL}):
                name = (svc.get("Spec") or {}).get("Name", "?")
                out.append(
                    Leftover(
                        f"swarm service {svc['ID'][:12]} ({name}) on {host}",
                        lambda h=host, sid=svc["ID"]: remove_services(client(h), {"id": sid}),
                    )
                )
        labels = isobench_labels(cl)
        if labels is not None:
            out.append(
                Leftover(
                    f"docker swarm made by {labels[SWARM_LABEL]} on {host} "
                    f"(docker_gwbridge {labels.get(GWBRIDGE_LABEL, 'kept')})",
                    lambda h=host: leave_if_ours(client(h)),
                )
            )
    return out
