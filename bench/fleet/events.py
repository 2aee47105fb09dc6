"""Each host's state from the playbook's events (the isobench_events callback's JSON
lines): which task failed says which status the host gets. Pure: a function of the
event and the records, so it is tested on recorded lines."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from bench.fleet.results import Fleet, unpack_run

# the playbook's task names (playbook.yml) -> the status of a host whose task failed there
FAILED_AT = {
    "facts": "unusable",
    "check python": "unusable",
    "usable": "unusable",
    "scratch": "prepare-failed",
    "wheels": "prepare-failed",
    "unpack": "prepare-failed",
    "matrix": "prepare-failed",
    "venv": "prepare-failed",
    "install": "prepare-failed",
    "prepare": "prepare-failed",
    "run": "run-failed",
    "pack": "run-failed",
    "fetch": "run-failed",
}
PREFIX = {
    "unusable": "cannot use the wheels",
    "prepare-failed": "preparation failed",
    "run-failed": "run failed",
}


def apply(fleet: Fleet, event: dict, fetched: Path, say: Callable[[str, str], None]) -> bool:
    """Update the host the event is about; True when its record changed (fleet.json is
    then written again). `say(host, line)` prints the line a host's final state gets;
    `fetched` is where the fetch task put <host>.tar."""
    host = fleet.host(str(event.get("host")))
    if host is None:
        return False
    kind, task, t = event.get("event"), event.get("task"), event.get("time")
    result = event.get("result") or {}
    msg = event.get("msg") or "(no message)"
    if kind == "unreachable":
        if host.finish("unreachable", msg):
            say(host.name, f"unreachable: {msg}")
            return True
        return False
    if kind == "failed" and task in FAILED_AT:
        status = FAILED_AT[task]
        if task == "run":
            host.ended = t
            host.span_from(result.get("start"), result.get("end"))
        if host.finish(status, msg):
            say(host.name, f"{PREFIX[status]} ({task}): {msg}")
        return True
    if kind == "start" and task == "run":
        host.started = t
        return True
    if kind == "ok" and task == "facts":
        host.facts = result.get("facts") or {}
        host.tz_offset = result.get("tz_offset")
        return True
    if kind == "ok" and task == "run":
        host.ended = t
        host.span_from(result.get("start"), result.get("end"))
        return True
    if kind == "ok" and task == "fetch":
        try:
            host.run = unpack_run(fleet.root, host.name, fetched / f"{host.name}.tar")
        except (OSError, ValueError) as e:
            if host.finish("run-failed", f"its results could not be unpacked: {e}"):
                say(host.name, f"run failed: its results could not be unpacked: {e}")
            return True
        if host.finish("done"):
            say(host.name, f"done: {host.run}")
        return True
    return False
