"""results/fleet-<id>/: fleet.json and hosts/<name>/<run-id>/ (one ordinary run
directory per host). fleet.json is written atomically at the start (every host
pending) and again as each host finishes, so an interrupted fleet run leaves a readable
file. The report across hosts (bench/report) reads this format:

    {"schema": 1, "id", "inventory", "command": [argv], "started", "ended", "forks",
     "overlapped": whether any two hosts' runs overlapped in time,
     "hosts": [{"name", "status", "reason", "run" (relative to the fleet dir), "started",
                "ended", "facts": {a few Ansible facts}}]}

status: pending | done | unreachable | unusable | prepare-failed | run-failed | interrupted
"""

from __future__ import annotations

import json
import os
import shutil
import tarfile
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

SCHEMA = 1
FINAL = ("done", "unreachable", "unusable", "prepare-failed", "run-failed", "interrupted")


def iso(t: float | None) -> str | None:
    return None if t is None else datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds")


@dataclass
class HostRecord:
    name: str
    status: str = "pending"
    reason: str | None = None
    run: str | None = None
    started: float | None = None  # the run task's start and end on the controller's clock
    ended: float | None = None
    facts: dict = field(default_factory=dict)
    tz_offset: str | None = None  # the host's "+0100", to read its command timestamps

    def span_from(self, start: str | None, end: str | None) -> None:
        """The run's span from the host's own clock (the command module's start and end,
        local time): the controller hears of a task's start and end late, and out of
        order, so its own clock would show one host's run overlapping the next's."""
        try:
            off = datetime.strptime(self.tz_offset or "+0000", "%z").tzinfo
            s, e = (datetime.strptime(x, "%Y-%m-%d %H:%M:%S.%f") for x in (start, end))
        except (TypeError, ValueError):
            return
        self.started, self.ended = (
            s.replace(tzinfo=off).timestamp(),
            e.replace(tzinfo=off).timestamp(),
        )

    def finish(self, status: str, reason: str | None = None) -> bool:
        """Set the final status once; False when the host had one already."""
        if self.status in FINAL:
            return False
        self.status, self.reason = status, reason
        return True

    def to_json(self) -> dict:
        d = asdict(self)
        del d["tz_offset"]
        d["started"], d["ended"] = iso(self.started), iso(self.ended)
        return d


def overlapped(hosts: list[HostRecord], now: float) -> bool:
    """Whether any two hosts' runs were measuring at the same time."""
    spans = sorted((h.started, h.ended or now) for h in hosts if h.started is not None)
    return any(b[0] < a[1] for a, b in zip(spans, spans[1:], strict=False))


@dataclass
class Fleet:
    root: Path  # results/fleet-<id>
    id: str
    inventory: str
    command: list[str]
    forks: int
    hosts: list[HostRecord]
    started: float
    ended: float | None = None

    def host(self, name: str) -> HostRecord | None:
        return next((h for h in self.hosts if h.name == name), None)

    def to_json(self, now: float) -> dict:
        return {
            "schema": SCHEMA,
            "id": self.id,
            "inventory": self.inventory,
            "command": self.command,
            "started": iso(self.started),
            "ended": iso(self.ended),
            "forks": self.forks,
            "overlapped": overlapped(self.hosts, self.ended or now),
            "hosts": [h.to_json() for h in self.hosts],
        }

    def save(self, now: float) -> None:
        """Write fleet.json atomically (a reader sees the old file or the new one)."""
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / ".fleet.json.tmp"
        with open(tmp, "w") as f:
            json.dump(self.to_json(now), f, indent=2)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.root / "fleet.json")


def unpack_run(fleet_root: Path, name: str, tar: Path) -> str:
    """Unpack a host's fetched results (its run directory) into hosts/<name>/; the run
    directory's path relative to the fleet directory."""
    dest = fleet_root / "hosts" / name
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    with tarfile.open(tar) as t:
        try:
            t.extractall(dest, filter="data")
        except TypeError:  # Python 3.11 before 3.11.4: no filter argument
            t.extractall(dest)  # noqa: S202 - our own host's tar of its run directory
    tar.unlink()
    runs = sorted(p for p in dest.iterdir() if (p / "manifest.json").is_file())
    if not runs:
        raise ValueError("the host's results hold no run directory")
    return str(runs[-1].relative_to(fleet_root))
