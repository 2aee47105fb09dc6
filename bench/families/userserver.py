"""A user's server command (issue 16): redis-server held in the environment, its client
(redis-benchmark) on the host, both from the environment's rootfs: the network path a
user would take to reach the server, as the net workload's (bench/families/net.py).

One round, `run_server_round`:

1. `env.net_path()`: a kind without a path (network=none) is a failed round with its
   reason, before anything is started;
2. a free port on the host; "{port}" in the server's argv replaced by it; the server
   started as a held instance of the bundle's userrun probe (`userrun --server --port P
   --cd DIR -- SERVER...`: every kind gives such an invocation a network path, see
   bench/envs/containers.py served_port) and its `ready` awaited (userrun says it once a
   TCP connect to 127.0.0.1:P inside the instance succeeds; a server that exits first is
   a failed round with the last line of its log); `inst.address(P)` says where the host
   reaches it, and the round waits until that address accepts a connection
   (common.wait_for_path);
3. the client: "{host}" and "{port}" in `argv` replaced by that address, run to
   completion by userrun in `client_env`, a host environment on the same rootfs (chroot
   through an overlay, the host's network namespace): the very redis-benchmark of the
   tree, not the host's;
4. the server stopped (SIGTERM through userrun, which exits 0); everything the instance
   made goes with it, also on Ctrl-C.

The Launch is the server instance's (its phases, cgroup and host-side figures: what the
server cost in its environment) carrying the client's userrun records, status and reason,
so userrun.read_launch reads it as any command's; launch.userrun_args are the client's
userrun arguments (the argv the parser sees), launch.net_path the path taken,
extra["server_exit"] the server's exit status after the stop.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from bench import interrupt
from bench.envs.base import Environment, Invocation, Launch, StartError
from bench.families import userrun
from bench.families.base import Family, Job, Round, Settings
from bench.families.common import PATH_WAIT_S, free_port, wait_for_path
from bench.matrix import UserWorkload

HOST, PORT = "{host}", "{port}"


# ---------------------------------------------------------------- pure


def substitute(argv: Sequence[str], port: int, host: str = "") -> list[str]:
    """argv with every "{port}" (and, given a host, "{host}") replaced."""
    out = [a.replace(PORT, str(port)) for a in argv]
    return [a.replace(HOST, host) for a in out] if host else out


def server_args(uw: UserWorkload, port: int) -> tuple[str, ...]:
    """userrun's arguments that hold the server listening on `port`."""
    return (
        "--server",
        "--port",
        str(port),
        "--cd",
        uw.dir or "/",
        "--",
        *substitute(uw.server, port),
    )


def client_args(uw: UserWorkload, quick: bool, host: str, port: int) -> tuple[str, ...]:
    """userrun's arguments that run the client against host:port."""
    return ("--cd", uw.dir or "/", "--", *substitute(uw.command(quick), port, host))


def server_failure(launch: Launch) -> str:
    """Why a server was never ready: how it ended, as userrun says on its stderr when the
    server exited before it listened (the kind keeps that stderr's tail), else the
    instance's own reason (a timeout, a start that failed)."""
    lines = [ln.strip() for ln in launch.stderr_tail.splitlines()]
    said = [ln for ln in lines if ln.startswith("userrun: ") and "before it listened" in ln]
    if said:
        return "the server never listened: " + said[-1].removeprefix("userrun: ")[:400]
    return f"the server was not ready: {launch.reason or 'no `ready`'}"


# ---------------------------------------------------------------- the round


def run_server_round(
    env: Environment,
    client_env: Environment,
    uw: UserWorkload,
    quick: bool,
    timeout: float,
    log: Callable[[str], None] = lambda s: None,
    reach: Callable[[str, int], str] = wait_for_path,
) -> Launch:
    """One round of `uw`'s server held in `env` and its client run in `client_env` (both
    prepared); `reach(host, port)` waits for the server's address ("" once it accepts,
    else why not). Nothing this round started outlives it (Ctrl-C included)."""
    why_not = env.net_path()
    if why_not:
        return Launch(status="failed", reason=f"no network path to {env.kind}: {why_not}")
    port = free_port()
    try:
        inst = env.start(Invocation(uw.name, userrun.PROBE, server_args(uw, port)), timeout)
    except StartError as e:
        return Launch(status="failed", reason=f"the server did not start: {e}")
    try:
        if not inst.wait_ready():
            launch = inst.stop()
            return Launch(status="failed", reason=server_failure(launch))
        try:
            host, hport = inst.address(port)
        except StartError as e:
            launch = inst.stop()
            return Launch(status="failed", reason=f"no path to the server: {e}")
        if why := reach(host, hport):  # a guest's NIC may answer ARP late
            inst.stop()
            return Launch(
                status="failed",
                reason=f"no path to the server at {host}:{hport} for {PATH_WAIT_S:g} s: {why}",
            )
        args = client_args(uw, quick, host, hport)
        log(f"{uw.name}: {' '.join(args[args.index('--') + 1 :])}")
        client = client_env.launch(Invocation(uw.name, userrun.PROBE, args), timeout)
        launch = inst.stop()
    except BaseException:
        with interrupt.shielded():
            inst.abort()
        raise
    served = userrun.reassemble(launch.records)
    launch.extra["server_exit"] = served.status
    launch.net_path = launch.net_path or f"loopback {host}:{hport}"
    launch.userrun_args = list(args)
    launch.records = client.records
    launch.status, launch.reason = client.status, client.reason
    launch.exit_code, launch.stderr_tail = client.exit_code, client.stderr_tail
    if client.status != "ok":
        launch.reason = f"the client: {client.reason}"
    return launch


class UserServer(Family):
    """A user's server held in the environment, its client on a host from the same
    rootfs (Settings.client_host); the client's output read as a user command's."""

    name = "userserver"
    section = "user"
    holds = True

    def round(self, s: Settings, job: Job) -> Round:
        w = job.workloads[0]
        client, why = s.client_host(str(job.spec.options["rootfs"]))
        if client is None:
            launch = Launch(status="failed", reason=f"no client host: {why}")
        else:
            launch = run_server_round(job.env, client, s.user[w.name], s.quick, s.timeout, s.log)
        inv = w.invocation(quick=s.quick, emulated=job.env.emulated)
        # the client's, {host} and {port} unfilled: the same in every environment, so
        # ratios pair them (the filled ones: raw/)
        return Round([launch], [" ".join(inv.args)], net_path=launch.net_path)

    def read(
        self, s: Settings, launch: Launch, base: dict[str, Any], described: dict[str, Any]
    ) -> Launch:
        return userrun.read_recorded(s, launch, base, described)


FAMILY = UserServer()
