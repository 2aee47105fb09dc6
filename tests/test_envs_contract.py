"""The environment contract, run over every registered kind: what a new kind must
declare (options, variants, availability), and, for real on this host, that it can hold
four idle instances at once, run one to completion, carry a served probe's commands and
answers over its control channel (the burst design), and leave nothing behind, also when
the instances are still held as the run ends (Ctrl-C, a failure)."""

from __future__ import annotations

import inspect
import json
import os

import pytest

from bench.clean import find_all
from bench.envs import REGISTRY
from bench.envs.base import (
    HOLD,
    Availability,
    ChannelError,
    Environment,
    Invocation,
    Option,
    OptionError,
    parse_options,
    served,
)
from bench.matrix import parse_env_spec
from bench.metrics.cgroup import find_leftovers

KINDS = sorted(REGISTRY)
HELD = 4
HELD_GUESTS = 2  # a software-emulated boot takes seconds of both CPUs: two show the same
READY_S = 120  # a guest under TCG boots in ~10 s; four of them at once on 2 cores
# No cluster can run here: k8s runs against the stand-in of the API server
# (tests/k8s_standin.py), which runs no pod (only a serving probe, as a local child, to
# answer attach): this checks the kind's client side only. swarm runs on isobench's own
# dockerd (daemon=private): the tests never put the machine's daemon into swarm mode.
CONFIG = {"k8s": {"image": "standin.invalid/isobench-probes"}, "swarm": {"daemon": "private"}}


@pytest.mark.parametrize("kind", KINDS)
def test_declares_the_interface(kind):
    """Pure: a kind's declarations, checked without running anything."""
    cls = REGISTRY[kind]
    assert issubclass(cls, Environment)
    assert cls.kind == kind and cls.summary, "set kind and a one-line summary"
    for name, opt in cls.options.items():
        assert isinstance(opt, Option) and opt.help, f"option {name}: an Option with help text"
        if opt.default is not None:
            assert opt.parse(name, opt.default) == opt.default, f"option {name}: bad default"
    defaults = parse_options(kind, cls.options, {})
    assert set(defaults) == set(cls.options) | {"freeze"}  # the common options but label
    with pytest.raises(OptionError):
        parse_options(kind, cls.options, {"no-such-option": "1"})
    for spec in cls.variants():
        assert parse_env_spec(spec).kind == kind, f"variant {spec} must parse as a {kind} spec"
    for method in ("probe", "leftovers", "target", "target_facts"):
        params = inspect.signature(getattr(cls, method)).parameters
        assert "opts" in params, f"{kind}.{method} takes the options (a remote target's)"
    assert cls._start is not Environment._start, f"{kind}: implement _start (held instances)"


def test_the_same_option_is_checked_the_same_everywhere():
    """cpus, cpuset, memory...: a value one kind refuses, every kind with that option
    refuses; one it takes, every kind takes (and parses to the same value)."""
    probes = {"cpus": ("0.5", "abc"), "cpuset": ("0-1", "abc"), "memory": ("512m", "lots")}
    for name, (good, bad) in probes.items():
        kinds = [k for k in KINDS if name in REGISTRY[k].options]
        if len(kinds) < 2:
            continue
        parsed = {k: REGISTRY[k].options[name].parse(name, good) for k in kinds}
        assert len({repr(v) for v in parsed.values()}) == 1, parsed
        for k in kinds:
            with pytest.raises(OptionError):
                REGISTRY[k].options[name].parse(name, bad)


@pytest.mark.parametrize("kind", KINDS)
def test_availability_answers_without_raising(kind):
    av = REGISTRY[kind].probe(parse_options(kind, REGISTRY[kind].options, {}))
    assert isinstance(av, Availability)
    assert av.ok or av.reason, "a kind that cannot run says why"


def _ours(prefix: str) -> list[str]:
    """What `isobench clean` would find of this environment (containers, domains,
    cgroups) and the cgroups the kernel has with its prefix."""
    found = [item.what for item in find_all() if prefix in item.what]
    return found + [str(p) for p in find_leftovers() if p.name.startswith(prefix)]


