"""The runner: warm-ups, then rounds in which every cell runs once in a seeded shuffled
order (so drift spreads over all environments), adaptive stopping on precision or
budget, per-launch timeouts, every failure recorded with its reason, resumable."""

from __future__ import annotations

import math
import random
import shutil
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from bench import (
    analysis,
    density,
    footprint,
    interrupt,
    netbench,
    provenance,
    stats,
    userserver,
    userwork,
)
from bench.busy import busy_cpus
from bench.catalog import Workload
from bench.envs import REGISTRY
from bench.envs.base import LOCAL, Context, Environment, Launch
from bench.interrupt import Interrupted, check
from bench.matrix import EnvSpec, Matrix
from bench.metrics import cgroup, noise
from bench.scratch import new_scratch
from bench.store import SCHEMA_VERSION, SampleWriter, StoreWriteError, read_records, write_manifest

UNITS = {"_ms": "ms", "_mib": "MiB", "_ops": "ops", "nr_": "count", "pids_": "count"}


@dataclass(frozen=True)
class Cell:
    env: EnvSpec
    workload: str

    @property
    def key(self) -> str:
        return f"{self.env.label}|{self.workload}"


@dataclass
class Active:
    spec: EnvSpec
    env: Environment | None
    ok: bool
    reason: str = ""
    info: dict[str, Any] = field(default_factory=dict)


def _versions(kind_versions: dict[str, str], info: dict[str, Any]) -> dict[str, str]:
    """The kind's versions plus the runtime this environment runs (runsc's for
    docker:runtime=runsc, not only the daemon's runc)."""
    rt = info.get("runtime")
    if isinstance(rt, dict) and rt.get("name") and rt.get("version"):
        return {**kind_versions, str(rt["name"]): str(rt["version"])}
    return dict(kind_versions)


def _unit(metric: str) -> str:
    return next((u for k, u in UNITS.items() if k in metric), "")


def launch_records(launch: Launch, cell: Cell, base: dict[str, Any]) -> list[dict[str, Any]]:
    """One flat sample record per figure of a launch (or one failure record)."""
    out = []

    def rec(**kw):
        out.append(
            {**base, "status": "ok", "reason": "", "note": "", "exit_code": launch.exit_code, **kw}
        )

    for r in launch.records:
        note = r.get("note", "")
        for metric, value in r["metrics"].items():
            unit = r["units"][metric]
            rec(op=r["op"], metric=metric, value=value, unit=unit, source="probe", note=note)
    for err in launch.probe_errors:
        op = err.split(":", 1)[0].split("/")[-1]
        rec(op=op, metric=None, value=None, unit="", source="probe", status="failed", reason=err)
    for op, why in launch.op_failures:  # a user workload's failed benchmark
        rec(op=op, metric=None, value=None, unit="", source="probe", status="failed", reason=why)
    if launch.status != "ok":
        rec(
            op=None,
            metric=None,
            value=None,
            unit="",
            source="launch",
            status=launch.status,
            reason=failure_reason(launch),
            stderr_tail=launch.stderr_tail,
        )
        return out
    for name, ns in launch.phases.items():
        rec(op="phases", metric=f"{name}_ms", value=ns / 1e6, unit="ms", source="phase")
    for name, value in launch.cgroup.items():
        rec(op="cgroup", metric=name, value=value, unit=_unit(name), source="cgroup")
    for name, value in launch.host_side.items():
        rec(op="host_side", metric=name, value=value, unit=_unit(name), source="host")
    return out


def failure_reason(launch: Launch) -> str:
    """The reason, with the exit code and the last lines the instance wrote on stderr."""
    reason = launch.reason
    if launch.exit_code not in (None, 0) and "status" not in reason:
        reason += f" (exit status {launch.exit_code})"
    tail = [line for line in launch.stderr_tail.strip().splitlines() if line.strip()][-3:]
    if tail:
        reason += " — stderr: " + " | ".join(line.strip()[:200] for line in tail)
    return reason


def unreached(records: list[dict[str, Any]], manifest: dict[str, Any], cells: list[str]) -> dict:
    """Cells with a figure wider than its target: cell -> that figure's relative CI
    half-width (the widest, when several). A cell with no successful figure at all has
    an infinite width; figures noisy by nature have no target (analysis.precision_target)."""
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


