"""What the run ran on and how: the host, each environment's versions and options, the
probe bundle, each environment's disk footprint and the methodology's settings."""

from __future__ import annotations

from typing import Any

from bench.manifest import EnvironmentEntry
from bench.report.view import RunView

METHODOLOGY = (
    "rounds",
    "max_rounds",
    "warmup",
    "budget",
    "timeout",
    "precision",
    "seed",
    "baseline",
    "quick",
)


def versions(e: EnvironmentEntry) -> dict[str, Any]:
    """The environment's versions, with its container runtime's own where the
    description names the runtime but the versions leave it out (docker with runsc)."""
    out = dict(e.versions)
    rt = (e.model_extra or {}).get("runtime")
    rt = rt if isinstance(rt, dict) else {}
    name, version = rt.get("name"), rt.get("version")
    if name and version and name not in out:
        out[name] = str(version).removeprefix(f"{name} version ")
    return out


def kernel_mismatch(e: EnvironmentEntry, host_kernel: str | None) -> str:
    """A sentence when a guest boots another kernel than the host's (else "")."""
    guest = e.versions.get("guest_kernel")
    if not guest or not host_kernel or guest == host_kernel:
        return ""
    return (
        f"guest kernel {guest} is not the host's {host_kernel}: its figures include the "
        "difference between the two kernels (the fairest guest boots the host's own "
        "kernel: kernel=/boot/vmlinuz-" + host_kernel + ")"
    )


def provenance(v: RunView) -> dict[str, Any]:
    host = dict(v.manifest.host)
    mitigations = host.pop("mitigations", {}) or {}
    cmdline = host.pop("cmdline", None)
    described = v.manifest.environments
    order = v.envs
    envs = []
    for label in sorted(described, key=lambda k: (order.index(k) if k in order else len(order), k)):
        e = described[label]
        envs.append(
            {
                "label": label,
                "kind": e.kind,
                "spec": e.spec,
                "options": {k: x for k, x in e.options.items() if x is not None},
                "available": e.available,
                "reason": e.reason,
                "emulated": e.emulated,
                "versions": versions(e),
                "config": v.extra(label, "config") or {},
                "kernel_note": kernel_mismatch(e, host.get("kernel")),
            }
        )
    bundle = v.manifest.bundle
    return {
        "host": host,
        "mitigations": mitigations,
        "cmdline": cmdline,
        "envs": envs,
        "bundle": {k: x for k, x in bundle.items() if k != "probes"},
        "probes": bundle.get("probes") or {},
    }


def disk(v: RunView) -> list[dict[str, Any]]:
    """The disk footprint each environment recorded once per run (environments[label]
    ["disk"]): its artefacts and what one instance adds, in MiB, each figure with what it
    counts, or why there is none. Empty when the run recorded none."""
    described = v.manifest.environments
    out = []
    for label in v.envs + sorted(set(described) - set(v.envs)):
        d = v.extra(label, "disk")
        if not isinstance(d, dict):
            continue
        figures = [
            {
                "what": f.get("what", "?"),
                "counts": f.get("counts") or "",
                "mib": None if f.get("bytes") is None else f["bytes"] / 2**20,
                "reason": f.get("reason") or "",
            }
            for f in d.get("figures") or []
        ]
        out.append(
            {
                "env": label,
                "emulated": v.emulated(label),
                "error": d.get("error") or "",
                "figures": figures,
            }
        )
    return out


def methodology(v: RunView) -> dict[str, Any]:
    m = v.manifest
    return {k: m.matrix.get(k) for k in METHODOLOGY} | {
        "rounds_done": m.rounds_done,
        "measured_seconds": m.measured_seconds,
        "stop_reason": m.stop_reason,
    }
