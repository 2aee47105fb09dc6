"""The benchmark matrix: which environments, which workloads, how many rounds.

From a TOML file:

    seed = 7
    rounds = 10          # rounds at least (adaptive stopping may add up to max_rounds)
    max_rounds = 30
    warmup = 1           # warm-up launches per environment (not counted)
    emulated_rounds = 3  # rounds for software-emulated guests (0: as many as the others)
    emulated_warmup = 0  # their warm-up boots (default: warmup)
    emulated_share = 0.25  # the share of the budget they may take (0: no share of their own)
    budget = 900         # seconds: the whole run's wall clock
    busy_cpus = false    # keep CPUs out of idle while measuring (bench/busy.py)
    memory_reserve = 0.25  # density: never take the host below this share of its memory
    timeout = 120        # seconds per launch
    precision = 0.02     # target 95% CI half-width, relative to the median
    baseline = "host"
    workloads = ["syscall", "cpu"]

    [[env]]
    kind = "host"

    [[env]]
    kind = "docker"
    label = "gvisor"
    runtime = "runsc"

Your own workloads run from a rootfs (`isobench rootfs build`; bench/families/user.py):

    rootfs = "pytest-bench"  # every env that can take rootfs=NAME and sets none
    [[user_workload]]
    name = "suite"
    kind = "pytest-benchmark"  # or "command", with argv = [...] and parser = "sysbench"
    dir = "/opt/bench"

A command may hold a server in the environment, `argv` then being its client on the host
(bench/families/userserver.py): server = ["redis-server", "--port", "{port}"], argv =
["redis-benchmark", "-h", "{host}", "-p", "{port}", "--csv"].

or from `--env KIND:key=value,...` flags. Every problem is a MatrixError whose message
names the file and key and suggests the closest known name.
"""

from __future__ import annotations

import difflib
import re
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench import parsers
from bench.catalog import Workload
from bench.envs.base import COMMON_OPTIONS, OptionError, parse_options

# --quick: the settings of a first look (a file or flags may still override each one).
# Eight rounds: the verdicts' trimmed t (bench/stats.py) cuts one round from each end
# below ten, so eight leave six rounds and five degrees of freedom, what the paired t had
# at six; fewer lose +10% figures under clean noise (tests/test_stats.py), and six is
# already the fewest at which a median's order-statistic interval reaches 95%. Emulated
# guests get four (a boot costs ~10 s and their figures are no virtualisation overhead;
# nothing is trimmed at four; at three, t's two degrees of freedom leave even a ×10 short
# of significance in a 100-figure matrix) and no warm-up boot: measured here, a TCG guest's
# first boot of a run is no slower than the next ones (libvirt 7.15 s vs 7.12-7.20 s to
# `ready`; qemu 6.26 s vs 6.61-6.90 s), and each warm-up boot cost ~10 s of the budget,
# which the eighth round needs. The budget is the whole
# run's wall clock: `--all` on a 2-core host fits in it. A quick run of workloads outside the
# main job only (density, net) is not cut by this default before its minimum rounds: one
# density round of four environments takes about as long as the whole budget (Runner).


USER_KINDS = ("pytest-benchmark", "command")
USER_PROBE = "userrun"  # the bundle's probe that runs a user's command (workloads/userrun.c)
USER_GROUP = "user"  # the report's grouping label of every user workload (its own section)
PYTHON = "python3"  # the interpreter of a pytest-benchmark suite, found on the rootfs's PATH
PYTEST_ADDED = ("--benchmark-only", "--benchmark-json={out}")


