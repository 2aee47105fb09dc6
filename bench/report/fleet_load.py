"""Reading a fleet directory (`isobench fleet run`'s `results/fleet-<id>/`): its
`fleet.json`, checked once into types, and each host's ordinary run directory.

The format (written by bench/fleet, schema 1)::

    fleet.json  {"schema": 1, "id", "inventory", "command": [argv], "started", "ended",
                 "forks", "overlapped", "hosts": [{"name", "status", "reason", "run",
                 "started", "ended", "facts": {ansible_* facts}}]}
    hosts/<name>/<run-id>/   one run directory per host that ran (`run` points to it,
                             relative to the fleet directory)

A host whose status is "done" but whose run directory cannot be read (missing, torn
manifest, no samples) is shown as unusable with the reason, and the others go on; a
fleet.json that cannot be read, or a fleet without one usable host, is one line for the
user (FleetError, a StoreError: exit status 2)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bench import store

FLEET = "fleet.json"
SCHEMA = 1
DONE = "done"
Status = Literal["done", "unreachable", "prepare-failed", "run-failed", "interrupted", "unusable"]


class FleetError(store.StoreError):
    """A fleet directory that cannot be reported on; the message is one line."""


class HostRecord(BaseModel):
    """One host as fleet.json lists it."""

    model_config = ConfigDict(extra="allow", strict=True)

    name: str
    status: Status
    reason: str | None = None
    run: str | None = None
    started: str | None = None
    ended: str | None = None
    facts: dict[str, Any] = Field(default_factory=dict)


class FleetRecord(BaseModel):
    """fleet.json, typed; unknown keys are kept (a newer writer's additions)."""

    model_config = ConfigDict(extra="allow", strict=True)

    schema_: int = Field(alias="schema")
    id: str
    inventory: str = ""
    command: list[str] = Field(default_factory=list)
    started: str | None = None
    ended: str | None = None
    forks: int | None = None
    overlapped: bool = False
    hosts: list[HostRecord]


@dataclass
class Host:
    """A host of the fleet: what fleet.json says, and for a usable one its run."""

    name: str
    status: str
    reason: str = ""
    started: str | None = None
    ended: str | None = None
    facts: dict[str, Any] = field(default_factory=dict)
    run: str | None = None  # as fleet.json names it, relative to the fleet directory
    run_dir: Path | None = None
    manifest: dict[str, Any] | None = None
    df: Any = None

    @property
    def usable(self) -> bool:
        return self.status == DONE and self.manifest is not None


@dataclass
class Fleet:
    path: Path
    record: FleetRecord
    hosts: list[Host]

    @property
    def done(self) -> list[Host]:
        return [h for h in self.hosts if h.usable]

    @property
    def failed(self) -> list[Host]:
        return [h for h in self.hosts if not h.usable]


def is_fleet(path: Path | str) -> bool:
    """Whether `path` is a fleet directory (it holds fleet.json): what the report
    commands dispatch on; an ordinary run directory holds manifest.json instead."""
    return (Path(path) / FLEET).is_file()


def read_record(path: Path) -> FleetRecord:
    """fleet.json checked into types; FleetError (one line) when it cannot be used."""
    where = Path(path) / FLEET
    try:
        raw = json.loads(where.read_text(encoding="utf-8"))
    except OSError as e:
        raise FleetError(f"{where}: cannot read ({e.strerror})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise FleetError(f"{where}: not valid JSON ({e})") from None
    if not isinstance(raw, dict) or "schema" not in raw:
        raise FleetError(f"{where}: not an isobench fleet manifest (no schema)")
    if type(raw["schema"]) is int and raw["schema"] > SCHEMA:
        raise FleetError(
            f"{where}: written by a newer isobench (fleet schema {raw['schema']}, this one "
            f"reads up to {SCHEMA}): upgrade isobench to read it"
        )
    try:
        record = FleetRecord.model_validate(raw)
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        raise FleetError(f"{where}: {loc}: {err['msg']}") from None
    if record.schema_ != SCHEMA:
        raise FleetError(f"{where}: schema {record.schema_!r} is not valid")
    names = [h.name for h in record.hosts]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise FleetError(f"{where}: host {dup[0]!r} is listed twice")
    return record


def load(path: Path | str) -> Fleet:
    """The fleet in `path` with each done host's manifest and samples loaded; FleetError
    when fleet.json cannot be used or no host has a usable run."""
    path = Path(path)
    if not path.is_dir():
        raise FleetError(f"{path}: no such directory")
    record = read_record(path)
    hosts = [_host(path, h) for h in record.hosts]
    fleet = Fleet(path=path, record=record, hosts=hosts)
    if not fleet.done:
        why = "; ".join(_failed(h) for h in hosts)
        raise FleetError(f"{path}: no host completed a usable run ({why or 'no hosts listed'})")
    return fleet


def _host(fleet_dir: Path, h: HostRecord) -> Host:
    host = Host(
        name=h.name,
        status=h.status,
        reason=h.reason or "",
        started=h.started,
        ended=h.ended,
        facts=dict(h.facts),
        run=h.run,
    )
    if h.status != DONE:
        return host
    try:
        host.run_dir = _inside(fleet_dir, h.run)
        host.manifest = store.read_manifest(host.run_dir)
        host.df = store.load_samples(host.run_dir)
        if not len(host.df):
            raise store.StoreError(f"{h.run}: no samples recorded")
    except store.StoreError as e:
        host.status, host.reason = "unusable", f"run directory: {e}"
        host.manifest = host.df = None
    return host


def _failed(h: Host) -> str:
    return f"{h.name}: {h.status}" + (f" ({h.reason})" if h.reason else "")


def _inside(fleet_dir: Path, run: str | None) -> Path:
    """The host's run directory, which must lie inside the fleet directory."""
    if not run:
        raise store.StoreError("fleet.json names no run directory for this host")
    where = (fleet_dir / run).resolve()
    if Path(run).is_absolute() or not where.is_relative_to(fleet_dir.resolve()):
        raise store.StoreError(f"{run}: outside the fleet directory")
    return fleet_dir / run
