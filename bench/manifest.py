"""The run manifest: its typed fields, its schema version and its migrations.

The rest of isobench keeps the manifest as a plain dict (``manifest["environments"][label]``);
this module is the gate that dict passes through on its way from and to disk:
``Manifest.load(raw).to_dict()`` when reading (version check, migrations, validation) and
``Manifest.check(dict)`` before writing. The core fields are typed; any other key is kept
as it is (``extra="allow"``). Types are strict: a string where a number belongs is an
error, never converted. The format history is in bench/store.py's docstring.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from bench.targets import LOCAL

SCHEMA_VERSION = 2


class ManifestError(ValueError):
    """A manifest that cannot be read or written; the message is one line."""


class EnvironmentEntry(BaseModel):
    """One environment of the run, as the runner described it (plus what its kind adds)."""

    model_config = ConfigDict(extra="allow", strict=True)

    kind: str
    spec: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)
    available: bool = True
    reason: str = ""
    versions: dict[str, str] = Field(default_factory=dict)
    emulated: bool = False
    target: str = LOCAL  # the key of `targets` whose machine runs it (version 2)


class Manifest(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    schema_version: int
    run_id: str
    status: str | None = None
    created: float | None = None
    finished: float | None = None
    wall_seconds: float | None = None
    measured_seconds: float | None = None
    rounds_done: int | None = None
    stop_reason: str | None = None
    pid: int | None = None
    host: dict[str, Any] = Field(default_factory=dict)  # the local machine (= targets["local"])
    targets: dict[str, dict[str, Any]] = Field(default_factory=dict)  # name -> host facts
    matrix: dict[str, Any] = Field(default_factory=dict)
    environments: dict[str, EnvironmentEntry] = Field(default_factory=dict)
    bundle: dict[str, Any] = Field(default_factory=dict)
    catalog: dict[str, dict[str, Any]] = Field(default_factory=dict)
    harness: dict[str, Any] = Field(default_factory=dict)
    noise: dict[str, Any] = Field(default_factory=dict)
    warnings: list[str] = Field(default_factory=list)
    unreached: dict[str, float] = Field(default_factory=dict)  # cell -> CI half-width (inf: none)

    @model_validator(mode="after")
    def _current_and_consistent(self) -> Manifest:
        if self.schema_version != SCHEMA_VERSION:
            raise ValueError(f"schema_version is {self.schema_version}, not {SCHEMA_VERSION}")
        for label, env in self.environments.items():
            if "target" in env.model_fields_set and env.target not in self.targets:
                raise ValueError(
                    f"environment {label!r} runs on target {env.target!r}, "
                    f"which is not in targets {sorted(self.targets)}"
                )
        return self

    @classmethod
    def load(cls, raw: Any, where: str = "manifest") -> Manifest:
        """A manifest read from disk (`raw` is the parsed JSON), migrated to this version.
        `where` names the file in the one-line ManifestError."""
        if not isinstance(raw, dict) or "schema_version" not in raw:
            raise ManifestError(f"{where}: not an isobench manifest (no schema_version)")
        return cls._validate(migrate(raw, where), where)

    @classmethod
    def check(cls, manifest: dict[str, Any], where: str = "manifest") -> Manifest:
        """Validate a manifest about to be written: it must already be current."""
        return cls._validate(manifest, f"refusing to write {where}")

    @classmethod
    def _validate(cls, manifest: dict[str, Any], where: str) -> Manifest:
        try:
            return cls.model_validate(manifest)
        except ValidationError as e:
            raise ManifestError(f"{where}: {_first_error(e)}") from None

    def to_dict(self) -> dict[str, Any]:
        """The plain dict the rest of isobench reads: only the keys the file had (no
        defaults added), unknown keys included."""
        return self.model_dump(exclude_unset=True)


def _first_error(e: ValidationError) -> str:
    err = e.errors()[0]
    where = ".".join(str(p) for p in err["loc"])
    text = f"{where}: {err['msg']}" if where else err["msg"]
    if err["type"] != "value_error":
        text += f" (got {err['input']!r:.60})"
    more = e.error_count() - 1
    return text + (f" (and {more} more)" if more else "")


# -- migrations ----------------------------------------------------------------------------
def _v1_to_v2(m: dict[str, Any]) -> None:
    """Host facts per target: a version-1 run ran everything on the local machine."""
    m.setdefault("targets", {LOCAL: m.get("host") or {}})
    for env in (m.get("environments") or {}).values():
        if isinstance(env, dict):
            env.setdefault("target", LOCAL)


# version N -> function that turns a version-N manifest into version N+1 (in place).
MIGRATIONS: dict[int, Callable[[dict[str, Any]], None]] = {1: _v1_to_v2}


def migrate(manifest: dict[str, Any], where: str = "manifest") -> dict[str, Any]:
    """Bring a manifest of any known version up to SCHEMA_VERSION (in place); a version
    newer than this code is refused."""
    version = manifest["schema_version"]
    if type(version) is not int or version < 1:
        raise ManifestError(f"{where}: schema_version {version!r} is not valid")
    if version > SCHEMA_VERSION:
        raise ManifestError(
            f"{where}: written by a newer isobench (schema {version}, this one reads up to "
            f"{SCHEMA_VERSION}): upgrade isobench to read it"
        )
    while version < SCHEMA_VERSION:
        MIGRATIONS[version](manifest)
        version += 1
        manifest["schema_version"] = version
    return manifest
