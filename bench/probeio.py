"""The probes' output contract: a `ready` line, then one JSON object per measurement.

    {"probe": "syscall", "op": "null", "iterations": 1234567, "elapsed_ns": 210000000,
     "metrics": {"ns_per_op": 167.2}, "units": {"ns_per_op": "ns"}, "checksum": 0}

A line {"probe": .., "op": .., "error": "why"} reports an op that could not be measured.

Optional members (workloads/probe.h has the full contract):

- ``direct`` (bool, io reads): the file was opened with O_DIRECT; false when the
  filesystem refused the flag and a buffered read after fadvise(DONTNEED) was measured.
- ``page_cache`` (bool, io reads ``seq_read`` and ``rand_read_4k``): the data came at
  page-cache speed (a read of the file 0.5 to 1.5 times as fast as a warm buffered read
  of it, in the same place), so the figure is the page cache's, not the device's:
  O_DIRECT was not honoured (gVisor) or there is no device (tmpfs).
- ``note`` (str): a sentence for the reader; it contains PAGE_CACHE_NOTE exactly when
  ``page_cache`` is true.

Windowed cpu lines carry ``elapsed_ns`` = the window and ``iterations`` = the work done
in exactly that window (rounded).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

READY = "ready"
REQUIRED = ("probe", "op", "iterations", "elapsed_ns", "metrics", "units")
FLAGS = ("direct", "page_cache")  # optional members, booleans when present
PAGE_CACHE_NOTE = "page cache"  # in the note of every line with "page_cache": true


def is_ready(line: str) -> bool:
    return line.strip() == READY


def page_cache(record: dict[str, Any]) -> bool:
    """True when an io read line says its data came at page-cache speed."""
    return record.get("page_cache") is True


@dataclass
class ProbeOutput:
    records: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # ops the probe could not measure
    garbage: list[str] = field(default_factory=list)  # lines that are not the contract


def parse_lines(lines: list[str]) -> ProbeOutput:
    """Pure: probe stdout lines after `ready` -> validated records, errors, stray lines."""
    out = ProbeOutput()
    for line in lines:
        text = line.strip()
        if not text:
            continue
        try:
            obj = json.loads(text)
        except json.JSONDecodeError:
            out.garbage.append(text[:200])
            continue
        if not isinstance(obj, dict):
            out.garbage.append(text[:200])
        elif "error" in obj:
            out.errors.append(f"{obj.get('probe', '?')}/{obj.get('op', '?')}: {obj['error']}")
        elif _valid(obj):
            out.records.append(obj)
        else:
            out.garbage.append(text[:200])
    return out


def _valid(obj: dict[str, Any]) -> bool:
    if any(k not in obj for k in REQUIRED):
        return False
    metrics, units = obj["metrics"], obj["units"]
    if not isinstance(metrics, dict) or not isinstance(units, dict) or not metrics:
        return False
    if any(not isinstance(obj.get(k, False), bool) for k in FLAGS):
        return False
    if not isinstance(obj.get("note", ""), str):
        return False
    return all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and k in units
        for k, v in metrics.items()
    )
