"""The runner: warm-ups, then rounds in which every cell runs once in a seeded shuffled
order (so drift spreads over all environments), adaptive stopping on precision or
budget, per-launch timeouts, every failure recorded with its reason, resumable.

Here: the environments' lifecycle (prepare, clean up, also on Ctrl-C), the rounds'
execution and the recording of samples and manifest. Which cells a round runs and the
budget: bench/schedule.py. How a cell is measured: its workload's strategy, looked up in
bench/families/ REGISTRY; the runner names none."""

from __future__ import annotations

import random
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import families, footprint, interrupt, provenance
from bench.busy import busy_cpus
from bench.canary import RunCanary
from bench.catalog import Workload
from bench.envs import REGISTRY
from bench.envs.base import LOCAL, Context, Environment, Launch
from bench.families.base import Family, Job, Round, Settings
from bench.interrupt import Interrupted, check
from bench.matrix import EnvSpec, Matrix
from bench.metrics import cgroup, noise
from bench.schedule import Active, Cell, Schedule, unreached
from bench.scratch import new_scratch
from bench.store import SCHEMA_VERSION, SampleWriter, StoreWriteError, read_records, write_manifest

# what a burst's record adds (families/bursts.py); cpu_ns: the CPU time the probe ran in a
# windowed burst (the cpu probe: cpu_ns / the window is the share of a CPU it got)
BURST_FIELDS = ("block", "set", "ms", "at_ms", "cpu_ns")
UNITS = {"_ms": "ms", "_mib": "MiB", "_ops": "ops", "nr_": "count", "pids_": "count"}


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
        burst = {k: r[k] for k in BURST_FIELDS if k in r}  # a burst: its block, its set
        source = "burst" if burst else "probe"
        for metric, value in r["metrics"].items():
            unit = r["units"][metric]
            rec(
                op=r["op"], metric=metric, value=value, unit=unit, source=source, note=note, **burst
            )
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


