"""Numbers and labels in words a reader takes in at a glance: pure functions, no data model.

Figures keep 3 significant digits (4 for a whole number below 10,000); larger ones take
an SI prefix as hyperfine prints them (149,651,069 -> 150M, 116,000 -> 116k). Times are
put in one readable unit first (ns, µs, ms, s). The report, its templates and the CLI's
summary all format through here, so a figure reads the same everywhere.
"""

from __future__ import annotations

import math

PHASES = ("ready_ms", "exit_ms", "cleaned_ms", "boot_ms")
# What the probes call an op, in words a reader recognises (the rest are shown as is).
OP_NAMES = {
    "null": "getppid()",
    "read": "1-byte read()",
    "write": "1-byte write()",
    "clock_gettime": "clock_gettime() (vDSO)",
    "open_close": "open()+close()",
    "stat": "stat()",
    "fstat": "fstat()",
    "page_fault": "page fault",
    "fork": "fork()+wait()",
    "fork_exec": "fork()+exec()",
    "pipe_pingpong": "pipe round trip",
}
TIME_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0}
SI_PREFIXES = ("", "k", "M", "G", "T", "P", "E")
PLAIN_BELOW = 10_000  # whole numbers below this are written out (4 significant digits)


def fmt_num(x: float | None, digits: int = 3) -> str:
    """`digits` significant digits; from PLAIN_BELOW up an SI prefix (12.3k, 150M, 2.40G);
    a whole number of 4 digits as it is (1234); no exponent for usual magnitudes."""
    if x is None or not math.isfinite(x):
        return "–"
    if x == 0:
        return "0"
    ax = abs(x)
    if round(ax) >= PLAIN_BELOW:
        return fmt_si(x, digits)
    if ax >= 10**digits:
        return f"{x:.0f}"
    if ax < 1e-3:
        return f"{x:.{digits}g}"
    return _sig(x, digits)


def fmt_si(x: float, digits: int = 3) -> str:
    """`x` with `digits` significant digits and an SI prefix (k, M, G, ...): 116k, 2.40G."""
    if not math.isfinite(x) or x == 0:
        return fmt_num(x, digits)
    power = min(max(0, math.floor(math.log10(abs(x)) / 3)), len(SI_PREFIXES) - 1)
    text = _sig(x / 10 ** (3 * power), digits)
    if abs(float(text)) >= 1000 and power < len(SI_PREFIXES) - 1:  # 999.7k rounds to 1.00M
        power += 1
        text = _sig(x / 10 ** (3 * power), digits)
    return text + SI_PREFIXES[power]


def _sig(x: float, digits: int) -> str:
    """`x` rounded to `digits` significant digits, trailing zeros kept (2.40), no exponent."""
    decimals = max(0, digits - 1 - math.floor(math.log10(abs(x))))
    text = f"{x:.{decimals}f}"
    if decimals and len(text.lstrip("-").replace(".", "").lstrip("0")) > digits:
        text = f"{x:.{decimals - 1}f}"  # 9.996 rounded up to 10.00: one digit too many
    return text


def time_scale(values: list[float], unit: str) -> tuple[float, str]:
    """(factor, unit) that puts time figures in a readable unit (ns -> µs -> ms -> s)."""
    if unit not in TIME_UNITS:
        return 1.0, unit
    finite = [abs(v) for v in values if v is not None and math.isfinite(v) and v != 0]
    if not finite:
        return 1.0, "µs" if unit == "us" else unit
    seconds = min(finite) * TIME_UNITS[unit]
    for name, size in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6), ("ns", 1e-9)):
        if seconds >= size or name == "ns":
            return TIME_UNITS[unit] / size, name
    return 1.0, unit  # pragma: no cover


def fmt_quantity(x: float | None, unit: str) -> str:
    f, u = time_scale([x] if x is not None else [], unit)
    return f"{fmt_num(None if x is None else x * f)} {u}"


def fmt_ratio(r: float | None) -> str:
    return "–" if r is None else f"×{fmt_num(r)}"


def fmt_ci(median, lo, hi, unit: str) -> tuple[str, str, str]:
    """(median, "[lo, hi]", unit) in one readable unit."""
    f, u = time_scale([median], unit)
    n = lambda x: fmt_num(None if x is None else x * f)  # noqa: E731
    return n(median), f"[{n(lo)}, {n(hi)}]", u


def with_ci(p: dict, unit: str) -> str:
    """`median unit [low, high]`, all three in one readable unit."""
    med, ci, u = fmt_ci(p["median"], p["ci_low"], p["ci_high"], unit)
    return f"{med} {u} {ci}"


def op_words(workload: str, op: str, metric: str) -> str:
    if op == "phases" or metric in PHASES:
        return f"to {metric.removesuffix('_ms')} (startup)"
    if metric == "ns_per_op":
        return f"per {OP_NAMES.get(op, op)}"
    return f"in {workload} {op} ({metric})"


def short_label(workload: str, op: str, metric: str, keys) -> str:
    """`workload · op`, plus the metric only where one op has several figures."""
    if op == "phases" or metric in PHASES:
        return f"{workload} · {metric.removesuffix('_ms')}"
    several = sum(1 for w, o, _ in keys if (w, o) == (workload, op)) > 1
    name = OP_NAMES.get(op, op).removesuffix(" (vDSO)")
    return f"{workload} · {name}" + (f" {metric}" if several else "")
