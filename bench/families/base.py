"""The interface of a run strategy (a family): how the runner asks one to measure.

A strategy says whether it holds instances (`holds`: a round of its own per cell, never
part of a guest's one-instance round and never the warm-up where a launched cell can be),
runs its warm-up and one round on a prepared environment (`warm_up`, `round`: a Round of
typed launches, one per cell, plus what the round learned about the environment), may
estimate a round's seconds from its warm-up (`estimate`), reads each launch before it is
recorded (`read`), and names the report section that shows it (`section`: a key of the
report's sections). The runner knows nothing else about it.

`Launched` is the strategy of workloads run to completion in a launched instance (the
catalog's probes, a user's command): several cells of one environment may share a round
(a guest runs them all in one boot).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from bench.catalog import Workload
from bench.envs.base import Environment, Launch
from bench.matrix import EnvSpec, UserWorkload


@dataclass(frozen=True)
class Settings:
    """What the run gives every strategy, the same for all its rounds."""

    quick: bool
    timeout: float  # seconds per launch
    memory_reserve: float  # the share of the host's memory a ramp never goes below
    bundle: Any  # the probes' bundle (bench/bundle.py): bundle.probes[name] is a binary
    run_dir: Path
    run_id: str
    workloads: dict[str, Workload]  # the catalog, the matrix's user workloads included
    user: dict[str, UserWorkload]  # the matrix's user workloads by name
    log: Callable[[str], None]
    # rootfs name -> (a prepared host environment on it, or None; why not): made once by
    # the runner, cleaned up with the run's environments (a user server's client host)
    client_host: Callable[[str], tuple[Environment | None, str]]
    # a shared round calls it between cycles of its blocks with the round's number: the
    # runner records the host canary there (the machine's speed through the run)
    between_blocks: Callable[[int], None] = lambda rnd: None


@dataclass(frozen=True)
class Job:
    """One call of a strategy: an environment and the cells it measures together."""

    spec: EnvSpec
    env: Environment
    workloads: list[Workload]  # one per cell, in order


@dataclass
class Round:
    """What a warm-up or a round gave: one launch per cell of the job, in order, the
    `args` each one's records carry (None: none), and the network path its client took
    to the environment ("" when the round learned none)."""

    launches: list[Launch]
    args: list[str | None]
    net_path: str = ""


class Family:
    """A way of measuring; subclasses set the class attributes and implement round()."""

    name: ClassVar[str]  # its key in bench.families.REGISTRY (a workload's `strategy`)
    section: ClassVar[str]  # the report section that shows it
    holds: ClassVar[bool]  # measured on held instances, one cell a round
    # a round spans the cells of one workload in every environment at once (a held set:
    # round_all); the runner groups them (an emulated guest runs them in its one boot)
    shared: ClassVar[bool] = False
    # a workload whose one launch's disk footprint a run of this strategy records
    # (bench/footprint.py: the footprint study), None when it records none
    footprint_workload: ClassVar[str | None] = None

    def warm_up(self, s: Settings, job: Job) -> Round:
        """The environment's warm-up (not counted): by default a round."""
        return self.round(s, job)

    def round(self, s: Settings, job: Job) -> Round:
        raise NotImplementedError(f"{type(self).__name__} has no round()")

    def round_all(self, s: Settings, jobs: list[Job], *, rnd: int) -> list[Round]:
        """A shared strategy's round over several environments (one job each, one cell of
        the same workload): one Round per job, in order."""
        raise NotImplementedError(f"{type(self).__name__} has no round_all()")

    def estimate(
        self, w: Workload, env: Environment, quick: bool, warm: list[float]
    ) -> float | None:
        """Expected seconds of one round of `w` in `env` from its warm-ups' seconds, when
        a round is no launch like the warm-up's; None: as long as the launches timed."""
        return None

    def read(
        self, s: Settings, launch: Launch, base: dict[str, Any], described: dict[str, Any]
    ) -> Launch:
        """A launch as it is recorded: `base` is its sample fields (round, launch, env,
        workload...), `described` its environment as the manifest describes it."""
        return launch


class Launched(Family):
    """Each cell's invocation run to completion; a kind that runs a round in one instance
    runs the whole job there (Environment.launch_round)."""

    holds = False

    def round(self, s: Settings, job: Job) -> Round:
        invs = [w.invocation(quick=s.quick, emulated=job.env.emulated) for w in job.workloads]
        args: list[str | None] = [" ".join(inv.args) for inv in invs]
        try:
            launches = job.env.launch_round(invs, s.timeout)
        except Exception as e:  # an engine that went away: record, go on
            launches = [Launch(status="failed", reason=f"{type(e).__name__}: {e}")] * len(invs)
        return Round(launches, args)