@dataclass(frozen=True)
class UserWorkload:
    """One [[user_workload]] table, decoded (user_workload() checks it); run by the
    strategies in bench/families/user.py and userserver.py."""

    name: str
    kind: str  # USER_KINDS
    parser: str  # a name in parsers.PARSERS ("pytest-benchmark" for that kind)
    dir: str = ""  # pytest-benchmark: the suite's directory inside the rootfs (its cwd)
    args: tuple[str, ...] = ()  # pytest-benchmark: more pytest arguments
    quick_args: tuple[str, ...] | None = None  # ... for --quick runs (default: args)
    argv: tuple[str, ...] = ()  # command: what runs
    quick_argv: tuple[str, ...] | None = None  # ... for --quick runs (default: argv)
    # command: a server held in the environment ("{port}": the port it must listen on);
    # argv is then its client, run on the host ("{host}", "{port}": where to connect)
    server: tuple[str, ...] = ()

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> UserWorkload:
        """From Matrix.to_dict() (tuples came back as lists)."""
        tup = {k: tuple(v) for k, v in d.items() if isinstance(v, list)}
        return cls(**{**d, **tup})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def command(self, quick: bool) -> list[str]:
        """The argv userrun runs inside the instance ("{out}": its output file)."""
        if self.kind == "pytest-benchmark":
            args = self.quick_args if quick and self.quick_args is not None else self.args
            return [PYTHON, "-m", "pytest", *PYTEST_ADDED, *args, "."]
        argv = self.quick_argv if quick and self.quick_argv is not None else self.argv
        return list(argv)

    def probe_args(self, quick: bool) -> tuple[str, ...]:
        """userrun's arguments: the same in every environment ({workdir} is replaced by
        the environment, as in the catalog's probes)."""
        out = ["--cd", self.dir or "/"]
        if self.kind == "pytest-benchmark":
            out.append("--out")
        return (*out, "--", *self.command(quick))

    def workload(self) -> Workload:
        """The catalog entry the runner, the manifest and the report see: measured by the
        `user` strategy (run to completion) or, with a server, `userserver`."""
        what = (
            f"pytest-benchmark suite in {self.dir}"
            if self.kind == "pytest-benchmark"
            else f"command {' '.join(self.argv)[:120]} (parser {self.parser})"
        )
        if self.server:
            what = (
                f"server {' '.join(self.server)[:120]} held in the environment, its client "
                f"on the host from the same rootfs: {what}"
            )
        return Workload(
            name=self.name,
            probe=USER_PROBE,
            group=USER_GROUP,
            description=f"your own workload: {what}, run from the environment's rootfs",
            args=self.probe_args(quick=False),
            quick_args=self.probe_args(quick=True),
            emulated_args=None,
            metrics=dict(parsers.METRICS[self.parser]),
            strategy="userserver" if self.server else "user",
        )


def with_catalog(cat: dict[str, Workload], user: list[UserWorkload]) -> dict[str, Workload]:
    """The catalog plus the matrix's user workloads."""
    return {**cat, **{u.name: u.workload() for u in user}}


class QuickBudget(float):
    """--quick's default budget: a setting of the quick defaults, not a figure the user
    gave. Matrix.budget_from_quick keeps the difference (a given --budget always holds)."""


QUICK = {
    "rounds": 8,
    "max_rounds": 12,
    "warmup": 1,
    "emulated_rounds": 4,
    "emulated_warmup": 0,
    "emulated_share": 0.25,
    "timeout": 60.0,
    "budget": QuickBudget(285.0),
    "precision": 0.03,
}


class MatrixError(ValueError):
    """Bad matrix input; the message is one line for the user."""


