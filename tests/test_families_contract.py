"""The contract every run strategy (bench/families/ REGISTRY) keeps, on the fake
environment and the fake clock (tests/fakes.py; the held families' inner rounds are the
stand-ins there, their Family classes are the real ones): a warm-up, rounds, an estimate,
a failed launch recorded with its reason, a Ctrl-C mid-round that leaves no instance
behind, and the report section that shows it rendered from the run's manifest and samples.

A new strategy costs one module, one REGISTRY line and one catalog entry, plus a case
here (CASES): the toy strategy below (a probe that prints one figure) is exactly that, and
an incomplete one fails with a message that says what is missing. The runner names none
of them (test_the_runner_names_no_family)."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import pytest

from bench import catalog, families, runner, schedule, store
from bench.envs.base import Launch
from bench.families.base import Family, Launched
from bench.interrupt import Interrupted
from bench.matrix import QUICK
from bench.report.sections import SECTIONS
from bench.report.view import view
from tests.fakes import (
    REDIS,
    REDIS_SERVER,
    FakeEnv,
    catalog_for_tests,
    make_run,
    patch_fakes,
    stand_ins,
)

ENVS = ["fake:label=a,rootfs=r", "batch:label=vm,rootfs=r"]
ROUNDS = {"rounds": 3, "max_rounds": 3, "warmup": 1, "emulated_warmup": 1}

# Per strategy: the workloads a run of it names and its matrix settings.
CASES: dict[str, tuple[tuple[str, ...], dict[str, Any]]] = {
    "probes": (("syscall", "cpu"), {}),
    "bursts": (("ticks",), {}),
    "density": (("density",), {"quick": True, **QUICK, **ROUNDS, "emulated_rounds": 0}),
    "net": (("net",), {}),
    "user": ((), {"user_workloads": [REDIS]}),
    "userserver": ((), {"user_workloads": [REDIS_SERVER]}),
}


def section(manifest: dict[str, Any], df, key: str) -> Any:
    """The report section a family names (`Family.section`), built from the run's view."""
    return SECTIONS[key](view(manifest, df, n_boot=50))


def parts(name: str, family: Family) -> None:
    """The interface's parts, each with what is missing when it is not there."""
    assert isinstance(family, Family), f"{name}: REGISTRY holds a {type(family)}, not a Family"
    assert getattr(family, "name", None) == name, f"{name}: its name is not its REGISTRY key"
    assert isinstance(getattr(family, "holds", None), bool), f"{name}: no `holds` (bool)"
    assert getattr(family, "section", None) in SECTIONS, (
        f"{name}: no report section (`section`: one of {', '.join(SECTIONS)})"
    )
    assert type(family).round is not Family.round, f"{name}: no round()"


def check(name: str, family: Family, run, workloads_run, settings) -> None:
    """One strategy through the runner: warm-up, rounds, estimate, failure, Ctrl-C, report."""
    parts(name, family)
    settings = {**ROUNDS, **settings}
    manifest, records, r = run(ENVS, workloads_run, **settings)
    cells = {c.key for c in r.sched.cells()}
    mine = [c for c in r.sched.cells() if families.of(r.workloads[c.workload]) is family]
    assert mine, f"{name}: the case runs no workload of this strategy"
    keys = {c.key for c in mine}
    ok = [x for x in records if x["status"] == "ok" and x["cell"] in keys]
    warm = {x["env"] for x in ok if x["round"] == 0}  # one warm-up launch per environment
    assert warm == {c.env.label for c in mine}, f"{name}: warm-up only in {sorted(warm)}"
    for rnd in range(1, settings["rounds"] + 1):
        got = {x["cell"] for x in ok if x["round"] == rnd}
        assert keys <= got, f"{name}: round {rnd} measured only {sorted(got)}"
    assert {x["cell"] for x in records} == cells
    for c in mine:  # an estimate from its warm-up's seconds, or none of its own
        w, env = r.workloads[c.workload], r.active[c.env.label].env
        own = family.estimate(w, env, settings.get("quick", False), [1.0])
        assert own is None or own > 0, f"{name}: estimate {own!r}"
        assert r.sched.estimate(c) > 0
    df = store.load_samples(r.run_dir)
    assert section(manifest, df, family.section), (
        f"{name}: report section {family.section!r} is empty"
    )

    _, records, _ = run(
        ["fake:label=a,rootfs=r", "broken:label=x,rootfs=r"], workloads_run, **settings
    )
    failed = [x for x in records if x["env"] == "x" and x["status"] == "failed"]
    assert failed and all(x["reason"] for x in failed), f"{name}: a failure without its reason"
    assert not [x for x in records if x["env"] == "x" and x["status"] == "ok"]

    for w in {c.workload for c in mine}:
        FakeEnv.instances = []
        FakeEnv.interrupt = w
        with pytest.raises(Interrupted):
            run(ENVS, workloads_run, **settings)
        FakeEnv.interrupt = None
        assert FakeEnv.instances, f"{name}: the interrupted round started no instance"
        left = [i.name for i in FakeEnv.instances if i.launch is None]
        assert not left, f"{name}: Ctrl-C left instances {left}"


