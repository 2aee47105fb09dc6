"""The probes' serve mode (`syscall --serve`, `cpu --serve`), driven over the child's pipes
as the harness will: one command line in, one JSON line out, numbered; bad commands are
answered and survived; quit and end of input end the probe with status 0; short bursts are
cheap, and a window's burst answers near its window's end for every op, on the host and
under gVisor (where a clock read can cost as much as a system call). And the noise-model
recorder (benchmarks/record_bursts.py) on its kept series and in a short real recording."""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.canary import LineReader
from bench.envs.base import served as served_invocation
from bench.probeio import is_ready, parse_lines

ROOT = Path(__file__).parents[1]
NOISE = ROOT / "tests" / "data" / "noise"
RECORDER = ROOT / "benchmarks" / "record_bursts.py"
SYSCALL_OPS = [
    "null",
    "read",
    "write",
    "open_close",
    "stat",
    "fstat",
    "clock_gettime",
    "page_fault",
    "fork",
    "fork_exec",
    "pipe_pingpong",
]
CPU_OPS = ["compute", "mem_bw", "mem_lat"]
ANSWER_S = 30.0  # generous: the machine is shared with other tests
WINDOW_MS = 5  # the burst design's syscall bursts
BURSTS = 9  # timed bursts of each op: the third shortest is the op's wall time
# A 5 ms window answers within max(window/16, one op) of its end; the rest of this
# allowance is the control channel. A shared machine's preemptions lengthen some bursts
# (a runsc sandbox's, whose sentry needs the CPU too, by ms at a load of 5 on 2 cores): the
# lower quartile of BURSTS leaves them out, where a chunk too long for the window lengthens
# every burst (18-63 ms under gVisor when chunks were sized for a clock read of ~40 us).
# At a load of 7 on the 2 CPUs (four sessions' tests at once) the lower quartile of a 5 ms
# window's answers on the host was 7.2-9.2 ms: 14 ms still tells the chunk bug apart.
WALL_MS = 14.0
MEM_ARGS = ["--mem-mib", "24", "--lat-mib", "16"]

needs_cc = pytest.mark.requires("compiler")


