"""`isobench validate`: a self-check to run before trusting a host's numbers (the runs
and the checks; the command is bench/commands/validate.py).

Three real runs (the real Runner, real environments, interleaved shuffled rounds), then
pure checks on their samples:

Every figure is judged as the summary judges it (bench.analysis): one value per round
(the median of a launch's repetitions), ratios paired by round (the geometric mean of
the per-round ratios with its t interval), Benjamini-Hochberg across figures.

1. A/A: `host:label=A` vs `host:label=B` (identical) on fast workloads (null syscall,
   clock_gettime, startup phases): nothing may come out significant (BH-adjusted p <
   0.05 *and* a ratio CI that excludes 1, as in reports). On a perfect host this check
   still fails in about 5% of validations: that is what alpha means.
2. Known answers: a CPU quota q (`cpus=q`, CFS bandwidth control, 100 ms periods)
   slows single-threaded `cpu --op compute` by exactly 1/q. For q = 0.25 and 0.5, pinned
   to CPU 1 (`cpuset=1`) and not, under host, namespaces, docker and podman (those
   available here; the others are listed with the reason): the ratio of time per op,
   quota / the same kind without one (pinned alike; docker and podman: the host, see
   baseline_kind()), must lie within 1/q ± 5% with its whole 90% CI (two one-sided
   tests at 5%: an equivalence test). The probe measures windows of 300 ms of wall
   time (three periods), which read a quota exactly whatever phase they start at
   (workloads/probe.h). During this run every CPU is kept out of
   idle by a SCHED_IDLE spinner (bench.busy: the matrix's `busy_cpus`).
3. vDSO control: `clock_gettime` namespaces/host is shown equal within 10% (the whole
   90% CI inside 1 ± 10%: two one-sided tests). A host whose namespaces lose the vDSO
   clock reads many-fold (gVisor: x3,000); "the 95% CI contains 1.0" instead failed one
   validation in twenty on a chance 2% offset of a 20 ns call (the A/A figures' alpha).
4. Harness cost (`bench.harness.measure`) and the sampler's perturbation of the cpu
   probe: `host:sampler=on` vs `host:sampler=off` in the same run; the ratio CI of time
   per op must lie within 1 ± 1% (an equivalence test: a wide CI fails as "not shown").
5. Minimum detectable effect per workload family: the smallest ratio the paired test
   finds with 80% power in a quick run's rounds, from the per-round log ratios of two
   identical environments measured here (stats.min_detectable_ratio); fails above 10%
   (startup: 50%).

Figures where higher is better (ops/s) are turned into costs (time per op, 1/x) before
ratios are taken, so every ratio reads "how many times the cost of the baseline".
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from bench import analysis, harness, stats, store
from bench import bundle as bundle_mod
from bench.catalog import Metric, Workload
from bench.matrix import QUICK, Matrix, parse_env_spec
from bench.runner import Runner, new_manifest

ALPHA = 0.05
SAMPLER_MARGIN = 0.01  # the sampler may cost the cpu probe at most 1%
MDE_LIMIT = 0.10  # a host that cannot detect a 10% overhead fails validation
# ... except startup: a ms-scale spawn with a heavy tail, used for effects of x1.5-x100
MDE_LIMITS = {"startup (ready_ms)": 0.50}
WEIGHT = 10240  # validate's probes get 10x a plain process's CPU weight (other load)
WEIGHTED = ("host", "namespaces")  # the kinds that have a weight option
QUOTAS = (0.25, 0.5)
QUOTA_KINDS = ("host", "namespaces", "docker", "podman")
VDSO_MARGIN = 0.10  # namespaces must serve the vDSO clock as the host does, within 10%
QUOTA_MARGIN = 0.05  # a quota q must read as 1/q within 5%
PIN = "1"  # the CPU the pinned cells run on

NS = {"ns_per_op": Metric("ns", "lower")}
OPS = {"ops_per_s": Metric("ops/s", "higher")}


def _workload(name: str, probe: str, args: tuple[str, ...], metrics: dict) -> Workload:
    """A workload with the same arguments in every mode (quick, emulated); startup's
    figures are its launch phases, as in the catalog."""
    what = f"validate: {probe} {' '.join(args)}".strip()
    phases = probe == "startup"
    return Workload(name, probe, probe, what, args, args, args, metrics, phase_figures=phases)


WORKLOADS = {
    "syscall-null": _workload("syscall-null", "syscall", ("--op", "null", "--reps", "1"), NS),
    "clock_gettime": _workload(
        "clock_gettime", "syscall", ("--op", "clock_gettime", "--reps", "1"), NS
    ),
    "startup": _workload("startup", "startup", (), {}),
    "compute": _workload(
        "compute", "cpu", ("--op", "compute", "--reps", "3", "--window-ms", "300"), OPS
    ),
}


@dataclass
class Check:
    name: str
    passed: bool
    line: str  # the figures, for humans
    data: dict[str, Any] = field(default_factory=dict)

    def text(self) -> str:
        return f"{'PASS' if self.passed else 'FAIL'} {self.name}: {self.line}"


# -- pure checks ---------------------------------------------------------------------------
def _ci(r: float, lo: float, hi: float) -> str:
    return f"{r:.4f} [{lo:.4f}, {hi:.4f}]"


def ratio(
    values: dict[int, float],
    baseline: dict[int, float],
    better: str = "lower",
    confidence: float = 0.95,
):
    """The cost-oriented ratio of two figures' per-round values, paired by round (the
    summary's own comparison: analysis.compare_rounds)."""
    cost = (lambda x: 1.0 / x) if better == "higher" else (lambda x: x)
    return analysis.compare_rounds(
        {r: cost(v) for r, v in values.items()},
        {r: cost(v) for r, v in baseline.items()},
        confidence,
    )


