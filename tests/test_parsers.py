"""Parsers of user workloads' output (bench/parsers.py) on recorded real output: each tool
was run from a Debian bookworm rootfs built by `isobench rootfs build` (versions and
commands in tests/data/parsers/README.md). Bad output gives a ParseError with a reason."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from bench import parsers as p
from bench import rootfs as rf

DATA = Path(__file__).parent / "data" / "parsers"
EXAMPLES = Path(__file__).parent.parent / "examples"


def read(name: str) -> str:
    return (DATA / name).read_text()


def by(parsed: p.Parsed) -> dict[tuple[str, str], float]:
    """(op, metric) -> value, for tools with one figure per op and metric."""
    out = {}
    for f in parsed.figures:
        assert (f.op, f.metric) not in out, f
        out[f.op, f.metric] = f.value
    return out


def test_every_figure_has_a_declared_unit_and_direction():
    assert set(p.PARSERS) == set(p.METRICS)
    for metrics in p.METRICS.values():
        for m in metrics.values():
            assert m.better in ("lower", "higher") and m.unit and m.description


# ------------------------------------------------------------------ pytest-benchmark


def test_pytest_benchmark_every_round_of_every_benchmark():
    text = read("pytest-benchmark.json")
    doc = json.loads(text)
    parsed = p.parse("pytest-benchmark", text)
    assert parsed.ops() == [b["fullname"] for b in doc["benchmarks"]]
    assert sorted(op.rsplit("::", 1)[1] for op in parsed.ops()) == [
        "test_compute",
        "test_getppid",
        "test_stat",
    ]
    for b in doc["benchmarks"]:
        figs = [f for f in parsed.figures if f.op == b["fullname"]]
        assert [f.round for f in figs] == list(range(b["stats"]["rounds"]))
        assert [f.value for f in figs] == pytest.approx([s * 1e9 for s in b["stats"]["data"]])
        assert {(f.metric, f.unit, f.better) for f in figs} == {("ns_per_call", "ns", "lower")}
        # the tool's own median of the same rounds
        assert statistics.median(f.value for f in figs) == pytest.approx(b["stats"]["median"] * 1e9)
    assert parsed.notes == []
    assert parsed.info["version"] == doc["version"]


def test_pytest_benchmark_without_round_data_says_so():
    text = read("pytest-benchmark-saved-nodata.json")
    doc = json.loads(text)
    assert all("data" not in b["stats"] for b in doc["benchmarks"])  # --benchmark-save
    parsed = p.parse("pytest-benchmark", text)
    assert len(parsed.figures) == len(doc["benchmarks"])
    for b, f in zip(doc["benchmarks"], parsed.figures, strict=True):
        assert f.op == b["fullname"] and f.round is None
        assert f.value == pytest.approx(b["stats"]["median"] * 1e9)
    assert len(parsed.notes) == len(doc["benchmarks"])
    assert all("no per-round data" in n and "--benchmark-json" in n for n in parsed.notes)


@pytest.mark.parametrize(
    "text, reason",
    [
        ("", "the JSON file is empty"),
        ("{", "not JSON"),
        ('{"benchmarks": []}', "has no benchmarks"),
        ("[1, 2]", "no 'benchmarks' list"),
        ('{"machine_info": {}}', "no 'benchmarks' list"),
        ('{"benchmarks": [{"name": "t", "stats": {}}]}', "neither stats.data nor"),
        ('{"benchmarks": [{"stats": {"data": [1]}}]}', "without name or stats"),
    ],
)
def test_pytest_benchmark_bad(text, reason):
    with pytest.raises(p.ParseError, match=reason.replace(".", r"\.")):
        p.parse("pytest-benchmark", text)


# ------------------------------------------------------------------ sysbench


def test_sysbench_cpu():
    parsed = p.parse("sysbench", read("sysbench-cpu.txt"), ["sysbench", "cpu", "run"])
    assert by(parsed) == pytest.approx(SYSBENCH_CPU)
    assert parsed.info == {"version": "1.0.20", "test": "cpu"}
    # recognised by its own lines too
    assert by(p.parse("sysbench", read("sysbench-cpu.txt"))) == pytest.approx(SYSBENCH_CPU)


def test_sysbench_memory():
    parsed = p.parse("sysbench", read("sysbench-memory.txt"), ["sysbench", "memory", "run"])
    assert by(parsed) == pytest.approx(SYSBENCH_MEMORY)
    assert {f.unit for f in parsed.figures if f.metric == "mib_per_s"} == {"MiB/s"}


def test_sysbench_threads_needs_its_name():
    text = read("sysbench-threads.txt")
    got = by(p.parse("sysbench", text, ["sysbench", "threads", "--threads=2", "run"]))
    assert got == pytest.approx(SYSBENCH_THREADS)
    with pytest.raises(p.ParseError, match="which test ran"):
        p.parse("sysbench", text)


def test_sysbench_bad():
    with pytest.raises(p.ParseError, match="no 'General statistics'"):
        p.parse("sysbench", read("sysbench-cpu-bad-option.txt"), ["sysbench", "cpu", "run"])
    cut = read("sysbench-cpu.txt").replace("events per second", "events per sec")
    with pytest.raises(p.ParseError, match="no 'events per second'"):
        p.parse("sysbench", cut, ["cpu"])


# ------------------------------------------------------------------ fio


def test_fio_randread():
    text = read("fio-randread.json")
    job = json.loads(text)["jobs"][0]["read"]
    got = by(p.parse("fio", text))
    assert got == pytest.approx(FIO_RANDREAD)
    # the same figures from the JSON's other fields
    assert got["randread.read", "mb_per_s"] == pytest.approx(
        job["io_bytes"] / (job["runtime"] / 1e3) / 1e6, rel=0.01
    )
    assert got["randread.read", "iops"] == pytest.approx(
        job["total_ios"] / (job["runtime"] / 1e3), rel=0.01
    )


def test_fio_two_jobs_read_and_write():
    parsed = p.parse("fio", read("fio-randrw-2jobs.json"))
    assert parsed.ops() == ["mixed.read", "mixed.write", "seqw.write"]
    assert by(parsed)["seqw.write", "mb_per_s"] == pytest.approx(2154.119544)


def test_fio_bad():
    with pytest.raises(p.ParseError, match="no JSON in the output.*error=No such file"):
        p.parse("fio", read("fio-missing-dir.txt"))  # --directory that does not exist
    doc = json.loads(read("fio-randread.json"))
    doc["jobs"][0]["error"] = 5
    with pytest.raises(p.ParseError, match="job randread failed with error 5"):
        p.parse("fio", json.dumps(doc))
    with pytest.raises(p.ParseError, match="no JSON in the output"):
        p.parse("fio", "fio-3.33\nrandread: (g=0): rw=randread\n")
    with pytest.raises(p.ParseError, match="does not parse"):
        p.parse("fio", read("fio-randread.json")[:200])


# ------------------------------------------------------------------ redis-benchmark


def test_redis_benchmark_csv():
    parsed = p.parse("redis-benchmark", read("redis-benchmark.csv"))
    assert parsed.ops() == ["PING_INLINE", "PING_MBULK", "SET", "GET", "LPUSH"]
    got = by(parsed)
    assert got == pytest.approx(REDIS)
    assert {f.better for f in parsed.figures if f.metric == "rps"} == {"higher"}
    assert {f.better for f in parsed.figures if f.metric != "rps"} == {"lower"}


def test_redis_benchmark_old_csv_without_header():
    got = by(p.parse("redis-benchmark", '"SET","81967.21"\n"GET","84745.77"\n'))
    assert got == {("SET", "rps"): 81967.21, ("GET", "rps"): 84745.77}


def test_redis_benchmark_bad():
    with pytest.raises(p.ParseError, match=r"a row with 1 fields, not 2 \(run with --csv\)"):
        p.parse("redis-benchmark", read("redis-benchmark-no-csv.txt"))  # -q, not --csv
    with pytest.raises(p.ParseError, match="no output"):
        p.parse("redis-benchmark", "\n")
    with pytest.raises(p.ParseError, match=r"unknown CSV columns \['qps'\]"):
        p.parse("redis-benchmark", '"test","qps"\n"SET","1"\n')
    with pytest.raises(p.ParseError, match="is not a number"):
        p.parse("redis-benchmark", '"test","rps"\n"SET","fast"\n')


# ------------------------------------------------------------------ wrk


def test_wrk_with_latency_distribution():
    parsed = p.parse("wrk", read("wrk-latency.txt"))
    assert by(parsed) == pytest.approx(WRK_LATENCY)


def test_wrk_counts_non_2xx_as_errors():
    got = by(p.parse("wrk", read("wrk-404.txt")))
    assert got["requests", "errors"] == 699  # every response a 404
    assert got["requests", "requests_per_s"] == 698.03
    assert got["requests", "transfer_mb_per_s"] == pytest.approx(354.47 * 1024 / 1e6)
    assert ("requests", "lat_p50_us") not in got  # no --latency


def test_wrk_bad():
    with pytest.raises(p.ParseError, match="no 'Requests/sec' line"):
        p.parse("wrk", read("wrk-refused.txt"))
    with pytest.raises(p.ParseError, match="not a duration"):
        p.parse("wrk", read("wrk-latency.txt").replace("5.16ms", "5.16xs"))


def test_unknown_parser():
    with pytest.raises(p.ParseError, match="unknown parser 'nginx'"):
        p.parse("nginx", "")


# ------------------------------------------------------------------ the examples


def test_example_suite_runs_and_every_round_parses(tmp_path):
    """examples/pytest-benchmark with this interpreter's pytest-benchmark (the recording
    above is Debian's 3.2.2): three benchmarks by their pytest names, each round a figure."""
    out = tmp_path / "out.json"
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            str(EXAMPLES / "pytest-benchmark"),
            "--benchmark-only",
            f"--benchmark-json={out}",
            "--benchmark-min-rounds=3",
            "--benchmark-max-time=0.02",
            "--benchmark-warmup=off",
            "-q",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert res.returncode == 0, res.stdout[-2000:]
    parsed = p.parse("pytest-benchmark", out.read_text())
    assert sorted(parsed.ops()) == [
        "test_compute.py::test_compute",
        "test_syscalls.py::test_getppid",
        "test_syscalls.py::test_stat",
    ]
    for op in parsed.ops():
        rounds = [f.value for f in parsed.figures if f.op == op]
        assert len(rounds) >= 3 and min(rounds) > 0
    assert parsed.notes == []


