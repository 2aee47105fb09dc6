"""What the harness itself adds to a launch, measured on this host (hyperfine style).

The host environment's full launch path (cgroup made and removed, `ready` watched with a
selector, output parsed, psutil sampler running) is timed against the barest launch of
the same static `startup` probe there is: ``os.posix_spawn`` with a pipe, read to EOF,
``waitpid`` — no cgroup, no sampler, no parsing. The two alternate in the same process
(ABAB…, the order flipped every other pair), so drift and load hit both alike. Each
component is the *paired* difference host − bare, reported as the median with its 95%
CI (order statistics, ``stats.summarize``):

- ``spawn``: submit → `ready` (the bundle's `attach`, which joins the cgroup and execs
  the probe, vs posix_spawn);
- ``collection``: `ready` → exit (the selector loop, reaping);
- ``cleanup``: exit → cleaned (cgroup read, delta, removal, parsing; the bare launch has
  none, so this is the host phase itself);
- ``setup``: what happens before submit and is in no phase (cgroup creation, the first
  cgroup read): the launch() call's wall time minus its ``cleaned`` phase;
- ``total``: launch() wall time minus the bare launch's wall time.

The sampler's CPU use is read from ``sampler_cpu_ms`` (its thread's CPU time) on the
same startup launches (per launch) and on a few short ``cpu --op compute`` launches
(per second of probe run time: the fraction of one CPU the sampler takes).

``measure(bundle, n=...)`` takes about 1-2 s at the default n; the runner stores its
result as ``manifest["harness"]``.
"""

from __future__ import annotations

import math
import os
import shutil
import time
from typing import Any

from bench import stats
from bench.envs.base import Context, Invocation
from bench.envs.host import SAMPLER_INTERVAL_S, HostEnv
from bench.scratch import new_scratch
from bench.store import json_safe

COMPONENTS = ("spawn", "collection", "cleanup", "setup", "total")
CPU_INVOCATION = Invocation("cpu", "cpu", ("--op", "compute", "--reps", "1", "--min-ms", "100"))


def bare_launch(path: str) -> dict[str, float]:
    """posix_spawn the probe with stdout on a pipe; ms from spawn to `ready` and to reaped."""
    r, w = os.pipe()
    t0 = time.monotonic_ns()
    try:
        pid = os.posix_spawn(
            path,
            [path],
            {},
            file_actions=[
                (os.POSIX_SPAWN_DUP2, w, 1),
                (os.POSIX_SPAWN_CLOSE, r),
            ],
        )
    finally:
        os.close(w)
    t_ready = None
    buf = b""
    with os.fdopen(r, "rb", buffering=0) as f:
        while chunk := f.read(4096):
            buf += chunk
            if t_ready is None and b"\n" in buf:
                t_ready = time.monotonic_ns()
    _, status = os.waitpid(pid, 0)
    t_exit = time.monotonic_ns()
    if os.waitstatus_to_exitcode(status) != 0 or not buf.startswith(b"ready"):
        raise RuntimeError(f"bare launch of {path} failed: status {status}, output {buf[:80]!r}")
    return {"ready_ms": (t_ready - t0) / 1e6, "exit_ms": (t_exit - t0) / 1e6}


def host_launch(env: HostEnv, inv: Invocation, timeout: float = 30.0) -> dict[str, float]:
    """One launch through the host environment: its phases, wall time and sampler cost."""
    t0 = time.monotonic_ns()
    launch = env.launch(inv, timeout)
    wall = (time.monotonic_ns() - t0) / 1e6
    if launch.status != "ok":
        raise RuntimeError(f"host launch of {inv.probe} failed: {launch.reason}")
    out = {f"{k}_ms": v / 1e6 for k, v in launch.phases.items()}
    out["wall_ms"] = wall
    out["sampler_cpu_ms"] = launch.host_side.get("sampler_cpu_ms", math.nan)
    return out


