"""A fake environment, a fake clock and stand-in rounds for the runner's tests (no root,
no engine): what tests/test_runner.py, tests/test_runner_golden.py and
tests/test_families_contract.py share.

FakeEnv measures a noisy figure per launch and advances the fake clock; BatchEnv runs a
whole round in one emulated instance (a guest); GoneEnv is never available; BrokenEnv's
engine goes away at every launch. A probe invocation of `userrun` answers with userrun's
output (a redis-benchmark CSV line), so a user workload is read by its parser.

`stand_ins` replaces the rounds of the held families (density, the net server, user
servers) with ones on the fake clock; every place that names a family module's path is
here, so the tests that use them do not change when a module moves."""

from __future__ import annotations

import base64
import json
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench import catalog, runner
from bench.envs.base import (
    HOLD,
    Availability,
    ChannelError,
    Environment,
    Instance,
    Launch,
    Option,
    StartError,
)
from bench.families import userrun
from bench.interrupt import Interrupted
from bench.matrix import Matrix, UserWorkload, parse_env_spec, with_catalog


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


CLOCK = Clock()
LOG: list[str] = []  # what the last fake run logged


def userrun_records(stdout: str, status: int = 0) -> list[dict[str, Any]]:
    """What the userrun probe prints for a command that wrote `stdout` and exited."""
    chunk = {
        "probe": "userrun",
        "op": "chunk",
        "stream": "stdout",
        "seq": 0,
        "b64": base64.b64encode(stdout.encode()).decode(),
    }
    end = {"probe": "userrun", "op": "exit", "metrics": {"exit_status": status}}
    return [chunk, end]


class FakeInstance(Instance):
    """An instance that is ready at once and ends when told; `ended` once it has. Its
    control channel answers a burst command (`null ms=5`) with a noisy figure of its
    environment after advancing the fake clock by the burst."""

    env: FakeEnv | None = None

    def ask(self, command: str, timeout: float) -> str:
        if self.launch is not None:
            raise ChannelError("the instance has ended")
        op, length = command.split()
        ms = int(length.split("=")[1])
        ctrl_c(self.env, self.workload)
        CLOCK.now += ms / 1000
        value = self.env.figure()
        rec = {"probe": "fake", "op": op, "iterations": 1, "elapsed_ns": ms * 1_000_000}
        rec.update(metrics={"ns_per_op": value}, units={"ns_per_op": "ns"}, burst=1)
        return json.dumps(rec)

    def _ready(self, timeout: float) -> bool:
        return True

    def _signal_stop(self) -> None:
        pass

    def _wait_exit(self, timeout: float) -> bool:
        return True

    def _kill(self) -> None:
        pass

    def _end(self, *, stopped: bool, timed_out: bool) -> Launch:
        return Launch(phases={"ready": 1_000_000})


def ctrl_c(env: Environment, workload: str) -> None:
    """Ctrl-C in the middle of a round of `workload` when FakeEnv.interrupt names it: an
    instance started, then Interrupted (what the run must leave nothing of)."""
    if FakeEnv.interrupt == workload:
        env.start(HOLD, 10.0)
        raise Interrupted(signal.SIGINT)


class FakeEnv(Environment):
    """A launch takes `seconds` on the fake clock and measures `scale` × a base figure
    with `noise` (lognormal) for every op of the workload."""

    kind = "fake"
    summary = "a fake environment for runner tests"
    channel = True
    options = {
        "noise": Option(0.01, "lognormal launch noise", type=float),
        "scale": Option(1.0, "figure scale", type=float),
        "rootfs": Option("", "a rootfs name (user workloads)"),
        "sampler": Option("on", "the host kind's sampler option (a user server's client)"),
    }
    seconds = 1.0
    calls: list[tuple[str, list[str]]] = []
    rng = np.random.default_rng(0)
    instances: list[FakeInstance] = []  # every instance started
    interrupt: str | None = None  # a workload whose round is interrupted (ctrl_c)

    @classmethod
    def probe(cls, opts=None) -> Availability:
        return Availability(True)

    def launch(self, inv, timeout) -> Launch:
        return self.launch_round([inv], timeout)[0]

    def _start(self, inv, timeout) -> Instance:
        instance = FakeInstance(self.new_name(), timeout)
        instance.env, instance.workload = self, inv.workload
        FakeEnv.instances.append(instance)
        return instance

    def figure(self) -> float:
        """`scale` x 100 with the environment's lognormal `noise`."""
        return self.opts["scale"] * 100 * np.exp(FakeEnv.rng.normal(0, self.opts["noise"]))

    def launch_round(self, invs, timeout) -> list[Launch]:
        FakeEnv.calls.append((self.kind, [i.workload for i in invs]))
        for inv in invs:
            ctrl_c(self, inv.workload)
        out = []
        for inv in invs:
            CLOCK.now += self.seconds
            value = self.figure()
            if inv.probe == userrun.PROBE:
                recs = userrun_records(f'"PING_INLINE","{value:.3f}"\n')
            else:
                recs = [
                    {"op": "null", "metrics": {"ns_per_op": value}, "units": {"ns_per_op": "ns"}}
                ]
            out.append(Launch(records=recs, phases={"ready": 1_000_000}))
        return out


