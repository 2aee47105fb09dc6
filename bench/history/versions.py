"""What ran in each run, as a flat dict of name -> value, and what changed from one run
to the next: the kernel, isobench, the probe bundle's hash, and per environment its
versions (runtime, daemon, containerd...), its daemon's and runtime's version and its
options (a quota, a seccomp profile). All of it is in the run's manifest.

A new bundle hash means other bytes ran: it is always listed (`always` below), even
where a caller shows only some of the changes.
"""

from __future__ import annotations

from typing import Any

BUNDLE = "probe bundle"


def facts(manifest: dict[str, Any]) -> dict[str, str]:
    """The run's versions and configuration, flattened (values as text)."""
    host = manifest.get("host") or {}
    out = {
        "kernel": host.get("kernel"),
        "isobench": host.get("isobench"),
        BUNDLE: (manifest.get("bundle") or {}).get("hash"),
    }
    for label, env in sorted((manifest.get("environments") or {}).items()):
        for k, v in sorted((env.get("versions") or {}).items()):
            out[f"{label}: {k}"] = v
        daemon = env.get("daemon") or {}
        if isinstance(daemon, dict) and daemon.get("version"):
            out[f"{label}: daemon"] = daemon["version"]
        runtime = env.get("runtime") or {}
        if isinstance(runtime, dict) and runtime.get("version"):
            out[f"{label}: runtime {runtime.get('name', '')}".rstrip()] = runtime["version"]
        for k, v in sorted((env.get("options") or {}).items()):
            out[f"{label}: {k}"] = v
    return {k: "" if v is None else str(v) for k, v in out.items()}


def changes(runs_facts: list[dict[str, str]]) -> list[list[dict[str, str]]]:
    """Per run (the first has none): what changed since the run before it,
    [{what, before, after}], the bundle first."""
    out: list[list[dict[str, str]]] = [[]]
    for before, after in zip(runs_facts, runs_facts[1:], strict=False):
        diff = [
            {"what": k, "before": before.get(k, ""), "after": after.get(k, "")}
            for k in sorted(set(before) | set(after), key=lambda k: (k != BUNDLE, k))
            if before.get(k, "") != after.get(k, "")
        ]
        out.append(diff)
    return out
