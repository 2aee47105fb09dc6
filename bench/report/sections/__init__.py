"""The report's sections per run strategy, and what they share.

SECTIONS maps the name a workload family gives as its report section to the function
that builds it from the run's view (bench/report/view.py); each returns None when the
run has nothing for it. The parts every run has (provenance, warnings, the summary
table) are in their own modules here and bench/report/model.py puts them together.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bench.report.sections import density, net, probes, user
from bench.report.view import RunView

SECTIONS: dict[str, Callable[[RunView], Any]] = {
    "probes": probes.section,
    "density": density.section,
    "net": net.section,
    "user": user.section,
}