# "Shown within a margin" is an equivalence test: two one-sided tests at 5% each
# (TOST), i.e. the 90% CI inside the margin.
EQUIVALENCE_CONFIDENCE = 1 - 2 * ALPHA


def aa_check(pairs: dict[str, tuple[dict, dict]], *, alpha: float = ALPHA) -> Check:
    """pairs: figure name -> (rounds of B, rounds of A). Passes when no figure is
    significant after Benjamini-Hochberg across all figures (the report's own rule)."""
    names = list(pairs)
    tests = [ratio(b, a) for b, a in pairs.values()]
    adj = stats.benjamini_hochberg([t.p_value for t in tests]) if names else []
    figures, bad = {}, []
    for name, (b, a), t, pa in zip(names, pairs.values(), tests, adj, strict=True):
        sig = stats.significant(pa, t.low, t.high, alpha=alpha)
        figures[name] = {
            "ratio": t.ratio,
            "ci_low": t.low,
            "ci_high": t.high,
            "p": t.p_value,
            "p_adjusted": pa,
            "significant": sig,
            "n": [len(b), len(a)],
        }
        if sig:
            bad.append(name)
    ok = bool(names) and not bad
    parts = [
        f"{n} B/A {_ci(f['ratio'], f['ci_low'], f['ci_high'])} p_adj={f['p_adjusted']:.2g}"
        for n, f in figures.items()
    ]
    line = "; ".join(parts) if names else "no data"
    if bad:
        line += f" — significant: {', '.join(bad)}"
    return Check("A/A", ok, line, {"figures": figures, "significant": bad})


def equivalence_check(
    name: str, values, baseline, margin: float = SAMPLER_MARGIN, better: str = "lower"
) -> Check:
    """Passes when the whole 90% ratio CI lies within 1 ± margin (TOST: shown to differ
    by less)."""
    t = ratio(values, baseline, better, EQUIVALENCE_CONFIDENCE)
    r, lo, hi = t.ratio, t.low, t.high
    ok = math.isfinite(lo) and math.isfinite(hi) and 1 - margin < lo and hi < 1 + margin
    if ok:
        why = f"|ratio - 1| < {margin:.0%} shown"
    elif math.isfinite(lo) and (lo >= 1 + margin or hi <= 1 - margin):
        why = f"differs by more than {margin:.0%}"
    else:
        why = f"not shown within {margin:.0%}: CI too wide or off-centre, more rounds needed"
    line = f"ratio {_ci(r, lo, hi)}, {why}, n={len(values)}/{len(baseline)}"
    return Check(name, ok, line, {"ratio": r, "ci_low": lo, "ci_high": hi, "margin": margin})


