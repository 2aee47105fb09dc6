"""The catalog's probes (workloads/*.c): each launched in a new instance of the environment
and run to completion; its JSON lines are its figures, the launch's phases, cgroup and
host-side readings around them. A guest (one instance per round) runs the round's probes
in one boot."""

from __future__ import annotations

from bench.families.base import Launched


class Probes(Launched):
    name = "probes"
    section = "probes"


FAMILY = Probes()
