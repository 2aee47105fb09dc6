"""One report across the hosts of a fleet: the data model (pure, no HTML, no terminal).

Each host's run is summarized exactly as `isobench summary` summarizes a run
(analysis.summarize_run: every environment against *that host's own* baseline, BH
within the run). Across hosts the model adds, per figure and environment, the ratio of
ratios of each host to the reference host with its CI (bench/report/fleet_stats.py:
Yuen's two-sample trimmed t on the per-round log ratios), Benjamini–Hochberg adjusted
across every between-hosts test of the fleet; the host facts that differ (Ansible's from
fleet.json, isobench's from each run's manifest); each host's absolute figures; and the
hosts that failed, each with its reason.

The shared pieces (`figures`, `facts`, `hosts`) feed the terminal summary
(bench/report/fleet_text.py), the HTML page (bench/report/sections/fleet.py) and the
JSON rows (`rows`: one per host and figure, a run's summary row plus `host` and the
`between_*` fields, then one per failed host) that `summary --json` and `export` give.
"""

from __future__ import annotations

from typing import Any

from bench import analysis, stats
from bench.report import fmt
from bench.report.fleet_load import Fleet, Host
from bench.report.fleet_stats import detectable, host_log_ratios, ratio_of_ratios
from bench.report.view import env_order
from bench.store import json_safe

ABSOLUTE_WARNING = (
    "absolute figures compare the hosts' hardware, kernels and load, not their isolation: "
    "read each environment's cost from its ratio to its own host's baseline"
)
# Ansible facts that name a host rather than describe it: shown, never "a difference"
NAMES = {"ansible_hostname", "hostname"}
ANSIBLE_FACTS = (
    "ansible_distribution",
    "ansible_distribution_version",
    "ansible_kernel",
    "ansible_processor",
    "ansible_processor_vcpus",
    "ansible_memtotal_mb",
    "ansible_virtualization_type",
    "ansible_virtualization_role",
    "ansible_python_version",
    "ansible_hostname",
)
BETWEEN = (
    "ratio",
    "ci_low",
    "ci_high",
    "p_value",
    "p_adjusted",
    "significant",
    "test",
    "detectable",
    "n_rounds",
    "n_rounds_reference",
    "note",
)


def build(
    fleet: Fleet,
    *,
    baseline: str | None = None,
    reference: str | None = None,
    scope: str = analysis.MAIN,
    n_boot: int = 2000,
) -> dict[str, Any]:
    """The fleet's report data. `baseline`: the environment every host's ratios are
    against (default: the reference host's run's baseline); `reference`: the host the
    others are tested against (default: the first usable host of fleet.json)."""
    done = fleet.done
    ref = _reference(done, reference)
    base = baseline or ref.manifest.get("matrix", {}).get("baseline", "host")
    known = {e for h in done for e in env_order(h.manifest, h.df)}
    if baseline is not None and baseline not in known:
        from bench.report.fleet_load import FleetError

        raise FleetError(
            f"--baseline {baseline}: no such environment on any host (known: "
            f"{', '.join(sorted(known))})"
        )
    rows_of, ratios_of = {}, {}
    for h in done:
        rows_of[h.name] = analysis.summarize_run(
            h.df, h.manifest, baseline=base, scope=scope, n_boot=n_boot
        )
        ratios_of[h.name] = host_log_ratios(h.df, h.manifest, base, scope)
    figures = _figures(done, ref, base, rows_of, ratios_of)
    _adjust(figures)
    rec = fleet.record
    data = {
        "fleet": {
            "id": rec.id,
            "path": str(fleet.path),
            "inventory": rec.inventory,
            "command": rec.command,
            "started": rec.started,
            "ended": rec.ended,
            "forks": rec.forks,
            "overlapped": rec.overlapped,
        },
        "scope": scope,
        "baseline": base,
        "reference": ref.name,
        "hosts": [_host(h) for h in fleet.hosts],
        "done": [h.name for h in done],
        "facts": facts(done),
        "figures": figures,
        "warnings": _warnings(fleet),
        "absolute_warning": ABSOLUTE_WARNING,
        "rows": _rows(fleet, figures, rows_of, ref.name),
    }
    data["differences"] = differences(data)
    return data