def _suggest(word: str, known) -> str:
    close = difflib.get_close_matches(word, list(known), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


@dataclass(frozen=True)
class EnvSpec:
    kind: str
    options: dict[str, Any] = field(default_factory=dict)  # parsed, without label
    label: str = ""

    @property
    def spec(self) -> str:
        opts = ",".join(f"{k}={v}" for k, v in sorted(self.options.items()))
        return f"{self.kind}:{opts}" if opts else self.kind


def make_env(kind: str, raw: dict[str, str], where: str) -> EnvSpec:
    """A spec's options, checked and typed by the kind's declaration (parse_options, the
    one place options are parsed); only the options given are kept in the spec."""
    from bench.envs import REGISTRY

    if kind not in REGISTRY:
        raise MatrixError(f"{where}: unknown environment kind '{kind}'{_suggest(kind, REGISTRY)}")
    cls = REGISTRY[kind]
    known = {**COMMON_OPTIONS, **cls.options}
    for key in raw:
        if key not in known:
            raise MatrixError(
                f"{where}: {kind} has no option '{key}'{_suggest(key, known)}"
                f"; its options: {', '.join(sorted(known))}"
            )
    label = str(raw.get("label", "")).strip()
    if "label" in raw and not label:
        raise MatrixError(f"{where}: label must not be empty")
    given = {k: v for k, v in raw.items() if k != "label"}
    try:
        parsed = parse_options(kind, cls.options, given)
    except OptionError as e:
        raise MatrixError(f"{where}: {kind} {e}") from None
    env = EnvSpec(kind, {k: parsed[k] for k in given})
    return EnvSpec(kind, env.options, label or env.spec)


def parse_env_spec(text: str) -> EnvSpec:
    """`KIND` or `KIND:key=value,key=value` (an option label=... names it)."""
    kind, _, rest = text.partition(":")
    raw: dict[str, str] = {}
    for part in filter(None, rest.split(",")):
        key, eq, value = part.partition("=")
        if not eq or not key.strip():
            raise MatrixError(f"--env {text}: '{part}' is not key=value")
        raw[key.strip()] = value.strip()
    return make_env(kind.strip(), raw, f"--env {text}")


@dataclass
class Matrix:
    envs: list[EnvSpec]
    workloads: list[str]
    rounds: int = 10
    max_rounds: int = 30
    warmup: int = 1
    emulated_rounds: int = 0
    emulated_warmup: int | None = None  # None: as `warmup`
    # the share of the budget software-emulated guests may take (their boots, rounds and
    # held sets); 0: no share of their own. A guest round past it is not started.
    emulated_share: float = 0.0
    budget: float = 1800.0
    busy_cpus: bool = False
    memory_reserve: float = 0.25
    timeout: float = 120.0
    precision: float = 0.02
    seed: int = 1
    baseline: str = "host"
    quick: bool = False
    # True when `budget` is --quick's default (QUICK), not given in a file or as --budget:
    # a quick run of workloads outside the main job only may then take what its minimum
    # rounds need. None: decided from the budget's type (a QuickBudget or not).
    budget_from_quick: bool | None = None
    rootfs: str | None = None  # every env that can run from a rootfs and names none runs from it
    user_workloads: list[UserWorkload] = field(default_factory=list)  # always run

    def __post_init__(self):
        if self.budget_from_quick is None:
            self.budget_from_quick = isinstance(self.budget, QuickBudget)
        self.budget = float(self.budget)
        self.user_workloads = [
            u if isinstance(u, UserWorkload) else UserWorkload.from_dict(u)
            for u in self.user_workloads
        ]
        self.workloads = list(self.workloads) + [
            u.name for u in self.user_workloads if u.name not in self.workloads
        ]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["envs"] = [{"kind": e.kind, "label": e.label, "options": e.options} for e in self.envs]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Matrix:
        envs = [EnvSpec(e["kind"], e["options"], e["label"]) for e in d["envs"]]
        return cls(**{**d, "envs": envs})

    def check(self, workloads: dict, where: str = "matrix") -> None:
        user = {u.name for u in self.user_workloads}
        for name in sorted(user & set(workloads)):
            raise MatrixError(
                f"{where}: user workload '{name}' has the name of a catalog workload: rename it"
            )
        for w in self.workloads:
            if w not in workloads and w not in user:
                raise MatrixError(
                    f"{where}: unknown workload '{w}'{_suggest(w, workloads)}"
                    f"; known: {', '.join(sorted(workloads))}"
                )
        labels = [e.label for e in self.envs]
        if dup := {x for x in labels if labels.count(x) > 1}:
            raise MatrixError(f"{where}: environment label '{sorted(dup)[0]}' is used twice")
        if not self.envs:
            raise MatrixError(f"{where}: no environments (give --env or [[env]] tables)")
        if not self.workloads:
            raise MatrixError(f"{where}: no workloads")
        for name in ("rounds", "max_rounds"):
            if getattr(self, name) < 1:
                raise MatrixError(f"{where}: {name} must be at least 1, got {getattr(self, name)}")
        for name in ("warmup", "emulated_rounds", "emulated_warmup"):
            if (getattr(self, name) or 0) < 0:
                raise MatrixError(f"{where}: {name} must be 0 or more, got {getattr(self, name)}")
        for name in ("budget", "timeout", "precision"):
            if getattr(self, name) <= 0:
                raise MatrixError(f"{where}: {name} must be positive, got {getattr(self, name)}")
        if not 0 <= self.emulated_share <= 1:
            raise MatrixError(
                f"{where}: emulated_share is a share of the budget, from 0 to 1, "
                f"got {self.emulated_share}"
            )
        if not 0 <= self.memory_reserve < 1:
            raise MatrixError(
                f"{where}: memory_reserve is a share of the host's memory, from 0 to below 1, "
                f"got {self.memory_reserve}"
            )
        if self.max_rounds < self.rounds:
            self.max_rounds = self.rounds
        if self.rootfs:
            for e in self.envs:  # every kind that cannot take it first, then the name
                with_rootfs(e, None, where)
            self.envs = [with_rootfs(e, self.rootfs, where) for e in self.envs]
        if self.user_workloads:
            for e in self.envs:
                if not e.options.get("rootfs"):
                    raise MatrixError(
                        f"{where}: user workload '{self.user_workloads[0].name}' runs from a "
                        f"rootfs, and environment '{e.label}' names none: set rootfs = NAME "
                        "at the top of the matrix, or rootfs=NAME on the environment"
                    )


def rootfs_kinds() -> list[str]:
    """The environment kinds that can run from an isobench rootfs (option rootfs=NAME)."""
    from bench.envs import REGISTRY

    return [k for k, cls in REGISTRY.items() if "rootfs" in cls.options]


def with_rootfs(env: EnvSpec, name: str | None, where: str) -> EnvSpec:
    """The matrix's top-level rootfs on an environment that sets none (its label kept: the
    rootfs is the matrix's, not what tells its environments apart); name None: only check
    that the environment's kind can take one."""
    from bench.envs import REGISTRY

    if env.options.get("rootfs"):
        return env
    cls = REGISTRY[env.kind]
    if "rootfs" not in cls.options:
        raise MatrixError(
            f"{where}: environment '{env.label}': {env.kind} cannot run from a rootfs yet "
            f"(rootfs applies to {', '.join(rootfs_kinds())}): remove it"
        )
    if name is None:
        return env
    try:
        value = parse_options(env.kind, cls.options, {"rootfs": name})["rootfs"]
    except OptionError as e:
        raise MatrixError(f"{where}: rootfs: {e}") from None
    return EnvSpec(env.kind, {**env.options, "rootfs": value}, env.label)


SCALARS: dict[str, type | tuple[type, ...]] = {
    "rounds": int,
    "max_rounds": int,
    "warmup": int,
    "emulated_rounds": int,
    "emulated_warmup": int,
    "emulated_share": (int, float),
    "budget": (int, float),
    "timeout": (int, float),
    "precision": (int, float),
    "seed": int,
    "baseline": str,
    "busy_cpus": bool,
    "memory_reserve": (int, float),
}
TOP_KEYS = {*SCALARS, "workloads", "env", "rootfs", "user_workload"}

# [[user_workload]] keys per kind (UserWorkload)
USER_KEYS = {
    "pytest-benchmark": {"name", "kind", "dir", "args", "quick_args"},
    "command": {"name", "kind", "argv", "quick_argv", "parser", "dir", "server"},
}
NOT_KEYS = {  # keys a user may expect, and what to do instead
    "port": 'not a key: isobench picks a free port for the server; write "{port}" in '
    "'server' where it listens and in 'argv' where the client connects",
    "address": 'not a key: write "{host}" and "{port}" in \'argv\' where the client '
    "connects (isobench puts in the address the environment's network path gives)",
}
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def _strings(value: Any, here: str, key: str, empty: bool = True) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(a, str) for a in value):
        raise MatrixError(f"{here}: '{key}' must be a list of strings")
    if not empty and not value:
        raise MatrixError(f"{here}: '{key}' must not be empty")
    return tuple(value)