def test_example_matrices_name_known_parsers_and_kinds():
    files = sorted(EXAMPLES.glob("*.toml"))
    users = {}
    for f in files:
        doc = tomllib.loads(f.read_text())
        if "user_workload" in doc:
            users[f.name] = doc
    assert set(users) == {"pytest-benchmark.toml", "sysbench-fio.toml", "redis-benchmark.toml"}
    for name, doc in users.items():
        rf.check_name(doc["rootfs"])
        assert doc["env"][0]["kind"] == "host" and doc["baseline"] == "host", name
        for w in doc["user_workload"]:
            assert w["kind"] in ("pytest-benchmark", "command"), name
            if w["kind"] == "command":
                assert w["parser"] in p.PARSERS, (name, w)
                assert w["argv"][0] == w["quick_argv"][0] == w["parser"], (name, w)
            else:
                assert w["dir"].startswith("/")


# ------------------------------------------------------------------ the recordings' figures
# read off the recorded files by eye (tests/data/parsers/)


def test_pytest_benchmark_empty_run():
    """pytest-benchmark 3.2.2 leaves an empty --benchmark-json file when no test used
    the benchmark fixture (recorded: a directory with one plain test)."""
    with pytest.raises(p.ParseError, match="the JSON file is empty"):
        p.parse("pytest-benchmark", read("pytest-benchmark-empty.json"))


