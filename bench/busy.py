"""Keep every CPU out of idle while a run measures: one SCHED_IDLE spinner per CPU
(the matrix's `busy_cpus`, off by default; validate's CPU-quota run turns it on).

A spinner runs only when nothing else wants its CPU (the idle class: a woken probe
preempts it at once), so no CPU enters an idle state. What that buys: a throttled
probe leaves its CPU idle for (1 - q) of every period, and on a virtual machine the
halted vCPU comes back slower per CPU-second (a quota of 0.25 read ×4.1-4.9 here
instead of ×4; ×3.94-4.00 with spinners). What it costs: a spinner on a sibling
hyperthread (or a vCPU sharing a core) takes the core's execution units, and CPU-bound
probes slow down (getppid 103 -> 133 ns on this 2-vCPU VM), which is why it is not the
default. The spinners die with the process that started them (PR_SET_PDEATHSIG), so a
`kill -9` of the run leaves none burning a CPU.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
from collections.abc import Iterator

_PR_SET_PDEATHSIG = 1
SPIN = "while True: pass  # isobench idle-class spinner"


def _become_spinner(cpu: int) -> None:
    """preexec_fn: die with the parent, run on `cpu`, in the idle scheduling class."""
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    os.sched_setaffinity(0, {cpu})
    os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))


@contextlib.contextmanager
def busy_cpus(enabled: bool = True) -> Iterator[None]:
    """While the block runs, every CPU this process may use has a spinner."""
    procs = []
    try:
        for cpu in sorted(os.sched_getaffinity(0)) if enabled else ():
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-c", SPIN], preexec_fn=lambda c=cpu: _become_spinner(c)
                )
            )
        yield
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
