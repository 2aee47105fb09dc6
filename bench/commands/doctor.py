"""`isobench doctor`: what this host can run, and what would make its numbers noisy."""

from __future__ import annotations

import json

import click


def doctor_data(checking=lambda what: None, speed_seconds: float = 10.0) -> dict:
    """Everything doctor shows; `checking(what)` is told what is being checked. The
    speed check (bench/canary.py) runs the host's probes in serve mode for
    `speed_seconds` (0: not run)."""
    from bench import provenance
    from bench.envs import REGISTRY
    from bench.metrics import noise

    kinds = {}
    for name, cls in REGISTRY.items():
        checking(name)
        av = cls.probe()
        kinds[name] = {
            "available": av.ok,
            "reason": av.reason,
            "versions": av.versions,
            "summary": cls.summary,
            "details": [
                {"name": n, "available": a.ok, "reason": a.reason, "versions": a.versions}
                for n, a in cls.details()
                if n != name  # a kind's own row is the kind itself
            ],
        }
    checking("noise (load, steal, governor, busy processes)")
    snap = noise.snapshot()
    speed = None
    if speed_seconds > 0:
        checking(f"the host's speed ({speed_seconds:g} s of getppid and compute bursts)")
        speed = _speed(speed_seconds)
    return {
        "host": provenance.host_facts(),
        "environments": kinds,
        "noise": snap,
        "warnings": noise.warnings(snap),
        "speed": speed,
    }


def _speed(seconds: float) -> dict:
    """The canary's verdict on this host's speed, or why it could not run."""
    from bench import bundle, canary

    try:
        built = bundle.build()
    except bundle.BuildError as e:
        why = f"the speed check could not run: {e}"
        return {"verdict": "unknown", "sentence": why, "error": str(e), "cpus": None}
    return canary.check(built, seconds=seconds)


@click.command()
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@click.option(
    "--speed-check",
    "speed_seconds",
    type=click.FloatRange(min=0),
    default=10.0,
    show_default=True,
    help="seconds of interleaved getppid/compute bursts that tell whether this host's "
    "speed moves in phases (0: skip)",
)
def doctor(as_json, speed_seconds):
    """What this host can run, and what would make its numbers noisy."""
    from rich.table import Table
    from rich.text import Text

    from bench.commands.output import emit, err, out, say

    with err.status("checking …") as status:
        data = doctor_data(lambda what: status.update(f"checking {what} …"), speed_seconds)
    if as_json:
        click.echo(json.dumps(data, indent=2, default=str))
        return
    h = data["host"]
    say(
        "host",
        "bold",
        f"{h['hostname']}: {h['os']}, kernel {h['kernel']}, "
        f"{h['cpu_count']}× {h['cpu_model']}, {h['memory_gib']} GiB, "
        f"virtualization {h['virtualization']}, cgroup {h['cgroup_layout']}",
    )
    t = Table("environment", "available", "reason / versions", box=None, pad_edge=False)
    for name, k in data["environments"].items():
        t.add_row(Text(name), _yes(k["available"]), Text(k["reason"] or _versions(k["versions"])))
        for d in k["details"]:
            why = Text(d["reason"] or _versions(d["versions"]))
            t.add_row(Text(f"  {d['name']}"), _yes(d["available"]), why)
    emit(t)
    for w in data["warnings"]:
        say("warning:", "yellow", w)
    if not data["warnings"]:
        out.print("no noise warnings")
    speed = data["speed"]
    if speed is not None:
        colour = {"quiet": "green", "noisy": "yellow"}.get(speed["verdict"], "red")
        say("speed:", colour, speed["sentence"])


def _yes(ok: bool) -> str:
    return "[green]yes[/]" if ok else "[red]no[/]"


def _versions(v: dict) -> str:
    return ", ".join(f"{k} {val}" for k, val in v.items())
