"""Which runs form a series: the run directories given (or every run under a results
directory), loaded through the store (old schemas migrated), ordered by when they began,
and kept when they ran on the series' host.

The host's fingerprint is its CPU model, CPU count and memory, not its kernel: a kernel
upgrade is one of the changes a history is there to show. The series' host is the
fingerprint of the newest run; runs of other hosts are listed with the reason and left
out. A run that never finished (no `finished` in its manifest) or whose samples file has
a torn line (a crash mid-write) stays in the series, marked as such.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import store

FINGERPRINT = ("cpu_model", "cpu_count", "memory_gib")


class HistoryError(store.StoreError):
    """Runs that do not make a history; the message is one line for the user."""


@dataclass
class Run:
    path: Path
    manifest: dict[str, Any]
    torn: int = 0  # samples lines that did not parse
    flags: list[str] = field(default_factory=list)  # "unfinished", "torn samples"

    @property
    def run_id(self) -> str:
        return self.manifest.get("run_id") or self.path.name

    @property
    def created(self) -> float:
        return float(self.manifest.get("created") or 0.0)

    def fingerprint(self) -> tuple:
        host = self.manifest.get("host") or {}
        return tuple(host.get(k) for k in FINGERPRINT)


def run_dirs(paths: list[Path]) -> list[Path]:
    """The run directories: each path that is a run, else the runs directly under it."""
    out: list[Path] = []
    for p in paths:
        p = Path(p)
        if (p / store.MANIFEST).is_file():
            out.append(p)
        elif p.is_dir():
            out += sorted(d for d in p.iterdir() if (d / store.MANIFEST).is_file())
        else:
            raise HistoryError(f"{p}: no such directory")
    return list(dict.fromkeys(out))


def torn_lines(run_dir: Path) -> int:
    """How many lines of samples.jsonl are not a JSON record (a crash mid-write)."""
    path = Path(run_dir) / store.SAMPLES
    if not path.is_file():
        return 0
    bad = 0
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                bad += 1
                continue
            bad += not isinstance(rec, dict)
    return bad


def load(paths: list[Path]) -> tuple[list[Run], list[dict[str, str]]]:
    """The series' runs, oldest first, and the runs left out ({run, reason}). Fewer than
    two runs in the series is a HistoryError."""
    runs, left_out = [], []
    for d in run_dirs(paths):
        try:
            m = store.read_manifest(d)
        except store.StoreError as e:
            left_out.append({"run": str(d), "reason": str(e)})
            continue
        r = Run(d, m, torn=torn_lines(d))
        if not m.get("finished") or m.get("status") not in (None, "complete"):
            r.flags.append(f"unfinished ({m.get('status') or 'no end recorded'})")
        if r.torn:
            r.flags.append(f"torn samples ({r.torn} line(s) unreadable)")
        runs.append(r)
    runs.sort(key=lambda r: (r.created, r.run_id))
    if runs:
        host = runs[-1].fingerprint()
        keep = []
        for r in runs:
            if r.fingerprint() == host:
                keep.append(r)
                continue
            why = ", ".join(
                f"{k} {a!r} (series: {b!r})"
                for k, a, b in zip(FINGERPRINT, r.fingerprint(), host, strict=True)
                if a != b
            )
            left_out.append({"run": r.run_id, "reason": f"another host: {why}"})
        runs = keep
    if len(runs) < 2:
        given = " ".join(str(p) for p in paths)
        raise HistoryError(
            f"{given}: {len(runs)} run(s) of one host: a history needs at least two"
            + (f" ({len(left_out)} left out: {left_out[0]['reason']})" if left_out else "")
        )
    return runs, left_out
