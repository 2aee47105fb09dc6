"""Self-checks on the summary: controls that must hold, and figures that cannot be true.

A flagged figure is shown with its flag and never as a finding (no ratio, no test):
- the vDSO control: `clock_gettime` is served without entering the kernel on a normal
  Linux host, so isolation should not slow it; a clear slowdown means the environment
  has no vDSO clock (gVisor), which says something about the environment but is not an
  overhead of the clock call to compare (a software-emulated guest is slow everywhere:
  the control says nothing there);
- a counter delta below zero: the instance's cgroup was read from two different places
  before and after (a reader's bug), never a negative amount of work;
- zero bytes written where the io probe wrote data: cgroup v1 keeps no I/O counts of a
  child cgroup once it is removed (runc removes a container's at exit, before it can be
  read) and charges buffered writeback to the flusher: an accounting gap, not a figure;
- a read that asked for O_DIRECT but was served from the page cache (the probe says
  so): page-cache speed, not the device's.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bench.metrics.cgroup import Layout

VDSO_CONTROL = ("syscall", "clock_gettime")
VDSO_LIMIT = 1.5  # a slowdown the control may not show: its CI's low end above this
WRITE_COUNTERS = ("io_write_mib", "io_write_ops")
PAGE_CACHE = "page cache"  # the probe's note for a read O_DIRECT did not bypass


def figure_flags(
    row: dict[str, Any],
    values: np.ndarray,
    *,
    layout: str = "",
    notes: set[str] = frozenset(),
    writes_data: bool = False,
) -> list[str]:
    """Sentences for what is wrong with one summary row (empty when nothing is).

    ``values`` are the row's per-round figures, ``layout`` the host's cgroup layout
    ("v1", "hybrid", "v2"), ``notes`` the probe's notes on the row's samples,
    ``writes_data`` the workload's catalog flag (its probe writes data: io)."""
    flags = []
    env, metric = row["env"], row["metric"]
    low = row.get("ratio_ci_low")
    control = (row["workload"], row["op"]) == VDSO_CONTROL and not row.get("emulated")
    if control and low is not None and low > VDSO_LIMIT:
        flags.append(
            f"vDSO control failed: clock_gettime ×{row['ratio']:,.0f} under {env} — this "
            "environment has no vDSO clock (clock_gettime is a real system call there)"
        )
    counter = row["op"] in ("cgroup", "host_side") or writes_data
    if counter and values.size and values.min() < 0:  # (a difference of two readings
        # such as density's MemAvailable drop may be negative: that is noise, not a bug)
        flags.append(
            f"negative {metric} ({values.min():.3g}) under {env}: the counter was read from "
            "different cgroups before and after; not a figure"
        )
    if writes_data and metric in WRITE_COUNTERS and values.size and not values.any():
        why = (
            "cgroup v1 keeps no I/O counts of a container's cgroup once the runtime removes "
            "it at exit (and charges buffered writeback elsewhere)"
            if not Layout(layout or "v2").keeps_removed_child_io  # "" (unknown): as v2
            else "the cgroup accounted no writes"
        )
        flags.append(
            f"{metric} is 0 under {env} although the {row['workload']} probe wrote data: {why}"
        )
    if writes_data and any(PAGE_CACHE in n for n in notes):
        flags.append(
            f"{row['op']} under {env} ran at page-cache speed: O_DIRECT was not honoured, so "
            "this is not the device's figure"
        )
    return flags