class BatchEnv(FakeEnv):
    kind = "batch"
    one_instance_per_round = True
    emulated = True


class GoneEnv(FakeEnv):
    kind = "gone"

    @classmethod
    def probe(cls, opts=None) -> Availability:
        return Availability(False, "not installed here")


class BrokenEnv(FakeEnv):
    kind = "broken"
    channel = False

    def _start(self, inv, timeout) -> Instance:
        CLOCK.now += self.seconds
        raise StartError("the engine went away")

    def launch_round(self, invs, timeout) -> list[Launch]:
        CLOCK.now += self.seconds
        raise RuntimeError("the engine went away")


KINDS = {"fake": FakeEnv, "batch": BatchEnv, "gone": GoneEnv, "broken": BrokenEnv, "host": FakeEnv}


@dataclass
class FakeBundle:
    root: Path

    def describe(self) -> dict:
        return {"hash": "fake", "path": str(self.root)}


REDIS = UserWorkload(
    "redis-cli",
    "command",
    "redis-benchmark",
    argv=("redis-benchmark", "-n", "100", "--csv"),
)
REDIS_SERVER = UserWorkload(
    "redis",
    "command",
    "redis-benchmark",
    argv=("redis-benchmark", "-h", "{host}", "-p", "{port}", "--csv"),
    server=("redis-server", "--port", "{port}"),
)


def catalog_for_tests() -> dict[str, catalog.Workload]:
    """The workloads the fake runs know: two probes, density, net (the shipped catalog's
    entries, so their families and arguments are the real ones), and `ticks`, a probe
    measured in bursts (one op, 4 blocks a round, 2 --quick)."""
    shipped = catalog.load()
    return {
        "syscall": catalog.Workload("syscall", "syscall", "syscall", "", (), (), None),
        "cpu": catalog.Workload("cpu", "cpu", "cpu", "", (), (), None),
        "density": catalog.Workload(
            "density",
            "hold",
            "density",
            "",
            (),
            (),
            None,
            default=False,
            level_lists=catalog.parse_levels("density", {"full": [1, 8], "quick": [1, 4]}),
            strategy="density",
        ),
        "net": shipped["net"],
        "ticks": catalog.Workload(
            "ticks",
            "syscall",
            "syscall",
            "",
            (),
            (),
            None,
            strategy="bursts",
            bursts=catalog.BurstPlan(ops=("null",), ms=5, blocks=4, quick_blocks=2),
        ),
    }


class FakeCanary:
    """The run's host canary without probes: the rounds (Settings.between_blocks) it was
    asked to measure in, in order."""

    calls: list[int] = []

    def __init__(self, bundle, run_dir, log):
        pass

    def pair(self, rnd: int) -> None:
        FakeCanary.calls.append(rnd)

    def close(self) -> None:
        pass

    def diagnosis(self) -> None:
        return None


def patch_fakes(monkeypatch, *, wall: bool = False) -> None:
    """The runner on the fake kinds and the fake clock (wall: time.time too, so every
    launch's `t` is the fake clock's)."""
    monkeypatch.setattr(runner, "REGISTRY", KINDS)
    monkeypatch.setattr(runner, "RunCanary", FakeCanary)
    FakeCanary.calls = []
    monkeypatch.setattr("bench.envs.REGISTRY", KINDS)
    monkeypatch.setattr(time, "monotonic", CLOCK)
    if wall:
        monkeypatch.setattr(time, "time", CLOCK)
    monkeypatch.setattr(runner.noise, "snapshot", lambda: {})
    monkeypatch.setattr(runner.provenance, "host_facts", lambda: {"cgroup_layout": "v2"})
    FakeEnv.calls = []
    FakeEnv.instances = []
    FakeEnv.interrupt = None
    FakeEnv.rng = np.random.default_rng(0)
    LOG.clear()


