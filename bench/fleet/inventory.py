"""The hosts of an Ansible inventory (INI, YAML, a script: whatever Ansible reads) that
a --limit pattern selects, as Ansible itself resolves them (`ansible-inventory --list`),
so groups and patterns work as Ansible users expect."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path


class InventoryError(ValueError):
    """A user error in the inventory or the pattern: one line."""


@dataclass(frozen=True)
class Host:
    name: str
    address: str  # ansible_host, else the name
    port: int | None


def parse_list(data: dict) -> list[Host]:
    """Hosts of `ansible-inventory --list` output, in the order the groups list them."""
    hostvars = (data.get("_meta") or {}).get("hostvars") or {}
    names: list[str] = []
    for group, body in data.items():
        if group == "_meta" or not isinstance(body, dict):
            continue
        for name in body.get("hosts") or []:
            if name not in names:
                names.append(name)
    hosts = []
    for name in names:
        hv = hostvars.get(name) or {}
        port = hv.get("ansible_port")
        hosts.append(Host(name, str(hv.get("ansible_host") or name), int(port) if port else None))
    return hosts


def _error_line(stderr: str) -> str:
    errors = [ln for ln in stderr.splitlines() if ln.startswith("[ERROR]")]
    lines = errors or [ln for ln in stderr.splitlines() if ln.strip()] or ["(no output)"]
    return lines[-1].removeprefix("[ERROR]:").strip()


def resolve(inventory: Path, limit: str | None, env: dict[str, str]) -> list[Host]:
    """The selected hosts; InventoryError (one line) for an inventory Ansible cannot
    parse, one with no hosts, a --limit no host matches, or two names for one address."""
    if not inventory.exists():
        raise InventoryError(f"inventory {inventory}: no such file or directory")
    argv = [sys.executable, "-m", "ansible.cli.inventory", "-i", str(inventory), "--list"]
    if limit:
        argv += ["--limit", limit]
    res = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    if res.returncode != 0:
        raise InventoryError(f"inventory {inventory}: {_error_line(res.stderr)}")
    try:
        hosts = parse_list(json.loads(res.stdout))
    except (ValueError, TypeError, AttributeError) as e:
        raise InventoryError(f"inventory {inventory}: unreadable host list ({e})") from None
    if not hosts and limit:
        raise InventoryError(f"--limit {limit!r} matches no host of {inventory}")
    if not hosts:
        raise InventoryError(f"inventory {inventory} has no hosts")
    seen: dict[tuple, str] = {}
    for h in hosts:
        key = (h.address, h.port)
        if key in seen:
            raise InventoryError(
                f"hosts {seen[key]} and {h.name} are the same address ({h.address}): "
                "their runs would measure each other"
            )
        seen[key] = h.name
    return hosts
