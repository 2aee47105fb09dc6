"""A run on disk: RUN_DIR/manifest.json and RUN_DIR/samples.jsonl.

Format history (SCHEMA_VERSION):
  1  first version: manifest {schema_version, run_id, status, created, finished, host,
     matrix, environments, bundle, noise, warnings}; one flat sample record per line
     {run_id, round, cell, env, env_kind, spec, options, emulated, workload, op, metric,
     value, unit, source, launch, t, status, reason, note, args}. round 0 = warm-up (not
     counted); note carries what the probe said of a figure (e.g. O_DIRECT refused);
     args are the probe's arguments (emulated guests run smaller sizes).
  2  host facts per target: manifest {targets: {name: host facts}} and every
     environments[label] names its {target}; a version-1 manifest migrates to
     targets = {"local": host}, target = "local" (host stays: the local machine). Sample
     records may carry exit_code (int or null) and stderr_tail (string, failed launches
     only); a version-1 run's records have neither (None when loaded).

The manifest's fields, checks and migrations are in bench/manifest.py; here they are
read and written.

Samples are appended and fsynced as they come, so a crash loses at most the line being
written; the loader tolerates a torn last line. Files newer than this code are refused.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from bench.manifest import MIGRATIONS as MIGRATIONS  # re-exported: callers import them here
from bench.manifest import SCHEMA_VERSION as SCHEMA_VERSION
from bench.manifest import Manifest, ManifestError
from bench.manifest import migrate as migrate

MANIFEST = "manifest.json"
SAMPLES = "samples.jsonl"
COLUMNS = (
    "run_id",
    "round",
    "cell",
    "env",
    "env_kind",
    "spec",
    "options",
    "emulated",
    "workload",
    "op",
    "metric",
    "value",
    "unit",
    "source",
    "launch",
    "t",
    "status",
    "reason",
    "note",
    "args",
    "exit_code",
    "stderr_tail",
    # a burst's (bench/families/bursts.py): its block, its held set ("" the main one),
    # its length, when it began in its held set and the CPU time the probe ran in it
    # (windowed ops: the cpu probe)
    "block",
    "set",
    "ms",
    "at_ms",
    "cpu_ns",
)


class StoreError(Exception):
    """A results directory that cannot be used; the message is for the user."""


class StoreWriteError(OSError):
    """Writing results failed (a full disk): nothing on disk was damaged."""


def json_safe(obj: Any) -> Any:
    """NaN/inf -> None (JSON has neither), numpy scalars -> Python, through dicts, lists
    and tuples. Used wherever isobench prints or embeds JSON that other tools parse."""
    if isinstance(obj, float):  # numpy's float64 too
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        if obj and all(type(x) is int or x is None for x in obj):  # long code lists: fast path
            return obj
        return [json_safe(x) for x in obj]
    if hasattr(obj, "item") and not isinstance(obj, str):  # numpy scalar
        return json_safe(obj.item())
    return obj


def write_manifest(run_dir: Path, manifest: dict[str, Any]) -> None:
    """Atomically replace the manifest (write a temp file, fsync, rename). A manifest the
    model refuses (a wrong type: a bug) raises ManifestError and nothing is written."""
    data = Manifest.check(manifest, str(Path(run_dir) / MANIFEST)).to_dict()
    tmp = run_dir / (MANIFEST + ".tmp")
    try:
        with open(tmp, "w") as f:
            json.dump(data, f, indent=2, sort_keys=True, default=str)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, run_dir / MANIFEST)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise StoreWriteError(e.errno, f"could not write {run_dir / MANIFEST}: {e.strerror}") from e


def read_manifest(run_dir: Path) -> dict[str, Any]:
    path = Path(run_dir) / MANIFEST
    if not Path(run_dir).is_dir():
        raise StoreError(f"{run_dir}: no such directory")
    if not path.is_file():
        raise StoreError(f"{run_dir}: not an isobench run (no {MANIFEST})")
    try:
        raw = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise StoreError(f"{path}: not valid JSON ({e})") from None
    try:
        return Manifest.load(raw, str(path)).to_dict()
    except ManifestError as e:
        raise StoreError(str(e)) from None


class SampleWriter:
    """Appends sample records to samples.jsonl, one write and one fsync per batch.

    A failed write (disk full) is undone to the last complete line and its records are
    held in memory; the next append writes them first."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / SAMPLES
        self.pending: list[dict[str, Any]] = []
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._repair_torn_tail()

    def _repair_torn_tail(self) -> None:
        """After a crash the last line may be torn: end it so new records start clean."""
        size = os.fstat(self._fd).st_size
        if size:
            with open(self.path, "rb") as f:
                f.seek(size - 1)
                if f.read(1) != b"\n":
                    os.write(self._fd, b"\n")

    def append(self, records: Iterable[dict[str, Any]] = ()) -> None:
        self.pending.extend(records)
        data = "".join(json.dumps(r, sort_keys=True, default=str) + "\n" for r in self.pending)
        if not data:
            return
        start = os.fstat(self._fd).st_size
        view = memoryview(data.encode())
        try:
            while view:
                view = view[os.write(self._fd, view) :]
            os.fsync(self._fd)
        except OSError as e:
            os.ftruncate(self._fd, start)  # no torn line left behind
            raise StoreWriteError(
                e.errno,
                f"could not write to {self.path}: {e.strerror}; "
                f"{len(self.pending)} sample(s) held in memory",
            ) from e
        self.pending.clear()

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def read_records(run_dir: Path) -> list[dict[str, Any]]:
    """Every intact record; a torn or corrupt line (a crash mid-write) is skipped."""
    path = Path(run_dir) / SAMPLES
    if not path.is_file():
        return []
    out = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(rec, dict):
                out.append(rec)
    return out


def load_samples(run_dir: Path):
    """The run's samples as a pandas DataFrame with the COLUMNS (warm-ups included:
    filter round >= 1 for analysis). A column no record has is all None (exit_code and
    stderr_tail in a version-1 run)."""
    import pandas as pd

    read_manifest(run_dir)
    df = pd.DataFrame.from_records(read_records(run_dir))
    for col in COLUMNS:
        if col not in df.columns:
            df[col] = None
    if len(df):
        df["value"] = pd.to_numeric(df["value"], errors="coerce")
        df["options"] = df["options"].map(lambda o: json.dumps(o, sort_keys=True) if o else "{}")
    return df[list(COLUMNS)]
