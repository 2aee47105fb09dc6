"""Bursts: steady-state figures (syscall, cpu) measured in interleaved bursts on held
instances, so that each environment is compared with the host milliseconds apart, not a
minute apart (issue 22).

A round is one held set: every environment of the set holds one fresh instance of the
workload's probe in serve mode (its kind's control channel: Instance.ask). Each probe
sets up and calibrates its ops as it starts, while the next instances are started (not
one after another at their first bursts: cpu's buffers took ~0.4 s an instance, 4 s of
a 12 s held set of ten). After one untimed burst of each op in each instance, the round
runs its blocks (catalog `bursts` table, BurstPlan.schedule): a block is one burst of
one op in every environment, in a fresh random order per block, so the bursts of a block
are at most a few tens of ms apart and share the machine's speed phase. Every instance
is stopped at the end of the round (relaunched in the next: per-launch effects such as
placement or a sandbox's state enter the interval honestly). Each burst is one record
carrying its block and its held set; analysis pairs an environment's bursts with the
baseline's of the same block (stats.burst_ratio_test: the round is the cluster).

Idle neighbours: while one instance measures, the others of its set sit idle. Here an
idle held instance takes ~0 CPU itself (a runsc sandbox ~0.02% of a CPU), but the
harness's host-side sampler of a held container walked /proc every 0.1 s: 1-14% of a CPU
per instance, a dozen of them a third of a core on a 2-core host. So every instance is
quiet (Instance.quiet: its samplers paused) through the blocks; a kind that declares an
idle cost (Environment.idle_cost: a polling sandbox, an idle guest), or an environment
given freeze=yes, is also frozen (Instance.freeze: SIGSTOP over its cgroup tree) outside
its own turn in a block (Environment.freezes). `isobench validate` checks both: the A/A
beside the neighbours held idle and quiet, and in a held set with them frozen between
their turns, against none (bench/validate_neighbours.py).

Between cycles of blocks (once every op had a block, at most every CANARY_BLOCKS blocks)
the runner's `between_blocks` records the host canary (bench/canary.py, the run's noise
diagnosis).

An environment whose kind has no control channel is measured as before: the probe
launched and run to completion with the workload's ordinary arguments (Launched), in the
same round; its figures then pair with the baseline's by round only.

A software-emulated guest (QEMU TCG) runs these workloads launched, in its round's one
boot, with the workload's ordinary arguments, on its own budget share (matrix
`emulated_share`); its ratios pair by round. Held sets would cost it a boot of ~11 s
per workload per round here: in a quick main job the two TCG guests' first round alone
took 112 s (three boots each), more than their whole share of 71 s, so they got one
round and no interval, and the others lost a round. A guest under KVM is in the held
set like any other kind (its channel: a virtio-serial port).
"""

from __future__ import annotations

import contextlib
import random
import time
from typing import Any

from bench.envs.base import ChannelError, Instance, Launch, StartError
from bench.families.base import Family, Job, Launched, Round, Settings
from bench.interrupt import check
from bench.probeio import parse_lines


class Bursts(Family):
    name = "bursts"
    section = "probes"
    holds = True  # held instances; never part of a guest's one-boot round
    shared = True  # a round spans every environment of its held set: round_all()

    def round(self, s: Settings, job: Job) -> Round:
        """One environment alone (a warm-up; an emulated guest: launched, see above)."""
        if job.env.emulated:
            return Launched().round(s, job)
        return self.round_all(s, [job], rnd=0)[0]

    def round_all(self, s: Settings, jobs: list[Job], *, rnd: int) -> list[Round]:
        """One held set: one Round per job (each job one cell of the same workload, in
        its own environment), its launch carrying the bursts as records."""
        w = jobs[0].workloads[0]
        plan = w.bursts
        assert plan is not None and all(j.workloads == [w] for j in jobs)
        inv = w.served(quick=s.quick, emulated=False)
        args = " ".join(inv.args)
        out: list[Round | None] = [None] * len(jobs)
        held: dict[int, Instance] = {}
        rng = random.Random(f"{s.run_id}:{rnd}:{w.name}")
        for i, job in enumerate(jobs):  # first: a held probe prepares its ops at start
            if not job.env.channel:  # measured as a launch, in this same round
                out[i] = Launched().round(s, job)
        try:
            for i, job in enumerate(jobs):
                if not job.env.channel:
                    continue
                try:
                    held[i] = job.env.start(inv, s.timeout)
                except StartError as e:
                    out[i] = Round([Launch(status="failed", reason=str(e))], [args])
            sets = _Bursts(held, s.timeout)
            for i, instance in list(held.items()):
                if not instance.wait_ready():
                    sets.drop(i, "no `ready`")
            quota = [_quota(job) for job in jobs]
            # one length per op in the whole set, the quota's where any has one: a
            # window's length moves a figure by itself (mem_lat read 12% lower in 300 ms
            # bursts than in 10 ms ones), so pairs compare like with like
            ms = {op: plan.burst_ms(op, any(quota)) for op in plan.ops}
            for op in plan.ops:  # untimed: a warm-up, once the probe has prepared its ops
                for i in list(sets.live):
                    sets.burst(i, op, ms[op], block=None)
            sets.settle({i for i, job in enumerate(jobs) if job.env.freezes})
            cycle = max(len(plan.ops), CANARY_BLOCKS)
            for block, op in enumerate(plan.schedule(s.quick), 1):
                check()
                order = sorted(sets.live)
                rng.shuffle(order)
                for i in order:  # under a quota, primed without a pause: see PRIME_MS
                    with sets.turn(i):
                        sets.burst(i, op, ms[op], block=block, prime=quota[i])
                if block % cycle == 0:
                    s.between_blocks(rnd)
        finally:
            launches = {i: instance.stop() for i, instance in held.items()}
        for i, launch in launches.items():
            sets.conclude(i, launch)
            out[i] = Round([launch], [args])
        return [r for r in out if r is not None]


