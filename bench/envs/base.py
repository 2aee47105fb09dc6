"""The environment interface: the small surface every kind of isolation implements.

An environment runs one probe invocation at a time and reports, from the host side,
when it was submitted, when the probe said `ready`, when it exited and when everything
it made was gone, plus the probe's JSON lines and the cost paid outside the instance.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

WORKDIR = "{workdir}"  # placeholder in probe arguments: the environment's io directory


class OptionError(ValueError):
    """An environment option that the kind does not have, or a value it cannot take."""


@dataclass(frozen=True)
class Availability:
    ok: bool
    reason: str = ""  # a sentence a user can act on (or a caveat when ok)
    versions: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Option:
    """One knob of an environment kind: its default, help text and allowed values."""

    default: Any
    help: str
    choices: tuple[str, ...] = ()
    type: type = str

    def parse(self, name: str, text: str) -> Any:
        if self.choices and text not in self.choices:
            raise OptionError(f"option {name}={text}: expected one of {', '.join(self.choices)}")
        if self.type is str:
            return text
        try:
            value = self.type(text)
        except ValueError:
            raise OptionError(f"option {name}={text}: expected a {self.type.__name__}") from None
        if isinstance(value, (int, float)) and value <= 0:
            raise OptionError(f"option {name}={text}: must be positive")
        return value


@dataclass(frozen=True)
class Invocation:
    """One probe run: the workload it belongs to, the probe binary and its arguments."""

    workload: str
    probe: str
    args: tuple[str, ...] = ()

    @property
    def needs_workdir(self) -> bool:
        return any(WORKDIR in a for a in self.args)

    def argv(self, probe_path: str, workdir: str | None = None) -> list[str]:
        args = [a.replace(WORKDIR, workdir) if workdir else a for a in self.args]
        return [probe_path, *args]


@dataclass
class Launch:
    """What one launch measured, all from the host side.

    phases: nanoseconds since submit, host CLOCK_MONOTONIC: "ready" (the probe's `ready`
    line seen), "exit" (the instance ended), "cleaned" (everything it made removed);
    kinds may add their own (a guest's "boot", a container's "created").
    """

    status: str = "ok"  # "ok" | "failed" | "timeout"
    reason: str = ""
    phases: dict[str, int] = field(default_factory=dict)
    records: list[dict[str, Any]] = field(default_factory=list)
    exit_code: int | None = None
    cgroup: dict[str, float] = field(default_factory=dict)
    host_side: dict[str, float] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    stderr_tail: str = ""


@dataclass(frozen=True)
class Leftover:
    """Something an earlier (crashed) run left behind, found by label or name prefix."""

    what: str  # e.g. "docker container 3f2a9c (isobench-1a2b-docker-7)"
    remove: Callable[[], None]


@dataclass(frozen=True)
class Context:
    """Run-wide settings handed to every environment."""

    run_id: str
    scratch: Path  # a directory this run owns; removed when the run ends
    cache: Path  # artifacts kept between runs (images, initramfs), keyed by content
    quick: bool = False


COMMON_OPTIONS: dict[str, Option] = {
    "label": Option(None, "name shown in results and reports (default: the spec itself)"),
}


class Environment:
    """Base class: lifecycle prepare → launch* → cleanup. Subclasses set kind/options."""

    kind: ClassVar[str]
    summary: ClassVar[str]
    options: ClassVar[dict[str, Option]] = {}
    emulated: bool = False  # results are not a hardware-virtualisation overhead

    def __init__(self, config: dict[str, Any], ctx: Context):
        self.config = config
        self.ctx = ctx

    @classmethod
    def probe(cls) -> Availability:
        """Can this kind run here? Cheap, never raises."""
        raise NotImplementedError

    @classmethod
    def details(cls) -> list[tuple[str, Availability]]:
        """Per-variant availability for `doctor` (e.g. each runtime a daemon lists)."""
        return []

    @classmethod
    def leftovers(cls) -> list[Leftover]:
        """What crashed runs left behind (by isobench label / name prefix), for `clean`."""
        return []

    def prepare(self, bundle) -> None:
        """Make this environment's artifact from the bundle; idempotent."""

    def launch(self, inv: Invocation, timeout: float) -> Launch:
        raise NotImplementedError

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
        """Remove everything this environment made; idempotent, safe after a failure."""

    def describe(self) -> dict[str, Any]:
        """Versions and configuration, for the manifest."""
        return {"kind": self.kind, "config": dict(self.config)}
