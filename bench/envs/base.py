"""The environment interface: the small surface every kind of isolation implements.

An environment starts instances of a probe invocation and reports, from the host side,
when each was submitted, when the probe said `ready`, when it exited and when everything
it made was gone, plus the probe's JSON lines and the cost paid outside the instance.

An instance can be held: `start()` hands back an `Instance` that stays up (the `hold`
probe idles after `ready`) while the harness does other things, until `stop()`. A
run-to-completion launch is one use of it: `launch()` is `start()` then `wait()`.

Each environment of a run gets its own `Context`: its own scratch directory and its own
name prefix, so two environments never share a directory, a cgroup or a name.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from bench import interrupt
from bench.metrics.cgroup import CgroupReader, Layout
from bench.probeio import ProbeOutput, parse_lines
from bench.targets import LOCAL  # the target of every kind that runs on this machine

WORKDIR = "{workdir}"  # placeholder in probe arguments: the environment's io directory
STOP_GRACE_S = 10.0  # how long a stopped instance may take to exit before it is killed
STDERR_KEEP = 4000  # characters of stderr kept with a launch
STRAY_KEEP = 5  # stray stdout lines kept with a launch


class OptionError(ValueError):
    """An environment option that the kind does not have, or a value it cannot take."""


class ChannelError(RuntimeError):
    """A held instance's control channel could not carry a command or its answer (the
    kind has none, the probe died, no answer in time); the message is one line."""


class StartError(RuntimeError):
    """An instance could not be started (its cgroup, bundle dir or container could not be
    made); whatever was made is removed. A launch records it as failed, with this reason."""


@dataclass(frozen=True)
class Availability:
    ok: bool
    reason: str = ""  # a sentence a user can act on (or a caveat when ok)
    versions: dict[str, str] = field(default_factory=dict)


# ---------------------------------------------------------------- options


class MemorySize(str):
    """A memory limit as engines take it: 512m, 1g, 1073741824."""

    PATTERN = re.compile(r"^[1-9][0-9]*(\.[0-9]+)?[bkmg]?$", re.IGNORECASE)

    def __new__(cls, text: str):
        if not cls.PATTERN.match(text):
            raise ValueError(text)
        return super().__new__(cls, text.lower())

    def bytes(self) -> int:
        units = {"b": 1, "k": 2**10, "m": 2**20, "g": 2**30}
        unit = self[-1] if self[-1] in units else "b"
        number = self[:-1] if self[-1] in units else self
        return int(float(number) * units[unit])


class CpuSet(str):
    """A cpuset list: 0, 0-1, 0,2-3."""

    PATTERN = re.compile(r"^[0-9]+(-[0-9]+)?(,[0-9]+(-[0-9]+)?)*$")

    def __new__(cls, text: str):
        if not cls.PATTERN.match(text):
            raise ValueError(text)
        return super().__new__(cls, text)


MemorySize.__name__ = "memory size like 512m"
CpuSet.__name__ = "cpu list like 0-1"


@dataclass(frozen=True)
class Option:
    """One knob of an environment kind: its default, help text and allowed values."""

    default: Any
    help: str
    choices: tuple[str, ...] = ()
    type: type = str

    def parse(self, name: str, value: Any) -> Any:
        """A spec's text (or a value parsed before) -> the typed value; OptionError with
        a sentence for the user when it is not one."""
        text = value if isinstance(value, str) else str(value)
        if self.choices and text not in self.choices:
            raise OptionError(f"option {name}={text}: expected one of {', '.join(self.choices)}")
        if self.type is str:
            return text
        try:
            parsed = self.type(text)
        except OptionError as e:  # the type's own sentence (e.g. no such rootfs)
            raise OptionError(f"option {name}={text}: {e}") from None
        except ValueError:
            raise OptionError(f"option {name}={text}: expected a {self.type.__name__}") from None
        if isinstance(parsed, (int, float)) and parsed <= 0:
            raise OptionError(f"option {name}={text}: must be positive")
        return parsed


COMMON_OPTIONS: dict[str, Option] = {
    "label": Option(None, "name shown in results and reports (default: the spec itself)"),
    "freeze": Option(
        "auto",
        "a held instance frozen outside its own bursts (bench/families/bursts.py): yes, no,"
        " or auto (when its kind declares an idle cost)",
        ("auto", "yes", "no"),
    ),
}


def freezes(cls, opts: dict[str, Any]) -> bool:
    """A held instance of kind `cls` with options `opts` is frozen outside its own bursts
    (bench/families/bursts.py): option freeze=yes, or freeze=auto (the default) on a
    kind that declares an idle cost."""
    return {"yes": True, "no": False}.get(opts.get("freeze", "auto"), cls.idle_cost)


def parse_options(kind: str, options: dict[str, Option], config: dict[str, Any]) -> dict[str, Any]:
    """A spec's options (text from `--env` or TOML, or values parsed before) -> every
    option of the kind, typed, defaults filled in. The one place options are checked:
    an unknown name or a bad value raises OptionError with a sentence for the user."""
    known = {**{n: o for n, o in COMMON_OPTIONS.items() if n != "label"}, **options}
    out = {name: opt.default for name, opt in known.items()}
    for name, value in config.items():
        if name == "label":
            continue
        if name not in known:
            names = ", ".join(sorted(options))
            raise OptionError(f"{kind} has no option {name!r} (known: {names})")
        if value is not None:
            out[name] = known[name].parse(name, value)
    return out


# ---------------------------------------------------------------- what a launch is


@dataclass(frozen=True)
class Invocation:
    """One probe run: the workload it belongs to, the probe binary and its arguments."""

    workload: str
    probe: str
    args: tuple[str, ...] = ()

    @property
    def needs_workdir(self) -> bool:
        return any(WORKDIR in a for a in self.args)

    @property
    def serves(self) -> bool:
        """The probe runs in serve mode (--serve): after `ready` it answers one command
        line per burst, over the instance's control channel (Instance.ask)."""
        return SERVE in self.args

    def argv(self, probe_path: str, workdir: str | None = None) -> list[str]:
        args = [a.replace(WORKDIR, workdir) if workdir else a for a in self.args]
        return [probe_path, *args]


