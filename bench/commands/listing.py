"""`isobench list`: the workloads and the environment kinds with their options."""

from __future__ import annotations

import click


@click.command("list")
def list_cmd():
    """Workloads and environment kinds with their options."""
    from rich.table import Table
    from rich.text import Text

    from bench import catalog
    from bench.commands.output import emit
    from bench.envs import REGISTRY
    from bench.envs.base import COMMON_OPTIONS

    t = Table("workload", "probe", "figures", "description", box=None)
    for w in catalog.load().values():
        figs = ", ".join(f"{m} ({x.unit}, {x.better} is better)" for m, x in w.metrics.items())
        phases = "phases: " + ", ".join(catalog.PHASE_METRICS)
        t.add_row(*map(Text, (w.name, w.probe, figs or phases, w.description)))
    emit(t)
    t = Table("environment", "options", "what it is", box=None)
    for name, cls in REGISTRY.items():
        opts = {**COMMON_OPTIONS, **cls.options}
        text = "; ".join(
            f"{k}" + (f"={'|'.join(o.choices)}" if o.choices else "") for k, o in opts.items()
        )
        t.add_row(*map(Text, (name, text, cls.summary)))
    emit(t)