def components(host: dict[str, float], bare: dict[str, float]) -> dict[str, float]:
    """One host/bare pair -> the harness's cost per component, in ms (pure)."""
    return {
        "spawn": host["ready_ms"] - bare["ready_ms"],
        "collection": (host["exit_ms"] - host["ready_ms"]) - (bare["exit_ms"] - bare["ready_ms"]),
        "cleanup": host["cleaned_ms"] - host["exit_ms"],
        "setup": host["wall_ms"] - host["cleaned_ms"],
        "total": host["wall_ms"] - bare["exit_ms"],
    }


def _summary(values) -> dict[str, float | None]:
    """Median [95% CI] of a list, JSON-safe (nan -> None)."""
    return json_safe(stats.summarize(values).as_dict())


def measure(bundle, n: int = 15, *, cpu_launches: int = 3, warmup: int = 2) -> dict[str, Any]:
    """Harness cost on this host: see the module docstring. Needs root (a cgroup per
    launch), like the host environment. Returns a JSON-safe dict for the manifest."""
    started = time.monotonic()
    startup = str(bundle.probes["startup"])
    scratch = new_scratch("harness")
    env = HostEnv({"sampler": "on"}, Context("harness", scratch, scratch))
    env.prepare(bundle)
    inv = Invocation("startup", "startup", ())
    try:
        for _ in range(warmup):
            bare_launch(startup)
            host_launch(env, inv)
        pairs = []
        for i in range(n):
            if i % 2:
                bare = bare_launch(startup)
                host = host_launch(env, inv)
            else:
                host = host_launch(env, inv)
                bare = bare_launch(startup)
            pairs.append((host, bare))
        cpu = [host_launch(env, CPU_INVOCATION) for _ in range(cpu_launches)]
    finally:
        env.cleanup()
        shutil.rmtree(scratch, ignore_errors=True)
    return report(pairs, cpu, seconds=time.monotonic() - started)


def report(pairs, cpu, *, seconds: float = math.nan) -> dict[str, Any]:
    """Pairs of (host, bare) startup launches and cpu launches -> the manifest dict."""
    diffs = [components(h, b) for h, b in pairs]
    per_s = [c["sampler_cpu_ms"] / c["exit_ms"] for c in cpu if c.get("exit_ms")]
    try:
        load = list(os.getloadavg())
    except OSError:
        load = None
    return {
        "n": len(pairs),
        "method": "paired host-env vs posix_spawn launches of the startup probe, "
        "interleaved; median of paired differences with its 95% CI",
        "overhead_ms": {c: _summary([d[c] for d in diffs]) for c in COMPONENTS},
        "host_ms": {
            k: _summary([h[k] for h, _ in pairs])
            for k in ("ready_ms", "exit_ms", "cleaned_ms", "wall_ms")
        },
        "bare_ms": {k: _summary([b[k] for _, b in pairs]) for k in ("ready_ms", "exit_ms")},
        "sampler": {
            "interval_s": SAMPLER_INTERVAL_S,
            "cpu_ms_per_startup_launch": _summary([h["sampler_cpu_ms"] for h, _ in pairs]),
            "cpu_fraction_during_cpu_probe": _summary(per_s),
            "cpu_launches": len(cpu),
        },
        "loadavg": load,
        "seconds": seconds,
    }


def describe(h: dict[str, Any]) -> str:
    """One line for humans: each component's median [CI] in ms."""

    def fmt(s):
        if s["median"] is None:
            return "n/a"
        lo, hi = s["ci_low"], s["ci_high"]
        ci = f" [{lo:.3f}, {hi:.3f}]" if lo is not None and hi is not None else ""
        return f"{s['median']:.3f}{ci}"

    parts = [f"{c} {fmt(h['overhead_ms'][c])}" for c in COMPONENTS]
    smp = h["sampler"]
    frac = smp["cpu_fraction_during_cpu_probe"]["median"]
    parts.append(f"sampler {fmt(smp['cpu_ms_per_startup_launch'])} ms CPU/launch")
    if frac is not None:
        parts.append(f"{frac * 100:.2f}% of a CPU while a probe runs")
    return f"harness cost (ms, median [95% CI], n={h['n']}): " + "; ".join(parts)