HOLD = Invocation("hold", "hold")  # an idle instance: `ready`, then wait to be stopped
SERVE = "--serve"  # the probes' serve mode (workloads/probe.h)


def served(workload: str, probe: str) -> Invocation:
    """A held instance of `probe` in serve mode, driven burst by burst with ask()."""
    return Invocation(workload, probe, (SERVE,))


@dataclass
class Launch:
    """What one instance measured, all from the host side.

    phases: nanoseconds since submit, host CLOCK_MONOTONIC: "ready" (the probe's `ready`
    line seen), "stop" (a held instance was told to stop), "exit" (the instance ended),
    "cleaned" (everything it made removed); kinds may add their own (a guest's "boot", a
    container's "created").
    probe_errors: "<op>: reason" for each op the probe (or a held-instance round) could
    not measure; the launch's other figures stand. stray_lines: the first lines of stdout
    that were neither `ready` nor a result (at most 5). op_failures: (op, reason) for a
    user workload's benchmark that failed. net_path: the network path a round's client
    took ("" where none). userrun_args: a user server's client argv as the parser sees it.
    extra: free-form labels for tests and logs (a container id, a domain name); nothing
    downstream reads it.
    """

    status: str = "ok"  # "ok" | "failed" | "timeout"
    reason: str = ""
    phases: dict[str, int] = field(default_factory=dict)
    records: list[dict[str, Any]] = field(default_factory=list)
    exit_code: int | None = None
    cgroup: dict[str, float] = field(default_factory=dict)
    host_side: dict[str, float] = field(default_factory=dict)
    probe_errors: list[str] = field(default_factory=list)
    stray_lines: list[str] = field(default_factory=list)
    op_failures: list[tuple[str, str]] = field(default_factory=list)
    net_path: str = ""
    userrun_args: list[str] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    stderr_tail: str = ""


