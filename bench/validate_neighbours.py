"""`isobench validate`'s idle neighbours (issue 22): the instances a held set keeps while
another measures must not perturb it.

The neighbours are held here as a run's held set holds them: one served probe per
environment of the quick matrix's held kinds available on this host (`isobench run
--all`: namespaces, docker and its seccomp and gVisor variants, podman, oci, cri, lxc,
swarm; swarm on a dockerd of its own, so that validate never puts the machine's daemon
into swarm mode), each given one untimed burst, then left idle and quiet (Instance.quiet:
the harness's own samplers of it paused, as bursts.py does through the blocks).
bench/validate.py runs an A/A of host vs `host:label=twin` beside them, in held sets with
the same specs given freeze=yes (frozen outside their own turns, as bursts.py freezes a
kind that declares an idle cost), and without them, the conditions alternated in time,
and judges the A/A ratios with validate_checks.agreement_check. While they are held, each
neighbour's own CPU (its cgroup tree and carriers) and its samplers' are measured: the
per-kind idle cost.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from pathlib import Path
from typing import Any

import psutil

from bench import interrupt
from bench.envs import REGISTRY
from bench.envs.base import Context, Environment, Instance, StartError, freezes, served
from bench.matrix import parse_env_spec
from bench.scratch import new_scratch

READY_S = 60.0
SAMPLE_S = 2.0  # the window of each neighbour's idle CPU, samplers on
PRIVATE = {"swarm": "swarm:daemon=private"}  # never the machine's daemon into swarm mode


def default_specs() -> list[str]:
    """The quick matrix's held kinds (`--all`'s variants of every kind with a control
    channel that is not a guest, host aside), as validate holds them."""
    out = []
    for cls in REGISTRY.values():
        if cls.kind == "host" or not cls.channel or cls.one_instance_per_round:
            continue
        out += [PRIVATE.get(spec, spec) for spec in cls.variants()]
    return out


def declared_frozen(spec: str) -> bool:
    """A run freezes this spec's held instances (base.freezes: its option or its kind)."""
    e = parse_env_spec(spec)
    return freezes(REGISTRY[e.kind], e.options)


def available(specs: list[str]) -> tuple[list[str], dict[str, str]]:
    """(specs this host can run, spec -> why not)."""
    ok, skipped = [], {}
    for spec in specs:
        e = parse_env_spec(spec)
        cls = REGISTRY[e.kind]
        try:
            av = cls.probe(cls.parse(e.options))
        except Exception as ex:  # noqa: BLE001 - a bad option: said, not raised
            skipped[spec] = str(ex)
            continue
        if av.ok:
            ok.append(spec)
        else:
            skipped[spec] = av.reason
    return ok, skipped


def _cpu_s(pids) -> float:
    total = 0.0
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            t = psutil.Process(pid).cpu_times()
            total += t.user + t.system
    return total


def _thread_cpu_s(watchers) -> float:
    """CPU seconds of this process's threads that run `watchers` (host-side samplers)."""
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    for w in watchers:
        tid = getattr(getattr(w, "_thread", None), "native_id", None)
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = Path(f"/proc/self/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


class Neighbours:
    """One held, served, idle instance per spec; `with Neighbours(...) as nb:` holds
    them (those that fail to start are said in `failed`) and stops and removes them on
    exit, also on Ctrl-C (thawed first)."""

    def __init__(self, specs: list[str], bundle, run_id: str, log=lambda s: None):
        self.specs = specs
        self.bundle = bundle
        self.run_id = run_id
        self.log = log
        self.envs: list[Environment] = []
        self.held: dict[str, Instance] = {}
        self.failed: dict[str, str] = {}
        self.scratch: Path | None = None

    def __enter__(self) -> Neighbours:
        try:
            self._hold()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _hold(self) -> None:
        self.scratch = new_scratch(self.run_id)
        run = Context(self.run_id, self.scratch, self.bundle.root.parent.parent)
        for index, spec in enumerate(self.specs, 1):
            e = parse_env_spec(spec)
            ctx = run.for_env(index)
            ctx.scratch.mkdir(parents=True, exist_ok=True)
            try:
                env = REGISTRY[e.kind](dict(e.options), ctx)
                self.envs.append(env)
                env.prepare(self.bundle)
                instance = env.start(served("syscall", "syscall"), READY_S)
                if not instance.wait_ready():
                    raise StartError("no `ready`")
                instance.ask("null ms=5", READY_S)  # a warm-up, as a held set's untimed burst
                self.held[spec] = instance
            except Exception as ex:  # noqa: BLE001 - any kind's failure: said, not raised
                self.failed[spec] = str(ex).splitlines()[0] if str(ex) else type(ex).__name__
                self.log(f"neighbour {spec} not held: {self.failed[spec]}")

    def __exit__(self, *exc) -> None:
        with interrupt.shielded():
            for env in self.envs:
                env.cleanup()  # aborts (thaws, kills, removes) what is still held
            self.envs, self.held = [], {}
            if self.scratch is not None:
                shutil.rmtree(self.scratch, ignore_errors=True)

    # -- the conditions
    def quiet(self) -> None:
        """Idle and unwatched, as a held set's neighbours are through its blocks."""
        for instance in self.held.values():
            instance.thaw()
            instance.quiet(True)

    # -- what they cost idle
    def measure_idle(self, seconds: float = SAMPLE_S) -> dict[str, dict[str, Any]]:
        """Per spec: its own CPU (cgroup tree and carriers, % of one CPU) and its
        samplers' in the harness, over `seconds` of idleness with its samplers on."""
        pids = {s: _pids(i) for s, i in self.held.items()}
        for instance in self.held.values():
            instance.thaw()  # samplers on
        t0 = time.monotonic()
        own0 = {s: _cpu_s(p) for s, p in pids.items()}
        watch0 = {s: _thread_cpu_s(i.watchers) for s, i in self.held.items()}
        interrupt.check()
        time.sleep(seconds)
        dt = time.monotonic() - t0
        out = {}
        for s, instance in self.held.items():
            own = (_cpu_s(pids[s]) - own0[s]) / dt * 100
            watch = (_thread_cpu_s(instance.watchers) - watch0[s]) / dt * 100
            out[s] = {"instance_cpu_pct": round(own, 3), "sampler_cpu_pct": round(watch, 3)}
        return out


def _pids(instance: Instance) -> set[int]:
    """The processes of a held instance: its cgroup tree and its named carriers."""
    pids = set(instance.frozen_pids()) | set(instance.carriers())
    cid = getattr(instance, "cid", None)
    if cid:  # a docker or swarm container's shim and runsc carriers
        from bench.envs.containers import find_carriers

        pids |= set(find_carriers(cid))
    return pids
