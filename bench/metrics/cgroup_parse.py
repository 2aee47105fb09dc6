"""cgroup files as numbers, pure: v2's and v1's files -> one set of logical metric names,
/proc/PID/cgroup -> each controller's path, and the difference of two readings. Tested
on files recorded from real kernels (tests/data/cgroup/).

Units: milliseconds for times, MiB (2**20 bytes) for memory and io bytes, plain counts
for the rest.
"""

from __future__ import annotations

import contextlib
import os

MIB = 2**20

LOGICAL = (
    "cpu_user_ms",
    "cpu_system_ms",
    "cpu_total_ms",
    "throttled_ms",
    "nr_throttled",
    "mem_peak_mib",
    "mem_current_mib",
    "io_read_mib",
    "io_write_mib",
    "io_read_ops",
    "io_write_ops",
    "pids_peak",
    "pids_current",
)
# Gauges: a delta keeps the value after, it does not subtract.
GAUGES = frozenset({"mem_peak_mib", "mem_current_mib", "pids_peak", "pids_current"})


def parse_proc_cgroup(text: str) -> dict[str, str]:
    """/proc/PID/cgroup -> {controller: path}; the v2 entry ("0::/x") has key "".

    Co-mounted v1 controllers ("2:cpu,cpuacct:/x") give one key each; named
    hierarchies keep their name ("name=systemd").
    """
    out: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.strip().split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        for c in controllers.split(",") if controllers else [""]:
            out[c] = path
    return out


def _keyed(text: str) -> dict[str, int]:
    """'key value' lines -> {key: int}; lines that do not parse are skipped."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2:
            with contextlib.suppress(ValueError):
                out[parts[0]] = int(parts[1])
    return out


def single_number(text: str | None) -> int | None:
    """A one-number file's text -> the number; None for "max", empty or garbage."""
    if text is None:
        return None
    try:
        return int(text.strip())
    except ValueError:  # "max", empty, garbage
        return None


def parse_v2(files: dict[str, str]) -> dict[str, float]:
    """cgroup v2 file contents (keys: file names) -> the logical metrics present."""
    out: dict[str, float] = {}
    if "cpu.stat" in files:
        st = _keyed(files["cpu.stat"])
        for src, dst in (
            ("usage_usec", "cpu_total_ms"),
            ("user_usec", "cpu_user_ms"),
            ("system_usec", "cpu_system_ms"),
            ("throttled_usec", "throttled_ms"),
        ):
            if src in st:
                out[dst] = st[src] / 1000
        if "nr_throttled" in st:
            out["nr_throttled"] = float(st["nr_throttled"])
    if "io.stat" in files:
        sums = {"rbytes": 0, "wbytes": 0, "rios": 0, "wios": 0}
        for line in files["io.stat"].splitlines():
            for field in line.split()[1:]:
                key, _, value = field.partition("=")
                if key in sums and value.isdigit():
                    sums[key] += int(value)
        out["io_read_mib"] = sums["rbytes"] / MIB
        out["io_write_mib"] = sums["wbytes"] / MIB
        out["io_read_ops"] = float(sums["rios"])
        out["io_write_ops"] = float(sums["wios"])
    out.update(_gauges(files, "memory.peak", "memory.current", "pids.peak", "pids.current"))
    return out


def _gauges(
    files: dict[str, str], mem_peak: str, mem_current: str, pids_peak: str, pids_current: str
) -> dict[str, float]:
    """The gauges' one-number files, as the cgroup version names them -> the gauges
    present (memory in MiB, pids as counts)."""
    out: dict[str, float] = {}
    for name, dst, scale in (
        (mem_peak, "mem_peak_mib", MIB),
        (mem_current, "mem_current_mib", MIB),
        (pids_peak, "pids_peak", 1),
        (pids_current, "pids_current", 1),
    ):
        value = single_number(files.get(name))
        if value is not None:
            out[dst] = value / scale
    return out


def _blkio_sum(text: str) -> tuple[int, int]:
    """v1 blkio '8:0 Read 4096' lines -> (read, write) summed over devices."""
    read = write = 0
    for line in text.splitlines():
        parts = line.split()
        if len(parts) != 3 or not parts[2].isdigit():
            continue  # the trailing "Total N" line has two fields
        if parts[1] == "Read":
            read += int(parts[2])
        elif parts[1] == "Write":
            write += int(parts[2])
    return read, write


def parse_v1(files: dict[str, str], clk_tck: int | None = None) -> dict[str, float]:
    """cgroup v1 file contents (keys: "controller/file") -> the logical metrics present.

    cpuacct.stat is in USER_HZ ticks (`clk_tck`, default os.sysconf("SC_CLK_TCK")),
    cpuacct.usage and cpu.stat's throttled_time in ns.
    """
    out: dict[str, float] = {}
    if "cpuacct/cpuacct.stat" in files:
        tck = clk_tck or os.sysconf("SC_CLK_TCK")
        st = _keyed(files["cpuacct/cpuacct.stat"])
        for src, dst in (("user", "cpu_user_ms"), ("system", "cpu_system_ms")):
            if src in st:
                out[dst] = st[src] * 1000 / tck
    usage = single_number(files.get("cpuacct/cpuacct.usage"))
    if usage is not None:
        out["cpu_total_ms"] = usage / 1e6
    if "cpu/cpu.stat" in files:
        st = _keyed(files["cpu/cpu.stat"])
        if "throttled_time" in st:
            out["throttled_ms"] = st["throttled_time"] / 1e6
        if "nr_throttled" in st:
            out["nr_throttled"] = float(st["nr_throttled"])
    out.update(
        _gauges(
            files,
            "memory/memory.max_usage_in_bytes",
            "memory/memory.usage_in_bytes",
            "pids/pids.peak",
            "pids/pids.current",
        )
    )
    for name, prefix, scale in (
        ("blkio/blkio.throttle.io_service_bytes_recursive", "mib", MIB),
        ("blkio/blkio.throttle.io_serviced_recursive", "ops", 1),
    ):
        if name in files:
            read, write = _blkio_sum(files[name])
            out[f"io_read_{prefix}"] = read / scale
            out[f"io_write_{prefix}"] = write / scale
    return out


def delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """after - before for counters present in both; gauges (peaks, currents) as after."""
    out: dict[str, float] = {}
    for key, value in after.items():
        if key in GAUGES:
            out[key] = value
        elif key in before:
            out[key] = value - before[key]
    return out
