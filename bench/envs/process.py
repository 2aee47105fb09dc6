"""An instance that is a child process: the shared mechanism of every environment whose
instance is a command on this host (host, namespaces, oci, podman, qemu). `Child` runs
the command in its own session and watches its output from a reader thread; `stream()`
runs one to completion; `ProcessInstance` is the launch template those kinds share.
Timestamps are host CLOCK_MONOTONIC nanoseconds."""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from bench import interrupt
from bench.envs.base import (
    STDERR_KEEP,
    ChannelError,
    Instance,
    Launch,
    conclude,
    read_probe_output,
)
from bench.probeio import is_ready


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


class Child:
    """A command in its own session (process group) whose stdout/stderr the caller's
    thread reads while it waits (wait_ready, wait_exit), so `ready` and the exit are
    timestamped as they are seen, in order. A held child's output waits in its pipes.

    `on_kill` runs whenever the child is killed, for kinds whose instance lives outside
    the group (a container, a sandbox). `on_start` gets the child's pid right after the
    fork (start samplers there: forking while other threads run is unsafe with a
    preexec_fn).

    `serve` keeps the child's stdin as its control channel (a probe in serve mode):
    ask() writes one command line there and reads the answer; otherwise stdin is
    /dev/null."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        preexec_fn: Callable[[], None] | None = None,
        env: dict[str, str] | None = None,
        on_kill: Callable[[], None] | None = None,
        on_start: Callable[[int], None] | None = None,
        ready_marker: Callable[[str], bool] = is_ready,
        serve: bool = False,
    ):
        self.res = Streamed(t_submit=time.monotonic_ns())
        self._on_kill = on_kill
        self._marker = ready_marker
        self._err: list[bytes] = []
        self.proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.PIPE if serve else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
            preexec_fn=preexec_fn,
            env=env,
        )
        self.res.pid = self.proc.pid
        self._sel = selectors.DefaultSelector()
        self._buf = b""
        try:
            if on_start:
                on_start(self.proc.pid)
            for f in (self.proc.stdout, self.proc.stderr):
                os.set_blocking(f.fileno(), False)
                self._sel.register(f, selectors.EVENT_READ)
        except BaseException:
            self.kill()
            raise

    def _pump(self, timeout: float, until: Callable[[], bool]) -> None:
        """Read output until `until()` holds, both pipes are at EOF, or `timeout` s."""
        deadline = time.monotonic() + timeout
        while self._sel.get_map() and not until():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            for key, _ in self._sel.select(min(left, 0.5)):
                f = key.fileobj
                chunk = os.read(f.fileno(), 65536)
                if not chunk:
                    self._sel.unregister(f)
                    if f is self.proc.stdout and self._buf:
                        self._take(self._buf.decode(errors="replace"))
                        self._buf = b""
                elif f is self.proc.stderr:
                    self._err.append(chunk)
                else:
                    *complete, self._buf = (self._buf + chunk).split(b"\n")
                    for raw in complete:
                        self._take(raw.decode(errors="replace"))

    def _take(self, line: str) -> None:
        line = line.rstrip("\r")
        res = self.res
        if res.t_ready is None:
            if self._marker(line):
                res.t_ready = time.monotonic_ns()
            else:
                res.before_ready.append(line)
            return
        res.lines.append(line)

    def wait_ready(self, timeout: float) -> bool:
        self._pump(timeout, lambda: self.res.t_ready is not None)
        return self.res.t_ready is not None

    def ask(self, command: str, timeout: float) -> str:
        """Write `command` and a newline to the child's stdin, return its next stdout
        line after `ready` (taken out of the lines its launch reads). ChannelError: no
        control channel, the child closed its stdin or ended, or no line in `timeout` s."""
        if self.proc.stdin is None:
            raise ChannelError("started without a control channel (not in serve mode)")
        if self.proc.stdin.closed:
            raise ChannelError("the instance has ended")
        if self.res.t_ready is None:
            raise ChannelError("asked before the probe said `ready`")
        n = len(self.res.lines)
        try:
            os.write(self.proc.stdin.fileno(), command.encode() + b"\n")
        except OSError as e:
            raise ChannelError(f"the probe's stdin is closed ({e.strerror})") from None
        self._pump(timeout, lambda: len(self.res.lines) > n)
        if len(self.res.lines) > n:
            return self.res.lines.pop(n)
        if not self._sel.get_map() or self.proc.poll() is not None:
            raise ChannelError(f"the probe ended (status {self.proc.poll()}) before answering")
        raise ChannelError(f"no answer to {command!r} within {timeout:g} s")

    def wait_exit(self, timeout: float) -> bool:
        """True when the child exited within `timeout` (its exit time then recorded)."""
        deadline = time.monotonic() + timeout
        self._pump(timeout, lambda: False)
        try:
            self.proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            return False
        if self.res.t_exit is None:
            self.res.t_exit = time.monotonic_ns()
        return True

    def signal(self, sig: int) -> None:
        """Send `sig` to the child's whole process group."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, sig)

    def kill(self) -> None:
        """SIGKILL the process group and whatever `on_kill` removes; reap the child."""
        self.signal(signal.SIGKILL)
        if self._on_kill:
            self._on_kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)

    def result(self, timed_out: bool = False) -> Streamed:
        """The ended child's output (call after wait_exit() or kill())."""
        if self.proc.poll() is not None:
            self._pump(1.0, lambda: False)  # what the pipes still hold
        self._sel.close()
        for f in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if f is not None:
                with contextlib.suppress(OSError):
                    f.close()
        res = self.res
        res.exit_code = self.proc.poll()
        if res.t_exit is None:
            res.t_exit = time.monotonic_ns()
        res.timed_out = timed_out
        res.stderr = b"".join(self._err).decode(errors="replace")[-STDERR_KEEP:]
        return res