def read_probe_output(launch: Launch, lines: list[str]) -> ProbeOutput:
    """The probe's stdout lines after `ready` into `launch`, the same for every kind: its
    records, the ops it could not measure (probe_errors) and the first STRAY_KEEP lines
    that are not the contract (stray_lines). Returns the parsed output."""
    out = parse_lines(lines)
    launch.records = out.records
    if out.errors:
        launch.probe_errors = out.errors
    if out.garbage:
        launch.stray_lines = out.garbage[:STRAY_KEEP]
    return out


def conclude(
    launch: Launch,
    *,
    ready: bool,
    exit_code: int | None,
    timed_out: bool,
    stopped: bool,
    timeout: float,
    stderr: str = "",
    killed: str = "instance killed",
) -> Launch:
    """The launch template's verdict, the same for every kind: status and reason from
    whether `ready` was seen, how the instance ended and its exit code; the stderr tail
    kept. A stopped instance (held, then told to stop) is ok once it was ready."""
    launch.exit_code = exit_code
    launch.stderr_tail = stderr[-STDERR_KEEP:]
    last_err = (stderr.strip().splitlines() or [""])[-1][:300]
    if timed_out:
        launch.status = "timeout"
        waited = "no `ready`" if not ready else ("no exit after stop" if stopped else "no exit")
        launch.reason = f"{waited} within {timeout:g} s: {killed}"
    elif not ready:
        launch.status = "failed"
        launch.reason = f"exited with status {exit_code} before `ready`: {last_err}".rstrip(": ")
    elif exit_code not in (0, None) and not stopped:
        launch.status = "failed"
        launch.reason = f"exited with status {exit_code}: {last_err}".rstrip(": ")
    return launch