def known_answer_check(
    name: str, values, baseline, expected: float, margin=QUOTA_MARGIN, better="lower"
) -> Check:
    """Passes when the whole 90% ratio CI of the cost-oriented figure lies within
    expected * (1 ± margin) (TOST): the known answer is shown to hold within the margin."""
    t = ratio(values, baseline, better, EQUIVALENCE_CONFIDENCE)
    r, lo, hi = t.ratio, t.low, t.high
    low, high = expected * (1 - margin), expected * (1 + margin)
    ok = math.isfinite(lo) and math.isfinite(hi) and low <= lo and hi <= high
    if ok:
        why = f"within {expected:g} ± {margin:.0%}"
    elif not math.isfinite(r):
        why = "no data"
    elif not low <= r <= high:
        why = f"off by {r / expected - 1:+.1%} (limit ± {margin:.0%})"
    else:
        why = f"CI wider than {expected:g} ± {margin:.0%}: more rounds needed"
    line = f"ratio {_ci(r, lo, hi)} (expected {expected:g}), {why}, n={len(values)}/{len(baseline)}"
    return Check(
        name,
        ok,
        line,
        {"ratio": r, "ci_low": lo, "ci_high": hi, "expected": expected, "margin": margin},
    )


def sampler_check(
    on, off, cpu_fraction, margin: float = SAMPLER_MARGIN, better: str = "lower"
) -> Check:
    """The sampler perturbs the probe by less than `margin`, shown either directly (the
    on/off ratio CI inside 1 ± margin) or, when load makes that CI too wide, by a bound:
    the on/off CI contains 1 (no detectable effect) and the sampler thread's own CPU
    time per second of launch (a CPU-time figure, unaffected by other load) has a 95%
    upper bound below `margin`: a thread in another process slows a CPU-bound probe
    by at most the CPU it takes, when it has to share the probe's CPU at all."""
    direct = equivalence_check("sampler", on, off, margin, better)
    frac = stats.summarize(cpu_fraction)
    data = {**direct.data, "cpu_fraction": frac.as_dict()}
    r, lo, hi = direct.data["ratio"], direct.data["ci_low"], direct.data["ci_high"]
    bound = (
        f"sampler CPU {frac.median * 100:.2f}% [{frac.ci_low * 100:.2f}, "
        f"{frac.ci_high * 100:.2f}] of a CPU"
    )
    name = "sampler perturbation (sampler on / off, time per op)"
    if direct.passed:
        return Check(name, True, f"{direct.line}; {bound}", {**data, "shown_by": "A/B"})
    no_effect = math.isfinite(lo) and lo <= 1.0 <= hi
    under = math.isfinite(frac.ci_high) and frac.ci_high < margin
    ok = no_effect and under
    line = (
        f"ratio {_ci(r, lo, hi)} (A/B too wide to show {margin:.0%} at this load; "
        f"{'contains' if no_effect else 'excludes'} 1); {bound} "
        f"{'<' if under else '>='} {margin:.0%}"
    )
    return Check(name, ok, line, {**data, "shown_by": "CPU bound" if ok else None})


def mde_check(
    pairs: dict[str, tuple[dict, dict]], n: int, limit: float = MDE_LIMIT, limits=None
) -> Check:
    """pairs: family -> (rounds of B, rounds of A) of two identical environments; each
    family's minimum detectable effect in `n` paired rounds must be at most its limit
    (`limits`, else `limit`)."""
    limits = limits or {}
    figures = {}
    for family, (b, a) in pairs.items():
        common = sorted(set(a) & set(b))
        d = [math.log(b[r] / a[r]) for r in common if a[r] > 0 and b[r] > 0]
        figures[family] = stats.min_detectable_ratio(d, n=n) - 1
    bad = [f for f, m in figures.items() if not (math.isfinite(m) and m <= limits.get(f, limit))]
    line = "; ".join(
        f"{f} {m * 100:.2f}% (limit {limits.get(f, limit):.0%})" for f, m in figures.items()
    )
    line += f" in {n} rounds" + (f", too noisy: {', '.join(bad)}" if bad else "")
    return Check("minimum detectable effect", bool(figures) and not bad, line, figures)


# -- runs ----------------------------------------------------------------------------------
def rounds(records, env: str, workload: str, op: str, metric: str) -> dict[int, float]:
    """One figure of one cell: round -> its value (the median of the launch's
    repetitions), measured rounds only, as the summary sees it."""
    if not records:
        return {}
    data = analysis.measured(pd.DataFrame.from_records(records))
    data = data[(data["env"] == env) & (data["workload"] == workload)]
    return analysis.per_round(data).get((env, workload, op, metric), {})


def _per_launch(records, env: str, source: str, metric: str) -> list[float]:
    """One figure per measured launch of `env`, in launch order (host_side or phase)."""
    out = sorted(
        (r["launch"], r["value"])
        for r in records
        if r["round"] >= 1
        and r["status"] == "ok"
        and r["env"] == env
        and r["source"] == source
        and r["metric"] == metric
    )
    return [v for _, v in out]


def host_side(records, env: str, metric: str) -> list[float]:
    return _per_launch(records, env, "host", metric)


