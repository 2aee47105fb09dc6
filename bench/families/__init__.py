"""Run strategies — ways of measuring a workload (the C probes live in the top-level
workloads/ directory; workloads/catalog.toml names each workload's strategy).

Each strategy is a family module behind one interface (base.Family: whether it holds
instances, its warm-up, one round on an environment, its time estimate, the report
section that shows it) and one entry in REGISTRY below. The runner looks a workload's
strategy up here and calls it; it names none. A family imports no other family: what
several share is in base.py (the interface, the run-to-completion round), common.py (a
free port, the wait for a server's address) and userrun.py (reading userrun's output).
"""

from __future__ import annotations

from bench.catalog import Workload
from bench.families import bursts, density, net, probes, user, userserver
from bench.families.base import Family

REGISTRY: dict[str, Family] = {
    "probes": probes.FAMILY,
    "bursts": bursts.FAMILY,
    "density": density.FAMILY,
    "net": net.FAMILY,
    "user": user.FAMILY,
    "userserver": userserver.FAMILY,
}


class UnknownStrategy(ValueError):
    """A workload whose strategy is not in REGISTRY; the message is one line."""


def of(w: Workload) -> Family:
    """The strategy that measures `w`."""
    try:
        return REGISTRY[w.strategy]
    except KeyError:
        raise UnknownStrategy(
            f"workload {w.name!r}: unknown strategy {w.strategy!r} (known: {', '.join(REGISTRY)})"
        ) from None
