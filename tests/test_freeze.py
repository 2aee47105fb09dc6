"""Idle neighbours (issue 22): a held instance frozen while others measure, thawed for
its own turn, and still answering its control channel after; a frozen instance stops and
is cleaned up like any other (also by an environment's cleanup, the Ctrl-C path). The
burst loop on fakes: every instance is quiet through the blocks and a kind that declares
an idle cost is frozen outside its own turn."""

from __future__ import annotations

import contextlib
import json
import time

import psutil
import pytest

from bench.clean import find_all
from bench.envs.base import served
from bench.metrics.cgroup import find_leftovers
from tests.fakes import FakeEnv, FakeInstance, catalog_for_tests, make_run, patch_fakes

# the kinds whose neighbours matter most (a sandbox, a daemon's attach stream) and the
# plain ones; one served probe each
SPECS = {
    "host": ("host", {}),
    "namespaces": ("namespaces", {}),
    "docker-runsc": ("docker", {"runtime": "runsc"}),
    "oci-runsc": ("oci", {"runtime": "runsc"}),
}
NEEDS = {
    "host": ("host",),
    "namespaces": ("namespaces",),
    "docker-runsc": ("docker", "runsc"),
    "oci-runsc": ("oci", "runsc"),
}


def _ours(prefix: str) -> list[str]:
    found = [item.what for item in find_all() if prefix in item.what]
    return found + [str(p) for p in find_leftovers() if p.name.startswith(prefix)]


STOPPED = {psutil.STATUS_STOPPED, psutil.STATUS_TRACING_STOP}  # runsc's stubs: traced


def _all_stopped(pids, within: float = 2.0) -> bool:
    """Every process stopped (a SIGSTOP takes effect when the process is next scheduled)."""
    deadline = time.monotonic() + within
    while not _states(pids) <= STOPPED:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def _states(pids) -> set[str]:
    out = set()
    for pid in pids:
        with contextlib.suppress(psutil.NoSuchProcess):
            out.add(psutil.Process(pid).status())
    return out


@pytest.mark.parametrize(
    "spec", [pytest.param(s, marks=pytest.mark.requires(*NEEDS[s])) for s in SPECS]
)
def test_a_frozen_instance_is_stopped_and_answers_once_thawed(spec, env_factory):
    kind, config = SPECS[spec]
    env = env_factory(kind, config)
    instance = env.start(served("syscall", "syscall"), 60)
    assert instance.wait_ready(), instance.name
    assert json.loads(instance.ask("null iters=1000", 30))["burst"] == 1
    instance.freeze()
    pids = set(instance.frozen)
    assert pids, f"{spec}: freeze() found no process of the instance"
    assert _all_stopped(pids), _states(pids)
    assert all(w._paused.is_set() for w in instance.watchers)
    instance.thaw()
    assert not instance.frozen and psutil.STATUS_STOPPED not in _states(pids)
    assert not any(w._paused.is_set() for w in instance.watchers)
    answer = json.loads(instance.ask("null iters=1000", 30))
    assert answer["burst"] == 2 and answer["metrics"]["ns_per_op"] > 0
    instance.freeze()  # a stop while frozen thaws first
    launch = instance.stop()
    assert launch.status == "ok", launch.reason
    env_factory.cleanup()
    assert _ours(env.ctx.prefix) == []


@pytest.mark.requires("docker", "runsc")
def test_a_frozen_sandbox_is_removed_by_the_cleanup_of_an_interrupted_run(env_factory):
    """Ctrl-C while frozen: the environment's cleanup aborts its held instances, thawing
    first (a stopped sandbox cannot act on a kill through its runtime)."""
    env = env_factory("docker", {"runtime": "runsc"})
    instance = env.start(served("syscall", "syscall"), 60)
    assert instance.wait_ready()
    instance.freeze()
    assert instance.frozen
    env_factory.cleanup()
    assert instance.launch is not None and instance.launch.reason == "interrupted"
    assert _ours(env.ctx.prefix) == []


# -- the burst loop, on fakes --------------------------------------------------------------
class Watcher:
    def __init__(self):
        self.paused = False

    def pause(self):
        self.paused = True

    def resume(self):
        self.paused = False


class IdleInstance(FakeInstance):
    """Records its freezes; asked while frozen, or while a frozen-kind neighbour is not,
    it fails the test."""

    def freeze(self):
        self.quiet(True)
        self.is_frozen = True

    def thaw(self):
        self.is_frozen = False
        self.quiet(False)

    def ask(self, command, timeout):
        assert not getattr(self, "is_frozen", False), "asked while frozen"
        if all(w.paused for w in self.watchers):  # the blocks: after calibration
            WatchedEnv.checked += 1
            for other in FakeEnv.instances:
                if other is not self and other.launch is None:
                    assert all(w.paused for w in other.watchers), "a neighbour watched"
                    if other.env.freezes:
                        assert other.is_frozen, "a costly neighbour not frozen"
                        WatchedEnv.frozen.add(other.env.ctx.prefix)
        return super().ask(command, timeout)


class WatchedEnv(FakeEnv):
    kind = "watched"
    checked = 0  # bursts asked with every neighbour checked
    frozen: set[str] = set()  # the environments seen frozen outside their turn

    def _start(self, inv, timeout):
        instance = IdleInstance(self.new_name(), timeout)
        instance.env, instance.workload = self, inv.workload
        instance.watchers.append(Watcher())
        FakeEnv.instances.append(instance)
        return instance


class CostlyEnv(WatchedEnv):
    kind = "costly"
    idle_cost = True


def test_neighbours_are_quiet_and_costly_ones_frozen_outside_their_turn(tmp_path, monkeypatch):
    patch_fakes(monkeypatch)
    kinds = {"fake": FakeEnv, "watched": WatchedEnv, "costly": CostlyEnv}
    monkeypatch.setattr("bench.runner.REGISTRY", kinds)
    monkeypatch.setattr("bench.envs.REGISTRY", kinds)
    monkeypatch.setattr(FakeEnv, "instances", [])
    monkeypatch.setattr(WatchedEnv, "checked", 0)
    monkeypatch.setattr(WatchedEnv, "frozen", set())
    run = make_run(tmp_path, catalog_for_tests())
    _, records, _ = run(
        # c by its kind's idle cost, d by its option; e's option overrides its kind's
        ["watched:label=a", "watched:label=b", "costly:label=c"]
        + ["watched:label=d,freeze=yes", "costly:label=e,freeze=no"],
        ("ticks",),
        rounds=2,
        max_rounds=2,
        warmup=0,
    )
    measured = {r["env"] for r in records if r.get("source") == "burst"}
    assert measured == {"a", "b", "c", "d", "e"} and WatchedEnv.checked >= 5
    assert sorted(p.rsplit("-", 1)[1] for p in WatchedEnv.frozen) == ["e3", "e4"]
    held = [i for i in FakeEnv.instances if isinstance(i, IdleInstance)]
    assert held and all(i.launch is not None for i in held)
    assert not any(getattr(i, "is_frozen", False) for i in held), "left frozen after stop"
    assert not any(w.paused for i in held for w in i.watchers), "a sampler left paused"
