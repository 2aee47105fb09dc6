"""Ctrl-C and SIGTERM during a run: stop measuring, never stop cleaning up.

While a run measures, SIGINT and SIGTERM raise `Interrupted` at once, so a launch that
waits on a probe, a daemon or a guest stops waiting. Inside `shielded()` (the teardown of
a launch: kill, delete, remove the cgroup, remove the scratch) the signal is only
recorded, and raised when the outermost shielded block ends, so a teardown is never cut
in half (which is how a cgroup used to be left behind). `Interrupted` is a BaseException:
no `except Exception` on the way swallows it. Python still drops exceptions raised in
at-fork hooks and `__del__`, so `check()` raises any recorded signal between launches.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(BaseException):  # noqa: N818 - it is a signal, not an error
    """SIGINT or SIGTERM arrived: stop, clean up, keep what was measured."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.exit_code = 128 + signum


_pending: list[int] = []  # signals received and not yet raised
_depth = 0  # nesting of shielded() blocks


def _handler(signum, frame):
    _pending.append(signum)
    if _depth == 0:
        raise Interrupted(signum)


def check() -> None:
    """Raise a recorded signal (one whose exception was dropped, or deferred)."""
    if _pending:
        raise Interrupted(_pending[0])


@contextlib.contextmanager
def shielded() -> Iterator[None]:
    """A block a signal must not cut short; the signal is raised when it ends."""
    global _depth
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
    if _depth == 0 and _pending and _installed:
        raise Interrupted(_pending[0])


_installed = False


def install() -> dict:
    """Handle SIGINT and SIGTERM as above; returns the old handlers for restore()."""
    global _installed
    _pending.clear()
    old = {s: signal.getsignal(s) for s in SIGNALS}
    for s in SIGNALS:
        signal.signal(s, _handler)
    _installed = True
    return old


def ignore() -> None:
    """From here on a signal changes nothing (the run's own final cleanup): a signal
    recorded before no longer ends a shielded block either, so every environment's
    cleanup and the scratch removal run to the end."""
    global _installed
    for s in SIGNALS:
        signal.signal(s, signal.SIG_IGN)
    _pending.clear()
    _installed = False


def restore(old: dict) -> None:
    global _installed
    for s, h in old.items():
        signal.signal(s, h)
    _installed = False


def _raise(signum, frame):
    raise Interrupted(signum)


def terminate_raises() -> None:
    """Outside a run (a command's start-up, its imports): SIGTERM raises Interrupted, as
    SIGINT raises KeyboardInterrupt, so the command ends with one line, not a traceback
    or a silent death. A run's install() takes over, and its restore() gives it back."""
    signal.signal(signal.SIGTERM, _raise)