def new_manifest(run_id: str, m: Matrix, bundle, workloads: dict[str, Workload]) -> dict:
    """A new run's manifest: provenance, the plan, the probes, noise at the start."""
    start = noise.snapshot()
    pinned = {e.label: bool(e.options.get("cpuset")) for e in m.envs}
    warnings = noise.warnings(start)
    if not any(pinned.values()):
        warnings.append("probes are not pinned (no cpuset option): the scheduler may move them")
    return {
        "schema_version": SCHEMA_VERSION,
        "run_id": run_id,
        "created": time.time(),
        "host": (host := provenance.host_facts()),
        "targets": {LOCAL: host},  # host facts per target machine; remote kinds add theirs
        "matrix": m.to_dict(),
        "bundle": bundle.describe(),
        "catalog": {
            n: {
                "probe": w.probe,
                "family": w.family,
                "metrics": {k: vars(x) for k, x in w.metrics.items()},
                "noisy": list(w.noisy),
                "precision_floor": w.precision_floor,
            }
            for n, w in workloads.items()
        },
        "noise": {"start": start, "pinned": pinned},
        "warnings": warnings,
    }


class Runner:
    def __init__(
        self,
        matrix: Matrix,
        run_dir: Path,
        run_id: str,
        bundle,
        workloads: dict[str, Workload],
        manifest: dict[str, Any],
        progress: Callable[[str, int, int], None] = lambda *a: None,
        log: Callable[[str], None] = print,
    ):
        self.m = matrix
        self.run_dir = run_dir
        self.run_id = run_id
        self.bundle = bundle
        self.workloads = workloads
        self.manifest = manifest
        self.progress = progress
        self.log = log
        self.records: list[dict[str, Any]] = read_records(run_dir)
        self.seq = 1 + max((r.get("launch", 0) for r in self.records), default=0)
        self.active: dict[str, Active] = {}
        self.write_error: str | None = None
        self.user = {u.name: u for u in matrix.user_workloads}  # run by userrun, parsed here
        self.ctx: Context | None = None
        # the hosts that run user servers' clients, per rootfs name: made on first use
        self.clients: dict[str, Active] = {}

    def _save(self, writer: SampleWriter | None = None, new=()) -> None:
        """Append samples (or just the manifest); a full disk is reported once, and
        what could not be written is held in memory and retried on the next save."""
        try:
            if writer:
                writer.append(new)
            else:
                write_manifest(self.run_dir, self.manifest)
        except StoreWriteError as e:
            if self.write_error is None:
                self.log(f"results not written: {e.strerror} (measuring goes on)")
            self.write_error = e.strerror
        else:
            if self.write_error:
                self.log("results written again")
            self.write_error = None

    # -- lifecycle -------------------------------------------------------------------
    def run(self) -> str:
        """Measure until done; returns the final status. Raises Interrupted on a signal,
        after cleaning up and marking the manifest."""
        scratch = new_scratch(self.run_id)
        ctx = Context(self.run_id, scratch, self.bundle.root.parent.parent, self.m.quick)
        self.ctx = ctx
        writer = SampleWriter(self.run_dir)
        self._start_clock()
        old = interrupt.install()
        status = "interrupted"
        try:
            self._start_envs(ctx, writer)
            with busy_cpus(self.m.busy_cpus):
                status = self._measure(writer)
            return status
        finally:
            interrupt.ignore()  # a second Ctrl-C must not cut the cleanup short
            try:
                self._stop_envs()
                self._remove_run_cgroups()
                shutil.rmtree(scratch, ignore_errors=True)
                self._finish(status, writer)
            finally:
                interrupt.restore(old)

    def _start_envs(self, ctx: Context, writer: SampleWriter) -> None:
        envs = self.manifest.setdefault("environments", {})
        for index, spec in enumerate(self.m.envs, 1):
            check()
            cls = REGISTRY[spec.kind]
            av = cls.probe(spec.options)
            act = Active(spec, None, av.ok, av.reason)
            if av.ok:
                env_ctx = ctx.for_env(index)  # its own scratch directory and name prefix
                env_ctx.scratch.mkdir(parents=True, exist_ok=True)
                env = cls(dict(spec.options), env_ctx)
                try:
                    self.log(f"preparing {spec.label} …")
                    env.prepare(self.bundle)
                    act.env = env
                    act.info = env.describe()
                except Interrupted:
                    env.cleanup()
                    raise
                except Exception as e:  # one broken environment must not stop the others
                    env.cleanup()
                    act.ok, act.reason = False, f"prepare failed: {type(e).__name__}: {e}"
            self.active[spec.label] = act
            target = cls.target(spec.options)
            targets = self.manifest.setdefault("targets", {})
            if target not in targets:
                targets[target] = cls.target_facts(spec.options)
            previous = envs.get(spec.label) or {}
            envs[spec.label] = {
                "target": target,
                "kind": spec.kind,
                "spec": spec.spec,
                "options": spec.options,
                "available": act.ok,
                "reason": act.reason,
                "versions": _versions(av.versions, act.info),
                "emulated": bool(act.env and act.env.emulated),
                **act.info,
            }
            if act.ok and act.env is not None:
                envs[spec.label]["disk"] = previous.get("disk") or self._disk(act.env)
            if not act.ok:
                self.log(f"unavailable: {spec.label}: {act.reason}")
        self._save()

    def _disk(self, env: Environment) -> dict[str, Any]:
        """The environment's disk footprint, once per run: its artefacts' sizes; in a run
        that measures density (the footprint study), also what one io launch's instance
        adds (an io launch before the rounds: seconds for a guest under TCG)."""
        io = None
        if "density" in self.m.workloads and "io" in self.workloads:
            io = self.workloads["io"].invocation(quick=self.m.quick, emulated=env.emulated)
        self.log(f"disk footprint of {env.kind} …")
        return footprint.disk_footprint(env, self.bundle, io=io, timeout=self.m.timeout)

    def _client(self, rootfs: str) -> Active:
        """The host environment that runs user servers' clients from `rootfs` (the
        environment's own tree: the same client bytes against every server), made and
        prepared on first use with a context of its own, removed with the environments."""
        if rootfs in self.clients:
            return self.clients[rootfs]
        assert self.ctx is not None
        spec = EnvSpec("host", {"rootfs": rootfs, "sampler": "off"}, f"client:{rootfs}")
        cls = REGISTRY["host"]
        av = cls.probe(spec.options)
        act = Active(spec, None, av.ok, av.reason)
        if av.ok:
            ctx = self.ctx.for_env(len(self.m.envs) + 1 + len(self.clients))
            ctx.scratch.mkdir(parents=True, exist_ok=True)
            env = cls(dict(spec.options), ctx)
            self.clients[rootfs] = act  # cleaned up with the others, whatever comes next
            try:
                self.log(f"preparing the client host on rootfs {rootfs} …")
                env.prepare(self.bundle)
                act.env = env
            except Interrupted:
                env.cleanup()
                raise
            except Exception as e:
                env.cleanup()
                act.ok, act.reason = False, f"prepare failed: {type(e).__name__}: {e}"
        self.clients[rootfs] = act
        return act

    def _server_round(self, act: Active, workload: str) -> Launch:
        """One round of a user server workload in `act`'s environment, its client on the
        host from the same rootfs."""
        assert act.env is not None
        client = self._client(str(act.spec.options["rootfs"]))
        if not client.ok or client.env is None:
            return Launch(status="failed", reason=f"no client host: {client.reason}")
        return userserver.run_server_round(
            act.env, client.env, self.user[workload], self.m.quick, self.m.timeout, self.log
        )

    def _stop_envs(self) -> None:
        for act in [*self.active.values(), *self.clients.values()]:
            if act.env:
                try:
                    act.env.cleanup()
                except Exception as e:  # keep cleaning the others; say what was left
                    self.log(f"cleanup of {act.spec.label} failed: {e}")

    def _remove_run_cgroups(self) -> None:
        """Whatever launch cgroup still carries this run's id (a launch whose teardown an
        engine error cut short): every launch of every kind names its cgroup so."""
        for path in cgroup.find_leftovers():
            if path.name.startswith(f"{cgroup.PREFIX}{self.run_id}-"):
                try:
                    cgroup.Cgroup.at(path).remove()
                except (cgroup.CgroupError, OSError) as e:
                    self.log(f"could not remove cgroup {path}: {e}")

    def _finish(self, status: str, writer: SampleWriter) -> None:
        self.manifest["status"] = status
        self.manifest["finished"] = time.time()
        self.manifest["wall_seconds"] = self.wall_before + time.monotonic() - self.t_session
        end = noise.snapshot()
        start = self.manifest.get("noise", {}).get("start", {})
        steal = None
        if start.get("proc_stat") and end.get("proc_stat"):
            steal = noise.steal_fraction(start["proc_stat"], end["proc_stat"])
        self.manifest.setdefault("noise", {})["end"] = end
        self.manifest["noise"]["steal_fraction"] = steal
        warnings = self.manifest.setdefault("warnings", [])
        for w in noise.warnings(end, steal=steal):
            if w not in warnings:
                warnings.append(w)
        self._save(writer)
        self._save()
        writer.close()
        if writer.pending or self.write_error:
            raise StoreWriteError(
                28,
                f"{len(writer.pending)} sample(s) and the final manifest could not be "
                f"written to {self.run_dir} ({self.write_error}); earlier samples are intact",
            )

    # -- measuring -------------------------------------------------------------------
    def _start_clock(self) -> None:
        """The budget is the run's wall clock: from the manifest's creation for a new run
        (bundle and harness cost included), plus what earlier sessions of a resumed run
        spent."""
        self.t_session = time.monotonic()
        self.wall_before = self.manifest.get("wall_seconds", 0.0)
        since = 0.0 if self.records else max(0.0, time.time() - self.manifest["created"])
        self.wall_before += since
        self.deadline = self.t_session + self.m.budget - self.wall_before

    def cells(self) -> list[Cell]:
        return [Cell(e, w) for e in self.m.envs for w in self.m.workloads]

    def _done(self) -> set[tuple[int, str]]:
        return {(r["round"], r["cell"]) for r in self.records}

    def _min_rounds_first(self) -> bool:
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

    def _round_cap(self, label: str) -> int:
        """Emulated guests measure no virtualisation overhead and cost seconds a boot:
        they get `emulated_rounds` rounds when the matrix sets it."""
        act = self.active[label]
        if act.env is not None and act.env.emulated and self.m.emulated_rounds:
            return self.m.emulated_rounds
        return self.m.max_rounds

    def _warmups(self, cell: Cell) -> int:
        """Warm-up launches of the cell's environment: `emulated_warmup` for an emulated
        guest where the matrix sets it, `warmup` otherwise."""
        env = self.active[cell.env.label].env
        if env is not None and env.emulated and self.m.emulated_warmup is not None:
            return self.m.emulated_warmup
        return self.m.warmup

    def _plan(self, rnd: int, cells: list[Cell]) -> list[Cell]:
        """The cells of round `rnd`: every cell up to `rounds`; after that only the
        cells with a figure still wider than its target, with the baseline's cells of
        the same workloads (their rounds pair with them)."""
        if rnd == 0:  # warm-up: `warmup` launches per environment, not counted
            per_env: dict[str, list[Cell]] = defaultdict(list)
            probes_first = sorted(cells, key=self._held)  # a density round is no warm-up
            for c in probes_first:
                if self.active[c.env.label].ok and len(per_env[c.env.label]) < self._warmups(c):
                    per_env[c.env.label].append(c)
            return [c for group in per_env.values() for c in group]
        cells = [c for c in cells if rnd <= self._round_cap(c.env.label)]
        if rnd <= self.m.rounds:
            return cells
        measurable = [c.key for c in cells if self.active[c.env.label].ok]
        left = unreached(self.records, self.manifest, measurable)
        wide = {c.workload for c in cells if c.key in left}
        base = self.m.baseline
        return [c for c in cells if c.key in left or (c.env.label == base and c.workload in wide)]

    def _estimate(self, cell: Cell) -> float:
        """Expected wall seconds of one launch of `cell`, from the launches so far."""
        mine = self.durations.get(cell.key)
        if mine:
            return sorted(mine)[len(mine) // 2]
        warm = self.warm.get(cell.env.label)
        act = self.active[cell.env.label]
        w = self.workloads[cell.workload]
        if w.family == "density" and warm and act.env is not None:  # a warm-up held one
            levels = w.levels(quick=self.m.quick, guest=act.env.one_instance_per_round)
            return density.round_seconds(levels, sorted(warm)[len(warm) // 2])
        same_env = [
            d for k, ds in self.durations.items() if k.startswith(cell.env.label + "|") for d in ds
        ]
        known = (
            same_env
            or self.warm.get(cell.env.label)
            or [d for ds in self.durations.values() for d in ds]
        )
        return sorted(known)[len(known) // 2] if known else 2.0

    def _remaining(self, rnd: int, rest: list[Cell], cells: list[Cell]) -> float:
        """Seconds still to go: the rest of this round and the minimum rounds after it."""
        ahead = sum(self._estimate(c) for c in rest)
        for r in range(max(rnd, 0) + 1, self.m.rounds + 1):
            ahead += sum(self._estimate(c) for c in self._plan(r, cells))
        if self._min_rounds_first():
            return ahead
        return min(ahead, max(0.0, self.deadline - time.monotonic()))

    def _measure(self, writer: SampleWriter) -> str:
        cells = self.cells()
        done = self._done()
        self.durations: dict[str, list[float]] = defaultdict(list)  # measured rounds
        self.warm: dict[str, list[float]] = defaultdict(list)  # warm-up, per environment
        started = time.monotonic()
        spent = self.manifest.get("measured_seconds", 0.0)
        self.manifest.setdefault("rounds_done", 0)
        first = 0 if self.m.warmup else 1
        min_first = self._min_rounds_first()
        if min_first:
            self.log(
                f"--quick with only {', '.join(self.m.workloads)} (outside the main job): "
                f"its {self.m.rounds} minimum rounds run whatever the {self.m.budget:g} s "
                "quick budget says (give --budget to bound the run)"
            )
        for rnd in range(first, self.m.max_rounds + 1):
            planned = self._plan(rnd, cells)
            if rnd > self.m.rounds and not planned:
                return self._stop("precision reached")
            ahead = sum(self._estimate(c) for c in planned if self.active[c.env.label].ok)
            over = rnd > 1 and time.monotonic() + ahead > self.deadline
            if over and not (min_first and rnd <= self.m.rounds):
                if rnd <= self.m.rounds:
                    self.manifest.setdefault("warnings", []).append(
                        f"the time budget ({self.m.budget:g} s) ended the run after {rnd - 1} "
                        f"of {self.m.rounds} rounds: figures have wider intervals than planned"
                    )
                return self._stop("time budget spent")
            order = list(planned)
            random.Random(self.m.seed * 1_000_003 + rnd).shuffle(order)
            self._round(rnd, order, cells, done, writer)
            if rnd < 1:
                continue
            self.manifest["rounds_done"] = rnd
            self.manifest["measured_seconds"] = spent + time.monotonic() - started
            self._save()
            if rnd == self.m.max_rounds:
                return self._stop("round cap reached")
        return self._stop("round cap reached")

    def _round(self, rnd, order: list[Cell], cells: list[Cell], done: set, writer) -> None:
        """Run one round's cells in `order`; an environment that runs a whole round in one
        instance (a guest) runs all its cells where the first of them stands."""
        pending = [c for c in order if (rnd, c.key) not in done]
        while pending:
            cell = pending[0]
            act = self.active[cell.env.label]
            if not act.ok and any(k == cell.key for _, k in done):
                pending.pop(0)  # an unavailable environment is recorded once per cell
                continue
            group = [cell]
            if act.env is not None and act.env.one_instance_per_round and not self._held(cell):
                group = [c for c in pending if c.env.label == cell.env.label and not self._held(c)]
            pending = [c for c in pending if c not in group]
            elapsed = time.monotonic() - self.t_session + self.wall_before
            left = self._remaining(rnd, pending, cells)
            what = f"round {rnd}" if rnd >= 1 else "warm-up"
            self.progress(f"{what}: {cell.env.label}", int(elapsed), int(elapsed + left) + 1)
            check()
            t0 = time.monotonic()
            new = self._launch(group, rnd)
            share = (time.monotonic() - t0) / len(group)
            for c in group:
                (self.durations[c.key] if rnd else self.warm[c.env.label]).append(share)
                done.add((rnd, c.key))
            self.records.extend(new)
            self._save(writer, new)

    def _stop(self, why: str) -> str:
        measurable = [c.key for c in self.cells() if self.active[c.env.label].ok]
        self.manifest["stop_reason"] = why
        self.manifest["unreached"] = unreached(self.records, self.manifest, measurable)
        check()
        return "complete"

    def _held(self, cell: Cell) -> bool:
        """A cell measured on held instances (density, the net server), not by launching
        a probe to completion."""
        user = self.user.get(cell.workload)
        return self.workloads[cell.workload].family in ("density", "net") or bool(
            user and user.server
        )

    def _launch(self, group: list[Cell], rnd: int) -> list[dict[str, Any]]:
        """Launch the cells of one environment (one instance for the whole group when the
        kind runs a round in one instance) and turn each launch into records."""
        act = self.active[group[0].env.label]
        emulated = bool(act.env and act.env.emulated)
        bases = []
        for cell in group:
            bases.append(
                {
                    "run_id": self.run_id,
                    "round": rnd,
                    "cell": cell.key,
                    "env": cell.env.label,
                    "env_kind": cell.env.kind,
                    "spec": cell.env.spec,
                    "options": cell.env.options,
                    "emulated": emulated,
                    "workload": cell.workload,
                    "launch": self.seq,
                    "t": time.time(),
                }
            )
            self.seq += 1
        if not act.ok or act.env is None:
            fail = Launch(status="failed", reason=f"environment unavailable: {act.reason}")
            launches = [fail] * len(group)
        elif self.workloads[group[0].workload].family == "density" and rnd == 0:
            bases[0]["args"] = "warm-up: one instance held"  # a whole ramp warms no more
            launches = [density.warm_up(act.env, self.m.timeout)]
        elif self.workloads[group[0].workload].family == "density":
            w = self.workloads[group[0].workload]
            levels = w.levels(quick=self.m.quick, guest=act.env.one_instance_per_round)
            bases[0]["args"] = "levels=" + ",".join(map(str, levels))
            launches = [
                density.run_round(act.env, levels, self.m.timeout, self.m.memory_reserve, self.log)
            ]
        elif self._held(group[0]) and group[0].workload in self.user:  # a user server held
            launch = self._server_round(act, group[0].workload)
            inv = self.workloads[group[0].workload].invocation(
                quick=self.m.quick, emulated=emulated
            )
            bases[0]["args"] = " ".join(inv.args)  # the client's, {host} and {port} unfilled:
            # the same in every environment, so ratios pair them (the filled ones: raw/)
            if launch.net_path:
                self.manifest["environments"][act.spec.label]["net_path"] = launch.net_path
            launches = [launch]
        elif self._held(group[0]):  # the net server held, the client on the host
            inv = self.workloads[group[0].workload].invocation(
                quick=self.m.quick, emulated=emulated
            )
            bases[0]["args"] = " ".join(inv.args)
            launch = netbench.run_round(act.env, self.bundle, inv.args, self.m.timeout, self.log)
            if launch.net_path:
                self.manifest["environments"][act.spec.label]["net_path"] = launch.net_path
            launches = [launch]
        else:
            invs = [
                self.workloads[c.workload].invocation(quick=self.m.quick, emulated=emulated)
                for c in group
            ]
            for base, inv in zip(bases, invs, strict=True):
                base["args"] = " ".join(inv.args)
            try:
                launches = act.env.launch_round(invs, self.m.timeout)
            except Exception as e:  # an engine that went away: record, go on
                launches = [Launch(status="failed", reason=f"{type(e).__name__}: {e}")] * len(group)
        out = []
        for cell, base, launch in zip(group, bases, launches, strict=True):
            if cell.workload in self.user:
                launch = self._user_launch(launch, cell, base)
            out.extend(launch_records(launch, cell, base))
        return out

    def _user_launch(self, launch: Launch, cell: Cell, base: dict[str, Any]) -> Launch:
        """A user workload's launch read by its parser; its output kept under raw/."""
        described = self.manifest.get("environments", {}).get(cell.env.label, {})
        env = {
            "env": cell.env.label,
            "kind": cell.env.kind,
            "spec": cell.env.spec,
            "versions": described.get("versions", {}),
            "emulated": bool(described.get("emulated")),
            "rootfs": (described.get("rootfs") or {}).get("key"),
            "run_id": self.run_id,
            "round": base["round"],
            "launch": base["launch"],
        }
        at = userwork.raw_path(
            self.run_dir, cell.workload, cell.env.label, base["round"], base["launch"]
        )
        args = (
            launch.userrun_args
            or self.workloads[cell.workload].invocation(quick=self.m.quick, emulated=False).args
        )  # a server's client: the argv it ran with, its address in
        return userwork.read_launch(launch, self.user[cell.workload], args, at, env)
