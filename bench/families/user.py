"""A user's own workload run to completion (a pytest-benchmark suite or a command,
[[user_workload]] in the matrix): launched through the bundle's userrun probe as any
probe, in the environment's rootfs; its output read by the workload's parser
(bench/families/userrun.py, bench/parsers.py) into figures before it is recorded."""

from __future__ import annotations

from typing import Any

from bench.envs.base import Launch
from bench.families import userrun
from bench.families.base import Launched, Settings


class User(Launched):
    name = "user"
    section = "user"

    def read(
        self, s: Settings, launch: Launch, base: dict[str, Any], described: dict[str, Any]
    ) -> Launch:
        return userrun.read_recorded(s, launch, base, described)


FAMILY = User()
