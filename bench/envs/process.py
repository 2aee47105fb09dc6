"""Run one command to completion while watching its output: the shared launch mechanism
of every environment whose instance is a child process (host, namespaces, oci, podman,
qemu). Timestamps are host CLOCK_MONOTONIC nanoseconds."""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from bench.envs.base import Launch
from bench.probeio import is_ready, parse_lines

STDERR_KEEP = 4000  # characters of stderr kept for failure reasons


@dataclass
class Streamed:
    t_submit: int
    pid: int = 0
    t_ready: int | None = None
    t_exit: int | None = None
    lines: list[str] = field(default_factory=list)  # stdout lines after `ready`
    before_ready: list[str] = field(default_factory=list)  # stdout lines before it
    exit_code: int | None = None
    stderr: str = ""
    timed_out: bool = False

    def phases(self) -> dict[str, int]:
        out = {}
        if self.t_ready is not None:
            out["ready"] = self.t_ready - self.t_submit
        if self.t_exit is not None:
            out["exit"] = self.t_exit - self.t_submit
        return out


def _kill_group(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def stream(
    argv: Sequence[str],
    timeout: float,
    *,
    preexec_fn: Callable[[], None] | None = None,
    env: dict[str, str] | None = None,
    on_kill: Callable[[], None] | None = None,
    on_start: Callable[[int], None] | None = None,
    ready_marker: Callable[[str], bool] = is_ready,
) -> Streamed:
    """Run argv in its own session; collect stdout lines, note when `ready` is seen.

    On timeout (or any exception, Ctrl-C included) the whole process group is killed
    with SIGKILL and reaped before this returns or re-raises; `on_kill` runs too, for
    kinds whose instance lives outside the group (a container, a sandbox). `on_start`
    gets the child's pid right after the fork (start samplers there: forking while
    other threads run is unsafe with a preexec_fn).
    """
    res = Streamed(t_submit=time.monotonic_ns())
    proc = subprocess.Popen(
        list(argv),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        preexec_fn=preexec_fn,
        env=env,
    )
    res.pid = proc.pid
    deadline = time.monotonic() + timeout
    sel = selectors.DefaultSelector()
    buffers = {proc.stdout: b"", proc.stderr: b""}
    err_chunks: list[bytes] = []
    try:
        if on_start:
            on_start(proc.pid)
        for f in buffers:
            os.set_blocking(f.fileno(), False)
            sel.register(f, selectors.EVENT_READ)
        while sel.get_map():
            left = deadline - time.monotonic()
            if left <= 0:
                res.timed_out = True
                break
            for key, _ in sel.select(min(left, 0.5)):
                f = key.fileobj
                chunk = os.read(f.fileno(), 65536)
                if not chunk:
                    sel.unregister(f)
                    if f is proc.stdout and buffers[f]:
                        _take(res, buffers[f].decode(errors="replace"), ready_marker)
                    continue
                if f is proc.stderr:
                    err_chunks.append(chunk)
                    continue
                data = buffers[f] + chunk
                *complete, buffers[f] = data.split(b"\n")
                for raw in complete:
                    _take(res, raw.decode(errors="replace"), ready_marker)
        if res.timed_out:
            _kill_group(proc)
            if on_kill:
                on_kill()
        else:
            left = max(0.0, deadline - time.monotonic())
            try:
                proc.wait(left)
            except subprocess.TimeoutExpired:
                res.timed_out = True
                _kill_group(proc)
                if on_kill:
                    on_kill()
        res.exit_code = proc.wait()
        res.t_exit = time.monotonic_ns()
    except BaseException:
        _kill_group(proc)
        if on_kill:
            on_kill()
        proc.wait()
        raise
    finally:
        sel.close()
        for f in (proc.stdout, proc.stderr):
            f.close()
    res.stderr = b"".join(err_chunks).decode(errors="replace")[-STDERR_KEEP:]
    return res


def _take(res: Streamed, line: str, ready_marker: Callable[[str], bool]) -> None:
    line = line.rstrip("\r")
    if res.t_ready is None:
        if ready_marker(line):
            res.t_ready = time.monotonic_ns()
        else:
            res.before_ready.append(line)
        return
    res.lines.append(line)


def to_launch(res: Streamed, timeout: float, what: str = "instance") -> Launch:
    """The common reading of a streamed run: status, reason, phases, parsed records."""
    out = parse_lines(res.lines)
    launch = Launch(
        phases=res.phases(),
        records=out.records,
        exit_code=res.exit_code,
        stderr_tail=res.stderr[-STDERR_KEEP:],
    )
    if out.errors:
        launch.extra["probe_errors"] = out.errors
    if out.garbage:
        launch.extra["stray_lines"] = out.garbage[:5]
    last_err = (res.stderr.strip().splitlines() or [""])[-1][:300]
    if res.timed_out:
        launch.status = "timeout"
        waited = "no `ready`" if res.t_ready is None else "no exit"
        launch.reason = f"{waited} within {timeout:g} s: {what} killed"
    elif res.t_ready is None:
        launch.status = "failed"
        launch.reason = f"exited with status {res.exit_code} before `ready`: {last_err}"
        launch.reason = launch.reason.rstrip(": ")
    elif res.exit_code != 0:
        launch.status = "failed"
        launch.reason = f"exited with status {res.exit_code}: {last_err}".rstrip(": ")
    return launch
