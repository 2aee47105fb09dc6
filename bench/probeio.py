"""The probes' output contract: a `ready` line, then one JSON object per measurement.

    {"probe": "syscall", "op": "null", "iterations": 1234567, "elapsed_ns": 210000000,
     "metrics": {"ns_per_op": 167.2}, "units": {"ns_per_op": "ns"}, "checksum": 0}

A line {"probe": .., "op": .., "error": "why"} reports an op that could not be measured.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

READY = "ready"
REQUIRED = ("probe", "op", "iterations", "elapsed_ns", "metrics", "units")


def is_ready(line: str) -> bool:
    return line.strip() == READY


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
    return all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and k in units
        for k, v in metrics.items()
    )