# The host canary's pairs (4 x 10 ms of bursts) follow a cycle of blocks (every op had
# one), at most once every CANARY_BLOCKS blocks: after each block of a one-op plan
# (validate's idle-neighbour A/A) they took 40 ms of every 50.
CANARY_BLOCKS = 4

# Under a CPU quota, a window of whole CFS periods reads the quota exactly only when the
# probe has run without a pause since the last period boundary: a held probe sits idle
# while the others take their bursts, its quota refills, and a 300 ms window after the
# idle gap got min(qP, P - phase) + 2qP + min(qP, phase) of CPU: cpus=0.25 read x2.9 and
# x3.4 instead of x4 (validate's known answers). One period of the op just before (a
# boundary crossed, the probe throttled into the regular pattern), in the same command
# (`prime=`): as a command of its own, the round trip between the two left the probe
# idle again, and the quota it did not spend there went to the window, which read
# cpus=0.25 and 0.5 1-7% fast (a round trip of 1-5 ms through docker's attach stream).
PRIME_MS = 100


def _quota(job: Job) -> bool:
    """The environment runs under a CPU quota (its kind's `cpus` option is set)."""
    return bool(job.env.opts.get("cpus"))


class _Bursts:
    """The bursts of one held set as they come: each instance's records, the ops it
    could not measure, and why an instance dropped out."""

    def __init__(self, held: dict[int, Instance], timeout: float):
        self.held = held
        self.live = set(held)
        self.timeout = timeout
        self.records: dict[int, list[dict[str, Any]]] = {i: [] for i in held}
        self.errors: dict[int, dict[str, str]] = {i: {} for i in held}
        self.dropped: dict[int, str] = {}
        self.t0 = time.monotonic_ns()
        self.freeze: set[int] = set()  # frozen between their own bursts

    def settle(self, freeze: set[int]) -> None:
        """Before the blocks: no instance is watched by the harness while any measures
        (Instance.quiet: a held container's sampler walks /proc every 0.1 s, 1-14% of a
        CPU each, far more than what an idle instance itself takes here, ~0); those of
        `freeze` (kinds that declare an idle cost) are frozen between their own bursts.
        stop() thaws and takes the samplers' last reading."""
        self.freeze = freeze & set(self.held)
        for i, instance in self.held.items():
            instance.quiet(True)
            if i in self.freeze:
                instance.freeze()

    def drop(self, i: int, why: str) -> None:
        self.live.discard(i)
        self.dropped.setdefault(i, why)

    @contextlib.contextmanager
    def turn(self, i: int):
        """Instance i's turn in a block: thawed for it when it is frozen between turns."""
        frozen = i in self.freeze and i in self.live
        if frozen:
            self.held[i].thaw()
            self.held[i].quiet(True)
        try:
            yield
        finally:
            if frozen and i in self.live:
                self.held[i].freeze()

    def burst(self, i: int, op: str, ms: int, block: int | None, prime: bool = False) -> None:
        if i not in self.live:
            return
        # when the timed window begins: after the primer, if any
        t = time.monotonic_ns() + (PRIME_MS * 1_000_000 if prime else 0)
        command = f"{op} ms={ms} prime={PRIME_MS}" if prime else f"{op} ms={ms}"
        try:
            line = self.held[i].ask(command, self.timeout)
        except ChannelError as e:
            self.drop(i, f"control channel: {e}")
            return
        parsed = parse_lines([line])
        if parsed.errors:
            self.errors[i].setdefault(op, parsed.errors[0])
        elif not parsed.records:
            self.drop(i, f"control channel: the probe answered {line[:120]!r}")
        elif block is not None:
            rec = {**parsed.records[0], "block": block, "set": "", "ms": ms}
            rec["at_ms"] = round((t - self.t0) / 1e6, 3)  # when it began, in its held set
            self.records[i].append(rec)

    def conclude(self, i: int, launch: Launch) -> None:
        """The stopped instance's launch gets its bursts; a dropped one fails with why."""
        launch.records = self.records[i]
        launch.probe_errors = [*launch.probe_errors, *self.errors[i].values()]
        why = self.dropped.get(i)
        if why and launch.status == "ok":
            launch.status, launch.reason = "failed", why


FAMILY = Bursts()