def _reference(done: list[Host], name: str | None) -> Host:
    from bench.report.fleet_load import FleetError

    if name is None:
        return done[0]
    for h in done:
        if h.name == name:
            return h
    known = ", ".join(h.name for h in done)
    raise FleetError(f"--reference {name}: no such host with a usable run (known: {known})")


def _host(h: Host) -> dict[str, Any]:
    return {
        "name": h.name,
        "status": h.status,
        "reason": h.reason,
        "started": h.started,
        "ended": h.ended,
        "run": h.run if h.usable else None,
        "usable": h.usable,
        "hostname": (h.manifest or {}).get("host", {}).get("hostname")
        or h.facts.get("ansible_hostname"),
    }


# -- facts --------------------------------------------------------------------------
def host_facts(h: Host) -> dict[tuple[str, str], str]:
    """{(source, fact): value as text}: Ansible's facts from fleet.json and isobench's
    own from the run's manifest (mitigations one fact per vulnerability)."""
    out: dict[tuple[str, str], str] = {}
    for k, v in h.facts.items():
        out[("ansible", k)] = _text(v)
    own = dict((h.manifest or {}).get("host") or {})
    for k, v in (own.pop("mitigations", None) or {}).items():
        out[("isobench", f"mitigations.{k}")] = _text(v)
    for k, v in own.items():
        out[("isobench", k)] = _text(v)
    return out


def facts(done: list[Host]) -> dict[str, list[dict[str, Any]]]:
    """The usable hosts' facts: `differ` (a value per host, "–" where one lacks it) and
    `same` (one value); names (hostname) are never a difference. Ansible's first."""
    per = {h.name: host_facts(h) for h in done}
    keys = sorted({k for f in per.values() for k in f}, key=_fact_order)
    differ, same = [], []
    for source, name in keys:
        values = {h: f.get((source, name), "–") for h, f in per.items()}
        entry = {"source": source, "fact": name, "by_host": values}
        if len(set(values.values())) > 1 and name not in NAMES:
            differ.append(entry)
        else:
            same.append({"source": source, "fact": name, "value": next(iter(values.values()))})
    return {"differ": differ, "same": same}


def _fact_order(key: tuple[str, str]) -> tuple:
    source, name = key
    if source == "ansible":
        rank = ANSIBLE_FACTS.index(name) if name in ANSIBLE_FACTS else len(ANSIBLE_FACTS)
        return (0, rank, name)
    return (1, name.startswith("mitigations."), name)


def _text(v: Any) -> str:
    if isinstance(v, list | tuple):
        return ", ".join(map(str, v))
    return "–" if v is None else str(v)


# -- figures ------------------------------------------------------------------------
def _figures(done, ref, base, rows_of, ratios_of) -> list[dict[str, Any]]:
    """Per figure (workload, op, metric): its unit and direction, and per environment
    the cell of every host and the between-hosts test of every host but the reference."""
    order: list[str] = []
    for h in [ref, *done]:
        order += [e for e in env_order(h.manifest, h.df) if e not in order]
    rank = {e: i for i, e in enumerate(order)}
    by_fig: dict[tuple, dict[str, dict[str, dict]]] = {}
    for host, rows in rows_of.items():
        for r in rows:
            by_fig.setdefault((r["workload"], r["op"], r["metric"]), {}).setdefault(r["env"], {})[
                host
            ] = r
    keys = set(by_fig)
    out = []
    for (workload, op, metric), envs in sorted(by_fig.items()):
        first = next(iter(next(iter(envs.values())).values()))
        lines = []
        for env in sorted(envs, key=lambda e: (rank.get(e, len(rank)), e)):
            cells = {h.name: _cell(envs[env].get(h.name)) for h in done}
            between = {}
            if env != base:
                for h in done:
                    if h.name != ref.name:
                        key = (env, workload, op, metric)
                        between[h.name] = _between(
                            envs[env].get(h.name),
                            envs[env].get(ref.name),
                            ratios_of[h.name].get(key),
                            ratios_of[ref.name].get(key),
                            h.name,
                            ref.name,
                        )
            lines.append({"env": env, "baseline": env == base, "cells": cells, "between": between})
        medians = [c["median"] for ln in lines for c in ln["cells"].values() if c]
        scale, unit = fmt.time_scale(medians, first["unit"])
        out.append(
            {
                "workload": workload,
                "op": op,
                "metric": metric,
                "label": fmt.short_label(workload, op, metric, keys),
                "unit": first["unit"],
                "shown_unit": unit,
                "scale": scale,
                "better": first["better"],
                "envs": lines,
            }
        )
    return out


