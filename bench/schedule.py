"""The runner's schedule: which cells a round runs (warm-up, the minimum rounds, then only
the cells whose figures are still wider than their target, with their baseline), each
environment's round cap and warm-up count, and the time budget: how long a launch is
expected to take and how many seconds the run still has ahead. Pure bookkeeping on the
launches timed so far; the runner (bench/runner.py) launches and records."""

from __future__ import annotations

import math
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from bench import analysis, families, stats
from bench.catalog import Workload
from bench.envs.base import Environment
from bench.matrix import EnvSpec, Matrix


@dataclass(frozen=True)
class Cell:
    env: EnvSpec
    workload: str

    @property
    def key(self) -> str:
        return f"{self.env.label}|{self.workload}"


@dataclass
class Active:
    """An environment as the run holds it: prepared (env) or why it is not (reason)."""

    spec: EnvSpec
    env: Environment | None
    ok: bool
    reason: str = ""
    info: dict[str, Any] = field(default_factory=dict)


def unreached(records: list[dict[str, Any]], manifest: dict[str, Any], cells: list[str]) -> dict:
    """Cells with a figure wider than its target: cell -> that figure's relative CI
    half-width (the widest, when several). A cell with no successful figure at all has
    an infinite width; figures noisy by nature have no target (analysis.precision_target)."""
    import pandas as pd  # only once there is something to read: not at start-up

    worst = dict.fromkeys(cells, math.inf)
    if records:
        data = analysis.measured(pd.DataFrame.from_records(records))
        for (env, workload, op, metric), by_rnd in analysis.per_round(data).items():
            cell = f"{env}|{workload}"
            if cell not in worst:
                continue
            worst[cell] = 0.0 if worst[cell] == math.inf else worst[cell]
            target = analysis.precision_target(manifest, workload, op, metric)
            width = stats.ci_halfwidth_rel(stats.summarize(list(by_rnd.values())))
            if target is not None and width > target:
                worst[cell] = max(worst[cell], width)
    return {c: w for c, w in worst.items() if w > 0}