class Instance:
    """A started instance: submit → ready → (held) → stop → exit → cleaned.

    Made by `Environment.start()`, ended exactly once by `wait()` (the probe exits on its
    own: a run-to-completion launch) or `stop()` (told to exit now: a held instance).
    Both remove everything the instance made, also when interrupted, and give its
    Launch. Kinds implement `_ready`, `_signal_stop`, `_wait_exit`, `_kill` and `_end`.
    """

    def __init__(self, name: str, timeout: float, t_submit: int | None = None):
        self.name = name
        self.timeout = timeout
        self.t_submit = time.monotonic_ns() if t_submit is None else t_submit
        self.deadline = time.monotonic() + timeout
        self.launch: Launch | None = None  # set once ended
        self.watchers: list[Any] = []  # the harness's samplers of it (pause(), resume())
        self.frozen: set[int] = set()  # the pids freeze() stopped, until thaw()

    def left(self) -> float:
        return max(0.0, self.deadline - time.monotonic())

    def address(self, port: int) -> tuple[str, int]:
        """Where a client on the host reaches `port` of this (ready) instance: loopback,
        right for the host and for kinds whose instances share the host's network. A kind
        with its own network (a veth, a published port) overrides it; it may make what the
        path needs on the first call and removes it with the instance."""
        return ("127.0.0.1", port)

    def carriers(self) -> dict[int, str]:
        """The host processes that carry this started instance now, pid -> role (conmon,
        the runtime's foreground `run`, a sandbox, a shim): what density adds to the
        instance's cgroup memory when they sit outside that cgroup. Default: none named."""
        return {}

    def live_cgroup(self, layout: Layout | None = None) -> CgroupReader | None:
        """The live cgroup of this started instance, found under its name: host and
        namespaces name it so, docker/podman/oci name the per-launch parent so (cgroupfs or
        systemd driver). None where it is elsewhere (a guest's domain scope)."""
        layout = layout or Layout.detect()
        stem = self.name.split("-")
        slice_path = "/".join("-".join(stem[: i + 1]) + ".slice" for i in range(len(stem)))
        for rel in (self.name, slice_path):
            reader = layout.reader(rel)
            if reader is not None and reader.read().get("mem_current_mib") is not None:
                return reader
        return None

    def ask(self, command: str, timeout: float) -> str:
        """Serve mode (an instance of an invocation that `serves`, once ready): send one
        command line (`null ms=5`) to the probe over the kind's control channel and
        return the probe's answer, its next stdout line (without the newline). Answers
        taken so are not the launch's records. ChannelError when the channel cannot
        carry it, the probe ended, or no line came within `timeout` s."""
        raise ChannelError(f"{type(self).__name__} has no control channel")

    # -- idle neighbours (issue 22)
    def quiet(self, on: bool = True) -> None:
        """Pause (on) or resume the harness's samplers of this instance (a held container's:
        1-14% of a CPU, far more than the idle instance); their CPU times are cumulative."""
        for w in self.watchers:
            w.pause() if on else w.resume()

    def freeze(self) -> None:
        """SIGSTOP every process of this held instance's cgroup tree (the probe, a runsc
        sandbox and gofer) and quiet it: no CPU of its own. Carriers outside it (a shim,
        conmon) carry the channel and run on. stop() and abort() thaw first."""
        self.quiet(True)
        for pid in self.frozen_pids():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGSTOP)
                self.frozen.add(pid)

    def thaw(self) -> None:
        """Continue what freeze() stopped and resume the observers (idempotent)."""
        frozen, self.frozen = self.frozen, set()
        for pid in frozen:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGCONT)
        self.quiet(False)

    def frozen_pids(self) -> set[int]:
        """The processes freeze() stops: every pid in the live cgroup and below it (docker,
        podman and oci name the per-launch parent); a guest's kind would override it."""
        reader, out = self.live_cgroup(), set()
        for top in reader._dirs() if reader is not None else []:
            for d, _, _ in os.walk(top):
                with contextlib.suppress(OSError):
                    out.update(int(x) for x in Path(d, "cgroup.procs").read_text().split())
        return out

    def wait_ready(self, timeout: float | None = None) -> bool:
        """True once the probe said `ready` (within `timeout`, default what is left)."""
        return self._ready(self.left() if timeout is None else timeout)

    def wait(self) -> Launch:
        """Let the instance run to its end (within the start's timeout), then clean up."""
        return self._finish(stopped=False)

    def stop(self, grace: float = STOP_GRACE_S) -> Launch:
        """Tell the instance to stop now (the hold probe exits 0), kill it if it has not
        exited within `grace` s, then clean up."""
        if self.launch is not None:
            return self.launch
        self.deadline = time.monotonic() + grace
        t_stop = time.monotonic_ns() - self.t_submit
        try:
            self.thaw()  # a stopped process cannot act on its stop signal
            self._signal_stop()
        except BaseException:
            self.abort()
            raise
        launch = self._finish(stopped=True)
        launch.phases["stop"] = t_stop
        return launch

    def _finish(self, stopped: bool) -> Launch:
        if self.launch is not None:
            return self.launch
        try:
            timed_out = not self._wait_exit(self.left())
            if timed_out:
                self._kill()
        except BaseException:
            self.abort()
            raise
        self.launch = self._end(stopped=stopped, timed_out=timed_out)
        self.launch.phases["cleaned"] = time.monotonic_ns() - self.t_submit
        return self.launch

    def abort(self) -> None:
        """Kill the instance and remove everything it made, also under Ctrl-C (a failure
        mid-way, an interrupted run, an environment's cleanup)."""
        if self.launch is not None:
            return
        with interrupt.shielded():
            self.thaw()  # a frozen container cannot be killed on some runtimes
            self._kill()
            self._end(stopped=True, timed_out=True)
        self.launch = Launch(status="failed", reason="interrupted")

    # -- what a kind implements
    def _ready(self, timeout: float) -> bool:
        raise NotImplementedError

    def _signal_stop(self) -> None:
        raise NotImplementedError

    def _wait_exit(self, timeout: float) -> bool:
        """True when the instance exited within `timeout`."""
        raise NotImplementedError

    def _kill(self) -> None:
        """Kill the instance now (idempotent, never raises)."""
        raise NotImplementedError

    def _end(self, *, stopped: bool, timed_out: bool) -> Launch:
        """Collect the ended instance's Launch (conclude()), then remove what it made
        (shielded from Ctrl-C). Called exactly once."""
        raise NotImplementedError


