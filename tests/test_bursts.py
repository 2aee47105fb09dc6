"""The burst design through the runner and the analysis, on the fake environments and
the fake clock (tests/fakes.py): a round is one held set across the environments, its
blocks in a fresh random order each, a guest a set of its own with a partner instance of
the baseline, the canary between cycles of blocks, and the ratio tested with the round
as the cluster (bench/families/bursts.py, bench/analysis.py)."""

from __future__ import annotations

from collections import defaultdict

import pandas as pd
import pytest

from bench import analysis, catalog, store
from bench.catalog import BurstPlan, parse_bursts
from tests.fakes import FakeCanary, FakeEnv, catalog_for_tests, make_run, patch_fakes

ROUNDS = {"rounds": 4, "max_rounds": 4, "warmup": 1}


class PlainEnv(FakeEnv):
    """A fake kind without a control channel: measured by launches."""

    kind = "plain"
    channel = False


@pytest.fixture
def run(tmp_path, monkeypatch):
    patch_fakes(monkeypatch)
    kinds = {**__import__("tests.fakes", fromlist=["KINDS"]).KINDS, "plain": PlainEnv}
    monkeypatch.setattr("bench.runner.REGISTRY", kinds)
    monkeypatch.setattr("bench.envs.REGISTRY", kinds)
    return make_run(tmp_path, catalog_for_tests())


def bursts(records, **match) -> list[dict]:
    return [
        r
        for r in records
        if r.get("source") == "burst" and r["round"] >= 1
        if all(r.get(k) == v for k, v in match.items())
    ]


def test_a_round_is_one_held_set_with_blocks_in_a_fresh_order(run):
    envs = ["fake:label=a", "fake:label=b,scale=1.1", "fake:label=c,scale=0.9"]
    manifest, records, r = run(envs, ("ticks",), **ROUNDS)
    per_block = defaultdict(list)
    for x in bursts(records):
        per_block[x["round"], x["block"]].append((x["at_ms"], x["env"]))
    assert len(per_block) == 4 * 4  # 4 rounds of 4 blocks
    assert all(sorted(e for _, e in v) == ["a", "b", "c"] for v in per_block.values())
    orders = {tuple(e for _, e in sorted(v)) for v in per_block.values()}
    assert len(orders) > 1, "every block ran the environments in the same order"
    instances = {x["launch"] for x in bursts(records, env="a")}
    assert len(instances) == 4, "one held instance per round, relaunched between rounds"
    assert [c for c in FakeCanary.calls if c] == [1, 2, 3, 4]  # every 4 blocks (one op)
    assert all(i.launch is not None for i in FakeEnv.instances), "an instance left held"


def test_the_ratio_is_tested_over_rounds_of_paired_blocks(run):
    envs = ["fake:label=a,noise=0.05", "fake:label=b,scale=1.2,noise=0.05"]
    manifest, records, r = run(envs, ("ticks",), **ROUNDS)
    rows = analysis.summarize_run(store.load_samples(r.run_dir), manifest, n_boot=50)
    b = next(x for x in rows if x["env"] == "b")
    assert b["test"] == "paired t over rounds of blocks, n=4 (16 blocks)"
    assert 1.1 < b["ratio"] < 1.3 and b["significant"]
    assert b["detectable_ratio"] > 1


def test_an_emulated_guest_runs_them_launched_in_its_one_boot(run):
    envs = ["fake:label=a", "fake:label=b", "batch:label=vm,scale=3"]
    manifest, records, r = run(envs, ("ticks", "syscall"), **ROUNDS)
    guest = [x for x in records if x["env"] == "vm" and x["round"] >= 1 and x["op"] == "null"]
    assert guest and all(x["source"] == "probe" for x in guest)
    boots = [
        c for c in __import__("tests.fakes", fromlist=["FakeEnv"]).FakeEnv.calls if c[0] == "batch"
    ]
    assert ("batch", ["ticks", "syscall"]) in boots or ("batch", ["syscall", "ticks"]) in boots
    assert {x["env"] for x in bursts(records)} == {"a", "b"}
    rows = analysis.summarize_run(store.load_samples(r.run_dir), manifest, n_boot=50)
    vm = next(x for x in rows if x["env"] == "vm" and x["workload"] == "ticks")
    assert vm["test"].startswith("paired") and "blocks" not in vm["test"]


