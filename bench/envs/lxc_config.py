"""What the `lxc` kind writes and what it looks for, as pure functions where it can: the
container's config file, the cgroup paths LXC makes from it, the lock files liblxc
keeps for it, and how `clean` proves a running LXC container or a lock file is
isobench's (bench/envs/lxc.py runs them).

The config: `lxc.include` of LXC's common.conf, what every container LXC's templates
make gets (its device allowlist, dropped capabilities, proc/sys/cgroup mounts and the
seccomp denylist common.seccomp: "LXC's default"); then the instance's own lines. The
first line is the marker `clean` reads: `# isobench lxc instance <name>`.

Cgroups: `lxc.cgroup.dir.container = <name>/payload` and `lxc.cgroup.dir.monitor =
<name>.monitor` instead of LXC's lxc.payload.<name> / lxc.monitor.<name>: the parent
<name> is isobench's (LXC removes the leaf, not the parent), so after the container is
gone it still holds its totals (the trick of containers.LaunchCgroup), and every
directory is named isobench-* where `clean` looks for cgroups. As root LXC makes them at
each hierarchy's root (it leaves the caller's cgroup unless lxc.cgroup.relative = 1):
/sys/fs/cgroup/<controller>/<name>/payload on v1 and hybrid hosts,
/sys/fs/cgroup/<name>/payload on a v2 host (metrics.cgroup.Layout maps both).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

COMMON_CONF = Path("/usr/share/lxc/config/common.conf")
COMMON_SECCOMP = Path("/usr/share/lxc/config/common.seccomp")
LOCK_ROOT = Path("/run/lxc/lock")  # liblxc's locks of a privileged container's lxcpath
MARKER = "# isobench lxc instance"
NAME_PREFIX = "isobench-"
LXCPATH = "isobench-lxc"  # the private lxcpath, in the scratch (a name liblxc never uses)
CFS_PERIOD_US = 100_000
SAFE_VALUE = re.compile(r"^[A-Za-z0-9_.:/@+=,-]+$")  # what a config value may hold


def payload_rel(name: str) -> str:
    """The container's cgroup (relative to each hierarchy's mount)."""
    return f"{name}/payload"


def monitor_rel(name: str) -> str:
    """The monitor's cgroup: beside the parent, so the parent holds the container only."""
    return f"{name}.monitor"


@dataclass(frozen=True)
class Net:
    """The instance's network: mode none (a namespace with loopback only), host (the
    host's namespace), or veth (a pair: `host_end` on the host, eth0 inside at `inside`,
    a /30's address in CIDR form)."""

    mode: str
    host_end: str = ""
    inside: str = ""


def limit_lines(layout: str, cpus: float | None, cpuset: str | None, memory: int | None):
    """Pure: the config lines of the resource options on a cgroup `layout` (v1 and
    hybrid: the v1 controllers' keys, lxc.cgroup.*; v2: lxc.cgroup2.*)."""
    v2 = layout == "v2"
    out = []
    if cpus is not None:
        quota = max(1000, int(cpus * CFS_PERIOD_US))
        if v2:
            out.append(("lxc.cgroup2.cpu.max", f"{quota} {CFS_PERIOD_US}"))
        else:
            out.append(("lxc.cgroup.cpu.cfs_period_us", str(CFS_PERIOD_US)))
            out.append(("lxc.cgroup.cpu.cfs_quota_us", str(quota)))
    if cpuset is not None:
        out.append(("lxc.cgroup2.cpuset.cpus" if v2 else "lxc.cgroup.cpuset.cpus", cpuset))
    if memory is not None:
        key = "lxc.cgroup2.memory.max" if v2 else "lxc.cgroup.memory.limit_in_bytes"
        out.append((key, str(memory)))
    return out


