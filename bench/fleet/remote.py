"""`python -m bench.fleet.remote SCRATCH run ARGS...` on a fleet host, in its venv: the
isobench run the fleet started. It writes its pid into SCRATCH/run.pid and marks the
scratch as its own (a concurrent `isobench clean` there leaves it alone), then becomes
`isobench ARGS` (exec: the same pid), so the controller's Ctrl-C reaches the run as a
SIGINT and the run cleans up as on a local Ctrl-C."""

from __future__ import annotations

import os
import shutil
import signal
import sys
from pathlib import Path

from bench.scratch import mark


def adopt_bundle(shipped: Path) -> None:
    """Copy the controller's probe bundle (SCRATCH/wheels/bundle/<key>) into this
    host's cache, where `isobench run` finds it when this host's compiler gives the same
    key; with another compiler the run builds its own, as always."""
    from bench.resources import cache_dir

    for src in shipped.glob("*"):
        dest = cache_dir() / "bundles" / src.name
        if (src / "bundle.json").is_file() and not dest.exists():
            tmp = dest.parent / f".building-fleet-{os.getpid()}"
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.copytree(src, tmp, symlinks=True)
            try:
                tmp.rename(dest)
            except OSError:  # a concurrent build won the race: its result is identical
                shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str]) -> None:
    scratch, args = Path(argv[0]), argv[1:]
    adopt_bundle(scratch / "wheels" / "bundle")
    mark(scratch, run_id=f"fleet-{scratch.name}")
    (scratch / "run.pid").write_text(f"{os.getpid()}\n")
    # started by a module that may have ignored SIGINT: Python installs its Ctrl-C
    # handler only where SIGINT is not ignored
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    os.execv(sys.executable, [sys.executable, "-m", "bench.cli", *args])


if __name__ == "__main__":
    main(sys.argv[1:])