@pytest.fixture
def env_of(env_factory, request, monkeypatch):
    """env_of(kind) -> a prepared environment with its own context; cleaned up after."""

    def make(kind: str) -> Environment:
        if kind == "k8s":
            api = request.getfixturevalue("k8s_standin")
            monkeypatch.setenv("KUBECONFIG", str(api.kubeconfig))
        _require(kind)
        return env_factory(kind, CONFIG.get(kind, {}))

    return make


@pytest.fixture
def k8s_standin():
    from tests.k8s_standin import StandIn

    with StandIn() as api:
        yield api


def _require(kind: str) -> None:
    av = REGISTRY[kind].probe()
    if not av.ok:
        msg = f"{kind} is not available here: {av.reason}"
        if os.environ.get("CI") == "true":
            pytest.fail(msg + " (CI=true: a missing capability fails)", pytrace=False)
        pytest.skip(msg)


@pytest.mark.parametrize("kind", KINDS)
def test_holds_instances_stops_half_and_ctrl_c_removes_the_rest(kind, env_of):
    """Four idle instances at once (guests: two); half stopped (phases in order); then
    Ctrl-C with the rest still held: the runner's finally calls cleanup(), which must
    remove them."""
    env = env_of(kind)
    n = HELD_GUESTS if REGISTRY[kind].one_instance_per_round else HELD
    with pytest.raises(KeyboardInterrupt):
        try:
            held = [env.start(HOLD, READY_S) for _ in range(n)]
            for instance in held:
                assert instance.wait_ready(), f"{instance.name}: no `ready`"
            names = {instance.name for instance in held}
            assert len(names) == n and all(x.startswith(env.ctx.prefix) for x in names)
            assert _ours(env.ctx.prefix), "while held, `clean` must be able to find them"
            for instance in held[: n // 2]:
                launch = instance.stop()
                assert launch.status == "ok", launch.reason
                p = launch.phases
                assert 0 < p["ready"] < p["stop"] <= p["exit"] <= p["cleaned"], p
            raise KeyboardInterrupt
        finally:
            env.cleanup()
    assert _ours(env.ctx.prefix) == []
    assert not any(env.ctx.scratch.iterdir())


@pytest.mark.parametrize("kind", KINDS)
def test_runs_one_to_completion(kind, env_of):
    """A probe runs to completion; a failing one fails its own launch (a kind that runs a
    round in one instance, a guest: both in one boot, as a round would)."""
    env = env_of(kind)
    good, bad = Invocation("startup", "startup"), Invocation("startup", "startup", ("--bad",))
    if REGISTRY[kind].one_instance_per_round:
        launch, failed = env.launch_round([good, bad], READY_S)
    else:
        launch, failed = env.launch(good, READY_S), env.launch(bad, READY_S)
    assert launch.status == "ok", launch.reason
    assert launch.exit_code == 0
    assert 0 < launch.phases["ready"] <= launch.phases.get("exit", launch.phases.get("round_exit"))
    assert failed.status == "failed" and failed.exit_code not in (0, None), failed
    env.cleanup()
    assert _ours(env.ctx.prefix) == []


@pytest.mark.parametrize("kind", KINDS)
def test_a_served_probe_answers_over_the_control_channel(kind, env_of):
    """The burst design's channel: a held syscall probe in serve mode answers each
    command with one line over the kind's channel (results and errors alike, numbered),
    and stops like any held instance; what it answered is no record of its launch."""
    assert REGISTRY[kind].channel, f"{kind} declares no control channel"
    env = env_of(kind)
    try:
        instance = env.start(served("syscall", "syscall"), READY_S)
        assert instance.wait_ready(), f"{instance.name}: no `ready`"
        answers = [json.loads(instance.ask(c, READY_S)) for c in ("null iters=2000", "bogus")]
        assert answers[0]["op"] == "null" and answers[0]["burst"] == 1, answers[0]
        assert answers[0]["iterations"] == 2000 and answers[0]["metrics"]["ns_per_op"] > 0
        assert answers[1]["op"] == "bogus" and "error" in answers[1] and answers[1]["burst"] == 2
        launch = instance.stop()
        assert launch.status == "ok", launch.reason
        assert launch.records == [] and launch.probe_errors == []
        with pytest.raises(ChannelError):
            instance.ask("null iters=1", 5)
    finally:
        env.cleanup()
    assert _ours(env.ctx.prefix) == []