class Served:
    """A probe started with --serve, on pipes; reads its lines with a deadline (a line
    that does not come is a TimeoutError, an output that ends an EOFError)."""

    def __init__(self, path: Path, *args: str):
        self.proc = subprocess.Popen(
            [str(path), "--serve", *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        self.out = LineReader(self.proc.stdout, ANSWER_S)
        assert is_ready(self.line())

    def line(self) -> str:
        return self.out.line()

    def send(self, *commands: str) -> None:
        self.proc.stdin.write(b"".join(c.encode() + b"\n" for c in commands))
        self.proc.stdin.flush()

    def ask(self, command: str) -> dict:
        self.send(command)
        return json.loads(self.line())

    def end(self, command: str | None = None) -> tuple[int, bytes]:
        """Send command (or nothing), close stdin; the exit status and what was left
        (read to EOF: it comes once every holder of the probe's stdout is gone)."""
        if command is not None:
            self.send(command)
        rest, _ = self.proc.communicate(timeout=ANSWER_S)
        return self.proc.returncode, self.out.buf + rest

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def served(bundle):
    started: list[Served] = []

    def start(probe: str, *args: str) -> Served:
        started.append(Served(bundle.probes[probe], *args))
        return started[-1]

    yield start
    for s in started:
        s.kill()


def _result(line: dict, probe: str, op: str, burst: int) -> float:
    """Check a result line of the contract; return its one metric's value."""
    assert "error" not in line, line
    (rec,) = parse_lines([json.dumps(line)]).records
    assert (rec["probe"], rec["op"], rec["burst"]) == (probe, op, burst)
    ((_, value),) = rec["metrics"].items()
    assert value > 0 and rec["elapsed_ns"] > 0
    return value


# ---------------------------------------------------------------- syscall


@needs_cc
def test_syscall_serves_a_window_of_every_op(served):
    p = served("syscall")
    for k, op in enumerate(SYSCALL_OPS, start=1):
        ms = 300 if op.startswith("fork") else 50  # a few ms per fork+exec: several in a window
        t0 = time.monotonic()
        line = p.ask(f"{op} ms={ms}")
        wall = time.monotonic() - t0
        ns = _result(line, "syscall", op, k)
        it = line["iterations"]
        assert line["elapsed_ns"] == ms * 1_000_000  # the window, exactly
        assert it > 0
        # ns_per_op comes from the unrounded work; iterations are that work rounded
        assert ns * it == pytest.approx(ms * 1e6, rel=0.5 / (it - 0.5) + 1e-3)
        assert ms / 1000 <= wall < ANSWER_S  # the burst took at least its window
    assert p.end() == (0, b"")


@needs_cc
def test_syscall_iters_burst_runs_exactly_that_many(served):
    p = served("syscall")
    for k, (op, n) in enumerate([("null", 1000), ("fork", 3), ("null", 1)], start=1):
        line = p.ask(f"{op} iters={n}")
        ns = _result(line, "syscall", op, k)
        assert line["iterations"] == n
        assert ns == pytest.approx(line["elapsed_ns"] / n, abs=1e-3)
        assert line["elapsed_ns"] < ANSWER_S * 1e9
    assert p.end("quit") == (0, b"")


@needs_cc
def test_bad_commands_get_an_error_line_and_the_probe_goes_on(served):
    p = served("syscall")
    bad = [
        ("", ""),
        ("   ", ""),
        ("bogus ms=5", "bogus"),
        ("null", "null"),
        ("null ms=0", "null"),
        ("null ms=5x", "null"),
        ("null ms=-5", "null"),
        ("null iters=0", "null"),
        (f"null iters={2**48 + 1}", "null"),
        ("null ms=3600001", "null"),
        ("null sec=5", "null"),
        ("null ms=5 more", "null"),
        ("null ms=5 prime=0", "null"),
        ("null ms=5 prime=", "null"),
        ("null iters=5 prime=10", "null"),
        ("null ms=5 prime=10 more", "null"),
        ("null prime=10 ms=5", "null"),
        ("quit now", "quit"),
        ("null ms=1" + " " * 300, ""),
    ]
    for k, (command, op) in enumerate(bad, start=1):
        line = p.ask(command)
        assert set(line) == {"probe", "op", "error", "burst"}, line
        assert (line["probe"], line["op"], line["burst"]) == ("syscall", op, k), command
        assert line["error"]
    k = len(bad) + 1
    _result(p.ask("null ms=2"), "syscall", "null", k)
    assert p.end() == (0, b"")


@needs_cc
def test_a_primed_window_runs_its_primer_first_and_times_only_the_window(served):
    p = served("cpu")
    _result(p.ask("compute ms=20"), "cpu", "compute", 1)  # calibrated (one CFS period)
    t0 = time.monotonic()
    line = p.ask("compute ms=30 prime=60")
    wall = time.monotonic() - t0
    _result(line, "cpu", "compute", 2)
    assert line["elapsed_ns"] == 30_000_000 and "cpu_ns" in line
    assert 0.090 <= wall < ANSWER_S  # primer and window, back to back
    assert p.end() == (0, b"")


@needs_cc
def test_pipelined_commands_are_answered_in_order(served):
    p = served("syscall")
    commands = ["null ms=2", "clock_gettime iters=500", "nope", "stat ms=2", "null iters=10"]
    p.send(*commands)
    lines = [json.loads(p.line()) for _ in commands]
    assert [x["burst"] for x in lines] == [1, 2, 3, 4, 5]
    assert [x["op"] for x in lines] == ["null", "clock_gettime", "nope", "stat", "null"]
    assert "error" in lines[2] and all("error" not in x for i, x in enumerate(lines) if i != 2)


@needs_cc
def test_quit_ends_with_status_0_and_nothing_after_it_is_run(served):
    p = served("syscall")
    _result(p.ask("pipe_pingpong ms=5"), "syscall", "pipe_pingpong", 1)
    p.send("quit", "null ms=1")
    # read to EOF: the ping-pong child (which holds stdout too) was torn down
    assert p.end() == (0, b"")


@needs_cc
def test_end_of_input_ends_with_status_0(served):
    p = served("cpu", *MEM_ARGS)
    _result(p.ask("compute ms=2"), "cpu", "compute", 1)
    assert p.end() == (0, b"")


@needs_cc
def test_serve_refuses_the_options_of_a_run(bundle):
    for probe, opt in [("syscall", "--op=null"), ("syscall", "--reps=2"), ("cpu", "--window-ms=5")]:
        res = subprocess.run(
            [str(bundle.probes[probe]), "--serve", opt],
            capture_output=True,
            text=True,
            timeout=ANSWER_S,
            check=False,
        )
        assert res.returncode == 2
        assert res.stderr.strip() == (
            f"{probe}: --serve takes its ops and burst lengths on stdin, not {opt.split('=')[0]}"
        )


@needs_cc
def test_200_bursts_of_1_ms_are_cheap(served):
    """Calibration happens once: a 1 ms burst costs about 1 ms, not a calibration (the
    first burst of a process also runs one 100 ms CFS period of the op)."""
    p = served("syscall")
    walls = []
    t0 = time.monotonic()
    for k in range(1, 201):
        t = time.monotonic()
        line = p.ask("null ms=1")
        walls.append(time.monotonic() - t)
        _result(line, "syscall", "null", k)
        assert line["elapsed_ns"] == 1_000_000
    total = time.monotonic() - t0
    assert total < 20, total
    assert statistics.median(walls) < 0.1, statistics.median(walls)
    assert p.end("quit") == (0, b"")


def _wall_of_windows(ask, ops: list[str], unit_ms) -> dict[str, tuple[float, float]]:
    """For each op: one untimed burst (its setup, calibration, and for the first a CFS
    period), then BURSTS timed `op ms=WINDOW_MS` bursts; op -> (the wall time in ms
    from the command to the answer (lower quartile), one iteration in ms, median of
    unit_ms(answer))."""
    out = {}
    for op in ops:
        assert "error" not in ask(f"{op} ms={WINDOW_MS}")
        walls, units = [], []
        for _ in range(BURSTS):
            t0 = time.monotonic()
            line = ask(f"{op} ms={WINDOW_MS}")
            walls.append((time.monotonic() - t0) * 1e3)
            assert "error" not in line and line["elapsed_ns"] == WINDOW_MS * 1_000_000, line
            units.append(unit_ms(line))
        out[op] = (sorted(walls)[BURSTS // 4], statistics.median(units))
    return out


def _syscall_op_ms(line: dict) -> float:
    return line["metrics"]["ns_per_op"] / 1e6


def _late(walls: dict[str, tuple[float, float]]) -> dict[str, tuple[float, float]]:
    """The ops whose window answered late: later than WALL_MS, and than one op more
    (with room for that op's jitter: fork_exec's 5-20 ms under gVisor)."""
    return {
        op: (wall, unit)
        for op, (wall, unit) in walls.items()
        if wall > max(WALL_MS, WINDOW_MS + 2 * unit)
    }


@needs_cc
def test_a_window_answers_near_its_end_for_every_syscall_op(served):
    """Chunks are sized for the window: a 5 ms burst of any op is over in about 5 ms
    (one op more where an op is longer than the window), not at the end of a chunk
    calibrated for the clock."""
    p = served("syscall")
    walls = _wall_of_windows(p.ask, SYSCALL_OPS, _syscall_op_ms)
    assert not _late(walls), walls
    assert p.end("quit") == (0, b"")


@needs_cc
def test_a_window_answers_near_its_end_for_every_cpu_op(served):
    p = served("cpu", *MEM_ARGS)
    walls = _wall_of_windows(p.ask, CPU_OPS, lambda line: 0.0)  # iterations of us and less
    assert not _late(walls), walls
    assert p.end("quit") == (0, b"")


@pytest.mark.requires("root", "oci", "runsc")
def test_a_window_answers_near_its_end_under_gvisor(env_factory):
    """Under gVisor a clock read can be a system call of ~40 us, as long as getppid: a
    chunk of PROBE_CLOCK_SHARE clock reads lasted 20 ms, and a 5 ms window answered
    after 18-63 ms. The probe held in a runsc sandbox (oci:runtime=runsc), over its
    control channel."""
    env = env_factory("oci", {"runtime": "runsc"})
    instance = env.start(served_invocation("syscall", "syscall"), 120)
    try:
        assert instance.wait_ready(), f"{instance.name}: no `ready`"
        walls = _wall_of_windows(
            lambda c: json.loads(instance.ask(c, ANSWER_S)), SYSCALL_OPS, _syscall_op_ms
        )
        assert not _late(walls), walls
    finally:
        launch = instance.stop()
    assert launch.status == "ok", launch.reason


# ---------------------------------------------------------------- cpu


@needs_cc
def test_cpu_serves_windows_and_iterations_of_every_op(served):
    p = served("cpu", *MEM_ARGS)
    bursts = [
        ("compute", "ms=5"),
        ("compute", "iters=100000"),
        ("mem_bw", "ms=10"),
        ("mem_lat", "ms=10"),
        ("mem_bw", "iters=4"),
        ("mem_lat", "iters=20000"),
    ]
    for k, (op, length) in enumerate(bursts, start=1):
        line = p.ask(f"{op} {length}")
        value = _result(line, "cpu", op, k)
        it, el = line["iterations"], line["elapsed_ns"]
        if length.startswith("ms="):
            assert el == int(length[3:]) * 1_000_000
        else:
            assert it == int(length.split("=")[1]) and el < ANSWER_S * 1e9
        per_s = it / el * 1e9
        rel = 0.5 / (it - 0.5) + 1e-4  # iterations of a window are its work, rounded
        expected = {
            "compute": per_s,
            "mem_bw": per_s * 65536 * 24 / 1e6,  # blocks of 65536 elements, 24 bytes each
            "mem_lat": 1e9 / per_s,
        }[op]
        assert value == pytest.approx(expected, rel=rel)
    assert p.end("quit") == (0, b"")


@needs_cc
def test_cpu_iters_burst_is_deterministic(served):
    """compute iters=N runs exactly N kernel iterations: its checksum depends only on N."""
    p = served("cpu")
    a, b, c = (p.ask(f"compute iters={n}") for n in (200_000, 200_000, 200_001))
    assert a["checksum"] == b["checksum"] != c["checksum"]
    assert [x["burst"] for x in (a, b, c)] == [1, 2, 3]


@needs_cc
def test_cpu_setup_failure_is_an_error_line_and_the_probe_goes_on(served):
    p = served("cpu", "--mem-mib", "1")  # too small for two blocks of mem_bw
    line = p.ask("mem_bw ms=5")
    assert (line["op"], line["burst"]) == ("mem_bw", 1) and "too small" in line["error"]
    _result(p.ask("compute ms=2"), "cpu", "compute", 2)
    assert p.end() == (0, b"")


def _waits_for(what, timeout: float = ANSWER_S) -> bool:
    deadline = time.monotonic() + timeout
    while not what():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _rss_mib(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) / 1024


@needs_cc
def test_serving_probes_prepare_every_op_before_their_first_command(served):
    """The instances of a held set prepare at once, as they start: cpu's buffers are
    built (24 + 16 MiB resident) and syscall's pipe_pingpong partner is running before
    any command was sent; the first bursts then answer as before."""
    cpu = served("cpu", *MEM_ARGS)
    assert _waits_for(lambda: _rss_mib(cpu.proc.pid) > 0.9 * (24 + 16))
    sys_ = served("syscall")
    children = Path(f"/proc/{sys_.proc.pid}/task/{sys_.proc.pid}/children")
    assert _waits_for(lambda: children.read_text().split() != [])
    for k, op in enumerate(CPU_OPS, start=1):
        _result(cpu.ask(f"{op} ms=5"), "cpu", op, k)
    _result(sys_.ask("pipe_pingpong ms=5"), "syscall", "pipe_pingpong", 1)
    assert cpu.end("quit") == (0, b"") and sys_.end("quit") == (0, b"")


# ---------------------------------------------------------------- recorder


def _recorder(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, str(RECORDER), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        check=False,
    )


def test_recorder_summary_of_the_kept_series_is_the_readme_s():
    res = _recorder("summary", str(NOISE / "bursts-30s.txt"))
    assert res.returncode == 0, res.stderr
    block = (NOISE / "README.md").read_text().split("(tests/test_serve.py checks it):\n\n")[1]
    quoted = [x.strip() for x in block.split("\n\n")[0].splitlines()]
    assert res.stdout.splitlines() == quoted


def test_recorder_refuses_a_file_that_is_not_a_series(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_text("1 2\n3 4\n5 6\n")
    res = _recorder("summary", str(bad))
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert res.stderr.strip() == f"record_bursts: {bad} is not a series of >= 3 lines of 3 columns"


@needs_cc
def test_recorder_records_a_short_series(tmp_path):
    out = tmp_path / "bursts.txt"
    res = _recorder("record", "2", str(out), "--cpu", str(min(os.sched_getaffinity(0))))
    assert res.returncode == 0, res.stderr
    rows = [line.split() for line in out.read_text().splitlines()]
    assert len(rows) >= 10  # 2 s of 5 ms pairs, however busy the machine
    t = [float(r[0]) for r in rows]
    assert all(len(r) == 3 and float(r[1]) > 0 and float(r[2]) > 0 for r in rows)
    assert t[0] < 0.5 and t == sorted(t) and t[-1] < 2
    assert re.search(rf"^{len(rows)} pairs of bursts over ", res.stdout, re.M)
    assert "getppid ns/op p5/p50/p95 = " in res.stdout
    assert "log ratio SD per burst: " in res.stdout
