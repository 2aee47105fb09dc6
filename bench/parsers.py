"""Parsers for the output of a user's own workloads (issue 16): pytest-benchmark JSON,
sysbench (cpu, memory, threads), fio --output-format=json, redis-benchmark --csv, wrk.

Each parser is a pure function `(text, argv) -> Parsed`: the command's standard output
(for pytest-benchmark: the --benchmark-json file) and the argv it ran with (sysbench's
test name is in argv, not always in its output). A Parsed holds named figures, each
with its op, metric, value, unit and direction (lower or higher is better) as the
probes' figures in workloads/catalog.toml, plus notes the report should show. Output
that does not parse raises ParseError with a reason a user can act on.

PARSERS is the registry (name -> parser) and METRICS what each parser's figures mean.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from bench.catalog import Metric


class ParseError(ValueError):
    """The output is not what the parser reads; the message says why."""


@dataclass(frozen=True)
class Figure:
    op: str
    metric: str
    value: float
    unit: str
    better: str  # "lower" | "higher"
    round: int | None = None  # the tool's own round (pytest-benchmark stats.data index)


@dataclass(frozen=True)
class Parsed:
    figures: list[Figure]
    notes: list[str] = field(default_factory=list)
    info: dict = field(default_factory=dict)  # the tool's version and similar facts

    def ops(self) -> list[str]:
        return list(dict.fromkeys(f.op for f in self.figures))


def _fig(metrics: dict[str, Metric], op: str, metric: str, value: float, rnd=None) -> Figure:
    m = metrics[metric]
    if not math.isfinite(value):
        raise ParseError(f"{op} {metric}: not a finite number ({value})")
    return Figure(op, metric, float(value), m.unit, m.better, rnd)


# ------------------------------------------------------------------ pytest-benchmark

PYTEST_BENCHMARK = {
    "ns_per_call": Metric(
        "ns",
        "lower",
        "one call of the benchmarked function, per round "
        "(pytest-benchmark's stats.data: round time / iterations)",
    ),
}


def parse_pytest_benchmark(text: str, argv: Sequence[str] = ()) -> Parsed:
    """A --benchmark-json file: every benchmark is an op named by its pytest fullname;
    one figure per round from stats.data (which --benchmark-json always writes; a file
    saved with --benchmark-save without --benchmark-save-data has none: then the median
    of the rounds is the only figure, and a note says so)."""
    if not text.strip():
        raise ParseError(
            "pytest-benchmark: the JSON file is empty (no benchmark ran: no "
            "test used the benchmark fixture, or pytest stopped before)"
        )
    try:
        doc = json.loads(text)
    except ValueError as e:
        raise ParseError(f"pytest-benchmark: not JSON ({e})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("benchmarks"), list):
        raise ParseError("pytest-benchmark: no 'benchmarks' list (not a --benchmark-json file)")
    if not doc["benchmarks"]:
        raise ParseError(
            "pytest-benchmark: the file has no benchmarks (no test used the "
            "benchmark fixture, or every one failed or was skipped)"
        )
    figures, notes = [], []
    for b in doc["benchmarks"]:
        op = b.get("fullname") or b.get("name")
        stats = b.get("stats")
        if not op or not isinstance(stats, dict):
            raise ParseError(f"pytest-benchmark: a benchmark without name or stats: {b!r:.80}")
        data = stats.get("data")
        if isinstance(data, list) and data:
            for i, seconds in enumerate(data):
                figures.append(_fig(PYTEST_BENCHMARK, op, "ns_per_call", seconds * 1e9, i))
        elif "median" in stats:
            figures.append(_fig(PYTEST_BENCHMARK, op, "ns_per_call", stats["median"] * 1e9))
            notes.append(
                f"{op}: no per-round data (stats.data) in the file, only the median "
                f"of {stats.get('rounds', '?')} rounds: write it with "
                "--benchmark-json (or --benchmark-save-data)"
            )
        else:
            raise ParseError(f"pytest-benchmark: {op} has neither stats.data nor a median")
    info = {"version": doc.get("version"), "machine_info": doc.get("machine_info", {})}
    return Parsed(figures, notes, info)


# ------------------------------------------------------------------ sysbench

SYSBENCH = {
    "events_per_s": Metric("events/s", "higher", "cpu: events (prime searches) per second"),
    "ops_per_s": Metric("ops/s", "higher", "memory: block operations per second"),
    "mib_per_s": Metric("MiB/s", "higher", "memory: throughput (1 MiB = 2^20 bytes)"),
    "events": Metric("events", "higher", "events completed in the test's time"),
    "lat_avg_ms": Metric("ms", "lower", "average latency of one event"),
    "lat_p95_ms": Metric("ms", "lower", "95th percentile latency of one event"),
    "lat_max_ms": Metric("ms", "lower", "largest latency of one event"),
}
SYSBENCH_TESTS = ("cpu", "memory", "threads", "mutex", "fileio")
_NUM = r"([0-9]+(?:\.[0-9]+)?)"


def parse_sysbench(text: str, argv: Sequence[str] = ()) -> Parsed:
    """sysbench 1.0 text output of `sysbench cpu|memory|threads ... run`; the test is
    named in argv (or recognised by its own lines for cpu and memory)."""
    test = next((a for a in argv if a in SYSBENCH_TESTS), None)
    if test is None:
        test = "cpu" if "CPU speed:" in text else "memory" if "MiB transferred" in text else None
    if test is None:
        raise ParseError(
            "sysbench: which test ran? name it in the command (sysbench cpu|memory|threads run)"
        )
    if "General statistics:" not in text:
        raise ParseError(
            f"sysbench {test}: no 'General statistics' section "
            f"(the test did not run to the end; last line: {_last(text)})"
        )

    def grab(pattern: str, what: str) -> float:
        m = re.search(pattern, text)
        if not m:
            raise ParseError(f"sysbench {test}: no {what} in the output")
        return float(m.group(1))

    figures = []
    if test == "cpu":
        rate = grab(r"events per second:\s*" + _NUM, "'events per second'")
        figures.append(_fig(SYSBENCH, test, "events_per_s", rate))
    if test == "memory":
        ops = grab(r"Total operations:\s*[0-9]+\s*\(\s*" + _NUM + r" per second\)", "ops/s")
        mib = grab(r"MiB transferred\s*\(\s*" + _NUM + r" MiB/sec\)", "MiB/sec")
        figures += [_fig(SYSBENCH, test, "ops_per_s", ops), _fig(SYSBENCH, test, "mib_per_s", mib)]
    figures.append(
        _fig(
            SYSBENCH,
            test,
            "events",
            grab(r"total number of events:\s*" + _NUM, "'total number of events'"),
        )
    )
    figures += [
        _fig(SYSBENCH, test, "lat_avg_ms", grab(r"\n\s*avg:\s*" + _NUM, "average latency")),
        _fig(
            SYSBENCH,
            test,
            "lat_p95_ms",
            grab(r"95th percentile:\s*" + _NUM, "95th percentile latency"),
        ),
        _fig(SYSBENCH, test, "lat_max_ms", grab(r"\n\s*max:\s*" + _NUM, "largest latency")),
    ]
    version = re.search(r"sysbench ([0-9][^\s]*)", text)
    return Parsed(figures, [], {"version": version.group(1) if version else None, "test": test})


# ------------------------------------------------------------------ fio

FIO = {
    "mb_per_s": Metric("MB/s", "higher", "throughput (1 MB = 1e6 bytes)"),
    "iops": Metric("IOPS", "higher", "I/O operations per second"),
    "lat_mean_us": Metric("us", "lower", "mean total latency (submission + completion)"),
    "clat_p50_us": Metric("us", "lower", "median completion latency"),
    "clat_p99_us": Metric("us", "lower", "99th percentile completion latency"),
}
FIO_DIRECTIONS = ("read", "write", "trim")


def parse_fio(text: str, argv: Sequence[str] = ()) -> Parsed:
    """fio --output-format=json (or json+): per job and direction that moved bytes, the op
    `<jobname>.<read|write|trim>`. fio may print warnings before the JSON; they go to the
    notes."""
    start = text.find("{")
    if start < 0:
        raise ParseError(
            f"fio: no JSON in the output (run with --output-format=json); last line: {_last(text)}"
        )
    try:
        doc, _end = json.JSONDecoder().raw_decode(text[start:])
    except ValueError as e:
        raise ParseError(f"fio: the JSON does not parse ({e})") from None
    notes = [ln.strip() for ln in text[:start].splitlines() if ln.strip()]
    jobs = doc.get("jobs") if isinstance(doc, dict) else None
    if not jobs:
        raise ParseError("fio: no jobs in the JSON")
    figures = []
    for job in jobs:
        name = job.get("jobname", "job")
        if job.get("error"):
            raise ParseError(f"fio: job {name} failed with error {job['error']}")
        for d in FIO_DIRECTIONS:
            s = job.get(d)
            if not isinstance(s, dict) or not s.get("io_bytes"):
                continue
            op = f"{name}.{d}"
            pct = (s.get("clat_ns") or {}).get("percentile") or {}
            figures += [
                _fig(FIO, op, "mb_per_s", s["bw_bytes"] / 1e6),
                _fig(FIO, op, "iops", s["iops"]),
                _fig(FIO, op, "lat_mean_us", s["lat_ns"]["mean"] / 1e3),
            ]
            for key, metric in (("50.000000", "clat_p50_us"), ("99.000000", "clat_p99_us")):
                if key in pct:
                    figures.append(_fig(FIO, op, metric, pct[key] / 1e3))
    if not figures:
        raise ParseError("fio: no job read or wrote anything")
    return Parsed(figures, notes, {"version": doc.get("fio version")})


# ------------------------------------------------------------------ redis-benchmark

REDIS = {
    "rps": Metric("requests/s", "higher", "requests per second"),
    "avg_latency_ms": Metric("ms", "lower", "mean latency"),
    "min_latency_ms": Metric("ms", "lower", "smallest latency"),
    "p50_latency_ms": Metric("ms", "lower", "median latency"),
    "p95_latency_ms": Metric("ms", "lower", "95th percentile latency"),
    "p99_latency_ms": Metric("ms", "lower", "99th percentile latency"),
    "max_latency_ms": Metric("ms", "lower", "largest latency"),
}


def parse_redis_benchmark(text: str, argv: Sequence[str] = ()) -> Parsed:
    """redis-benchmark --csv: one row per test (its name is the op). redis 7 writes a
    header and latency columns; older versions only "test","rps" rows."""
    rows = [r for r in csv.reader(io.StringIO(text)) if r and any(c.strip() for c in r)]
    if not rows:
        raise ParseError("redis-benchmark: no output (is the server reachable?)")
    header = ["test", "rps"]
    if rows[0][0] == "test":
        header, rows = rows[0], rows[1:]
    unknown = [h for h in header[1:] if h not in REDIS]
    if unknown:
        raise ParseError(f"redis-benchmark: unknown CSV columns {unknown} (run with --csv)")
    figures = []
    for row in rows:
        if len(row) != len(header):
            raise ParseError(
                f"redis-benchmark: a row with {len(row)} fields, not "
                f"{len(header)} (run with --csv): {','.join(row)[:80]}"
            )
        for col, cell in zip(header[1:], row[1:], strict=True):
            try:
                value = float(cell)
            except ValueError:
                raise ParseError(
                    f"redis-benchmark: {row[0]} {col} is not a number: {cell!r}"
                ) from None
            figures.append(_fig(REDIS, row[0], col, value))
    if not figures:
        raise ParseError("redis-benchmark: a header but no test rows")
    return Parsed(figures)


# ------------------------------------------------------------------ wrk

WRK = {
    "requests_per_s": Metric("requests/s", "higher", "requests completed per second"),
    "transfer_mb_per_s": Metric("MB/s", "higher", "bytes read per second (1 MB = 1e6 bytes)"),
    "lat_avg_us": Metric("us", "lower", "mean request latency"),
    "lat_stdev_us": Metric("us", "lower", "standard deviation of request latency"),
    "lat_max_us": Metric("us", "lower", "largest request latency"),
    "lat_p50_us": Metric("us", "lower", "median request latency (--latency)"),
    "lat_p75_us": Metric("us", "lower", "75th percentile request latency (--latency)"),
    "lat_p90_us": Metric("us", "lower", "90th percentile request latency (--latency)"),
    "lat_p99_us": Metric("us", "lower", "99th percentile request latency (--latency)"),
    "errors": Metric("count", "lower", "socket errors plus non-2xx/3xx responses"),
}
_TIME_US = {"us": 1.0, "ms": 1e3, "s": 1e6, "m": 60e6, "h": 3600e6}
_BYTES = {"B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3, "TB": 1024**4}  # wrk: binary


def _wrk_time(token: str) -> float:
    m = re.fullmatch(r"([0-9.]+)(us|ms|s|m|h)", token)
    if not m:
        raise ParseError(f"wrk: {token!r} is not a duration")
    return float(m.group(1)) * _TIME_US[m.group(2)]


def parse_wrk(text: str, argv: Sequence[str] = ()) -> Parsed:
    """wrk's text report (with or without --latency); op "requests"."""
    rate = re.search(r"^Requests/sec:\s*" + _NUM, text, re.M)
    if not rate:
        raise ParseError(
            f"wrk: no 'Requests/sec' line (the test did not run; last line: {_last(text)})"
        )
    op = "requests"
    figures = [_fig(WRK, op, "requests_per_s", float(rate.group(1)))]
    transfer = re.search(r"^Transfer/sec:\s*([0-9.]+)(B|KB|MB|GB|TB)", text, re.M)
    if transfer:
        value = float(transfer.group(1)) * _BYTES[transfer.group(2)] / 1e6
        figures.append(_fig(WRK, op, "transfer_mb_per_s", value))
    lat = re.search(r"^[ \t]*Latency[ \t]+(\S+)[ \t]+(\S+)[ \t]+(\S+)[ \t]+\S+%", text, re.M)
    if not lat:
        raise ParseError("wrk: no 'Latency' row in Thread Stats")
    for metric, token in zip(
        ("lat_avg_us", "lat_stdev_us", "lat_max_us"), lat.groups(), strict=True
    ):
        figures.append(_fig(WRK, op, metric, _wrk_time(token)))
    for pct, token in re.findall(r"^\s*(50|75|90|99)%\s+(\S+)\s*$", text, re.M):
        figures.append(_fig(WRK, op, f"lat_p{pct}_us", _wrk_time(token)))
    errors = 0
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if sock:
        errors += sum(int(x) for x in sock.groups())
    non2xx = re.search(r"Non-2xx or 3xx responses:\s*(\d+)", text)
    if non2xx:
        errors += int(non2xx.group(1))
    figures.append(_fig(WRK, op, "errors", errors))
    return Parsed(figures)


# ------------------------------------------------------------------ registry

PARSERS: dict[str, Callable[[str, Sequence[str]], Parsed]] = {
    "pytest-benchmark": parse_pytest_benchmark,
    "sysbench": parse_sysbench,
    "fio": parse_fio,
    "redis-benchmark": parse_redis_benchmark,
    "wrk": parse_wrk,
}
METRICS: dict[str, dict[str, Metric]] = {
    "pytest-benchmark": PYTEST_BENCHMARK,
    "sysbench": SYSBENCH,
    "fio": FIO,
    "redis-benchmark": REDIS,
    "wrk": WRK,
}


def parse(parser: str, text: str, argv: Sequence[str] = ()) -> Parsed:
    """The named parser on `text`; ParseError for an unknown parser too."""
    if parser not in PARSERS:
        raise ParseError(f"unknown parser {parser!r} (known: {', '.join(PARSERS)})")
    return PARSERS[parser](text, argv)


def _last(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return repr(lines[-1][:120]) if lines else "no output"
