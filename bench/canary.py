"""The host canary: the host's own speed, burst by burst, measured with the bundle's
syscall and cpu probes in serve mode (workloads/probe.h), for `isobench doctor`'s
10-second check (check()) and for a run's noise diagnosis (record()).

Both probes run as children of this process, on pipes, optionally pinned to a CPU list
(started by a thread pinned to it for the moment, so they and what they fork are pinned
from birth).
After one untimed burst of each op (a warm-up: a probe sets up and calibrates its ops as
it starts), they take turns: a `null` burst (getppid) of B ms, then a `compute` burst of
B ms, until S seconds have passed; /proc/stat before and after gives the CPU steal over
the window, and the load average before it the other work on this machine.
The children are always stopped (`quit`, then SIGKILL after QUIT_S), on an error, an
exception or Ctrl-C too; a child that dies, stops answering or prints an error line is a
CanaryError with one line saying which and why. bench/canary_diagnosis.py reads the series.
LineReader (a child's output, line by line, each within a deadline) is the serve-mode
client's reader, which tests/test_serve.py drives the probes with too.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import subprocess
import tempfile
import time
from pathlib import Path

from bench import interrupt
from bench.bundle import Bundle
from bench.canary_diagnosis import Series, diagnose
from bench.metrics.noise import parse_proc_stat, steal_fraction

BURST_MS = 5  # the recorded noise model's bursts: short enough to pair within a phase
CHECK_S = 10.0  # doctor's check
REPLY_S = 10.0  # an answer later than this: the probe is stuck (the first takes ~0.1 s)
QUIT_S = 2.0  # a probe still running this long after `quit` is killed
MAX_BURST_MS = 1000
# (probe, op, metric, the probe's arguments): the cpu probe builds its memory ops'
# buffers as it starts (256 + 128 MiB by default), which compute alone never reads
OPS = (
    ("syscall", "null", "ns_per_op", ()),
    ("cpu", "compute", "ops_per_s", ("--mem-mib", "4", "--lat-mib", "1")),
)


class CanaryError(RuntimeError):
    """The canary could not measure; the message is one line for the user."""


class LineReader:
    """The lines of a child's output pipe as they come, each within `timeout` seconds:
    line() raises TimeoutError when none comes in time, EOFError when the pipe ends
    first. `buf` holds what was read after the last whole line."""

    def __init__(self, pipe, timeout: float):
        self.fd = pipe.fileno()
        self.timeout = timeout
        self.buf = b""

    def line(self) -> str:
        deadline = time.monotonic() + self.timeout
        with selectors.DefaultSelector() as sel:
            sel.register(self.fd, selectors.EVENT_READ)
            while b"\n" not in self.buf:
                left = deadline - time.monotonic()
                if left <= 0 or not sel.select(left):
                    raise TimeoutError(f"no line within {self.timeout:g} s")
                chunk = os.read(self.fd, 65536)
                if not chunk:
                    raise EOFError(f"the output ended (after {self.buf[-100:]!r})")
                self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line.decode(errors="replace")


class ServedProbe:
    """One probe in serve mode: one command line in, one JSON line out."""

    def __init__(self, path: Path, cpus: set[int] | None = None, args: tuple[str, ...] = ()):
        self.name = path.name
        mine = os.sched_getaffinity(0)
        try:  # pinned from birth (it inherits this thread's CPUs): a process the probe
            os.sched_setaffinity(0, cpus or mine)  # forks as it starts is pinned too
        except OSError as e:
            raise CanaryError(f"cannot pin the {self.name} probe: {e.strerror}") from None
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - closed by close()
        try:
            self.proc = subprocess.Popen(
                [str(path), "--serve", *args],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=self._stderr,
            )
        except OSError as e:
            self._stderr.close()
            raise CanaryError(
                f"cannot start the {self.name} probe ({path}): {e.strerror}"
            ) from None
        finally:
            os.sched_setaffinity(0, mine)
        self._out = LineReader(self.proc.stdout, REPLY_S)
        try:
            if (first := self._line()) != "ready":
                raise CanaryError(f"the {self.name} probe said {first[:100]!r}, not ready")
        except BaseException:
            self.close()
            raise

    def _line(self) -> str:
        try:
            return self._out.line().strip()
        except TimeoutError:
            raise CanaryError(f"the {self.name} probe gave no answer in {REPLY_S:g} s") from None
        except EOFError:
            raise CanaryError(self._ended()) from None

    def _ended(self) -> str:
        try:
            status = f"status {self.proc.wait(QUIT_S)}"
        except subprocess.TimeoutExpired:
            status = "its output closed"
        self._stderr.seek(0)
        said = self._stderr.read().decode(errors="replace").strip().splitlines()
        return f"the {self.name} probe ended ({status})" + (f": {said[-1]}" if said else "")

    def burst(self, op: str, ms: int, metric: str) -> float:
        """One burst of `op`, a window of `ms` ms: its figure `metric`."""
        try:
            self.proc.stdin.write(f"{op} ms={ms}\n".encode())
            self.proc.stdin.flush()
        except OSError:  # a broken pipe: the probe is gone
            raise CanaryError(self._ended()) from None
        line = self._line()
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            raise CanaryError(f"the {self.name} probe said {line[:100]!r}") from None
        if not isinstance(rec, dict):
            raise CanaryError(f"the {self.name} probe said {line[:100]!r}")
        if "error" in rec:
            raise CanaryError(f"the {self.name} probe could not run {op}: {rec['error']}")
        metrics = rec.get("metrics")
        value = metrics.get(metric) if isinstance(metrics, dict) else None
        if not isinstance(value, (int, float)) or value <= 0:
            raise CanaryError(f"the {self.name} probe's {op} burst has no {metric}: {line[:100]}")
        return float(value)

    def close(self) -> None:
        """`quit`; SIGKILL if still running QUIT_S later. Never cut short by a signal."""
        with interrupt.shielded():
            try:
                with contextlib.suppress(OSError):  # already gone: a broken pipe
                    self.proc.stdin.write(b"quit\n")
                    self.proc.stdin.flush()
                with contextlib.suppress(OSError):
                    self.proc.stdin.close()
                self.proc.wait(QUIT_S)
            except subprocess.TimeoutExpired:
                pass
            finally:
                if self.proc.poll() is None:
                    self.proc.kill()
                self.proc.wait()
                self.proc.stdout.close()
                self._stderr.close()


def _proc_stat() -> dict[str, int]:
    try:
        return parse_proc_stat(Path("/proc/stat").read_text())
    except (OSError, ValueError):
        return {}


def _load_per_cpu() -> float | None:
    """The 1-min load average per CPU (before the check: the probes add about 1 to it)."""
    try:
        return os.getloadavg()[0] / (os.cpu_count() or 1)
    except OSError:
        return None


def _cpus(cpus: set[int] | None) -> set[int] | None:
    if cpus is None:
        return None
    allowed = os.sched_getaffinity(0)
    if not cpus or not cpus <= allowed:
        raise CanaryError(f"CPUs {sorted(cpus)} are not among this process's {sorted(allowed)}")
    return set(cpus)


def record(
    bundle: Bundle, seconds: float, burst_ms: int = BURST_MS, cpus: set[int] | None = None
) -> Series:
    """The host's speed for `seconds`: pairs of a null and a compute burst of burst_ms
    each (see the module docstring). Raises CanaryError, or Interrupted on a signal; the
    probes are stopped either way."""
    if not seconds > 0 or not 1 <= burst_ms <= MAX_BURST_MS:
        raise CanaryError(f"needs seconds > 0 and 1 <= burst_ms <= {MAX_BURST_MS}")
    pin = _cpus(cpus)
    probes: list[tuple[ServedProbe, str, str]] = []
    t, null, compute = [], [], []
    try:
        for probe, op, metric, args in OPS:
            if probe not in bundle.probes:
                raise CanaryError(f"the bundle at {bundle.root} has no {probe} probe")
            probes.append((ServedProbe(bundle.probes[probe], pin, args), op, metric))
        for served, op, metric in probes:  # untimed: a warm-up
            served.burst(op, burst_ms, metric)
        load = _load_per_cpu()
        before = _proc_stat()
        t0 = time.monotonic()
        while (now := time.monotonic() - t0) < seconds:
            interrupt.check()
            figures = [served.burst(op, burst_ms, metric) for served, op, metric in probes]
            t.append(now)
            null.append(figures[0])
            compute.append(figures[1])
        after = _proc_stat()
    finally:
        with interrupt.shielded():  # one block: a signal is raised after every close
            for served, _, _ in reversed(probes):
                served.close()
    steal = steal_fraction(before, after) if before and after else None
    return Series(tuple(t), tuple(null), tuple(compute), float(burst_ms), steal, load)


def check(bundle: Bundle, seconds: float = CHECK_S, cpus: set[int] | None = None) -> dict:
    """doctor's check: record() for `seconds`, then diagnose() it. The dict is diagnose()'s
    (figures, "verdict" quiet/noisy, "sentence") plus "cpus" and "error": None; if the
    canary could not measure, it is {"verdict": "unknown", "sentence": why, "error": why,
    "cpus": ...} instead (doctor goes on)."""
    pinned = sorted(cpus) if cpus else None
    try:
        result = diagnose(record(bundle, seconds, cpus=cpus))
    except (CanaryError, ValueError) as e:  # ValueError: too few bursts to diagnose
        why = f"the noise check could not run: {e}"
        return {"verdict": "unknown", "sentence": why, "error": str(e), "cpus": pinned}
    return {**result, "cpus": pinned, "error": None}


class RunCanary:
    """The host canary of a run: PAIRS pairs of a `null` and a `compute` burst of
    BURST_MS on the host (unpinned, as the run's probes) each time a shared round's
    blocks complete a cycle (Settings.between_blocks), appended to RUN_DIR/canary.jsonl as it comes
    ({"t": seconds since start, "round", "null_ns", "compute_ops"}); diagnosis() reads
    the series at the end (bench/canary_diagnosis.py). A canary that cannot start or
    fails mid-run says so once through `log` and stops; the run goes on without it."""

    FILE = "canary.jsonl"
    PAIRS = 4  # pairs in a row per call: its jitter at 10 ms, the calls its slow moves

    def __init__(self, bundle: Bundle, run_dir: Path, log):
        self.bundle = bundle
        self.path = run_dir / self.FILE
        self.log = log
        self.t0 = time.monotonic()
        self.probes: list[tuple[ServedProbe, str, str]] | None = None
        self.failed = False
        self.before = _proc_stat()
        self.load = _load_per_cpu()

    def pair(self, rnd: int) -> None:
        if self.failed:
            return
        try:
            if self.probes is None:
                self.probes = []
                for probe, op, metric, args in OPS:
                    served = ServedProbe(self.bundle.probes[probe], args=args)
                    self.probes.append((served, op, metric))
                for served, op, metric in self.probes:  # untimed: a warm-up
                    served.burst(op, BURST_MS, metric)
            lines = []
            for _ in range(self.PAIRS):
                t = time.monotonic() - self.t0
                null, compute = (served.burst(op, BURST_MS, m) for served, op, m in self.probes)
                lines.append(
                    {"t": round(t, 4), "round": rnd, "null_ns": null, "compute_ops": compute}
                )
        except (CanaryError, KeyError) as e:
            self.failed = True
            self.log(f"the host canary stopped: {e}")
            self.close()
            return
        with contextlib.suppress(OSError), self.path.open("a") as f:  # full disk: the store says
            f.writelines(json.dumps(line) + "\n" for line in lines)

    def close(self) -> None:
        with interrupt.shielded():
            for served, _, _ in reversed(self.probes or []):
                served.close()
        self.probes = [] if self.probes is not None else None

    def diagnosis(self) -> dict | None:
        """diagnose() of the series recorded so far (None with too few pairs)."""
        try:
            rows = [json.loads(x) for x in self.path.read_text().splitlines() if x.strip()]
        except (OSError, json.JSONDecodeError):
            return None
        after = _proc_stat()
        steal = steal_fraction(self.before, after) if self.before and after else None
        series = Series(
            tuple(r["t"] for r in rows),
            tuple(r["null_ns"] for r in rows),
            tuple(r["compute_ops"] for r in rows),
            float(BURST_MS),
            steal,
            self.load,
        )
        try:
            return diagnose(series)
        except ValueError:  # too few pairs to say anything
            return None