class Schedule:
    """The plan of a run over `active` environments (filled by the runner as it prepares
    them); `records` and `manifest` are the runner's, read for the precision reached."""

    def __init__(
        self,
        m: Matrix,
        workloads: dict[str, Workload],
        active: dict[str, Active],
        records: list[dict[str, Any]],
        manifest: dict[str, Any],
    ):
        self.m = m
        self.workloads = workloads
        self.active = active
        self.records = records
        self.manifest = manifest
        self.durations: dict[str, list[float]] = defaultdict(list)  # measured rounds
        self.warm: dict[str, list[float]] = defaultdict(list)  # warm-up, per environment

    def cells(self) -> list[Cell]:
        return [Cell(e, w) for e in self.m.envs for w in self.m.workloads]

    def holds(self, cell: Cell) -> bool:
        """A cell measured on held instances (its strategy's), not by launching a probe
        to completion: a round of its own, never a warm-up where a launch can be one. An
        emulated guest runs a shared strategy's workloads (the burst design) launched in
        its round's one boot instead (bench/families/bursts.py says why)."""
        family = families.of(self.workloads[cell.workload])
        if family.shared and self._emulated(cell):
            return False
        return family.holds

    # -- the budget ----------------------------------------------------------------------
    def start_clock(self) -> None:
        """The budget is the run's wall clock: from the manifest's creation for a new run
        (bundle and harness cost included), plus what earlier sessions of a resumed run
        spent."""
        self.t_session = time.monotonic()
        self.wall_before = self.manifest.get("wall_seconds", 0.0)
        since = 0.0 if self.records else max(0.0, time.time() - self.manifest["created"])
        self.wall_before += since
        self.deadline = self.t_session + self.m.budget - self.wall_before

    def elapsed(self) -> float:
        """Wall seconds of the run so far, earlier sessions included."""
        return time.monotonic() - self.t_session + self.wall_before

    def timed(self, rnd: int, cell: Cell, seconds: float) -> None:
        """A launch of `cell` in round `rnd` took `seconds` (its share of a group's)."""
        (self.durations[cell.key] if rnd else self.warm[cell.env.label]).append(seconds)

    def min_rounds_first(self) -> bool:
        """A quick run whose workloads are all outside the main job (catalog `default =
        false`: density, net) on --quick's default budget, not one the user gave: its
        minimum rounds are not cut by that budget (a density round of four environments
        takes about all of it, and fewer than `rounds` leave no 95% interval); rounds
        beyond them only while the budget lasts. A given --budget always holds."""
        named = [self.workloads[w] for w in self.m.workloads if w in self.workloads]
        return bool(
            self.m.quick
            and self.m.budget_from_quick
            and named
            and not any(w.default for w in named)
        )

    def over_budget(self, rnd: int, planned: list[Cell]) -> bool:
        """Would round `rnd` end past the deadline (the first round always runs)?"""
        ahead = sum(self.estimate(c) for c in planned if self.active[c.env.label].ok)
        return rnd > 1 and time.monotonic() + ahead > self.deadline

    def estimate(self, cell: Cell) -> float:
        """Expected wall seconds of one launch of `cell`, from the launches so far."""
        mine = self.durations.get(cell.key)
        if mine:
            return sorted(mine)[len(mine) // 2]
        warm = self.warm.get(cell.env.label)
        act = self.active[cell.env.label]
        w = self.workloads[cell.workload]
        if warm and act.env is not None:  # a strategy that times its rounds from a warm-up
            own = families.of(w).estimate(w, act.env, self.m.quick, warm)
            if own is not None:
                return own
        same_env = [
            d for k, ds in self.durations.items() if k.startswith(cell.env.label + "|") for d in ds
        ]
        known = (
            same_env
            or self.warm.get(cell.env.label)
            or [d for ds in self.durations.values() for d in ds]
        )
        return sorted(known)[len(known) // 2] if known else 2.0

    def remaining(self, rnd: int, rest: list[Cell], cells: list[Cell]) -> float:
        """Seconds still to go: the rest of this round and the minimum rounds after it."""
        ahead = sum(self.estimate(c) for c in rest)
        for r in range(max(rnd, 0) + 1, self.m.rounds + 1):
            ahead += sum(self.estimate(c) for c in self.plan(r, cells))
        if self.min_rounds_first():
            return ahead
        return min(ahead, max(0.0, self.deadline - time.monotonic()))

    # -- the rounds ----------------------------------------------------------------------
    def round_cap(self, label: str) -> int:
        """Emulated guests measure no virtualisation overhead and cost seconds a boot:
        they get `emulated_rounds` rounds when the matrix sets it."""
        act = self.active[label]
        if act.env is not None and act.env.emulated and self.m.emulated_rounds:
            return self.m.emulated_rounds
        return self.m.max_rounds

    def warmups(self, cell: Cell) -> int:
        """Warm-up launches of the cell's environment: `emulated_warmup` for an emulated
        guest where the matrix sets it, `warmup` otherwise."""
        env = self.active[cell.env.label].env
        if env is not None and env.emulated and self.m.emulated_warmup is not None:
            return self.m.emulated_warmup
        return self.m.warmup

    def plan(self, rnd: int, cells: list[Cell]) -> list[Cell]:
        """The cells of round `rnd`: every cell up to `rounds`; after that only the
        cells with a figure still wider than its target, with the baseline's cells of
        the same workloads (their rounds pair with them)."""
        if rnd == 0:  # warm-up: `warmup` launches per environment, not counted
            per_env: dict[str, list[Cell]] = defaultdict(list)
            launched_first = sorted(cells, key=self.holds)  # a held round is no warm-up
            for c in launched_first:
                if self.active[c.env.label].ok and len(per_env[c.env.label]) < self.warmups(c):
                    per_env[c.env.label].append(c)
            return [c for group in per_env.values() for c in group]
        cells = [c for c in cells if rnd <= self.round_cap(c.env.label)]
        if rnd > 1 and not self._guests_fit([c for c in cells if self._emulated(c)]):
            cells = [c for c in cells if not self._emulated(c)]
        if rnd <= self.m.rounds:
            return cells
        measurable = [c.key for c in cells if self.active[c.env.label].ok]
        left = unreached(self.records, self.manifest, measurable)
        wide = {c.workload for c in cells if c.key in left}
        base = self.m.baseline
        return [c for c in cells if c.key in left or (c.env.label == base and c.workload in wide)]

    def _emulated(self, cell: Cell) -> bool:
        env = self.active[cell.env.label].env
        return env is not None and env.emulated

    def _guests_fit(self, guests: list[Cell]) -> bool:
        """Emulated guests run on a budget share of their own (matrix emulated_share, 0:
        none): a round of theirs is started only if what they have taken so far (warm-ups
        included) plus its estimate stays within it; they never hold the others back. A
        quick run outside the main job (min_rounds_first) keeps its minimum rounds."""
        if not self.m.emulated_share or not guests or self.min_rounds_first():
            return True
        labels = {c.env.label for c in guests}
        spent = sum(sum(self.warm.get(label, [])) for label in labels)
        spent += sum(sum(ds) for k, ds in self.durations.items() if k.split("|")[0] in labels)
        ahead = sum(self.estimate(c) for c in guests)
        return spent + ahead <= self.m.emulated_share * self.m.budget

    def measurable(self) -> list[str]:
        return [c.key for c in self.cells() if self.active[c.env.label].ok]
