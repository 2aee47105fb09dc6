"""What host and guest say to each other.

In: the kernel command line (`cmdline`) lists the probes, each with its arguments, every
argument base64-encoded as its own `isobench.arg=` word; init (initramfs.RUN_SCRIPT)
decodes each into one positional parameter and runs "$probe" "$@", one probe after the
other, so no shell string is ever built from user input. One boot runs all the workloads
of a round (`run_order`: startup first).

A boot for the net workload also has `isobench.net=ADDR/PREFIX`: init loads virtio-net
and gives the guest's NIC that address before the first probe. A boot from an isobench
rootfs has `isobench.root=1`: init switches root into its root disk first. A probe in
serve mode has `isobench.serve=1` after its `isobench.run=`: init runs it with its stdin
and stdout on the control port (channel.py), its lines up to `ready` on the console.

Out: the serial console (ttyS0), parsed by `parse_console` (pure): `isobench-uptime <s>`
(the guest kernel's /proc/uptime right before the first probe starts), then for each
probe `isobench-begin <n> <probe>`, the probe's own `ready` and JSON lines (and its
stderr), `isobench-timeout <n> <s>` if it outlived the time limit and was killed,
`isobench-exit <n> <status>`; then init powers off (`poweroff -f`).
"""

from __future__ import annotations

import base64
import contextlib
import ipaddress
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from bench.envs.guest import GuestError

GUEST_WORKDIR = "/mnt/io"
UPTIME_PREFIX = "isobench-uptime "
BEGIN_PREFIX = "isobench-begin "  # <n> <probe>
EXIT_PREFIX = "isobench-exit "  # <n> <status>
TIMEOUT_PREFIX = "isobench-timeout "  # <n> <limit s>: killed
ERROR_PREFIX = "isobench-error "
READY = "ready"
KERNEL_LINE = re.compile(r"^\[\s*\d+\.\d+\]")  # a kernel message on the console
CMDLINE_MAX = 2048  # x86 COMMAND_LINE_SIZE, the terminating NUL included
# quiet console (errors only), never wait after a panic, reboot = QEMU exits (-no-reboot)
BASE_CMDLINE = ("console=ttyS0", "loglevel=3", "panic=-1", "reboot=t")
SERVE_WORD = "isobench.serve=1"  # after a run's word: its stdio is the control port
PROBE_NAME = re.compile(r"^[A-Za-z0-9_.+-]+$")


@dataclass(frozen=True)
class GuestRun:
    """One probe for the guest to run: its name, its arguments as the guest sees them
    (the io directory is GUEST_WORKDIR) and whether it needs the io disk."""

    probe: str
    args: tuple[str, ...]
    disk: bool
    serves: bool = False  # serve mode: its stdin and stdout are the control port


def guest_run(inv, io_dir: str = GUEST_WORKDIR) -> GuestRun:
    """`io_dir`: where the io disk is mounted in the guest (a rootfs's roots.WORKDIR)."""
    workdir = io_dir if inv.needs_workdir else None
    args = tuple(inv.argv(inv.probe, workdir)[1:])
    return GuestRun(inv.probe, args, inv.needs_workdir, inv.serves)


def run_order(invs: Sequence) -> list[int]:
    """Pure: the order in which one guest runs a round's invocations (indices into
    invs): `startup` first, so the boot's `ready` is the startup probe's, as when it ran
    alone; the others as given."""
    return sorted(range(len(invs)), key=lambda i: invs[i].workload != "startup")


def cmdline(
    runs: Sequence[GuestRun], limit_s: float, net: str | None = None, root: bool = False
) -> str:
    """The kernel command line for one boot: each probe as an `isobench.run=` word,
    followed by its arguments base64-encoded, one `isobench.arg=` word each (RUN_SCRIPT
    decodes each into one positional parameter: no shell string is built from them).
    `net`: the guest NIC's address (ADDR/PREFIX), which init gives it before the probes.
    `root`: init switches root into the root disk first (`isobench.root=1`).
    A run that serves (`isobench.serve=1` after its word) gets the control port
    (channel.py) as its stdin and stdout.
    Without runs, init itself says `ready` (the KVM trial)."""
    words = [*BASE_CMDLINE, f"isobench.timeout={math.ceil(limit_s)}"]
    if any(r.disk for r in runs):
        words.append("isobench.disk=1")
    if root:
        words.append("isobench.root=1")
    if net is not None:
        words.append(f"isobench.net={ipaddress.IPv4Interface(net).with_prefixlen}")
    for r in runs:
        if not PROBE_NAME.match(r.probe):
            raise GuestError(f"probe name {r.probe!r} is not a plain file name")
        words.append(f"isobench.run={r.probe}")
        if r.serves:
            words.append(SERVE_WORD)
        words += [f"isobench.arg={base64.b64encode(a.encode()).decode()}" for a in r.args]
    text = " ".join(words)
    if len(text) >= CMDLINE_MAX:
        raise GuestError(
            f"the round's probe arguments are too long for the kernel command line "
            f"({len(text)} B, the limit is {CMDLINE_MAX - 1})"
        )
    return text


@dataclass
class ProbeRun:
    """Pure: what the console says about one probe of a boot."""

    probe: str
    ready: bool = False  # it printed `ready`
    lines: list[str] = field(default_factory=list)  # its other lines (JSON, stderr)
    exit_code: int | None = None
    limit_s: int | None = None  # it outlived the time limit and was killed


@dataclass
class Console:
    """Pure: a boot's console lines, split into init's, the kernel's and each probe's."""

    uptime_s: float | None = None  # the guest's uptime when the first probe started
    errors: list[str] = field(default_factory=list)  # init's own failures
    other: list[str] = field(default_factory=list)  # kernel and stray lines
    runs: list[ProbeRun] = field(default_factory=list)  # in the order they began


def parse_console(lines: Iterable[str]) -> Console:
    out = Console()
    run: ProbeRun | None = None
    for line in lines:
        text = line.strip("\r\n\0 ")
        if text.startswith(UPTIME_PREFIX):
            with contextlib.suppress(ValueError):
                out.uptime_s = float(text[len(UPTIME_PREFIX) :].split()[0])
        elif text.startswith(BEGIN_PREFIX):
            run = ProbeRun(text[len(BEGIN_PREFIX) :].partition(" ")[2])
            out.runs.append(run)
        elif text.startswith(EXIT_PREFIX) and run is not None:
            with contextlib.suppress(ValueError, IndexError):
                run.exit_code = int(text[len(EXIT_PREFIX) :].split()[1])
            run = None
        elif text.startswith(TIMEOUT_PREFIX) and run is not None:
            with contextlib.suppress(ValueError, IndexError):
                run.limit_s = int(text[len(TIMEOUT_PREFIX) :].split()[1])
        elif text.startswith(ERROR_PREFIX):
            out.errors.append(text[len(ERROR_PREFIX) :])
        elif KERNEL_LINE.match(text) or (run is None and text and text != READY):
            out.other.append(text)
        elif run is not None and text == READY and not run.ready:
            run.ready = True
        elif run is not None:
            run.lines.append(text)
    return out