def make_run(tmp_path: Path, workloads: dict[str, catalog.Workload]):
    """run(envs, workloads_run, progress=None, **matrix) -> (manifest, records, runner)."""

    def go(envs: list[str], workloads_run=("syscall", "cpu"), progress=None, **settings):
        specs = [parse_env_spec(e) for e in envs]
        m = Matrix(
            envs=specs, workloads=list(workloads_run), baseline=specs[0].label, seed=3, **settings
        )
        cat = with_catalog(workloads, m.user_workloads)
        bundle = FakeBundle(tmp_path / "cache" / "bundles" / "x")
        run_dir = tmp_path / "run"
        run_dir.mkdir(parents=True, exist_ok=True)
        manifest = runner.new_manifest("r1", m, bundle, cat)
        manifest["created"] = time.time()
        kw = {"progress": progress} if progress else {}
        r = runner.Runner(m, run_dir, "r1", bundle, cat, manifest, log=LOG.append, **kw)
        r.run()
        return manifest, r.records, r

    return go


# ---------------------------------------------------------------- the held families' rounds

DENSITY_LEVEL_S = 50.0  # a fake density level: a round of [1, 4] takes 100 s per environment
NET_ROUND_S = 7.0
SERVER_ROUND_S = 3.0


def stand_ins(monkeypatch) -> list[tuple[str, str, object]]:
    """density's, the net server's and the user servers' rounds on the fake clock:
    calls -> [(family, env prefix, what)]; each measures a noisy figure."""
    from bench.families import density, net, userserver

    calls: list[tuple[str, str, object]] = []

    def held(env, workload: str) -> Launch | None:
        """An instance held through the round (stopped at its end, as the real rounds
        do); a failed Launch when it cannot start."""
        try:
            inst = env.start(HOLD, 10.0)
        except StartError as e:
            return Launch(status="failed", reason=f"did not start: {e}")
        ctrl_c(env, workload)
        inst.stop()
        return None

    def density_round(env, levels, timeout, reserve, log):
        calls.append(("density", env.ctx.prefix, list(levels)))
        CLOCK.now += DENSITY_LEVEL_S * len(levels)
        if failed := held(env, "density"):
            return failed
        recs = [
            {
                "op": f"n{n:02d}",
                "units": {"mem_accounted_mib": "MiB"},
                "metrics": {"mem_accounted_mib": 1.0 + FakeEnv.rng.normal(0, 0.2)},
            }
            for n in levels
        ]
        return Launch(records=recs)

    def density_warm_up(env, timeout):
        calls.append(("density", env.ctx.prefix, "warm-up"))
        CLOCK.now += 5.0  # a held instance started and stopped
        if failed := held(env, "density"):
            return failed
        return Launch(phases={"ready": 1_000_000})

    def net_round(env, bundle, args, timeout, log):
        calls.append(("net", env.ctx.prefix, list(args)))
        CLOCK.now += NET_ROUND_S
        if failed := held(env, "net"):
            return failed
        value = 30.0 * np.exp(FakeEnv.rng.normal(0, 0.05))
        rec = {"op": "tcp_rr", "metrics": {"p50_us": value}, "units": {"p50_us": "us"}}
        return Launch(records=[rec], net_path=f"loopback via {env.kind}")

    def server_round(env, client_env, uw, quick, timeout, log):
        calls.append(("userserver", env.ctx.prefix, uw.name))
        CLOCK.now += SERVER_ROUND_S
        if failed := held(env, uw.name):
            return failed
        value = 5000.0 * np.exp(FakeEnv.rng.normal(0, 0.05))
        args = ["--cd", "/", "--", "redis-benchmark", "-h", "10.0.0.2", "-p", "6379", "--csv"]
        return Launch(
            records=userrun_records(f'"SET","{value:.3f}"\n'),
            net_path=f"veth into {env.kind}",
            userrun_args=args,
        )

    monkeypatch.setattr(density, "run_round", density_round)
    monkeypatch.setattr(density, "warm_up", density_warm_up)
    monkeypatch.setattr(net, "run_round", net_round)
    monkeypatch.setattr(userserver, "run_server_round", server_round)
    return calls