def pairing(records: list[dict[str, Any]], baseline: str) -> tuple[float | None, int]:
    """How close in time the burst design paired: the median over every burst of an
    environment of the ms between it and the baseline's burst of the same block
    (`at_ms`), and the number of blocks run (None, 0 without bursts)."""
    at: dict[tuple, float] = {}
    for r in records:
        if r.get("source") == "burst" and r.get("env") == baseline and "at_ms" in r:
            at[r["round"], r.get("set", ""), r["block"]] = r["at_ms"]
    gaps, blocks = [], set()
    for r in records:
        if r.get("source") != "burst" or "at_ms" not in r:
            continue
        key = (r["round"], r.get("set", ""), r["block"])
        blocks.add(key)
        if r.get("env") != baseline and key in at:
            gaps.append(abs(r["at_ms"] - at[key]))
    return (float(sorted(gaps)[len(gaps) // 2]) if gaps else None), len(blocks)


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
                "strategy": w.strategy,
                "family": w.group,  # the report's grouping label
                "phase_figures": w.phase_figures,
                "writes_data": w.writes_data,
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
        self.ctx: Context | None = None
        # the hosts that run user servers' clients, per rootfs name: made on first use
        self.clients: dict[str, Active] = {}
        self.sched = Schedule(matrix, workloads, self.active, self.records, manifest)
        self.settings = Settings(
            quick=matrix.quick,
            timeout=matrix.timeout,
            memory_reserve=matrix.memory_reserve,
            bundle=bundle,
            run_dir=run_dir,
            run_id=run_id,
            workloads=workloads,
            user={u.name: u for u in matrix.user_workloads},
            log=log,
            client_host=self._client_host,
            between_blocks=self._canary_pair,
        )
        self.canary: RunCanary | None = None

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
        self.sched.start_clock()
        old = interrupt.install()
        status = "interrupted"
        try:
            self._start_envs(ctx, writer)
            self.canary = RunCanary(self.bundle, self.run_dir, self.log)
            with busy_cpus(self.m.busy_cpus):
                status = self._measure(writer)
            return status
        finally:
            interrupt.ignore()  # a second Ctrl-C must not cut the cleanup short
            try:
                if self.canary is not None:
                    self.canary.close()
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
        of a strategy that asks for it (density: the footprint study), also what one
        launch of its footprint workload (io) adds (a launch before the rounds: seconds
        for a guest under TCG)."""
        io = None
        asked = [self._family(w).footprint_workload for w in self.m.workloads]
        name = next((n for n in asked if n and n in self.workloads), None)
        if name:
            io = self.workloads[name].invocation(quick=self.m.quick, emulated=env.emulated)
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

    def _client_host(self, rootfs: str) -> tuple[Environment | None, str]:
        """Settings.client_host: the prepared client host on `rootfs`, or None and why."""
        client = self._client(rootfs)
        return (client.env if client.ok else None), client.reason

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

    def _canary_pair(self, rnd: int) -> None:
        if self.canary is not None:
            self.canary.pair(rnd)

    def _canary_view(self) -> dict[str, Any] | None:
        """The canary's diagnosis, with how far apart a burst and the baseline's of its
        block were (every_ms, the median over the run's pairs) and how many blocks ran."""
        found = self.canary.diagnosis() if self.canary is not None else None
        if found is None:
            return None
        found["every_ms"], found["blocks"] = pairing(self.records, self.m.baseline)
        return found

    def _finish(self, status: str, writer: SampleWriter) -> None:
        self.manifest["status"] = status
        self.manifest["finished"] = time.time()
        self.manifest["wall_seconds"] = self.sched.elapsed()
        end = noise.snapshot()
        start = self.manifest.get("noise", {}).get("start", {})
        steal = None
        if start.get("proc_stat") and end.get("proc_stat"):
            steal = noise.steal_fraction(start["proc_stat"], end["proc_stat"])
        self.manifest.setdefault("noise", {})["end"] = end
        self.manifest["noise"]["steal_fraction"] = steal
        if (seen := self._canary_view()) is not None:
            self.manifest["noise"]["canary"] = seen
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
    def _family(self, workload: str) -> Family:
        return families.of(self.workloads[workload])

    def _done(self) -> set[tuple[int, str]]:
        return {(r["round"], r["cell"]) for r in self.records}

    def _measure(self, writer: SampleWriter) -> str:
        cells = self.sched.cells()
        done = self._done()
        started = time.monotonic()
        spent = self.manifest.get("measured_seconds", 0.0)
        self.manifest.setdefault("rounds_done", 0)
        first = 0 if self.m.warmup else 1
        min_first = self.sched.min_rounds_first()
        if min_first:
            self.log(
                f"--quick with only {', '.join(self.m.workloads)} (outside the main job): "
                f"its {self.m.rounds} minimum rounds run whatever the {self.m.budget:g} s "
                "quick budget says (give --budget to bound the run)"
            )
        for rnd in range(first, self.m.max_rounds + 1):
            planned = self.sched.plan(rnd, cells)
            if rnd > self.m.rounds and not planned:
                return self._stop("precision reached")
            over = self.sched.over_budget(rnd, planned)
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
        instance (a guest) runs all its launched cells where the first of them stands."""
        pending = [c for c in order if (rnd, c.key) not in done]
        while pending:
            cell = pending[0]
            act = self.active[cell.env.label]
            if not act.ok and any(k == cell.key for _, k in done):
                pending.pop(0)  # an unavailable environment is recorded once per cell
                continue
            group = [cell]
            holds = self.sched.holds
            shared = self._shared(cell, rnd)
            if shared:  # one held set: every such environment
                group = [c for c in pending if c.workload == cell.workload and self._shared(c, rnd)]
            elif act.env is not None and act.env.one_instance_per_round and not holds(cell):
                group = [c for c in pending if c.env.label == cell.env.label and not holds(c)]
            pending = [c for c in pending if c not in group]
            elapsed = self.sched.elapsed()
            left = self.sched.remaining(rnd, pending, cells)
            what = f"round {rnd}" if rnd >= 1 else "warm-up"
            self.progress(f"{what}: {cell.env.label}", int(elapsed), int(elapsed + left) + 1)
            check()
            t0 = time.monotonic()
            new = self._launch_shared(group, rnd) if shared else self._launch(group, rnd)
            if not shared and rnd >= 1:
                new += self._paired_starts(group, new, rnd)
            share = (time.monotonic() - t0) / len(group)
            for c in group:
                self.sched.timed(rnd, c, share)
                done.add((rnd, c.key))
            self.records.extend(new)
            self._save(writer, new)

    def _stop(self, why: str) -> str:
        self.manifest["stop_reason"] = why
        self.manifest["unreached"] = unreached(self.records, self.manifest, self.sched.measurable())
        check()
        return "complete"

    def _base(self, cell: Cell, rnd: int, env: EnvSpec | None = None) -> dict[str, Any]:
        """A new launch's sample fields: of `cell`, in environment `env` (default the
        cell's own; a start's baseline partner is recorded under the cell)."""
        env = env or cell.env
        act = self.active[env.label]
        self.seq += 1
        return {
            "run_id": self.run_id,
            "round": rnd,
            "cell": cell.key,
            "env": env.label,
            "env_kind": env.kind,
            "spec": env.spec,
            "options": env.options,
            "emulated": bool(act.env and act.env.emulated),
            "workload": cell.workload,
            "launch": self.seq - 1,
            "t": time.time(),
        }

    def _shared(self, cell: Cell, rnd: int) -> bool:
        """The cell is measured in a held set across environments (its strategy's
        round_all): a counted round of a prepared environment that is no emulated guest
        (schedule.Schedule.holds: a guest runs it in its round's one boot)."""
        act = self.active[cell.env.label]
        return rnd >= 1 and act.ok and self.sched.holds(cell) and self._family(cell.workload).shared

    def _launch_shared(self, group: list[Cell], rnd: int) -> list[dict[str, Any]]:
        """One held set of the group's cells (one workload, one cell per environment)."""
        family = self._family(group[0].workload)
        w = self.workloads[group[0].workload]
        acts = [self.active[c.env.label] for c in group]
        jobs = [Job(act.spec, act.env, [w]) for act in acts]
        out = []
        for cell, result in zip(group, family.round_all(self.settings, jobs, rnd=rnd), strict=True):
            fields = self._base(cell, rnd)
            if result.args[0] is not None:
                fields["args"] = result.args[0]
            described = self.manifest.get("environments", {}).get(cell.env.label, {})
            launch = family.read(self.settings, result.launches[0], fields, described)
            out.extend(launch_records(launch, cell, fields))
        return out

    def _paired_starts(
        self, group: list[Cell], new: list[dict[str, Any]], rnd: int
    ) -> list[dict[str, Any]]:
        """Startup stays per launch, and each environment's launch of a workload whose
        phases are its figures is paired with a launch of the baseline right after it:
        both launches' phase records carry the environment's set (its label) and block
        1, so analysis pairs them within the round (the partner is no figure of the
        baseline's own, and only its phases are recorded). Returns the partner's records."""
        base = self.active.get(self.m.baseline)
        if base is None or not base.ok or base.env is None:
            return []
        out = []
        for cell in group:
            w = self.workloads[cell.workload]
            if cell.env.label == self.m.baseline or not w.phase_figures:
                continue
            mine = [r for r in new if r["cell"] == cell.key and r["source"] == "phase"]
            if not mine:  # the launch failed: nothing to pair
                continue
            for r in mine:
                r.update(set=cell.env.label, block=1)
            family = self._family(cell.workload)
            result = family.round(self.settings, Job(base.spec, base.env, [w]))
            fields = self._base(cell, rnd, base.spec)
            launch = family.read(self.settings, result.launches[0], fields, {})
            for r in launch_records(launch, cell, fields):
                if r["source"] == "phase":
                    out.append({**r, "set": cell.env.label, "block": 1})
        return out

    def _launch(self, group: list[Cell], rnd: int) -> list[dict[str, Any]]:
        """The warm-up (round 0) or a round of the group's cells, all of one environment,
        by their strategy; what the round learned about the environment recorded; each
        launch read by its cell's strategy and turned into records."""
        act = self.active[group[0].env.label]
        bases = [self._base(cell, rnd) for cell in group]
        if not act.ok or act.env is None:
            fail = Launch(status="failed", reason=f"environment unavailable: {act.reason}")
            result = Round([fail] * len(group), [None] * len(group))
        else:
            family = self._family(group[0].workload)
            job = Job(act.spec, act.env, [self.workloads[c.workload] for c in group])
            run = family.warm_up if rnd == 0 else family.round
            result = run(self.settings, job)
            if result.net_path:  # facts the round learned about the environment
                self.manifest["environments"][act.spec.label]["net_path"] = result.net_path
        described = self.manifest.get("environments", {}).get(group[0].env.label, {})
        out = []
        rows = zip(group, bases, result.launches, result.args, strict=True)
        for cell, base, launch, args in rows:
            if args is not None:
                base["args"] = args
            launch = self._family(cell.workload).read(self.settings, launch, base, described)
            out.extend(launch_records(launch, cell, base))
        return out