def _cell(r: dict[str, Any] | None) -> dict[str, Any] | None:
    """A host's summary row cut to what a cell shows (None: the host lacks the figure)."""
    if r is None:
        return None
    keep = ("median", "ci_low", "ci_high", "n", "unit", "better", "ratio", "ratio_ci_low")
    keep += ("ratio_ci_high", "p_adjusted", "significant", "detectable_ratio", "note", "test")
    cell = {k: r.get(k) for k in keep}
    cell["flags"] = list(r.get("flags") or [])
    sig = bool(r["significant"]) and not cell["flags"]
    cell["significant"] = sig
    cell["words"] = analysis.verdict(r) if sig else analysis.undetected(r)
    return cell


def _between(row, ref_row, d_host, d_ref, host: str, ref: str) -> dict[str, Any]:
    """The ratio of ratios host / reference with its test; a note where there is none."""
    out: dict[str, Any] = dict.fromkeys(BETWEEN)
    out.update(significant=False, test="", note="")
    for name, r, d in ((host, row, d_host), (ref, ref_row, d_ref)):
        if r is None:
            out["note"] = f"not measured on {name}"
            return out
        if r.get("flags"):
            out["note"] = f"flagged on {name}: no ratio"
            return out
        if r.get("ratio") is None:
            out["note"] = f"no ratio on {name}" + (f" ({r['note']})" if r.get("note") else "")
            return out
        if d is None:
            out["note"] = f"rounds do not pair on {name}: no per-round ratios"
            return out
    t = ratio_of_ratios(d_host, d_ref)
    out.update(n_rounds=int(len(d_host)), n_rounds_reference=int(len(d_ref)))
    if not t.method:
        out["note"] = "fewer than 2 rounds on one host"
        return out
    trimmed = " trimmed" if int(stats.TRIM * min(len(d_host), len(d_ref))) else ""
    out.update(
        ratio=json_safe(t.ratio),
        ci_low=json_safe(t.low),
        ci_high=json_safe(t.high),
        p_value=json_safe(t.p_value),
        test=f"welch{trimmed} t on per-round log ratios, n={len(d_host)} vs {len(d_ref)}",
        detectable=json_safe(detectable(d_host, d_ref)),
    )
    return out


def _adjust(figures: list[dict[str, Any]]) -> None:
    """Benjamini–Hochberg over every between-hosts test of the fleet (in place)."""
    tests = [
        b
        for f in figures
        for line in f["envs"]
        for b in line["between"].values()
        if b["p_value"] is not None
    ]
    adjusted = stats.benjamini_hochberg([b["p_value"] for b in tests]) if tests else []
    for b, p in zip(tests, adjusted, strict=True):
        b["p_adjusted"] = json_safe(p)
        b["significant"] = bool(
            b["ci_low"] is not None and stats.significant(p, b["ci_low"], b["ci_high"])
        )


