"""dockerd as the docker kind sees it: the SDK client, the runtimes the daemon lists and
whether each can run here (a trial `true` container, its verdict remembered in the cache
between calls), and the forced removal of a container whatever its state."""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path
from typing import Any

from bench.envs import containers as ct
from bench.envs.base import Availability
from bench.metrics.cgroup import Layout
from bench.resources import cache_dir

SOCKET = "/var/run/docker.sock"
UNREACHABLE = f"dockerd not reachable at {SOCKET}: start it (systemctl start docker)"
CALL_TIMEOUT_S = 30  # one API call (create, remove...) outside a launch's own deadline
CHECK_TIMEOUT_S = 10  # the tiny `true` run that decides whether a runtime works here
LEGACY_RUNTIMES = ("io.containerd.runc.v2", "io.containerd.runtime.v1.linux")


def client(timeout: float = CALL_TIMEOUT_S):
    """A docker SDK client; raises (docker.errors.DockerException) when unreachable."""
    import docker

    return docker.DockerClient(base_url=f"unix://{SOCKET}", timeout=timeout)


def explain(exc: Exception) -> str:
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
            runtime_version(spec),
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


def trial_run(cl, runtime: str) -> tuple[str, bool]:
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
        return f"{runtime}: {explain(e)}", False
    finally:
        api.timeout = CALL_TIMEOUT_S
        if cid:
            force_remove(api, cid, hung=hung)


def force_remove(api, cid: str, hung: bool = False) -> None:
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


def runtime_available(name: str) -> Availability:
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
            why, lasting = trial_run(cl, name)
            recorded = Availability(not why, why, {name: runtime_version(runtimes[name])})
            if lasting:
                _record(key, recorded)
        _checked[key] = recorded
    return _checked[key]


def runtime_version(spec: dict[str, Any]) -> str:
    path = spec.get("path", "runc")
    if Path(path).name.startswith("io.containerd"):
        return ""
    return ct.tool_version([path, "--version"])