def stream(argv: Sequence[str], timeout: float, **kwargs) -> Streamed:
    """Run argv to completion (Child's keyword arguments); at the timeout, or on any
    exception (Ctrl-C included), the process group is killed (and `on_kill` run) and
    reaped before this returns or re-raises."""
    child = Child(argv, **kwargs)
    try:
        exited = child.wait_exit(timeout)
        if not exited:
            child.kill()
    except BaseException:
        child.kill()
        child.result(timed_out=True)
        raise
    return child.result(timed_out=not exited)


def to_launch(
    res: Streamed, timeout: float, what: str = "instance", stopped: bool = False
) -> Launch:
    """The common reading of a child's run: records, phases, then conclude()'s verdict."""
    launch = Launch(phases=res.phases())
    read_probe_output(launch, res.lines)
    return conclude(
        launch,
        ready=res.t_ready is not None,
        exit_code=res.exit_code,
        timed_out=res.timed_out,
        stopped=stopped,
        timeout=timeout,
        stderr=res.stderr,
        killed=f"{what} killed",
    )


class ProcessInstance(Instance):
    """The launch template of the kinds whose instance is a child process: a kind makes
    the Child and gives `collect` (read its cgroup, its samplers: fill the Launch) and
    `teardown` (remove what it made). A stop is SIGTERM to the child's process group
    (runc, crun and `podman run` pass it on to the container's init; `runsc run` does
    not: the oci kind stops it with `runsc kill <id> TERM`)."""

    def __init__(
        self,
        name: str,
        child: Child,
        timeout: float,
        *,
        what: str = "instance",
        collect: Callable[[Launch], None] = lambda launch: None,
        teardown: Callable[[], None] = lambda: None,
    ):
        super().__init__(name, timeout, child.res.t_submit)
        self.child = child
        self.what = what
        self._collect = collect
        self._teardown = teardown

    def _ready(self, timeout: float) -> bool:
        return self.child.wait_ready(timeout)

    def ask(self, command: str, timeout: float) -> str:
        return self.child.ask(command, timeout)

    def _signal_stop(self) -> None:
        self.child.signal(signal.SIGTERM)

    def _wait_exit(self, timeout: float) -> bool:
        return self.child.wait_exit(timeout)

    def _kill(self) -> None:
        self.child.kill()

    def _end(self, *, stopped: bool, timed_out: bool) -> Launch:
        try:
            res = self.child.result(timed_out=timed_out)
            launch = to_launch(res, self.timeout, self.what, stopped=stopped)
            launch.extra["name"] = self.name
            self._collect(launch)
            return launch
        finally:
            with interrupt.shielded():
                self._teardown()