@dataclass(frozen=True)
class Leftover:
    """Something an earlier (crashed) run left behind, found by label or name prefix."""

    what: str  # e.g. "docker container 3f2a9c (isobench-1a2b-docker-7)"
    remove: Callable[[], None]


@dataclass(frozen=True)
class Context:
    """What one environment of a run owns. The runner makes one per environment
    (`for_env`): no two environments share a scratch directory or a name prefix."""

    run_id: str
    scratch: Path  # a directory this environment owns; removed when the run ends
    cache: Path  # artifacts kept between runs (images, initramfs), keyed by content
    quick: bool = False
    prefix: str = ""  # every name this environment makes starts with it

    def __post_init__(self):
        if not self.prefix:  # outside a run (tests, the harness): the maker's pid in names
            object.__setattr__(self, "prefix", f"isobench-{self.run_id}-p{os.getpid()}")

    def for_env(self, index: int) -> Context:
        """The context of a run's index-th environment: <scratch>/e<index>, names
        isobench-<run>-e<index>-N (cgroups, containers, guests: unique across kinds; the
        run's scratch marker tells `clean` whether its maker is alive)."""
        return Context(
            self.run_id,
            self.scratch / f"e{index}",
            self.cache,
            self.quick,
            f"isobench-{self.run_id}-e{index}",
        )


