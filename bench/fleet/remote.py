"""`python -m bench.fleet.remote SCRATCH run ARGS...` on a fleet host, in its venv: the
isobench run the fleet started. It writes its pid into SCRATCH/run.pid and marks the
scratch as its own (a concurrent `isobench clean` there leaves it alone), then becomes
`isobench ARGS` (exec: the same pid), so the controller's Ctrl-C reaches the run as a
SIGINT and the run cleans up as on a local Ctrl-C."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

from bench.scratch import mark


def main(argv: list[str]) -> None:
    scratch, args = Path(argv[0]), argv[1:]
    mark(scratch, run_id=f"fleet-{scratch.name}")
    (scratch / "run.pid").write_text(f"{os.getpid()}\n")
    # started by a module that may have ignored SIGINT: Python installs its Ctrl-C
    # handler only where SIGINT is not ignored
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    os.execv(sys.executable, [sys.executable, "-m", "bench.cli", *args])


if __name__ == "__main__":
    main(sys.argv[1:])
