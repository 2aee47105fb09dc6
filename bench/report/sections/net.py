"""The network section (issue 15): per environment the path its server was reached by or
why it has no figures, per figure the median with its CI, the ratio to the baseline with
its CI and the verdict; grouped charts."""

from __future__ import annotations

from typing import Any

from bench.report.sections.common import figure, wide
from bench.report.view import RunView

STRATEGY = "net"
NET_FIGURES = (  # (op, metric, words): the rows of the network table, in reading order
    ("tcp_rr", "p50_us", "round trip p50"),
    ("tcp_rr", "p99_us", "round trip p99"),
    ("tcp_rr", "trans_per_s", "transactions/s"),
    ("tcp_crr", "conn_per_s", "connections/s (connect + RR + close)"),
    ("tcp_stream_c2s", "mb_per_s", "stream client → server"),
    ("tcp_stream_s2c", "mb_per_s", "stream server → client"),
    ("tcp_rr", "client_cpu_us_per_trans", "client CPU per transaction"),
    ("tcp_rr", "server_cpu_us_per_trans", "server process CPU per transaction"),
    ("tcp_rr", "server_cgroup_cpu_us_per_trans", "server cgroup CPU per transaction"),
    ("tcp_crr", "client_cpu_us_per_trans", "client CPU per connection"),
    ("tcp_crr", "server_cpu_us_per_trans", "server process CPU per connection"),
    ("tcp_crr", "server_cgroup_cpu_us_per_trans", "server cgroup CPU per connection"),
    ("tcp_stream_c2s", "client_cpu_ms_per_mb", "client CPU per MB, client → server"),
    ("tcp_stream_c2s", "server_cpu_ms_per_mb", "server process CPU per MB, client → server"),
    ("tcp_stream_c2s", "server_cgroup_cpu_ms_per_mb", "server cgroup CPU per MB, client → server"),
    ("tcp_stream_s2c", "client_cpu_ms_per_mb", "client CPU per MB, server → client"),
    ("tcp_stream_s2c", "server_cpu_ms_per_mb", "server process CPU per MB, server → client"),
    ("tcp_stream_s2c", "server_cgroup_cpu_ms_per_mb", "server cgroup CPU per MB, server → client"),
)
NET_CHARTS = (  # (id, title, [(op, metric, legend)])
    (
        "latency",
        "tcp_rr round trip (1-byte request/response)",
        [("tcp_rr", "p50_us", "p50"), ("tcp_rr", "p99_us", "p99")],
    ),
    (
        "throughput",
        "tcp_stream throughput",
        [
            ("tcp_stream_c2s", "mb_per_s", "client → server"),
            ("tcp_stream_s2c", "mb_per_s", "server → client"),
        ],
    ),
    (
        "rates",
        "request/response and connection rates",
        [
            ("tcp_rr", "trans_per_s", "tcp_rr transactions/s"),
            ("tcp_crr", "conn_per_s", "tcp_crr connections/s"),
        ],
    ),
    (
        "cpu",
        "CPU per tcp_rr transaction",
        [
            ("tcp_rr", "client_cpu_us_per_trans", "client"),
            ("tcp_rr", "server_cpu_us_per_trans", "server process"),
            ("tcp_rr", "server_cgroup_cpu_us_per_trans", "server cgroup"),
        ],
    ),
)


def section(v: RunView) -> dict[str, Any] | None:
    """The network section, or None when the run planned and recorded no net workload.
    An environment's path comes from the manifest (net_path); one without figures shows
    its failed launches' reasons."""
    rows = v.rows_of(STRATEGY)
    got = {(r["env"], r["op"], r["metric"]): r for r in rows}
    workload = {k: r["workload"] for k, r in got.items()}
    failed: dict[str, list[str]] = {}
    for f in v.fails_of(STRATEGY):
        reason = f["reason"] if isinstance(f["reason"], str) and f["reason"] else "no reason"
        failed.setdefault(f["env"], []).append(f"{f['count']}× {f['status']}: {reason}")
    if not got and not v.planned(STRATEGY):
        return None
    envs = v.measured
    order = [e for e in envs if any(k[0] == e for k in got)]
    unmeasured = [
        e for e in list(envs) + sorted(set(failed) - set(envs)) if e in failed and e not in order
    ]
    env_rows = [
        {
            "env": e,
            "emulated": v.emulated(e),
            "path": v.extra(e, "net_path") or "not recorded",
            "measured": True,
            "failed": failed.get(e, []),
        }
        for e in order
    ]
    env_rows += [
        {
            "env": e,
            "emulated": v.emulated(e),
            "path": v.extra(e, "net_path") or "none",
            "measured": False,
            "failed": failed[e],
        }
        for e in unmeasured
    ]
    figures = []
    for op, metric, words in NET_FIGURES:
        keys = [(e, op, metric) for e in order if (e, op, metric) in got]
        if keys:
            cells = {k[0]: figure(got[k], v.baseline) for k in keys}
            figures.append(
                {
                    "op": op,
                    "metric": metric,
                    "words": words,
                    "unit": next(iter(cells.values()))["unit"],
                    "better": v.better(workload[keys[0]], metric),
                    "cells": cells,
                }
            )
    charts = []
    for cid, title, parts in NET_CHARTS:
        series = []
        for op, metric, legend in parts:
            pts = [
                {"env": e, **figure(got[(e, op, metric)], v.baseline)}
                for e in order
                if (e, op, metric) in got
            ]
            if pts:
                series.append({"name": legend, "op": op, "metric": metric, "points": pts})
        if not series:
            continue
        first = (series[0]["points"][0]["env"], series[0]["op"], series[0]["metric"])
        meds = [p["median"] for s in series for p in s["points"]]
        lows = [p["ci_low"] for s in series for p in s["points"]]
        charts.append(
            {
                "id": f"n{cid}",
                "title": title,
                "unit": series[0]["points"][0]["unit"],
                "better": v.better(workload[first], series[0]["metric"]),
                "log": wide(meds, lows),
                "envs": order,
                "series": series,
            }
        )
    return {
        "baseline": v.baseline,
        "envs": env_rows,
        "measured": order,
        "figures": figures,
        "charts": charts,
    }
