"""The workload catalog (workloads/catalog.toml): each workload's probe, arguments, how it
is measured (its strategy: bench/families/), the report's grouping label, and what its
figures mean (unit, whether lower or higher is better)."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from bench.envs.base import SERVE, Invocation
from bench.resources import workloads_dir

# Figures the harness measures around every launch (ms since submit), not the probe.
PHASE_METRICS = {
    "ready_ms": "submit until the probe's `ready` line was seen",
    "exit_ms": "submit until the instance ended",
    "cleaned_ms": "submit until everything the launch made was removed",
    "boot_ms": "the guest kernel's own uptime when the probe started",
    "round_exit_ms": "a guest that ran its round's workloads in one boot: submit until it ended",
    "round_cleaned_ms": "the same, until everything the boot made was removed",
}


# [workloads.<name>.levels] keys, by (quick, guest); a missing key falls back as noted
LEVEL_KEYS = {
    (False, False): "full",
    (True, False): "quick",  # default: full
    (False, True): "guests",  # default: full
    (True, True): "quick_guests",  # default: quick
}


@dataclass(frozen=True)
class Metric:
    unit: str
    better: str  # "lower" | "higher"
    description: str = ""
    # a difference that can be 0 or below by construction (density's MemAvailable drop,
    # idle CPU over a baseline): shown with its median and CI, never as a ratio
    signed: bool = False


@dataclass(frozen=True)
class BurstPlan:
    """How the `bursts` strategy measures a workload (its `[workloads.NAME.bursts]`
    table): on held instances of its probe in serve mode, one burst of an op in every
    environment per block. A round holds `blocks` blocks of each op (`op_blocks` where an
    op gets more: the figures the precision targets are about), each burst `ms` long
    (`op_ms` per op), or `quota_ms` in a held set where an environment has a CPU quota
    (every environment of the set: pairs compare like with like): a rate under a
    quota needs whole CFS periods (a 5 ms burst under cpus=0.25 runs at full speed)."""

    ops: tuple[str, ...]
    ms: int
    blocks: int
    quick_blocks: int
    op_ms: dict[str, int] = field(default_factory=dict)
    op_blocks: dict[str, int] = field(default_factory=dict)  # full; quick: scaled alike
    quota_ms: int | None = None
    serve_args: tuple[str, ...] = ()
    quick_serve_args: tuple[str, ...] = ()
    emulated_serve_args: tuple[str, ...] | None = None

    def burst_ms(self, op: str, quota: bool) -> int:
        if quota and self.quota_ms:
            return max(self.quota_ms, self.op_ms.get(op, self.ms))
        return self.op_ms.get(op, self.ms)

    def blocks_of(self, op: str, quick: bool) -> int:
        full = self.op_blocks.get(op, self.blocks)
        return max(1, round(full * self.quick_blocks / self.blocks)) if quick else full

    def schedule(self, quick: bool) -> list[str]:
        """A round's blocks, one op each: the ops interleaved (one of each, then again),
        an op with more blocks going on after the others end."""
        left = {op: self.blocks_of(op, quick) for op in self.ops}
        out: list[str] = []
        while any(left.values()):
            for op in self.ops:
                if left[op]:
                    out.append(op)
                    left[op] -= 1
        return out


@dataclass(frozen=True)
class Workload:
    name: str
    probe: str
    group: str  # the report's grouping label (several workloads may share one)
    description: str
    args: tuple[str, ...]
    quick_args: tuple[str, ...]
    emulated_args: tuple[str, ...] | None  # smaller sizes for emulated guests, if needed
    metrics: dict[str, Metric] = field(default_factory=dict)
    # ops ("fork") or figures ("fsync_lat.p99_us") noisy by nature: reported with their
    # CI width, never a reason to add rounds
    noisy: tuple[str, ...] = ()
    precision_floor: float = 0.0  # the loosest target this workload's figures can meet
    # density: the levels N of held instances, per kind of run (LEVEL_KEYS); empty for
    # every workload that is not a ramp
    level_lists: dict[str, tuple[int, ...]] = field(default_factory=dict)
    default: bool = True  # run when no workload is named (density is run only when asked)
    strategy: str = "probes"  # how it is measured: a key of bench.families.REGISTRY
    phase_figures: bool = False  # its launch phases are its figures (startup)
    writes_data: bool = False  # writes in its work directory (io): bench/checks.py
    bursts: BurstPlan | None = None  # the `bursts` strategy's plan

    def served(self, *, quick: bool, emulated: bool) -> Invocation:
        """The held instance of the `bursts` strategy: the probe in serve mode."""
        assert self.bursts is not None, f"{self.name} has no bursts table"
        b = self.bursts
        args = b.quick_serve_args if quick else b.serve_args
        if emulated and b.emulated_serve_args is not None:
            args = b.emulated_serve_args
        return Invocation(self.name, self.probe, (SERVE, *args))

    def levels(self, quick: bool, guest: bool) -> list[int]:
        """The ramp's levels for a full or quick run of a container/namespaces kind or of
        a guest (an environment whose `one_instance_per_round` is true)."""
        return list(self.level_lists.get(LEVEL_KEYS[quick, guest], ()))

    def invocation(self, *, quick: bool, emulated: bool) -> Invocation:
        args = self.quick_args if quick else self.args
        if emulated and self.emulated_args is not None:
            args = self.emulated_args
        return Invocation(self.name, self.probe, args)


def load(path: Path | None = None) -> dict[str, Workload]:
    path = path or workloads_dir() / "catalog.toml"
    data = tomllib.loads(path.read_text())
    out = {}
    for name, w in data["workloads"].items():
        args = tuple(w.get("args", ()))
        quick = tuple(w.get("quick_args", args))
        out[name] = Workload(
            name=name,
            probe=w["probe"],
            group=w.get("group", name),
            description=w.get("description", ""),
            args=args,
            quick_args=quick,
            emulated_args=tuple(w["emulated_args"]) if "emulated_args" in w else None,
            metrics={k: Metric(**v) for k, v in w.get("metrics", {}).items()},
            noisy=tuple(w.get("noisy", ())),
            precision_floor=float(w.get("precision_floor", 0.0)),
            level_lists=parse_levels(name, w.get("levels", {})),
            default=bool(w.get("default", True)),
            strategy=w.get("strategy", "probes"),
            phase_figures=bool(w.get("phase_figures", False)),
            writes_data=bool(w.get("writes_data", False)),
            bursts=parse_bursts(name, w["bursts"]) if "bursts" in w else None,
        )
    return out


def parse_bursts(workload: str, t: dict) -> BurstPlan:
    """A `bursts` table -> its BurstPlan; ValueError naming the workload when it is not one."""
    try:
        serve = tuple(t.get("serve_args", ()))
        plan = BurstPlan(
            ops=tuple(t["ops"]),
            ms=int(t["ms"]),
            blocks=int(t["blocks"]),
            quick_blocks=int(t["quick_blocks"]),
            op_ms={k: int(v) for k, v in t.get("op_ms", {}).items()},
            op_blocks={k: int(v) for k, v in t.get("op_blocks", {}).items()},
            quota_ms=int(t["quota_ms"]) if "quota_ms" in t else None,
            serve_args=serve,
            quick_serve_args=tuple(t.get("quick_serve_args", serve)),
            emulated_serve_args=(
                tuple(t["emulated_serve_args"]) if "emulated_serve_args" in t else None
            ),
        )
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{workload}: bad bursts table ({type(e).__name__}: {e})") from None
    named = set(plan.op_ms) | set(plan.op_blocks)
    if not plan.ops or named - set(plan.ops) or min(plan.ms, plan.blocks, plan.quick_blocks) < 1:
        raise ValueError(f"{workload}: bad bursts table (ops, lengths and blocks)")
    return plan


def parse_levels(workload: str, table: dict) -> dict[str, tuple[int, ...]]:
    """A `levels` table -> every LEVEL_KEYS list, fallbacks filled in; ValueError when a
    list is not ascending positive integers, a key is unknown or `full` is missing."""
    known = set(LEVEL_KEYS.values())
    if unknown := set(table) - known:
        raise ValueError(f"{workload}: unknown levels {sorted(unknown)} (known: {sorted(known)})")
    out: dict[str, tuple[int, ...]] = {}
    for key, value in table.items():
        ok = (
            isinstance(value, list)
            and value
            and all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in value)
        )
        if not ok or list(value) != sorted(set(value)):
            raise ValueError(f"{workload}: levels.{key} must be ascending positive integers")
        out[key] = tuple(value)
    if out:
        if "full" not in out:
            raise ValueError(f"{workload}: levels needs a full list")
        out.setdefault("quick", out["full"])
        out.setdefault("guests", out["full"])
        out.setdefault("quick_guests", out["quick"])
    return out


def better(workloads: dict[str, Workload], workload: str, metric: str) -> str:
    """'lower' or 'higher': phase, cgroup and host-side figures are costs (lower)."""
    w = workloads.get(workload)
    if w and metric in w.metrics:
        return w.metrics[metric].better
    return "lower"