def user_workload(table: dict[str, Any], here: str) -> UserWorkload:
    """One [[user_workload]] table, checked; MatrixError names the key at fault."""
    for key in ("name", "kind"):
        if key not in table:
            raise MatrixError(f"{here}: missing key '{key}'")
    name, kind = table["name"], table["kind"]
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise MatrixError(f"{here}: name must be letters, digits, _ . - (got {name!r})")
    if kind not in USER_KINDS:
        raise MatrixError(
            f"{here}: unknown kind {kind!r}{_suggest(str(kind), USER_KINDS)}; "
            f"known: {', '.join(USER_KINDS)}"
        )
    here = f"{here} ({name})"
    for key in table:
        if key in NOT_KEYS and kind == "command":
            raise MatrixError(f"{here}: '{key}' is {NOT_KEYS[key]}")
        if key not in USER_KEYS[kind]:
            raise MatrixError(
                f"{here}: a {kind} workload has no key '{key}'{_suggest(key, USER_KEYS[kind])}"
                f"; its keys: {', '.join(sorted(USER_KEYS[kind]))}"
            )
    directory = table.get("dir", "")
    if not isinstance(directory, str) or (directory and not directory.startswith("/")):
        raise MatrixError(f"{here}: dir must be an absolute path inside the rootfs")
    if kind == "pytest-benchmark":
        if not directory:
            raise MatrixError(f"{here}: missing key 'dir' (the suite's directory in the rootfs)")
        args = _strings(table.get("args", []), here, "args")
        quick = table.get("quick_args")
        quick_args = None if quick is None else _strings(quick, here, "quick_args")
        return UserWorkload(name, kind, "pytest-benchmark", directory, args, quick_args)
    if "argv" not in table:
        raise MatrixError(f"{here}: missing key 'argv' (the command, a list of strings)")
    argv = _strings(table["argv"], here, "argv", empty=False)
    quick = table.get("quick_argv")
    parser = table.get("parser")
    if parser is None:
        raise MatrixError(f"{here}: missing key 'parser' (one of {', '.join(parsers.PARSERS)})")
    if parser not in parsers.PARSERS or parser == "pytest-benchmark":
        known = [p for p in parsers.PARSERS if p != "pytest-benchmark"]
        hint = ' (a suite is kind = "pytest-benchmark")' if parser == "pytest-benchmark" else ""
        raise MatrixError(
            f"{here}: unknown parser {parser!r}{hint or _suggest(str(parser), known)}; "
            f"known: {', '.join(known)}"
        )
    quick_argv = None if quick is None else _strings(quick, here, "quick_argv", empty=False)
    server = _server(table, here, argv, quick_argv)
    return UserWorkload(
        name, kind, parser, directory, argv=argv, quick_argv=quick_argv, server=server
    )