class Environment:
    """Base class: prepare → (start → wait | stop)* → cleanup. A kind sets kind, summary
    and options, and implements probe, _start (and _cleanup when it makes more than its
    instances remove themselves). The base keeps the live instances: cleanup() kills and
    removes every one still held (Ctrl-C, a failed run) before the kind's _cleanup()."""

    kind: ClassVar[str]
    summary: ClassVar[str]
    options: ClassVar[dict[str, Option]] = {}
    emulated: bool = False  # results are not a hardware-virtualisation overhead
    # its instances of a serving invocation (Invocation.serves) have a control channel:
    # Instance.ask() carries the probe's commands and answers (the burst design)
    channel: ClassVar[bool] = False
    # its idle held instances take CPU (an idle guest, a polling sandbox): frozen while
    # others measure (bursts.py); none here does (validate reports each kind's idle CPU)
    idle_cost: ClassVar[bool] = False

    @property
    def freezes(self) -> bool:
        return freezes(type(self), self.opts)

    def __init__(self, config: dict[str, Any], ctx: Context):
        self.config = config
        self.opts = self.parse(config)  # typed, defaults in
        self.ctx = ctx
        self._names = itertools.count(1)
        self._live: list[Instance] = []

    @classmethod
    def parse(cls, opts: dict[str, Any] | None) -> dict[str, Any]:
        """Every option of the kind, typed, from a spec's (or None: the defaults), for the
        classmethods that take `opts` (probe, leftovers, target...)."""
        return parse_options(cls.kind, cls.options, dict(opts or {}))

    def new_name(self) -> str:
        """A name for the next thing this environment makes (instance, cgroup, domain)."""
        return f"{self.ctx.prefix}-{next(self._names)}"

    # -- availability, leftovers, host facts: may depend on the options (a remote target)
    @classmethod
    def probe(cls, opts: dict[str, Any] | None = None) -> Availability:
        """Can this kind (so configured) run here? Cheap, never raises."""
        raise NotImplementedError

    @classmethod
    def refusal(cls, opts: dict[str, Any]) -> str | None:
        """Why this configuration can never run here, said before any preparation (a
        docker runtime the daemon does not list); None when nothing is known against it.
        Cheap; an unreachable engine is probe()'s to report, not a refusal."""
        return None

    @classmethod
    def details(cls) -> list[tuple[str, Availability]]:
        """Per-variant availability for `doctor` (e.g. each runtime a daemon lists)."""
        return []

    @classmethod
    def variants(cls) -> list[str]:
        """The specs `--all` runs for this kind: its default, plus attribution variants."""
        return [cls.kind]

    @classmethod
    def leftovers(cls, opts: dict[str, Any] | None = None) -> list[Leftover]:
        """What crashed runs left behind (by isobench label / name prefix), for `clean`."""
        return []

    @classmethod
    def target(cls, opts: dict[str, Any] | None = None) -> str:
        """Where instances run: LOCAL, or a name for the endpoint/host (the manifest
        records host facts per target)."""
        return LOCAL

    @classmethod
    def target_facts(cls, opts: dict[str, Any] | None = None) -> dict[str, Any]:
        """What the target machine is (CPU, kernel, memory...); LOCAL: this host's."""
        from bench import provenance

        return provenance.host_facts()

    def net_path(self) -> str | None:
        """None when a client on the host can reach a server in this environment's
        instances (Instance.address); else a sentence saying why not (network=none)."""
        return None

    # -- lifecycle
    def prepare(self, bundle) -> None:
        """Make this environment's artifact from the bundle; idempotent."""

    def start(self, inv: Invocation, timeout: float) -> Instance:
        """Start one instance of `inv`; `timeout` bounds its `ready` and, for wait(), its
        exit. Raises StartError when it cannot start; whatever was made is then removed."""
        instance = self._start(inv, timeout)
        self._live = [i for i in self._live if i.launch is None]
        self._live.append(instance)
        return instance

    def _start(self, inv: Invocation, timeout: float) -> Instance:
        raise NotImplementedError

    def launch(self, inv: Invocation, timeout: float) -> Launch:
        """Run `inv` to completion in a new instance (start, then wait)."""
        try:
            instance = self.start(inv, timeout)
        except StartError as e:
            return Launch(status="failed", reason=str(e))
        return instance.wait()

    # Kinds whose instance is expensive to start (a guest boot) run all the workloads of
    # a round in one instance: the runner then calls launch_round once per round.
    one_instance_per_round: ClassVar[bool] = False

    def launch_round(self, invs: list[Invocation], timeout: float) -> list[Launch]:
        """One Launch per invocation, in order; ``timeout`` applies to each invocation.

        The default launches each on its own. A kind that sets one_instance_per_round
        runs them all in one instance: the Launch of the ``startup`` invocation (or the
        first) carries that instance's phases, cgroup and host-side figures; the others
        carry only their probe records (and a failure status of their own)."""
        return [self.launch(inv, timeout) for inv in invs]

    def cleanup(self) -> None:
        """Remove everything this environment made: every instance still held, then what
        the kind keeps (_cleanup). Idempotent, safe after a failure, shielded from
        Ctrl-C; never touches what another environment made (its prefix and scratch)."""
        with interrupt.shielded():
            live, self._live = self._live, []
            for instance in live:
                if instance.launch is None:
                    instance.abort()
            self._cleanup()

    def _cleanup(self) -> None:
        """What the kind made besides its instances (a rootfs, volumes, a client)."""

    def disk_footprint(
        self, bundle, io: Invocation | None, timeout: float
    ) -> list[dict[str, Any]] | None:
        """What this prepared environment's artefacts take on disk and, with `io` (the
        run's io invocation), what one instance adds after one io launch, as figures made
        with bench/footprint.py's helpers. None: this kind does not measure it."""
        return None

    def describe(self) -> dict[str, Any]:
        """Versions and configuration, for the manifest."""
        return {
            "kind": self.kind,
            "config": dict(self.config),
            "options": {
                k: (v if v is None or isinstance(v, (int, float)) else str(v))
                for k, v in self.opts.items()
            },
            "target": self.target(self.opts),
        }