def config_text(
    name: str,
    rootfs: Path,
    *,
    env: tuple[str, ...],
    cwd: str,
    net: Net,
    seccomp: str,
    apparmor: str | None,
    limits: list[tuple[str, str]],
) -> str:
    """Pure: the container's config file. ValueError when a value would not stay one
    line of the format (a path with a newline...)."""
    lines = [
        ("lxc.include", str(COMMON_CONF)),
        ("lxc.uts.name", name),
        ("lxc.rootfs.path", f"dir:{rootfs}"),
        ("lxc.init.cwd", cwd),
        *(("lxc.environment", e) for e in env),
        ("lxc.cgroup.dir.container", payload_rel(name)),
        ("lxc.cgroup.dir.monitor", monitor_rel(name)),
    ]
    if net.mode == "host":
        lines.append(("lxc.net.0.type", "none"))
    elif net.mode == "veth":
        lines += [
            ("lxc.net.0.type", "veth"),
            ("lxc.net.0.veth.pair", net.host_end),
            ("lxc.net.0.name", "eth0"),
            ("lxc.net.0.flags", "up"),
            ("lxc.net.0.ipv4.address", net.inside),
        ]
    else:
        lines.append(("lxc.net.0.type", "empty"))
    if seccomp == "unconfined":
        lines.append(("lxc.seccomp.profile", ""))  # empty: clears common.conf's
    if apparmor:
        lines.append(("lxc.apparmor.profile", apparmor))
    lines += limits
    out = [f"{MARKER} {name}"]
    for key, value in lines:
        if value and not SAFE_VALUE.match(value):
            raise ValueError(f"lxc config {key}: {value!r} cannot be written safely")
        out.append(f"{key} = {value}".rstrip())
    return "\n".join(out) + "\n"


def is_ours(config: str, name: str) -> bool:
    """Pure: the config file of container `name` is one isobench wrote (its marker line,
    naming that container)."""
    return name.startswith(NAME_PREFIX) and f"{MARKER} {name}" in config.splitlines()


def monitor_of(argv: list[str]) -> tuple[str, str] | None:
    """Pure: (lxcpath, name) of an `lxc-execute -P PATH -n NAME -- ...` process (the
    monitor of a container isobench starts: it runs in the foreground); None for any
    other process or a name without isobench's prefix."""
    if not argv or Path(argv[0]).name != "lxc-execute":
        return None
    head = argv[1 : argv.index("--")] if "--" in argv else argv[1:]
    found: dict[str, str] = {}
    for i, arg in enumerate(head):
        for short, long_ in (("-P", "--lxcpath"), ("-n", "--name")):
            if arg == short and i + 1 < len(head):
                found[short] = head[i + 1]
            elif arg.startswith(long_ + "="):
                found[short] = arg.split("=", 1)[1]
    path, name = found.get("-P"), found.get("-n")
    if not path or not name or not name.startswith(NAME_PREFIX):
        return None
    return path, name


def lock_dir(lxcpath: Path, root: Path = LOCK_ROOT) -> Path:
    """Where liblxc keeps the lock files of a privileged container in `lxcpath`: the
    path mirrored under /run/lxc/lock (a file .<name> per container)."""
    return root / str(lxcpath).lstrip("/")


def lock_of(lxcpath: Path, name: str, root: Path = LOCK_ROOT) -> Path:
    return lock_dir(lxcpath, root) / f".{name}"


def lock_leftovers(root: Path = LOCK_ROOT) -> list[tuple[Path, Path, str]]:
    """(lock file, the lxcpath it mirrors, container name) of every lock file liblxc
    left for an isobench container: `.isobench-*` in a mirrored directory named like
    isobench's private lxcpath."""
    out = []
    if not root.is_dir():
        return out
    for lock in sorted(root.rglob(f".{NAME_PREFIX}*")):
        if lock.is_file() and not lock.is_symlink() and lock.parent.name == LXCPATH:
            lxcpath = Path("/") / lock.parent.relative_to(root)
            out.append((lock, lxcpath, lock.name[1:]))
    return out


def remove_lock(lock: Path, root: Path = LOCK_ROOT) -> None:
    """Remove a lock file, then its mirrored directories while they are empty (never
    `root` itself)."""
    try:
        lock.unlink()
    except FileNotFoundError:
        pass
    except OSError:
        return
    prune(lock.parent, root)


def prune(directory: Path, root: Path = LOCK_ROOT) -> None:
    """rmdir `directory` and its parents below `root` while each is empty."""
    d = directory
    while d != root and root in d.parents:
        try:
            d.rmdir()
        except OSError:  # not empty (another lxcpath's), or gone
            return
        d = d.parent