def phase(records, env: str, metric: str) -> list[float]:
    return _per_launch(records, env, "phase", f"{metric}")


def run_matrix(m: Matrix, results: Path, name: str, b, log) -> tuple[list[dict], dict]:
    """One real run of `m` into results/<run-id>; returns (records, manifest)."""
    run_id = time.strftime("%Y%m%d-%H%M%S") + f"-validate-{name}"
    run_dir = results / run_id
    run_dir.mkdir(parents=True)
    manifest = {**new_manifest(run_id, m, b, WORKLOADS), "validate": name}
    store.write_manifest(run_dir, manifest)
    runner = Runner(m, run_dir, run_id, b, WORKLOADS, manifest, log=log)
    runner.run()
    return runner.records, manifest


def _matrix(envs: list[str], workloads: list[str], budget: float, **kw) -> Matrix:
    specs = []
    for e in envs:  # cells at WEIGHT where the kind has one; labels stay the plain names
        kind, _, opts = e.partition(":")
        label = "" if "label=" in opts else f",label={kind}"
        weight = [f"weight={WEIGHT}"] if kind in WEIGHTED else []
        specs.append(f"{kind}:" + ",".join([*weight, *filter(None, [opts])]) + label)
    m = Matrix(
        envs=[parse_env_spec(e) for e in specs],
        workloads=workloads,
        budget=budget,
        timeout=60.0,
        seed=kw.pop("seed", 1),
        **kw,
    )
    m.check(WORKLOADS, "validate")
    return m


def check_syscall(records) -> list[Check]:
    figs = {
        "null": ("syscall-null", "null", "ns_per_op"),
        "clock_gettime": ("clock_gettime", "clock_gettime", "ns_per_op"),
        "startup ready": ("startup", "phases", "ready_ms"),
        "startup exit": ("startup", "phases", "exit_ms"),
    }
    pairs = {n: (rounds(records, "B", *f), rounds(records, "A", *f)) for n, f in figs.items()}
    vdso = equivalence_check(
        "vDSO control (clock_gettime namespaces/host)",
        rounds(records, "namespaces", *figs["clock_gettime"]),
        pairs["clock_gettime"][1],
        VDSO_MARGIN,
    )
    return [aa_check(pairs), vdso]


COMPUTE = ("compute", "compute", "ops_per_s")


def quota_label(kind: str, q: float | None, pinned: bool) -> str:
    return kind + (f"-q{q:g}" if q else "") + ("-pinned" if pinned else "")


def baseline_kind(kind: str) -> str:
    """Whose cells without a quota a kind's known answer is against: its own where it
    has a weight; docker and podman have none here, and their unweighted baseline loses
    CPU to any other load (this host: 220-320 M ops/s against a steady 320), so theirs
    is the weighted host's (compute is user-space arithmetic: the same speed inside)."""
    return kind if kind in WEIGHTED else "host"


def quota_cells(kind: str, baseline: bool = True) -> list[str]:
    """The known-answer cells of one kind: with each of QUOTAS and (baseline) without a
    quota, pinned to CPU PIN and not."""
    out = []
    for pinned in (False, True):
        for q in (None, *QUOTAS) if baseline else QUOTAS:
            opts = [f"cpus={q:g}"] if q else []
            opts += [f"cpuset={PIN}"] if pinned else []
            opts.append(f"label={quota_label(kind, q, pinned)}")
            out.append(f"{kind}:{','.join(opts)}")
    return out


def all_quota_cells(kinds) -> list[str]:
    """The cells of the known-answer run: each kind's, and the baselines they need."""
    need = {baseline_kind(k) for k in kinds}
    cells = [c for k in kinds for c in quota_cells(k, baseline=k in need)]
    for k in sorted(need - set(kinds)):  # the baseline of a kind not checked itself
        cells += [c for c in quota_cells(k) if "cpus=" not in c]
    return cells


def check_quota(records, kinds) -> list[Check]:
    """One known-answer check per kind, quota and pinning: time per op, quota / none."""
    checks = []
    for kind in kinds:
        for pinned in (False, True):
            base_kind = baseline_kind(kind)
            base = rounds(records, quota_label(base_kind, None, pinned), *COMPUTE)
            against = "no quota" if base_kind == kind else f"{base_kind} without a quota"
            for q in QUOTAS:
                where = f"{kind}:cpus={q:g}" + (f",cpuset={PIN}" if pinned else "")
                checks.append(
                    known_answer_check(
                        f"known answer ({where} / {against}, time per op)",
                        rounds(records, quota_label(kind, q, pinned), *COMPUTE),
                        base,
                        1 / q,
                        better="higher",
                    )
                )
    return checks


