"""One run as every report section sees it, built once: the typed manifest, the catalog it
recorded, the baseline, the environments in matrix order, the summary rows and the
measured samples. A section reads these here instead of digging them out of the raw
manifest again.

A workload's run strategy (probe, density, net, user, userserver) says which section
shows it. The catalog recorded in the run says it (`strategy`); a run recorded before the
catalog had it says it through the workload's family (the report's grouping label).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from bench.manifest import SCHEMA_VERSION, EnvironmentEntry, Manifest

# A run recorded before the catalog named its strategy: the family said it.
STRATEGY_OF_FAMILY = {"density": "density", "net": "net", "user": "user"}
PROBE = "probe"


def as_manifest(manifest: Manifest | dict[str, Any]) -> Manifest:
    """The typed manifest; a dict (a run read from disk, or one built in memory) is checked
    and migrated on a copy. A dict without a schema version is taken as current."""
    if isinstance(manifest, Manifest):
        return manifest
    raw = copy.deepcopy(manifest)
    raw.setdefault("schema_version", SCHEMA_VERSION)
    raw.setdefault("run_id", "")
    return Manifest.load(raw)


def catalog_of(manifest: Manifest) -> dict[str, Any]:
    """The catalog recorded in the run ({workload: {family, metrics: {m: {unit, better}}}})."""
    if manifest.catalog:
        return manifest.catalog
    try:  # older runs without the catalog in the manifest: the installed one
        from bench import catalog

        return {
            name: {
                "family": w.group,
                "strategy": w.strategy,
                "description": w.description,
                "metrics": {m: vars(v) for m, v in w.metrics.items()},
            }
            for name, w in catalog.load().items()
        }
    except Exception:  # noqa: BLE001 - a report without catalog facts still renders
        return {}


def better(cat: dict[str, Any], workload: str, metric: str) -> str:
    m = cat.get(workload, {}).get("metrics", {}).get(metric)
    return m.get("better", "lower") if isinstance(m, dict) else "lower"


def family(cat: dict[str, Any], workload: str) -> str:
    return cat.get(workload, {}).get("family", workload)


def strategy(cat: dict[str, Any], workload: str) -> str:
    """How the workload was run, from the recorded catalog (its family for older runs)."""
    entry = cat.get(workload, {})
    if entry.get("strategy"):
        return entry["strategy"]
    return STRATEGY_OF_FAMILY.get(entry.get("family", workload), PROBE)


def env_order(manifest: Manifest | dict[str, Any], df) -> list[str]:
    """Matrix order (baseline first), then any label seen only in the samples."""
    m = as_manifest(manifest)
    labels = [e.get("label") for e in m.matrix.get("envs", [])]
    labels += [k for k in m.environments if k not in labels]
    if len(df):
        labels += [e for e in df["env"].dropna().unique().tolist() if e not in labels]
    base = m.matrix.get("baseline", "host")
    out = [x for x in labels if x]
    return ([base] if base in out else []) + [x for x in out if x != base]


@dataclass(frozen=True)
class RunView:
    """What every section reads. `rows` are the main summary rows (analysis.summarize_run),
    `data` the measured main samples, `df` every record, `fails` the failed launches."""

    manifest: Manifest
    df: Any
    catalog: dict[str, Any] = field(default_factory=dict)
    baseline: str = "host"
    envs: list[str] = field(default_factory=list)
    measured: list[str] = field(default_factory=list)  # envs with a main figure
    rows: list[dict[str, Any]] = field(default_factory=list)
    data: Any = None
    fails: list[dict[str, Any]] = field(default_factory=list)
    n_boot: int = 2000
    bursts: dict[tuple, dict[str, Any]] = field(default_factory=dict)  # see burst_cells

    def env(self, label: str) -> EnvironmentEntry | None:
        return self.manifest.environments.get(label)

    def emulated(self, label: str) -> bool:
        e = self.env(label)
        return bool(e and e.emulated)

    def extra(self, label: str, key: str) -> Any:
        """A fact a kind or a round added to an environment's entry (net_path, disk, ...)."""
        e = self.env(label)
        return (e.model_extra or {}).get(key) if e else None

    def strategy(self, workload: str) -> str:
        return strategy(self.catalog, workload)

    def better(self, workload: str, metric: str) -> str:
        return better(self.catalog, workload, metric)

    def workloads(self, *strategies: str) -> list[str]:
        """The catalog's workloads run by one of these strategies, in catalog order."""
        return [w for w in self.catalog if self.strategy(w) in strategies]

    def planned(self, *strategies: str) -> bool:
        """Whether the matrix asked for a workload run by one of these strategies."""
        return any(
            self.strategy(w) in strategies for w in self.manifest.matrix.get("workloads") or []
        )

    def rows_of(self, *strategies: str) -> list[dict[str, Any]]:
        return [r for r in self.rows if self.strategy(r["workload"]) in strategies]

    def fails_of(self, *strategies: str) -> list[dict[str, Any]]:
        return [f for f in self.fails if self.strategy(f["workload"]) in strategies]


def view(manifest: Manifest | dict[str, Any], df, *, n_boot: int = 2000) -> RunView:
    """The run's view: the manifest typed once, its figures summarized once."""
    from bench import analysis  # numpy and scipy: only when a report is built

    m = as_manifest(manifest)
    cat = catalog_of(m)
    envs = env_order(m, df)
    if len(df):
        raw = m.to_dict()
        rows = analysis.summarize_run(df, raw, scope=analysis.MAIN, n_boot=n_boot)
        data, fails = analysis.measured(df, analysis.MAIN), analysis.failures(df)
    else:
        rows, data, fails = [], df, []
    return RunView(
        manifest=m,
        df=df,
        catalog=cat,
        baseline=m.matrix.get("baseline", "host"),
        envs=envs,
        measured=[e for e in envs if any(r["env"] == e for r in rows)],
        rows=rows,
        data=data,
        fails=fails,
        n_boot=n_boot,
        bursts=burst_cells(df),
    )


def burst_cells(df) -> dict[tuple, dict[str, Any]]:
    """The figures measured in bursts on held instances (records of source "burst"):
    {(env, workload, op, metric): {"rounds": held sets, "blocks": blocks per round (the
    median over rounds)}}. A block gives each cell one burst, so a round's blocks are its
    records (or its distinct block numbers, where the samples carry them). Partner
    samples (a set naming another environment: analysis.partner) are not counted."""
    if not len(df) or "source" not in df.columns:
        return {}
    b = df[(df["source"] == "burst") & (df["status"] == "ok") & (df["round"] >= 1)]
    if "set" in b.columns:  # a baseline's partners (analysis.partner)
        held = b["set"].fillna("").astype(str)
        b = b[(held == "") | (held == b["env"])]
    if not len(b):
        return {}
    out = {}
    keys = ["env", "workload", "op", "metric"]
    for key, g in b.groupby(keys, sort=False):
        if "block" in g.columns and g["block"].notna().any():
            per = g.groupby("round")["block"].nunique()
        else:
            per = g.groupby("round").size()
        out[tuple(key)] = {"rounds": int(per.size), "blocks": int(per.median())}
    return out