def between_words(b: dict[str, Any], ref: str) -> str:
    """ "×1.17 of alpha's ratio" where significant, "none ≥×1.05" where tested and not
    (no difference that large would have been missed with 80% power), "" untested."""
    if b.get("p_adjusted") is None:
        return ""
    if b["significant"]:
        return f"{fmt.fmt_ratio(b['ratio'])} of {ref}'s ratio"
    mde = b.get("detectable")
    return "" if mde is None else (f"none ≥×{mde:.3g}" if mde < 10 else f"none ≥×{mde:.0f}")


def differences(data: dict[str, Any]) -> list[str]:
    """One sentence per significant between-hosts difference, in figure order: "namespaces
    · syscall · getppid(): ×1.27 [1.21, 1.33] on beta, ×1.09 [1.08, 1.11] on alpha; ratio
    of ratios ×1.17 [1.10, 1.22], p = 0.003 (BH)"."""
    ref = data["reference"]
    out = []
    for f in data["figures"]:
        for line in f["envs"]:
            for host, b in line["between"].items():
                if not b["significant"]:
                    continue
                mine, theirs = line["cells"][host], line["cells"][ref]
                out.append(
                    f"{line['env']} · {f['label']}: {_with_ci(mine)} on {host}, "
                    f"{_with_ci(theirs)} on {ref}; ratio of ratios {fmt.fmt_ratio(b['ratio'])} "
                    f"[{fmt.fmt_num(b['ci_low'])}, {fmt.fmt_num(b['ci_high'])}], "
                    f"p = {b['p_adjusted']:.2g} (BH)"
                )
    return out


def _with_ci(c: dict[str, Any]) -> str:
    ci = ""
    if c["ratio_ci_low"] is not None:
        ci = f" [{fmt.fmt_num(c['ratio_ci_low'])}, {fmt.fmt_num(c['ratio_ci_high'])}]"
    return fmt.fmt_ratio(c["ratio"]) + ci


# -- warnings and rows ----------------------------------------------------------------
def _warnings(fleet: Fleet) -> list[str]:
    """What the reader must know before reading across hosts: overlap, each run's failed
    launches and warnings (one line for a warning several hosts share, naming them)."""
    out = []
    if fleet.record.overlapped:
        out.append(
            "hosts ran at the same time (overlapped): where they share hardware (VMs on one "
            "machine, a shared network or storage) their figures may have competed"
        )
    seen: dict[str, list[str]] = {}
    for h in fleet.done:
        for f in analysis.failures(h.df):
            what = f"{f['env']} / {f['workload']} {f['status']} ×{f['count']}: {f['reason']}"
            seen.setdefault(what, []).append(h.name)
        for w in h.manifest.get("warnings") or []:
            seen.setdefault(w, []).append(h.name)
    every = len(fleet.done) > 1
    for what, names in seen.items():
        who = "every host" if every and len(names) == len(fleet.done) else ", ".join(names)
        out.append(f"{who}: {what}")
    return out


def _rows(fleet: Fleet, figures, rows_of, ref: str) -> list[dict[str, Any]]:
    """One JSON row per usable host and figure (that run's summary row, its `host`, and
    the between-hosts test against the reference as `between_*`: null for the reference
    host and the baseline), then one row per host without a usable run."""
    between = {
        (line["env"], f["workload"], f["op"], f["metric"], host): b
        for f in figures
        for line in f["envs"]
        for host, b in line["between"].items()
    }
    fid = fleet.record.id
    out = []
    for host, rows in rows_of.items():
        for r in rows:
            b = between.get((r["env"], r["workload"], r["op"], r["metric"], host))
            extra = {f"between_{k}": (b or {}).get(k) for k in BETWEEN}
            extra["between_significant"] = bool(b and b["significant"])
            out.append(
                {"fleet": fid, "host": host, "host_status": "done", "reference_host": ref}
                | r
                | extra
            )
    for h in fleet.failed:
        out.append({"fleet": fid, "host": h.name, "host_status": h.status, "reason": h.reason})
    return out