def test_a_kind_without_a_channel_is_measured_by_launches_in_the_same_round(run):
    manifest, records, r = run(["fake:label=a", "plain:label=p"], ("ticks",), **ROUNDS)
    launched = [x for x in records if x["env"] == "p" and x["round"] >= 1 and x["op"] == "null"]
    assert launched and all(x["source"] == "probe" and "block" not in x for x in launched)
    assert {x["round"] for x in launched} == {1, 2, 3, 4}


def test_the_plan_interleaves_ops_and_gives_the_named_ones_more_blocks():
    plan = BurstPlan(ops=("a", "b"), ms=5, blocks=2, quick_blocks=1, op_blocks={"a": 4})
    assert plan.schedule(quick=False) == ["a", "b", "a", "b", "a", "a"]
    assert plan.schedule(quick=True) == ["a", "b", "a"]
    quota = BurstPlan(ops=("c",), ms=30, blocks=1, quick_blocks=1, quota_ms=300)
    assert quota.burst_ms("c", quota=False) == 30 and quota.burst_ms("c", quota=True) == 300


@pytest.mark.parametrize(
    "table",
    [
        {"ops": []},
        {"ops": ["a"], "ms": 5, "blocks": 1, "quick_blocks": 0},
        {"ops": ["a"], "ms": 5, "blocks": 1, "quick_blocks": 1, "op_ms": {"z": 3}},
    ],
)
def test_a_bad_bursts_table_is_one_line_naming_the_workload(table):
    with pytest.raises(ValueError, match=r"^w: bad bursts table"):
        parse_bursts("w", table)


def test_runs_recorded_before_bursts_still_read():
    df = pd.DataFrame({"env": ["a"], "round": [1], "status": ["ok"], "value": [1.0]})
    assert analysis.partner(df).tolist() == [False]


def test_emulated_guests_run_on_their_own_budget_share(run):
    """A guest's rounds stop when its share of the budget is spent (2 s a round, a
    share of 0.25 x 20 s: two rounds); the others go on to their rounds."""
    settings = {"rounds": 6, "max_rounds": 6, "warmup": 0, "budget": 20.0}
    manifest, records, r = run(
        ["fake:label=a", "batch:label=vm"], ("syscall", "cpu"), emulated_share=0.25, **settings
    )
    rounds = lambda env: {x["round"] for x in records if x["env"] == env}  # noqa: E731
    assert rounds("vm") == {1, 2}
    assert rounds("a") == {1, 2, 3, 4, 5, 6}


def test_each_start_is_paired_with_a_baseline_launch_next_to_it(tmp_path, monkeypatch):
    patch_fakes(monkeypatch)
    boot = catalog.Workload("boot", "startup", "startup", "", (), (), None, phase_figures=True)
    go = make_run(tmp_path, {**catalog_for_tests(), "boot": boot})
    manifest, records, r = go(["fake:label=a", "fake:label=b"], ("boot",), **ROUNDS)
    phases = [x for x in records if x["source"] == "phase" and x["round"] >= 1]
    partners = [x for x in phases if x["env"] == "a" and x.get("set") == "b"]
    assert {x["round"] for x in partners} == {1, 2, 3, 4}
    assert all(x["cell"] == "b|boot" and x["block"] == 1 for x in partners)
    assert all(x.get("set") == "b" for x in phases if x["env"] == "b")
    assert not [
        x for x in records if x["env"] == "a" and x.get("set") == "b" and x["source"] != "phase"
    ], "a partner launch records only its phases"
    rows = analysis.summarize_run(store.load_samples(r.run_dir), manifest, n_boot=50)
    b = next(x for x in rows if x["env"] == "b" and x["metric"] == "ready_ms")
    a = next(x for x in rows if x["env"] == "a" and x["metric"] == "ready_ms")
    assert b["test"] == "paired t, each launch with a baseline launch next to it, n=4"
    assert a["n"] == 4, "the partners are no figure of the baseline's own"
