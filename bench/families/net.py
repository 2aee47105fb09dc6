"""The network path (issue 15): a `net` server held in the environment, the `net` client
on the host, outside every environment, so every environment is measured by the same
client over the path a user would take to reach it (Instance.address: loopback, a veth,
a published port, a pod's IP, a guest's virtio-net on a tap). The runner calls
`run_round` once per round of a `net` cell.

One round:

1. `env.net_path()`: a kind without a path (network=none) is a failed round with its
   reason, before anything is started;
2. a free port on the host (a server on the host's network must find it free; the
   others do not care), the server started as a held instance (`net --server --port P`)
   and its `ready` awaited (a guest's tap is made before it boots: its NIC must exist
   then); `inst.address(P)` makes whatever else the path needs (the namespaces kind's
   veth) and says where to connect; the harness then waits until that address accepts a
   connection (common.wait_for_path, up to PATH_WAIT_S: a TCG guest's NIC has answered ARP
   seconds after its server listened, and the first client read "No route to host"),
   the server's one unmeasured connection;
3. per op and per rep, one run of the client: `net --client HOST:PORT --op OP --reps 1`
   plus the catalog's other arguments. The client is a plain child process of the
   harness in its own session (process.stream: killed on timeout and Ctrl-C), not in a
   cgroup of its own: its CPU figures come from its own getrusage over the measurement
   window, and a cgroup would add nothing but a cost to its start. One client run per rep
   gives each record its own window of the server's cgroup;
4. the server stopped (SIGTERM, it exits 0); everything the instance made goes with it.

Figures per record (one per op and rep), the probe's own:
  tcp_rr          p50_us, p99_us, trans_per_s, client_cpu_us_per_trans, server_cpu_us_per_trans
  tcp_crr         conn_per_s, client_cpu_us_per_trans, server_cpu_us_per_trans (per connection)
  tcp_stream_*    mb_per_s, client_cpu_ms_per_mb, server_cpu_ms_per_mb
(server_cpu_*: the server process's getrusage over the window, asked by the client) plus,
where the instance's cgroup is found live (host, namespaces, docker, podman, oci, qemu's
own cgroup around QEMU; not a libvirt domain's scope), the
second source `server_cgroup_cpu_us_per_trans` / `server_cgroup_cpu_ms_per_mb`: the
instance cgroup's CPU over the client's whole run, scaled to the measurement window by
wall time (the warm-up does the same work at the same rate). It includes what the
server process's own figure cannot see: a gVisor sandbox's netstack and gofer, softirq
work charged to the instance.

The Launch: records as above; launch.probe_errors = ["<op>: reason"] for ops that
failed (the rest of that op's reps are skipped); launch.net_path the path taken (the
kind's own words, e.g. "veth ibv1a2b3c4dh 10.201.7.1/30 <-> ...", "virtio-net on tap
ibt0a1b2c3d ... (emulated: TCG)", "pod network (CNI ptp, routed, no NAT): pod IP ...";
loopback otherwise);
phases, cgroup and host-side figures of the server instance; status "failed" only when
no op was measured.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from bench import interrupt
from bench.envs.base import Environment, Instance, Invocation, Launch, StartError
from bench.envs.process import stream
from bench.families.base import Family, Job, Round, Settings
from bench.families.common import PATH_WAIT_S, free_port, wait_for_path
from bench.probeio import parse_lines

PROBE = "net"
OPS = ("tcp_rr", "tcp_crr", "tcp_stream_c2s", "tcp_stream_s2c")
STREAMS = ("tcp_stream_c2s", "tcp_stream_s2c")
DEFAULT_MIN_MS = 1000  # the probe's own default window
CLIENT_TIMEOUT_S = 10  # the probe's default --timeout-s
CLIENT_SLACK_S = 5.0  # a client run's start, warm-up and usage requests, beyond its window


# ---------------------------------------------------------------- pure


def client_plan(args: Sequence[str]) -> tuple[list[str], int, list[str]]:
    """The catalog's client arguments -> (ops in order, reps, the other arguments, passed
    to every client run as they are). ValueError on an unknown op or a bad --reps."""
    ops: list[str] = []
    reps = 1
    rest: list[str] = []
    it = iter(args)
    for a in it:
        if a in ("--op", "--reps"):
            value = next(it, None)
            if value is None:
                raise ValueError(f"{a} needs a value")
            if a == "--op":
                ops += [o for o in value.split(",") if o]
            else:
                reps = int(value)
                if reps < 1:
                    raise ValueError(f"--reps must be at least 1: {value}")
        else:
            rest.append(a)
    unknown = [o for o in ops if o not in OPS]
    if unknown:
        raise ValueError(f"unknown net op {unknown[0]!r} (ops: {', '.join(OPS)})")
    return ops or list(OPS), reps, rest


def _option(args: Sequence[str], name: str, default: float) -> float:
    args = list(args)
    if name in args and args.index(name) + 1 < len(args):
        return float(args[args.index(name) + 1])
    return default


def client_timeout(rest: Sequence[str]) -> float:
    """How long one client run (one op, one rep) may take before it is killed."""
    window_s = _option(rest, "--min-ms", DEFAULT_MIN_MS) / 1000
    reply_s = _option(rest, "--timeout-s", CLIENT_TIMEOUT_S)
    return window_s + 2 * reply_s + CLIENT_SLACK_S


def cgroup_figure(record: dict, cgroup_ms: float, run_s: float) -> tuple[str, float, str] | None:
    """The server cgroup's CPU over one client run (ms, over `run_s` s of wall time) ->
    (metric, value, unit) per transaction (us) or per MB (ms) of the record's window;
    None when it cannot be had (no window, no work)."""
    window_s = record.get("elapsed_ns", 0) / 1e9
    work = record.get("iterations", 0)
    if window_s <= 0 or work <= 0 or run_s <= 0:
        return None
    in_window_ms = cgroup_ms * min(1.0, window_s / run_s)
    if record["op"] in STREAMS:
        return "server_cgroup_cpu_ms_per_mb", in_window_ms / (work / 1e6), "ms"
    return "server_cgroup_cpu_us_per_trans", in_window_ms * 1000 / work, "us"


# ---------------------------------------------------------------- the round


def _cpu_ms(reader) -> float | None:
    if reader is None:
        return None
    try:
        return reader.read().get("cpu_total_ms")
    except OSError:
        return None


def _measure(
    inst: Instance,
    client: str,
    target: str,
    ops: list[str],
    reps: int,
    rest: list[str],
    log: Callable[[str], None],
) -> tuple[list[dict], list[str]]:
    """Every op and rep against the ready server: (records, "<op>: reason" errors)."""
    reader = inst.live_cgroup()
    timeout = client_timeout(rest)
    records: list[dict] = []
    errors: list[str] = []
    for op in ops:
        log(f"net {op} -> {target}")
        for _ in range(reps):
            interrupt.check()
            argv = [client, "--client", target, "--op", op, "--reps", "1", *rest]
            cpu0, t0 = _cpu_ms(reader), time.monotonic()
            res = stream(argv, timeout)
            cpu1, t1 = _cpu_ms(reader), time.monotonic()
            out = parse_lines(res.lines)
            if res.timed_out:
                errors.append(f"{op}: the client did not finish within {timeout:g} s: killed")
                break
            if out.errors or not out.records:
                why = (
                    out.errors[0].split(": ", 1)[-1]
                    if out.errors
                    else (
                        f"the client exited with status {res.exit_code}: "
                        + (res.stderr.strip().splitlines() or ["no output"])[-1]
                    )
                )
                errors.append(f"{op}: {why}")
                break
            for rec in out.records:
                if cpu0 is not None and cpu1 is not None:
                    fig = cgroup_figure(rec, cpu1 - cpu0, t1 - t0)
                    if fig:
                        name, value, unit = fig
                        rec["metrics"][name] = round(value, 3)
                        rec["units"][name] = unit
                rec.setdefault("note", "")
                records.append(rec)
    return records, errors


def run_round(
    env: Environment,
    bundle,
    args: Sequence[str],
    timeout: float,
    log: Callable[[str], None] = lambda s: None,
) -> Launch:
    """One round of the network path of `env` (prepared with `bundle`): the server held in
    it, the client (`bundle.probes["net"]`) on the host with the catalog's `args`.
    Records one per op and rep; failures as probe_errors "<op>: reason"; nothing this
    round started outlives it (Ctrl-C included)."""
    try:
        ops, reps, rest = client_plan(args)
    except ValueError as e:
        return Launch(status="failed", reason=f"net: bad arguments: {e}")
    why_not = env.net_path()
    if why_not:
        return Launch(status="failed", reason=f"no network path to {env.kind}: {why_not}")
    client = str(bundle.probes[PROBE])
    port = free_port()
    server = Invocation(PROBE, PROBE, ("--server", "--port", str(port)))
    try:
        inst = env.start(server, timeout)
    except StartError as e:
        return Launch(status="failed", reason=f"the server did not start: {e}")
    records: list[dict] = []
    errors: list[str] = []
    target = ""
    try:
        if not inst.wait_ready():
            launch = inst.stop()
            launch.status = "failed"
            launch.reason = f"the server was not ready: {launch.reason or 'no `ready`'}"
            return launch
        try:
            host, hport = inst.address(port)
        except StartError as e:
            launch = inst.stop()
            launch.status, launch.reason = "failed", f"no path to the server: {e}"
            return launch
        target = f"{host}:{hport}"
        if why := wait_for_path(host, hport):
            launch = inst.stop()
            launch.status = "failed"
            launch.reason = f"no path to the server at {target} for {PATH_WAIT_S:g} s: {why}"
            return launch
        records, errors = _measure(inst, client, target, ops, reps, rest, log)
        launch = inst.stop()
    except BaseException:
        with interrupt.shielded():
            inst.abort()
        raise
    server_lines = [r for r in launch.records if r.get("op") == "server"]
    if launch.status != "ok":
        errors.append(f"server: {launch.reason}")
    launch.records = records
    if server_lines:
        launch.extra["server"] = server_lines[0]["metrics"]
    launch.net_path = launch.net_path or f"loopback {target}"
    launch.extra["target"] = target
    if errors:
        launch.probe_errors = errors
    if not records:
        launch.status = "failed"
        launch.reason = "no net op was measured: " + (errors[0] if errors else "no ops")
    else:
        launch.status, launch.reason = "ok", ""
    return launch


class Net(Family):
    """The net server held in the environment, its client on the host; a round learns the
    network path it took (Round.net_path)."""

    name = "net"
    section = "net"
    holds = True

    def round(self, s: Settings, job: Job) -> Round:
        inv = job.workloads[0].invocation(quick=s.quick, emulated=job.env.emulated)
        launch = run_round(job.env, s.bundle, inv.args, s.timeout, s.log)
        return Round([launch], [" ".join(inv.args)], net_path=launch.net_path)


FAMILY = Net()
