"""The runner: warm-ups, then rounds in which every cell runs once in a seeded shuffled
order (so drift spreads over all environments), adaptive stopping on precision or
budget, per-launch timeouts, every failure recorded with its reason, resumable."""

from __future__ import annotations

import math
import random
import shutil
import signal
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import provenance, stats
from bench.catalog import Workload
from bench.envs import REGISTRY
from bench.envs.base import Context, Environment, Launch
from bench.matrix import EnvSpec, Matrix
from bench.metrics import noise
from bench.scratch import new_scratch
from bench.store import SCHEMA_VERSION, SampleWriter, StoreWriteError, read_records, write_manifest

UNITS = {"_ms": "ms", "_mib": "MiB", "_ops": "ops", "nr_": "count", "pids_": "count"}


class Interrupted(Exception):  # noqa: N818 - it is a signal, not an error
    """SIGINT or SIGTERM arrived: stop, clean up, keep what was measured."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.exit_code = 128 + signum


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


def _unit(metric: str) -> str:
    return next((u for k, u in UNITS.items() if k in metric), "")


def launch_records(launch: Launch, cell: Cell, base: dict[str, Any]) -> list[dict[str, Any]]:
    """One flat sample record per figure of a launch (or one failure record)."""
    out = []

    def rec(**kw):
        out.append({**base, "status": "ok", "reason": "", "note": "", **kw})

    for r in launch.records:
        note = r.get("note", "")
        for metric, value in r["metrics"].items():
            unit = r["units"][metric]
            rec(op=r["op"], metric=metric, value=value, unit=unit, source="probe", note=note)
    for err in launch.extra.get("probe_errors", []):
        op = err.split(":", 1)[0].split("/")[-1]
        rec(op=op, metric=None, value=None, unit="", source="probe", status="failed", reason=err)
    if launch.status != "ok":
        rec(op=None, metric=None, value=None, unit="", source="launch", status=launch.status)
        out[-1]["reason"] = launch.reason
        return out
    for name, ns in launch.phases.items():
        rec(op="phases", metric=f"{name}_ms", value=ns / 1e6, unit="ms", source="phase")
    for name, value in launch.cgroup.items():
        rec(op="cgroup", metric=name, value=value, unit=_unit(name), source="cgroup")
    for name, value in launch.host_side.items():
        rec(op="host_side", metric=name, value=value, unit=_unit(name), source="host")
    return out


def precision_targets(records: list[dict[str, Any]]) -> dict[tuple, list[float]]:
    """The figures whose CI must be narrow: probe results, and phases of `startup`."""
    series: dict[tuple, list[float]] = defaultdict(list)
    for r in records:
        if r["round"] < 1 or r["status"] != "ok" or r["value"] is None:
            continue
        if r["source"] == "probe" or (r["source"] == "phase" and r["workload"] == "startup"):
            series[(r["cell"], r["op"], r["metric"])].append(r["value"])
    return series


def unreached(records: list[dict[str, Any]], precision: float, cells: list[str]) -> dict:
    """Cells whose widest relative CI half-width is above the target: cell -> width.
    A cell with no successful figure at all has an infinite width."""
    worst = dict.fromkeys(cells, math.inf)
    seen: set[str] = set()
    for (cell, _op, _metric), values in precision_targets(records).items():
        if cell not in worst:
            continue
        width = stats.ci_halfwidth_rel(stats.summarize(values, n_boot=1000))
        worst[cell] = width if cell not in seen else max(worst[cell], width)
        seen.add(cell)
    return {c: w for c, w in worst.items() if w > precision}


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
        "host": provenance.host_facts(),
        "matrix": m.to_dict(),
        "bundle": bundle.describe(),
        "catalog": {
            n: {
                "probe": w.probe,
                "family": w.family,
                "metrics": {k: vars(x) for k, x in w.metrics.items()},
            }
            for n, w in workloads.items()
        },  # fmt: skip
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
        writer = SampleWriter(self.run_dir)
        old = _install_signals()
        status = "interrupted"
        try:
            self._start_envs(ctx, writer)
            status = self._measure(writer)
            return status
        finally:
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not
            signal.signal(signal.SIGTERM, signal.SIG_IGN)  # cut the cleanup short
            try:
                self._stop_envs()
                shutil.rmtree(scratch, ignore_errors=True)
                self._finish(status, writer)
            finally:
                _restore_signals(old)

    def _start_envs(self, ctx: Context, writer: SampleWriter) -> None:
        envs = self.manifest.setdefault("environments", {})
        for spec in self.m.envs:
            check_interrupted()
            cls = REGISTRY[spec.kind]
            av = cls.probe()
            act = Active(spec, None, av.ok, av.reason)
            if av.ok:
                env = cls(dict(spec.options), ctx)
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
            envs[spec.label] = {
                "kind": spec.kind,
                "spec": spec.spec,
                "options": spec.options,
                "available": act.ok,
                "reason": act.reason,
                "versions": av.versions,
                "emulated": bool(act.env and act.env.emulated),
                **act.info,
            }
            if not act.ok:
                self.log(f"unavailable: {spec.label}: {act.reason}")
        self._save()

    def _stop_envs(self) -> None:
        for act in self.active.values():
            if act.env:
                try:
                    act.env.cleanup()
                except Exception as e:  # keep cleaning the others; say what was left
                    self.log(f"cleanup of {act.spec.label} failed: {e}")

    def _finish(self, status: str, writer: SampleWriter) -> None:
        self.manifest["status"] = status
        self.manifest["finished"] = time.time()
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
    def cells(self) -> list[Cell]:
        return [Cell(e, w) for e in self.m.envs for w in self.m.workloads]

    def _done(self) -> set[tuple[int, str]]:
        return {(r["round"], r["cell"]) for r in self.records}

    def _measure(self, writer: SampleWriter) -> str:
        cells = self.cells()
        done = self._done()
        started = time.monotonic()
        spent = self.manifest.get("measured_seconds", 0.0)
        total = len(cells) * (self.m.warmup + self.m.rounds)
        count = len(done)
        self.manifest.setdefault("rounds_done", 0)
        for rnd in range(1 - self.m.warmup if self.m.warmup else 1, self.m.max_rounds + 1):
            order = list(cells)
            random.Random(self.m.seed * 1_000_003 + rnd).shuffle(order)
            w_round = max(rnd, 0)  # all warm-up launches are stored as round 0
            for cell in order:
                if (w_round, cell.key) in done and rnd >= 1:
                    continue
                if not self.active[cell.env.label].ok and any(k == cell.key for _, k in done):
                    continue  # an unavailable environment is recorded once per cell
                self.progress(f"round {rnd}" if rnd >= 1 else "warm-up", count, total)
                check_interrupted()
                new = self._launch(cell, w_round)
                self.records.extend(new)
                self._save(writer, new)
                done.add((w_round, cell.key))
                count += 1
            if rnd < 1:
                continue
            self.manifest["rounds_done"] = rnd
            self.manifest["measured_seconds"] = spent + time.monotonic() - started
            self._save()
            if rnd < self.m.rounds:
                continue
            measurable = [c.key for c in cells if self.active[c.env.label].ok]
            left = unreached(self.records, self.m.precision, measurable)
            over_budget = self.manifest["measured_seconds"] >= self.m.budget
            if not left or over_budget or rnd == self.m.max_rounds:
                why = (
                    "precision reached"
                    if not left
                    else ("time budget spent" if over_budget else "round cap reached")
                )
                self.manifest["stop_reason"] = why
                self.manifest["unreached"] = left
                check_interrupted()
                return "complete"
            total += len(cells)
        check_interrupted()
        return "complete"

    def _launch(self, cell: Cell, rnd: int) -> list[dict[str, Any]]:
        act = self.active[cell.env.label]
        base = {
            "run_id": self.run_id,
            "round": rnd,
            "cell": cell.key,
            "env": cell.env.label,
            "env_kind": cell.env.kind,
            "spec": cell.env.spec,
            "options": cell.env.options,
            "emulated": bool(act.env and act.env.emulated),
            "workload": cell.workload,
            "launch": self.seq,
            "t": time.time(),
        }
        self.seq += 1
        if not act.ok or act.env is None:
            launch = Launch(status="failed", reason=f"environment unavailable: {act.reason}")
        else:
            wl = self.workloads[cell.workload]
            inv = wl.invocation(quick=self.m.quick, emulated=act.env.emulated)
            base["args"] = " ".join(inv.args)
            try:
                launch = act.env.launch(inv, self.m.timeout)
            except (Interrupted, KeyboardInterrupt):
                raise
            except Exception as e:  # an engine that went away: record, go on
                launch = Launch(status="failed", reason=f"{type(e).__name__}: {e}")
        return launch_records(launch, cell, base)


_pending: list[int] = []  # signals received; see _raise_interrupted


def _raise_interrupted(signum, frame):
    """Raise at once, and remember: a handler's exception can be swallowed (Python
    ignores exceptions raised inside at-fork hooks and __del__), so the runner also
    checks _pending between launches."""
    _pending.append(signum)
    raise Interrupted(signum)


def check_interrupted() -> None:
    if _pending:
        raise Interrupted(_pending[0])


def _install_signals() -> dict:
    _pending.clear()
    old = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    signal.signal(signal.SIGINT, _raise_interrupted)
    signal.signal(signal.SIGTERM, _raise_interrupted)
    return old


def _restore_signals(old: dict) -> None:
    for s, h in old.items():
        signal.signal(s, h)