def quota_kinds(kinds) -> tuple[list[str], dict[str, str]]:
    """(kinds available here, unavailable kind -> the reason)."""
    from bench.envs import REGISTRY

    ok, skipped = [], {}
    for kind in kinds:
        av = REGISTRY[kind].probe()
        if av.ok:
            ok.append(kind)
        else:
            skipped[kind] = av.reason
    return ok, skipped


def check_cpu(records) -> list[Check]:
    host = rounds(records, "host", *COMPUTE)
    frac = [
        r / w
        for r, w in zip(
            host_side(records, "host", "sampler_cpu_ms"),
            phase(records, "host", "exit_ms"),
            strict=True,
        )
        if w > 0
    ]
    smp = sampler_check(host, rounds(records, "nosampler", *COMPUTE), frac, better="higher")
    return [smp]


def check_mde(syscall_records, cpu_records) -> Check:
    """Per family, from two identical environments' rounds (the A/A twin; for compute,
    the host with and without its sampler, whose <= 1% offset leaves the spread alone),
    at the rounds a quick run has."""
    fig = {
        "syscall (null)": ("syscall-null", "null", "ns_per_op"),
        "syscall (clock_gettime)": ("clock_gettime", "clock_gettime", "ns_per_op"),
        "startup (ready_ms)": ("startup", "phases", "ready_ms"),
    }
    pairs = {
        f: (rounds(syscall_records, "B", *k), rounds(syscall_records, "A", *k))
        for f, k in fig.items()
    }
    pairs["cpu (compute)"] = (
        rounds(cpu_records, "nosampler", *COMPUTE),
        rounds(cpu_records, "host", *COMPUTE),
    )
    return mde_check(pairs, n=QUICK["rounds"], limits=MDE_LIMITS)


def check_harness(h: dict[str, Any]) -> Check:
    over = h["overhead_ms"]
    ok = all(over[c]["median"] is not None for c in harness.COMPONENTS)
    return Check("harness cost", ok, harness.describe(h).split(": ", 1)[1], h)


def _run_info(manifest: dict) -> dict:
    return {k: manifest.get(k) for k in ("rounds_done", "measured_seconds", "stop_reason")}


def run_quota(results: Path, budget: float, seed: int, b, log, kinds=QUOTA_KINDS):
    """The known-answer run over the kinds available here -> (checks, run info, unavailable
    kind -> reason)."""
    available, skipped = quota_kinds(kinds)
    if not available:
        return [], {}, skipped
    # every cell runs every round until the budget ends: each check pairs a cell with
    # its own baseline (pinned alike), which adaptive rounds would leave behind
    m = _matrix(
        all_quota_cells(available),
        ["compute"],
        budget,
        rounds=30,
        max_rounds=30,
        precision=0.01,
        warmup=0,
        seed=seed,
        busy_cpus=True,
    )
    records, manifest = run_matrix(m, results, "quota", b, log)
    return check_quota(records, available), _run_info(manifest), skipped


def run_all(
    results: Path, budget: float, seed: int, log, kinds=QUOTA_KINDS
) -> tuple[list[Check], dict]:
    """The three runs: syscall (15% of the budget), cpu sampler (15%), quotas (70%)."""
    b = bundle_mod.build()
    h = harness.measure(b)
    sys_m = _matrix(
        ["host:label=A", "host:label=B", "namespaces"],
        ["syscall-null", "clock_gettime", "startup"],
        budget * 0.15,
        rounds=20,
        max_rounds=60,
        precision=0.02,
        seed=seed,
    )
    sys_records, _ = run_matrix(sys_m, results, "syscall", b, log)
    cpu_m = _matrix(
        ["host", "host:sampler=off,label=nosampler"],
        ["compute"],
        budget * 0.15,
        rounds=8,
        max_rounds=100,
        precision=0.003,
        seed=seed,
    )
    cpu_records, cpu_manifest = run_matrix(cpu_m, results, "cpu", b, log)
    quota, quota_info, skipped = run_quota(results, budget * 0.7, seed, b, log, kinds)
    checks = [
        check_harness(h),
        *check_syscall(sys_records),
        *quota,
        *check_cpu(cpu_records),
        check_mde(sys_records, cpu_records),
    ]
    info = {
        "harness": h,
        "cpu_run": _run_info(cpu_manifest),
        "quota_run": quota_info,
        "quota_skipped": skipped,
    }
    return checks, info