def _server(
    table: dict[str, Any], here: str, argv: tuple[str, ...], quick_argv: tuple[str, ...] | None
) -> tuple[str, ...]:
    """A command's `server` (none: ()), checked with its client: the server says where it
    listens ({port}), the client where it connects ({host} and {port})."""
    if "server" not in table:
        return ()
    server = _strings(table["server"], here, "server", empty=False)
    if not any("{port}" in a for a in server):
        raise MatrixError(
            f"{here}: 'server' must listen on the port isobench picks: put \"{{port}}\" in "
            'it (e.g. "--port", "{port}")'
        )
    for key, client in (("argv", argv), ("quick_argv", quick_argv)):
        if client is None:
            continue
        absent = [m for m in ("{host}", "{port}") if not any(m in a for a in client)]
        if absent:
            raise MatrixError(
                f"{here}: '{key}' is the server's client: it must connect to "
                f'"{{host}}" and "{{port}}" (missing {" and ".join(absent)})'
            )
    return server


def load_toml(path: Path) -> tuple[list[EnvSpec], list[str], dict[str, Any]]:
    """Parse a matrix file into (envs, workloads, scalar settings); MatrixError on any problem."""
    where = str(path)
    try:
        data = tomllib.loads(Path(path).read_text())
    except FileNotFoundError:
        raise MatrixError(f"{where}: no such file") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise MatrixError(f"{where}: not valid TOML: {e}") from None
    for key in data:
        if key not in TOP_KEYS:
            raise MatrixError(f"{where}: unknown key '{key}'{_suggest(key, TOP_KEYS)}")
    settings: dict[str, Any] = {}
    for key, typ in SCALARS.items():
        if key in data:
            value = data[key]
            if isinstance(value, bool) != (typ is bool) or not isinstance(value, typ):
                want = typ.__name__ if isinstance(typ, type) else "number"
                raise MatrixError(f"{where}: key '{key}' must be a {want}, got {value!r}")
            settings[key] = value
    if "rootfs" in data:
        if not isinstance(data["rootfs"], str) or not data["rootfs"].strip():
            raise MatrixError(f"{where}: key 'rootfs' must be the name of a rootfs")
        settings["rootfs"] = data["rootfs"].strip()
    tables = data.get("user_workload", [])
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        raise MatrixError(f"{where}: 'user_workload' must be [[user_workload]] tables")
    user = [user_workload(t, f"{where}: user_workload[{i}]") for i, t in enumerate(tables)]
    names = [u.name for u in user]
    if dup := sorted({x for x in names if names.count(x) > 1}):
        raise MatrixError(f"{where}: user workload name '{dup[0]}' is used twice")
    if user:
        settings["user_workloads"] = user
    workloads = data.get("workloads", [])
    if not isinstance(workloads, list) or not all(isinstance(w, str) for w in workloads):
        raise MatrixError(f"{where}: key 'workloads' must be a list of names")
    tables = data.get("env", [])
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        raise MatrixError(f"{where}: 'env' must be [[env]] tables")
    envs = []
    for i, table in enumerate(tables):
        here = f"{where}: env[{i}]"
        if "kind" not in table:
            raise MatrixError(f"{here}: missing key 'kind'")
        raw = {k: v for k, v in table.items() if k != "kind"}
        for k, v in raw.items():
            if isinstance(v, (dict, list)):
                raise MatrixError(f"{here}: option '{k}' must be a single value")
        envs.append(make_env(str(table["kind"]), {k: str(v) for k, v in raw.items()}, here))
    return envs, workloads, settings