SYSBENCH_CPU = {
    ("cpu", "events_per_s"): 2671.12,
    ("cpu", "events"): 5347,
    ("cpu", "lat_avg_ms"): 0.37,
    ("cpu", "lat_p95_ms"): 0.42,
    ("cpu", "lat_max_ms"): 2.64,
}
SYSBENCH_MEMORY = {
    ("memory", "ops_per_s"): 26578.87,
    ("memory", "mib_per_s"): 26578.87,
    ("memory", "events"): 53198,
    ("memory", "lat_avg_ms"): 0.04,
    ("memory", "lat_p95_ms"): 0.04,
    ("memory", "lat_max_ms"): 8.14,
}
SYSBENCH_THREADS = {
    ("threads", "events"): 2909,
    ("threads", "lat_avg_ms"): 1.38,
    ("threads", "lat_p95_ms"): 1.50,
    ("threads", "lat_max_ms"): 9.14,
}
FIO_RANDREAD = {  # bw_bytes, iops, lat_ns.mean, clat_ns.percentile 50 and 99
    ("randread.read", "mb_per_s"): 54.410682,
    ("randread.read", "iops"): 13283.858071,
    ("randread.read", "lat_mean_us"): 74.848150935,
    ("randread.read", "clat_p50_us"): 62.720,
    ("randread.read", "clat_p99_us"): 166.912,
}
REDIS = {
    (op, m): v
    for op, row in {
        "PING_INLINE": (93457.95, 0.069, 0.016, 0.063, 0.111, 0.175, 1.791),
        "PING_MBULK": (107526.88, 0.057, 0.008, 0.055, 0.087, 0.143, 3.175),
        "SET": (103626.94, 0.064, 0.016, 0.063, 0.103, 0.143, 1.919),
        "GET": (106951.87, 0.060, 0.016, 0.055, 0.103, 0.159, 4.655),
        "LPUSH": (121951.22, 0.051, 0.016, 0.055, 0.071, 0.119, 0.319),
    }.items()
    for m, v in zip(p.REDIS, row, strict=True)
}
WRK_LATENCY = {
    ("requests", "requests_per_s"): 1385.92,
    ("requests", "transfer_mb_per_s"): 1.59 * 1024**2 / 1e6,
    ("requests", "lat_avg_us"): 5160,
    ("requests", "lat_stdev_us"): 6380,
    ("requests", "lat_max_us"): 57460,
    ("requests", "lat_p50_us"): 2380,
    ("requests", "lat_p75_us"): 7070,
    ("requests", "lat_p90_us"): 13230,
    ("requests", "lat_p99_us"): 30040,
    ("requests", "errors"): 0,
}