@pytest.fixture
def run(tmp_path, monkeypatch):
    patch_fakes(monkeypatch)
    stand_ins(monkeypatch)
    return fresh_runs(tmp_path, catalog_for_tests())


def fresh_runs(tmp_path: Path, workloads: dict[str, catalog.Workload]):
    """run(envs, workloads_run, **matrix): each call a new run in a directory of its own."""
    made: list[int] = []

    def run_(envs, workloads_run, **settings):
        made.append(len(made))
        go = make_run(tmp_path / f"run{len(made)}", workloads)
        return go(envs, workloads_run, **{**ROUNDS, **settings})

    return run_


def test_every_family_has_a_case():
    missing = sorted(set(families.REGISTRY) - set(CASES))
    assert not missing, f"no contract case for {missing}: add one to CASES"


@pytest.mark.parametrize("name", sorted(families.REGISTRY))
def test_a_family_keeps_the_contract(name, run):
    workloads_run, settings = CASES[name]
    check(name, families.REGISTRY[name], run, workloads_run, settings)


def test_every_catalog_workload_has_a_known_strategy():
    for w in catalog.load().values():
        assert families.of(w).name == w.strategy


def test_an_unknown_strategy_is_one_line():
    w = catalog.Workload("w", "w", "w", "", (), (), None, strategy="burst")
    with pytest.raises(families.UnknownStrategy, match="unknown strategy 'burst'"):
        families.of(w)


# ---------------------------------------------------------------- a toy family


class OneFigure(Launched):
    """A probe that prints one figure (the fake environment measures one per launch)."""

    name = "toy"
    section = "probes"


TOY = catalog.Workload("figure", "figure", "figure", "one figure", (), (), None, strategy="toy")


@pytest.fixture
def toy_run(tmp_path, monkeypatch):
    """run() with the toy in the registry and its workload in the catalog."""

    def with_toy(family: Family):
        monkeypatch.setitem(families.REGISTRY, "toy", family)
        patch_fakes(monkeypatch)
        return fresh_runs(tmp_path, {**catalog_for_tests(), "figure": TOY})

    return with_toy


def test_a_toy_family_is_one_class_one_registry_line_one_catalog_entry(toy_run):
    check("toy", toy := OneFigure(), toy_run(toy), ("figure",), {})


def test_an_incomplete_family_is_told_what_is_missing(toy_run):
    class NoRound(Family):
        name = "toy"
        section = "probes"
        holds = False

    class NoSection(OneFigure):
        section = "charts-of-my-own"

    with pytest.raises(AssertionError, match="toy: no round()"):
        check("toy", toy := NoRound(), toy_run(toy), ("figure",), {})
    with pytest.raises(AssertionError, match="toy: no report section"):
        check("toy", toy := NoSection(), toy_run(toy), ("figure",), {})


def test_a_family_that_records_nothing_fails_the_contract(toy_run):
    class Silent(OneFigure):
        def round(self, s, job):
            r = super().round(s, job)
            r.launches = [Launch(status="failed", reason="measured nothing")] * len(r.launches)
            return r

    with pytest.raises(AssertionError, match="toy: warm-up only in"):
        check("toy", toy := Silent(), toy_run(toy), ("figure",), {})


# ---------------------------------------------------------------- the runner names none


def test_the_runner_names_no_family():
    """No family's name (a REGISTRY key or a family module) in the runner's or the
    schedule's code: they look a workload's strategy up."""
    names = set(families.REGISTRY)
    modules = {type(f).__module__ for f in families.REGISTRY.values()}
    for module in (runner, schedule):
        tree = ast.parse(Path(module.__file__).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                assert node.value not in names, f"{module.__name__} names {node.value!r}"
            if isinstance(node, ast.ImportFrom) and node.module:
                imported = {f"{node.module}.{a.name}" for a in node.names} | {node.module}
                assert not imported & modules, f"{module.__name__} imports a family module"
            if isinstance(node, ast.Attribute):
                assert node.attr != "family", f"{module.__name__} reads a workload's family"
