"""Linux namespaces in their rawest form: unshare(1) gives the probe new pid, mount, net,
uts, ipc and cgroup namespaces inside a fresh cgroup. No runtime, no seccomp, no image."""

from __future__ import annotations

import shutil
import subprocess
from typing import Any

from bench.envs.base import Availability
from bench.envs.containers import tool_version
from bench.envs.host import HostEnv

UNSHARE = ["--pid", "--fork", "--mount-proc", "--mount", "--net", "--uts", "--ipc", "--cgroup"]


class NamespacesEnv(HostEnv):
    kind = "namespaces"
    summary = "unshare: new pid/mount/net/uts/ipc/cgroup namespaces, no runtime, no seccomp"

    @classmethod
    def probe(cls, opts: dict[str, Any] | None = None) -> Availability:
        base = super().probe(opts)
        if not base.ok:
            return base
        path = shutil.which("unshare")
        if not path:
            return Availability(False, "unshare not found: install util-linux")
        try:
            res = subprocess.run(
                [path, *UNSHARE, "true"], capture_output=True, text=True, timeout=10
            )
        except (OSError, subprocess.TimeoutExpired) as e:
            return Availability(False, f"unshare could not run: {e}")
        if res.returncode != 0:
            why = (res.stderr.strip().splitlines() or ["no message"])[-1]
            return Availability(False, f"unshare refused new namespaces: {why}")
        return Availability(
            True, versions={**base.versions, "unshare": tool_version([path, "--version"])}
        )

    def wrap(self, argv: list[str]) -> list[str]:
        return [shutil.which("unshare") or "unshare", *UNSHARE, "--", *argv]
