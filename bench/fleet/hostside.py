#!/usr/bin/env python3
"""The fleet's scratch directory on a host, handled by the host's own Python (stdlib
only: it runs before the venv exists and after it is gone). Ansible copies and runs it
(the script module); isobench never imports it.

    hostside.py make SCRATCH RUN_ID   make it, with isobench's scratch marker, so
                                      `isobench clean` there finds what a kill -9 left
    hostside.py remove SCRATCH        remove it (only a marked directory)
    hostside.py stop SCRATCH          after the controller's Ctrl-C: SIGINT the remote
                                      run (it cleans up as on a local Ctrl-C), stop what
                                      else runs from the scratch, `isobench clean`, remove
"""

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time

MARKER = ".isobench-scratch"  # bench/scratch.py's
PREFIX = "isobench-"


def boot_id():
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return ""


def mark(path, run_id):
    with open(os.path.join(path, MARKER), "w") as f:
        f.write(json.dumps({"run_id": run_id, "pid": os.getpid(), "boot_id": boot_id()}) + "\n")


def ours(path):
    return os.path.basename(path).startswith(PREFIX) and os.path.isfile(os.path.join(path, MARKER))


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie has exited
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def wait_gone(pids, seconds):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pids = [p for p in pids if alive(p)]
        if not pids:
            return []
        time.sleep(0.2)
    return [p for p in pids if alive(p)]


def signal_all(pids, sig):
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, sig)


def ancestors():
    pids, pid = set(), os.getpid()
    while pid > 1:
        pids.add(pid)
        try:
            with open(f"/proc/{pid}/stat") as f:
                pid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
    return pids


def mount_ns(pid):
    try:
        return os.readlink(f"/proc/{pid}/ns/mnt")
    except OSError:
        return None


def users_of(path):
    """Processes whose command line names the scratch (the run, a pip install...) and
    that see the same files as this one (its mount namespace: hosts that share a
    kernel, containers or the tests' namespace hosts, each have their own scratch)."""
    skip, found, mine = ancestors(), [], mount_ns("self")
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) in skip or mount_ns(name) != mine:
            continue
        try:
            with open(f"/proc/{name}/cmdline", "rb") as f:
                argv = f.read().decode(errors="replace").split("\0")
        except OSError:
            continue
        if any(a == path or a.startswith(path + "/") for a in argv):
            found.append(int(name))
    return found


def stop(path):
    if not os.path.isdir(path) or not ours(path):
        return "nothing to stop"
    mark(path, "fleet-stop")  # alive owner: the clean below leaves the scratch to us
    said = []
    try:
        with open(os.path.join(path, "run.pid")) as f:
            run = int(f.read().strip())
    except (OSError, ValueError):
        run = None
    if run and alive(run):
        os.kill(run, signal.SIGINT)
        left = wait_gone([run], 120)
        said.append(f"run {run} stopped" if not left else f"run {run} did not stop")
    rest = users_of(path)
    if rest:
        signal_all(rest, signal.SIGTERM)
        signal_all(wait_gone(rest, 10), signal.SIGKILL)
        wait_gone(rest, 10)
    exe = os.path.join(path, "venv", "bin", "isobench")
    if os.path.exists(exe):
        res = subprocess.run([exe, "clean"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        said.append(f"clean exit {res.returncode}")
    shutil.rmtree(path, ignore_errors=True)
    return ", ".join(said + ["scratch removed"])


def main(argv):
    cmd, path = argv[0], os.path.abspath(argv[1])
    if cmd == "make":
        os.makedirs(os.path.join(path, "wheels"), mode=0o700)
        mark(path, argv[2])
    elif cmd == "remove":
        if ours(path):
            shutil.rmtree(path, ignore_errors=True)
    elif cmd == "stop":
        print(stop(path))
    else:
        sys.exit(f"hostside.py: unknown command {cmd!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
